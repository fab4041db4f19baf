package plugin

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// The approval prompts a node with approvals in its config asks OpenClaw
// for (hooks/beforeToolCall): which calls wait, and what the user is shown.
func TestToolApproval(t *testing.T) {
	const secret = "test-secret-0123456789"
	beta := startSidecar(t)
	initialize(t, beta, config("beta", map[string]any{
		"listen": true, "listenHost": "127.0.0.1", "listenPort": 0, "tags": []string{"builds-here"},
		"agents": []any{map[string]any{"id": "bob", "description": "builds"}},
	}))
	alpha := startSidecar(t)
	var pre ToolApprovalResult
	err := alpha.Call(MethodToolApproval, map[string]any{"toolName": "cluster_exec", "params": map[string]any{"node": "beta", "command": "ls"}}, &pre, callTimeout)
	rpcError(t, err, CodeInvalidRequest, "not initialized")

	initialize(t, alpha, config("alpha", map[string]any{
		"peers":     []any{map[string]any{"url": beta.runtime().Mesh().URL()}},
		"approvals": map[string]any{"tools": []string{"cluster_exec", "cluster_write", "cluster_handoff", "cluster_tool", "cluster_tasks"}, "nodes": []string{"beta", "gamma"}, "timeoutMs": 45000},
	}))
	deadline := time.Now().Add(callTimeout)
	for {
		if p, ok := alpha.runtime().Mesh().Peer("beta"); ok && len(p.Agents) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alpha never saw beta's agent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	proxyKey := alpha.runtime().ProxyKey()

	long := strings.Repeat("echo step; ", 300)
	tests := []struct {
		name   string
		tool   string
		params any
		// want is nil when the call runs without asking.
		want *ApprovalRequest
		// has and hasNot are parts the description must and must not hold.
		has, hasNot []string
	}{
		{name: "a tool not listed runs", tool: "cluster_read", params: map[string]any{"node": "beta", "path": "a.txt"}},
		{name: "a node not listed runs", tool: "cluster_exec", params: map[string]any{"node": "delta", "command": "ls"}},
		{name: "invalid arguments run nothing, so no prompt", tool: "cluster_exec", params: map[string]any{"node": "beta"}},
		{name: "not a cluster tool", tool: "exec", params: map[string]any{"command": "ls"}},
		{
			name: "exec names the node, the directory and the command", tool: "cluster_exec",
			params: map[string]any{"node": "beta", "command": "make test", "cwd": "src/app"},
			want: &ApprovalRequest{Title: "Run a command on node beta", Severity: "warning",
				Description: `cluster_exec wants to run a shell command on node beta in "src/app": "make test"`},
		},
		{
			name: "exec shows no secret", tool: "cluster_exec",
			params: map[string]any{"node": "gamma", "command": `curl -H "Authorization: Bearer tok_9fS2kQ" "https://x.test/?api_key=k-4455&q=1"; ` +
				`echo ` + secret + ` ` + proxyKey + `; TOKEN=hunter2 ./deploy --password 'p w' --api-key k9k9 --verbose sk-abcdefghijklmnopqrstuv ghp_abcdefghijklmnopqrstuvwxyz0123 ` +
				`AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEf; git checkout 4b825dc642cb6eb9a060e54bf8d69288fbee4904`},
			has: []string{"Bearer [redacted]", "api_key=[redacted]", "TOKEN=[redacted]", "--password [redacted]", "--api-key [redacted] --verbose", "git checkout 4b825dc642cb6eb9a060e54bf8d69288fbee4904"},
			hasNot: []string{"tok_9fS2kQ", "k-4455", secret, proxyKey, "hunter2", "p w", "k9k9", "sk-abcdefghijklmnopqrstuv", "ghp_abcdefghijklmnopqrstuvwxyz0123",
				"AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEf"},
		},
		{
			name: "control characters and a long command are made one bounded line", tool: "cluster_exec",
			params: map[string]any{"node": "beta", "command": "printf 'a\\n'\n\x1b[2J\u202e" + long},
			has:    []string{`"printf 'a\n' [2J echo step; echo step;`, "…\""},
		},
		{
			name: "write shows the path and size, never the content", tool: "cluster_write",
			params: map[string]any{"node": "beta", "path": "notes/todo.md", "content": "the secret plan", "append": true},
			want: &ApprovalRequest{Title: "Write a file on node beta", Severity: "warning",
				Description: `cluster_write wants to append to "notes/todo.md" on node beta with 15 bytes (the content is not shown here)`},
		},
		{
			name: "cluster_tool shows the tool and its argument names only", tool: "cluster_tool",
			params: map[string]any{"node": "beta", "tool": "web_fetch", "args": map[string]any{"url": "https://x.test/?token=abc", "maxChars": 10}},
			want: &ApprovalRequest{Title: "Run tool web_fetch on node beta", Severity: "warning",
				Description: `cluster_tool wants to run the OpenClaw tool web_fetch on node beta with arguments maxChars, url (their values are not shown here)`},
		},
		{
			name: "a handoff names the agent and the node that offers it", tool: "cluster_handoff",
			params: map[string]any{"agent": "bob", "task": "Run the release checklist.", "context": "internal notes"},
			want: &ApprovalRequest{Title: "Hand a task to agent bob on node beta", Severity: "warning",
				Description: `cluster_handoff wants to give agent bob on node beta this task: "Run the release checklist." (with background not shown here)`},
		},
		{
			name: "a handoff by tags names the node the tags pick", tool: "cluster_handoff",
			params: map[string]any{"tags": []string{"builds-here"}, "task": "Build it.", "wait": false},
			want: &ApprovalRequest{Title: "Hand a task to the first agent of node beta", Severity: "warning",
				Description: `cluster_handoff wants to give the first agent of node beta this task: "Build it."`},
		},
		{
			name: "a cancel names what it stops", tool: "cluster_tasks",
			params: map[string]any{"id": "t-0123456789abc", "cancel": true},
			want: &ApprovalRequest{Title: "Cancel t-0123456789abc", Severity: "warning",
				Description: `cluster_tasks wants to cancel t-0123456789abc: one not started yet never starts, a running one is stopped`},
		},
		{
			name: "a handoff no node would take is asked for all the same", tool: "cluster_handoff",
			params: map[string]any{"agent": "nobody", "task": "x"},
			want: &ApprovalRequest{Title: "Hand a task to agent nobody on an unknown node", Severity: "warning",
				Description: `cluster_handoff wants to give agent nobody on an unknown node this task: "x"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got ToolApprovalResult
			if err := alpha.Call(MethodToolApproval, map[string]any{"toolName": tc.tool, "params": tc.params, "agentId": "main"}, &got, callTimeout); err != nil {
				t.Fatal(err)
			}
			gated := tc.want != nil || tc.has != nil
			if !gated {
				if got.RequireApproval != nil {
					t.Fatalf("asked for approval: %+v", got.RequireApproval)
				}
				return
			}
			r := got.RequireApproval
			if r == nil {
				t.Fatal("no approval asked for")
			}
			if strings.Join(r.AllowedDecisions, ",") != "allow-once,deny" || r.TimeoutMs != 45000 {
				t.Errorf("decisions %v, timeout %d", r.AllowedDecisions, r.TimeoutMs)
			}
			if !strings.HasPrefix(r.TimeoutReason, "The user did not approve "+tc.tool+" on ") || !strings.Contains(r.TimeoutReason, "within 45 s, so it did not run") {
				t.Errorf("timeout reason %q", r.TimeoutReason)
			}
			if tc.want != nil && (r.Title != tc.want.Title || r.Description != tc.want.Description || r.Severity != tc.want.Severity) {
				t.Errorf("got  %q / %q / %s\nwant %q / %q / %s", r.Title, r.Description, r.Severity, tc.want.Title, tc.want.Description, tc.want.Severity)
			}
			for _, s := range tc.has {
				if !strings.Contains(r.Description, s) {
					t.Errorf("description lacks %q:\n%s", s, r.Description)
				}
			}
			for _, s := range tc.hasNot {
				if strings.Contains(r.Description+r.Title, s) {
					t.Errorf("prompt shows %q:\n%s", s, r.Description)
				}
			}
			if n := utf8.RuneCountInString(r.Title); n > approvalTitleMax {
				t.Errorf("title is %d characters", n)
			}
			if n := utf8.RuneCountInString(r.Description); n > approvalDescriptionMax {
				t.Errorf("description is %d characters", n)
			}
			if i := strings.IndexFunc(r.Title+r.Description, func(c rune) bool { return unicode.IsControl(c) || unicode.Is(unicode.Cf, c) }); i >= 0 {
				t.Errorf("control or format character in the prompt: %q", r.Title+r.Description)
			}
		})
	}

	// Ids from the call are bounded too: a title always fits.
	var got ToolApprovalResult
	huge := strings.Repeat("n", 70)
	params := map[string]any{"toolName": "cluster_handoff", "params": map[string]any{"agent": huge, "node": "gamma", "task": "t"}}
	if err := alpha.Call(MethodToolApproval, params, &got, callTimeout); err != nil {
		t.Fatal(err)
	}
	if r := got.RequireApproval; r == nil || utf8.RuneCountInString(r.Title) > approvalTitleMax || !strings.HasSuffix(r.Title, "…") {
		t.Fatalf("long agent id: %+v", r)
	}
	if raw, _ := json.Marshal(got); strings.Contains(string(raw), `"allow-always"`) {
		t.Error("allow-always is offered, though nothing remembers it")
	}
}
