package telemetry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry/telemetrytest"
	"github.com/clawmatrix/clawmatrix/internal/buildinfo"
	"github.com/clawmatrix/clawmatrix/schema"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestSpansReachTheCollector(t *testing.T) {
	for _, tc := range []struct {
		ratio        float64
		withParent   bool
		wantExported bool
	}{
		{1, false, true},
		{0, false, false}, // a trace starting here, not sampled
		{0, true, true},   // the caller sampled it: followed
	} {
		rcv := telemetrytest.Start()
		tel, err := New(Options{NodeID: "n1", OTel: &schema.OTel{Endpoint: rcv.URL + "/", SampleRatio: tc.ratio, Headers: map[string]string{"X-Key": "k"}}})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if tc.withParent {
			ctx = Extract(ctx, http.Header{"Traceparent": {traceparent}})
		}
		_, span := tel.Tracer().Start(ctx, "work")
		span.End()
		if err := tel.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		spans := rcv.Spans()
		rcv.Close()
		if got := len(spans) == 1; got != tc.wantExported {
			t.Errorf("ratio %v, parent %v: %d spans exported", tc.ratio, tc.withParent, len(spans))
			continue
		}
		if !tc.wantExported {
			continue
		}
		s := spans[0]
		if s.Name != "work" || s.Resource["service.name"] != "clawmatrix" || s.Resource["service.instance.id"] != "n1" || s.Resource["service.version"] != buildinfo.Version() {
			t.Errorf("span %s, resource %v", s.Name, s.Resource)
		}
		if tc.withParent && (s.TraceID() != "4bf92f3577b34da6a3ce929d0e0e4736" || s.ParentID() != "00f067aa0ba902b7") {
			t.Errorf("span in trace %s under %s, want the incoming parent", s.TraceID(), s.ParentID())
		}
		if h := rcv.Headers(); len(h) == 0 || h[0].Get("X-Key") != "k" {
			t.Errorf("export headers %v", h)
		}
	}
}

func TestExtractInject(t *testing.T) {
	ctx := Extract(context.Background(), http.Header{"Traceparent": {traceparent}})
	if sc := trace.SpanContextFromContext(ctx); !sc.IsValid() || !sc.IsRemote() || !sc.IsSampled() {
		t.Fatalf("extracted %+v", sc)
	}
	out := http.Header{}
	Inject(ctx, out)
	if out.Get("Traceparent") != traceparent {
		t.Fatalf("injected %q", out.Get("Traceparent"))
	}
	for _, bad := range []string{"", "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"} {
		ctx := Extract(context.Background(), http.Header{"Traceparent": {bad}})
		out := http.Header{}
		Inject(ctx, out)
		if v := out.Get("Traceparent"); v != "" {
			t.Errorf("traceparent %q passed on as %q", bad, v)
		}
	}
}

func TestNilTelemetry(t *testing.T) {
	var tel *Telemetry
	if tel.TracerProvider() != nil || tel.Tracer() != nil || tel.Close(context.Background()) != nil {
		t.Fatal("a nil Telemetry is not off")
	}
	off, err := New(Options{NodeID: "n"})
	if err != nil {
		t.Fatal(err)
	}
	if off.TracerProvider() != nil || off.Tracer() != nil {
		t.Fatal("telemetry without otel records spans")
	}
	off.Close(context.Background())
}

func TestJournalKeepsTheLatest(t *testing.T) {
	j := newJournal(3)
	for i := range 5 {
		j.addRequest(ProxyRecord{Model: fmt.Sprint(i), Path: []string{"a"}})
		j.addError(ErrorEntry{Message: fmt.Sprint(i)})
	}
	var got []string
	for _, r := range j.Requests() {
		got = append(got, r.Model)
	}
	if !slices.Equal(got, []string{"4", "3", "2"}) {
		t.Fatalf("requests newest first: %v", got)
	}
	got = nil
	for _, e := range j.Errors() {
		got = append(got, e.Message)
	}
	if !slices.Equal(got, []string{"4", "3", "2"}) {
		t.Fatalf("errors newest first: %v", got)
	}
}

func TestPeerMemory(t *testing.T) {
	m := newPeerMemory("self")
	j := newJournal(10)
	t0 := time.Unix(1000, 0)
	m.update([]mesh.PeerInfo{{NodeID: "b", Status: mesh.StatusConnected}, {NodeID: "c", Status: mesh.StatusRelay, Via: "b"}}, t0, j)
	m.update([]mesh.PeerInfo{{NodeID: "b", Status: mesh.StatusConnected}}, t0.Add(time.Second), j)
	l := m.list()
	if len(l) != 2 || !l[0].Reachable || l[1].Reachable || l[1].Since != t0.Add(time.Second) || l[1].LastSeen != t0 || l[1].Last.Via != "b" {
		t.Fatalf("after c left: %+v", l)
	}
	if e := j.Errors(); len(e) != 1 || e[0].Node != "c" || e[0].Kind != "peer" {
		t.Fatalf("journal: %+v", e)
	}
	m.update([]mesh.PeerInfo{{NodeID: "b"}, {NodeID: "c"}}, t0.Add(2*time.Second), j)
	if l := m.list(); !l[1].Reachable || l[1].Since != t0.Add(2*time.Second) {
		t.Fatalf("after c came back: %+v", l)
	}
	for i := range maxKnownPeers + 10 {
		m.update([]mesh.PeerInfo{{NodeID: fmt.Sprintf("n%d", i)}}, t0.Add(time.Duration(3+i)*time.Second), nil)
	}
	if n := len(m.list()); n > maxKnownPeers {
		t.Fatalf("%d peers remembered, at most %d", n, maxKnownPeers)
	}
}

// BenchmarkSpan is what one span like the model proxy's costs in the
// OpenTelemetry SDK: started with two attributes, an event, five more
// attributes, ended; without export, and exported over OTLP/HTTP to a
// collector that drops what it gets (the batch processor drops spans when
// its queue is full, as it does under this loop).
func BenchmarkSpan(b *testing.B) {
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	defer sink.Close()
	for _, tc := range []struct {
		name string
		otel *schema.OTel
	}{
		{"not exported", nil},
		{"exported", &schema.OTel{Endpoint: sink.URL, SampleRatio: 1}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var tp trace.TracerProvider = sdktrace.NewTracerProvider()
			if tc.otel != nil {
				tel, err := New(Options{NodeID: "n", OTel: tc.otel})
				if err != nil {
					b.Fatal(err)
				}
				defer tel.Close(context.Background())
				tp = tel.TracerProvider()
			}
			tr := tp.Tracer("bench")
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				_, span := tr.Start(ctx, "clawmatrix.proxy.chat", trace.WithSpanKind(trace.SpanKindServer),
					trace.WithAttributes(attribute.String("gen_ai.request.model", "m"), attribute.Bool("clawmatrix.proxy.stream", true)))
				span.AddEvent("clawmatrix.proxy.attempt", trace.WithAttributes(attribute.Int("clawmatrix.proxy.attempt", 1), attribute.String("clawmatrix.proxy.node", "b")))
				span.SetAttributes(attribute.Int("http.response.status_code", 200), attribute.Int64("clawmatrix.proxy.response_bytes", 1400),
					attribute.Int("clawmatrix.proxy.attempts", 1), attribute.String("clawmatrix.proxy.node", "b"), attribute.Float64("clawmatrix.proxy.ttfb_ms", 0.8))
				span.End()
			}
		})
	}
}
