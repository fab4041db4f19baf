package schema

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	sjs "github.com/santhosh-tekuri/jsonschema/v5"
)

// TestGeneratedFilesMatchCommitted fails when the committed manifest or tool
// catalogue drifts from what the code generates.
func TestGeneratedFilesMatchCommitted(t *testing.T) {
	files := []struct {
		path string
		gen  func() []byte
		cmd  string
	}{
		{repoRoot + "/openclaw.plugin.json", Manifest, "go run ./cmd/clawmatrix-plugin manifest > openclaw.plugin.json"},
		{repoRoot + "/openclaw.tools.json", ToolCatalogue, "go run ./cmd/clawmatrix-plugin tools > openclaw.tools.json"},
	}
	for _, f := range files {
		got := f.gen()
		if *update {
			if err := os.WriteFile(f.path, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatalf("%s: %v; generate it with `%s`", f.path, err, f.cmd)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the generated output; regenerate it with `%s` and commit it", f.path, f.cmd)
		}
	}
}

func TestGeneratedOutputIsStable(t *testing.T) {
	if !bytes.HasSuffix(Manifest(), []byte("}\n")) || !bytes.HasSuffix(ToolCatalogue(), []byte("]\n")) {
		t.Error("generated files must end with a newline")
	}
	// Map iteration must not leak into the output: regenerate from scratch.
	for i := 0; i < 3; i++ {
		if !bytes.Equal(marshalIndent(configSchema()), ConfigSchema()) {
			t.Fatal("config schema output is not deterministic")
		}
	}
	if !bytes.Contains(Manifest(), []byte("\n  \"id\": \"clawmatrix\",\n")) {
		t.Error("manifest is not indented with two spaces")
	}
}

func TestManifestContents(t *testing.T) {
	var m struct {
		ID           string                    `json:"id"`
		Name         string                    `json:"name"`
		Description  string                    `json:"description"`
		Providers    []string                  `json:"providers"`
		Activation   struct{ OnStartup bool }  `json:"activation"`
		Contracts    struct{ Tools []string }  `json:"contracts"`
		UIHints      map[string]map[string]any `json:"uiHints"`
		ConfigSchema json.RawMessage           `json:"configSchema"`
		Setup        struct {
			Providers []struct {
				ID      string   `json:"id"`
				EnvVars []string `json:"envVars"`
			} `json:"providers"`
		} `json:"setup"`
		CLICommands []struct {
			Name           string `json:"name"`
			Description    string `json:"description"`
			HasSubcommands bool   `json:"hasSubcommands"`
		} `json:"cliCommands"`
	}
	dec := json.NewDecoder(bytes.NewReader(Manifest()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("manifest: %v", err)
	}
	if m.ID != "clawmatrix" || m.Name == "" || m.Description == "" {
		t.Errorf("identity fields: %+v", m)
	}
	if !m.Activation.OnStartup {
		t.Error("activation.onStartup must be true")
	}
	if !slices.Equal(m.Contracts.Tools, ToolNames()) || len(m.Contracts.Tools) != 8 {
		t.Errorf("contracts.tools = %v", m.Contracts.Tools)
	}
	if !slices.Equal(m.Providers, []string{"clawmatrix"}) {
		t.Errorf("providers = %v", m.Providers)
	}
	if len(m.Setup.Providers) != 1 || m.Setup.Providers[0].ID != "clawmatrix" || !slices.Equal(m.Setup.Providers[0].EnvVars, []string{"CLAWMATRIX_PROXY_KEY"}) {
		t.Errorf("setup.providers = %+v", m.Setup.Providers)
	}
	// openclaw clawmatrix status|identity|trust|revoke (lib/cli.js).
	if len(m.CLICommands) != 1 || m.CLICommands[0].Name != "clawmatrix" || !m.CLICommands[0].HasSubcommands || m.CLICommands[0].Description == "" {
		t.Errorf("cliCommands = %+v", m.CLICommands)
	}
	for _, key := range []string{"secret", "proxyKey", "models.*.upstream.apiKey"} {
		if m.UIHints[key]["sensitive"] != true {
			t.Errorf("uiHints.%s must be sensitive", key)
		}
	}
	root := mapOf(mustDecode(t, ConfigSchema()))
	for key := range m.UIHints {
		node := root
		for _, seg := range strings.Split(key, ".") {
			if seg == "*" {
				node = mapOf(node["items"])
			} else {
				node = mapOf(mapOf(node["properties"])[seg])
			}
		}
		if node == nil {
			t.Errorf("uiHints.%s names no config field", key)
		}
	}
	var inlined bytes.Buffer
	if err := json.Compact(&inlined, m.ConfigSchema); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	_ = json.Compact(&want, ConfigSchema())
	if !bytes.Equal(inlined.Bytes(), want.Bytes()) {
		t.Error("manifest configSchema differs from ConfigSchema()")
	}
	if strings.Contains(string(m.ConfigSchema), `"$ref"`) || strings.Contains(string(m.ConfigSchema), `"$defs"`) {
		t.Error("configSchema must be inlined, without $ref or $defs")
	}
}

// TestSchemasValidAgainstMetaSchema validates the manifest's configSchema
// against the meta-schema of the draft it declares, and every tool's
// parameters against draft 2020-12.
func TestSchemasValidAgainstMetaSchema(t *testing.T) {
	var m struct {
		ConfigSchema json.RawMessage `json:"configSchema"`
	}
	if err := json.Unmarshal(Manifest(), &m); err != nil {
		t.Fatal(err)
	}
	doc := mustDecode(t, m.ConfigSchema)
	draft, _ := mapOf(doc)["$schema"].(string)
	if draft != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("configSchema declares $schema %q", draft)
	}
	meta, err := sjs.Compile(draft)
	if err != nil {
		t.Fatalf("meta-schema %s: %v", draft, err)
	}
	if err := meta.Validate(doc); err != nil {
		t.Errorf("configSchema is not a valid %s schema: %#v", draft, err)
	}
	for _, name := range ToolNames() {
		if err := meta.Validate(mustDecode(t, ToolParameters(name))); err != nil {
			t.Errorf("%s parameters are not a valid schema: %#v", name, err)
		}
	}
	// The check itself must be able to fail.
	if meta.Validate(mustDecode(t, []byte(`{"type": "objekt", "minLength": -1}`))) == nil {
		t.Error("meta-schema accepted an invalid schema; the check above proves nothing")
	}
}

func mustDecode(t *testing.T, raw []byte) any {
	t.Helper()
	v, err := decodeJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
