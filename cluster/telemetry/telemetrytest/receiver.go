// Package telemetrytest is an OTLP/HTTP trace collector for tests, as
// net/http/httptest is a server: it decodes each export with the official
// OpenTelemetry protobuf types and keeps the spans.
package telemetrytest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// Span is one received span with its resource's attributes.
type Span struct {
	*tracepb.Span
	Resource map[string]string
}

// TraceID and SpanID are the span's ids in hex; ParentID is "" for a root.
func (s Span) TraceID() string  { return hex.EncodeToString(s.Span.TraceId) }
func (s Span) SpanID() string   { return hex.EncodeToString(s.Span.SpanId) }
func (s Span) ParentID() string { return hex.EncodeToString(s.Span.ParentSpanId) }

// Node is the span's service.instance.id: the node that recorded it.
func (s Span) Node() string { return s.Resource["service.instance.id"] }

// Attr returns a span attribute as text ("" when absent).
func (s Span) Attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return valueText(kv.Value)
		}
	}
	return ""
}

// Event is a span event with its attributes as text.
type Event struct {
	Name  string
	Attrs map[string]string
}

// EventList returns the span's events in order.
func (s Span) EventList() []Event {
	out := make([]Event, 0, len(s.Events))
	for _, e := range s.Events {
		ev := Event{Name: e.Name, Attrs: map[string]string{}}
		for _, kv := range e.Attributes {
			ev.Attrs[kv.Key] = valueText(kv.Value)
		}
		out = append(out, ev)
	}
	return out
}

func valueText(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	}
	return prototext.Format(v)
}

// Receiver is a running collector on 127.0.0.1.
type Receiver struct {
	// URL is the OTLP/HTTP base URL (the config's otel.endpoint).
	URL string
	srv *httptest.Server

	mu      sync.Mutex
	spans   []Span
	headers []http.Header
	dump    strings.Builder
	bad     []string
	changed chan struct{}
}

// Start runs a collector until Close.
func Start() *Receiver {
	r := &Receiver{changed: make(chan struct{})}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.URL = r.srv.URL
	return r
}

// Close stops the collector.
func (r *Receiver) Close() { r.srv.Close() }

func (r *Receiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		r.refuse(w, http.StatusNotFound, fmt.Sprintf("%s %s: only POST /v1/traces is served", req.Method, req.URL.Path))
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.refuse(w, http.StatusUnsupportedMediaType, "content type "+ct+", want application/x-protobuf")
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			r.refuse(w, http.StatusBadRequest, "gzip: "+err.Error())
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		r.refuse(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(raw, &msg); err != nil {
		r.refuse(w, http.StatusBadRequest, "not an ExportTraceServiceRequest: "+err.Error())
		return
	}
	r.mu.Lock()
	r.headers = append(r.headers, req.Header.Clone())
	r.dump.WriteString(prototext.Format(&msg))
	for _, rs := range msg.ResourceSpans {
		res := map[string]string{}
		for _, kv := range rs.GetResource().GetAttributes() {
			res[kv.Key] = valueText(kv.Value)
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				r.spans = append(r.spans, Span{Span: s, Resource: res})
			}
		}
	}
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Write(out)
}

func (r *Receiver) refuse(w http.ResponseWriter, status int, why string) {
	r.mu.Lock()
	r.bad = append(r.bad, why)
	r.mu.Unlock()
	http.Error(w, why, status)
}

// Spans returns every span received so far.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Headers returns the HTTP headers of every export received.
func (r *Receiver) Headers() []http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]http.Header(nil), r.headers...)
}

// Dump is every export received, as protobuf text: what to search for
// strings that must not leave a node.
func (r *Receiver) Dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dump.String()
}

// Refused lists the requests that were not OTLP trace exports.
func (r *Receiver) Refused() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// WaitFor returns once cond holds for the spans received, or ctx's error.
func (r *Receiver) WaitFor(ctx context.Context, cond func([]Span) bool) error {
	for {
		r.mu.Lock()
		ch := r.changed
		ok := cond(r.spans)
		r.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
