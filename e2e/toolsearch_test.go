//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/pkoukk/tiktoken-go"
	tiktoken_loader "github.com/pkoukk/tiktoken-go-loader"
)

// The prompt context's call forms (plugin/prompt.go).
const (
	formToolCall = "call them through tool_call"
	formDirect   = "Call them by name"
)

// clusterCall is the model's call of a cluster tool in the form the prompt
// context names for this turn: by name when the tools are in the model's
// tool list, through tool_call when OpenClaw's tool search defers them. A
// prompt that names no form gets no call: the turn then fails its test.
func clusterCall(tr mockllm.Turn, name string, args map[string]any) mockllm.Answer {
	switch {
	case strings.Contains(tr.Prompt, formToolCall):
		return callTool("tool_call", map[string]any{"id": name, "args": args})
	case strings.Contains(tr.Prompt, formDirect):
		return callTool(name, args)
	}
	return mockllm.Answer{Text: "the prompt names no call form for the cluster tools"}
}

// cl100k counts tokens as OpenAI's cl100k_base encoding does (the encoding
// data ships in the Go module, no download).
var cl100k = sync.OnceValues(func() (*tiktoken.Tiktoken, error) {
	tiktoken.SetBpeLoader(tiktoken_loader.NewOfflineLoader())
	return tiktoken.GetEncoding("cl100k_base")
})

func tokens(t *testing.T, s string) int {
	t.Helper()
	enc, err := cl100k()
	if err != nil {
		t.Fatal(err)
	}
	return len(enc.Encode(s, nil, nil))
}

// lineWith returns the line of s that contains part, "" if none.
func lineWith(s, part string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, part) {
			return l
		}
	}
	return ""
}

// testToolSearch: with OpenClaw's tool search on (A, its default) the
// cluster tools are only names in a directory, and the model reaches them
// through tool_call; with it off (B) their schemas are in every request.
// Either way the prompt context names the call form, and one scripted turn
// each shows a call made in that form succeeding with no search or schema
// lookup: two model requests, the call and the answer. The request bodies
// give what each way costs per turn.
func testToolSearch(ctx context.Context, t *testing.T, c *cluster) {
	type measured struct {
		requests []mockllm.Call
		reply    string
	}
	turnOn := func(g *gateway, agent, other string) measured {
		token := "tok-peers-" + g.name + "-" + nonce(t)
		c.llm.on(token, func(tr mockllm.Turn) mockllm.Answer {
			if len(tr.ToolResults) > 0 {
				return mockllm.Answer{Text: "peers said: " + strings.Join(tr.ToolResults, " | ")}
			}
			return clusterCall(tr, "cluster_peers", map[string]any{})
		})
		cctx, cancel := context.WithTimeout(ctx, turnLimit)
		defer cancel()
		got, err := g.agentTurn(cctx, agent, "peers-"+token, "Which nodes are there? "+token)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, other) {
			t.Errorf("the cluster_peers turn on %s answered %q, want it to name %s", g.name, got, other)
		}
		reqs := c.llm.answered(token)
		if len(reqs) != 2 {
			t.Errorf("the cluster_peers turn on %s took %d model requests, want 2 (the call, then the answer)", g.name, len(reqs))
		}
		return measured{reqs, got}
	}
	onA := turnOn(c.a, "main", nodeB)
	onB := turnOn(c.b, bobAgent, nodeA)
	if len(onA.requests) == 0 || len(onB.requests) == 0 {
		t.FailNow()
	}
	a1, b1 := onA.requests[0], onB.requests[0]
	if call := a1.Answer.ToolCall; call == nil || call.Name != "tool_call" || !strings.Contains(call.Arguments, `"id":"cluster_peers"`) {
		t.Errorf("on A (tool search) the call was %+v, want tool_call with id cluster_peers", call)
	}
	if call := b1.Answer.ToolCall; call == nil || call.Name != "cluster_peers" {
		t.Errorf("on B (tool search off) the call was %+v, want cluster_peers by name", call)
	}

	// What the tools cost in a request, as the model receives it.
	var bBody struct {
		Tools []json.RawMessage `json:"tools"`
	}
	if err := json.Unmarshal(b1.Body, &bBody); err != nil {
		t.Fatal(err)
	}
	schemaTokens := map[string]int{}
	for _, raw := range bBody.Tools {
		if name := toolName(raw); slices.Contains(clusterTools, name) {
			schemaTokens[name] = tokens(t, string(raw))
		}
	}
	if len(schemaTokens) != len(clusterTools) {
		t.Fatalf("B's request lists %d cluster tool schemas, want %d", len(schemaTokens), len(clusterTools))
	}
	all, three := 0, 0
	for name, n := range schemaTokens {
		all += n
		if name == "cluster_peers" || name == "cluster_exec" || name == "cluster_handoff" {
			three += n
		}
	}
	directory := 0
	for _, name := range clusterTools {
		line := lineWith(a1.SystemText(), "- "+name+" (clawmatrix)")
		if line == "" {
			t.Errorf("A's tool directory lacks %s", name)
		}
		directory += tokens(t, line+"\n")
	}
	hintA, hintB := lineWith(a1.UserText(), formToolCall), lineWith(b1.UserText(), formDirect)
	if hintA == "" || hintB == "" {
		t.Fatalf("a call form is missing: A %q, B %q", hintA, hintB)
	}
	report := map[string]any{
		"tokenizer":                              "cl100k_base",
		"A first request (tool search) tokens":   tokens(t, string(a1.Body)),
		"A turn total tokens (2 requests)":       tokens(t, string(onA.requests[0].Body)) + tokens(t, string(onA.requests[1].Body)),
		"B first request (direct) tokens":        tokens(t, string(b1.Body)),
		"B turn total tokens (2 requests)":       tokens(t, string(onB.requests[0].Body)) + tokens(t, string(onB.requests[1].Body)),
		"all cluster tool schemas, direct":       all,
		"peers+exec+handoff schemas, direct":     three,
		"all cluster tools in A's directory":     directory,
		"call-form line, tool_call (A)":          tokens(t, hintA),
		"call-form line, direct (B)":             tokens(t, hintB),
		"A first request bytes":                  len(a1.Body),
		"B first request bytes":                  len(b1.Body),
		"peers+exec+handoff schema bytes direct": schemaBytes(bBody.Tools, "cluster_peers", "cluster_exec", "cluster_handoff"),
	}
	line, _ := json.Marshal(report)
	t.Logf("tool search measurements: %s", line)
	for k, v := range report {
		t.Logf("  %-42s %v", k, v)
	}
}

// schemaBytes is the size of the named tools' entries in a request body.
func schemaBytes(raws []json.RawMessage, names ...string) int {
	n := 0
	for _, raw := range raws {
		if slices.Contains(names, toolName(raw)) {
			n += len(raw)
		}
	}
	return n
}

// toolName is the function name of one entry of a request's "tools".
func toolName(raw json.RawMessage) string {
	var tool struct {
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	_ = json.Unmarshal(raw, &tool) // an entry that is not a function tool has no name
	return tool.Function.Name
}
