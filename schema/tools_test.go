package schema

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestToolsInSpecOrder(t *testing.T) {
	want := []string{"cluster_peers", "cluster_exec", "cluster_read", "cluster_write", "cluster_tool", "cluster_handoff", "cluster_send", "cluster_tasks"}
	if got := ToolNames(); !slices.Equal(got, want) {
		t.Fatalf("ToolNames() = %v, want %v", got, want)
	}
	for i, tool := range Tools() {
		if tool.Name != want[i] || tool.Label == "" || len(tool.Description) < 80 || tool.Args == nil {
			t.Errorf("tool %d (%s): name, label, a real description and Args are all needed: %+v", i, tool.Name, tool)
		}
		if reflect.TypeOf(tool.Args).Kind() != reflect.Pointer {
			t.Errorf("%s: Args must point to the argument struct, got %T", tool.Name, tool.Args)
		}
	}
}

// TestToolParametersArePlainObjectSchemas checks the shape OpenClaw's
// registerTool and model providers accept.
func TestToolParametersArePlainObjectSchemas(t *testing.T) {
	for _, name := range ToolNames() {
		raw := ToolParameters(name)
		var s map[string]any
		if err := json.Unmarshal(raw, &s); err != nil {
			t.Fatalf("%s: parameters are not JSON: %v", name, err)
		}
		if s["type"] != "object" || s["additionalProperties"] != false {
			t.Errorf("%s: want type object with additionalProperties false, got %s", name, raw)
		}
		for _, banned := range []string{`"$ref"`, `"$defs"`, `"$schema"`, `"$id"`} {
			if strings.Contains(string(raw), banned) {
				t.Errorf("%s: parameters contain %s: %s", name, banned, raw)
			}
		}
		props, _ := s["properties"].(map[string]any)
		for prop, v := range props {
			if d, _ := v.(map[string]any)["description"].(string); d == "" {
				t.Errorf("%s.%s has no description", name, prop)
			}
		}
	}
	if ToolParameters("nope") != nil {
		t.Error("ToolParameters of an unknown tool should be nil")
	}
}

func TestToolRequiredArguments(t *testing.T) {
	want := map[string][]string{
		ToolPeers:   nil,
		ToolExec:    {"node", "command"},
		ToolRead:    {"node", "path"},
		ToolWrite:   {"node", "path", "content"},
		ToolTool:    {"node", "tool"},
		ToolHandoff: {"task"},
		ToolSend:    {"message"},
	}
	for name, req := range want {
		var s struct {
			Required []string `json:"required"`
		}
		if err := json.Unmarshal(ToolParameters(name), &s); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Required, req) {
			t.Errorf("%s: required = %v, want %v", name, s.Required, req)
		}
	}
}

func TestDecodeToolCallProblems(t *testing.T) {
	const missingTarget = `missing "agent", "node" or "tags": name the remote agent, the node whose main agent should take it, or tags a node must have (see cluster_peers)`
	tests := []struct {
		tool string
		args string
		want []string
	}{
		{ToolPeers, ``, nil},
		{ToolPeers, `null`, nil},
		{ToolPeers, `{}`, nil},
		{ToolPeers, `{"verbose": true}`, []string{`verbose: unknown field "verbose" (this object takes no fields)`}},
		{ToolExec, `{"node": "b", "command": "ls"}`, nil},
		{ToolExec, `{"node": "b", "command": "ls", "cwd": "/tmp", "timeoutMs": 1}`, nil},
		{ToolExec, `{"node": "b"}`, []string{"command: missing required field"}},
		{ToolExec, `{"node": "b", "command": "ls", "timeoutMs": 0}`, []string{"timeoutMs: must be at least 1 (got 0)"}},
		{ToolExec, `{"node": "b", "command": "ls", "timeoutMs": "5s"}`, []string{"timeoutMs: must be a whole number, not a string"}},
		{ToolExec, `{"node": "", "command": "ls"}`, []string{"node: must not be empty"}},
		{ToolExec, `{"node": "b", "cmd": "ls"}`, []string{"cmd: unknown field \"cmd\" (did you mean \"command\"?)", "command: missing required field"}},
		{ToolRead, `{"node": "b", "path": "/etc/hosts", "offset": 10, "limit": 5}`, nil},
		{ToolRead, `{"node": "b"}`, []string{"path: missing required field"}},
		{ToolWrite, `{"node": "b", "path": "x", "content": ""}`, nil},
		{ToolWrite, `{"node": "b", "path": "x"}`, []string{"content: missing required field"}},
		{ToolWrite, `{"node": "b", "path": "x", "content": "y", "append": "yes"}`, []string{"append: must be true or false, not a string"}},
		{ToolTool, `{"node": "b", "tool": "web_fetch", "args": {"url": "https://example.com"}}`, nil},
		{ToolTool, `{"node": "b", "tool": "web_fetch", "args": "url"}`, []string{"args: must be an object, not a string"}},
		{ToolTool, `{"node": "b"}`, []string{"tool: missing required field"}},
		{ToolHandoff, `{"agent": "coder", "task": "fix the build"}`, nil},
		{ToolHandoff, `{"node": "b", "task": "fix the build", "context": "CI is red", "timeoutMs": 60000}`, nil},
		{ToolHandoff, `{"task": "fix the build"}`, []string{missingTarget}},
		{ToolHandoff, `{}`, []string{missingTarget, "task: missing required field"}},
		{ToolSend, `{"agent": "ops", "message": "disk is full"}`, nil},
		{ToolSend, `{"message": "hi"}`, []string{missingTarget}},
		{ToolSend, `{"tags": ["macos"], "message": "hi", "ttlMs": 60000}`, nil},
		{ToolSend, `{"agent": "ops", "tags": ["macos", "gpu"], "message": "hi"}`, nil},
		{ToolSend, `{"node": "b", "tags": ["macos"], "message": "hi"}`, []string{`tags: give "node" or "tags", not both: tags choose the node`}},
		{ToolSend, `{"tags": [], "message": "hi"}`, []string{"tags: must not be empty"}},
		{ToolSend, `{"tags": [""], "message": "hi"}`, []string{"tags[0]: must not be empty"}},
		{ToolSend, `{"agent": "ops", "message": "hi", "ttlMs": 10}`, []string{"ttlMs: must be at least 1000 (got 10)"}},
		{ToolHandoff, `{"tags": ["gpu"], "task": "train", "wait": false}`, nil},
		{ToolHandoff, `{"agent": "a", "task": "t", "wait": "no"}`, []string{"wait: must be true or false, not a string"}},
		{ToolTasks, `{}`, nil},
		{ToolTasks, `{"id": "m-1", "cancel": true}`, nil},
		{ToolTasks, `{"all": true, "limit": 50}`, nil},
		{ToolTasks, `{"cancel": true}`, []string{`cancel: cancel needs "id": the message or task to cancel (cluster_tasks without arguments lists them)`}},
		{ToolTasks, `{"limit": 500}`, []string{"limit: must be at most 200 (got 500)"}},
		{ToolSend, `["hi"]`, []string{"must be an object, not a list"}},
		{ToolSend, `{"agent": "ops", "message": "hi"`, []string{"arguments are not valid JSON: unexpected end of input"}},
		{"cluster_nope", `{}`, []string{`unknown tool "cluster_nope"; valid tools: cluster_peers, cluster_exec, cluster_read, cluster_write, cluster_tool, cluster_handoff, cluster_send, cluster_tasks`}},
	}
	for _, tt := range tests {
		t.Run(tt.tool+" "+tt.args, func(t *testing.T) {
			call, problems := DecodeToolCall(tt.tool, []byte(tt.args))
			if (problems == nil) != (call.Args != nil) {
				t.Errorf("decoded %+v with problems %v: want arguments exactly when there is no problem", call.Args, problems)
			}
			got := make([]string, len(problems))
			for i, p := range problems {
				got[i] = p.String()
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestValidArgsDecodeIntoArgStructs checks that arguments the schema accepts
// decode into the tool's Args type, field for field, as encoding/json would
// decode them.
func TestValidArgsDecodeIntoArgStructs(t *testing.T) {
	tests := []struct {
		tool string
		args string
		want any
	}{
		{ToolExec, `{"node": "b", "command": "ls", "cwd": "/tmp", "timeoutMs": 5}`, &ExecArgs{Node: "b", Command: "ls", Cwd: "/tmp", TimeoutMs: 5}},
		{ToolExec, `{"node": "b", "command": "ls", "timeoutMs": 1e3}`, &ExecArgs{Node: "b", Command: "ls", TimeoutMs: 1000}},
		{ToolRead, `{"node": "b", "path": "p", "offset": 2, "limit": 3}`, &ReadArgs{Node: "b", Path: "p", Offset: 2, Limit: 3}},
		{ToolWrite, `{"node": "b", "path": "p", "content": "c", "append": true}`, &WriteArgs{Node: "b", Path: "p", Content: "c", Append: true}},
		{ToolTool, `{"node": "b", "tool": "t", "args": {"k": "v", "n": 12345678901234567890}}`, &ToolArgs{Node: "b", Tool: "t", Args: map[string]any{"k": "v", "n": json.Number("12345678901234567890")}}},
		{ToolHandoff, `{"agent": "a", "node": "b", "task": "t", "context": "c", "timeoutMs": 9}`, &HandoffArgs{Agent: "a", Node: "b", Task: "t", Context: "c", TimeoutMs: 9}},
		{ToolSend, `{"agent": "a", "message": "m"}`, &SendArgs{Agent: "a", Message: "m"}},
		{ToolSend, `{"tags": ["x", "y"], "message": "m", "ttlMs": 5000}`, &SendArgs{Tags: []string{"x", "y"}, Message: "m", TTLMs: 5000}},
		{ToolHandoff, `{"agent": "a", "task": "t", "wait": false}`, &HandoffArgs{Agent: "a", Task: "t", Wait: new(bool)}},
		{ToolTasks, `{"id": "t-1", "cancel": true, "limit": 3}`, &TasksArgs{ID: "t-1", Cancel: true, Limit: 3}},
		{ToolPeers, `{}`, &PeersArgs{}},
		{ToolPeers, ``, &PeersArgs{}},
	}
	for _, tt := range tests {
		call, p := DecodeToolCall(tt.tool, []byte(tt.args))
		if p != nil {
			t.Fatalf("%s %s: %v", tt.tool, tt.args, p)
		}
		if !reflect.DeepEqual(call.Args, tt.want) {
			t.Errorf("%s: decoded %+v, want %+v", tt.tool, call.Args, tt.want)
		}
		if call.Tool.Name != tt.tool || (tt.args == "" && string(call.Raw) != "{}") || (tt.args != "" && string(call.Raw) != tt.args) {
			t.Errorf("%s: call %+v, raw %s", tt.tool, call.Tool, call.Raw)
		}
		// What encoding/json makes of the same arguments (numbers kept
		// exact in free-form objects).
		dst := reflect.New(reflect.TypeOf(call.Tool.Args).Elem()).Interface()
		dec := json.NewDecoder(strings.NewReader(string(call.Raw)))
		dec.UseNumber()
		if err := dec.Decode(dst); err == nil && !reflect.DeepEqual(dst, call.Args) && !strings.Contains(tt.args, "1e3") {
			t.Errorf("%s: encoding/json decodes %+v, DecodeToolCall %+v", tt.tool, dst, call.Args)
		}
	}
	// A whole number past 64 bits is refused with its field.
	if _, p := DecodeToolCall(ToolExec, []byte(`{"node": "b", "command": "ls", "timeoutMs": 1e30}`)); len(p) != 1 || p[0].Path != "timeoutMs" {
		t.Errorf("timeoutMs 1e30: problems %v", p)
	}
}

// The registry: the tools that run on another node per call travel by
// their own mesh method; cluster_peers and cluster_tasks are answered by
// the calling node, and cluster_send by its durable outbox. LookupTool finds
// each.
func TestToolMethods(t *testing.T) {
	seen := map[string]bool{}
	for _, tool := range Tools() {
		got, ok := LookupTool(tool.Name)
		if !ok || got.Name != tool.Name {
			t.Errorf("LookupTool(%q) = %+v, %v", tool.Name, got, ok)
		}
		local := tool.Name == ToolPeers || tool.Name == ToolTasks || tool.Name == ToolSend
		if (tool.Method == "") != local {
			t.Errorf("%s: method %q; only cluster_peers, cluster_tasks and cluster_send have none", tool.Name, tool.Method)
		}
		if tool.Method != "" && (seen[tool.Method] || !strings.HasPrefix(tool.Method, "remote.")) {
			t.Errorf("%s: method %q is taken twice or outside remote.*", tool.Name, tool.Method)
		}
		seen[tool.Method] = true
	}
	if _, ok := LookupTool("cluster_nope"); ok {
		t.Error("LookupTool found an unknown tool")
	}
}

func TestToolsReturnsACopy(t *testing.T) {
	ts := Tools()
	ts[0].Name = "changed"
	if Tools()[0].Name != ToolPeers {
		t.Error("Tools() exposes the package's slice")
	}
}
