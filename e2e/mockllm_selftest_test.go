//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestScriptLLM checks the mock against a real OpenAI client, so that a
// failure of the end-to-end test is never the mock's misunderstanding.
func TestScriptLLM(t *testing.T) {
	m := newScriptLLM()
	defer m.Close()
	m.on("tok-tool", func(tr turn) answer {
		if len(tr.ToolResults) > 0 {
			return answer{Text: "result was " + tr.ToolResults[0]}
		}
		return answer{Call: &toolCall{Name: "lookup", Args: map[string]any{"q": "héllo wörld"}}}
	})
	m.on("tok-text", func(turn) answer { return answer{Text: "plain ünïcode answer"} })

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := openai.NewClient(option.WithBaseURL(m.URL()), option.WithAPIKey("key-1"), option.WithMaxRetries(0))

	// Non-streaming text, with the token in an earlier user message and an
	// internal user message after it.
	res, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
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
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
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
	stream = client.Chat.Completions.NewStreaming(ctx, params)
	acc = openai.ChatCompletionAccumulator{}
	for stream.Next() {
		acc.AddChunk(stream.Current())
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("streaming after tool: %v", err)
	}
	if got := acc.Choices[0].Message.Content; got != "result was 42" {
		t.Fatalf("answer after tool = %q", got)
	}

	// No script: a fixed answer, recorded without a token.
	res, err = client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model: "m", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello")},
	})
	if err != nil || res.Choices[0].Message.Content != "mock: no script matches this prompt" {
		t.Fatalf("unscripted answer = %v, %v", res, err)
	}

	got := m.answered("tok-tool")
	if len(got) != 2 {
		t.Fatalf("tok-tool answered %d requests, want 2", len(got))
	}
	if auth := got[0].Header.Get("Authorization"); auth != "Bearer key-1" {
		t.Fatalf("recorded Authorization = %q", auth)
	}
	if !got[0].Chat.Stream || len(got[0].Chat.Tools) != 1 {
		t.Fatalf("recorded request = %+v", got[0].Chat)
	}
}
