package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// mockLLM is a scriptable OpenAI-compatible chat completions server.
//
// By default it answers "reply from <name>" (plain), streams that reply in
// pieces (stream: true, with a usage chunk when asked), and answers with a
// tool call when the request has tools and no role "tool" message yet.
type mockLLM struct {
	name string
	srv  *httptest.Server
	// URL is the base URL of the OpenAI API, ending in /v1.
	URL string

	mu    sync.Mutex
	calls []mockCall
	// before runs after the request is read and before anything is
	// written; it may block (on r.Context() too) to hold the response.
	before func(w http.ResponseWriter, r *http.Request) (handled bool)
	// between runs after each streamed piece is flushed.
	between func(r *http.Request, i int)
	pieces  []string

	arrived   chan mockCall
	cancelled chan string
}

type mockCall struct {
	Path   string
	Header http.Header
	Body   []byte
	Model  string
}

func newMockLLM(t testing.TB, name string) *mockLLM {
	m := &mockLLM{
		name:      name,
		pieces:    []string{"reply ", "from ", name},
		arrived:   make(chan mockCall, 4096),
		cancelled: make(chan string, 4096),
	}
	m.srv = httptest.NewServer(http.HandlerFunc(m.serve))
	m.URL = m.srv.URL + "/v1"
	t.Cleanup(func() {
		m.srv.CloseClientConnections()
		m.srv.Close()
	})
	return m
}

func (m *mockLLM) setBefore(f func(w http.ResponseWriter, r *http.Request) bool) {
	m.mu.Lock()
	m.before = f
	m.mu.Unlock()
}

func (m *mockLLM) setBetween(f func(r *http.Request, i int)) {
	m.mu.Lock()
	m.between = f
	m.mu.Unlock()
}

func (m *mockLLM) setPieces(p []string) {
	m.mu.Lock()
	m.pieces = p
	m.mu.Unlock()
}

func (m *mockLLM) Calls() []mockCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]mockCall(nil), m.calls...)
}

type mockReq struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Messages []struct {
		Role string `json:"role"`
	} `json:"messages"`
	Tools         []json.RawMessage `json:"tools"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (m *mockLLM) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, `{"error":{"message":"no such route","type":"invalid_request_error","code":"not_found"}}`, http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var req mockReq
	if err := json.Unmarshal(body, &req); err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":{"message":%q,"type":"invalid_request_error","code":"bad_json"}}`, err.Error())
		return
	}
	call := mockCall{Path: r.URL.Path, Header: r.Header.Clone(), Body: body, Model: req.Model}
	m.mu.Lock()
	m.calls = append(m.calls, call)
	before, between, pieces := m.before, m.between, m.pieces
	m.mu.Unlock()
	m.arrived <- call
	defer func() {
		if r.Context().Err() != nil {
			m.cancelled <- m.name
		}
	}()
	if before != nil && before(w, r) {
		return
	}

	toolTurn := len(req.Tools) > 0
	for _, msg := range req.Messages {
		if msg.Role == "tool" {
			toolTurn = false
		}
	}
	const usage = `{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}`
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Mock-Server", m.name)
		msg := fmt.Sprintf(`{"role":"assistant","content":%q}`, strings.Join(pieces, ""))
		finish := "stop"
		if toolTurn {
			msg = `{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]}`
			finish = "tool_calls"
		}
		fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":%s,"finish_reason":%q}],"usage":%s}`,
			req.Model, msg, finish, usage)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Mock-Server", m.name)
	fl := w.(http.Flusher)
	chunk := func(delta, finish string) {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":%s,\"finish_reason\":%s}]}\n\n", req.Model, delta, finish)
		fl.Flush()
	}
	if toolTurn {
		chunk(`{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]}`, "null")
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}`, "null")
		chunk(`{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}`, "null")
		chunk(`{}`, `"tool_calls"`)
	} else {
		for i, p := range pieces {
			chunk(fmt.Sprintf(`{"content":%q}`, p), "null")
			if between != nil {
				between(r, i)
			}
			if r.Context().Err() != nil {
				return
			}
		}
		chunk(`{}`, `"stop"`)
	}
	if req.StreamOptions != nil && req.StreamOptions.IncludeUsage {
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[],\"usage\":%s}\n\n", req.Model, usage)
	}
	io.WriteString(w, "data: [DONE]\n\n")
	fl.Flush()
}
