//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/clawmatrix/clawmatrix/internal/mockllm"
)

// scriptedLLM is the mock model both gateways' agents use: internal/mockllm
// answering by script. A test registers a token with script.On and puts it
// into its prompt (mockllm.Script says why that survives OpenClaw's
// rewriting of a conversation); every request is recorded with its headers
// and raw body, so a test can tell which side sent it and what the prompt
// held.
type scriptedLLM struct {
	*mockllm.Server
	script *mockllm.Script
}

func startScriptedLLM(t *testing.T) *scriptedLLM {
	t.Helper()
	script := &mockllm.Script{}
	srv, err := mockllm.Start(mockllm.Options{Name: "e2e", Reply: script.Reply})
	if err != nil {
		t.Fatal(err)
	}
	return &scriptedLLM{Server: srv, script: script}
}

// on registers the answer for prompts holding token.
func (m *scriptedLLM) on(token string, fn func(mockllm.Turn) mockllm.Answer) { m.script.On(token, fn) }

// answered returns the recorded requests that the script for token answered.
func (m *scriptedLLM) answered(token string) []mockllm.Call {
	var out []mockllm.Call
	for _, c := range m.Calls() {
		if c.Answer.Label == token {
			out = append(out, c)
		}
	}
	return out
}

// summary is one line per recorded request, for failure output.
func (m *scriptedLLM) summary() string {
	var b strings.Builder
	for i, c := range m.Calls() {
		roles := make([]string, 0, len(c.Messages))
		for _, msg := range c.Messages {
			roles = append(roles, msg.Role)
		}
		fmt.Fprintf(&b, "#%d auth=%q ua=%q model=%q stream=%v script=%q roles=%v answer=%+v\n",
			i, redactBearer(c.Header.Get("Authorization")), c.Header.Get("User-Agent"), c.Model, c.Stream, c.Answer.Label, roles, c.Answer)
	}
	return b.String()
}

// callTool is an answer that calls the named tool with args.
func callTool(name string, args map[string]any) mockllm.Answer {
	raw, err := json.Marshal(args)
	if err != nil {
		panic(err) // literal maps of strings and numbers
	}
	return mockllm.Answer{ToolCall: &mockllm.ToolCall{Name: name, Arguments: string(raw)}}
}

// redactBearer keeps only enough of a key to tell keys apart in a log.
func redactBearer(v string) string {
	if len(v) > 16 {
		return v[:16] + "…"
	}
	return v
}
