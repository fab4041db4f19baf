package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/plugin/hosttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const callTimeout = 10 * time.Second

// sidecar is one in-process Server driven through pipes, as a host would.
type sidecar struct {
	*hosttest.Client
	in   *io.PipeWriter
	done chan error

	mu sync.Mutex
	rt *cluster.Runtime
}

func startSidecar(t *testing.T) *sidecar {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	sc := &sidecar{in: inW, done: make(chan error, 1)}
	local := mesh.DefaultLocalConfig()
	s := &Server{
		Logger: slog.New(slog.DiscardHandler),
		Start: func(ctx context.Context, opts cluster.Options) (*cluster.Runtime, error) {
			opts.Mesh = &local
			rt, err := cluster.Start(ctx, opts)
			sc.mu.Lock()
			sc.rt = rt
			sc.mu.Unlock()
			return rt, err
		},
	}
	go func() {
		err := s.Serve(context.Background(), inR, outW)
		outW.Close()
		sc.done <- err
	}()
	sc.Client = hosttest.New(outR, inW)
	t.Cleanup(func() { sc.stop(t) })
	return sc
}

// stop ends the host's input, as a host that exits would.
func (sc *sidecar) stop(t *testing.T) {
	sc.in.Close()
	select {
	case err := <-sc.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		sc.done <- nil // later stops see a clean end too
	case <-time.After(callTimeout):
		t.Fatal("Serve did not return after stdin closed")
	}
}

func (sc *sidecar) runtime() *cluster.Runtime {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.rt
}

func config(nodeID string, extra map[string]any) map[string]any {
	cfg := map[string]any{"nodeId": nodeID, "secret": "test-secret-0123456789", "proxyPort": 0}
	for k, v := range extra {
		cfg[k] = v
	}
	return cfg
}

func initialize(t *testing.T, sc *sidecar, cfg map[string]any) InitializeResult {
	t.Helper()
	var res InitializeResult
	if err := sc.Call(MethodInitialize, map[string]any{"config": cfg, "workspaceDir": t.TempDir()}, &res, callTimeout); err != nil {
		t.Fatalf("initialize: %v", err)
	}
	return res
}

func rpcError(t *testing.T, err error, code int64, contains string) *hosttest.Error {
	t.Helper()
	var e *hosttest.Error
	if !errors.As(err, &e) {
		t.Fatalf("want JSON-RPC error %d, got %v", code, err)
	}
	if e.Code != code || !strings.Contains(e.Message, contains) {
		t.Fatalf("want error %d containing %q, got %d %q", code, contains, e.Code, e.Message)
	}
	return e
}

func TestInitializeReturnsNodeToolsAndProvider(t *testing.T) {
	sc := startSidecar(t)
	res := initialize(t, sc, config("alpha", map[string]any{
		"models":      []any{map[string]any{"id": "m1", "provider": "local", "description": "Model One"}},
		"proxyModels": []any{map[string]any{"id": "m1", "description": "shadowed"}, map[string]any{"id": "m2", "nodeId": "beta"}},
	}))
	if res.NodeID != "alpha" {
		t.Errorf("nodeId = %q", res.NodeID)
	}
	var names []string
	for _, tool := range res.Tools {
		names = append(names, tool.Name)
		if !json.Valid(tool.Parameters) || tool.Description == "" || tool.Label == "" {
			t.Errorf("tool %s incomplete: %+v", tool.Name, tool)
		}
	}
	want := "cluster_peers cluster_exec cluster_read cluster_write cluster_tool cluster_handoff cluster_send cluster_tasks"
	if strings.Join(names, " ") != want {
		t.Errorf("tools = %v, want %s", names, want)
	}
	p := res.Provider
	if p.ID != "clawmatrix" || p.API != "openai-completions" || !strings.HasPrefix(p.BaseURL, "http://127.0.0.1:") || len(p.APIKey) < 16 {
		t.Errorf("provider = %+v", p)
	}
	if len(p.Models) != 2 || p.Models[0].ID != "m1" || p.Models[0].Name != "Model One" || p.Models[1].ID != "m2" || p.Models[1].ContextWindow != 128000 {
		t.Errorf("models = %+v", p.Models)
	}
}

func TestRequestsOutOfOrderOrMalformed(t *testing.T) {
	sc := startSidecar(t)

	err := sc.Call(MethodToolsCall, ToolCallParams{Name: "cluster_peers"}, nil, callTimeout)
	rpcError(t, err, CodeInvalidRequest, "not initialized")

	err = sc.Call(MethodStatus, map[string]any{}, nil, callTimeout)
	rpcError(t, err, CodeInvalidRequest, "not initialized")

	err = sc.Call(MethodInitialize, map[string]any{"config": map[string]any{"nodeId": "bad id!", "secret": "short", "peers": []any{map[string]any{"url": "http://x"}}}}, nil, callTimeout)
	e := rpcError(t, err, CodeInvalidParams, "invalid clawmatrix config")
	var data struct {
		Errors []struct{ Path, Message string }
	}
	if err := json.Unmarshal(e.Data, &data); err != nil {
		t.Fatalf("error data: %v (%s)", err, e.Data)
	}
	paths := map[string]bool{}
	for _, pe := range data.Errors {
		paths[pe.Path] = true
	}
	for _, p := range []string{"nodeId", "secret", "peers[0].url"} {
		if !paths[p] {
			t.Errorf("no problem reported at %q; got %+v", p, data.Errors)
		}
	}
	if strings.Contains(string(e.Data), "short") {
		t.Errorf("error data leaks the secret: %s", e.Data)
	}

	err = sc.Call("cluster/nope", map[string]any{}, nil, callTimeout)
	rpcError(t, err, CodeMethodNotFound, "tools/call")

	initialize(t, sc, config("alpha", nil))

	err = sc.Call(MethodInitialize, map[string]any{"config": config("alpha", nil)}, nil, callTimeout)
	rpcError(t, err, CodeInvalidRequest, "already initialized")

	err = sc.Call(MethodToolsCall, ToolCallParams{Name: "rm_rf"}, nil, callTimeout)
	rpcError(t, err, CodeInvalidParams, "cluster_exec")

	if err := sc.WriteLine([]byte(`{"jsonrpc":"2.0","id":7,"method":`)); err != nil {
		t.Fatal(err)
	}
	orphan, err := sc.Orphan(callTimeout)
	if err != nil || orphan.Error == nil || orphan.Error.Code != CodeParseError {
		t.Fatalf("malformed line: %+v %v", orphan, err)
	}
	if err := sc.WriteLine([]byte(`[1,2]`)); err != nil {
		t.Fatal(err)
	}
	orphan, err = sc.Orphan(callTimeout)
	if err != nil || orphan.Error == nil || orphan.Error.Code != CodeInvalidRequest {
		t.Fatalf("non-request line: %+v %v", orphan, err)
	}
	long := append([]byte(`{"x":"`), make([]byte, MaxLineBytes+10)...)
	for i := 6; i < len(long); i++ {
		long[i] = 'a'
	}
	if err := sc.WriteLine(long); err != nil {
		t.Fatal(err)
	}
	orphan, err = sc.Orphan(callTimeout)
	if err != nil || orphan.Error == nil || !strings.Contains(orphan.Error.Message, "longer than") {
		t.Fatalf("long line: %+v %v", orphan, err)
	}

	// The sidecar goes on after all of that.
	var st StatusResult
	if err := sc.Call(MethodStatus, map[string]any{}, &st, callTimeout); err != nil || st.NodeID != "alpha" || len(st.Peers) != 0 {
		t.Fatalf("status after bad input: %+v %v", st, err)
	}
}

func callTool(t *testing.T, sc *sidecar, name string, args any) ToolCallResult {
	t.Helper()
	var res ToolCallResult
	if err := sc.Call(MethodToolsCall, map[string]any{"name": name, "arguments": args}, &res, callTimeout); err != nil {
		t.Fatalf("tools/call %s: %v", name, err)
	}
	if len(res.Content) != 1 || res.Content[0].Type != "text" {
		t.Fatalf("tools/call %s: content %+v", name, res.Content)
	}
	return res
}

func TestToolCallsAlone(t *testing.T) {
	sc := startSidecar(t)
	initialize(t, sc, config("alpha", nil))
	tests := []struct {
		name    string
		tool    string
		args    any
		isError bool
		text    string
	}{
		{"wrong type", "cluster_exec", map[string]any{"node": "b", "command": 42}, true, "command"},
		{"missing field", "cluster_read", map[string]any{"node": "b"}, true, "path"},
		{"unknown node", "cluster_exec", map[string]any{"node": "b", "command": "true"}, true, `no node named "b"`},
		{"no peers", "cluster_peers", map[string]any{}, false, `This node is "alpha". No other node`},
		{"null arguments", "cluster_peers", nil, false, "No other node"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := callTool(t, sc, tc.tool, tc.args)
			if res.IsError != tc.isError || !strings.Contains(res.Content[0].Text, tc.text) {
				t.Errorf("got isError=%v %q; want isError=%v containing %q", res.IsError, res.Content[0].Text, tc.isError, tc.text)
			}
		})
	}

	var prompt map[string]any
	if err := sc.Call(MethodPromptBuild, PromptParams{AgentID: "main"}, &prompt, callTimeout); err != nil || len(prompt) != 0 {
		t.Errorf("prompt without peers = %v %v, want {}", prompt, err)
	}

	if err := sc.Call(MethodShutdown, map[string]any{}, nil, callTimeout); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	err := sc.Call(MethodToolsCall, ToolCallParams{Name: "cluster_peers"}, nil, callTimeout)
	rpcError(t, err, CodeInvalidRequest, "shut down")
}

func TestTwoSidecarsSeeEachOther(t *testing.T) {
	b := startSidecar(t)
	initialize(t, b, config("beta", map[string]any{
		"listen": true, "listenHost": "127.0.0.1", "listenPort": 0, "tags": []string{"gpu"},
		"agents": []any{map[string]any{"id": "coder", "description": "writes Go"}},
		"models": []any{map[string]any{"id": "big", "provider": "vllm"}},
	}))
	a := startSidecar(t)
	initialize(t, a, config("alpha", map[string]any{
		"peers":  []any{map[string]any{"url": b.runtime().Mesh().URL(), "nodeId": "beta"}},
		"agents": []any{map[string]any{"id": "main", "description": "plans the work"}},
	}))

	node := a.runtime().Mesh()
	deadline := time.After(callTimeout)
	for {
		changed := node.Changed()
		if p, ok := node.Peer("beta"); ok && len(p.Agents) > 0 && len(p.Models) > 0 {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("alpha never saw beta with its agent and model")
		}
	}

	var st StatusResult
	if err := a.Call(MethodStatus, map[string]any{}, &st, callTimeout); err != nil {
		t.Fatal(err)
	}
	if len(st.Peers) != 1 || st.Peers[0].NodeID != "beta" || st.Peers[0].Status != "connected" ||
		len(st.Peers[0].Agents) != 1 || st.Peers[0].Agents[0].ID != "coder" || st.Peers[0].Models[0] != "big" || st.Peers[0].Tags[0] != "gpu" {
		t.Errorf("status = %+v", st)
	}

	res := callTool(t, a, "cluster_peers", map[string]any{})
	for _, want := range []string{"beta", "direct link", "gpu", "coder: writes Go", "big"} {
		if !strings.Contains(res.Content[0].Text, want) {
			t.Errorf("cluster_peers text lacks %q:\n%s", want, res.Content[0].Text)
		}
	}
	if strings.Contains(res.Content[0].Text, "test-secret") {
		t.Error("cluster_peers leaks the secret")
	}

	var prompt PromptResult
	if err := a.Call(MethodPromptBuild, PromptParams{AgentID: "main"}, &prompt, callTimeout); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`node "alpha"`, "Your role: plans the work", "- beta (direct) [gpu]", `agent coder: "writes Go"`, "clawmatrix/big", "cluster_handoff"} {
		if !strings.Contains(prompt.PrependContext, want) {
			t.Errorf("prompt lacks %q:\n%s", want, prompt.PrependContext)
		}
	}
}

// A host that writes its requests and closes stdin at once still gets an
// answer to each: the end of input ends the work in flight, not its replies.
func TestEndOfInputStillAnswers(t *testing.T) {
	for _, tc := range []struct {
		name   string
		method string
		params any
	}{
		{"initialize", MethodInitialize, map[string]any{"config": config("eof", nil), "workspaceDir": t.TempDir()}},
		{"unknown method", "cluster/teleport", map[string]any{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := startSidecar(t)
			call, err := sc.Go(tc.method, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			sc.in.Close()
			err = call.Wait(nil, callTimeout)
			var rpcErr *hosttest.Error
			if err != nil && !errors.As(err, &rpcErr) {
				t.Fatalf("%s got no answer before the sidecar ended: %v", tc.method, err)
			}
		})
	}
}
