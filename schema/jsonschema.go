package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/invopop/jsonschema"
	sjs "github.com/santhosh-tekuri/jsonschema/v5"
)

// reflectSchema generates the JSON Schema of v's type: inlined (no $ref or
// $defs, which OpenClaw's tool parameters and plugin config UI do not
// resolve), additionalProperties false on every object, required only where a
// field is tagged so.
func reflectSchema(v any) *jsonschema.Schema {
	r := &jsonschema.Reflector{
		Anonymous:                  true,
		DoNotReference:             true,
		ExpandedStruct:             true,
		RequiredFromJSONSchemaTags: true,
	}
	return r.Reflect(v)
}

// JSONSchemaExtend adds the public key pattern, which a struct tag cannot
// hold (it has commas and "=").
func (TrustedNode) JSONSchemaExtend(s *jsonschema.Schema) {
	if p, ok := s.Properties.Get("publicKey"); ok {
		p.Pattern = publicKeyPattern
	}
}

// JSONSchemaExtend lists the tools approvals.tools may name: the tool
// registry's, so a misspelled name is refused with the valid ones.
func (Approvals) JSONSchemaExtend(s *jsonschema.Schema) {
	if p, ok := s.Properties.Get("tools"); ok && p.Items != nil {
		for _, name := range ToolNames() {
			p.Items.Enum = append(p.Items.Enum, name)
		}
	}
}

// configSchema is the generated schema of Config as a Go value.
var configSchema = sync.OnceValue(func() *jsonschema.Schema {
	s := reflectSchema(&Config{})
	s.Title = "clawmatrix plugin config"
	s.Description = "Joins this OpenClaw gateway to a clawmatrix cluster: mesh identity and peers, " +
		"the agents, models and tools this node offers, and the remote models it uses."
	defaultEmptyLists(s)
	return s
})

// defaultEmptyLists gives every list without a default the default [], so that
// the schema documents what Parse does with an absent list.
func defaultEmptyLists(s *jsonschema.Schema) {
	if s == nil {
		return
	}
	if s.Type == "array" && s.Default == nil {
		s.Default = []any{}
	}
	defaultEmptyLists(s.Items)
	if s.Properties != nil {
		for p := s.Properties.Oldest(); p != nil; p = p.Next() {
			defaultEmptyLists(p.Value)
		}
	}
}

// ConfigSchema returns the JSON Schema of the plugin config, generated from
// the Go types. It is the manifest's configSchema and what Parse validates
// against. The bytes are shared: do not modify them.
func ConfigSchema() []byte { return configSchemaJSON() }

var configSchemaJSON = sync.OnceValue(func() []byte {
	return marshalIndent(configSchema())
})

// compiledConfigSchema is compiled once: Parse stays cheap.
var compiledConfigSchema = sync.OnceValue(func() *compiled {
	return mustCompile("clawmatrix-config.json", ConfigSchema())
})

// compiled is a validator together with the decoded schema document, which
// error reporting walks to name allowed values and known fields.
type compiled struct {
	schema *sjs.Schema
	doc    any
}

func mustCompile(name string, schemaJSON []byte) *compiled {
	c := sjs.NewCompiler()
	c.Draft = sjs.Draft2020
	if err := c.AddResource(name, bytes.NewReader(schemaJSON)); err != nil {
		panic(fmt.Sprintf("schema: generated schema %s does not load: %v", name, err))
	}
	s, err := c.Compile(name)
	if err != nil {
		panic(fmt.Sprintf("schema: generated schema %s does not compile: %v", name, err))
	}
	doc, err := decodeJSON(schemaJSON)
	if err != nil {
		panic(fmt.Sprintf("schema: generated schema %s is not JSON: %v", name, err))
	}
	return &compiled{schema: s, doc: doc}
}

// marshalIndent is the one JSON style of every generated file: 2-space
// indent, no HTML escaping, a final newline.
func marshalIndent(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("schema: cannot marshal %T: %v", v, err))
	}
	return buf.Bytes()
}

// decodeJSON decodes exactly one JSON value, numbers kept exact, as the
// validator wants it.
func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("unexpected data after the top-level value at byte %d", dec.InputOffset())
	}
	return v, nil
}

// schemaAt resolves a JSON pointer (an error's keyword location) in a schema
// document without $refs.
func schemaAt(doc any, pointer string) any {
	cur := doc
	if pointer == "" {
		return cur
	}
	for _, seg := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		seg = unescapePointer(seg)
		switch v := cur.(type) {
		case map[string]any:
			cur = v[seg]
		case []any:
			var i int
			if _, err := fmt.Sscanf(seg, "%d", &i); err != nil || i < 0 || i >= len(v) {
				return nil
			}
			cur = v[i]
		default:
			return nil
		}
	}
	return cur
}

func unescapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
