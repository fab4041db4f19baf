package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
)

const (
	gatewayToken = "gateway-token-0123456789"
	providerKey  = "provider-key-0123456789"
)

// fakeOpenClaw stands in for the host's OpenClaw: its gateway's
// /v1/chat/completions and /tools/invoke (checking the gateway token; only
// web_search is a tool there), a provider's OpenAI
// API under /provider/v1 (checking the provider key), and the
// `openclaw agent --json` CLI as a script.
type fakeOpenClaw struct {
	srv *httptest.Server
	bin string

	mu    sync.Mutex
	calls []chatCall
}

type chatCall struct {
	path, model, openclawModel string
}

func newFakeOpenClaw(t *testing.T) *fakeOpenClaw {
	t.Helper()
	f := &fakeOpenClaw{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/tools/invoke" && r.Header.Get("Authorization") == "Bearer "+gatewayToken {
			var req struct {
				Tool string `json:"tool"`
			}
			json.NewDecoder(r.Body).Decode(&req)
			w.Header().Set("Content-Type", "application/json")
			if req.Tool != "web_search" {
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, `{"ok":false,"error":{"type":"not_found","message":"Tool not available"}}`)
				return
			}
			io.WriteString(w, `{"ok":true,"result":{"content":[{"type":"text","text":"searched on beta"}]}}`)
			return
		}
		want := map[string]string{"/v1/chat/completions": gatewayToken, "/provider/v1/chat/completions": providerKey}[r.URL.Path]
		if want == "" || r.Header.Get("Authorization") != "Bearer "+want {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"wrong key or path","type":"auth","code":"unauthorized"}}`)
			return
		}
		var req struct {
			Model string `json:"model"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		f.calls = append(f.calls, chatCall{r.URL.Path, req.Model, r.Header.Get("x-openclaw-model")})
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"answer via %s"},"finish_reason":"stop"}]}`, req.Model, r.URL.Path)
	}))
	t.Cleanup(f.srv.Close)

	dir := t.TempDir()
	f.bin = filepath.Join(dir, "openclaw")
	script := `#!/bin/sh
agent=""; msg=""; session=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) agent="$2"; shift ;;
    --message) msg="$2"; shift ;;
    --session-key) session="$2"; shift ;;
  esac
  shift
done
if [ -n "$session" ]; then
  printf '%s\t%s\t%s\n' "$session" "$agent" "$(printf '%s' "$msg" | tr '\n' '|')" >> "$(dirname "$0")/sessions"
fi
case "$msg" in
  *FAIL*) echo "boom: the model is down" >&2; exit 3 ;;
esac
# One line for the JSON string: newlines become "|".
printf '{"runId":"r1","status":"ok","result":{"payloads":[{"text":"%s did: %s"}]}}\n' "$agent" "$(printf '%s' "$msg" | tr '\n' '|')"
`
	if err := os.WriteFile(f.bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fakeOpenClaw) port() int {
	var port int
	fmt.Sscanf(f.srv.URL[strings.LastIndex(f.srv.URL, ":")+1:], "%d", &port)
	return port
}

func (f *fakeOpenClaw) lastCall() chatCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) == 0 {
		return chatCall{}
	}
	return f.calls[len(f.calls)-1]
}

// twoGateways starts beta, which has an OpenClaw gateway, a host provider
// and an agent, and alpha, which dials it; it returns both once alpha sees
// beta with its agent.
func twoGateways(t *testing.T) (alpha, beta *sidecar, betaDir string, oc *fakeOpenClaw, alphaInit InitializeResult) {
	t.Helper()
	oc = newFakeOpenClaw(t)
	beta = startSidecar(t)
	betaDir = t.TempDir()
	var res InitializeResult
	err := beta.Call(MethodInitialize, map[string]any{
		"config": config("beta", map[string]any{
			"listen": true, "listenHost": "127.0.0.1", "listenPort": 0,
			"agents":      []any{map[string]any{"id": "coder", "description": "writes code"}},
			"toolProxy":   map[string]any{"enabled": true, "allow": []string{"*"}, "deny": []string{"write"}},
			"openclawBin": oc.bin,
			"models": []any{
				map[string]any{"id": "via-provider", "provider": "local"},
				map[string]any{"id": "via-gateway", "provider": "anthropic", "serveViaGateway": true},
			},
		}),
		"gateway":      map[string]any{"port": oc.port(), "token": gatewayToken},
		"providers":    map[string]any{"local": map[string]any{"baseUrl": oc.srv.URL + "/provider/v1", "api": "openai-completions", "apiKey": providerKey}, "anthropic": map[string]any{"baseUrl": oc.srv.URL, "api": "anthropic-messages"}},
		"workspaceDir": betaDir,
	}, &res, callTimeout)
	if err != nil {
		t.Fatalf("initialize beta: %v", err)
	}
	alpha = startSidecar(t)
	alphaInit = initialize(t, alpha, config("alpha", map[string]any{
		"peers":       []any{map[string]any{"url": beta.runtime().Mesh().URL(), "nodeId": "beta"}},
		"proxyModels": []any{map[string]any{"id": "via-provider"}, map[string]any{"id": "via-gateway", "nodeId": "beta"}},
	}))
	node := alpha.runtime().Mesh()
	deadline := time.After(callTimeout)
	for {
		changed := node.Changed()
		if p, ok := node.Peer("beta"); ok && len(p.Agents) == 1 && len(p.Models) == 2 {
			return alpha, beta, betaDir, oc, alphaInit
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("alpha never saw beta with its agent and models")
		}
	}
}

// The remote tools through the host protocol: results, errors and details
// as the agent sees them, and no secret anywhere.
func TestRemoteToolCalls(t *testing.T) {
	alpha, beta, betaDir, _, _ := twoGateways(t)
	if err := os.WriteFile(filepath.Join(betaDir, "notes.txt"), []byte("one\ntwo\nthree\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tool    string
		args    map[string]any
		isError bool
		text    string
		details string // a field the details must have, as JSON
	}{
		{"exec: non-zero exit is a result", "cluster_exec", map[string]any{"node": "beta", "command": "pwd; exit 3"}, false,
			"exit code 3\n--- stdout ---\n" + betaDir, `"exitCode":3`},
		{"read with offset and limit", "cluster_read", map[string]any{"node": "beta", "path": "notes.txt", "offset": 2, "limit": 1}, false,
			"two\n\n[more lines follow; to continue, read with offset 3]", `"nextOffset":3`},
		{"write denied by beta", "cluster_write", map[string]any{"node": "beta", "path": "x.txt", "content": "x"}, true,
			`node "beta" refuses tool "write": it is in the node's toolProxy.deny list`, ""},
		{"tool through beta's gateway", "cluster_tool", map[string]any{"node": "beta", "tool": "web_search", "args": map[string]any{"q": "go"}}, false,
			"searched on beta", `"tool":"web_search"`},
		{"tool beta's gateway lacks", "cluster_tool", map[string]any{"node": "beta", "tool": "teleport"}, true,
			`tool "teleport" is not available on node "beta" (unknown, or blocked by its gateway policy)`, ""},
		{"handoff by agent", "cluster_handoff", map[string]any{"agent": "coder", "task": "fix the bug", "context": "in main.go"}, false,
			"coder did: fix the bug||Context:|in main.go", `"agent":"coder"`},
		{"handoff by node", "cluster_handoff", map[string]any{"node": "beta", "task": "hello"}, false, "coder did: hello", `"node":"beta"`},
		{"failing agent", "cluster_handoff", map[string]any{"agent": "coder", "task": "FAIL"}, true,
			"failed (exit code 3)\nstderr (last lines):\nboom: the model is down", ""},
		{"unknown agent", "cluster_handoff", map[string]any{"agent": "painter", "task": "x"}, true,
			`the task was not sent: no node in the cluster offers agent "painter", now or before; the agents on offer: coder (node beta)`, ""},
		{"send", "cluster_send", map[string]any{"agent": "coder", "message": "FYI"}, false,
			`queued for agent "coder" on node "beta" (state: queued; stored on this node)`, `"state":"queued"`},
		{"send to tags nobody has", "cluster_send", map[string]any{"tags": []string{"gpu"}, "message": "FYI"}, true,
			`no reachable node has tags [gpu] (a tag counts when the node or the agent has it). Tags on offer: beta: no tags`, ""},
		{"handoff without waiting", "cluster_handoff", map[string]any{"agent": "coder", "task": "later", "wait": false}, false,
			`handed to agent "coder" on node "beta"`, `"kind":"handoff"`},
		{"arguments checked before anything runs", "cluster_exec", map[string]any{"node": "beta", "command": "touch ran", "timeoutMs": "soon"}, true,
			"cluster_exec was not run: invalid arguments: timeoutMs", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := callTool(t, alpha, tc.tool, tc.args)
			text := res.Content[0].Text
			if res.IsError != tc.isError || !strings.Contains(text, tc.text) {
				t.Fatalf("got isError=%v %q; want isError=%v containing %q", res.IsError, text, tc.isError, tc.text)
			}
			details, _ := json.Marshal(res.Details)
			if tc.details != "" && !strings.Contains(string(details), tc.details) {
				t.Errorf("details %s lack %s", details, tc.details)
			}
			for _, secret := range []string{gatewayToken, providerKey, "test-secret-0123456789"} {
				if strings.Contains(text, secret) || strings.Contains(string(details), secret) {
					t.Errorf("result shows a secret: %s %s", text, details)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(betaDir, "ran")); err == nil {
		t.Error("a command with invalid arguments ran")
	}
	for _, sc := range []*sidecar{alpha, beta} {
		for _, l := range sc.Logs() {
			for _, secret := range []string{gatewayToken, providerKey, "test-secret-0123456789"} {
				if strings.Contains(string(l), secret) {
					t.Errorf("a log notification shows a secret: %s", l)
				}
			}
		}
	}
}

// Models served by another OpenClaw node, in the serving order: the host
// provider when it speaks OpenAI chat completions, else the gateway running
// an agent turn with x-openclaw-model.
func TestProxyThroughHostProviderAndGateway(t *testing.T) {
	_, _, _, oc, init := twoGateways(t)
	if len(init.Provider.Models) != 2 || init.Provider.Models[1].ID != "via-gateway" || init.Provider.Models[1].MaxTokens != 4096 {
		t.Fatalf("alpha's provider models = %+v", init.Provider.Models)
	}
	tests := []struct {
		model string
		want  chatCall
	}{
		{"via-provider", chatCall{"/provider/v1/chat/completions", "via-provider", ""}},
		{"via-gateway", chatCall{"/v1/chat/completions", "openclaw/coder", "anthropic/via-gateway"}},
	}
	for _, tc := range tests {
		req, err := http.NewRequest("POST", init.Provider.BaseURL+"/chat/completions",
			strings.NewReader(`{"model":"`+tc.model+`","messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+init.Provider.APIKey)
		resp, err := (&http.Client{Timeout: callTimeout}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "answer via "+tc.want.path) || resp.Header.Get("X-Clawmatrix-Node") != "beta" {
			t.Fatalf("%s: %d %s (node %q)", tc.model, resp.StatusCode, body, resp.Header.Get("X-Clawmatrix-Node"))
		}
		if got := oc.lastCall(); got != tc.want {
			t.Errorf("%s: beta's OpenClaw got %+v, want %+v", tc.model, got, tc.want)
		}
	}
}

// A host that abandons a tool call (the agent's turn was aborted) cancels it
// with NotificationCancel: the command on the target is killed with its whole
// process group, and the answer says so long before the command would end.
func TestCancelledToolCallStopsRemoteWork(t *testing.T) {
	alpha, _, betaDir, _, _ := twoGateways(t)
	call, err := alpha.Go(MethodToolsCall, map[string]any{"name": "cluster_exec",
		"arguments": map[string]any{"node": "beta", "command": "echo $$ > pid; sleep 60; touch finished"}})
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(betaDir, "pid")
	var pid int
	for deadline := time.Now().Add(callTimeout); pid == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the command never started on beta")
		}
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		}
	}
	if err := alpha.Notify(NotificationCancel, map[string]any{"id": call.ID}); err != nil {
		t.Fatal(err)
	}
	var res ToolCallResult
	if err := call.Wait(&res, callTimeout); err != nil {
		t.Fatalf("no answer after cancel: %v", err)
	}
	if !res.IsError || !strings.Contains(res.Content[0].Text, "cancelled") {
		t.Fatalf("cancelled call answered %+v", res)
	}
	for deadline := time.Now().Add(callTimeout); syscall.Kill(-pid, 0) == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("process group %d still runs on beta after the cancel", pid)
		}
	}
	// A cancel for a request that has ended, or without an id, changes nothing.
	_ = alpha.Notify(NotificationCancel, map[string]any{"id": call.ID})
	_ = alpha.Notify(NotificationCancel, map[string]any{})
	if res := callTool(t, alpha, "cluster_exec", map[string]any{"node": "beta", "command": "echo still here"}); res.IsError {
		t.Fatalf("after stray cancels: %+v", res)
	}
}

// A handoff that does not wait (asked for, or because the wait would pass
// the host's time limit) returns a task id at once; its result comes back
// and is brought into the session that asked, through the OpenClaw CLI of
// the caller's node, and cluster_tasks shows it.
func TestHandoffInBackground(t *testing.T) {
	_, beta, _, oc, _ := twoGateways(t)
	gamma := startSidecar(t)
	var res InitializeResult
	err := gamma.Call(MethodInitialize, map[string]any{
		"config": config("gamma", map[string]any{
			"peers":       []any{map[string]any{"url": beta.runtime().Mesh().URL(), "nodeId": "beta"}},
			"openclawBin": oc.bin,
		}),
		"gateway":      map[string]any{"port": oc.port(), "token": gatewayToken},
		"workspaceDir": t.TempDir(),
	}, &res, callTimeout)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(callTimeout)
	for _, ok := gamma.runtime().Mesh().Peer("beta"); !ok; _, ok = gamma.runtime().Mesh().Peer("beta") {
		if time.Now().After(deadline) {
			t.Fatal("gamma never saw beta")
		}
		time.Sleep(10 * time.Millisecond)
	}
	call := func(name string, args map[string]any, extra map[string]any) ToolCallResult {
		params := map[string]any{"name": name, "arguments": args, "session": map[string]any{"key": "agent:main:chat-1", "agentId": "main"}}
		for k, v := range extra {
			params[k] = v
		}
		var r ToolCallResult
		if err := gamma.Call(MethodToolsCall, params, &r, callTimeout); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := call("cluster_handoff", map[string]any{"agent": "coder", "task": "build it", "wait": false}, nil)
	if r.IsError || !strings.Contains(r.Content[0].Text, "arrives in this conversation as a new message") {
		t.Fatalf("handoff with wait false: %+v", r)
	}
	var d struct {
		ID string `json:"id"`
	}
	raw, _ := json.Marshal(r.Details)
	json.Unmarshal(raw, &d)
	// 20 minutes of run would outlast the host's 1 minute.
	r = call("cluster_handoff", map[string]any{"agent": "coder", "task": "long one", "timeoutMs": 1200000}, map[string]any{"timeoutMs": 60000})
	if r.IsError || !strings.Contains(r.Content[0].Text, "would outlast this tool call's time limit (1m0s)") {
		t.Fatalf("handoff that would outlast the host's wait: %+v", r)
	}
	sessions := filepath.Join(filepath.Dir(oc.bin), "sessions")
	want := "agent:main:chat-1\tmain\t[clawmatrix] task " + d.ID + " on coder (node beta) finished."
	for {
		b, _ := os.ReadFile(sessions)
		if strings.Contains(string(b), want) && strings.Contains(string(b), "coder did: build it") &&
			strings.Count(string(b), "agent:main:chat-1") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the results never reached the session; the CLI saw:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r = call("cluster_tasks", map[string]any{}, nil)
	if text := r.Content[0].Text; r.IsError || !strings.Contains(text, d.ID+" handoff to coder on beta: done") || strings.Count(text, "\n- ") != 2 {
		t.Fatalf("cluster_tasks: %+v", r)
	}
	// The notice is recorded as brought in once the CLI has exited, a
	// moment after its line is in the session file.
	for {
		r = call("cluster_tasks", map[string]any{"id": d.ID}, nil)
		text := r.Content[0].Text
		if !strings.Contains(text, "coder did: build it") {
			t.Fatalf("cluster_tasks with the id: %+v", r)
		}
		if strings.Contains(text, "also brought into the conversation") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster_tasks with the id never said the result was brought in: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// beta ran agent turns: its announced load is in cluster_peers.
	for {
		r = call("cluster_peers", map[string]any{}, nil)
		if strings.Contains(r.Content[0].Text, "- beta (direct link") && strings.Contains(r.Content[0].Text, "turns running") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster_peers never showed beta's load: %s", r.Content[0].Text)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var other ToolCallResult
	if err := gamma.Call(MethodToolsCall, map[string]any{"name": "cluster_tasks", "arguments": map[string]any{}}, &other, callTimeout); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(other.Content[0].Text, "this conversation has sent no messages") {
		t.Errorf("another conversation sees this one's tasks: %+v", other)
	}
}

// Every tool of schema's catalogue is answered: cluster_peers here, the
// tools without a mesh method by the runtime's delegation (cluster_send,
// cluster_tasks), the rest on the node they name (cluster/remote tests that
// side).
func TestEveryLocalToolIsAnswered(t *testing.T) {
	delegated := map[string]bool{schema.ToolSend: true, schema.ToolTasks: true}
	for _, tool := range schema.Tools() {
		_, local := localTools[tool.Name]
		if (local || delegated[tool.Name]) != (tool.Method == "") {
			t.Errorf("%s (method %q): local implementation %v", tool.Name, tool.Method, local)
		}
	}
}
