package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.uber.org/goleak"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/proxy"
	"github.com/clawmatrix/clawmatrix/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testSecret   = "runtime-test-secret-0123456789"
	upstreamKey  = "upstream-key-abcdef123456"
	testDeadline = 15 * time.Second
)

// fakeUpstream is an OpenAI-compatible server (vLLM, Ollama, ...) that
// requires upstreamKey and answers "hello from the gpu box", plain or
// streamed.
func fakeUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer "+upstreamKey {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":{"message":"bad key or path","type":"auth","code":"nope"}}`)
			return
		}
		var req struct {
			Model  string `json:"model"`
			Stream bool   `json:"stream"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hello from the gpu box"},"finish_reason":"stop"}]}`, req.Model)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, piece := range []string{"hello ", "from ", "the gpu box"} {
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", req.Model, piece)
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// syncBuffer collects the logs of several nodes.
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

// startNode starts a node the way the `node` command does: no OpenClaw
// gateway, no host providers.
func startNode(t *testing.T, raw string, logs io.Writer) *Runtime {
	t.Helper()
	cfg, problems := schema.Parse([]byte(raw))
	if len(problems) > 0 {
		t.Fatalf("config %s: %v", raw, problems)
	}
	local := mesh.DefaultLocalConfig()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	rt, err := Start(ctx, Options{
		Config: cfg, WorkspaceDir: t.TempDir(), Mesh: &local,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// A standalone node in front of an OpenAI-compatible server serves its
// model to the cluster without OpenClaw: another node's proxy reaches it,
// and it runs remote tools without showing any secret.
func TestNodeModeServesModels(t *testing.T) {
	up := fakeUpstream(t)
	var logs syncBuffer
	gpu := startNode(t, fmt.Sprintf(`{"nodeId":"gpu","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0,
		"tags":["gpu"],"toolProxy":{"enabled":true,"allow":["*"]},
		"models":[{"id":"qwen","provider":"vllm","description":"Qwen on the GPU box","upstream":{"baseUrl":%q,"apiKey":%q}}]}`,
		testSecret, up.URL+"/v1", upstreamKey), &logs)
	laptop := startNode(t, fmt.Sprintf(`{"nodeId":"laptop","secret":%q,"proxyPort":0,"peers":[{"url":%q,"nodeId":"gpu"}],
		"proxyModels":[{"id":"qwen","nodeId":"gpu","contextWindow":32000}]}`, testSecret, gpu.Mesh().URL()), &logs)

	deadline := time.After(testDeadline)
	for {
		changed := laptop.Mesh().Changed()
		if p, ok := laptop.Mesh().Peer("gpu"); ok && len(p.Models) == 1 {
			break
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("laptop never saw gpu's model")
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	for _, rt := range []*Runtime{laptop, gpu} {
		cl := openai.NewClient(option.WithBaseURL(rt.ProxyURL()), option.WithAPIKey(rt.ProxyKey()), option.WithMaxRetries(0))
		params := openai.ChatCompletionNewParams{Model: "qwen", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
		var resp *http.Response
		out, err := cl.Chat.Completions.New(ctx, params, option.WithResponseInto(&resp))
		if err != nil {
			t.Fatalf("%s: %v", rt.NodeID(), err)
		}
		if out.Choices[0].Message.Content != "hello from the gpu box" || resp.Header.Get("X-Clawmatrix-Node") != "gpu" {
			t.Fatalf("%s: %q served by %q", rt.NodeID(), out.Choices[0].Message.Content, resp.Header.Get("X-Clawmatrix-Node"))
		}
		st := cl.Chat.Completions.NewStreaming(ctx, params)
		text := ""
		for st.Next() {
			text += st.Current().Choices[0].Delta.Content
		}
		if err := st.Err(); err != nil || text != "hello from the gpu box" {
			t.Fatalf("%s stream: %q %v", rt.NodeID(), text, err)
		}
		st.Close()
	}

	// What the laptop hands its OpenClaw: the proxied model with every
	// field filled, its own params kept.
	models := laptop.Models()
	if len(models) != 1 || models[0].ID != "qwen" || models[0].Name != "qwen" || models[0].ContextWindow != 32000 ||
		models[0].MaxTokens != schema.DefaultMaxTokens || models[0].API != schema.DefaultAPI || len(models[0].Input) != 1 {
		t.Errorf("laptop models = %+v", models)
	}
	if m := gpu.Models(); len(m) != 1 || m[0].Name != "Qwen on the GPU box" {
		t.Errorf("gpu models = %+v", m)
	}

	// A command that prints every secret the gpu node knows shows none.
	cmd := fmt.Sprintf("echo %s %s %s", testSecret, upstreamKey, gpu.ProxyKey())
	call, problems := schema.DecodeToolCall("cluster_exec", []byte(fmt.Sprintf(`{"node":"gpu","command":%q}`, cmd)))
	if problems != nil {
		t.Fatal(problems)
	}
	res := laptop.CallTool(ctx, call, CallInfo{})
	if res.IsError || strings.Count(res.Text, "[redacted]") != 3 {
		t.Fatalf("exec on gpu: %+v", res)
	}
	for _, secret := range []string{testSecret, upstreamKey, gpu.ProxyKey(), laptop.ProxyKey()} {
		if strings.Contains(res.Text, secret) {
			t.Errorf("exec result shows a secret: %s", res.Text)
		}
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the logs show a secret:\n%s", logs.String())
		}
	}
}

// With an OpenClaw gateway and no host provider for the model, the node
// serves it through the gateway: an agent turn of its first agent, or of
// the gateway's default agent when the config lists none.
func TestGatewayFallbackAgent(t *testing.T) {
	type seen struct{ model, header, auth string }
	got := make(chan seen, 4)
	gw := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Model string `json:"model"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		got <- seen{req.Model, r.Header.Get("x-openclaw-model"), r.Header.Get("Authorization")}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","created":1,"model":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`)
	}))
	defer gw.Close()

	for _, tc := range []struct{ agents, want string }{{`[]`, "openclaw/default"}, {`[{"id":"coder"},{"id":"writer"}]`, "openclaw/coder"}} {
		cfg, problems := schema.Parse([]byte(fmt.Sprintf(`{"nodeId":"n","secret":%q,"proxyPort":0,"agents":%s,
			"models":[{"id":"claude","provider":"anthropic","serveViaGateway":true}]}`, testSecret, tc.agents)))
		if len(problems) > 0 {
			t.Fatal(problems)
		}
		local := mesh.DefaultLocalConfig()
		ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
		rt, err := Start(ctx, Options{Config: cfg, Mesh: &local, WorkspaceDir: t.TempDir(),
			Gateway:   &schema.Gateway{URL: gw.URL, Token: "gw-token-123456"},
			Providers: map[string]proxy.Provider{"anthropic": {BaseURL: "https://api.anthropic.test", API: "anthropic-messages"}}})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		cl := openai.NewClient(option.WithBaseURL(rt.ProxyURL()), option.WithAPIKey(rt.ProxyKey()), option.WithMaxRetries(0))
		_, err = cl.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "claude", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
		rt.Close()
		cancel()
		if err != nil {
			t.Fatalf("agents %s: %v", tc.agents, err)
		}
		if s := <-got; s.model != tc.want || s.header != "anthropic/claude" || s.auth != "Bearer gw-token-123456" {
			t.Errorf("agents %s: gateway saw %+v, want model %s", tc.agents, s, tc.want)
		}
	}
}
