// Package mesh joins clawmatrix nodes into one cluster over WebSocket links.
//
// A Node accepts and dials authenticated links, gossips the topology so that
// every node knows every reachable node and its capabilities, relays frames
// for nodes that are not adjacent, and carries requests with streamed
// responses between any two nodes. Everything above the mesh (model proxy,
// remote tools, handoff) is built on Handle and Open.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// AgentInfo describes an agent a node offers to the cluster.
type AgentInfo struct {
	ID          string   `json:"id"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
}

// ModelInfo describes a model a node serves to the cluster.
type ModelInfo struct {
	ID          string `json:"id"`
	Provider    string `json:"provider,omitempty"`
	Description string `json:"description,omitempty"`
}

// Capabilities is what a node offers the cluster. It is exchanged in the
// handshake and carried by topology gossip.
type Capabilities struct {
	Agents []AgentInfo `json:"agents"`
	Models []ModelInfo `json:"models"`
	Tags   []string    `json:"tags"`
	// Features are the optional protocol extensions the node understands
	// (e.g. FeatureTrace); the mesh fills in its own. Nodes that predate a
	// field ignore it, being JSON.
	Features []string `json:"features,omitempty"`
	// Load is how busy the node's agents are, for routing work by load;
	// nil until the node announces it.
	Load *Load `json:"load,omitempty"`
}

// Load counts a node's agent turns: running, and waiting to start (for a
// run slot, or in the node's inbox).
type Load struct {
	Running int `json:"running"`
	Queued  int `json:"queued"`
}

// PeerStatus says how this node reaches another node.
type PeerStatus string

const (
	// StatusConnected means a direct, authenticated link.
	StatusConnected PeerStatus = "connected"
	// StatusRelay means the node is reached through other nodes.
	StatusRelay PeerStatus = "relay"
)

// PeerInfo is one reachable node as this node sees it.
type PeerInfo struct {
	NodeID string
	Status PeerStatus
	// Via is the next hop toward the node when Status is StatusRelay.
	Via string
	// Hops is 1 for a direct link.
	Hops int
	// RTT is the round-trip time of the direct link, or of the path to Via
	// plus the hops beyond it when known; zero when not yet measured.
	RTT time.Duration
	Capabilities
}

// Request is a request that arrived from another node.
type Request struct {
	// From is the node that sent the request (its origin, not the last hop).
	From string
	// Method selects the Handler.
	Method string
	// Payload is the request body, as the caller passed it.
	Payload []byte
}

// ResponseWriter streams a response back to the caller.
//
// Each Write delivers one message, in order, to the caller's Stream.Recv.
// Large messages are fragmented on the wire and reassembled, so one big
// message never stalls heartbeats or other streams on the link. Write blocks
// while the caller has not consumed earlier messages (bounded buffering), and
// fails once the caller has cancelled or become unreachable.
type ResponseWriter interface {
	Write(msg []byte) error
}

// Handler serves requests for one method. The context ends when the caller
// cancels, the caller becomes unreachable, or the node closes. Returning nil
// ends the stream normally (the caller sees io.EOF); returning an error ends it
// with a *RemoteError carrying the error's code and message.
type Handler interface {
	ServeMesh(ctx context.Context, w ResponseWriter, r *Request) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, w ResponseWriter, r *Request) error

// ServeMesh calls f(ctx, w, r).
func (f HandlerFunc) ServeMesh(ctx context.Context, w ResponseWriter, r *Request) error {
	return f(ctx, w, r)
}

// Error codes carried by RemoteError.
const (
	CodeNoHandler   = "no_handler"  // the target has no handler for the method
	CodeInternal    = "internal"    // the handler failed with a plain error
	CodeUnavailable = "unavailable" // the handler could not serve now; another node may
	CodeRefused     = "refused"     // the target's policy refused the request
	CodeBadRequest  = "bad_request" // the payload was invalid
	CodeNotFound    = "not_found"   // the thing asked for does not exist on the target
	CodeTimeout     = "timeout"     // the handler's own deadline passed
)

// RemoteError is an error returned by the handler on another node.
type RemoteError struct {
	Node    string `json:"node"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("node %q: %s", e.Node, e.Message)
}

// Errorf makes an error that a Handler returns to give the caller a specific
// code; any other error reaches the caller with CodeInternal.
func Errorf(code, format string, args ...any) error {
	return &RemoteError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrUnknownNode is returned by Open when no route to the node is known.
var ErrUnknownNode = errors.New("unknown node")

// ErrUnreachable is wrapped by the error a Stream returns when the link to the
// target was lost before the response ended.
var ErrUnreachable = errors.New("node became unreachable")

// ErrClosed is returned after the node has been closed.
var ErrClosed = errors.New("mesh node closed")
