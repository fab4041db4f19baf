package schema

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// withFields adds fields to the minimal valid config.
func withFields(fields string) []byte {
	return []byte(`{"nodeId": "a", "secret": "0123456789abcdef", ` + fields + `}`)
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name string
		raw  []byte
		want []string
	}{
		{"missing required at the field's path", []byte(`{"nodeId": "a"}`), []string{"secret: missing required field"}},
		{"unknown field with a suggestion", withFields(`"listenport": 1`), []string{`listenport: unknown field "listenport" (did you mean "listenPort"?)`}},
		{"unknown nested field", withFields(`"mesh": {"pingInterval": 5}`), []string{`mesh.pingInterval: unknown field "pingInterval" (did you mean "pingIntervalMs"?)`}},
		{"odd unknown key is quoted", withFields(`"a b": 1`), []string{`["a b"]: unknown field "a b" (known fields: agents, allowFrom, approvals, delivery, identityFile, knownNodesFile, listen, listenHost, listenPort, maxConcurrentRuns, mesh, metrics, models, nodeId, openclawBin, otel, peers, proxyKey, proxyModels, proxyPort, revoked, secret, tags, tls, toolProxy, trust)`}},
		{"peer scheme", withFields(`"peers": [{"url": "ws://a:1"}, {"url": "https://b"}]`), []string{"peers[1].url: must start with ws:// or wss://"}},
		{"type", withFields(`"listenPort": "19000"`), []string{"listenPort: must be a whole number, not a string"}},
		{"enum lists allowed values", withFields(`"proxyModels": [{"id": "m", "api": "x"}]`), []string{`proxyModels[0].api: must be one of "openai-completions", "openai-responses", "openai-codex-responses", "anthropic-messages", "google-generative-ai", "github-copilot", "bedrock-converse-stream", "ollama"`}},
		{"port range", withFields(`"proxyPort": 65536`), []string{"proxyPort: must be at most 65535 (got 65536)"}},
		{"node id length", withFields(`"peers": [{"url": "ws://a:1", "nodeId": "` + strings.Repeat("n", 65) + `"}]`), []string{"peers[0].nodeId: must be at most 64 characters long"}},
		{"node id at 64 is fine", withFields(`"peers": [{"url": "ws://a:1", "nodeId": "` + strings.Repeat("n", 64) + `"}]`), nil},
		{"indexes sort numerically", withFields(`"agents": [{"id":"x"},{},{},{},{},{},{},{},{},{},{},{"id":"x"}]`), []string{
			"agents[1].id: missing required field", "agents[2].id: missing required field", "agents[3].id: missing required field",
			"agents[4].id: missing required field", "agents[5].id: missing required field", "agents[6].id: missing required field",
			"agents[7].id: missing required field", "agents[8].id: missing required field", "agents[9].id: missing required field",
			"agents[10].id: missing required field", `agents[11].id: agent "x" is already listed as agents[0]`,
		}},
		{"upstream key and env", withFields(`"models": [{"id": "m", "provider": "p", "upstream": {"baseUrl": "http://h/v1", "apiKey": "k", "apiKeyEnv": "E"}}]`), []string{"models[0].upstream: set apiKey or apiKeyEnv, not both"}},
		{"upstream without host", withFields(`"models": [{"id": "m", "provider": "p", "upstream": {"baseUrl": "http:///v1"}}]`), []string{"models[0].upstream.baseUrl: has no host; expected http://host:port"}},
		{"same model id in models and proxyModels is allowed", withFields(`"models": [{"id": "m", "provider": "p"}], "proxyModels": [{"id": "m"}]`), nil},
		{"all problems at once", []byte(`{"secret": "short", "listen": 1, "peers": [{"url": "tcp://x"}]}`), []string{
			"listen: must be true or false, not a whole number",
			"nodeId: missing required field",
			"peers[0].url: must start with ws:// or wss://",
			"secret: must be at least 16 characters long",
		}},
		{"mistyped value is not checked twice", withFields(`"peers": [{"url": 7}]`), []string{"peers[0].url: must be a string, not a whole number"}},
		{"trailing data", []byte(minimalConfig + ` {}`), []string{"config is not valid JSON: unexpected data after the top-level value at byte 47"}},
		{"truncated", []byte(`{"nodeId": "a",`), []string{"config is not valid JSON: unexpected end of input"}},
		{"syntax error position", []byte("{\n  \"nodeId\": \"a\"\n  \"secret\": \"x\"\n}"), []string{"config is not valid JSON: invalid character '\"' after object key:value pair at line 3, column 3"}},
		{"trust and revoked", withFields(`"trust": [{"nodeId": "b", "publicKey": "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}, {"nodeId": "c", "publicKey": "AAAA"}, {"nodeId": "b", "publicKey": "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA_"}, {"publicKey": ""}], "revoked": ["b", "a", "x y", "d"]`), []string{
			`revoked[0]: node "b" is also listed in trust[0]; remove it from one of the two`,
			`revoked[1]: is this node's own nodeId "a"`,
			`revoked[2]: may contain only letters, digits, ".", "_" and "-"`,
			`trust[1].publicKey: must be "ed25519:" and 44 base64 characters, as clawmatrix-plugin identity prints it on that node`,
			`trust[2].nodeId: node "b" is already listed as trust[0]; a node has one key`,
			`trust[3].nodeId: missing required field`,
			`trust[3].publicKey: must not be empty`,
		}},
		{"revoked twice", withFields(`"revoked": ["d", "d"]`), []string{"revoked: must not list the same value twice"}},
		{"identity files must differ", withFields(`"identityFile": "k", "knownNodesFile": "k"`), []string{"knownNodesFile: is the same file as identityFile; give each its own file"}},
		{"whitespace only", []byte(" \n"), []string{"config is empty: expected a JSON object with at least nodeId and secret"}},
		{"null", []byte("null"), []string{"must be an object, not null"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, problems := Parse(tt.raw)
			got := make([]string, len(problems))
			for i, p := range problems {
				got[i] = p.String()
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
			if (cfg == nil) != (len(tt.want) > 0) {
				t.Errorf("config nil = %v with %d problems", cfg == nil, len(problems))
			}
		})
	}
}

func TestParseNeverEchoesSecrets(t *testing.T) {
	inputs := []string{
		`{"nodeId": "a", "secret": "s3cr3t-value-xyz", "proxyKey": 5}`,
		`{"nodeId": "a", "secret": "s3cr3t-value-xyz"[`,
		`{"nodeId": "a", "secret": "s3cr3t"}`,
		`{"nodeId": "a", "secret": 1, "proxyKey": "s3cr3t-value-xyz", "listen": "x"}`,
		`{"nodeId": "a", "secret": "0123456789abcdef", "models": [{"id": "m", "provider": "p", "upstream": {"baseUrl": "ftp://u:s3cr3t-value-xyz@h", "apiKey": "s3cr3t-value-xyz", "apiKeyEnv": "X"}}]}`,
		`{"nodeId": "a", "secret": "0123456789abcdef", "peers": [{"url": "ws://u:s3cr3t-value-xyz@h:bad"}]}`,
		`{"nodeId": "a", "secret": "0123456789abcdef", "peers": [{"url": "http://u:s3cr3t-value-xyz@h"}]}`,
	}
	for _, in := range inputs {
		_, problems := Parse([]byte(in))
		if len(problems) == 0 {
			t.Errorf("%s: want problems", in)
		}
		for _, p := range problems {
			if strings.Contains(p.String(), "s3cr3t") {
				t.Errorf("problem leaks a secret: %q (input %s)", p, in)
			}
		}
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{"peers[1].url", "must start with ws:// or wss://"}, "peers[1].url: must start with ws:// or wss://"},
		{Problem{"", "config is empty"}, "config is empty"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestInstancePath(t *testing.T) {
	inst := map[string]any{
		"peers": []any{map[string]any{"url": "x"}, map[string]any{"url": "y"}},
		"a/b":   map[string]any{"0": 1},
	}
	tests := []struct{ ptr, want string }{
		{"", ""},
		{"/peers", "peers"},
		{"/peers/1/url", "peers[1].url"},
		{"/a~1b/0", `["a/b"]["0"]`},
		{"/missing/3", `missing["3"]`},
	}
	for _, tt := range tests {
		if got := instancePath(inst, tt.ptr); got != tt.want {
			t.Errorf("instancePath(%q) = %q, want %q", tt.ptr, got, tt.want)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	raw, err := os.ReadFile("../testdata/configs/valid/model-server.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, problems := Parse(raw); problems != nil {
			b.Fatal(problems)
		}
	}
}

// FuzzParse checks the contract of Parse on any input: no panic, either a
// config or problems (never both, never neither), and every problem has a
// message.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		files, _ := filepath.Glob("../testdata/configs/" + dir + "/*.json")
		for _, file := range files {
			raw, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(raw)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		cfg, problems := Parse(raw)
		if (cfg == nil) == (len(problems) == 0) {
			t.Fatalf("config nil = %v with %d problems", cfg == nil, len(problems))
		}
		for _, p := range problems {
			if p.Message == "" {
				t.Fatalf("problem without a message at %q", p.Path)
			}
		}
	})
}
