package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/clawmatrix/clawmatrix/schema"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// Helpers that build real clusters: mesh nodes on 127.0.0.1 with the
// serving side registered, a front on one of them, and the official client.

const (
	testSecret = "proxy-test-secret-0123456789"
	testKey    = "test-proxy-key-1"
)

// startLLM starts the mock model server named name for the test; by default
// it answers "reply from <name>" (mockllm.Default).
func startLLM(t testing.TB, name string) *mockllm.Server {
	t.Helper()
	m, err := mockllm.Start(mockllm.Options{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func upstreamModel(id string, m *mockllm.Server) schema.Model {
	return model(id, "local", &schema.Upstream{BaseURL: m.URL()})
}

func startNode(t testing.TB, id string, models []schema.Model, peers ...*mesh.Node) *mesh.Node {
	t.Helper()
	cfg := mesh.DefaultLocalConfig()
	// Under -race on a loaded 2-core machine a heartbeat can be late by
	// more than the local profile's 300 ms; these tests close nodes to kill
	// them (detected at once) and never rely on silent-peer detection.
	cfg.DeadAfter = 2 * time.Second
	cfg.NodeID = id
	cfg.Secret = testSecret
	cfg.ListenAddr = "127.0.0.1:0"
	for _, p := range peers {
		cfg.Peers = append(cfg.Peers, mesh.PeerAddr{URL: p.URL(), NodeID: p.ID()})
	}
	cfg.Capabilities = mesh.Capabilities{Models: []mesh.ModelInfo{}, Agents: []mesh.AgentInfo{}, Tags: []string{}}
	for _, m := range models {
		cfg.Capabilities.Models = append(cfg.Capabilities.Models, mesh.ModelInfo{ID: m.ID, Provider: m.Provider})
	}
	n, err := mesh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := RegisterServing(n, ServingConfig{Models: models})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		s.Close()
	})
	// The links it dials are up before the test goes on: a peer first
	// reached through another one would become unreachable with it when a
	// test closes that one.
	for _, p := range peers {
		waitUntil(t, n, "a direct link to "+p.ID(), func() bool {
			info, ok := n.Peer(p.ID())
			return ok && info.Status == mesh.StatusConnected
		})
	}
	return n
}

// waitUntil waits, on the node's change notifications, for cond to hold.
func waitUntil(t testing.TB, n *mesh.Node, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := n.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-time.After(50 * time.Millisecond): // RTT changes do not notify
		case <-deadline.C:
			t.Fatalf("node %s: timed out waiting for %s; peers: %+v", n.ID(), what, n.Peers())
		}
	}
}

// waitServes waits until n sees node id serving model.
func waitServes(t testing.TB, n *mesh.Node, id, model string) {
	t.Helper()
	waitUntil(t, n, fmt.Sprintf("%s to serve %s", id, model), func() bool {
		p, ok := n.Peer(id)
		return ok && slices.ContainsFunc(p.Models, func(m mesh.ModelInfo) bool { return m.ID == model })
	})
}

func waitGone(t testing.TB, n *mesh.Node, id string) {
	t.Helper()
	waitUntil(t, n, id+" to be gone", func() bool {
		_, ok := n.Peer(id)
		return !ok
	})
}

func startFront(t testing.TB, n *mesh.Node, pins ...schema.ProxyModel) *Server {
	t.Helper()
	s, err := NewServer(ServerConfig{Node: n, Addr: "127.0.0.1:0", APIKey: testKey, Pins: pins})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newClient(s *Server) openai.Client {
	return openai.NewClient(option.WithBaseURL(s.URL()), option.WithAPIKey(testKey), option.WithMaxRetries(0))
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func chatParams(model string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}
}

// streamText reads a whole stream, returning the text, the chunk count and
// the stream's error.
func streamText(ctx context.Context, c openai.Client, p openai.ChatCompletionNewParams, opts ...option.RequestOption) (string, int, error) {
	st := c.Chat.Completions.NewStreaming(ctx, p, opts...)
	defer st.Close()
	text, n := "", 0
	for st.Next() {
		n++
		if ch := st.Current(); len(ch.Choices) > 0 {
			text += ch.Choices[0].Delta.Content
		}
	}
	return text, n, st.Err()
}

func wantAPIError(t *testing.T, err error, status int, code, contains string) *openai.Error {
	t.Helper()
	var ae *openai.Error
	if !errors.As(err, &ae) {
		t.Fatalf("err = %v (%T), want *openai.Error %d", err, err, status)
	}
	if ae.StatusCode != status || (code != "" && ae.Code != code) || !strings.Contains(ae.Message, contains) {
		t.Fatalf("got %d code %q message %q; want %d code %q containing %q", ae.StatusCode, ae.Code, ae.Message, status, code, contains)
	}
	return ae
}

func servedBy(r *http.Response) string {
	if r == nil {
		return ""
	}
	return r.Header.Get(NodeHeader)
}
