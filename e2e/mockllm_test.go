//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// scriptLLM is an OpenAI-compatible chat server (non-streaming and SSE, text
// and tool calls) whose answers are scripted per test case. A script is keyed
// by a token that the test puts into a prompt: the latest user message that
// holds a registered token decides which script answers. That survives what
// OpenClaw does to a conversation (a system prompt, context prepended to the
// user's message, an internal user message appended after each tool result,
// earlier turns kept in the session).
//
// It records every request with its headers and raw body, so a test can tell
// which side sent it (the API key) and what the prompt contained.
type scriptLLM struct {
	srv *httptest.Server

	mu       sync.Mutex
	scripts  []script
	requests []llmRequest
	calls    int
}

type script struct {
	token  string
	answer func(turn) answer
}

// turn is what a script sees of one request.
type turn struct {
	// Prompt is the text of the latest user message holding the token.
	Prompt string
	// ToolResults are the texts of the role "tool" messages after that user
	// message: a non-empty list means the scripted tool was already called.
	ToolResults []string
	// Tools are the names of the tools the request offered.
	Tools []string
}

// answer is one assistant message: a text, or a single tool call.
type answer struct {
	Text string
	Call *toolCall
}

type toolCall struct {
	Name string
	Args map[string]any
}

// llmRequest is one recorded chat completion request.
type llmRequest struct {
	Header http.Header
	Body   []byte
	Chat   chatRequest
	Token  string // the script that answered; "" when none matched
	Answer answer
}

type chatRequest struct {
	Model    string        `json:"model"`
	Stream   bool          `json:"stream"`
	Messages []chatMessage `json:"messages"`
	Tools    []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text flattens a message's content, a string or a list of parts.
func (m chatMessage) text() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(m.Content, &parts) == nil {
		texts := make([]string, 0, len(parts))
		for _, p := range parts {
			texts = append(texts, p.Text)
		}
		return strings.Join(texts, "\n")
	}
	return ""
}

// userText is every user message of the request, joined.
func (r llmRequest) userText() string {
	var b strings.Builder
	for _, m := range r.Chat.Messages {
		if m.Role == "user" {
			b.WriteString(m.text())
			b.WriteString("\n")
		}
	}
	return b.String()
}

// systemText is every system message of the request, joined.
func (r llmRequest) systemText() string {
	var b strings.Builder
	for _, m := range r.Chat.Messages {
		if m.Role == "system" || m.Role == "developer" {
			b.WriteString(m.text())
			b.WriteString("\n")
		}
	}
	return b.String()
}

func newScriptLLM() *scriptLLM {
	m := &scriptLLM{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{}})
	})
	mux.HandleFunc("POST /v1/chat/completions", m.chat)
	m.srv = httptest.NewServer(mux) // 127.0.0.1:0
	return m
}

// URL is the OpenAI base URL, ending in /v1.
func (m *scriptLLM) URL() string { return m.srv.URL + "/v1" }

func (m *scriptLLM) Close() { m.srv.Close() }

// on registers the script for prompts holding token.
func (m *scriptLLM) on(token string, fn func(turn) answer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.scripts = append(m.scripts, script{token: token, answer: fn})
}

// answered returns the recorded requests that the script for token answered.
func (m *scriptLLM) answered(token string) []llmRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []llmRequest
	for _, r := range m.requests {
		if r.Token == token {
			out = append(out, r)
		}
	}
	return out
}

// summary is one line per recorded request, for failure output.
func (m *scriptLLM) summary() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	for i, r := range m.requests {
		roles := make([]string, 0, len(r.Chat.Messages))
		for _, msg := range r.Chat.Messages {
			roles = append(roles, msg.Role)
		}
		fmt.Fprintf(&b, "#%d auth=%q ua=%q model=%q stream=%v script=%q roles=%v answer=%+v\n",
			i, redactBearer(r.Header.Get("Authorization")), r.Header.Get("User-Agent"), r.Chat.Model, r.Chat.Stream, r.Token, roles, r.Answer)
	}
	return b.String()
}

// redactBearer keeps only enough of a key to tell keys apart in a log.
func redactBearer(v string) string {
	if len(v) > 16 {
		return v[:16] + "…"
	}
	return v
}

// pick chooses the script for a request and builds its turn.
func (m *scriptLLM) pick(req chatRequest) (script, turn, bool) {
	m.mu.Lock()
	scripts := append([]script(nil), m.scripts...)
	m.mu.Unlock()
	for i := len(req.Messages) - 1; i >= 0; i-- {
		msg := req.Messages[i]
		if msg.Role != "user" {
			continue
		}
		text := msg.text()
		for _, s := range scripts {
			if !strings.Contains(text, s.token) {
				continue
			}
			t := turn{Prompt: text}
			for _, later := range req.Messages[i+1:] {
				if later.Role == "tool" {
					t.ToolResults = append(t.ToolResults, later.text())
				}
			}
			for _, tool := range req.Tools {
				t.Tools = append(t.Tools, tool.Function.Name)
			}
			return s, t, true
		}
	}
	return script{}, turn{}, false
}

func (m *scriptLLM) chat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 32<<20))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, openAIError("cannot read body: "+err.Error()))
		return
	}
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeJSON(w, http.StatusBadRequest, openAIError("body is not a chat request: "+err.Error()))
		return
	}
	s, t, ok := m.pick(req)
	ans := answer{Text: "mock: no script matches this prompt"}
	if ok {
		ans = s.answer(t)
	}
	m.mu.Lock()
	m.calls++
	callID := fmt.Sprintf("call_%d", m.calls)
	m.requests = append(m.requests, llmRequest{Header: r.Header.Clone(), Body: body, Chat: req, Token: s.token, Answer: ans})
	m.mu.Unlock()

	if req.Stream {
		streamAnswer(w, req.Model, callID, ans)
		return
	}
	msg := map[string]any{"role": "assistant", "content": ans.Text}
	finish := "stop"
	if ans.Call != nil {
		args, _ := json.Marshal(ans.Call.Args)
		msg["content"] = nil
		msg["tool_calls"] = []any{map[string]any{"id": callID, "type": "function",
			"function": map[string]any{"name": ans.Call.Name, "arguments": string(args)}}}
		finish = "tool_calls"
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id": "chatcmpl-" + callID, "object": "chat.completion", "created": time.Now().Unix(), "model": req.Model,
		"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": finish}},
		"usage":   usage(),
	})
}

// streamAnswer writes the answer as SSE chunks, splitting the text and the
// tool call arguments so that clients must reassemble them.
func streamAnswer(w http.ResponseWriter, model, callID string, ans answer) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	flusher, _ := w.(http.Flusher)
	send := func(delta map[string]any, finish any, extra map[string]any) {
		chunk := map[string]any{"id": "chatcmpl-" + callID, "object": "chat.completion.chunk", "created": time.Now().Unix(), "model": model,
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
	send(map[string]any{"role": "assistant"}, nil, nil)
	finish := "stop"
	if ans.Call != nil {
		args, _ := json.Marshal(ans.Call.Args)
		first, rest := splitHalf(string(args))
		send(map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": callID, "type": "function",
			"function": map[string]any{"name": ans.Call.Name, "arguments": first}}}}, nil, nil)
		send(map[string]any{"tool_calls": []any{map[string]any{"index": 0,
			"function": map[string]any{"arguments": rest}}}}, nil, nil)
		finish = "tool_calls"
	} else {
		first, rest := splitHalf(ans.Text)
		send(map[string]any{"content": first}, nil, nil)
		send(map[string]any{"content": rest}, nil, nil)
	}
	send(map[string]any{}, finish, map[string]any{"usage": usage()})
	fmt.Fprint(w, "data: [DONE]\n\n")
	if flusher != nil {
		flusher.Flush()
	}
}

// splitHalf cuts s in two near the middle, on a rune boundary.
func splitHalf(s string) (string, string) {
	half := len(s) / 2
	for half > 0 && !utf8.RuneStart(s[half]) {
		half--
	}
	return s[:half], s[half:]
}

func usage() map[string]any {
	return map[string]any{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
}

func openAIError(msg string) map[string]any {
	return map[string]any{"error": map[string]any{"message": msg, "type": "invalid_request_error"}}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
