package schema

import (
	"strings"
	"testing"
)

// TestEveryObjectIsClosed walks the generated config schema: every object
// must reject unknown fields (so typos are caught with their path) and
// nothing may be a $ref. A map (an object with no properties, such as
// otel.headers) has no field to mistype; its values must have a type.
func TestEveryObjectIsClosed(t *testing.T) {
	objects := 0
	var walk func(node any, at string)
	walk = func(node any, at string) {
		switch n := node.(type) {
		case map[string]any:
			if _, ok := n["$ref"]; ok {
				t.Errorf("%s: $ref in the generated schema", at)
			}
			if n["type"] == "object" {
				objects++
				_, isMap := n["additionalProperties"].(map[string]any)
				if _, hasProps := n["properties"]; isMap && hasProps || !isMap && n["additionalProperties"] != false {
					t.Errorf("%s: object without additionalProperties false (or, for a map, a schema)", at)
				}
			}
			for k, v := range n {
				walk(v, at+"/"+k)
			}
		case []any:
			for _, v := range n {
				walk(v, at)
			}
		}
	}
	walk(mustDecode(t, ConfigSchema()), "#")
	if objects < 10 {
		t.Errorf("only %d objects found; the walk is not reaching the schema", objects)
	}
}

func TestDecodeJSON(t *testing.T) {
	tests := []struct {
		in, err string
	}{
		{`{"a": 1}`, ""},
		{` [1, 2] `, ""},
		{`{"a": 1} x`, "unexpected data after the top-level value"},
		{`{"a": 1}{}`, "unexpected data after the top-level value"},
		{`{"a": `, "unexpected EOF"},
	}
	for _, tt := range tests {
		_, err := decodeJSON([]byte(tt.in))
		if (err == nil) != (tt.err == "") || (err != nil && !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("decodeJSON(%q) error = %v, want %q", tt.in, err, tt.err)
		}
	}
}

// OpenClaw validates plugin configs against the manifest's schema alone,
// before the sidecar runs: the problems a user is most likely to make must
// be caught there, not only by the checks in Parse.
func TestSchemaAloneRefusesCommonMistakes(t *testing.T) {
	base := `"nodeId": "a", "secret": "0123456789abcdef"`
	tests := []struct {
		name, config string
		valid        bool
	}{
		{"ws peer", `{` + base + `, "peers": [{"url": "ws://h:1"}, {"url": "WSS://h:1"}]}`, true},
		{"http peer", `{` + base + `, "peers": [{"url": "http://h:1"}]}`, false},
		{"bare host peer", `{` + base + `, "peers": [{"url": "h:19000"}]}`, false},
		{"http upstream", `{` + base + `, "models": [{"id": "m", "provider": "p", "upstream": {"baseUrl": "https://h/v1"}}]}`, true},
		{"ws upstream", `{` + base + `, "models": [{"id": "m", "provider": "p", "upstream": {"baseUrl": "ws://h/v1"}}]}`, false},
		{"output cap too big", `{` + base + `, "toolProxy": {"maxOutputBytes": 1073741824}}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inst, err := decodeJSON([]byte(tc.config))
			if err != nil {
				t.Fatal(err)
			}
			err = compiledConfigSchema().schema.Validate(inst)
			if (err == nil) != tc.valid {
				t.Fatalf("schema validation error %v; want valid=%v", err, tc.valid)
			}
		})
	}
}
