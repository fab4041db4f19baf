package mesh

import (
	"context"
	"slices"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracing. A request's trace context travels in its first req frame (a
// req_ext, see ext.go), whatever this node records: a node without a
// TracerProvider still passes on the context its caller put in ctx, so
// nodes further on can join the trace. With one, the node records (names in
// docs/PROTOCOL.md, "Header extensions"):
//
//   - on the origin, an event clawmatrix.mesh.sent on the caller's span when
//     the first request frame leaves the node: its time after the span's
//     start is the end-to-end handshake and the wait in the link's queue.
//     An event, not a span of its own: every span costs a request time
//     (docs/PROTOCOL.md gives the figures), and the caller's span is the
//     one the frame names as parent.
//   - clawmatrix.mesh.relay on each relay: from the frame's arrival to its
//     leaving for the next hop. A relay cannot change the frame, so its span
//     is a sibling of the target's, both children of the caller's span.
//   - clawmatrix.mesh.serve on the target: from the first request frame to
//     the handler's return; the handler's context carries it.
//
// Spans name nodes, methods and error codes, never payload bytes.

// tracerName is the instrumentation scope of the mesh's spans.
const tracerName = "github.com/clawmatrix/clawmatrix/cluster/mesh"

// Span attribute keys of the mesh.
const (
	attrMethod  = attribute.Key("clawmatrix.mesh.method")
	attrPeer    = attribute.Key("clawmatrix.mesh.peer")
	attrFrom    = attribute.Key("clawmatrix.mesh.from")
	attrTo      = attribute.Key("clawmatrix.mesh.to")
	attrNextHop = attribute.Key("clawmatrix.mesh.next_hop")
	attrHops    = attribute.Key("clawmatrix.mesh.hops")
	attrQueued  = attribute.Key("clawmatrix.mesh.queued_bytes")
	attrCode    = attribute.Key("clawmatrix.mesh.code")
	attrError   = attribute.Key("clawmatrix.mesh.error")
)

// speaks reports whether node id announces a protocol feature. This node
// speaks its own.
func (n *Node) speaks(id, feature string) bool {
	if id == n.id {
		return true
	}
	rt := n.routes.Load()
	i, ok := rt.index[id]
	return ok && slices.Contains(rt.peers[i].Features, feature)
}

// sendTrace prepares the trace context of a request Open sends to `to`:
// the extension records for its first frame (nil when ctx carries no trace
// or `to` would not understand them) and the function that notes, on the
// caller's span, that frame leaving or the error that kept it from leaving
// (nil when nothing is recorded).
func (n *Node) sendTrace(ctx context.Context, to string) ([]byte, func(error)) {
	span := trace.SpanFromContext(ctx)
	sc := span.SpanContext()
	if !sc.IsValid() {
		return nil, nil
	}
	var sent func(error)
	if n.tracer != nil && span.IsRecording() {
		sent = func(err error) {
			hops := 0
			if rt := n.routes.Load(); to != n.id {
				if i, ok := rt.index[to]; ok {
					hops = rt.peers[i].Hops
				}
			}
			attrs := trace.WithAttributes(attrPeer.String(to), attrHops.Int(hops))
			if err != nil {
				span.AddEvent("clawmatrix.mesh.not_sent", attrs, trace.WithAttributes(attrError.String(err.Error())))
				return
			}
			span.AddEvent("clawmatrix.mesh.sent", attrs)
		}
	}
	if !n.speaks(to, FeatureTrace) {
		return nil, sent
	}
	return traceRecord(sc), sent
}

// relayTrace starts the span of a traced request frame this node relays to
// next; the returned function ends it when the frame leaves or is dropped
// (nil when nothing is recorded).
func (n *Node) relayTrace(f *Frame, next *link) func(error) {
	sc, ok := extSpanContext(f.Ext)
	if !ok {
		return nil
	}
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), sc)
	_, span := n.tracer.Start(ctx, "clawmatrix.mesh.relay", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attrFrom.String(f.From), attrTo.String(f.To), attrNextHop.String(next.peer), attrQueued.Int(next.q.queued())))
	if !span.IsRecording() {
		return nil
	}
	return func(err error) {
		if err != nil {
			span.SetStatus(codes.Error, "dropped: "+err.Error())
		}
		span.End()
	}
}

// serveTrace returns the handler's context for a request: with the caller's
// trace context as the remote parent, and the serve span when recording.
// The returned function ends the span with the handler's outcome.
func (ss *serverStream) serveTrace(method string) (context.Context, func(error)) {
	n := ss.n
	ctx := ss.ctx
	if ss.parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, ss.parent)
	}
	if n.tracer == nil {
		return ctx, func(error) {}
	}
	ctx, span := n.tracer.Start(ctx, "clawmatrix.mesh.serve", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(ss.arrived),
		trace.WithAttributes(attrMethod.String(method), attrFrom.String(ss.key.from)))
	if !span.IsRecording() {
		return ctx, func(error) {}
	}
	return ctx, func(err error) {
		if err != nil {
			code := CodeInternal
			if re, ok := err.(*RemoteError); ok && re.Code != "" {
				code = re.Code
			}
			span.SetAttributes(attrCode.String(code))
			span.SetStatus(codes.Error, code)
		}
		span.End()
	}
}

// traceArrival is when a request's first frame arrived, for the serve span;
// zero (not measured) when this node records no spans.
func (n *Node) traceArrival() time.Time {
	if n.tracer == nil {
		return time.Time{}
	}
	return time.Now()
}
