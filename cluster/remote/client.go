package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"github.com/clawmatrix/clawmatrix/schema"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Client runs the remote tools for agents on this node.
type Client struct {
	Node *mesh.Node
	// Telemetry records each call (span, metrics, failures in the
	// journal); nil records nothing.
	Telemetry *telemetry.Telemetry
}

// answerGrace is how much longer than the target's own time limit the
// caller waits for an answer, to cover the trip and the kill.
const answerGrace = 30 * time.Second

// Deadlines for tools without a caller-given time limit.
const (
	fileDeadline = fileTimeout + answerGrace
	toolDeadline = DefaultMaxTimeout + answerGrace
)

// Call runs one remote cluster tool (every tool of schema's catalogue with
// a mesh method) on the node its arguments name. The call was decoded and
// checked once, by schema.DecodeToolCall; what travels is call.Raw. Every
// outcome, including mesh failures, comes back as a Result whose text tells
// the agent what happened and what to do next.
func (c *Client) Call(ctx context.Context, call schema.ToolCall) Result {
	if c.Telemetry == nil {
		res, _ := c.call(ctx, call)
		return res
	}
	return c.observedCall(ctx, call)
}

// callOutcome is how a call went, for telemetry: the node it went to (""
// when none was chosen) and a telemetry.Outcome* value.
type callOutcome struct{ node, outcome string }

// call is Call, also saying how the call went.
func (c *Client) call(ctx context.Context, call schema.ToolCall) (Result, callOutcome) {
	failed := callOutcome{outcome: telemetry.OutcomeFailed}
	tool := call.Tool.Name
	if call.Tool.Method == "" || call.Args == nil {
		return errorResult(fmt.Sprintf("%q is not a remote cluster tool; the remote tools are %s", tool, strings.Join(remoteTools(), ", "))), failed
	}
	var to string
	switch a := call.Args.(type) {
	case *schema.HandoffArgs:
		node, err := c.agentNode(a.Agent, a.Node)
		if err != nil {
			return errorResult(err.Error()), failed
		}
		to = node
	default:
		to = targetNode(call.Args)
		if !c.known(to) {
			return errorResult(c.unknownNode(to)), failed
		}
	}

	limit := deadlineFor(call.Args)
	callCtx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	msg, err := c.Node.Call(callCtx, to, call.Tool.Method, call.Raw)
	if err != nil {
		return c.failure(ctx, callCtx, tool, to, limit, err), callOutcome{to, failureOutcome(ctx, callCtx, err)}
	}
	var w wireResult
	if err := json.Unmarshal(msg, &w); err != nil {
		return errorResult(fmt.Sprintf("node %q answered %s with something clawmatrix cannot read (%v); "+
			"it may run an incompatible clawmatrix version", to, tool, err)), callOutcome{to, telemetry.OutcomeFailed}
	}
	res := Result{Text: w.Text, IsError: w.IsError}
	if len(w.Details) > 0 {
		res.Details = w.Details
	}
	if res.IsError {
		return res, callOutcome{to, telemetry.OutcomeToolError}
	}
	return res, callOutcome{to, telemetry.OutcomeOK}
}

// failureOutcome classifies a call that got no answer, as failure does.
func failureOutcome(parent, callCtx context.Context, err error) string {
	var re *mesh.RemoteError
	switch {
	case parent.Err() != nil:
		return telemetry.OutcomeCancelled
	case errors.Is(callCtx.Err(), context.DeadlineExceeded):
		return telemetry.OutcomeTimeout
	case errors.Is(err, mesh.ErrUnknownNode), errors.Is(err, mesh.ErrUnreachable):
		return telemetry.OutcomeUnreachable
	case errors.As(err, &re) && re.Code == mesh.CodeRefused:
		return telemetry.OutcomeRefused
	}
	return telemetry.OutcomeFailed
}

// observedCall is Call with a span around it (the parent of the mesh's)
// and its outcome recorded.
func (c *Client) observedCall(ctx context.Context, call schema.ToolCall) Result {
	start := time.Now()
	var span trace.Span
	if tr := c.Telemetry.Tracer(); tr != nil {
		ctx, span = tr.Start(ctx, "clawmatrix.remote.call", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("clawmatrix.remote.tool", call.Tool.Name)))
	}
	res, out := c.call(ctx, call)
	c.Telemetry.RemoteCall(call.Tool.Name, out.node, out.outcome, time.Since(start))
	if span != nil {
		span.SetAttributes(attribute.String("clawmatrix.remote.node", out.node), attribute.String("clawmatrix.remote.outcome", out.outcome))
		if out.outcome != telemetry.OutcomeOK {
			span.SetStatus(codes.Error, out.outcome)
		}
		span.End()
	}
	return res
}

// remoteTools names the tools of schema's catalogue that run on another node.
func remoteTools() []string {
	var names []string
	for _, t := range schema.Tools() {
		if t.Method != "" {
			names = append(names, t.Name)
		}
	}
	return names
}

// targetNode is the node the arguments of a tool other than handoff name.
func targetNode(args any) string {
	switch a := args.(type) {
	case *schema.ExecArgs:
		return a.Node
	case *schema.ReadArgs:
		return a.Node
	case *schema.WriteArgs:
		return a.Node
	case *schema.ToolArgs:
		return a.Node
	}
	return ""
}

// HandoffWait is how long a cluster_handoff that waits for its answer may
// take, at most, with this timeoutMs (0: the default): the run's limit and
// the trip.
func HandoffWait(timeoutMs int) time.Duration {
	return deadlineFor(&schema.HandoffArgs{TimeoutMs: timeoutMs})
}

// deadlineFor is how long the caller waits for the target's answer.
func deadlineFor(args any) time.Duration {
	switch a := args.(type) {
	case *schema.ExecArgs:
		given := time.Duration(a.TimeoutMs) * time.Millisecond
		if given <= 0 {
			given = DefaultExecTimeout
		}
		return given + answerGrace
	case *schema.HandoffArgs:
		given := time.Duration(a.TimeoutMs) * time.Millisecond
		if given <= 0 {
			given = DefaultRunTimeout
		}
		return given + answerGrace
	case *schema.ToolArgs:
		return toolDeadline
	default:
		return fileDeadline
	}
}

// known reports whether id is this node or a reachable one.
func (c *Client) known(id string) bool {
	if id == c.Node.ID() {
		return true
	}
	_, ok := c.Node.Peer(id)
	return ok
}

// nodeIDs lists this node and every reachable node, sorted.
func (c *Client) nodeIDs() []string {
	ids := []string{c.Node.ID()}
	for _, p := range c.Node.Peers() {
		ids = append(ids, p.NodeID)
	}
	slices.Sort(ids)
	return ids
}

func (c *Client) unknownNode(id string) string {
	return fmt.Sprintf("no node named %q in the cluster; known nodes: %s. Use cluster_peers to see them with their agents and tags.",
		id, strings.Join(c.nodeIDs(), ", "))
}

// agentNode picks the node for a handoff or send: the named node (whose
// first agent takes it when no agent is named), or else the one node that
// advertises the agent.
func (c *Client) agentNode(agent, node string) (string, error) {
	if node != "" {
		if !c.known(node) {
			return "", errors.New(c.unknownNode(node))
		}
		return node, nil
	}
	if agent == "" {
		return "", errors.New(`name the remote agent ("agent") or its node ("node"); cluster_peers lists both`)
	}
	type offer struct{ node, agent string }
	var offers []offer
	add := func(node string, caps mesh.Capabilities) {
		for _, a := range caps.Agents {
			offers = append(offers, offer{node, a.ID})
		}
	}
	add(c.Node.ID(), c.Node.Capabilities())
	for _, p := range c.Node.Peers() {
		add(p.NodeID, p.Capabilities)
	}
	var candidates, all []string
	for _, o := range offers {
		if o.agent == agent {
			candidates = append(candidates, o.node)
		}
		all = append(all, fmt.Sprintf("%s (node %s)", o.agent, o.node))
	}
	slices.Sort(candidates)
	switch {
	case len(candidates) == 1:
		return candidates[0], nil
	case len(candidates) > 1:
		return "", fmt.Errorf("agent %q is offered by several nodes: %s; pass node as well to choose one",
			agent, strings.Join(candidates, ", "))
	case len(all) == 0:
		return "", fmt.Errorf("no node in the cluster offers agent %q; no node offers any agent right now "+
			"(reachable nodes: %s)", agent, strings.Join(c.nodeIDs(), ", "))
	}
	slices.Sort(all)
	return "", fmt.Errorf("no node in the cluster offers agent %q; the agents on offer: %s", agent, strings.Join(all, ", "))
}

// failure explains a request that got no answer.
func (c *Client) failure(parent, callCtx context.Context, tool, node string, limit time.Duration, err error) Result {
	var re *mesh.RemoteError
	switch {
	case parent.Err() != nil:
		return errorResult(fmt.Sprintf("%s on node %q was cancelled; whatever it started there was stopped.", tool, node))
	case errors.Is(callCtx.Err(), context.DeadlineExceeded):
		return errorResult(fmt.Sprintf("no answer from node %q for %s within %s; the request was cancelled there. "+
			"The node may be overloaded; check it with cluster_peers and try again.", node, tool, limit))
	case errors.Is(err, mesh.ErrUnknownNode):
		return errorResult(c.unknownNode(node))
	case errors.Is(err, mesh.ErrUnreachable):
		return errorResult(fmt.Sprintf("node %q became unreachable during %s, before it answered; the request may have "+
			"partly run there. Check cluster_peers, and when the node is back, verify its state before retrying.", node, tool))
	case errors.Is(err, mesh.ErrClosed):
		return errorResult("this node is shutting down, so cluster tools are unavailable now.")
	case errors.As(err, &re):
		switch re.Code {
		case mesh.CodeNoHandler:
			return errorResult(fmt.Sprintf("node %q does not serve %s (its clawmatrix runs without remote tools, "+
				"or is an older version); use another node.", node, tool))
		case mesh.CodeUnavailable:
			return errorResult(re.Message)
		}
		return errorResult(fmt.Sprintf("node %q failed %s: %s", node, tool, re.Message))
	}
	return errorResult(fmt.Sprintf("%s on node %q failed: %v", tool, node, err))
}
