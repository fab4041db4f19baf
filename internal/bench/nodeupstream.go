package bench

// The model upstream behind each serving node in the fault suites: it
// answers at once with the request's own words and the name of the node it
// belongs to, so the bench can check that every answer is the answer to its
// request, from the node the proxy says served it. (internal/mockllm keeps
// every request it sees, which a long soak cannot afford.)

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

type echoUpstream struct {
	node   string
	url    string
	srv    *http.Server
	done   chan struct{}
	served atomic.Int64
}

func startEchoUpstream(node string) (*echoUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &echoUpstream{node: node, url: "http://" + ln.Addr().String() + "/v1", done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", u.chat)
	u.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(u.done)
		u.srv.Serve(ln)
	}()
	return u, nil
}

func (u *echoUpstream) Close() {
	u.srv.Close()
	<-u.done
}

// echoText is the reply an echo upstream of node gives to a user message.
func echoText(node, msg string) string { return "node=" + node + " echo: " + msg }

func (u *echoUpstream) chat(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"body is not a chat request","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	u.served.Add(1)
	msg := ""
	for _, m := range req.Messages {
		if m.Role == "user" {
			msg = m.Content
		}
	}
	text := echoText(u.node, msg)
	if !req.Stream {
		b, _ := json.Marshal(map[string]any{
			"id": "chatcmpl-echo", "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "finish_reason": "stop", "message": map[string]any{"role": "assistant", "content": text}}},
		})
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl, _ := w.(http.Flusher)
	// One chunk per word, so a stream has several events to lose or reorder.
	words := strings.SplitAfter(text, " ")
	for i, word := range words {
		var finish any
		if i == len(words)-1 {
			finish = "stop"
		}
		b, _ := json.Marshal(map[string]any{
			"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": req.Model,
			"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": word}, "finish_reason": finish}},
		})
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
}
