package remote

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

const testClusterSecret = "cluster-secret-0123456789abcdef"

// testNode is one real mesh node on 127.0.0.1 with a Target and a Client.
type testNode struct {
	node   *mesh.Node
	target *Target
	client *Client
	dir    string // workspace, also where the fake openclaw records runs
	agents []string
}

type nodeSpec struct {
	id       string
	dial     []*testNode // peers this node dials
	agents   []string
	noTarget bool
	config   func(*TargetConfig)
	// logs, when set, receives the debug logs of the node's mesh and Target.
	logs io.Writer
}

// startTestNode starts a mesh node with DefaultLocalConfig; it and its
// Target are closed when the test ends.
func startTestNode(t testing.TB, spec nodeSpec) *testNode {
	t.Helper()
	tn := &testNode{dir: t.TempDir(), agents: spec.agents}
	cfg := mesh.DefaultLocalConfig()
	cfg.NodeID, cfg.Secret, cfg.ListenAddr = spec.id, testClusterSecret, "127.0.0.1:0"
	// Multi-megabyte results under -race can starve the heartbeats of all
	// nodes in this one process for a few hundred ms; these tests are not
	// about silent-peer detection (a closed node is detected at once).
	cfg.DeadAfter = 2 * time.Second
	var logger *slog.Logger
	switch {
	case spec.logs != nil:
		logger = slog.New(slog.NewTextHandler(spec.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	case os.Getenv("REMOTE_TEST_LOG") != "":
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg.Logger = logger
	for _, p := range spec.dial {
		cfg.Peers = append(cfg.Peers, mesh.PeerAddr{URL: p.node.URL(), NodeID: p.node.ID()})
	}
	var agents []schema.Agent
	for _, a := range spec.agents {
		agents = append(agents, schema.Agent{ID: a})
		cfg.Capabilities.Agents = append(cfg.Capabilities.Agents, mesh.AgentInfo{ID: a})
	}
	n, err := mesh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.node = n
	t.Cleanup(func() { n.Close() })
	if !spec.noTarget {
		tc := TargetConfig{
			ToolProxy: openPolicy(), WorkspaceDir: tn.dir, OpenclawBin: fakeOpenclaw(t, tn.dir),
			Agents: agents, Secrets: []string{testClusterSecret}, Logger: logger,
		}
		if spec.config != nil {
			spec.config(&tc)
		}
		tn.target, err = Register(n, tc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(tn.target.Close)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	tn.client = &Client{Node: n}
	return tn
}

// waitReach waits until n sees every node in ids, with the agents that
// node offers (with a deadline).
func waitReach(t testing.TB, n *testNode, others ...*testNode) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := n.node.Changed()
		var missing []string
		for _, o := range others {
			if p, ok := n.node.Peer(o.node.ID()); !ok || len(p.Agents) != len(o.agents) {
				missing = append(missing, o.node.ID())
			}
		}
		if len(missing) == 0 {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s does not reach %v (with their agents) within 10s", n.node.ID(), missing)
		}
	}
}

// line starts a-b-c where a and c only reach each other through b.
func line(t testing.TB, a, b, c nodeSpec) (*testNode, *testNode, *testNode) {
	t.Helper()
	nb := startTestNode(t, b)
	a.dial, c.dial = []*testNode{nb}, []*testNode{nb}
	na, nc := startTestNode(t, a), startTestNode(t, c)
	waitReach(t, na, nb, nc)
	waitReach(t, nc, na, nb)
	waitReach(t, nb, na, nc)
	if p, _ := na.node.Peer("c"); p.Status != mesh.StatusRelay {
		t.Fatalf("a reaches c as %q, want through a relay", p.Status)
	}
	return na, nb, nc
}

// call decodes args for tool, as the plugin does, and runs the call.
func call(t testing.TB, c *Client, tool string, args any) Result {
	t.Helper()
	return c.Call(t.Context(), decodeCall(t, tool, args))
}

func mustTool(t testing.TB, name string) schema.Tool {
	t.Helper()
	tool, ok := schema.LookupTool(name)
	if !ok {
		t.Fatalf("no tool %s", name)
	}
	return tool
}

func decodeCall(t testing.TB, tool string, args any) schema.ToolCall {
	t.Helper()
	tc, problems := schema.DecodeToolCall(tool, mustJSON(t, args))
	if problems != nil {
		t.Fatalf("%s arguments %+v: %v", tool, args, problems)
	}
	return tc
}

func TestRemoteToolsAcrossRelay(t *testing.T) {
	gw := newFakeGateway(t)
	a, _, c := line(t, nodeSpec{id: "a"}, nodeSpec{id: "b"}, nodeSpec{id: "c", config: func(tc *TargetConfig) {
		tc.ToolProxy.MaxOutputBytes = 4 << 20
		tc.Gateway = &schema.Gateway{URL: gw.URL, Token: testGatewayToken}
	}})

	r := call(t, a.client, schema.ToolExec, schema.ExecArgs{Node: "c", Command: "pwd; echo err >&2; exit 2"})
	if r.IsError || !strings.Contains(r.Text, "exit code 2") || !strings.Contains(r.Text, c.dir+"\n") || !strings.Contains(r.Text, "err") {
		t.Fatalf("exec on c: %+v", r)
	}
	var d ExecDetails
	if err := json.Unmarshal(r.Details.(json.RawMessage), &d); err != nil || d.Node != "c" || d.ExitCode != 2 {
		t.Errorf("details %s: %v", r.Details, err)
	}

	// A 3 MB output crosses two links whole (the mesh fragments it).
	r = call(t, a.client, schema.ToolExec, schema.ExecArgs{Node: "c", Command: "head -c 3000000 /dev/zero | tr '\\0' q"})
	if r.IsError || strings.Count(r.Text, "q") != 3000000 {
		t.Fatalf("big exec output: isError %v, %d bytes of output: %.300s", r.IsError, strings.Count(r.Text, "q"), r.Text)
	}

	r = call(t, a.client, schema.ToolWrite, schema.WriteArgs{Node: "c", Path: "notes/hello.txt", Content: "one\ntwo\n"})
	if r.IsError || readString(t, filepath.Join(c.dir, "notes", "hello.txt")) != "one\ntwo\n" {
		t.Fatalf("write on c: %+v", r)
	}
	r = call(t, a.client, schema.ToolRead, schema.ReadArgs{Node: "c", Path: "notes/hello.txt", Offset: 2})
	if r.IsError || r.Text != "two\n" {
		t.Fatalf("read on c: %+v", r)
	}

	// Any other tool goes to c's gateway (which checks the token).
	r = call(t, a.client, schema.ToolTool, schema.ToolArgs{Node: "c", Tool: "web_fetch", Args: map[string]any{"url": "http://example.test"}})
	if r.IsError || r.Text != "fetched http://example.test" {
		t.Fatalf("cluster_tool on c: %+v", r)
	}
	if req := <-gw.requests; req["tool"] != "web_fetch" {
		t.Fatalf("c's gateway got %v", req)
	}
	r = call(t, a.client, schema.ToolTool, schema.ToolArgs{Node: "c", Tool: "teleport"})
	if !r.IsError || r.Text != `tool "teleport" is not available on node "c" (unknown, or blocked by its gateway policy).` {
		t.Fatalf("unknown tool on c: %+v", r)
	}

	// A node runs tools for its own agents through the same path.
	r = call(t, c.client, schema.ToolExec, schema.ExecArgs{Node: "c", Command: "echo local"})
	if r.IsError || !strings.Contains(r.Text, "local") {
		t.Fatalf("exec on self: %+v", r)
	}
}

func TestRemoteErrors(t *testing.T) {
	a, _, c := line(t, nodeSpec{id: "a"}, nodeSpec{id: "b", config: func(tc *TargetConfig) { tc.ToolProxy = schema.ToolProxy{} }},
		nodeSpec{id: "c", config: func(tc *TargetConfig) { tc.ToolProxy.Deny = []string{"write"} }})
	d := startTestNode(t, nodeSpec{id: "d", dial: []*testNode{c}, noTarget: true})
	waitReach(t, a, d)
	waitReach(t, d, a)

	cases := []struct {
		name string
		tool string
		args any
		text string
	}{
		{"unknown node", schema.ToolExec, schema.ExecArgs{Node: "zz", Command: "true"},
			`no node named "zz" in the cluster; known nodes: a, b, c, d`},
		{"policy disabled on the relay", schema.ToolRead, schema.ReadArgs{Node: "b", Path: "x"},
			`set toolProxy.enabled: true in node "b"'s clawmatrix config`},
		{"denied", schema.ToolWrite, schema.WriteArgs{Node: "c", Path: "x", Content: "x"},
			`node "c" refuses tool "write": it is in the node's toolProxy.deny list`},
		{"no handler", schema.ToolExec, schema.ExecArgs{Node: "d", Command: "true"},
			`node "d" does not serve cluster_exec`},
		// A caller that skips the check (another version, or a hostile
		// one): the target checks again.
		{"invalid arguments reach the target", schema.ToolExec, schema.ToolCall{Tool: mustTool(t, schema.ToolExec),
			Args: &schema.ExecArgs{Node: "c"}, Raw: []byte(`{"node": "c", "command": ""}`)},
			`node "c" refused cluster_exec: invalid arguments: command:`},
		{"not a remote tool", "cluster_peers", map[string]any{}, `"cluster_peers" is not a remote cluster tool`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var r Result
			if raw, ok := tc.args.(schema.ToolCall); ok {
				r = a.client.Call(t.Context(), raw)
			} else {
				r = call(t, a.client, tc.tool, tc.args)
			}
			if !r.IsError || !strings.Contains(r.Text, tc.text) {
				t.Errorf("got %+v, want an error containing %q", r, tc.text)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(c.dir, "x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the denied write happened: %v", err)
	}
}

func TestHandoffAcrossMesh(t *testing.T) {
	a, _, c := line(t, nodeSpec{id: "a", agents: []string{"main"}},
		nodeSpec{id: "b", agents: []string{"helper", "reviewer"}},
		nodeSpec{id: "c", agents: []string{"coder", "helper"}})
	cases := []struct {
		name    string
		args    schema.HandoffArgs
		isError bool
		text    string
	}{
		{"by agent through a relay", schema.HandoffArgs{Agent: "coder", Task: "fix it"}, false, "done by coder"},
		{"by node: its first agent", schema.HandoffArgs{Node: "b", Task: "x"}, false, "done by helper"},
		{"agent and node", schema.HandoffArgs{Agent: "helper", Node: "c", Task: "x"}, false, "done by helper"},
		{"own agent", schema.HandoffArgs{Agent: "main", Task: "x"}, false, "done by main"},
		{"ambiguous agent", schema.HandoffArgs{Agent: "helper", Task: "x"}, true,
			`agent "helper" is offered by several nodes: b, c; pass node as well to choose one`},
		{"unknown agent", schema.HandoffArgs{Agent: "painter", Task: "x"}, true,
			`no node in the cluster offers agent "painter"; the agents on offer: coder (node c), helper (node b), helper (node c), main (node a), reviewer (node b)`},
		{"agent not on that node", schema.HandoffArgs{Agent: "coder", Node: "b", Task: "x"}, true,
			`node "b" has no agent "coder"; its agents: helper, reviewer`},
		{"unknown node", schema.HandoffArgs{Node: "zz", Task: "x"}, true, `no node named "zz" in the cluster; known nodes: a, b, c`},
		{"failing agent", schema.HandoffArgs{Agent: "coder", Task: "FAIL"}, true,
			`agent "coder" on node "c" failed (exit code 1): agent exploded`},
		{"unparsable output", schema.HandoffArgs{Agent: "coder", Task: "GARBAGE"}, true, "is not the JSON `openclaw agent --json` prints"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := call(t, a.client, schema.ToolHandoff, tc.args)
			if r.IsError != tc.isError || !strings.Contains(r.Text, tc.text) {
				t.Errorf("got isError=%v %q; want isError=%v containing %q", r.IsError, r.Text, tc.isError, tc.text)
			}
		})
	}
	if msg := readString(t, filepath.Join(c.dir, "msg.coder")); !strings.Contains(msg, "GARBAGE") {
		t.Errorf("c's coder last got %q", msg)
	}
}

func TestHandoffCancelAcrossMesh(t *testing.T) {
	a, _, c := line(t, nodeSpec{id: "a"}, nodeSpec{id: "b"}, nodeSpec{id: "c", agents: []string{"coder"}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan Result, 1)
	go func() {
		done <- a.client.Call(ctx, decodeCall(t, schema.ToolHandoff, schema.HandoffArgs{Agent: "coder", Task: "SLEEP"}))
	}()
	pid, child := readPid(t, filepath.Join(c.dir, "pid.coder")), readPid(t, filepath.Join(c.dir, "child.coder"))
	cancel()
	if r := <-done; !r.IsError || !strings.Contains(r.Text, `cluster_handoff on node "c" was cancelled`) {
		t.Fatalf("got %+v", r)
	}
	waitGone(t, pid, "openclaw run on c after the caller cancelled")
	waitGone(t, child, "child of the run on c after the caller cancelled")
}

// More handoffs than the target's MaxConcurrentRuns wait in its queue.
func TestHandoffQueueAcrossMesh(t *testing.T) {
	a := startTestNode(t, nodeSpec{id: "a"})
	c := startTestNode(t, nodeSpec{id: "c", dial: []*testNode{a}, agents: []string{"coder"},
		config: func(tc *TargetConfig) { tc.MaxConcurrentRuns = 1 }})
	waitReach(t, a, c)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if r := call(t, a.client, schema.ToolHandoff, schema.HandoffArgs{Agent: "coder", Task: "TRACK"}); r.IsError || r.Text != "tracked" {
				t.Errorf("got %+v", r)
			}
		})
	}
	wg.Wait()
	if seen := strings.Fields(readString(t, filepath.Join(c.dir, "seen"))); !slices.Equal(seen, []string{"1", "1", "1"}) {
		t.Errorf("runs at once as each run saw it: %v, want 1 1 1", seen)
	}
}

// A target that drops out of the mesh mid-call fails the call at once.
func TestNodeLostMidCall(t *testing.T) {
	a, _, c := line(t, nodeSpec{id: "a"}, nodeSpec{id: "b"}, nodeSpec{id: "c"})
	done := make(chan Result, 1)
	go func() {
		done <- call(t, a.client, schema.ToolExec, schema.ExecArgs{Node: "c", Command: "echo $$ > pid; exec sleep 60"})
	}()
	pid := readPid(t, filepath.Join(c.dir, "pid"))
	c.node.Close()
	select {
	case r := <-done:
		if !r.IsError || !strings.Contains(r.Text, `node "c" became unreachable during cluster_exec`) {
			t.Errorf("got %+v", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the call hangs after its target left the mesh")
	}
	waitGone(t, pid, "command on a node that closed")
}

// Secrets never appear in what agents see, whatever path a result takes.
func TestSecretsNeverInResults(t *testing.T) {
	gw := newFakeGateway(t)
	var logs syncBuffer
	a, _, _ := line(t, nodeSpec{id: "a", logs: &logs}, nodeSpec{id: "b", logs: &logs, config: func(tc *TargetConfig) { tc.ToolProxy = schema.ToolProxy{} }},
		nodeSpec{id: "c", agents: []string{"coder"}, logs: &logs, config: func(tc *TargetConfig) {
			tc.Gateway = &schema.Gateway{URL: gw.URL, Token: testGatewayToken}
		}})
	calls := []struct {
		tool string
		args any
	}{
		{schema.ToolExec, schema.ExecArgs{Node: "c", Command: "echo " + testClusterSecret + " " + testGatewayToken}},
		{schema.ToolExec, schema.ExecArgs{Node: "c", Command: "sleep 5", TimeoutMs: 50}},
		{schema.ToolExec, schema.ExecArgs{Node: "b", Command: "true"}},
		{schema.ToolExec, schema.ExecArgs{Node: "nope", Command: "true"}},
		{schema.ToolWrite, schema.WriteArgs{Node: "c", Path: "s.txt", Content: testGatewayToken}},
		{schema.ToolRead, schema.ReadArgs{Node: "c", Path: "s.txt"}},
		{schema.ToolRead, schema.ReadArgs{Node: "c", Path: testGatewayToken}},
		{schema.ToolTool, schema.ToolArgs{Node: "c", Tool: "leaky"}},
		{schema.ToolTool, schema.ToolArgs{Node: "c", Tool: "missing"}},
		{schema.ToolTool, schema.ToolArgs{Node: "c", Tool: "web_fetch", Args: map[string]any{"url": testGatewayToken}}},
		{schema.ToolTool, schema.ToolArgs{Node: "b", Tool: "web_fetch"}},
		{schema.ToolHandoff, schema.HandoffArgs{Agent: "coder", Task: "FAIL"}},
		{schema.ToolHandoff, schema.HandoffArgs{Agent: "coder", Task: "x " + testGatewayToken}},
	}
	for _, cl := range calls {
		r := call(t, a.client, cl.tool, cl.args)
		blob := r.Text + string(mustJSON(t, r.Details))
		for _, secret := range []string{testGatewayToken, testClusterSecret} {
			if strings.Contains(blob, secret) {
				t.Errorf("%s %+v: result holds a secret: %s", cl.tool, cl.args, blob)
			}
		}
	}
	// The failed run is logged on c; no log line of any node holds a
	// secret.
	deadline := time.Now().Add(10 * time.Second)
	for l := logs.String(); !strings.Contains(l, "handoff failed"); l = logs.String() {
		if time.Now().After(deadline) {
			t.Fatalf("the runs' outcomes are not in the logs:\n%s", l)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, secret := range []string{testGatewayToken, testClusterSecret} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a log line holds a secret:\n%s", logs.String())
		}
	}
}

func TestClientDeadlines(t *testing.T) {
	cases := []struct {
		args any
		want time.Duration
	}{
		{&schema.ExecArgs{}, DefaultExecTimeout + answerGrace},
		{&schema.ExecArgs{TimeoutMs: 5000}, 5*time.Second + answerGrace},
		{&schema.HandoffArgs{}, DefaultRunTimeout + answerGrace},
		{&schema.HandoffArgs{TimeoutMs: 1000}, time.Second + answerGrace},
		{&schema.ReadArgs{}, fileDeadline},
		{&schema.WriteArgs{}, fileDeadline},
		{&schema.ToolArgs{}, toolDeadline},
	}
	for _, tc := range cases {
		if got := deadlineFor(tc.args); got != tc.want {
			t.Errorf("deadlineFor(%#v) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

// Every remote tool of schema's catalogue has a server here whose argument
// type is the catalogue's, and Register installs each under its method.
func TestEveryRemoteToolIsServed(t *testing.T) {
	tg := newTestTarget(t, "n1", TargetConfig{})
	for _, tool := range schema.Tools() {
		serve, ok := tg.servers[tool.Name]
		if tool.Method == "" {
			if ok {
				t.Errorf("%s is answered by the calling node, yet has a server", tool.Name)
			}
			continue
		}
		if !ok {
			t.Errorf("no server for %s", tool.Name)
			continue
		}
		// The catalogue's Args type reaches the executor: any other
		// type is refused as an internal error.
		if r := serve(t.Context(), "x", struct{}{}); !r.IsError || !strings.Contains(r.Text, "internal error") {
			t.Errorf("%s: wrong argument type accepted: %+v", tool.Name, r)
		}
		args := reflect.New(reflect.TypeOf(tool.Args).Elem()).Interface()
		if r := serve(t.Context(), "x", args); strings.Contains(r.Text, "internal error") {
			t.Errorf("%s: the catalogue's argument type %T is not the server's: %s", tool.Name, args, r.Text)
		}
	}
	if len(tg.servers) != len(remoteTools()) {
		t.Errorf("%d servers for %d remote tools", len(tg.servers), len(remoteTools()))
	}
}
