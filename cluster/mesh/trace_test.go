package mesh

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// incomingTrace is a trace context as a client of the cluster would send it.
func incomingTrace(t *testing.T, sampled bool) (context.Context, trace.SpanContext) {
	t.Helper()
	tid, err := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	if err != nil {
		t.Fatal(err)
	}
	sid, err := trace.SpanIDFromHex("00f067aa0ba902b7")
	if err != nil {
		t.Fatal(err)
	}
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, Remote: true})
	return trace.ContextWithRemoteSpanContext(context.Background(), sc), sc
}

// tracedConfig is testConfig with spans recorded in rec.
func tracedConfig(id string, rec *tracetest.SpanRecorder) Config {
	c := testConfig(id)
	c.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	return c
}

// spanNamed returns the one ended span of that name.
func spanNamed(t *testing.T, rec *tracetest.SpanRecorder, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	var found []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d ended spans named %s, want 1 (ended: %v)", len(found), name, spanNames(rec.Ended()))
	}
	return found[0]
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	return names
}

// seenTrace is a handler that answers with the payload and reports the
// trace context of its own context.
func seenTrace(got chan<- trace.SpanContext) HandlerFunc {
	return func(ctx context.Context, w ResponseWriter, r *Request) error {
		got <- trace.SpanContextFromContext(ctx)
		return w.Write(r.Payload)
	}
}

// line starts a — b — c with a dialing b and b dialing c, each recording
// its spans in its recorder (nil: no tracer).
func tracedLine(t *testing.T, recs [3]*tracetest.SpanRecorder) (a, b, c *Node) {
	t.Helper()
	var nodes [3]*Node
	for i, id := range []string{"a", "b", "c"} {
		cfg := testConfig(id)
		if recs[i] != nil {
			cfg = tracedConfig(id, recs[i])
		}
		nodes[i] = startNode(t, cfg)
	}
	a, b, c = nodes[0], nodes[1], nodes[2]
	dial(t, a, b)
	dial(t, b, c)
	waitAll(t, nodes[:], 10*time.Second)
	return a, b, c
}

func TestTraceCrossesRelay(t *testing.T) {
	recs := [3]*tracetest.SpanRecorder{tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()}
	a, _, c := tracedLine(t, recs)
	got := make(chan trace.SpanContext, 1)
	c.Handle("echo", seenTrace(got))
	ctx, incoming := incomingTrace(t, true)
	// The caller's own span, as the model proxy or a remote tool makes one.
	ctx, caller := a.cfg.TracerProvider.Tracer("test").Start(ctx, "caller")
	canary := []byte("CANARY-PAYLOAD-7f3e do not record me")
	msg, err := a.Call(ctx, "c", "echo", canary)
	caller.End()
	if err != nil || !bytes.Equal(msg, canary) {
		t.Fatalf("Call = %q, %v", msg, err)
	}
	inHandler := <-got

	send := spanNamed(t, recs[0], "caller")
	relay := spanNamed(t, recs[1], "clawmatrix.mesh.relay")
	// The serve span ends after the handler returns, which may be just
	// after Call returns.
	waitPoll(t, 5*time.Second, "c's serve span", func() bool { return len(recs[2].Ended()) == 1 })
	serve := spanNamed(t, recs[2], "clawmatrix.mesh.serve")

	if n := len(recs[0].Ended()); n != 1 {
		t.Errorf("a recorded %d spans; the caller's own, with an event for the hop, is all it should", n)
	}
	for _, s := range []sdktrace.ReadOnlySpan{relay, serve} {
		if s.Parent().SpanID() != send.SpanContext().SpanID() || s.SpanContext().TraceID() != incoming.TraceID() || !s.Parent().IsRemote() {
			t.Errorf("%s: parent %v (remote %v) in trace %v, want the caller's span %v in %v",
				s.Name(), s.Parent().SpanID(), s.Parent().IsRemote(), s.SpanContext().TraceID(), send.SpanContext().SpanID(), incoming.TraceID())
		}
	}
	if ev := send.Events(); len(ev) != 1 || ev[0].Name != "clawmatrix.mesh.sent" || ev[0].Time.Before(send.StartTime()) {
		t.Errorf("the caller's span has events %+v, want clawmatrix.mesh.sent", ev)
	} else {
		m := map[string]string{}
		for _, kv := range ev[0].Attributes {
			m[string(kv.Key)] = kv.Value.Emit()
		}
		if m["clawmatrix.mesh.peer"] != "c" || m["clawmatrix.mesh.hops"] != "2" {
			t.Errorf("sent event attributes %v", m)
		}
	}
	if inHandler.SpanID() != serve.SpanContext().SpanID() {
		t.Errorf("the handler's context carries span %v, want the serve span %v", inHandler.SpanID(), serve.SpanContext().SpanID())
	}
	if serve.SpanKind() != trace.SpanKindServer {
		t.Errorf("serve span kind %v", serve.SpanKind())
	}
	attrs := func(s sdktrace.ReadOnlySpan) map[string]string {
		m := map[string]string{}
		for _, kv := range s.Attributes() {
			m[string(kv.Key)] = kv.Value.Emit()
		}
		return m
	}
	if m := attrs(relay); m["clawmatrix.mesh.from"] != "a" || m["clawmatrix.mesh.to"] != "c" || m["clawmatrix.mesh.next_hop"] != "c" {
		t.Errorf("relay attributes %v", m)
	}
	if m := attrs(serve); m["clawmatrix.mesh.from"] != "a" || m["clawmatrix.mesh.method"] != "echo" {
		t.Errorf("serve attributes %v", m)
	}
	for _, rec := range recs {
		for _, s := range rec.Ended() {
			for _, kv := range s.Attributes() {
				if strings.Contains(kv.Value.Emit(), "CANARY") {
					t.Errorf("span %s attribute %s holds payload bytes: %s", s.Name(), kv.Key, kv.Value.Emit())
				}
			}
		}
	}
}

// Nodes that record nothing still pass the caller's trace context on, so a
// target that records (or its upstream) joins the caller's trace.
func TestTraceContextPassesThroughUntracedNodes(t *testing.T) {
	a, _, c := tracedLine(t, [3]*tracetest.SpanRecorder{})
	got := make(chan trace.SpanContext, 1)
	c.Handle("echo", seenTrace(got))
	ctx, parent := incomingTrace(t, true)
	if _, err := a.Call(ctx, "c", "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	sc := <-got
	if sc.TraceID() != parent.TraceID() || sc.SpanID() != parent.SpanID() || !sc.IsSampled() || !sc.IsRemote() {
		t.Fatalf("handler's trace context %+v, want the caller's %+v", sc, parent)
	}
	// Without a trace in the caller's context nothing is sent.
	if _, err := a.Call(context.Background(), "c", "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if sc := <-got; sc.IsValid() {
		t.Fatalf("handler got trace context %+v from a call that had none", sc)
	}
}

// A target that does not announce the trace feature (a v2 node from before
// req_ext) gets a plain req: it would drop a req_ext addressed to it.
func TestTraceNotSentToNodeWithoutFeature(t *testing.T) {
	a := startNode(t, testConfig("a"))
	old, err := New(testConfig("old"))
	if err != nil {
		t.Fatal(err)
	}
	old.caps.Features = nil
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	got := make(chan trace.SpanContext, 1)
	old.Handle("echo", seenTrace(got))
	dial(t, a, old)
	waitPeers(t, a, 10*time.Second, "old")
	if a.speaks("old", FeatureTrace) {
		t.Fatal("a believes the old node speaks trace")
	}
	ext, end := a.sendTrace(ctx, "old")
	if ext != nil || end != nil {
		t.Fatalf("sendTrace for a node without the feature: ext %x, end set %v", ext, end != nil)
	}
	tctx, _ := incomingTrace(t, true)
	if ext, _ := a.sendTrace(tctx, "old"); ext != nil {
		t.Fatalf("a would send extensions %x to a node without the feature", ext)
	}
	if ext, _ := a.sendTrace(tctx, "a"); ext == nil {
		t.Fatal("a would not send its own trace context to itself")
	}
	if _, err := a.Call(tctx, "old", "echo", []byte("hi")); err != nil {
		t.Fatalf("a traced call to a node without the feature failed: %v", err)
	}
	if sc := <-got; sc.IsValid() {
		t.Fatalf("the node without the feature got trace context %+v", sc)
	}
}

// Unsampled traces are passed on but not recorded.
func TestTraceUnsampledRecordsNothing(t *testing.T) {
	recs := [3]*tracetest.SpanRecorder{tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder(), tracetest.NewSpanRecorder()}
	a, _, c := tracedLine(t, recs)
	got := make(chan trace.SpanContext, 1)
	c.Handle("echo", seenTrace(got))
	ctx, parent := incomingTrace(t, false)
	if _, err := a.Call(ctx, "c", "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if sc := <-got; sc.TraceID() != parent.TraceID() || sc.IsSampled() {
		t.Fatalf("handler's trace context %+v, want trace %v unsampled", sc, parent.TraceID())
	}
	for i, rec := range recs {
		if n := len(rec.Ended()) + len(rec.Started()); n != 0 {
			t.Errorf("node %d recorded %d spans of an unsampled trace", i, n)
		}
	}
}

func TestTraceLocalRequest(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	a := startNode(t, tracedConfig("a", rec))
	ctx, _ := incomingTrace(t, true)
	ctx, caller := a.cfg.TracerProvider.Tracer("test").Start(ctx, "caller")
	if _, err := a.Open(ctx, "nobody", "echo", nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("Open to an unknown node: %v", err)
	}
	// A request to this node itself is delivered locally.
	a.Handle("echo", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error { return w.Write(r.Payload) }))
	if _, err := a.Call(ctx, "a", "echo", []byte("x")); err != nil {
		t.Fatal(err)
	}
	caller.End()
	waitPoll(t, 5*time.Second, "two spans", func() bool { return len(rec.Ended()) == 2 })
	send, serve := spanNamed(t, rec, "caller"), spanNamed(t, rec, "clawmatrix.mesh.serve")
	if serve.Parent().SpanID() != send.SpanContext().SpanID() {
		t.Fatalf("local serve span's parent %v, want the caller's span %v", serve.Parent().SpanID(), send.SpanContext().SpanID())
	}
	if ev := send.Events(); len(ev) != 1 || ev[0].Name != "clawmatrix.mesh.sent" {
		t.Fatalf("events %+v: want one sent (none for the unknown node)", ev)
	}
}

func TestServeSpanRecordsErrorCode(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	a := startNode(t, testConfig("a"))
	b := startNode(t, tracedConfig("b", rec))
	b.Handle("refuse", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return Errorf(CodeRefused, "secret-ish detail %s", r.Payload)
	}))
	dial(t, a, b)
	waitPeers(t, a, 10*time.Second, "b")
	ctx, _ := incomingTrace(t, true)
	if _, err := a.Call(ctx, "b", "refuse", []byte("CANARY")); err == nil {
		t.Fatal("the refusing handler's error did not arrive")
	}
	waitPoll(t, 5*time.Second, "b's serve span", func() bool { return len(rec.Ended()) == 1 })
	serve := spanNamed(t, rec, "clawmatrix.mesh.serve")
	if serve.Status().Description != CodeRefused {
		t.Fatalf("serve span status %+v, want the code %q only", serve.Status(), CodeRefused)
	}
}
