package plugin

import (
	"encoding/json"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Host protocol messages (docs/HOST-PROTOCOL.md). Field names are part of
// the contract with the OpenClaw adapter.

// InitializeParams is the host's first request.
type InitializeParams struct {
	Config       json.RawMessage         `json:"config"`
	Host         *HostInfo               `json:"host,omitempty"`
	Gateway      *GatewayInfo            `json:"gateway,omitempty"`
	Providers    map[string]ProviderInfo `json:"providers,omitempty"`
	WorkspaceDir string                  `json:"workspaceDir,omitempty"`
	// StateDir is OpenClaw's state directory; the node keeps its node key
	// and the keys it has pinned under <stateDir>/clawmatrix.
	StateDir string `json:"stateDir,omitempty"`
}

// HostInfo names the host program.
type HostInfo struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// GatewayInfo locates the local OpenClaw gateway.
type GatewayInfo struct {
	Port  int    `json:"port"`
	Token string `json:"token,omitempty"`
}

// ProviderInfo is one OpenClaw model provider from the host's config.
type ProviderInfo struct {
	BaseURL string `json:"baseUrl"`
	API     string `json:"api"`
	APIKey  string `json:"apiKey,omitempty"`
}

// InitializeResult tells the host who this node is, which tools to register
// and how to reach the cluster's models.
type InitializeResult struct {
	NodeID   string         `json:"nodeId"`
	Version  string         `json:"version"` // the sidecar's release (internal/buildinfo), for the host's log
	Tools    []ToolInfo     `json:"tools"`
	Provider ProviderResult `json:"provider"`
}

// ToolInfo describes one tool for registration with the host.
type ToolInfo struct {
	Name        string          `json:"name"`
	Label       string          `json:"label"`
	Description string          `json:"description"`
	Parameters  json.RawMessage `json:"parameters"`
}

// ProviderResult is the "clawmatrix" model provider backed by the local proxy.
type ProviderResult struct {
	ID      string                `json:"id"`
	BaseURL string                `json:"baseUrl"`
	APIKey  string                `json:"apiKey"`
	API     string                `json:"api"`
	Models  []schema.CatalogModel `json:"models"`
}

// ToolCallParams asks the sidecar to run one tool.
type ToolCallParams struct {
	Name      string          `json:"name"`
	Arguments json.RawMessage `json:"arguments"`
	CallID    string          `json:"callId,omitempty"`
	// Session is the OpenClaw session that called the tool, when the host
	// knows it: a cluster_handoff that does not wait brings its result
	// back into it.
	Session *SessionInfo `json:"session,omitempty"`
	// TimeoutMs is how long the host waits for the answer; a
	// cluster_handoff that would wait longer runs in the background.
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
}

// SessionInfo names an OpenClaw session.
type SessionInfo struct {
	Key     string `json:"key"`
	AgentID string `json:"agentId,omitempty"`
}

// TextContent is one block of tool output.
type TextContent struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// ToolCallResult is what the agent sees of a tool call.
type ToolCallResult struct {
	Content []TextContent `json:"content"`
	Details any           `json:"details,omitempty"`
	IsError bool          `json:"isError,omitempty"`
}

// PromptParams identifies the turn a prompt is built for.
type PromptParams struct {
	AgentID    string `json:"agentId,omitempty"`
	SessionKey string `json:"sessionKey,omitempty"`
	// ToolCallForm is how the agent reaches the cluster tools in this
	// turn: "direct", "tool_call" (OpenClaw's tool search, its default) or
	// "code" (tool search's code mode); "direct" when absent.
	ToolCallForm string `json:"toolCallForm,omitempty"`
}

// PromptResult carries text to put before the prompt; empty without peers.
type PromptResult struct {
	PrependContext string `json:"prependContext,omitempty"`
}

// ToolApprovalParams is one tool call OpenClaw is about to run
// (hooks/beforeToolCall, from its before_tool_call hook).
type ToolApprovalParams struct {
	ToolName   string          `json:"toolName"`
	Params     json.RawMessage `json:"params,omitempty"`
	AgentID    string          `json:"agentId,omitempty"`
	SessionKey string          `json:"sessionKey,omitempty"`
}

// ToolApprovalResult says whether the call waits for the user; empty: it
// runs without asking.
type ToolApprovalResult struct {
	RequireApproval *ApprovalRequest `json:"requireApproval,omitempty"`
}

// ApprovalRequest is OpenClaw's requireApproval: the prompt the user
// decides on (docs/HOST-PROTOCOL.md, hooks/beforeToolCall).
type ApprovalRequest struct {
	Title            string   `json:"title"`
	Description      string   `json:"description"`
	Severity         string   `json:"severity"`
	AllowedDecisions []string `json:"allowedDecisions"`
	TimeoutMs        int      `json:"timeoutMs"`
	// TimeoutReason is what the agent is told when no decision came.
	TimeoutReason string `json:"timeoutReason"`
}

// StatusResult is the cluster as this node sees it.
type StatusResult struct {
	NodeID string     `json:"nodeId"`
	Peers  []PeerView `json:"peers"`
}

// PeerView is one reachable node as shown to hosts and agents (its Status
// is a mesh.PeerStatus: "connected" or "relay").
type PeerView struct {
	NodeID string      `json:"nodeId"`
	Status string      `json:"status"`
	Via    string      `json:"via,omitempty"`
	RTTMs  *float64    `json:"rttMs,omitempty"`
	Agents []AgentView `json:"agents"`
	Models []string    `json:"models"`
	Tags   []string    `json:"tags"`
	// Load is the node's agent turns running and queued, as it announces
	// them (what cluster_send and cluster_handoff with tags compare).
	Load *mesh.Load `json:"load,omitempty"`
}

// AgentView is an agent as shown to hosts and agents.
type AgentView struct {
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
}

// LogParams is the sidecar's log notification.
type LogParams struct {
	Level   string `json:"level"`
	Message string `json:"message"`
}
