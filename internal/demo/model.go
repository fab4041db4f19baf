package demo

// The demo's model: node c needs an OpenAI-compatible upstream to serve, and
// the demo runs where no model does. This one repeats the prompt, streamed a
// word per chunk. It is part of what clawmatrix-plugin ships (the demo is a
// command of the sidecar), so it is kept to what the demo shows; the tests'
// and benchmarks' model server, with scripts, tool calls and failures, is
// internal/mockllm, which the shipped binary does not link.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// echoModel is a running demo model on 127.0.0.1.
type echoModel struct {
	prefix string
	srv    *http.Server
	ln     net.Listener
	done   chan struct{}
}

func startEchoModel(prefix string) (*echoModel, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	m := &echoModel{prefix: prefix, ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", m.chat)
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(m.done)
		m.srv.Serve(ln) // ends with http.ErrServerClosed on close
	}()
	return m, nil
}

// URL is the OpenAI base URL.
func (m *echoModel) URL() string { return "http://" + m.ln.Addr().String() + "/v1" }

func (m *echoModel) close() {
	m.srv.Close()
	<-m.done
}

func (m *echoModel) chat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"the demo model takes a chat request with text messages","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	prompt := ""
	for _, msg := range req.Messages {
		if msg.Role == "user" {
			prompt = msg.Content
		}
	}
	text := m.prefix + prompt
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"id": "chatcmpl-demo", "object": "chat.completion", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": text}}}})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl, _ := w.(http.Flusher)
	event := func(delta map[string]any, finish any) {
		b, _ := json.Marshal(map[string]any{"id": "chatcmpl-demo", "object": "chat.completion.chunk", "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}})
		fmt.Fprintf(w, "data: %s\n\n", b)
		if fl != nil {
			fl.Flush()
		}
	}
	for _, word := range strings.SplitAfter(text, " ") {
		event(map[string]any{"content": word}, nil)
	}
	event(map[string]any{}, "stop")
	fmt.Fprint(w, "data: [DONE]\n\n")
}
