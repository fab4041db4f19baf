package mesh

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestObserveLineTopology(t *testing.T) {
	a, b, c := tracedLine(t, [3]*tracetest.SpanRecorder{})
	_ = b
	if got := a.Path("c"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("a.Path(c) = %v", got)
	}
	if got := a.Path("b"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a.Path(b) = %v", got)
	}
	if got := a.Path("a"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("a.Path(a) = %v", got)
	}
	if got := a.Path("nobody"); got != nil {
		t.Fatalf("a.Path(nobody) = %v", got)
	}
	waitPoll(t, 10*time.Second, "both links in a's view", func() bool {
		var pairs []string
		for _, e := range a.Edges() {
			pairs = append(pairs, e.From+"-"+e.To)
		}
		return slices.Equal(pairs, []string{"a-b", "b-c"})
	})
	stats := a.LinkStats()
	if len(stats) != 1 || stats[0].Peer != "b" || !stats[0].Outbound {
		t.Fatalf("a's links: %+v", stats)
	}
	c.Handle("echo", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error { return w.Write(r.Payload) }))
	before := b.Stats().BytesRelayed
	if _, err := a.Call(context.Background(), "c", "echo", make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	// b counts a frame once it is queued for the next link, which can be
	// a moment after a already has the answer.
	waitPoll(t, 5*time.Second, "b to count the request and the answer as relayed", func() bool {
		return b.Stats().BytesRelayed-before >= 2000
	})
}
