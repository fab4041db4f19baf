package proxy

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// What the front reports of each chat completion (README.md,
// Observability): a span per request, with an event per attempt and per
// failover, the metrics and a journal entry. A nil *chatObs (no telemetry)
// records nothing; every method checks.
//
// Attempts are events rather than spans of their own because each span
// costs every request measurable time (README.md, Performance) and the
// request's span is the parent the nodes it reaches record under anyway.
// The node recording a span is in its resource (service.instance.id), so
// spans do not repeat it.

// Error reasons of clawmatrix_proxy_errors_total.
const (
	reasonBadRequest   = "bad_request"     // the request could not be read or parsed
	reasonTooLarge     = "too_large"       // the body was over the limit
	reasonUnknownModel = "unknown_model"   // no node in the cluster serves the model
	reasonUnavailable  = "unavailable"     // no node could serve it now
	reasonTimeout      = "timeout"         // no complete answer in time
	reasonBroken       = "broken"          // the answer broke off after it began
	reasonUpstream     = "upstream_status" // the serving node's upstream answered with an error status
	reasonClientGone   = "client_gone"     // the client left before the answer ended
)

// Failover reasons of clawmatrix_proxy_failovers_total.
const (
	failoverUnreachable = "unreachable"     // the node was or became unreachable before answering
	failoverNodeError   = "node_error"      // the node refused or could not serve (its error came back)
	failoverStatus      = "upstream_status" // its upstream answered 429, 502 or 503
	failoverBrokeOff    = "broke_off"       // it became unreachable before the first byte of its answer
)

// Span attributes of the front.
const (
	attrModel      = attribute.Key("gen_ai.request.model")
	attrServedBy   = attribute.Key("clawmatrix.proxy.node")
	attrAttempt    = attribute.Key("clawmatrix.proxy.attempt")
	attrAttempts   = attribute.Key("clawmatrix.proxy.attempts")
	attrFailover   = attribute.Key("clawmatrix.proxy.failover_reason")
	attrReason     = attribute.Key("clawmatrix.proxy.error_reason")
	attrStream     = attribute.Key("clawmatrix.proxy.stream")
	attrBytes      = attribute.Key("clawmatrix.proxy.response_bytes")
	attrTTFB       = attribute.Key("clawmatrix.proxy.ttfb_ms")
	attrStatusCode = attribute.Key("http.response.status_code")

	attrUpstreamKind  = attribute.Key("clawmatrix.serving.upstream")
	attrUpstreamTTFB  = attribute.Key("clawmatrix.serving.ttfb_ms")
	attrServerAddress = attribute.Key("server.address")
)

// statusClientGone is the code recorded for a request whose client left
// before any answer (nginx's 499).
const statusClientGone = 499

// chatObs observes one chat completion.
type chatObs struct {
	tel     *telemetry.Telemetry
	tracer  trace.Tracer // nil: no spans
	span    trace.Span   // the request's span, nil when not recording
	w       observedWriter
	counted string // the model counted in flight, when inFlight
	flight  bool
	rec     telemetry.ProxyRecord
}

// observeChat starts observing a request; it returns the context the
// request runs in (carrying the client's trace context, and the request's
// span when recording) and the writer to answer through.
func (s *Server) observeChat(w http.ResponseWriter, r *http.Request) (context.Context, http.ResponseWriter, *chatObs) {
	ctx := telemetry.Extract(r.Context(), r.Header)
	if s.tel == nil {
		return ctx, w, nil
	}
	o := &chatObs{tel: s.tel, tracer: s.tel.Tracer(), rec: telemetry.ProxyRecord{Start: time.Now()}}
	o.w = observedWriter{ResponseWriter: w}
	if o.tracer != nil {
		var span trace.Span
		ctx, span = o.tracer.Start(ctx, "clawmatrix.proxy.chat", trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(o.rec.Start))
		if span.IsRecording() {
			o.span = span
		}
	}
	return ctx, &o.w, o
}

// known sets the model once the cluster knows it (so that a label never
// holds an arbitrary client string) and counts the request in flight.
func (o *chatObs) known(model string, stream bool) {
	if o == nil {
		return
	}
	o.rec.Model, o.rec.Stream = model, stream
	o.counted, o.flight = model, true
	o.tel.ProxyStarted(model)
	if o.span != nil {
		o.span.SetAttributes(attrModel.String(model), attrStream.Bool(stream))
	}
}

// fail notes why the request failed, unless a reason is noted already.
func (o *chatObs) fail(reason, msg string) {
	if o == nil || o.rec.Reason != "" {
		return
	}
	o.rec.Reason, o.rec.Error = reason, msg
}

// startAttempt notes attempt n, to node.
func (o *chatObs) startAttempt(n int, node string) {
	if o == nil {
		return
	}
	o.rec.Attempts = n
	if o.span != nil {
		o.span.AddEvent("clawmatrix.proxy.attempt", trace.WithAttributes(attrAttempt.Int(n), attrServedBy.String(node)))
	}
}

// failover notes that node was given up for the next.
func (o *chatObs) failover(node, reason, msg string) {
	if o == nil {
		return
	}
	o.tel.ProxyFailover(o.rec.Model, node, reason, msg)
	if o.span != nil {
		o.span.AddEvent("clawmatrix.proxy.failover", trace.WithAttributes(attrAttempt.Int(o.rec.Attempts), attrServedBy.String(node), attrFailover.String(reason)))
	}
}

// failoverReason classifies an error that ended an attempt before a head.
func failoverReason(err error) string {
	var re *mesh.RemoteError
	switch {
	case errors.Is(err, mesh.ErrUnreachable), errors.Is(err, mesh.ErrUnknownNode):
		return failoverUnreachable
	case errors.As(err, &re):
		return failoverNodeError
	}
	return failoverUnreachable
}

// answered notes the node whose answer goes to the client and its path.
func (o *chatObs) answered(node string, path []string) {
	if o == nil {
		return
	}
	o.rec.Node, o.rec.Path = node, path
}

// finish records the request once its handler returns. A handler that
// aborts the connection (http.ErrAbortHandler) panics through here.
func (o *chatObs) finish(aborting bool) {
	if o == nil {
		return
	}
	rec := &o.rec
	rec.Duration = time.Since(rec.Start)
	rec.Status = o.w.status
	switch {
	case rec.Status != 0:
	case rec.Reason == reasonClientGone:
		rec.Status = statusClientGone
	default:
		rec.Status = http.StatusOK
	}
	rec.Bytes = o.w.bytes
	if !o.w.first.IsZero() {
		rec.TTFB = o.w.first.Sub(rec.Start)
	}
	if aborting {
		o.fail(reasonBroken, "the answer from node "+strconv.Quote(rec.Node)+" broke off after it began")
	}
	if rec.Reason == "" && rec.Status >= 400 {
		rec.Reason, rec.Error = reasonUpstream, "node "+strconv.Quote(rec.Node)+" answered HTTP "+strconv.Itoa(rec.Status)+" from its upstream"
	}
	if o.flight {
		o.tel.ProxyEnded(o.counted)
	}
	o.tel.ProxyDone(*rec)
	if o.span == nil {
		return
	}
	attrs := make([]attribute.KeyValue, 0, 10)
	attrs = append(attrs, attrStatusCode.Int(rec.Status), attrBytes.Int64(rec.Bytes), attrAttempts.Int(rec.Attempts))
	if rec.Node != "" {
		attrs = append(attrs, attrServedBy.String(rec.Node))
	}
	if rec.TTFB > 0 {
		attrs = append(attrs, attrTTFB.Float64(float64(rec.TTFB.Microseconds())/1000))
	}
	if rec.Reason != "" {
		attrs = append(attrs, attrReason.String(rec.Reason))
		o.span.SetStatus(codes.Error, rec.Reason)
	}
	o.span.SetAttributes(attrs...)
	o.span.End()
}

// observedWriter notes the status, the body bytes and when the first of
// them went out.
type observedWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	first  time.Time
}

func (w *observedWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *observedWriter) Write(b []byte) (int, error) {
	if w.first.IsZero() && len(b) > 0 {
		w.first = time.Now()
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Flush passes on to the server's writer, which the front's streams need.
func (w *observedWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *observedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// upstreamObs observes one upstream call on the serving side: the
// clawmatrix_serving_* metrics, and the upstream's details on the span the
// mesh records for the request (clawmatrix.mesh.serve, whose context goes
// to the upstream). The serve span is the serving span: for model.chat the
// handler is the upstream call, and a span of its own would cost as much
// again.
type upstreamObs struct {
	tel    *telemetry.Telemetry
	model  string
	start  time.Time
	span   trace.Span // the serve span, nil when not recording
	status int
	ttfb   time.Duration
}

func (s *Serving) observeUpstream(ctx context.Context, model string, t target) *upstreamObs {
	tel := s.cfg.Telemetry
	if tel == nil {
		return nil
	}
	o := &upstreamObs{tel: tel, model: model, start: time.Now()}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		o.span = span
		span.SetAttributes(attrModel.String(model), attrUpstreamKind.String(t.kind), attrServerAddress.String(urlHost(t.url)))
	}
	return o
}

// headers notes the upstream's answer (nil: none came).
func (o *upstreamObs) headers(resp *http.Response) {
	if o == nil || resp == nil {
		return
	}
	o.status = resp.StatusCode
	o.ttfb = time.Since(o.start)
}

// end records the call with the handler's outcome.
func (o *upstreamObs) end(err error) {
	if o == nil {
		return
	}
	outcome := strconv.Itoa(o.status)
	if o.status == 0 {
		outcome = errorCode(err)
	}
	o.tel.Served(o.model, outcome, o.ttfb)
	if o.span == nil {
		return
	}
	if o.status != 0 {
		o.span.SetAttributes(attrStatusCode.Int(o.status), attrUpstreamTTFB.Float64(float64(o.ttfb.Microseconds())/1000))
	}
	if err == nil && o.status >= 400 {
		o.span.SetStatus(codes.Error, "HTTP "+outcome)
	}
}

// served counts a request the serving side answered without an upstream call.
func (s *Serving) served(model, outcome string) {
	if s.cfg.Telemetry != nil {
		s.cfg.Telemetry.Served(model, outcome, 0)
	}
}

// errorCode is the mesh error code of a handler's error, for outcomes and
// span statuses (never the message, which may quote an upstream).
func errorCode(err error) string {
	var re *mesh.RemoteError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &re) && re.Code != "":
		return re.Code
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	return mesh.CodeInternal
}

// urlHost is the host:port of a URL, without credentials, path or query.
func urlHost(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		raw = raw[i+3:]
	}
	if i := strings.IndexAny(raw, "/?#"); i >= 0 {
		raw = raw[:i]
	}
	if i := strings.LastIndexByte(raw, '@'); i >= 0 {
		raw = raw[i+1:]
	}
	return raw
}
