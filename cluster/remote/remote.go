// Package remote runs tools and agent turns on other nodes of the cluster.
//
// The caller's side is Client: it resolves the target node (by node id, or by
// the agent a node advertises), sends the request over the mesh and turns
// every outcome, including mesh failures, into a Result the agent can act on.
//
// The target's side is Target, installed on a mesh node by Register. The
// target is in charge of what runs on it: it re-validates the arguments,
// applies its toolProxy policy, caps output, and owns every process it starts
// (exec commands and `openclaw agent` runs), killing whole process groups on
// timeout, cancellation and Close.
//
// Policy: cluster_exec, cluster_read, cluster_write and cluster_tool are tool
// proxy requests and need toolProxy.enabled on the target; their policy names
// are OpenClaw's tool names (exec, read, write, or the tool of cluster_tool).
// cluster_handoff and cluster_send are agent runs, not tool proxy: a node takes
// them for exactly the agents it advertises (its config's agents), whatever
// its toolProxy says, and a node without agents takes none.
package remote

import (
	"encoding/json"
	"strings"
	"time"
)

// Tool names (contract) handled by Client.Call.
const (
	ToolExec    = "cluster_exec"
	ToolRead    = "cluster_read"
	ToolWrite   = "cluster_write"
	ToolTool    = "cluster_tool"
	ToolHandoff = "cluster_handoff"
	ToolSend    = "cluster_send"
)

// Mesh methods served by a Target. The payload is the tool's argument JSON;
// the response is one message holding a wireResult.
const (
	MethodExec    = "remote.exec"
	MethodRead    = "remote.read"
	MethodWrite   = "remote.write"
	MethodTool    = "remote.tool"
	MethodHandoff = "remote.handoff"
	MethodSend    = "remote.send"
)

// Defaults applied when the configuration leaves a value at zero.
const (
	DefaultExecTimeout    = 120 * time.Second
	DefaultMaxTimeout     = 600 * time.Second
	DefaultRunTimeout     = 600 * time.Second
	DefaultMaxOutputBytes = 1 << 20
	DefaultMaxRuns        = 2
)

// Gateway is the local OpenClaw gateway that serves cluster_tool requests.
type Gateway struct {
	// URL is the gateway's base URL, e.g. http://127.0.0.1:18789.
	URL string
	// Token is the gateway's bearer token. It never appears in results or logs.
	Token string
}

// Result is what the calling agent sees. The plugin maps it to
// {content: [{type: "text", text}], details, isError}.
type Result struct {
	Text    string
	Details any
	IsError bool
}

// wireResult is the Result as it crosses the mesh. Details stay raw JSON so
// the caller passes them on without knowing their shape.
type wireResult struct {
	Text    string          `json:"text"`
	Details json.RawMessage `json:"details,omitempty"`
	IsError bool            `json:"isError,omitempty"`
}

func (r Result) wire() ([]byte, error) {
	w := wireResult{Text: r.Text, IsError: r.IsError}
	if r.Details != nil {
		d, err := json.Marshal(r.Details)
		if err != nil {
			return nil, err
		}
		w.Details = d
	}
	return json.Marshal(w)
}

// errorResult is a tool error with a text that says what to do next.
func errorResult(text string) Result {
	return Result{Text: text, IsError: true}
}

// redactor scrubs known secret values from texts that leave the node.
type redactor struct{ secrets []string }

// minSecretLen keeps very short values (which could be ordinary words) from
// being scrubbed out of every output.
const minSecretLen = 6

func newRedactor(secrets ...string) redactor {
	var r redactor
	for _, s := range secrets {
		if len(s) >= minSecretLen {
			r.secrets = append(r.secrets, s)
		}
	}
	return r
}

func (r redactor) text(s string) string {
	for _, secret := range r.secrets {
		if strings.Contains(s, secret) {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	return s
}

func (r redactor) bytes(b []byte) []byte {
	for _, secret := range r.secrets {
		if strings.Contains(string(b), secret) {
			b = []byte(strings.ReplaceAll(string(b), secret, "[redacted]"))
		}
	}
	return b
}

// result scrubs a Result's text and details.
func (r redactor) result(res Result) Result {
	res.Text = r.text(res.Text)
	if len(r.secrets) > 0 && res.Details != nil {
		if raw, err := json.Marshal(res.Details); err == nil {
			if clean := r.bytes(raw); string(clean) != string(raw) {
				res.Details = json.RawMessage(clean)
			}
		}
	}
	return res
}
