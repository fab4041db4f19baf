package schema

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"sync"
)

// Tool is one tool offered to agents (README.md, Tools for agents). The
// catalogue (Tools) is the one registry of tools: the manifest's contract,
// openclaw.tools.json, the tools the host registers, the caller's dispatch
// (plugin, by Method) and the target's handlers (cluster/remote, one per
// Method) all come from it.
type Tool struct {
	Name  string
	Label string
	// Description is written for the model: when to use the tool, what comes
	// back, what the arguments mean.
	Description string
	// Args points to the argument struct the tool's parameters are generated
	// from; DecodeToolCall decodes arguments into a new value of that type.
	Args any
	// Method is the mesh method that carries a call to the node that runs
	// it; empty for a tool the calling node answers itself (cluster_peers).
	Method string
}

// Tool names (contract).
const (
	ToolPeers   = "cluster_peers"
	ToolExec    = "cluster_exec"
	ToolRead    = "cluster_read"
	ToolWrite   = "cluster_write"
	ToolTool    = "cluster_tool"
	ToolHandoff = "cluster_handoff"
	ToolSend    = "cluster_send"
	ToolTasks   = "cluster_tasks"
)

// PeersArgs are the arguments of cluster_peers: none.
type PeersArgs struct{}

// ExecArgs are the arguments of cluster_exec.
type ExecArgs struct {
	Node      string `json:"node" jsonschema:"required,minLength=1" jsonschema_description:"Node id to run the command on (see cluster_peers)."`
	Command   string `json:"command" jsonschema:"required,minLength=1" jsonschema_description:"Shell command, run with sh -c on the target node."`
	Cwd       string `json:"cwd,omitempty" jsonschema_description:"Working directory on the target node. Default: that node's OpenClaw workspace."`
	TimeoutMs int    `json:"timeoutMs,omitempty" jsonschema:"minimum=1" jsonschema_description:"Kill the command after this many milliseconds. Default 120000; the target node caps it."`
}

// ReadArgs are the arguments of cluster_read.
type ReadArgs struct {
	Node   string `json:"node" jsonschema:"required,minLength=1" jsonschema_description:"Node id to read the file on."`
	Path   string `json:"path" jsonschema:"required,minLength=1" jsonschema_description:"File path on the target node; relative paths start at that node's OpenClaw workspace."`
	Offset int    `json:"offset,omitempty" jsonschema:"minimum=1" jsonschema_description:"Line number to start reading at (1 = first line). Default 1."`
	Limit  int    `json:"limit,omitempty" jsonschema:"minimum=1" jsonschema_description:"Maximum number of lines to return. Default: to the end of the file, within the node's output cap."`
}

// WriteArgs are the arguments of cluster_write.
type WriteArgs struct {
	Node    string `json:"node" jsonschema:"required,minLength=1" jsonschema_description:"Node id to write the file on."`
	Path    string `json:"path" jsonschema:"required,minLength=1" jsonschema_description:"File path on the target node; relative paths start at that node's OpenClaw workspace. Missing parent directories are created."`
	Content string `json:"content" jsonschema:"required" jsonschema_description:"Text to write."`
	Append  bool   `json:"append,omitempty" jsonschema_description:"Add content to the end of the file instead of replacing it. Default false."`
}

// ToolArgs are the arguments of cluster_tool.
type ToolArgs struct {
	Node string         `json:"node" jsonschema:"required,minLength=1" jsonschema_description:"Node id to run the tool on."`
	Tool string         `json:"tool" jsonschema:"required,minLength=1" jsonschema_description:"Name of the OpenClaw tool on the target node, for example web_fetch."`
	Args map[string]any `json:"args,omitempty" jsonschema_description:"Arguments for that tool, as the tool itself defines them. Default {}."`
}

// HandoffArgs are the arguments of cluster_handoff.
type HandoffArgs struct {
	Agent     string   `json:"agent,omitempty" jsonschema:"minLength=1" jsonschema_description:"Id of the remote agent to give the task to. Give agent, node or tags."`
	Node      string   `json:"node,omitempty" jsonschema:"minLength=1" jsonschema_description:"Node id whose main (first) agent gets the task, when no agent is named. Give agent, node or tags."`
	Tags      []string `json:"tags,omitempty" jsonschema:"minItems=1,minLength=1,maxLength=128" jsonschema_description:"Instead of node: a node having all these tags (on the node or the agent; see cluster_peers), the least busy, then the nearest."`
	Task      string   `json:"task" jsonschema:"required,minLength=1" jsonschema_description:"The task, stated completely: the remote agent sees nothing of this conversation."`
	Context   string   `json:"context,omitempty" jsonschema_description:"Background the remote agent needs: facts, constraints, expected form of the answer. Task and context together may be at most 128 KiB; put longer material in a file with cluster_write and name its path."`
	TimeoutMs int      `json:"timeoutMs,omitempty" jsonschema:"minimum=1" jsonschema_description:"Stop the remote run after this many milliseconds. Default 600000; the target node caps it."`
	Wait      *bool    `json:"wait,omitempty" jsonschema_description:"false: return a task id at once; the result comes later as a new message in this conversation. Default true (wait), turned off by itself when timeoutMs would outlast this call's time limit."`
	TTLMs     int      `json:"ttlMs,omitempty" jsonschema:"minimum=1000" jsonschema_description:"With wait false: expire if not started within this many milliseconds. Default: delivery.ttlMs (24 hours)."`
}

// SendArgs are the arguments of cluster_send.
type SendArgs struct {
	Agent   string   `json:"agent,omitempty" jsonschema:"minLength=1" jsonschema_description:"Id of the remote agent to message. Give agent, node or tags."`
	Node    string   `json:"node,omitempty" jsonschema:"minLength=1" jsonschema_description:"Node id whose main (first) agent gets the message, when no agent is named. Give agent, node or tags."`
	Tags    []string `json:"tags,omitempty" jsonschema:"minItems=1,minLength=1,maxLength=128" jsonschema_description:"Instead of node: a node having all these tags (on the node or the agent; see cluster_peers), the least busy, then the nearest."`
	Message string   `json:"message" jsonschema:"required,minLength=1" jsonschema_description:"The message; the remote agent handles it as a new turn. At most 128 KiB."`
	TTLMs   int      `json:"ttlMs,omitempty" jsonschema:"minimum=1000" jsonschema_description:"Expire if not started within this many milliseconds. Default: delivery.ttlMs (24 hours)."`
}

// TasksArgs are the arguments of cluster_tasks.
type TasksArgs struct {
	ID     string `json:"id,omitempty" jsonschema:"minLength=1" jsonschema_description:"A message or task id (from cluster_send or cluster_handoff): show that one with its result. Default: list them all."`
	Cancel bool   `json:"cancel,omitempty" jsonschema_description:"With id: cancel it. One not started yet never starts; a running one is stopped."`
	All    bool   `json:"all,omitempty" jsonschema_description:"List the messages and tasks of every conversation on this node, not only this one's."`
	Limit  int    `json:"limit,omitempty" jsonschema:"minimum=1,maximum=200" jsonschema_description:"At most this many, newest first. Default 20."`
}

var tools = []Tool{
	{
		Name:  ToolPeers,
		Label: "Cluster peers",
		Description: "Show the clawmatrix cluster: every node this gateway can reach, whether it is connected " +
			"directly or through a relay, its round-trip time, tags, agents (with what they do) and models. " +
			"Use it to find the node or agent for a job before calling the other cluster_ tools. Takes no arguments.",
		Args: &PeersArgs{},
	},
	{
		Name:  ToolExec,
		Label: "Cluster exec",
		Description: "Run one shell command on another node of the cluster and get back its exit code, stdout and stderr. " +
			"Use it for simple operations there (inspect, build, run a script); for multi-step work that needs " +
			"judgement on that machine, use cluster_handoff. The target node must allow remote tools (toolProxy), " +
			"and output beyond its cap is cut with a note.",
		Args:   &ExecArgs{},
		Method: "remote.exec",
	},
	{
		Name:  ToolRead,
		Label: "Cluster read",
		Description: "Read a text file on another node of the cluster and get back its content (a range of lines with " +
			"offset and limit for big files). Says so when the file is binary. The target node must allow remote tools (toolProxy).",
		Args:   &ReadArgs{},
		Method: "remote.read",
	},
	{
		Name:  ToolWrite,
		Label: "Cluster write",
		Description: "Write a text file on another node of the cluster, replacing it atomically, or appending with append: true. " +
			"Returns the number of bytes written. The target node must allow remote tools (toolProxy).",
		Args:   &WriteArgs{},
		Method: "remote.write",
	},
	{
		Name:  ToolTool,
		Label: "Cluster tool",
		Description: "Run any other OpenClaw tool (web_fetch, browser, memory, ...) on another node of the cluster, " +
			"through that node's gateway, and get back the tool's result. Use cluster_exec, cluster_read and " +
			"cluster_write for shell commands and files. The target node must allow the tool (toolProxy), and its " +
			"gateway may still refuse tools it blocks over HTTP.",
		Args:   &ToolArgs{},
		Method: "remote.tool",
	},
	{
		Name:  ToolHandoff,
		Label: "Cluster handoff",
		Description: "Give a task to an agent on another node, for multi-step work on that machine with its tools, files " +
			"and models (cluster_exec, cluster_read or cluster_write for one simple operation). Name the agent, a node (its " +
			"main agent) or tags. State the task completely: the remote agent does not see this conversation. Waits and " +
			"returns the answer; if the node drops meanwhile, the task may have partly run. wait: false (chosen by itself " +
			"when timeoutMs would outlast this call's limit) returns a task id at once: the task is stored here first and " +
			"delivered like cluster_send (kept across restarts and outages of either node, started at most once, in order, " +
			"expired if not started within ttlMs), and its result arrives in this conversation as a new message; " +
			"cluster_tasks shows it meanwhile. Not guaranteed: that it succeeds, or a rerun of a run cut off by a restart " +
			"of the target (reported failed).",
		Args: &HandoffArgs{},
		// The mesh method of a handoff that waits; one that does not goes
		// through the durable outbox (cluster/delivery) like cluster_send.
		Method: "remote.handoff",
	},
	{
		Name:  ToolSend,
		Label: "Cluster send",
		Description: "Send a one-way message to an agent on another node; no answer comes back (cluster_handoff for one). " +
			"Name the agent, a node (its main agent) or tags. It is stored here before the call returns (with its id, " +
			"state queued), even when the node is down, and delivered when the node is reachable, retried across restarts " +
			"and outages of either node; the target stores it, starts it at most once (a repeat is dropped) and starts " +
			"this node's messages to one agent in the order sent. States (cluster_tasks): queued, delivered, started, " +
			"done, failed, expired (not started within ttlMs, default 24 hours), cancelled. Refused at once: an agent no " +
			"node ever offered, a full outbox here, a full inbox at the target. Not guaranteed: that the turn succeeds, or " +
			"a rerun of a run cut off by a restart of the target (reported failed).",
		// No mesh method of its own: the calling node stores it in its
		// durable outbox, which carries it (cluster/delivery).
		Args: &SendArgs{},
	},
	{
		Name:  ToolTasks,
		Label: "Cluster tasks",
		Description: "List the messages (cluster_send) and tasks (cluster_handoff with wait: false) this conversation " +
			"sent, newest first, with their state: queued (here), delivered (at the target), started, done, failed, " +
			"expired or cancelled. id shows one with its result; id with cancel: true cancels it (not started yet: it " +
			"never starts; running: it is stopped); all: true lists every conversation's.",
		Args: &TasksArgs{},
	},
}

// Tools returns the tools in catalogue order (the order of README.md,
// Tools for agents). The slice is a copy; the Args values are shared
// templates: decode into a fresh value of their type.
func Tools() []Tool { return append([]Tool(nil), tools...) }

// ToolNames returns the tool names in catalogue order.
func ToolNames() []string {
	names := make([]string, len(tools))
	for i, t := range tools {
		names[i] = t.Name
	}
	return names
}

// toolSchemas holds each tool's generated parameters and their compiled
// validator, built once.
var toolSchemas = sync.OnceValue(func() map[string]toolSchema {
	out := make(map[string]toolSchema, len(tools))
	for _, t := range tools {
		checkArgTypes(t)
		s := reflectSchema(t.Args)
		s.Version = "" // a plain object schema, as OpenClaw's registerTool takes it
		raw, err := json.Marshal(s)
		if err != nil {
			panic("schema: cannot marshal parameters of " + t.Name + ": " + err.Error())
		}
		out[t.Name] = toolSchema{raw: raw, compiled: mustCompile(t.Name+".json", raw)}
	}
	return out
})

type toolSchema struct {
	raw      json.RawMessage
	compiled *compiled
}

// ToolParameters returns the JSON Schema of the named tool's arguments (a
// plain object schema without $ref or $defs), or nil for an unknown tool.
func ToolParameters(name string) []byte {
	s, ok := toolSchemas()[name]
	if !ok {
		return nil
	}
	return append([]byte(nil), s.raw...)
}

// LookupTool returns the named tool of the catalogue.
func LookupTool(name string) (Tool, bool) {
	for _, t := range tools {
		if t.Name == name {
			return t, true
		}
	}
	return Tool{}, false
}

// ToolCall is one call of a tool, its arguments checked against the tool's
// schema and decoded: each side of a remote call (the caller's sidecar and
// the target node) reads the arguments once, with DecodeToolCall.
type ToolCall struct {
	Tool Tool
	// Args is a new value of the tool's Args type (*ExecArgs, *ReadArgs, ...).
	Args any
	// Raw is the arguments as JSON ({} when none were given), as they go to
	// the node that runs the tool.
	Raw []byte
}

// DecodeToolCall checks args (a JSON object; empty or null counts as {})
// against the named tool's schema and the rules that handoff and send need
// an agent, a node or tags (tags and node exclude each other) and that
// cluster_tasks cancels only a named id, and decodes them into the tool's
// Args type. The JSON
// is parsed once: the checked value itself is decoded. An unknown tool gets
// one problem listing the valid names.
func DecodeToolCall(name string, args []byte) (ToolCall, []Problem) {
	t, ok := LookupTool(name)
	if !ok {
		return ToolCall{}, []Problem{{Message: "unknown tool " + quote(name) + "; valid tools: " + strings.Join(ToolNames(), ", ")}}
	}
	call := ToolCall{Tool: t, Raw: args}
	if trimmed := bytes.TrimSpace(args); len(trimmed) == 0 || string(trimmed) == "null" {
		call.Raw = []byte("{}")
	}
	inst, err := decodeJSON(call.Raw)
	if err != nil {
		return call, []Problem{{Message: "arguments are not valid JSON: " + describeJSONError(call.Raw, err)}}
	}
	problems, _ := validate(toolSchemas()[name].compiled, inst)
	obj, isObject := inst.(map[string]any)
	if isObject && (name == ToolHandoff || name == ToolSend) {
		_, hasAgent := obj["agent"]
		_, hasNode := obj["node"]
		_, hasTags := obj["tags"]
		switch {
		case !hasAgent && !hasNode && !hasTags:
			problems = append(problems, Problem{Message: `missing "agent", "node" or "tags": name the remote agent, the node whose main agent should take it, or tags a node must have (see cluster_peers)`})
		case hasNode && hasTags:
			problems = append(problems, Problem{Path: "tags", Message: `give "node" or "tags", not both: tags choose the node`})
		}
	}
	if isObject && name == ToolTasks {
		_, hasID := obj["id"]
		if c, _ := obj["cancel"].(bool); c && !hasID {
			problems = append(problems, Problem{Path: "cancel", Message: `cancel needs "id": the message or task to cancel (cluster_tasks without arguments lists them)`})
		}
	}
	if !isObject && len(problems) == 0 {
		problems = append(problems, Problem{Message: "must be an object"})
	}
	if len(problems) > 0 {
		return call, sortProblems(problems)
	}
	v := reflect.New(reflect.TypeOf(t.Args).Elem())
	if p := assignArgs(v.Elem(), obj); p != nil {
		return call, []Problem{*p}
	}
	call.Args = v.Interface()
	return call, nil
}

// assignArgs fills an Args struct from a checked JSON object (numbers as
// json.Number). Argument structs hold strings, whole numbers, booleans,
// optional booleans (*bool), lists of strings and free-form objects
// (map[string]any) only; checkArgTypes holds them to it.
func assignArgs(dst reflect.Value, obj map[string]any) *Problem {
	typ := dst.Type()
	for i := range typ.NumField() {
		f := typ.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		raw, ok := obj[key]
		if !ok || raw == nil {
			continue
		}
		field := dst.Field(i)
		switch field.Kind() {
		case reflect.String:
			s, _ := raw.(string)
			field.SetString(s)
		case reflect.Bool:
			b, _ := raw.(bool)
			field.SetBool(b)
		case reflect.Int:
			n, _ := raw.(json.Number)
			v, err := n.Int64()
			if err != nil {
				// The schema takes 1e3 and 2.0 as whole numbers too.
				f, ferr := n.Float64()
				if ferr != nil || f != math.Trunc(f) || f > math.MaxInt64 || f < math.MinInt64 {
					return &Problem{Path: key, Message: "must be a whole number that fits in 64 bits (got " + n.String() + ")"}
				}
				v = int64(f)
			}
			field.SetInt(v)
		case reflect.Map:
			m, _ := raw.(map[string]any)
			field.Set(reflect.ValueOf(m))
		case reflect.Pointer:
			b, _ := raw.(bool)
			field.Set(reflect.ValueOf(&b))
		case reflect.Slice:
			items, _ := raw.([]any)
			list := make([]string, len(items))
			for i, it := range items {
				list[i], _ = it.(string)
			}
			field.Set(reflect.ValueOf(list))
		}
	}
	return nil
}

// checkArgTypes panics when an Args struct has a field assignArgs cannot
// fill: a new tool with such a field fails every test at once.
func checkArgTypes(t Tool) {
	typ := reflect.TypeOf(t.Args).Elem()
	for i := range typ.NumField() {
		f := typ.Field(i)
		switch k := f.Type.Kind(); {
		case k == reflect.String, k == reflect.Bool, k == reflect.Int:
		case f.Type == reflect.TypeFor[map[string]any](), f.Type == reflect.TypeFor[*bool](), f.Type == reflect.TypeFor[[]string]():
		default:
			panic("schema: " + t.Name + " argument " + f.Name + " has type " + f.Type.String() +
				"; tool arguments are strings, ints, bools, *bool, []string or map[string]any (see assignArgs)")
		}
	}
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// ToolCatalogue returns the bytes of openclaw.tools.json: every tool as
// {name, label, description, parameters}, in catalogue order, so the OpenClaw
// adapter can register the tools without starting the sidecar.
func ToolCatalogue() []byte { return toolCatalogueJSON() }

var toolCatalogueJSON = sync.OnceValue(func() []byte {
	type entry struct {
		Name        string          `json:"name"`
		Label       string          `json:"label"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
	}
	entries := make([]entry, len(tools))
	for i, t := range tools {
		entries[i] = entry{t.Name, t.Label, t.Description, toolSchemas()[t.Name].raw}
	}
	return marshalIndent(entries)
})
