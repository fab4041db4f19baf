package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func TestNewServerChecksConfig(t *testing.T) {
	n := startNode(t, "a", nil)
	tests := []struct {
		cfg     ServerConfig
		wantErr string
	}{
		{ServerConfig{Addr: "127.0.0.1:0", APIKey: "k"}, "Node is nil"},
		{ServerConfig{Node: n, Addr: "127.0.0.1:0"}, "APIKey is empty"},
		{ServerConfig{Node: n, Addr: "0.0.0.0:0", APIKey: "k"}, "only listens on 127.0.0.1"},
		{ServerConfig{Node: n, Addr: "10.1.2.3:80", APIKey: "k"}, "only listens on 127.0.0.1"},
		{ServerConfig{Node: n, Addr: "nonsense", APIKey: "k"}, "want 127.0.0.1:PORT"},
	}
	for _, tt := range tests {
		if _, err := NewServer(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("NewServer(%+v) = %v, want error containing %q", tt.cfg.Addr, err, tt.wantErr)
		}
	}
	for _, addr := range []string{":0", "localhost:0"} {
		s, err := NewServer(ServerConfig{Node: n, Addr: addr, APIKey: "k"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(testCtx(t)); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") || !strings.HasSuffix(s.URL(), "/v1") {
			t.Fatalf("URL = %q", s.URL())
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Start(testCtx(t)); err == nil {
			t.Fatal("Start after Close succeeded")
		}
	}
}

// rawCall sends a request without the OpenAI client, to check the exact
// error shape for inputs the client would not produce.
func rawCall(t *testing.T, method, url, auth, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %s", method, url, ct, b)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s %s: body %s: %v", method, url, b, err)
	}
	return resp.StatusCode, v
}

func TestProxyErrors(t *testing.T) {
	_, b, _, front := twoNodes(t)
	ctx := testCtx(t)
	base := front.URL()
	bearer := "Bearer " + testKey

	tests := []struct {
		name, method, path, auth, body string
		status                         int
		typ, code, contains            string
	}{
		{"no key", "POST", "/chat/completions", "", `{"model":"m"}`, 401, typeAuth, codeInvalidAPIKey, "Authorization: Bearer"},
		{"wrong key", "POST", "/chat/completions", "Bearer nope", `{"model":"m"}`, 401, typeAuth, codeInvalidAPIKey, "wrong API key"},
		{"wrong scheme", "GET", "/models", "Basic " + testKey, ``, 401, typeAuth, codeInvalidAPIKey, ""},
		{"key checked before routes", "GET", "/nowhere", "", ``, 401, typeAuth, codeInvalidAPIKey, ""},
		{"malformed body", "POST", "/chat/completions", bearer, `{"model": "m", "messages": [`, 400, typeInvalidRequest, codeBadRequest, "not valid JSON"},
		{"not an object", "POST", "/chat/completions", bearer, `"hi"`, 400, typeInvalidRequest, codeBadRequest, "JSON object"},
		{"no model", "POST", "/chat/completions", bearer, `{"messages":[]}`, 400, typeInvalidRequest, codeBadRequest, `no "model"`},
		{"unknown model", "POST", "/chat/completions", bearer, `{"model":"zzz","messages":[]}`, 404, typeInvalidRequest, codeModelNotFound, `model "zzz" is not served by any node in the cluster; available models: m`},
		{"wrong method", "GET", "/chat/completions", bearer, ``, 405, typeInvalidRequest, codeMethod, "POST"},
		{"unknown route", "GET", "/embeddings", bearer, ``, 404, typeInvalidRequest, codeNotFound, "POST /v1/chat/completions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, v := rawCall(t, tt.method, base+tt.path, tt.auth, tt.body)
			e, _ := v["error"].(map[string]any)
			if status != tt.status || e == nil || e["type"] != tt.typ || e["code"] != tt.code || !strings.Contains(e["message"].(string), tt.contains) {
				t.Fatalf("got %d %v", status, v)
			}
			if _, ok := e["param"]; !ok {
				t.Fatalf("error has no param field: %v", v)
			}
		})
	}

	// The same through the official client.
	bad := openai.NewClient(option.WithBaseURL(base), option.WithAPIKey("wrong"), option.WithMaxRetries(0))
	_, err := bad.Chat.Completions.New(ctx, chatParams("m"))
	wantAPIError(t, err, http.StatusUnauthorized, codeInvalidAPIKey, "")
	cl := newClient(front)
	_, err = cl.Chat.Completions.New(ctx, chatParams("zzz"))
	wantAPIError(t, err, http.StatusNotFound, codeModelNotFound, `"zzz"`)
	_, err = cl.Chat.Completions.New(ctx, chatParams(""))
	wantAPIError(t, err, http.StatusBadRequest, codeBadRequest, `no "model"`)

	// A model whose only node left: 503, naming the model and the node.
	b.Close()
	waitGone(t, front.node, "b")
	_, err = cl.Chat.Completions.New(ctx, chatParams("m"))
	wantAPIError(t, err, http.StatusServiceUnavailable, codeModelUnavailable, `no reachable node serves model "m" now (last served by node "b")`)
	st := cl.Chat.Completions.NewStreaming(ctx, chatParams("m"))
	for st.Next() {
	}
	wantAPIError(t, st.Err(), http.StatusServiceUnavailable, codeModelUnavailable, `"m"`)
	st.Close()
}

func TestProxyBodyLimit(t *testing.T) {
	up := startLLM(t, "up-b")
	b := startNode(t, "b", []schema.Model{upstreamModel("m", up)})
	s, err := NewServer(ServerConfig{Node: b, Addr: "127.0.0.1:0", APIKey: testKey, MaxBodyBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	status, v := rawCall(t, "POST", s.URL()+"/chat/completions", "Bearer "+testKey, `{"model":"m","messages":[{"role":"user","content":"`+strings.Repeat("x", 200)+`"}]}`)
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(v["error"].(map[string]any)["message"].(string), "larger than 100 bytes") {
		t.Fatalf("got %d %v", status, v)
	}
	if len(up.Calls()) != 0 {
		t.Fatal("oversized body reached the upstream")
	}
}

// Closing the front ends the requests in flight, and through their mesh
// streams the upstream requests on the serving node.
func TestServerCloseEndsRequests(t *testing.T) {
	up := startLLM(t, "up-b")
	b := startNode(t, "b", []schema.Model{upstreamModel("m", up)})
	a := startNode(t, "a", nil, b)
	waitServes(t, a, "b", "m")
	front, err := NewServer(ServerConfig{Node: a, Addr: "127.0.0.1:0", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := front.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	done := make(chan error, 1)
	cl := newClient(front)
	go func() {
		_, err := cl.Chat.Completions.New(testCtx(t), chatParams("m"))
		done <- err
	}()
	<-up.Arrived()
	if err := front.Close(); err != nil {
		t.Logf("Close: %v", err) // a forced close after the grace period is fine
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a request cut by Close succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request hangs after Close")
	}
	select {
	case <-up.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled when the front closed")
	}
}
