package remote

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// holdsSecret reports whether the wire form of details, or any string in
// it once decoded, still holds secret in any form.
func holdsSecret(t *testing.T, details any, secret string) bool {
	t.Helper()
	raw := mustJSON(t, details)
	for _, f := range secretForms(secret) {
		if strings.Contains(string(raw), f) {
			return true
		}
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("details %s are no longer JSON: %v", raw, err)
	}
	return strings.Contains(fmt.Sprintf("%v", v), secret)
}

// A secret holding characters JSON escapes is scrubbed from details however
// they were encoded: Go structs, maps, and raw JSON from a gateway.
func TestRedactorDetailsEscapedSecrets(t *testing.T) {
	cases := []struct {
		name    string
		secret  string
		details any
	}{
		{"html chars in a struct", "tok<en>&more", ExecDetails{Node: "n1", Cwd: "/x/tok<en>&more/y"}},
		{"quote and backslash in a map", `pa"ss\word-1`, map[string]any{"auth": `Bearer pa"ss\word-1`}},
		{"secret as a map key", "k<ey>-secret", map[string]any{"k<ey>-secret": 1}},
		{"nested list", "a&b&c&d&e", map[string]any{"l": []any{"x", map[string]any{"y": "-a&b&c&d&e-"}}}},
		{"raw JSON with HTML escapes", "tok<en>&more", ToolDetails{Node: "n1", Result: json.RawMessage(`{"t":"tok\u003cen\u003e\u0026more"}`)}},
		{"raw JSON with unusual escapes", "plain-secret", ToolDetails{Node: "n1", Result: json.RawMessage(`{"t":"\u0070lain-secret\/x"}`)}},
		{"raw JSON escaping a quote", `pa"ss\word-1`, json.RawMessage(`["pa\"ss\\word-1"]`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !holdsSecret(t, tc.details, tc.secret) {
				t.Fatalf("bad case: %v does not hold the secret", tc.details)
			}
			res := newRedactor(tc.secret).result(Result{Details: tc.details})
			if holdsSecret(t, res.Details, tc.secret) {
				t.Errorf("details %s still hold the secret", mustJSON(t, res.Details))
			}
			if !strings.Contains(string(mustJSON(t, res.Details)), "[redacted]") {
				t.Errorf("details %s: no [redacted] where the secret was", mustJSON(t, res.Details))
			}
		})
	}

	// Details without a secret are passed on as they were.
	d := ExecDetails{Node: "n1", Cwd: "/tmp"}
	if got := newRedactor("tok<en>&more").result(Result{Details: d}).Details; got != any(d) {
		t.Errorf("clean details were rewritten: %v", got)
	}
}

// Texts lose a secret also where it appears JSON-escaped (a command that
// printed a config file, say).
func TestRedactorTextEscapedForms(t *testing.T) {
	r := newRedactor(`pa"ss<word>-1`)
	for _, text := range []string{
		`{"token":"pa\"ss<word>-1"}`,
		`{"token":"pa\"ss\u003cword\u003e-1"}`,
		`raw pa"ss<word>-1`,
	} {
		if got := r.text(text); strings.Contains(got, "ss<word") || strings.Contains(got, `ss\u003cword`) || !strings.Contains(got, "[redacted]") {
			t.Errorf("text(%s) = %s", text, got)
		}
	}
}

// The cut point never falls inside a secret (in any form) nor inside a
// UTF-8 sequence.
func TestRedactorCutPoint(t *testing.T) {
	cases := []struct {
		name    string
		secrets []string
		in      string
		n       int
		want    int
	}{
		{"fits", []string{"secret-1"}, "abc", 5, 3},
		{"no secrets", nil, "hello world", 5, 5},
		{"rune boundary", nil, "aé", 2, 1},
		{"secret spans the cut", []string{"secret-1"}, "0123secret-1xyz", 8, 4},
		{"secret ends at the cut", []string{"secret-1"}, "0123secret-1xyz", 12, 12},
		{"secret starts at the cut", []string{"secret-1"}, "0123secret-1xyz", 4, 4},
		{"secret before the cut", []string{"secret-1"}, "secret-1abcdefgh", 10, 10},
		{"escaped form spans the cut", []string{`se"cret-1`}, `01{"k":"se\"cret-1"}`, 12, 8},
		{"moving back lands in another secret", []string{"XXXXYYYY", "WWWWXXXX"}, "..WWWWXXXXYYYY..", 12, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRedactor(tc.secrets...)
			if got := r.cutPoint([]byte(tc.in), tc.n); got != tc.want {
				t.Errorf("cutPoint(%q, %d) = %d, want %d", tc.in, tc.n, got, tc.want)
			}
		})
	}
}

// The tail of a longer output starts after any secret split at its start.
func TestRedactorTail(t *testing.T) {
	cases := []struct {
		name    string
		secrets []string
		in      string
		n       int
		want    string
	}{
		{"fits, scrubbed", []string{"secret-1"}, "a secret-1", 20, "a [redacted]"},
		{"no secrets", nil, "hello world", 5, "world"},
		{"rune boundary", nil, "éa", 2, "a"},
		{"secret spans the start", []string{"secret-1"}, "xsecret-1tail", 6, "tail"},
		{"secret starts at the start", []string{"secret-1"}, "xxsecret-1", 8, "[redacted]"},
		{"moving on lands in another secret", []string{"WWWWXXXX", "XXXXYYYY"}, "..WWWWXXXXYYYY..", 12, ".."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(newRedactor(tc.secrets...).tail([]byte(tc.in), tc.n))
			if got != tc.want || !utf8.ValidString(got) {
				t.Errorf("tail(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}

// capText scrubs before it cuts: a secret spanning the limit leaves no
// prefix behind, and the note counts the bytes of the scrubbed text.
func TestCapTextScrubsFirst(t *testing.T) {
	const secret = "s3cr3t-value-0123456789"
	r := newRedactor(secret)
	text, cutBytes := r.capText(strings.Repeat("a", 30)+secret+strings.Repeat("b", 20), 35)
	if strings.Contains(text, secret[:5]) {
		t.Fatalf("a prefix of the secret survived the cut: %q", text)
	}
	// Scrubbed: 30 a, "[redacted]", 20 b = 60 bytes; 35 are kept.
	if cutBytes != 25 || !strings.HasPrefix(text, strings.Repeat("a", 30)+"[reda\n[... 25 bytes cut") {
		t.Errorf("capText = %q, %d bytes cut", text, cutBytes)
	}
}
