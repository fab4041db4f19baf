package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/clawmatrix/clawmatrix/schema"
)

// recWriter collects the messages a handler writes.
type recWriter struct {
	mu   sync.Mutex
	msgs [][]byte
	// fail, when set, makes Write fail (the caller went away).
	fail error
}

func (w *recWriter) Write(msg []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return w.fail
	}
	w.msgs = append(w.msgs, bytes.Clone(msg))
	return nil
}

func (w *recWriter) head(t *testing.T) head {
	t.Helper()
	if len(w.msgs) == 0 {
		t.Fatal("no head message")
	}
	h, err := decodeHead(w.msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (w *recWriter) body() string {
	var b strings.Builder
	for _, m := range w.msgs[1:] {
		b.Write(m)
	}
	return b.String()
}

func serveOnce(t *testing.T, s *Serving, body string) (*recWriter, error) {
	t.Helper()
	w := &recWriter{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := s.ServeMesh(ctx, w, &mesh.Request{From: "a", Method: MethodChat, Payload: []byte(body)})
	return w, err
}

func model(id, provider string, up *schema.Upstream) schema.Model {
	return schema.Model{ID: id, Provider: provider, ModelParams: schema.DefaultModelParams(), Upstream: up}
}

func wantRemoteError(t *testing.T, err error, code, contains string) {
	t.Helper()
	var re *mesh.RemoteError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want a *mesh.RemoteError", err, err)
	}
	if re.Code != code || !strings.Contains(re.Message, contains) {
		t.Fatalf("err = %q code %q, want code %q containing %q", re.Message, re.Code, code, contains)
	}
}

func TestServingRoutes(t *testing.T) {
	up := startLLM(t, "up")
	prov := startLLM(t, "prov")
	gw := startLLM(t, "gw")
	gwURL := strings.TrimSuffix(gw.URL(), "/v1")
	t.Setenv("PROXY_TEST_KEY", "")

	tests := []struct {
		name      string
		models    []schema.Model
		providers map[string]Provider
		gateway   *schema.Gateway
		agent     string // the gateway agent
		env       string
		mock      *mockllm.Server
		wantModel string
		wantAuth  string
		wantHdr   string
	}{
		{
			name:      "upstream with key",
			models:    []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL() + "/", APIKey: "k-up"})},
			providers: map[string]Provider{"p": {BaseURL: prov.URL(), API: "openai-completions", APIKey: "k-prov"}},
			gateway:   &schema.Gateway{URL: gwURL, Token: "k-gw"}, agent: "main",
			mock: up, wantModel: "m", wantAuth: "Bearer k-up",
		},
		{
			name:   "upstream key from env at request time",
			models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL(), APIKeyEnv: "PROXY_TEST_KEY"})},
			env:    "k-env", mock: up, wantModel: "m", wantAuth: "Bearer k-env",
		},
		{
			name:      "host provider",
			models:    []schema.Model{model("m", "p", nil)},
			providers: map[string]Provider{"p": {BaseURL: prov.URL(), API: "openai-completions", APIKey: "k-prov"}},
			gateway:   &schema.Gateway{URL: gwURL, Token: "k-gw"}, agent: "main",
			mock: prov, wantModel: "m", wantAuth: "Bearer k-prov",
		},
		{
			name:      "gateway when the provider is not OpenAI-compatible",
			models:    []schema.Model{viaGateway(model("m", "anth", nil))},
			providers: map[string]Provider{"anth": {BaseURL: prov.URL(), API: "anthropic-messages", APIKey: "k-prov"}},
			gateway:   &schema.Gateway{URL: gwURL, Token: "k-gw"}, agent: "main",
			mock: gw, wantModel: "openclaw/main", wantAuth: "Bearer k-gw", wantHdr: "anth/m",
		},
		{
			name:    "gateway without agent uses the default agent",
			models:  []schema.Model{viaGateway(model("m", "p", nil))},
			gateway: &schema.Gateway{URL: gwURL, Token: "k-gw"},
			mock:    gw, wantModel: "openclaw/default", wantAuth: "Bearer k-gw", wantHdr: "p/m",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServing("b", ServingConfig{Models: tt.models, Providers: tt.providers, Gateway: tt.gateway, GatewayAgent: tt.agent})
			defer s.Close()
			if tt.env != "" {
				t.Setenv("PROXY_TEST_KEY", tt.env)
			}
			before := len(tt.mock.Calls())
			body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"x_unknown":{"keep":[1, 2]}}`
			w, err := serveOnce(t, s, body)
			if err != nil {
				t.Fatal(err)
			}
			if h := w.head(t); h.Status != 200 || h.Header.Get("X-Mock-Server") != tt.mock.Name() {
				t.Fatalf("head = %+v", h)
			}
			if !strings.Contains(w.body(), "reply from "+tt.mock.Name()) {
				t.Fatalf("body = %s", w.body())
			}
			calls := tt.mock.Calls()
			if len(calls) != before+1 {
				t.Fatalf("%s got %d calls, want %d", tt.mock.Name(), len(calls), before+1)
			}
			c := calls[len(calls)-1]
			if c.Model != tt.wantModel || c.Header.Get("Authorization") != tt.wantAuth || c.Header.Get("X-Openclaw-Model") != tt.wantHdr {
				t.Fatalf("call model %q auth %q x-openclaw-model %q", c.Model, c.Header.Get("Authorization"), c.Header.Get("X-Openclaw-Model"))
			}
			if !bytes.Contains(c.Body, []byte(`"x_unknown":{"keep":[1, 2]}`)) {
				t.Fatalf("unknown field not passed byte for byte: %s", c.Body)
			}
		})
	}
}

func TestServingErrors(t *testing.T) {
	up := startLLM(t, "up")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "http://" + ln.Addr().String() + "/v1"
	ln.Close()
	t.Setenv("PROXY_TEST_UNSET", "")

	tests := []struct {
		name     string
		models   []schema.Model
		prov     map[string]Provider
		body     string
		code     string
		contains string
	}{
		{name: "bad body", body: `{"model":`, code: mesh.CodeBadRequest, contains: "not valid JSON"},
		{name: "unknown model", models: []schema.Model{model("m", "p", nil)}, body: `{"model":"other"}`, code: mesh.CodeNotFound, contains: `does not serve model "other" (it serves m)`},
		{name: "nothing configured", models: []schema.Model{model("m", "p", nil)}, body: `{"model":"m"}`, code: mesh.CodeUnavailable, contains: "set models[].upstream.baseUrl"},
		{name: "provider not OpenAI", models: []schema.Model{model("m", "p", nil)}, prov: map[string]Provider{"p": {BaseURL: up.URL(), API: "anthropic-messages"}},
			body: `{"model":"m"}`, code: mesh.CodeUnavailable, contains: `api "anthropic-messages", not openai-completions`},
		{name: "key env unset", models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL(), APIKeyEnv: "PROXY_TEST_UNSET"})},
			body: `{"model":"m"}`, code: mesh.CodeUnavailable, contains: "PROXY_TEST_UNSET"},
		{name: "upstream down", models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: closedURL, APIKey: "secret-key-1"})},
			body: `{"model":"m"}`, code: mesh.CodeUnavailable, contains: "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServing("b", ServingConfig{Models: tt.models, Providers: tt.prov})
			defer s.Close()
			w, err := serveOnce(t, s, tt.body)
			wantRemoteError(t, err, tt.code, tt.contains)
			if strings.Contains(err.Error(), "secret-key-1") {
				t.Fatalf("error leaks the API key: %v", err)
			}
			if len(w.msgs) != 0 {
				t.Fatalf("wrote %d messages before failing", len(w.msgs))
			}
		})
	}
}

func TestServingPassesUpstreamErrors(t *testing.T) {
	up := startLLM(t, "up")
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		w.Write([]byte(`{"error":{"message":"slow down","type":"rate_limit","code":"rate"}}`))
		return true
	})
	s := NewServing("b", ServingConfig{Models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL()})}})
	defer s.Close()
	w, err := serveOnce(t, s, `{"model":"m"}`)
	if err != nil {
		t.Fatal(err)
	}
	if h := w.head(t); h.Status != http.StatusTooManyRequests {
		t.Fatalf("status %d", h.Status)
	}
	if !strings.Contains(w.body(), "slow down") {
		t.Fatalf("body %q", w.body())
	}
}

func TestServingStreamsWholeEvents(t *testing.T) {
	up := startLLM(t, "up")
	// Write events cut at odd places, flushing each piece.
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, p := range []string{"data: {\"a\"", ":1}\n", "\ndata: {\"b\":2}\n\nda", "ta: [DONE]\n\n"} {
			w.Write([]byte(p))
			fl.Flush()
			time.Sleep(5 * time.Millisecond)
		}
		return true
	})
	s := NewServing("b", ServingConfig{Models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL()})}})
	defer s.Close()
	w, err := serveOnce(t, s, `{"model":"m","stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	if w.body() != "data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n" {
		t.Fatalf("body %q", w.body())
	}
	for _, m := range w.msgs[1:] {
		if !bytes.HasSuffix(m, []byte("\n\n")) {
			t.Fatalf("message %q is not whole events", m)
		}
	}
	if calls := up.Calls(); calls[0].Header.Get("Accept") != "text/event-stream" {
		t.Fatalf("Accept = %q", calls[0].Header.Get("Accept"))
	}
}

func TestServingTimeouts(t *testing.T) {
	up := startLLM(t, "up")
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	s := NewServing("b", ServingConfig{
		Models:           []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL()})},
		FirstByteTimeout: 50 * time.Millisecond,
	})
	defer s.Close()
	_, err := serveOnce(t, s, `{"model":"m"}`)
	wantRemoteError(t, err, mesh.CodeUnavailable, "no response within 50ms")
	select {
	case <-up.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled")
	}

	// The whole-request deadline also covers a body that stalls.
	up.SetBefore(nil)
	up.SetBetween(func(r *http.Request, i int) {
		if i == 1 {
			<-r.Context().Done()
		}
	})
	s2 := NewServing("b", ServingConfig{
		Models:         []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL()})},
		RequestTimeout: 100 * time.Millisecond,
	})
	defer s2.Close()
	w, err := serveOnce(t, s2, `{"model":"m","stream":true}`)
	wantRemoteError(t, err, mesh.CodeUnavailable, "no complete response within 100ms")
	if len(w.msgs) < 2 {
		t.Fatalf("got %d messages, want the head and the first chunks", len(w.msgs))
	}
}

func TestServingCallerGoneCancelsUpstream(t *testing.T) {
	up := startLLM(t, "up")
	up.SetReply(mockllm.Pieces("a", "b", "c", "d"))
	s := NewServing("b", ServingConfig{Models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL()})}})
	defer s.Close()

	// Cancelled context while the upstream holds the response.
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- s.ServeMesh(ctx, &recWriter{}, &mesh.Request{Payload: []byte(`{"model":"m"}`)})
	}()
	<-up.Arrived()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler did not return after cancel")
	}
	select {
	case <-up.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled")
	}

	// A Write that fails mid-stream ends the upstream request too.
	up.SetBefore(nil)
	up.SetBetween(func(r *http.Request, i int) { time.Sleep(10 * time.Millisecond) })
	w := &recWriter{}
	w.fail = nil
	up.SetBetween(func(r *http.Request, i int) {
		if i == 0 {
			w.mu.Lock()
			w.fail = errors.New("caller gone")
			w.mu.Unlock()
		}
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	err := s.ServeMesh(context.Background(), w, &mesh.Request{Payload: []byte(`{"model":"m","stream":true}`)})
	if err == nil || !strings.Contains(err.Error(), "caller gone") {
		t.Fatalf("err = %v", err)
	}
	select {
	case <-up.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled after the write failed")
	}
}

func TestServingUpstreamBreaksMidBody(t *testing.T) {
	up := startLLM(t, "up")
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: {\"x\":1}\n\n"))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return true
	})
	s := NewServing("b", ServingConfig{Models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL()})}})
	defer s.Close()
	w, err := serveOnce(t, s, `{"model":"m","stream":true}`)
	wantRemoteError(t, err, mesh.CodeUnavailable, "broke off the response")
	if w.head(t).Status != 200 || w.body() != "data: {\"x\":1}\n\n" {
		t.Fatalf("head %+v body %q", w.head(t), w.body())
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"http://user:pw@host:1/v1?key=s": "http://host:1/v1",
		"http://host/v1":                 "http://host/v1",
		"http://host/a@b":                "http://host/a@b",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

// The upstream URL in an upstream error keeps no query or credentials,
// neither in the error the caller gets nor in the node's log: a query can
// carry a key. A query in baseUrl still reaches the upstream, after the path.
func TestServingErrorsRedactUpstreamURL(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	// An upstream that redirects to a URL carrying a token, on a port that
	// refuses connections.
	up := startLLM(t, "up")
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.RawQuery != "api-version=1&key=secret-in-base" {
			t.Errorf("upstream got query %q", r.URL.RawQuery)
		}
		http.Redirect(w, r, "http://"+closed+"/v1/chat/completions?token=secret-in-redirect", http.StatusTemporaryRedirect)
		return true
	})

	for name, base := range map[string]string{
		"query in baseUrl":       "http://" + closed + "/v1?key=secret-in-base",
		"credentials in baseUrl": "http://user:secret-password@" + closed + "/v1?key=secret-in-base",
		"redirect with token":    up.URL() + "?api-version=1&key=secret-in-base",
	} {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			var mu sync.Mutex
			s := NewServing("b", ServingConfig{
				Models: []schema.Model{model("m", "p", &schema.Upstream{BaseURL: base})},
				Logger: slog.New(slog.NewTextHandler(&lockedWriter{mu: &mu, w: &logs}, nil)),
			})
			defer s.Close()
			_, err := serveOnce(t, s, `{"model":"m"}`)
			wantRemoteError(t, err, mesh.CodeUnavailable, "connection refused")
			mu.Lock()
			logged := logs.String()
			mu.Unlock()
			if !strings.Contains(logged, "connection refused") {
				t.Fatalf("nothing logged: %q", logged)
			}
			for _, text := range []string{err.Error(), logged} {
				for _, secret := range []string{"secret-", "key=", "token=", "user:"} {
					if strings.Contains(text, secret) {
						t.Fatalf("%q leaks %q", text, secret)
					}
				}
			}
			if !strings.Contains(err.Error(), closed+"/v1") {
				t.Fatalf("error does not name the upstream: %v", err)
			}
		})
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestRedactErr(t *testing.T) {
	for in, want := range map[string]string{
		`Post "http://h:1/v1/chat/completions?key=s": dial tcp 127.0.0.1:1: connect: connection refused`: `Post "http://h:1/v1/chat/completions": dial tcp 127.0.0.1:1: connect: connection refused`,
		`a https://u:p@h/x?k=v#f and http://h2/y?q then ws://h3 end`:                                     `a https://h/x and http://h2/y then ws://h3 end`,
		`no url here`: `no url here`,
	} {
		if got := redactErr(errors.New(in)).Error(); got != want {
			t.Errorf("redactErr(%q) = %q, want %q", in, got, want)
		}
	}
}

func viaGateway(m schema.Model) schema.Model {
	m.ServeViaGateway = true
	return m
}

// A model without an upstream or an OpenAI-compatible provider is served
// through the gateway (an agent turn) only when it says so; otherwise the
// request is refused with how to allow it, and the gateway sees nothing.
func TestServingGatewayNeedsConsent(t *testing.T) {
	gw := startLLM(t, "gateway")
	s := NewServing("b", ServingConfig{Models: []schema.Model{{ID: "m", Provider: "anthropic", ModelParams: schema.DefaultModelParams()}},
		Gateway: &schema.Gateway{URL: gw.URL(), Token: "k-gw"}, GatewayAgent: "main"})
	defer s.Close()
	_, err := serveOnce(t, s, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	if err == nil || !strings.Contains(err.Error(), "serveViaGateway: true") {
		t.Fatalf("got %v, want a refusal saying how to allow the gateway", err)
	}
	if n := len(gw.Calls()); n != 0 {
		t.Errorf("the gateway got %d requests", n)
	}
}

// allowFrom decides which callers get the models: node ids and tags.
func TestServingAllowFrom(t *testing.T) {
	up := startLLM(t, "upstream")
	tags := map[string][]string{"trusted": {"team"}, "evil": {"SYSTEM"}}
	for _, tc := range []struct {
		allowFrom []string
		from      string
		ok        bool
	}{
		{nil, "anyone", true},
		{[]string{"*"}, "anyone", true},
		{[]string{}, "laptop", false},
		{[]string{"laptop"}, "laptop", true},
		{[]string{"laptop"}, "evil", false},
		{[]string{"tag:team"}, "trusted", true},
		{[]string{"tag:team"}, "evil", false},
	} {
		s := NewServing("b", ServingConfig{
			Models:    []schema.Model{model("m", "p", &schema.Upstream{BaseURL: up.URL()})},
			AllowFrom: tc.allowFrom, CallerTags: func(id string) []string { return tags[id] },
		})
		w := &recWriter{}
		err := s.ServeMesh(t.Context(), w, &mesh.Request{From: tc.from, Method: MethodChat,
			Payload: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)})
		s.Close()
		if tc.ok != (err == nil) {
			t.Errorf("allowFrom %v, caller %q: err = %v, want allowed = %v", tc.allowFrom, tc.from, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "allowFrom") {
			t.Errorf("refusal does not name allowFrom: %v", err)
		}
	}
}
