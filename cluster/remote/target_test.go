package remote

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/clawmatrix/clawmatrix/schema"
)

// Whatever arrives from the network, the handler answers with a tool error
// and runs nothing.
func TestHandlerRejectsBadPayloads(t *testing.T) {
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), Agents: []schema.Agent{{ID: "a"}}, OpenclawBin: "/bin/false"})
	cases := []struct {
		tool    string
		payload string
		text    string
	}{
		{schema.ToolExec, `not json`, "arguments are not valid JSON"},
		{schema.ToolExec, `{"node":"n1"}`, "command: missing required field"},
		{schema.ToolExec, `{"node":"n1","command":"true","timeoutMs":-5}`, "timeoutMs"},
		{schema.ToolRead, `[1,2]`, "invalid arguments"},
		{schema.ToolWrite, `{"node":"n1","path":"x"}`, "content: missing"},
		{schema.ToolTool, `{"node":"n1","tool":7}`, "tool"},
		{schema.ToolHandoff, `{"task":"x"}`, `missing "agent", "node" or "tags"`},
	}
	for _, tc := range cases {
		w := &recorder{}
		if err := tg.handler(tc.tool).ServeMesh(t.Context(), w, meshRequest("x", []byte(tc.payload))); err != nil {
			t.Fatal(err)
		}
		r := w.result(t)
		if !r.IsError || !strings.Contains(r.Text, `node "n1" refused `+tc.tool+": invalid arguments") || !strings.Contains(r.Text, tc.text) {
			t.Errorf("%s %s: got %+v, want a refusal mentioning %q", tc.tool, tc.payload, r, tc.text)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The outcome of a sent message is logged on the target, without secrets.
func TestSendOutcomeLogged(t *testing.T) {
	dir := t.TempDir()
	var logs syncBuffer
	tg := newTestTarget(t, "n1", TargetConfig{
		WorkspaceDir: dir, OpenclawBin: fakeOpenclaw(t, dir), Agents: []schema.Agent{{ID: "coder"}},
		Gateway: &schema.Gateway{URL: "http://127.0.0.1:1", Token: testGatewayToken},
		Logger:  slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if r := runMessage(t, tg, schema.SendArgs{Agent: "coder", Message: "hello"}); r.IsError {
		t.Fatal(r.Text)
	}
	r := runMessage(t, tg, schema.SendArgs{Agent: "coder", Message: "FAIL " + testGatewayToken})
	if !r.IsError || !strings.Contains(r.Text, "agent exploded") || strings.Contains(r.Text, testGatewayToken) {
		t.Errorf("failed run's result: %+v", r)
	}
	l := logs.String()
	if !strings.Contains(l, "cluster_send run finished") || !strings.Contains(l, "cluster_send run failed") {
		t.Fatalf("no outcome logged: %s", l)
	}
	if !strings.Contains(l, "agent exploded") || strings.Contains(l, testGatewayToken) {
		t.Errorf("log: %s", l)
	}
}
