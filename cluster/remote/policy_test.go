package remote

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/clawmatrix/clawmatrix/schema"
)

func TestCheckPolicy(t *testing.T) {
	denyExec := schema.ToolProxy{Enabled: true, Allow: []string{"*"}, Deny: []string{"exec"}}
	cases := []struct {
		name    string
		policy  schema.ToolProxy
		tool    string
		allowed bool
		text    string // part of the refusal
	}{
		{"disabled", schema.ToolProxy{}, "exec", false, `set toolProxy.enabled: true in node "n1"'s clawmatrix config`},
		{"disabled even if allowed", schema.ToolProxy{Allow: []string{"exec"}}, "exec", false, "tool proxy is disabled"},
		{"empty allow runs nothing", schema.ToolProxy{Enabled: true}, "web_fetch", false, "allowed: none"},
		{"star allows all", schema.ToolProxy{Enabled: true, Allow: []string{"*"}}, "write", true, ""},
		{"specific allowed", schema.ToolProxy{Enabled: true, Allow: []string{"read", "exec"}}, "exec", true, ""},
		{"specific not listed", schema.ToolProxy{Enabled: true, Allow: []string{"read"}}, "exec", false, "not in the node's toolProxy.allow list (allowed: read)"},
		{"deny beats allow", schema.ToolProxy{Enabled: true, Allow: []string{"exec"}, Deny: []string{"exec"}}, "exec", false, "toolProxy.deny"},
		{"deny beats star", schema.ToolProxy{Enabled: true, Allow: []string{"*"}, Deny: []string{"write"}}, "write", false, "toolProxy.deny"},
		{"deny others only", schema.ToolProxy{Enabled: true, Allow: []string{"*"}, Deny: []string{"write"}}, "read", true, ""},
		{"deny star", schema.ToolProxy{Enabled: true, Allow: []string{"*"}, Deny: []string{"*"}}, "read", false, "toolProxy.deny"},
		{"Exec is exec", denyExec, "Exec", false, `refuses tool "exec": it is in the node's toolProxy.deny`},
		{"EXEC is exec", denyExec, "EXEC", false, "toolProxy.deny"},
		{"leading space", denyExec, " exec", false, "toolProxy.deny"},
		{"trailing space", denyExec, "exec ", false, "toolProxy.deny"},
		{"odd characters are refused", denyExec, "exec\u200b", false, "is not a tool name"},
		{"a newline inside is refused", denyExec, "ex\nec", false, "is not a tool name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkPolicy(tc.policy, "n1", tc.tool)
			if (err == nil) != tc.allowed {
				t.Fatalf("allowed = %v, want %v (err %v)", err == nil, tc.allowed, err)
			}
			if err != nil && !strings.Contains(err.Error(), tc.text) {
				t.Errorf("refusal %q does not say %q", err, tc.text)
			}
		})
	}
}

// Every tool-proxy executor applies the policy before doing anything.
func TestExecutorsRefuseWhenDisabled(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{WorkspaceDir: dir, Gateway: &schema.Gateway{URL: "http://127.0.0.1:1", Token: "tok-123456"}})
	ctx := t.Context()
	results := map[string]Result{
		"exec":  tg.exec(ctx, schema.ExecArgs{Command: "touch ran"}),
		"read":  tg.read(t.Context(), schema.ReadArgs{Path: "x"}),
		"write": tg.write(schema.WriteArgs{Path: "written", Content: "x"}),
		"tool":  tg.invokeTool(ctx, schema.ToolArgs{Tool: "web_fetch"}),
	}
	for name, r := range results {
		if !r.IsError || !strings.Contains(r.Text, "toolProxy.enabled: true") {
			t.Errorf("%s: got %+v, want a refusal saying how to enable the tool proxy", name, r)
		}
	}
	for _, f := range []string{"ran", "written"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s exists: a refused request ran anyway", f)
		}
	}
}

func TestCut(t *testing.T) {
	cases := []struct {
		in      string
		n       int
		kept    string
		dropped int
	}{
		{"hello", 10, "hello", 0},
		{"hello", 5, "hello", 0},
		{"hello", 3, "hel", 2},
		{"hello", -1, "", 5},
		{"aé", 2, "a", 2}, // é is two bytes: never split it
		{"日本", 4, "日", 3},
	}
	for _, tc := range cases {
		kept, dropped := cut([]byte(tc.in), tc.n)
		if string(kept) != tc.kept || dropped != tc.dropped || !utf8.Valid(kept) {
			t.Errorf("cut(%q, %d) = %q, %d; want %q, %d", tc.in, tc.n, kept, dropped, tc.kept, tc.dropped)
		}
	}
}

func TestCapText(t *testing.T) {
	text, cutBytes := redactor{}.capText(strings.Repeat("x", 100), 40)
	if cutBytes != 60 || !strings.HasPrefix(text, strings.Repeat("x", 40)+"\n[... 60 bytes cut") {
		t.Errorf("capText: %d bytes cut, text %q", cutBytes, text)
	}
	if text, cutBytes := (redactor{}).capText("short", 40); text != "short" || cutBytes != 0 {
		t.Errorf("capText left %q, %d", text, cutBytes)
	}
}

func TestRedactor(t *testing.T) {
	r := newRedactor("gateway-token-1", "abc", "")
	res := r.result(Result{Text: "token=gateway-token-1 abc", Details: map[string]string{"k": "xgateway-token-1x"}})
	if strings.Contains(res.Text, "gateway-token-1") || !strings.Contains(res.Text, "abc") {
		t.Errorf("text %q: the secret must go, short values stay", res.Text)
	}
	if d := string(mustJSON(t, res.Details)); strings.Contains(d, "gateway-token-1") {
		t.Errorf("details %s still hold the secret", d)
	}
}
