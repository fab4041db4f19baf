package schema

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const minimalConfig = `{"nodeId": "a", "secret": "0123456789abcdef"}`

func mustParse(t *testing.T, raw string) *Config {
	t.Helper()
	cfg, problems := Parse([]byte(raw))
	if len(problems) > 0 {
		t.Fatalf("Parse(%s): unexpected problems:\n%s", raw, joinProblems(problems))
	}
	return cfg
}

func TestParseFillsDefaults(t *testing.T) {
	cfg := mustParse(t, minimalConfig)
	want := Config{
		NodeID: "a", Secret: "0123456789abcdef",
		Listen: false, ListenHost: "0.0.0.0", ListenPort: 19000,
		Trust: []TrustedNode{}, Revoked: []string{},
		Peers: []Peer{}, Agents: []Agent{}, Models: []Model{}, ProxyModels: []ProxyModel{}, Tags: []string{},
		ProxyPort: 19001,
		ToolProxy: ToolProxy{Enabled: false, Allow: []string{}, Deny: []string{}, AllowPaths: []string{}, Env: []string{},
			MaxConcurrent: 4, MaxOutputBytes: 1048576, MaxTimeoutMs: 600000},
		OpenclawBin: "openclaw", MaxConcurrentRuns: 2,
		Mesh:      MeshTiming{PingIntervalMs: 1000, DeadAfterMs: 4000},
		Delivery:  Delivery{TTLMs: 86400000, MaxQueued: 10000, MaxInbox: 10000},
		AllowFrom: []string{"*"},
		Approvals: Approvals{Tools: []string{}, Nodes: []string{}, TimeoutMs: 120000},
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", *cfg, want)
	}
}

func TestParseKeepsExplicitValues(t *testing.T) {
	tests := []struct {
		name  string
		extra string
		check func(c *Config) bool
	}{
		{"port 0 is kept, not defaulted", `"listenPort": 0, "proxyPort": 0`, func(c *Config) bool { return c.ListenPort == 0 && c.ProxyPort == 0 }},
		{"partial toolProxy keeps other defaults", `"toolProxy": {"enabled": true, "allow": ["read"]}`, func(c *Config) bool {
			return c.ToolProxy.Enabled && c.ToolProxy.MaxConcurrent == DefaultMaxConcurrentExec && c.ToolProxy.MaxOutputBytes == DefaultMaxOutputBytes && c.ToolProxy.MaxTimeoutMs == DefaultMaxTimeoutMs
		}},
		{"partial mesh keeps other default", `"mesh": {"pingIntervalMs": 100}`, func(c *Config) bool {
			return c.Mesh.PingIntervalMs == 100 && c.Mesh.DeadAfterMs == DefaultDeadAfterMs
		}},
		{"agent tags default to empty", `"agents": [{"id": "main"}]`, func(c *Config) bool {
			return c.Agents[0].Tags != nil && len(c.Agents[0].Tags) == 0
		}},
		{"model params default per model", `"models": [{"id": "m", "provider": "p", "maxTokens": 10}]`, func(c *Config) bool {
			m := c.Models[0]
			return m.MaxTokens == 10 && m.ContextWindow == DefaultContextWindow && m.API == DefaultAPI &&
				reflect.DeepEqual(m.Input, []string{"text"}) && !m.Reasoning && m.Upstream == nil
		}},
		{"proxy model params default", `"proxyModels": [{"id": "m", "input": ["text", "image"], "reasoning": true}]`, func(c *Config) bool {
			m := c.ProxyModels[0]
			return m.Reasoning && m.AcceptsImages() && m.ContextWindow == DefaultContextWindow && m.MaxTokens == DefaultMaxTokens
		}},
		{"no tls stays nil", ``, func(c *Config) bool { return c.TLS == nil }},
		{"policy names are kept in compared form", `"toolProxy": {"enabled": true, "allow": [" Read", "WEB_fetch", "*"], "deny": ["Exec "]}`, func(c *Config) bool {
			return reflect.DeepEqual(c.ToolProxy.Allow, []string{"read", "web_fetch", "*"}) && reflect.DeepEqual(c.ToolProxy.Deny, []string{"exec"})
		}},
		{"an explicit empty allowFrom is kept", `"allowFrom": []`, func(c *Config) bool { return c.AllowFrom != nil && len(c.AllowFrom) == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := minimalConfig
			if tt.extra != "" {
				raw = strings.TrimSuffix(raw, "}") + ", " + tt.extra + "}"
			}
			cfg := mustParse(t, raw)
			if !tt.check(cfg) {
				t.Errorf("unexpected config: %+v", *cfg)
			}
		})
	}
}

// TestDefaultsMatchSchema walks every default the generated schema declares
// and checks that Parse fills the same value, so the manifest never promises
// a default the sidecar does not apply.
func TestDefaultsMatchSchema(t *testing.T) {
	raw := `{"nodeId": "a", "secret": "0123456789abcdef",
		"models": [{"id": "m", "provider": "p"}], "proxyModels": [{"id": "x"}],
		"agents": [{"id": "main"}]}`
	cfg := mustParse(t, raw)
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeJSON(b)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := decodeJSON(ConfigSchema())
	if err != nil {
		t.Fatal(err)
	}
	input, err := decodeJSON([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	// walk compares the parsed value with the schema default wherever the
	// input left the value out.
	var walk func(schemaNode map[string]any, value, in any, given bool, path string)
	walk = func(schemaNode map[string]any, value, in any, given bool, path string) {
		if def, ok := schemaNode["default"]; ok && !given {
			checked++
			if !jsonEqual(def, value) {
				t.Errorf("%s: schema default %v, Parse filled %v", path, def, value)
			}
		}
		if items, ok := schemaNode["items"].(map[string]any); ok {
			inList := asList(in)
			for i, v := range asList(value) {
				var inItem any
				if i < len(inList) {
					inItem = inList[i]
				}
				walk(items, v, inItem, given, path+"["+itoa(i)+"]")
			}
		}
		props, _ := schemaNode["properties"].(map[string]any)
		obj, _ := value.(map[string]any)
		inObj, _ := in.(map[string]any)
		for name, sub := range props {
			inV, inGiven := inObj[name]
			if v, ok := obj[name]; ok {
				walk(sub.(map[string]any), v, inV, inGiven, joinPath(path, name))
			}
		}
	}
	walk(doc.(map[string]any), got, input, true, "")
	if checked < 25 {
		t.Errorf("only %d defaults checked; the walk is not reaching the schema", checked)
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(va, vb)
}

func asList(v any) []any { l, _ := v.([]any); return l }

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func TestDisplayName(t *testing.T) {
	tests := []struct {
		desc, id, want string
	}{
		{"Qwen 32B", "qwen", "Qwen 32B"},
		{"", "qwen", "qwen"},
	}
	for _, tt := range tests {
		if got := (Model{ID: tt.id, Description: tt.desc}).DisplayName(); got != tt.want {
			t.Errorf("Model.DisplayName(%q, %q) = %q, want %q", tt.desc, tt.id, got, tt.want)
		}
		if got := (ProxyModel{ID: tt.id, Description: tt.desc}).DisplayName(); got != tt.want {
			t.Errorf("ProxyModel.DisplayName(%q, %q) = %q, want %q", tt.desc, tt.id, got, tt.want)
		}
	}
}

func TestCatalogModelsUnionFirstWins(t *testing.T) {
	cfg := mustParse(t, `{"nodeId": "a", "secret": "0123456789abcdef",
		"models": [{"id": "m1", "provider": "p", "description": "Served here", "maxTokens": 100}],
		"proxyModels": [{"id": "m1", "maxTokens": 999}, {"id": "m2", "reasoning": true, "api": "anthropic-messages"}]}`)
	got := cfg.CatalogModels()
	want := []CatalogModel{
		{ID: "m1", Name: "Served here", API: DefaultAPI, Input: []string{"text"}, ContextWindow: DefaultContextWindow, MaxTokens: 100},
		{ID: "m2", Name: "m2", API: DefaultAPI, Reasoning: true, Input: []string{"text"}, ContextWindow: DefaultContextWindow, MaxTokens: DefaultMaxTokens},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("CatalogModels:\n got %+v\nwant %+v", got, want)
	}
}

func TestCatalogModelsFillEveryField(t *testing.T) {
	cfg := &Config{
		Models: []Model{
			{ID: "a", Provider: "p", Description: "Model A", ModelParams: ModelParams{API: "openai-completions", ContextWindow: 32000, MaxTokens: 1000, Reasoning: true, Input: []string{"text", "image"}, Cost: Cost{Input: 1, Output: 2}}},
			{ID: "bare", Provider: "p"}, // built in code: params left zero
		},
		ProxyModels: []ProxyModel{
			{ID: "a", NodeID: "x", Description: "loses to the local entry"},
			{ID: "remote", NodeID: "gpu", ModelParams: DefaultModelParams()},
		},
	}
	got, err := json.Marshal(cfg.CatalogModels())
	if err != nil {
		t.Fatal(err)
	}
	want := `[` +
		`{"id":"a","name":"Model A","api":"openai-completions","reasoning":true,"input":["text","image"],"cost":{"input":1,"output":2,"cacheRead":0,"cacheWrite":0},"contextWindow":32000,"maxTokens":1000},` +
		`{"id":"bare","name":"bare","api":"openai-completions","reasoning":false,"input":["text"],"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0},"contextWindow":128000,"maxTokens":4096},` +
		`{"id":"remote","name":"remote","api":"openai-completions","reasoning":false,"input":["text"],"cost":{"input":0,"output":0,"cacheRead":0,"cacheWrite":0},"contextWindow":128000,"maxTokens":4096}]`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if len((&Config{}).CatalogModels()) != 0 {
		t.Fatal("empty config gave models")
	}
}

func TestRedactedHidesEverySecret(t *testing.T) {
	cfg := mustParse(t, `{"nodeId": "a", "secret": "cluster-secret-value", "proxyKey": "proxy-key-value",
		"models": [{"id": "m", "provider": "p", "upstream": {"baseUrl": "http://127.0.0.1:1/v1", "apiKey": "upstream-key-value"}}],
		"otel": {"endpoint": "http://127.0.0.1:4318", "headers": {"x-api-key": "otel-header-value"}}}`)
	b, err := json.Marshal(cfg.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"cluster-secret-value", "proxy-key-value", "upstream-key-value", "otel-header-value"} {
		if strings.Contains(string(b), s) {
			t.Errorf("redacted config still contains %q: %s", s, b)
		}
	}
	if !strings.Contains(string(b), `"x-api-key":"[redacted]"`) {
		t.Errorf("redacted config lost the otel header's name: %s", b)
	}
	if cfg.Secret != "cluster-secret-value" || cfg.Models[0].Upstream.APIKey != "upstream-key-value" || cfg.OTel.Headers["x-api-key"] != "otel-header-value" {
		t.Error("Redacted modified the original config")
	}
}

func TestOTelDefaults(t *testing.T) {
	cfg := mustParse(t, `{"nodeId": "a", "secret": "cluster-secret-value", "otel": {"endpoint": "http://127.0.0.1:4318"}}`)
	if cfg.OTel == nil || cfg.OTel.SampleRatio != DefaultSampleRatio || cfg.Metrics.Listen != "" {
		t.Fatalf("otel %+v, metrics %+v", cfg.OTel, cfg.Metrics)
	}
	cfg = mustParse(t, `{"nodeId": "a", "secret": "cluster-secret-value", "otel": {"endpoint": "http://127.0.0.1:4318", "sampleRatio": 0}}`)
	if cfg.OTel.SampleRatio != 0 {
		t.Fatalf("sampleRatio 0 read as %v", cfg.OTel.SampleRatio)
	}
	if cfg := mustParse(t, `{"nodeId": "a", "secret": "cluster-secret-value"}`); cfg.OTel != nil {
		t.Fatalf("otel %+v without otel in the config", cfg.OTel)
	}
}

func TestToolProxyAllows(t *testing.T) {
	denyExec := ToolProxy{Enabled: true, Allow: []string{"*"}, Deny: []string{"exec"}}
	tests := []struct {
		name  string
		p     ToolProxy
		tool  string
		allow bool
	}{
		{"disabled refuses everything", ToolProxy{Allow: []string{"exec"}}, "exec", false},
		{"empty allow runs nothing", ToolProxy{Enabled: true}, "exec", false},
		{"empty allow runs nothing, not even read", ToolProxy{Enabled: true, Allow: []string{}}, "read", false},
		{"star means all", ToolProxy{Enabled: true, Allow: []string{"*"}}, "web_fetch", true},
		{"listed", ToolProxy{Enabled: true, Allow: []string{"read"}}, "read", true},
		{"listed in another case", ToolProxy{Enabled: true, Allow: []string{"Read "}}, "read", true},
		{"caller spells a listed name in another case", ToolProxy{Enabled: true, Allow: []string{"read"}}, "READ", true},
		{"not listed", ToolProxy{Enabled: true, Allow: []string{"read"}}, "exec", false},
		{"deny wins over allow", ToolProxy{Enabled: true, Allow: []string{"exec"}, Deny: []string{"exec"}}, "exec", false},
		{"deny wins over star", ToolProxy{Enabled: true, Allow: []string{"*"}, Deny: []string{"write"}}, "write", false},
		{"deny star refuses all", ToolProxy{Enabled: true, Allow: []string{"*"}, Deny: []string{"*"}}, "read", false},
		{"Exec does not slip past deny exec", denyExec, "Exec", false},
		{"EXEC does not slip past deny exec", denyExec, "EXEC", false},
		{"leading space does not slip past deny exec", denyExec, " exec", false},
		{"trailing space does not slip past deny exec", denyExec, "exec ", false},
		{"tab and newline do not slip past deny exec", denyExec, "\texec\n", false},
		{"a name outside the charset is refused", denyExec, "exec\u200b", false},
		{"a dash is outside the charset", denyExec, "web-fetch", false},
		{"an empty name is refused", denyExec, "", false},
		{"other tools still run under star", denyExec, "web_fetch", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Allows(tt.tool); got != tt.allow {
				t.Errorf("Allows(%q) = %v, want %v", tt.tool, got, tt.allow)
			}
		})
	}
}

func TestNormalizeToolName(t *testing.T) {
	for in, want := range map[string]string{"exec": "exec", " Exec": "exec", "EXEC ": "exec", "web_fetch": "web_fetch"} {
		if got, err := NormalizeToolName(in); err != nil || got != want {
			t.Errorf("NormalizeToolName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", " ", "ex ec", "exec;rm", "web-fetch", "exec\x00", strings.Repeat("a", 65), "ｅｘｅｃ"} {
		if got, err := NormalizeToolName(in); err == nil {
			t.Errorf("NormalizeToolName(%q) = %q, want an error", in, got)
		}
	}
}

func TestAllowsCaller(t *testing.T) {
	tests := []struct {
		name      string
		allowFrom []string
		from      string
		tags      []string
		want      bool
	}{
		{"star admits every member", []string{"*"}, "any", nil, true},
		{"empty admits nobody", []string{}, "any", nil, false},
		{"node id", []string{"laptop"}, "laptop", nil, true},
		{"other node id", []string{"laptop"}, "evil", nil, false},
		{"tag", []string{"tag:trusted"}, "gpu", []string{"gpu", "trusted"}, true},
		{"missing tag", []string{"tag:trusted"}, "gpu", []string{"gpu"}, false},
		{"a node named like the tag entry is not the tag", []string{"tag:trusted"}, "tag:trusted", nil, false},
		{"a tag named like a node is not the node", []string{"laptop"}, "evil", []string{"laptop"}, false},
	}
	for _, tt := range tests {
		if got := AllowsCaller(tt.allowFrom, tt.from, tt.tags); got != tt.want {
			t.Errorf("%s: AllowsCaller(%v, %q, %v) = %v, want %v", tt.name, tt.allowFrom, tt.from, tt.tags, got, tt.want)
		}
	}
}

func TestAPIsMatchSchemaEnum(t *testing.T) {
	doc := mustDecode(t, ConfigSchema())
	for _, list := range []string{"models", "proxyModels"} {
		enum := stringList(mapOf(mapOf(mapOf(mapOf(mapOf(mapOf(doc)["properties"])[list])["items"])["properties"])["api"])["enum"])
		if !reflect.DeepEqual(enum, APIs) {
			t.Errorf("%s[].api enum = %v, APIs = %v", list, enum, APIs)
		}
	}
}
