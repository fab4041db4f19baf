// Package schema holds clawmatrix's contracts with the outside world: the
// plugin config (Go types, the JSON Schema generated from them, and the
// validation that uses that same schema), the OpenClaw manifest, and the
// catalogue of tools offered to agents.
//
// It is the lowest package of the module and imports nothing from it.
package schema

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// PluginID is the OpenClaw plugin id and the id of the model provider the
// sidecar registers.
const PluginID = "clawmatrix"

// Default values of the config (README.md, Configuration). The JSON Schema
// carries the same values as struct tags; TestDefaultsMatchSchema keeps the
// two in step.
const (
	DefaultListenHost        = "0.0.0.0"
	DefaultListenPort        = 19000
	DefaultProxyPort         = 19001
	DefaultMaxOutputBytes    = 1048576
	DefaultMaxTimeoutMs      = 600000
	DefaultOpenclawBin       = "openclaw"
	DefaultMaxConcurrentRuns = 2
	DefaultMaxConcurrentExec = 4
	DefaultPingIntervalMs    = 1000
	DefaultDeadAfterMs       = 4000
	DefaultMessageTTLMs      = 86400000
	DefaultMaxQueued         = 10000
	DefaultMaxInbox          = 10000
	DefaultAPI               = "openai-completions"
	DefaultContextWindow     = 128000
	DefaultMaxTokens         = 4096
)

// APIs lists the model API kinds OpenClaw understands (the model param api).
var APIs = []string{
	"openai-completions",
	"openai-responses",
	"openai-codex-responses",
	"anthropic-messages",
	"google-generative-ai",
	"github-copilot",
	"bedrock-converse-stream",
	"ollama",
}

// nodeIDPattern is the charset of node ids; its length (1..64) is a separate
// keyword so that each failure gets its own plain message.
const nodeIDPattern = `^[A-Za-z0-9._-]*$`

// publicKeyPattern is the text form of a node's Ed25519 public key:
// "ed25519:" and the 32 bytes in base64, standard or URL-safe, the one "="
// of padding optional. The empty string matches too: minLength reports it.
const publicKeyPattern = `^(ed25519:([A-Za-z0-9+/]{43}|[A-Za-z0-9_-]{43})=?|)$`

// Patterns of policy entries, named so that a mismatch gets a plain message.
const (
	toolPolicyPattern = `^ *([*]|[A-Za-z0-9_]+) *$`
	allowFromPattern  = `^([*]|tag:[A-Za-z0-9._:/@+-]+|[A-Za-z0-9._-]+)$`
	envNamePattern    = `^[A-Za-z_][A-Za-z0-9_]*$`
)

// URL scheme patterns, in the schema so that OpenClaw's own config
// validation refuses a wrong scheme before the sidecar starts; the rest of a
// URL's shape is checked in check.
const (
	// The empty string matches too: minLength reports it.
	wsURLPattern   = `^([Ww][Ss][Ss]?://|$)`
	httpURLPattern = `^([Hh][Tt][Tt][Pp][Ss]?://|$)`
)

// Config is the plugin config object (README.md, Configuration):
// plugins.entries.clawmatrix.config in OpenClaw, or the file given to
// `clawmatrix-plugin node --config`.
type Config struct {
	NodeID            string        `json:"nodeId" jsonschema:"required,minLength=1,maxLength=64,pattern=^[A-Za-z0-9._-]*$" jsonschema_description:"Unique name of this node in the cluster: 1-64 letters, digits, '.', '_' or '-'."`
	Secret            string        `json:"secret" jsonschema:"required,minLength=16" jsonschema_description:"Shared cluster secret, at least 16 characters, the same on every node. It lets a node join: a key derived from it is mixed into every link handshake. It is never sent, logged or shown."`
	Listen            bool          `json:"listen" jsonschema:"default=false" jsonschema_description:"Accept inbound peer connections on listenHost:listenPort."`
	ListenHost        string        `json:"listenHost" jsonschema:"minLength=1,default=0.0.0.0" jsonschema_description:"Address to accept peers on when listen is true."`
	ListenPort        int           `json:"listenPort" jsonschema:"minimum=0,maximum=65535,default=19000" jsonschema_description:"Port to accept peers on when listen is true (0 picks a free port)."`
	TLS               *TLS          `json:"tls,omitempty" jsonschema_description:"TLS for the mesh: certFile and keyFile make the listener serve wss://; caFile trusts a private CA when dialing wss:// peers."`
	IdentityFile      string        `json:"identityFile,omitempty" jsonschema:"minLength=1" jsonschema_description:"File holding this node's private key, made on first start. Default: clawmatrix/node.key in OpenClaw's state directory, or, for clawmatrix-plugin node, the config file's path with .key in place of its extension."`
	KnownNodesFile    string        `json:"knownNodesFile,omitempty" jsonschema:"minLength=1" jsonschema_description:"File recording the key each other node was first seen with. Default: beside identityFile, named after it (node.key: node.known_nodes.json)."`
	Trust             []TrustedNode `json:"trust" jsonschema_description:"If not empty, only these nodes may join, each with exactly this public key. If empty, a node's first key is remembered and a different key later is refused."`
	Revoked           []string      `json:"revoked" jsonschema:"minLength=1,maxLength=64,pattern=^[A-Za-z0-9._-]*$,uniqueItems=true" jsonschema_description:"Node ids refused for good, together with the keys they were known by."`
	Peers             []Peer        `json:"peers" jsonschema_description:"Peers to dial. Only one side of a link needs to list the other."`
	Agents            []Agent       `json:"agents" jsonschema_description:"Agents this node offers to the cluster; the first one describes this node's role."`
	Models            []Model       `json:"models" jsonschema_description:"Models this node serves to the cluster."`
	ProxyModels       []ProxyModel  `json:"proxyModels" jsonschema_description:"Models served by other nodes that this node's agents want to use, through the local model proxy as provider clawmatrix."`
	Tags              []string      `json:"tags" jsonschema_description:"Capabilities of this node shown to the cluster (for example gpu, macos)."`
	ProxyPort         int           `json:"proxyPort" jsonschema:"minimum=0,maximum=65535,default=19001" jsonschema_description:"Port of the local OpenAI-compatible model proxy, always bound to 127.0.0.1 (0 picks a free port)."`
	ProxyKey          string        `json:"proxyKey,omitempty" jsonschema:"minLength=1" jsonschema_description:"Bearer key the local model proxy requires. Default: a random key per start, handed to OpenClaw as the provider's apiKey."`
	ToolProxy         ToolProxy     `json:"toolProxy" jsonschema_description:"Remote tool execution on this node, requested by other nodes' agents. Disabled by default."`
	OpenclawBin       string        `json:"openclawBin" jsonschema:"minLength=1,default=openclaw" jsonschema_description:"The OpenClaw CLI used on this node to run handed-off tasks and sent messages."`
	MaxConcurrentRuns int           `json:"maxConcurrentRuns" jsonschema:"minimum=1,default=2" jsonschema_description:"How many handoff or send runs this node executes at once; further runs wait in a queue."`
	Mesh              MeshTiming    `json:"mesh" jsonschema_description:"Failure detection on mesh links: how often to ping, and how long a silent link lives before it is declared dead."`
	Delivery          Delivery      `json:"delivery" jsonschema_description:"Durable delivery of cluster_send messages and cluster_handoff tasks: where they are kept, how long they wait, and how many may wait."`
	AllowFrom         []string      `json:"allowFrom" jsonschema:"default=*,pattern=^([*]|tag:[A-Za-z0-9._:/@+-]+|[A-Za-z0-9._-]+)$" jsonschema_description:"Which cluster members may use what this node offers (remote tools, handoff and send to its agents, and the models it serves): node ids, tag:<tag> for every node announcing that tag, or * for every member (the default). An empty list refuses every caller."`
	OTel              *OTel         `json:"otel,omitempty" jsonschema_description:"OpenTelemetry trace export over OTLP/HTTP; off unless set. In a gateway, the adapter fills it from OpenClaw's diagnostics.otel when it is not set here."`
	Metrics           Metrics       `json:"metrics" jsonschema_description:"Prometheus metrics. They are always served at /metrics on the model proxy's 127.0.0.1 port (bearer proxy key); listen adds an address of its own."`
	Approvals         Approvals     `json:"approvals" jsonschema_description:"Cluster tool calls from this node's agents that wait for the user's approval (OpenClaw's plugin approvals) before they act on another node. None by default."`
}

// DefaultApprovalTimeoutMs is how long a call waits for the user's decision
// unless approvals.timeoutMs says otherwise (OpenClaw's own default).
const DefaultApprovalTimeoutMs = 120000

// Approvals is the caller side's gate on cluster tools: the calls it names
// wait for the user to allow them, once, through OpenClaw's approval
// prompts. The target node's own policy (toolProxy, allowFrom) applies
// on top.
type Approvals struct {
	Tools     []string `json:"tools" jsonschema:"uniqueItems=true" jsonschema_description:"Cluster tools whose every call waits for the user's approval, for example cluster_exec and cluster_write. Empty: no call waits."`
	Nodes     []string `json:"nodes" jsonschema:"uniqueItems=true,minLength=1,maxLength=64,pattern=^[A-Za-z0-9._-]*$" jsonschema_description:"Only calls to these nodes wait; empty: calls to every node wait."`
	TimeoutMs int      `json:"timeoutMs" jsonschema:"minimum=1000,maximum=600000,default=120000" jsonschema_description:"How long a call waits for the decision; without one in time it does not run. At most 600000 (OpenClaw's cap)."`
}

// Gates reports whether a call of tool to node waits for approval. node
// is "" when the call does not say which node it reaches (a handoff to an
// agent no node offers): such a call waits whenever the tool does.
func (a Approvals) Gates(tool, node string) bool {
	if !slices.Contains(a.Tools, tool) {
		return false
	}
	return len(a.Nodes) == 0 || node == "" || slices.Contains(a.Nodes, node)
}

// DefaultSampleRatio is otel.sampleRatio when not set: every trace.
const DefaultSampleRatio = 1.0

// OTel is where a node sends its spans (README.md, Observability).
type OTel struct {
	Endpoint    string            `json:"endpoint" jsonschema:"required,minLength=1,pattern=^([Hh][Tt][Tt][Pp][Ss]?://|$)" jsonschema_description:"Base URL of an OTLP/HTTP (protobuf) collector, for example http://127.0.0.1:4318; spans are posted to <endpoint>/v1/traces."`
	SampleRatio float64           `json:"sampleRatio" jsonschema:"minimum=0,maximum=1,default=1" jsonschema_description:"Share of the traces that start on this node that are recorded, 0 to 1. A request that arrives with a trace context (a traceparent header, or from another node) follows its caller's decision."`
	Headers     map[string]string `json:"headers,omitempty" jsonschema_description:"HTTP headers sent with every export, for example a collector's API key. Treated as secrets: never logged or shown."`
}

// UnmarshalJSON fills sampleRatio when the JSON leaves it out.
func (o *OTel) UnmarshalJSON(b []byte) error {
	type plain OTel
	p := plain{SampleRatio: DefaultSampleRatio}
	err := json.Unmarshal(b, &p)
	*o = OTel(p)
	return err
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `json:"listen,omitempty" jsonschema:"minLength=1" jsonschema_description:"Extra host:port serving /metrics (for example 127.0.0.1:9464, or 0.0.0.0:9464 for a scraper on another machine), with the same bearer key as the proxy: set proxyKey so that the scraper can be given it."`
}

// TLS configures wss:// for the mesh.
type TLS struct {
	CertFile string `json:"certFile,omitempty" jsonschema:"minLength=1" jsonschema_description:"PEM certificate chain served by the listener. Needs keyFile."`
	KeyFile  string `json:"keyFile,omitempty" jsonschema:"minLength=1" jsonschema_description:"PEM private key of certFile."`
	CAFile   string `json:"caFile,omitempty" jsonschema:"minLength=1" jsonschema_description:"PEM CA certificates trusted when dialing wss:// peers, in addition to the system roots."`
}

// TrustedNode is a node allowed to join, with the only key it may use.
type TrustedNode struct {
	NodeID    string `json:"nodeId" jsonschema:"required,minLength=1,maxLength=64,pattern=^[A-Za-z0-9._-]*$" jsonschema_description:"The node's id."`
	PublicKey string `json:"publicKey" jsonschema:"required,minLength=1" jsonschema_description:"The node's public key, as clawmatrix-plugin identity prints it on that node: ed25519: and 44 base64 characters."`
}

// Peer is a node this node dials.
type Peer struct {
	URL    string `json:"url" jsonschema:"required,minLength=1,pattern=^([Ww][Ss][Ss]?://|$)" jsonschema_description:"WebSocket URL of the peer's listener: ws://host:port or wss://host:port."`
	NodeID string `json:"nodeId,omitempty" jsonschema:"minLength=1,maxLength=64,pattern=^[A-Za-z0-9._-]*$" jsonschema_description:"Expected node id of the peer; the link is refused if the peer says otherwise."`
}

// Agent is an OpenClaw agent this node offers to the cluster.
type Agent struct {
	ID          string   `json:"id" jsonschema:"required,minLength=1" jsonschema_description:"OpenClaw agent id on this node."`
	Description string   `json:"description,omitempty" jsonschema_description:"What the agent is good at, shown to other nodes' agents."`
	Tags        []string `json:"tags" jsonschema_description:"Free-form labels for the agent."`
}

// Cost is the price per million tokens, as OpenClaw records it.
type Cost struct {
	Input      float64 `json:"input" jsonschema:"minimum=0,default=0" jsonschema_description:"Price per million input tokens."`
	Output     float64 `json:"output" jsonschema:"minimum=0,default=0" jsonschema_description:"Price per million output tokens."`
	CacheRead  float64 `json:"cacheRead" jsonschema:"minimum=0,default=0" jsonschema_description:"Price per million cached input tokens read."`
	CacheWrite float64 `json:"cacheWrite" jsonschema:"minimum=0,default=0" jsonschema_description:"Price per million input tokens written to the cache."`
}

// ModelParams are the model fields OpenClaw needs to use a model. They are
// embedded in Model and ProxyModel, so in JSON they sit beside id.
type ModelParams struct {
	API           string   `json:"api" jsonschema:"enum=openai-completions,enum=openai-responses,enum=openai-codex-responses,enum=anthropic-messages,enum=google-generative-ai,enum=github-copilot,enum=bedrock-converse-stream,enum=ollama,default=openai-completions" jsonschema_description:"Wire API of the model where it is served. OpenClaw always reaches cluster models through the local proxy, which speaks OpenAI chat completions, so the clawmatrix provider lists every model as openai-completions."`
	ContextWindow int      `json:"contextWindow" jsonschema:"minimum=1,default=128000" jsonschema_description:"Context window in tokens."`
	MaxTokens     int      `json:"maxTokens" jsonschema:"minimum=1,default=4096" jsonschema_description:"Maximum output tokens per response."`
	Reasoning     bool     `json:"reasoning" jsonschema:"default=false" jsonschema_description:"The model produces reasoning output."`
	Input         []string `json:"input" jsonschema:"minItems=1,uniqueItems=true,default=text,enum=text,enum=image" jsonschema_description:"Input kinds the model accepts: text, and image if it sees images."`
	Cost          Cost     `json:"cost" jsonschema_description:"Price per million tokens (zeros if free or unknown)."`
}

// DefaultModelParams returns the default model params (README.md,
// Configuration: model params).
func DefaultModelParams() ModelParams {
	return ModelParams{
		API:           DefaultAPI,
		ContextWindow: DefaultContextWindow,
		MaxTokens:     DefaultMaxTokens,
		Input:         []string{"text"},
	}
}

// AcceptsImages reports whether the model takes image input.
func (m ModelParams) AcceptsImages() bool {
	for _, in := range m.Input {
		if in == "image" {
			return true
		}
	}
	return false
}

// Model is a model this node serves to the cluster.
type Model struct {
	ID          string `json:"id" jsonschema:"required,minLength=1" jsonschema_description:"Model id as clients of the cluster ask for it."`
	Provider    string `json:"provider" jsonschema:"required,minLength=1" jsonschema_description:"OpenClaw provider on this node that runs the model (used when no upstream is set)."`
	Description string `json:"description,omitempty" jsonschema_description:"Display name of the model; the id when empty."`
	ModelParams
	Upstream *Upstream `json:"upstream,omitempty" jsonschema_description:"Send requests for this model straight to an OpenAI-compatible server instead of through OpenClaw."`
	// ServeViaGateway is an explicit opt-in because the gateway fallback
	// is not a plain model call: it runs a whole agent turn, with that
	// agent's tools, for whoever sent the request.
	ServeViaGateway bool `json:"serveViaGateway,omitempty" jsonschema:"default=false" jsonschema_description:"Serve this model through the local OpenClaw gateway when it has no upstream and the host passed no OpenAI-compatible provider for it. Each request then runs a full agent turn of this node's first agent, with that agent's tools, so it is off unless set here."`
}

// DisplayName is the model's description, else its id.
func (m Model) DisplayName() string { return displayName(m.Description, m.ID) }

// UnmarshalJSON fills model params absent from the JSON with their defaults.
func (m *Model) UnmarshalJSON(b []byte) error {
	type plain Model
	p := plain{ModelParams: DefaultModelParams()}
	err := json.Unmarshal(b, &p)
	*m = Model(p)
	return err
}

// ProxyModel is a model served by another node that this node wants to use.
type ProxyModel struct {
	ID          string `json:"id" jsonschema:"required,minLength=1" jsonschema_description:"Model id, as the serving node lists it under models."`
	NodeID      string `json:"nodeId,omitempty" jsonschema:"minLength=1,maxLength=64,pattern=^[A-Za-z0-9._-]*$" jsonschema_description:"Pin the node that serves the model; otherwise any node serving it, least loaded first."`
	Description string `json:"description,omitempty" jsonschema_description:"Display name of the model; the id when empty."`
	ModelParams
}

// DisplayName is the model's description, else its id.
func (m ProxyModel) DisplayName() string { return displayName(m.Description, m.ID) }

// UnmarshalJSON fills model params absent from the JSON with their defaults.
func (m *ProxyModel) UnmarshalJSON(b []byte) error {
	type plain ProxyModel
	p := plain{ModelParams: DefaultModelParams()}
	err := json.Unmarshal(b, &p)
	*m = ProxyModel(p)
	return err
}

func displayName(description, id string) string {
	if description != "" {
		return description
	}
	return id
}

// Upstream is an OpenAI-compatible server that serves a model directly.
type Upstream struct {
	BaseURL   string `json:"baseUrl" jsonschema:"required,minLength=1,pattern=^([Hh][Tt][Tt][Pp][Ss]?://|$)" jsonschema_description:"Base URL of the server's OpenAI API, for example http://127.0.0.1:8000/v1."`
	APIKey    string `json:"apiKey,omitempty" jsonschema:"minLength=1" jsonschema_description:"Bearer key for the server. Prefer apiKeyEnv."`
	APIKeyEnv string `json:"apiKeyEnv,omitempty" jsonschema:"minLength=1" jsonschema_description:"Name of the environment variable holding the bearer key."`
}

// ToolProxy is the policy for tools other nodes run on this node.
type ToolProxy struct {
	Enabled        bool     `json:"enabled" jsonschema:"default=false" jsonschema_description:"Let other nodes run tools on this node."`
	Allow          []string `json:"allow" jsonschema:"pattern=^ *([*]|[A-Za-z0-9_]+) *$" jsonschema_description:"OpenClaw tool names other nodes may run here: exec, read, write, or any tool for cluster_tool. Names are compared in lower case. Empty allows nothing; [\"*\"] allows every tool."`
	Deny           []string `json:"deny" jsonschema:"pattern=^ *([*]|[A-Za-z0-9_]+) *$" jsonschema_description:"OpenClaw tool names refused; deny wins over allow."`
	AllowPaths     []string `json:"allowPaths" jsonschema:"minLength=1" jsonschema_description:"Absolute directories that read, write and exec's cwd may use besides the workspace. Paths are resolved inside these roots: '..' and symlinks cannot leave them."`
	Env            []string `json:"env" jsonschema:"pattern=^[A-Za-z_][A-Za-z0-9_]*$" jsonschema_description:"Names of environment variables passed on to exec commands. Commands otherwise get only PATH, HOME, LANG, USER and TMPDIR, never the gateway's keys."`
	MaxConcurrent  int      `json:"maxConcurrent" jsonschema:"minimum=1,default=4" jsonschema_description:"How many exec commands run at once; a command beyond that is refused with a request to try again."`
	MaxOutputBytes int      `json:"maxOutputBytes" jsonschema:"minimum=1,maximum=16777216,default=1048576" jsonschema_description:"Output beyond this many bytes is cut, with a note saying so (at most 16 MiB, so a result always fits in one mesh message)."`
	MaxTimeoutMs   int      `json:"maxTimeoutMs" jsonschema:"minimum=1,default=600000" jsonschema_description:"Upper bound on the timeoutMs a caller may ask for."`
}

// maxToolNameLen bounds a tool name; OpenClaw's are far shorter.
const maxToolNameLen = 64

var toolNameRE = regexp.MustCompile(`^[a-z0-9_]+$`)

// NormalizeToolName is the one form in which tool names are compared:
// trimmed and lower-case. Names outside [a-z0-9_] are refused rather than
// cleaned up, so no spelling of a denied tool can reach a tool that a
// lenient lookup further on would accept.
func NormalizeToolName(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if len(n) == 0 || len(n) > maxToolNameLen || !toolNameRE.MatchString(n) {
		return "", fmt.Errorf("%q is not a tool name: tool names are 1-%d lower-case letters, digits or '_' (like exec or web_fetch)",
			name, maxToolNameLen)
	}
	return n, nil
}

// policyName is a config entry of allow or deny in compared form; "" for
// an entry that names no tool.
func policyName(entry string) string {
	if strings.TrimSpace(entry) == "*" {
		return "*"
	}
	n, err := NormalizeToolName(entry)
	if err != nil {
		return ""
	}
	return n
}

// Allows reports whether the policy lets other nodes run the named tool.
// Only what allow names runs: an empty allow list runs nothing.
func (p ToolProxy) Allows(tool string) bool {
	if !p.Enabled {
		return false
	}
	name, err := NormalizeToolName(tool)
	if err != nil {
		return false
	}
	for _, d := range p.Deny {
		if n := policyName(d); n == name || n == "*" {
			return false
		}
	}
	for _, a := range p.Allow {
		if n := policyName(a); n == name || n == "*" {
			return true
		}
	}
	return false
}

// Denies reports whether the deny list names tool (or "*").
func (p ToolProxy) Denies(tool string) bool {
	name, err := NormalizeToolName(tool)
	if err != nil {
		return true
	}
	for _, d := range p.Deny {
		if n := policyName(d); n == name || n == "*" {
			return true
		}
	}
	return false
}

// AllowsCaller reports whether an allowFrom list admits the node from,
// which announces tags: "*" admits every member, a node id that node, and
// "tag:<t>" every node announcing tag t.
func AllowsCaller(allowFrom []string, from string, tags []string) bool {
	for _, a := range allowFrom {
		switch {
		case a == "*":
			return true
		case strings.HasPrefix(a, "tag:"):
			if slices.Contains(tags, strings.TrimPrefix(a, "tag:")) {
				return true
			}
		case a == from:
			return true
		}
	}
	return false
}

// MeshTiming sets how fast mesh links detect a dead peer.
type MeshTiming struct {
	PingIntervalMs int `json:"pingIntervalMs" jsonschema:"minimum=1,default=1000" jsonschema_description:"Mean interval between pings on each link (jittered)."`
	DeadAfterMs    int `json:"deadAfterMs" jsonschema:"minimum=1,default=4000" jsonschema_description:"A link with no pong for this long is declared dead. Must exceed pingIntervalMs."`
}

// Delivery bounds the durable outbox (messages this node sends) and inbox
// (messages this node's agents receive).
type Delivery struct {
	File      string `json:"file,omitempty" jsonschema:"minLength=1" jsonschema_description:"File holding the outbox, the inbox and the nodes and agents this node has seen. Default: beside identityFile, named after it (node.key: node.delivery.db)."`
	TTLMs     int    `json:"ttlMs" jsonschema:"minimum=1000,default=86400000" jsonschema_description:"A message or task that has not started within this many milliseconds of being sent expires. A call may ask for less or more with its own ttlMs."`
	MaxQueued int    `json:"maxQueued" jsonschema:"minimum=1,default=10000" jsonschema_description:"How many messages this node holds for other nodes that have not reached them yet; a send beyond that is refused."`
	MaxInbox  int    `json:"maxInbox" jsonschema:"minimum=1,default=10000" jsonschema_description:"How many messages this node holds for its agents that have not started yet; a message beyond that is refused, and the sender says so."`
}

// defaultConfig is the starting point Parse decodes over, so that every field
// absent from the JSON keeps its default while explicit values (even 0 for a
// port) are kept.
func defaultConfig() Config {
	return Config{
		ListenHost:        DefaultListenHost,
		ListenPort:        DefaultListenPort,
		ProxyPort:         DefaultProxyPort,
		ToolProxy:         ToolProxy{MaxOutputBytes: DefaultMaxOutputBytes, MaxTimeoutMs: DefaultMaxTimeoutMs, MaxConcurrent: DefaultMaxConcurrentExec},
		AllowFrom:         []string{"*"},
		OpenclawBin:       DefaultOpenclawBin,
		MaxConcurrentRuns: DefaultMaxConcurrentRuns,
		Mesh:              MeshTiming{PingIntervalMs: DefaultPingIntervalMs, DeadAfterMs: DefaultDeadAfterMs},
		Approvals:         Approvals{TimeoutMs: DefaultApprovalTimeoutMs},
		Delivery:          Delivery{TTLMs: DefaultMessageTTLMs, MaxQueued: DefaultMaxQueued, MaxInbox: DefaultMaxInbox},
	}
}

// fillEmpty turns absent lists into empty ones, so the config reads and
// marshals the same whether or not a list was written out.
func (c *Config) fillEmpty() {
	orEmpty := func(s *[]string) {
		if *s == nil {
			*s = []string{}
		}
	}
	if c.Trust == nil {
		c.Trust = []TrustedNode{}
	}
	orEmpty(&c.Revoked)
	if c.Peers == nil {
		c.Peers = []Peer{}
	}
	if c.Agents == nil {
		c.Agents = []Agent{}
	}
	if c.Models == nil {
		c.Models = []Model{}
	}
	if c.ProxyModels == nil {
		c.ProxyModels = []ProxyModel{}
	}
	orEmpty(&c.Tags)
	orEmpty(&c.ToolProxy.Allow)
	orEmpty(&c.ToolProxy.Deny)
	orEmpty(&c.ToolProxy.AllowPaths)
	orEmpty(&c.ToolProxy.Env)
	orEmpty(&c.AllowFrom)
	orEmpty(&c.Approvals.Tools)
	orEmpty(&c.Approvals.Nodes)
	for i := range c.Agents {
		orEmpty(&c.Agents[i].Tags)
	}
}

// normalize puts tool names in the form the policy compares them in, so
// that the config in use reads as it is enforced.
func (c *Config) normalize() {
	for _, list := range [][]string{c.ToolProxy.Allow, c.ToolProxy.Deny} {
		for i, e := range list {
			if n := policyName(e); n != "" {
				list[i] = n
			}
		}
	}
}

// Gateway locates the local OpenClaw gateway, as the host hands it to the
// sidecar in initialize (docs/HOST-PROTOCOL.md): the gateway serves
// cluster_tool requests and, for models with serveViaGateway, model turns.
// The token never appears in results, logs or errors.
type Gateway struct {
	// URL is the gateway's base URL, e.g. http://127.0.0.1:18789.
	URL   string
	Token string
}

// CatalogModel is one model as OpenClaw's provider catalogue lists it.
type CatalogModel struct {
	ID            string   `json:"id"`
	Name          string   `json:"name"`
	API           string   `json:"api"`
	Reasoning     bool     `json:"reasoning"`
	Input         []string `json:"input"`
	Cost          Cost     `json:"cost"`
	ContextWindow int      `json:"contextWindow"`
	MaxTokens     int      `json:"maxTokens"`
}

// CatalogModels returns the models this node offers its OpenClaw as provider
// clawmatrix: models, then proxyModels, by id, the first entry of an id
// winning (docs/HOST-PROTOCOL.md, initialize: provider.models). Every field
// is filled (DefaultModelParams for any left zero, name = description or
// id), so a config built in code and one parsed from JSON give the same list.
func (c *Config) CatalogModels() []CatalogModel {
	out := make([]CatalogModel, 0, len(c.Models)+len(c.ProxyModels))
	seen := make(map[string]bool, cap(out))
	def := DefaultModelParams()
	add := func(id, name string, p ModelParams) {
		if seen[id] {
			return
		}
		seen[id] = true
		m := CatalogModel{
			// The proxy is what OpenClaw talks to, whatever p.API says.
			ID: id, Name: name, API: DefaultAPI, Reasoning: p.Reasoning,
			Input: append([]string(nil), p.Input...), Cost: p.Cost,
			ContextWindow: p.ContextWindow, MaxTokens: p.MaxTokens,
		}
		if m.ContextWindow <= 0 {
			m.ContextWindow = def.ContextWindow
		}
		if m.MaxTokens <= 0 {
			m.MaxTokens = def.MaxTokens
		}
		if len(m.Input) == 0 {
			m.Input = append([]string(nil), def.Input...)
		}
		out = append(out, m)
	}
	for _, m := range c.Models {
		add(m.ID, m.DisplayName(), m.ModelParams)
	}
	for _, m := range c.ProxyModels {
		add(m.ID, m.DisplayName(), m.ModelParams)
	}
	return out
}

// Redacted returns a copy with every secret (the cluster secret, the proxy
// key, upstream API keys, otel header values) replaced, for printing or
// logging a config.
func (c Config) Redacted() Config {
	const mask = "[redacted]"
	if c.Secret != "" {
		c.Secret = mask
	}
	if c.ProxyKey != "" {
		c.ProxyKey = mask
	}
	if c.OTel != nil && len(c.OTel.Headers) > 0 {
		o := *c.OTel
		o.Headers = make(map[string]string, len(c.OTel.Headers))
		for k := range c.OTel.Headers {
			o.Headers[k] = mask
		}
		c.OTel = &o
	}
	models := make([]Model, len(c.Models))
	for i, m := range c.Models {
		if m.Upstream != nil && m.Upstream.APIKey != "" {
			u := *m.Upstream
			u.APIKey = mask
			m.Upstream = &u
		}
		models[i] = m
	}
	if c.Models != nil {
		c.Models = models
	}
	return c
}
