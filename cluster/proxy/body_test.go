package proxy

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseChatRequest(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		model   string
		stream  bool
		wantErr string
	}{
		{name: "plain", body: `{"model":"m1","messages":[]}`, model: "m1"},
		{name: "stream", body: `{"messages":[{"role":"user","content":"hi"}], "stream": true, "model" : "m2"}`, model: "m2", stream: true},
		{name: "stream null", body: `{"model":"m","stream":null}`, model: "m"},
		{name: "escaped model", body: `{"model":"a\"b\u00e9"}`, model: "a\"bé"},
		{name: "nested model ignored", body: `{"x":{"model":"inner"},"model":"outer"}`, model: "outer"},
		{name: "not json", body: `hello`, wantErr: "not valid JSON"},
		{name: "truncated", body: `{"model":"m","messages":[`, wantErr: "not valid JSON"},
		{name: "array", body: `[1,2]`, wantErr: "must be a JSON object"},
		{name: "empty", body: ``, wantErr: "not valid JSON"},
		{name: "no model", body: `{"messages":[]}`, wantErr: `no "model"`},
		{name: "model number", body: `{"model":3}`, wantErr: `"model" must be a non-empty string`},
		{name: "model empty", body: `{"model":""}`, wantErr: `"model" must be a non-empty string`},
		{name: "stream string", body: `{"model":"m","stream":"yes"}`, wantErr: `"stream" must be true or false`},
		{name: "trailing data", body: `{"model":"m"} {}`, wantErr: "data after the JSON object"},
		{name: "bad inner value", body: `{"model":"m","messages":[tru]}`, wantErr: "not valid JSON"},
		{name: "last model wins", body: `{"model":"a","model":"b"}`, model: "b"},
		{name: "later null model", body: `{"model":"a","model":null}`, wantErr: `"model" must be a non-empty string`},
		{name: "later null stream", body: `{"model":"m","stream":true,"stream":null}`, model: "m"},
		{name: "escaped key", body: `{"mod\u0065l":"m","str\u0065am":true}`, model: "m", stream: true},
		{name: "deeper than the scan goes", body: `{"x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `,"model":"deep"}`, model: "deep"},
		{name: "too deep and no model", body: `{"x":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`, wantErr: `no "model"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cr, err := parseChatRequest([]byte(tt.body))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cr.Model != tt.model || cr.Stream != tt.stream {
				t.Fatalf("got model %q stream %v, want %q %v", cr.Model, cr.Stream, tt.model, tt.stream)
			}
		})
	}
}

func TestWithModel(t *testing.T) {
	tests := []struct {
		body, model, want string
	}{
		{`{"model":"a","messages":[{"role":"user","content":"x"}],"tools":[{"z":1}]}`, "b",
			`{"model":"b","messages":[{"role":"user","content":"x"}],"tools":[{"z":1}]}`},
		{`{ "stream" : true ,  "model" :  "a"  , "n":1}`, "openclaw/main",
			`{ "stream" : true ,  "model" :  "openclaw/main"  , "n":1}`},
		{`{"model":"a\u0041"}`, `q"<`, `{"model":"q\"\u003c"}`},
		{`{"model":"same","x":[1,   2]}`, "same", `{"model":"same","x":[1,   2]}`},
	}
	for _, tt := range tests {
		cr, err := parseChatRequest([]byte(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		got := string(withModel([]byte(tt.body), cr, tt.model))
		if got != tt.want {
			t.Errorf("withModel(%s, %q) = %s, want %s", tt.body, tt.model, got, tt.want)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(got), &v); err != nil || v["model"] != tt.model {
			t.Errorf("result %s does not decode to model %q: %v", got, tt.model, err)
		}
	}
}

// The fast scan and the decoder must agree on every valid body.
func FuzzParseChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[]}`, `{"stream":true,"model":"a\"b"}`, `{"x":{"model":"in"},"model":"out"}`,
		`{"model":3}`, `{"model":"m","stream":"yes"}`, `{ "model" : "m" , "stream" : null }`, `[]`, `"s"`,
		`{"mod\u0065l":"esc"}`, `{"model":"m","model":"n"}`, `{"a":[1,{"b":"]}"}],"model":"x"}`, `{}`,
		`{"model":"a","model":null}`, `{"model":"m","stream":true,"stream":null}`, `{"model":"\ud800"}`,
		"{\"model\":\"\xff\"}", `{"x":[[[[[[]]]]]],"model":"m"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := parseChatRequest(body)
		if !json.Valid(body) {
			return
		}
		want, werr := decodeChatRequest(body)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%s: scan %+v %v, decode %+v %v", body, got, err, want, werr)
		}
		if err != nil {
			if err.Error() != werr.Error() {
				t.Fatalf("%s: scan says %q, decoder %q", body, err, werr)
			}
			return
		}
		if got != want {
			t.Fatalf("%s: scan %+v, decode %+v", body, got, want)
		}
		out := withModel(body, got, "replaced")
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil || v["model"] != "replaced" {
			t.Fatalf("withModel(%s) = %s: %v", body, out, err)
		}
	})
}

// BenchmarkParseChatRequest is the cost the proxy adds in front of every
// chat request (a 3.5 KB body with 40 messages and a tool).
func BenchmarkParseChatRequest(b *testing.B) {
	msgs := strings.Repeat(`{"role":"user","content":"Summarise the \"design\" notes in three lines, please."},`, 40)
	body := []byte(`{"messages":[` + msgs + `{"role":"user","content":"go"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],"stream":true,"model":"gpt-4o-mini"}`)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		cr, err := parseChatRequest(body)
		if err != nil || cr.Model != "gpt-4o-mini" || !cr.Stream {
			b.Fatal(cr, err)
		}
	}
}
