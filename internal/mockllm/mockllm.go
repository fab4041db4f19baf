// Package mockllm is the project's one stand-in for an OpenAI-compatible
// model server, for the unit tests, the benchmarks and the end-to-end test.
// It is test and measurement machinery: no shipped binary links it (make
// check verifies that for clawmatrix-plugin).
//
// A Server listens on 127.0.0.1 and answers POST /v1/chat/completions,
// plain or as SSE, with a text or a tool call, as its Reply decides: the
// default names the server, Echo repeats the prompt, Pieces streams fixed
// chunks, Fail answers with an OpenAI error, and a Script picks an answer
// by a token in the prompt. Options add latency before the answer and
// between chunks; hooks let a test hold, cut or replace an answer at the
// moment it needs. It records every request with the answer it chose
// (unless told not to, for long runs) and counts what it served.
package mockllm

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/clawmatrix/clawmatrix/internal/jsonscan"
)

// Options configure a Server.
type Options struct {
	// Name is sent in the X-Mock-Server header of every answer, so a test
	// can tell which upstream served a request, and names the server in
	// the default reply.
	Name string
	// Reply decides each answer; nil means Default(Name).
	Reply Reply
	// Latency is waited before the answer's head (a client that goes away
	// ends the wait).
	Latency time.Duration
	// ChunkDelay is waited before each streamed chunk after the first.
	ChunkDelay time.Duration
	// NoRecord keeps no Call records and sends nothing on Arrived, for long
	// runs and for runs that measure the memory of the whole process.
	// Served still counts.
	NoRecord bool
}

// Reply decides the answer to one request. It runs on the request's
// goroutine, so it must be safe for concurrent use.
type Reply func(*Request) Answer

// Request is one chat completion request as the server read it.
type Request struct {
	Header http.Header
	// Body is the request body exactly as it arrived.
	Body         []byte
	Model        string
	Stream       bool
	IncludeUsage bool // stream_options.include_usage
	Messages     []Message
	// Tools are the names of the function tools the request offered.
	Tools []string
}

// Message is one message of a request; Content stays raw (a string or a
// list of parts).
type Message struct {
	Role       string          `json:"role"`
	Content    json.RawMessage `json:"content"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
}

// Text flattens the message's content, a string or a list of text parts
// (joined with newlines).
func (m Message) Text() string {
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

// LastUserText is the text of the request's last user message.
func (r *Request) LastUserText() string {
	for i := len(r.Messages) - 1; i >= 0; i-- {
		if r.Messages[i].Role == "user" {
			return r.Messages[i].Text()
		}
	}
	return ""
}

// UserText is the text of every user message, each followed by a newline.
func (r *Request) UserText() string {
	var b strings.Builder
	for _, m := range r.Messages {
		if m.Role == "user" {
			b.WriteString(m.Text())
			b.WriteString("\n")
		}
	}
	return b.String()
}

// SystemText is the text of every system (or developer) message, each
// followed by a newline.
func (r *Request) SystemText() string {
	var b strings.Builder
	for _, m := range r.Messages {
		if m.Role == "system" || m.Role == "developer" {
			b.WriteString(m.Text())
			b.WriteString("\n")
		}
	}
	return b.String()
}

// hasToolResult reports whether the request carries a role "tool" message.
func (r *Request) hasToolResult() bool {
	for _, m := range r.Messages {
		if m.Role == "tool" {
			return true
		}
	}
	return false
}

// Answer is one assistant message: a text, a tool call, or an error.
type Answer struct {
	Text string
	// Pieces are the chunks of a streamed text; nil cuts Text after each
	// space. A plain answer joins them when Text is empty.
	Pieces []string
	// ToolCall, when set, is the answer instead of a text; streamed, its
	// arguments arrive in two halves the client must join.
	ToolCall *ToolCall
	// Status, when set and not 200, answers with an OpenAI error of this
	// HTTP status instead: Text is its message, ErrorCode its code.
	Status    int
	ErrorCode string
	// Label is kept with the recorded call (a Script puts there the token
	// that chose the answer).
	Label string
}

// ToolCall is a call of one function tool.
type ToolCall struct {
	// ID is the call's id; empty means call_<n>, n counting the tool calls
	// this server has answered.
	ID   string
	Name string
	// Arguments are the call's arguments as JSON text.
	Arguments string
}

// Call is one request with the answer Reply chose for it.
type Call struct {
	*Request
	Answer Answer
}

// Default is the reply of a server named name: "reply from <name>" in
// three pieces, or, when the request offers tools and no tool result came
// back yet, a call of get_weather with {"city":"Paris"}.
func Default(name string) Reply {
	pieces := []string{"reply ", "from ", name}
	return func(r *Request) Answer {
		if len(r.Tools) > 0 && !r.hasToolResult() {
			return Answer{ToolCall: &ToolCall{Name: "get_weather", Arguments: `{"city":"Paris"}`}}
		}
		return Answer{Pieces: pieces}
	}
}

// Text always answers s.
func Text(s string) Reply { return func(*Request) Answer { return Answer{Text: s} } }

// Pieces always answers the text made of pieces, streamed one per chunk.
func Pieces(pieces ...string) Reply {
	return func(*Request) Answer { return Answer{Pieces: pieces} }
}

// Echo answers prefix followed by the last user message.
func Echo(prefix string) Reply {
	return func(r *Request) Answer { return Answer{Text: prefix + r.LastUserText()} }
}

// Fail always answers with an OpenAI error: HTTP status, error code and
// message.
func Fail(status int, code, message string) Reply {
	return func(*Request) Answer { return Answer{Status: status, ErrorCode: code, Text: message} }
}

// Server is a running mock model server.
type Server struct {
	name       string
	latency    time.Duration
	chunkDelay time.Duration
	record     bool

	srv *http.Server
	ln  net.Listener
	wg  sync.WaitGroup

	served    atomic.Int64
	toolCalls atomic.Int64

	mu      sync.Mutex
	reply   Reply
	before  func(w http.ResponseWriter, r *http.Request) bool
	between func(r *http.Request, chunk int)
	calls   []Call

	arrived   chan Call
	cancelled chan struct{}
}

// Start listens on a free 127.0.0.1 port and serves until Close.
func Start(o Options) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		name: o.Name, latency: o.Latency, chunkDelay: o.ChunkDelay, record: !o.NoRecord,
		reply: o.Reply, ln: ln,
		arrived:   make(chan Call, 4096),
		cancelled: make(chan struct{}, 4096),
	}
	if s.reply == nil {
		s.reply = Default(o.Name)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[]}`)
	})
	mux.HandleFunc("POST /v1/chat/completions", s.chat)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "the mock model server serves POST /v1/chat/completions and GET /v1/models")
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.srv.Serve(ln) // ends with http.ErrServerClosed on Close
	}()
	return s, nil
}

// URL is the OpenAI base URL, http://127.0.0.1:PORT/v1.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/v1" }

// Name is the server's name (Options.Name).
func (s *Server) Name() string { return s.name }

// Close stops the server, cutting open connections, and waits for it.
func (s *Server) Close() error {
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

// Served is how many chat requests the server has read.
func (s *Server) Served() int64 { return s.served.Load() }

// Calls are the requests recorded so far, oldest first.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Arrived receives each recorded call as it arrives, before any Before
// hook runs. Calls beyond its buffer (4096) are not sent.
func (s *Server) Arrived() <-chan Call { return s.arrived }

// Cancelled receives one value for each request whose client went away
// before its answer was complete.
func (s *Server) Cancelled() <-chan struct{} { return s.cancelled }

// SetReply replaces the reply for the requests that arrive from now on;
// nil restores Default(name).
func (s *Server) SetReply(r Reply) {
	if r == nil {
		r = Default(s.name)
	}
	s.mu.Lock()
	s.reply = r
	s.mu.Unlock()
}

// SetBefore installs a hook that runs after a request is read and recorded
// and before anything is written: it may hold the request (on
// r.Context() too), or write an answer of its own and return true. nil
// removes it.
func (s *Server) SetBefore(f func(w http.ResponseWriter, r *http.Request) (handled bool)) {
	s.mu.Lock()
	s.before = f
	s.mu.Unlock()
}

// SetBetween installs a hook that runs after each streamed text chunk is
// flushed, with the chunk's index; it may hold the stream. nil removes it.
func (s *Server) SetBetween(f func(r *http.Request, chunk int)) {
	s.mu.Lock()
	s.between = f
	s.mu.Unlock()
}

// wireRequest is the part of a chat request the server reads.
type wireRequest struct {
	Model         string    `json:"model"`
	Stream        bool      `json:"stream"`
	Messages      []Message `json:"messages"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	Tools []struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	} `json:"tools"`
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 32<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_body", "cannot read the body: "+err.Error())
		return
	}
	var wr wireRequest
	if err := json.Unmarshal(body, &wr); err != nil {
		writeError(w, http.StatusBadRequest, "bad_json", "the body is not a chat request: "+err.Error())
		return
	}
	req := &Request{Header: r.Header, Body: body, Model: wr.Model, Stream: wr.Stream, Messages: wr.Messages,
		IncludeUsage: wr.StreamOptions != nil && wr.StreamOptions.IncludeUsage}
	for _, t := range wr.Tools {
		req.Tools = append(req.Tools, t.Function.Name)
	}
	n := s.served.Add(1)

	s.mu.Lock()
	reply, before, between := s.reply, s.before, s.between
	s.mu.Unlock()
	ans := reply(req)
	if ans.ToolCall != nil && ans.ToolCall.ID == "" {
		tc := *ans.ToolCall
		tc.ID = "call_" + strconv.FormatInt(s.toolCalls.Add(1), 10)
		ans.ToolCall = &tc
	}
	if s.record {
		req.Header = r.Header.Clone()
		call := Call{Request: req, Answer: ans}
		s.mu.Lock()
		s.calls = append(s.calls, call)
		s.mu.Unlock()
		select {
		case s.arrived <- call:
		default:
		}
	}
	defer func() {
		if r.Context().Err() != nil {
			select {
			case s.cancelled <- struct{}{}:
			default:
			}
		}
	}()
	if before != nil && before(w, r) {
		return
	}
	if !wait(r, s.latency) {
		return
	}
	if s.name != "" {
		w.Header().Set("X-Mock-Server", s.name)
	}
	if ans.Status != 0 && ans.Status != http.StatusOK {
		writeError(w, ans.Status, ans.ErrorCode, ans.Text)
		return
	}
	id := "chatcmpl-mock-" + strconv.FormatInt(n, 10)
	if req.Stream {
		s.stream(w, r, req, id, ans, between)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(appendCompletion(make([]byte, 0, 512), id, req.Model, ans))
}

// wait sleeps d unless the client goes away first; false if it did.
func wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

const usageJSON = `{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}`

func (a Answer) pieces() []string {
	if a.Pieces != nil {
		return a.Pieces
	}
	return strings.SplitAfter(a.Text, " ")
}

func appendCompletion(b []byte, id, model string, ans Answer) []byte {
	b = appendHead(b, id, "chat.completion", model)
	b = append(b, `"choices":[{"index":0,"message":{"role":"assistant","content":`...)
	finish := "stop"
	if tc := ans.ToolCall; tc != nil {
		b = append(b, `null,"tool_calls":[`...)
		b = appendToolCall(b, tc, tc.Arguments, true)
		b = append(b, ']')
		finish = "tool_calls"
	} else {
		text := ans.Text
		if text == "" && ans.Pieces != nil {
			text = strings.Join(ans.Pieces, "")
		}
		b = jsonscan.AppendString(b, text)
	}
	b = append(b, `},"finish_reason":`...)
	b = jsonscan.AppendString(b, finish)
	b = append(b, `}],"usage":`...)
	b = append(b, usageJSON...)
	return append(b, '}')
}

// appendHead writes the members every completion object starts with, up to
// and including the comma before "choices".
func appendHead(b []byte, id, object, model string) []byte {
	b = append(b, `{"id":`...)
	b = jsonscan.AppendString(b, id)
	b = append(b, `,"object":"`...)
	b = append(b, object...)
	b = append(b, `","created":`...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	b = append(b, `,"model":`...)
	b = jsonscan.AppendString(b, model)
	return append(b, ',')
}

// appendToolCall writes one tool call object; a streamed one carries its
// index, and only its first chunk (full) its id, type and name.
func appendToolCall(b []byte, tc *ToolCall, args string, full bool) []byte {
	b = append(b, `{"index":0,`...)
	if full {
		b = append(b, `"id":`...)
		b = jsonscan.AppendString(b, tc.ID)
		b = append(b, `,"type":"function","function":{"name":`...)
		b = jsonscan.AppendString(b, tc.Name)
		b = append(b, ',')
	} else {
		b = append(b, `"function":{`...)
	}
	b = append(b, `"arguments":`...)
	b = jsonscan.AppendString(b, args)
	return append(b, `}}`...)
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, req *Request, id string, ans Answer, between func(*http.Request, int)) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 0, 512)
	// chunk writes one event whose choice has delta (a JSON object) and
	// finish (a JSON value); false once the client is gone.
	chunk := func(delta []byte, finish string) bool {
		buf = append(buf[:0], "data: "...)
		buf = appendHead(buf, id, "chat.completion.chunk", req.Model)
		buf = append(buf, `"choices":[{"index":0,"delta":`...)
		buf = append(buf, delta...)
		buf = append(buf, `,"finish_reason":`...)
		buf = append(buf, finish...)
		buf = append(buf, "}]}\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return false
		}
		if fl != nil {
			fl.Flush()
		}
		return true
	}
	var delta []byte
	finish := `"stop"`
	if tc := ans.ToolCall; tc != nil {
		first, rest := splitHalf(tc.Arguments)
		delta = append(delta[:0], `{"role":"assistant","tool_calls":[`...)
		delta = appendToolCall(delta, tc, "", true)
		delta = append(delta, "]}"...)
		if !chunk(delta, "null") {
			return
		}
		for _, part := range []string{first, rest} {
			delta = append(delta[:0], `{"tool_calls":[`...)
			delta = appendToolCall(delta, tc, part, false)
			delta = append(delta, "]}"...)
			if !chunk(delta, "null") {
				return
			}
		}
		finish = `"tool_calls"`
	} else {
		for i, p := range ans.pieces() {
			if i > 0 && !wait(r, s.chunkDelay) {
				return
			}
			delta = append(delta[:0], '{')
			if i == 0 {
				delta = append(delta, `"role":"assistant",`...)
			}
			delta = append(delta, `"content":`...)
			delta = jsonscan.AppendString(delta, p)
			delta = append(delta, '}')
			if !chunk(delta, "null") {
				return
			}
			if between != nil {
				between(r, i)
			}
			if r.Context().Err() != nil {
				return
			}
		}
	}
	if !chunk([]byte(`{}`), finish) {
		return
	}
	if req.IncludeUsage {
		buf = append(buf[:0], "data: "...)
		buf = appendHead(buf, id, "chat.completion.chunk", req.Model)
		buf = append(buf, `"choices":[],"usage":`...)
		buf = append(buf, usageJSON...)
		buf = append(buf, "}\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
	}
	io.WriteString(w, "data: [DONE]\n\n")
	if fl != nil {
		fl.Flush()
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

// writeError writes an OpenAI error object.
func writeError(w http.ResponseWriter, status int, code, message string) {
	b := append([]byte(nil), `{"error":{"message":`...)
	b = jsonscan.AppendString(b, message)
	b = append(b, `,"type":`...)
	typ := "server_error"
	if status >= 400 && status < 500 {
		typ = "invalid_request_error"
	}
	if status == http.StatusTooManyRequests {
		typ = "rate_limit_error"
	}
	b = jsonscan.AppendString(b, typ)
	b = append(b, `,"param":null,"code":`...)
	if code == "" {
		b = append(b, "null"...)
	} else {
		b = jsonscan.AppendString(b, code)
	}
	b = append(b, "}}"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}
