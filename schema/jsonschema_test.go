package schema

import (
	"strings"
	"testing"
)

// TestEveryObjectIsClosed walks the generated config schema: every object
// must reject unknown fields (so typos are caught with their path) and
// nothing may be a $ref.
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
				if n["additionalProperties"] != false {
					t.Errorf("%s: object without additionalProperties false", at)
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
