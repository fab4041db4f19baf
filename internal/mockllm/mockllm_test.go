package mockllm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func client(t *testing.T, s *Server) openai.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return openai.NewClient(option.WithBaseURL(s.URL()), option.WithAPIKey("key-1"), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: tr}))
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func stream(ctx context.Context, c openai.Client, p openai.ChatCompletionNewParams) (openai.ChatCompletionAccumulator, int, error) {
	st := c.Chat.Completions.NewStreaming(ctx, p)
	defer st.Close()
	var acc openai.ChatCompletionAccumulator
	n := 0
	for st.Next() {
		acc.AddChunk(st.Current())
		n++
	}
	return acc, n, st.Err()
}

// The default reply, plain and streamed, and its tool call, read by the
// official OpenAI client: what the proxy tests rely on.
func TestDefaultReply(t *testing.T) {
	s := start(t, Options{Name: "up-b"})
	c := client(t, s)
	ctx := testCtx(t)

	var resp *http.Response
	out, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if out.Choices[0].Message.Content != "reply from up-b" || out.Model != "m" || out.Usage.TotalTokens != 10 || out.Choices[0].FinishReason != "stop" {
		t.Fatalf("plain = %+v", out)
	}
	if resp.Header.Get("X-Mock-Server") != "up-b" {
		t.Fatalf("X-Mock-Server = %q", resp.Header.Get("X-Mock-Server"))
	}

	p := openai.ChatCompletionNewParams{Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}}
	acc, chunks, err := stream(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	// Three pieces, the finish chunk and the usage chunk.
	if chunks != 5 || acc.Choices[0].Message.Content != "reply from up-b" || acc.Usage.TotalTokens != 10 || acc.Choices[0].Message.Role != "assistant" {
		t.Fatalf("stream: %d chunks, %+v", chunks, acc.ChatCompletion)
	}

	p.Tools = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
		Name: "get_weather", Parameters: openai.FunctionParameters{"type": "object"}})}
	for _, streamed := range []bool{false, true} {
		var calls []openai.ChatCompletionMessageToolCallUnion
		var finish string
		if streamed {
			acc, _, err = stream(ctx, c, p)
			if err == nil {
				calls, finish = acc.Choices[0].Message.ToolCalls, acc.Choices[0].FinishReason
			}
		} else {
			out, err = c.Chat.Completions.New(ctx, p)
			if err == nil {
				calls, finish = out.Choices[0].Message.ToolCalls, out.Choices[0].FinishReason
			}
		}
		if err != nil {
			t.Fatalf("tool call (streamed %v): %v", streamed, err)
		}
		if len(calls) != 1 || calls[0].Function.Name != "get_weather" || calls[0].Function.Arguments != `{"city":"Paris"}` || finish != "tool_calls" {
			t.Fatalf("tool call (streamed %v) = %+v, finish %q", streamed, calls, finish)
		}
	}
	// Tool call ids count the calls answered: call_1, then call_2.
	got := s.Calls()
	if len(got) != 4 || got[2].Answer.ToolCall.ID != "call_1" || got[3].Answer.ToolCall.ID != "call_2" {
		t.Fatalf("recorded %d calls: %+v", len(got), got)
	}
	if s.Served() != 4 {
		t.Fatalf("Served = %d", s.Served())
	}
}

// TestScript checks a script against the official OpenAI client, so that a
// failure of the end-to-end test is never the mock's misunderstanding.
func TestScript(t *testing.T) {
	var sc Script
	s := start(t, Options{Reply: sc.Reply})
	sc.On("tok-tool", func(tr Turn) Answer {
		if len(tr.ToolResults) > 0 {
			return Answer{Text: "result was " + tr.ToolResults[0]}
		}
		return Answer{ToolCall: &ToolCall{Name: "lookup", Arguments: `{"q":"héllo wörld"}`}}
	})
	sc.On("tok-text", func(Turn) Answer { return Answer{Text: "plain ünïcode answer"} })
	ctx := testCtx(t)
	c := client(t, s)

	// Non-streaming text, with the token in an earlier user message and an
	// internal user message after it.
	res, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "m",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("system"),
			openai.UserMessage("context\n\ntok-text please"),
			openai.UserMessage("internal note"),
		},
	})
	if err != nil {
		t.Fatalf("non-streaming: %v", err)
	}
	if got := res.Choices[0].Message.Content; got != "plain ünïcode answer" {
		t.Fatalf("non-streaming text = %q", got)
	}

	// Streaming tool call, reassembled by the client.
	params := openai.ChatCompletionNewParams{
		Model:    "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("tok-tool go")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
			Name: "lookup", Parameters: openai.FunctionParameters{"type": "object"},
		})},
	}
	acc, _, err := stream(ctx, c, params)
	if err != nil {
		t.Fatalf("streaming: %v", err)
	}
	calls := acc.Choices[0].Message.ToolCalls
	if len(calls) != 1 || calls[0].Function.Name != "lookup" {
		t.Fatalf("streamed tool calls = %+v", calls)
	}
	var args map[string]any
	if err := json.Unmarshal([]byte(calls[0].Function.Arguments), &args); err != nil || args["q"] != "héllo wörld" {
		t.Fatalf("streamed arguments = %q (%v)", calls[0].Function.Arguments, err)
	}
	if acc.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("finish reason = %q", acc.Choices[0].FinishReason)
	}

	// After a tool result (and an internal user message), the script answers
	// with text instead of calling the tool again.
	params.Messages = append(params.Messages,
		acc.Choices[0].Message.ToParam(),
		openai.ToolMessage("42", calls[0].ID),
		openai.UserMessage("internal context"),
	)
	acc, _, err = stream(ctx, c, params)
	if err != nil {
		t.Fatalf("streaming after tool: %v", err)
	}
	if got := acc.Choices[0].Message.Content; got != "result was 42" {
		t.Fatalf("answer after tool = %q", got)
	}

	// No script: a fixed answer, recorded without a label.
	res, err = c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	if err != nil || res.Choices[0].Message.Content != Unscripted {
		t.Fatalf("unscripted answer = %v, %v", res, err)
	}

	var tool []Call
	for _, call := range s.Calls() {
		if call.Answer.Label == "tok-tool" {
			tool = append(tool, call)
		}
	}
	if len(tool) != 2 {
		t.Fatalf("tok-tool answered %d requests, want 2", len(tool))
	}
	if auth := tool[0].Header.Get("Authorization"); auth != "Bearer key-1" {
		t.Fatalf("recorded Authorization = %q", auth)
	}
	if !tool[0].Stream || len(tool[0].Tools) != 1 || tool[0].Tools[0] != "lookup" {
		t.Fatalf("recorded request = %+v", tool[0].Request)
	}
	if last := s.Calls()[len(s.Calls())-1]; last.Answer.Label != "" || last.LastUserText() != "hello" {
		t.Fatalf("unscripted call recorded as %+v", last)
	}
}

func TestReplies(t *testing.T) {
	ctx := testCtx(t)
	t.Run("echo, with parts", func(t *testing.T) {
		s := start(t, Options{Reply: Echo("heard: ")})
		out, err := chatNew(t, s, ctx, openai.ChatCompletionNewParams{Model: "m",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("first"), openai.UserMessage([]openai.ChatCompletionContentPartUnionParam{openai.TextContentPart("two"), openai.TextContentPart("parts")})}})
		if err != nil || out.Choices[0].Message.Content != "heard: two\nparts" {
			t.Fatalf("echo = %v, %v", out, err)
		}
	})
	t.Run("fail", func(t *testing.T) {
		s := start(t, Options{Reply: Fail(http.StatusTooManyRequests, "rate_limited", "slow down")})
		_, err := chatNew(t, s, ctx, openai.ChatCompletionNewParams{Model: "m",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
		var ae *openai.Error
		if !errors.As(err, &ae) || ae.StatusCode != 429 || ae.Code != "rate_limited" || ae.Message != "slow down" || ae.Type != "rate_limit_error" {
			t.Fatalf("err = %v", err)
		}
		if len(s.Calls()) != 1 {
			t.Fatalf("a failed request was not recorded")
		}
	})
	t.Run("pieces, raw stream", func(t *testing.T) {
		s := start(t, Options{Reply: Pieces("t0 ", "t1 ", `"quoted" `)})
		events := rawStream(t, s, `{"model":"m","stream":true,"messages":[]}`)
		want := []string{`{"role":"assistant","content":"t0 "}`, `{"content":"t1 "}`, `{"content":"\"quoted\" "}`, `{}`, "[DONE]"}
		if len(events) != len(want) {
			t.Fatalf("events %q", events)
		}
		for i, w := range want {
			if !strings.Contains(events[i], w) {
				t.Errorf("event %d = %s, want it to hold %s", i, events[i], w)
			}
		}
	})
	t.Run("set reply", func(t *testing.T) {
		s := start(t, Options{Name: "n"})
		s.SetReply(Text("changed"))
		if got := plainText(t, s); got != "changed" {
			t.Fatalf("after SetReply: %q", got)
		}
		s.SetReply(nil)
		if got := plainText(t, s); got != "reply from n" {
			t.Fatalf("after SetReply(nil): %q", got)
		}
	})
	t.Run("bad body", func(t *testing.T) {
		s := start(t, Options{})
		resp, err := http.Post(s.URL()+"/chat/completions", "application/json", strings.NewReader("{"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(b), "not a chat request") {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
	})
}

// chatNew sends one plain completion through the official client.
func chatNew(t *testing.T, s *Server, ctx context.Context, p openai.ChatCompletionNewParams) (*openai.ChatCompletion, error) {
	c := client(t, s)
	return c.Chat.Completions.New(ctx, p)
}

func plainText(t *testing.T, s *Server) string {
	t.Helper()
	out, err := chatNew(t, s, testCtx(t), openai.ChatCompletionNewParams{Model: "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Choices[0].Message.Content
}

// rawStream posts body and returns the data of each SSE event.
func rawStream(t *testing.T, s *Server, body string) []string {
	t.Helper()
	resp, err := http.Post(s.URL()+"/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, d)
		}
	}
	return events
}

// Latency and chunk delays hold the answer; a client that leaves is seen.
func TestDelaysAndCancel(t *testing.T) {
	s := start(t, Options{Latency: time.Hour})
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() {
		_, err := chatNew(t, s, ctx, openai.ChatCompletionNewParams{Model: "m",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
		done <- err
	}()
	<-s.Arrived()
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a request held for an hour succeeded")
	}
	select {
	case <-s.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("the cancelled request was not reported")
	}

	slow := start(t, Options{ChunkDelay: 30 * time.Millisecond, Reply: Pieces("a", "b", "c")})
	t0 := time.Now()
	acc, _, err := stream(testCtx(t), client(t, slow), openai.ChatCompletionNewParams{Model: "m",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}})
	if err != nil || acc.Choices[0].Message.Content != "abc" {
		t.Fatalf("slow stream: %q %v", acc.Choices[0].Message.Content, err)
	}
	if took := time.Since(t0); took < 60*time.Millisecond {
		t.Fatalf("three chunks with 30 ms between them took %s", took)
	}
}

// NoRecord keeps nothing but the count.
func TestNoRecord(t *testing.T) {
	s := start(t, Options{NoRecord: true})
	plainText(t, s)
	plainText(t, s)
	if s.Served() != 2 || len(s.Calls()) != 0 {
		t.Fatalf("served %d, recorded %d", s.Served(), len(s.Calls()))
	}
	select {
	case c := <-s.Arrived():
		t.Fatalf("arrival sent without recording: %+v", c)
	default:
	}
}
