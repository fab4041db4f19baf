// Package remote runs tools and agent turns on other nodes of the cluster.
//
// The caller's side is Client: it resolves the target node (by node id, or by
// the agent a node advertises), sends the request over the mesh and turns
// every outcome, including mesh failures, into a Result the agent can act on.
//
// Which tools run remotely, and under which mesh method, is schema's tool
// catalogue (schema.Tool.Method): the caller sends a call there, and
// Register installs a handler for each.
//
// The target's side is Target, installed on a mesh node by Register. The
// target is in charge of what runs on it: it re-validates the arguments,
// applies its toolProxy policy, caps output, and owns every process it starts
// (exec commands and `openclaw agent` runs), killing whole process groups on
// timeout, cancellation and Close.
//
// Policy: cluster_exec, cluster_read, cluster_write and cluster_tool are tool
// proxy requests and need toolProxy.enabled on the target; their policy names
// are OpenClaw's tool names (exec, read, write, or the tool of cluster_tool).
// cluster_handoff and cluster_send are agent runs, not tool proxy: a node takes
// them for exactly the agents it advertises (its config's agents), whatever
// its toolProxy says, and a node without agents takes none. A handoff that
// waits for its answer is a request here (its mesh method); messages and
// handoffs that do not wait travel through the durable outbox of package
// cluster/delivery, whose Runner calls Admit, AcquireRun, StartMessage and
// StartTask.
package remote

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults applied when the configuration leaves a value at zero.
const (
	DefaultExecTimeout    = 120 * time.Second
	DefaultMaxTimeout     = 600 * time.Second
	DefaultRunTimeout     = 600 * time.Second
	DefaultMaxOutputBytes = 1 << 20
	DefaultMaxRuns        = 2
)

// Result is what the calling agent sees. The plugin maps it to
// {content: [{type: "text", text}], details, isError}.
type Result struct {
	Text    string
	Details any
	IsError bool
}

// wireResult is the Result as it crosses the mesh. Details stay raw JSON so
// the caller passes them on without knowing their shape.
type wireResult struct {
	Text    string          `json:"text"`
	Details json.RawMessage `json:"details,omitempty"`
	IsError bool            `json:"isError,omitempty"`
}

func (r Result) wire() ([]byte, error) {
	w := wireResult{Text: r.Text, IsError: r.IsError}
	if r.Details != nil {
		d, err := json.Marshal(r.Details)
		if err != nil {
			return nil, err
		}
		w.Details = d
	}
	return json.Marshal(w)
}

// errorResult is a tool error with a text that says what to do next.
func errorResult(text string) Result {
	return Result{Text: text, IsError: true}
}

// redactor scrubs known secret values from what leaves the node. Each
// secret is matched as written and as JSON escapes it (with and without
// HTML escaping), so a secret holding <, >, &, " or \ is also caught inside
// JSON that a command printed or a tool returned.
type redactor struct {
	forms   []string // every form of every secret, longest first
	longest int      // length of the longest form
}

// minSecretLen keeps very short values (which could be ordinary words) from
// being scrubbed out of every output.
const minSecretLen = 6

func newRedactor(secrets ...string) redactor {
	var r redactor
	for _, s := range secrets {
		if len(s) < minSecretLen {
			continue
		}
		for _, f := range secretForms(s) {
			if !slices.Contains(r.forms, f) {
				r.forms = append(r.forms, f)
				r.longest = max(r.longest, len(f))
			}
		}
	}
	// Longer forms first, so that a form containing a shorter one goes
	// whole.
	slices.SortStableFunc(r.forms, func(a, b string) int { return len(b) - len(a) })
	return r
}

// secretForms is s as written and as it appears inside a JSON string.
func secretForms(s string) []string {
	forms := []string{s}
	for _, html := range []bool{false, true} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(html)
		if enc.Encode(s) == nil {
			q := strings.TrimSuffix(b.String(), "\n")
			forms = append(forms, q[1:len(q)-1])
		}
	}
	return forms
}

func (r redactor) text(s string) string {
	for _, f := range r.forms {
		if strings.Contains(s, f) {
			s = strings.ReplaceAll(s, f, "[redacted]")
		}
	}
	return s
}

// within reports whether b holds any form of a secret.
func (r redactor) within(b []byte) bool {
	for _, f := range r.forms {
		if bytes.Contains(b, []byte(f)) {
			return true
		}
	}
	return false
}

func (r redactor) bytes(b []byte) []byte {
	for _, f := range r.forms {
		if bytes.Contains(b, []byte(f)) {
			b = bytes.ReplaceAll(b, []byte(f), []byte("[redacted]"))
		}
	}
	return b
}

// lookahead is how many bytes past a cut point an output buffer must hold
// so that cutPoint sees every secret the cut could split (and the whole
// UTF-8 sequence there).
func (r redactor) lookahead() int { return r.longest + utf8.UTFMax }

// cutPoint is where to cut b so that at most n bytes are kept: on a UTF-8
// boundary and never inside a secret, so that no piece of one survives the
// cut to slip past the scrub. When b is only the start of a longer output
// it must hold lookahead() bytes past n.
func (r redactor) cutPoint(b []byte, n int) int {
	if len(b) <= n {
		return len(b)
	}
	kept, _ := cut(b, n)
	c := len(kept)
	for moved := true; moved; {
		moved = false
		for _, f := range r.forms {
			// Every match in this window starts before c and ends after it.
			lo, hi := max(0, c-len(f)+1), min(len(b), c+len(f)-1)
			if lo >= hi {
				continue
			}
			if i := bytes.Index(b[lo:hi], []byte(f)); i >= 0 {
				kept, _ = cut(b, lo+i)
				c, moved = len(kept), true
			}
		}
	}
	return c
}

// tail is the scrubbed last (at most) n bytes of b, starting on a UTF-8
// boundary and never inside a secret. When b is only the end of a longer
// output it must hold lookahead() bytes more than n.
func (r redactor) tail(b []byte, n int) []byte {
	if len(b) <= n {
		return r.bytes(b)
	}
	s := runeStartAtOrAfter(b, len(b)-n)
	for moved := true; moved; {
		moved = false
		for _, f := range r.forms {
			// Every match in this window starts before s and ends after it.
			lo, hi := max(0, s-len(f)+1), min(len(b), s+len(f)-1)
			if lo >= hi {
				continue
			}
			if i := bytes.LastIndex(b[lo:hi], []byte(f)); i >= 0 {
				s, moved = runeStartAtOrAfter(b, lo+i+len(f)), true
			}
		}
	}
	return r.bytes(b[s:])
}

func runeStartAtOrAfter(b []byte, i int) int {
	for j := 0; i < len(b) && j < utf8.UTFMax && !utf8.RuneStart(b[i]); j++ {
		i++
	}
	return i
}

// capText scrubs text, then cuts it to maxOutputBytes with a note of how
// many bytes of the scrubbed text were cut. Scrubbing first keeps a secret
// that spans the cut from surviving as a prefix.
func (r redactor) capText(text string, maxOutputBytes int) (string, int) {
	text = r.text(text)
	kept, dropped := cut([]byte(text), maxOutputBytes)
	if dropped == 0 {
		return text, 0
	}
	return string(kept) + cutNote(int64(dropped), maxOutputBytes), dropped
}

// result scrubs a Result's text and details.
func (r redactor) result(res Result) Result {
	res.Text = r.text(res.Text)
	if len(r.forms) > 0 && res.Details != nil {
		res.Details = r.details(res.Details)
	}
	return res
}

// details scrubs every string (and object key) inside details. It works on
// the decoded values, so a secret matches however the JSON escaped it (a
// gateway's details arrive as raw JSON); it returns details unchanged when
// they hold no secret.
func (r redactor) details(details any) any {
	raw, err := marshalNoHTML(details)
	if err != nil {
		return details // wire() fails on it as well: nothing leaves
	}
	// The common case, checked without decoding: no secret in any of the
	// forms JSON writes it in, and no \u or \/ escape (only raw JSON from
	// a gateway has those) that could spell one otherwise.
	if !bytes.Contains(raw, []byte(`\u`)) && !bytes.Contains(raw, []byte(`\/`)) && !r.within(raw) {
		return details
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return details
	}
	clean, changed := r.value(v)
	if !changed {
		return details
	}
	out, err := marshalNoHTML(clean)
	if err != nil {
		return nil // cannot happen for decoded JSON; never fall back to the secret
	}
	return json.RawMessage(out)
}

func (r redactor) value(v any) (any, bool) {
	switch x := v.(type) {
	case string:
		clean := r.text(x)
		return clean, clean != x
	case json.Number:
		if r.text(string(x)) != string(x) {
			return "[redacted]", true
		}
	case []any:
		changed := false
		for i, e := range x {
			if clean, ch := r.value(e); ch {
				x[i], changed = clean, true
			}
		}
		return x, changed
	case map[string]any:
		changed := false
		out := make(map[string]any, len(x))
		for k, e := range x {
			clean, ch := r.value(e)
			key := r.text(k)
			out[key] = clean
			changed = changed || ch || key != k
		}
		return out, changed
	}
	return v, false
}

// marshalNoHTML is json.Marshal without HTML escaping, so strings keep the
// form the secrets are matched in.
func marshalNoHTML(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
