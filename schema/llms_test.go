package schema

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestLLMsTxtCoversSchemaAndTools keeps llms.txt in step with the generated
// schema and the tool catalogue: every config field path is documented on a
// line that also states its default (or that it is required), and every tool
// is described with each of its arguments.
func TestLLMsTxtCoversSchemaAndTools(t *testing.T) {
	raw, err := os.ReadFile(repoRoot + "/llms.txt")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	lines := strings.Split(text, "\n")

	doc := mustDecode(t, ConfigSchema())
	paths := fieldPaths(doc)
	if len(paths) < 50 {
		t.Fatalf("only %d field paths found in the schema; the walk is broken", len(paths))
	}
	for _, p := range paths {
		rows := linesWith(lines, "`"+p+"`")
		if len(rows) == 0 {
			t.Errorf("llms.txt does not document config field `%s`", p)
			continue
		}
		node := schemaForPath(doc, p)
		if def, ok := node["default"]; ok {
			want := "`" + renderDefault(def) + "`"
			if !slices.ContainsFunc(rows, func(r string) bool { return strings.Contains(r, want) }) {
				t.Errorf("llms.txt: the line for `%s` does not state its default %s", p, want)
			}
		}
		if isRequired(doc, p) && !slices.ContainsFunc(rows, func(r string) bool { return strings.Contains(r, "required") }) {
			t.Errorf("llms.txt: the line for `%s` does not say it is required", p)
		}
	}

	for _, tool := range Tools() {
		entry := toolEntry(lines, tool.Name)
		if entry == "" {
			t.Errorf("llms.txt does not describe tool %s (expected a line starting with \"- `%s`\")", tool.Name, tool.Name)
			continue
		}
		var params struct {
			Properties map[string]any `json:"properties"`
		}
		if err := json.Unmarshal(ToolParameters(tool.Name), &params); err != nil {
			t.Fatal(err)
		}
		for arg := range params.Properties {
			if !strings.Contains(entry, "`"+arg+"`") {
				t.Errorf("llms.txt: %s does not mention its argument `%s`", tool.Name, arg)
			}
		}
	}
}

func linesWith(lines []string, s string) []string {
	var out []string
	for _, l := range lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// toolEntry returns a tool's bullet in llms.txt with its continuation lines.
func toolEntry(lines []string, name string) string {
	for i, l := range lines {
		if !strings.HasPrefix(l, "- `"+name+"`") {
			continue
		}
		entry := l
		for _, next := range lines[i+1:] {
			if !strings.HasPrefix(next, "  ") {
				break
			}
			entry += "\n" + next
		}
		return entry
	}
	return ""
}

// schemaForPath finds the schema of a field path like "models[].cost.input".
func schemaForPath(doc any, path string) map[string]any {
	node := mapOf(doc)
	for _, part := range strings.Split(path, ".") {
		name, isList := strings.CutSuffix(part, "[]")
		node = mapOf(mapOf(node["properties"])[name])
		if isList {
			node = mapOf(node["items"])
		}
	}
	return node
}

func isRequired(doc any, path string) bool {
	parentPath, name := "", path
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		parentPath, name = path[:i], path[i+1:]
	}
	parent := mapOf(doc)
	if parentPath != "" {
		parent = schemaForPath(doc, parentPath)
	}
	return slices.Contains(stringList(parent["required"]), name)
}

func renderDefault(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestToolEntryAndSchemaForPath(t *testing.T) {
	lines := []string{"- `cluster_x` — does x.", "  Arguments: `a`.", "- `cluster_y` — y"}
	if got := toolEntry(lines, "cluster_x"); got != "- `cluster_x` — does x.\n  Arguments: `a`." {
		t.Errorf("toolEntry = %q", got)
	}
	doc := mustDecode(t, ConfigSchema())
	if d := schemaForPath(doc, "models[].cost.input")["default"]; numberString(d) != "0" {
		t.Errorf("schemaForPath(models[].cost.input) default = %v", d)
	}
	if !isRequired(doc, "peers[].url") || isRequired(doc, "peers[].nodeId") || !isRequired(doc, "secret") {
		t.Error("isRequired disagrees with the schema")
	}
}

// fieldPaths lists every field path of a schema in the style of Problem.Path
// ("peers[].url"), in schema order; llms.txt is checked against it.
func fieldPaths(doc any) []string {
	var out []string
	var walk func(prefix string, s map[string]any)
	walk = func(prefix string, s map[string]any) {
		if items, ok := s["items"].(map[string]any); ok {
			walk(prefix+"[]", items)
		}
		props, _ := s["properties"].(map[string]any)
		if len(props) == 0 {
			return
		}
		for _, name := range sortedKeys(props) {
			p := name
			if prefix != "" {
				p = prefix + "." + name
			}
			out = append(out, p)
			if sub, ok := props[name].(map[string]any); ok {
				walk(p, sub)
			}
		}
	}
	if m, ok := doc.(map[string]any); ok {
		walk("", m)
	}
	return out
}
