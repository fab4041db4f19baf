// Package mockllm is a small OpenAI-compatible chat server that stands in
// for a language model where none can run: the demo, benchmarks and tests.
// It answers deterministically and records what it was asked.
package mockllm

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Request is one chat completion request as the server saw it.
type Request struct {
	Header http.Header
	Body   map[string]any
}

// Reply decides the answer to a request: its text, split into stream chunks
// at spaces.
type Reply func(body map[string]any) string

// EchoReply answers with the last user message, prefixed.
func EchoReply(prefix string) Reply {
	return func(body map[string]any) string {
		return prefix + LastUserText(body)
	}
}

// LastUserText is the text of the last user message of a request body.
func LastUserText(body map[string]any) string {
	msgs, _ := body["messages"].([]any)
	for i := len(msgs) - 1; i >= 0; i-- {
		m, _ := msgs[i].(map[string]any)
		if m["role"] != "user" {
			continue
		}
		switch c := m["content"].(type) {
		case string:
			return c
		case []any:
			var parts []string
			for _, p := range c {
				if pm, ok := p.(map[string]any); ok {
					if t, ok := pm["text"].(string); ok {
						parts = append(parts, t)
					}
				}
			}
			return strings.Join(parts, " ")
		}
	}
	return ""
}

// Server is a running mock model server on 127.0.0.1.
type Server struct {
	Model string
	Reply Reply
	// ChunkDelay is slept between stream chunks.
	ChunkDelay time.Duration

	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup

	mu       sync.Mutex
	requests []Request
}

// Start listens on a free loopback port.
func Start(model string, reply Reply) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{Model: model, Reply: reply, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(ln)
	}()
	return s, nil
}

// URL is the OpenAI-style base URL, ending in /v1.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/v1" }

// Requests are the chat requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Close stops the server and waits for it.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

func (s *Server) models(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{"object": "list", "data": []any{map[string]any{"id": s.Model, "object": "model", "owned_by": "mockllm"}}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<20)).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeJSON(w, map[string]any{"error": map[string]any{"message": "body is not JSON: " + err.Error(), "type": "invalid_request_error"}})
		return
	}
	s.mu.Lock()
	s.requests = append(s.requests, Request{Header: r.Header.Clone(), Body: body})
	s.mu.Unlock()

	text := s.Reply(body)
	model, _ := body["model"].(string)
	id := fmt.Sprintf("chatcmpl-mock-%d", time.Now().UnixNano())
	usage := map[string]any{"prompt_tokens": 1, "completion_tokens": len(strings.Fields(text)), "total_tokens": 1 + len(strings.Fields(text))}
	if stream, _ := body["stream"].(bool); !stream {
		writeJSON(w, map[string]any{
			"id": id, "object": "chat.completion", "created": time.Now().Unix(), "model": model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": text}}},
			"usage": usage,
		})
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	send := func(delta map[string]any, finish any, extra map[string]any) {
		chunk := map[string]any{"id": id, "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}}
		for k, v := range extra {
			chunk[k] = v
		}
		data, _ := json.Marshal(chunk)
		fmt.Fprintf(w, "data: %s\n\n", data)
		if flusher != nil {
			flusher.Flush()
		}
	}
	send(map[string]any{"role": "assistant", "content": ""}, nil, nil)
	words := strings.SplitAfter(text, " ")
	for _, word := range words {
		if s.ChunkDelay > 0 {
			select {
			case <-time.After(s.ChunkDelay):
			case <-r.Context().Done():
				return
			}
		}
		send(map[string]any{"content": word}, nil, nil)
	}
	send(map[string]any{}, "stop", map[string]any{"usage": usage})
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}
