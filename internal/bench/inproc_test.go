package bench

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/internal/mockllm"
)

func startBench(tb testing.TB, chunks int) *inprocCluster {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := startInprocCluster(ctx, chunks)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// 1,000 streams open at the same time share the one A-B link; every chunk
// must arrive once and in order. The upstream holds every stream after its
// first chunk until all of them have it, so none can finish before the last
// opens. (250 under the race detector, which caps goroutines.)
func TestConcurrentStreamsOneLink(t *testing.T) {
	n := 1000
	if raceEnabled {
		n = 250
	}
	c := startBench(t, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var open atomic.Int32
	c.Upstream.Hold(true)
	bad, first := countBadStreams(ctx, c.Front.URL(), c.Key, n, 10, func() {
		if open.Add(1) == int32(n) {
			c.Upstream.Hold(false)
		}
	})
	if got := open.Load(); got != int32(n) {
		t.Fatalf("only %d of %d streams were open at once; %d failed, first: %v", got, n, bad, first)
	}
	if bad > 0 {
		t.Fatalf("%d of %d streams failed; first: %v", bad, n, first)
	}
	if p, _ := c.A.Peer("bench-b"); p.Hops != 1 {
		t.Fatalf("streams did not share one direct link: %+v", p)
	}
}

func TestCheckStreamsDetectsMissingChunks(t *testing.T) {
	c := startBench(t, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The upstream sends 5 chunks; expecting 6 must fail every stream.
	if err := checkStreams(ctx, c.Upstream.URL(), "", 3, 6); err == nil {
		t.Fatal("checkStreams accepted streams with a missing chunk")
	}
	if bad, first := countBadStreams(ctx, c.Upstream.URL(), "", 3, 6, nil); bad != 3 || first == nil {
		t.Fatalf("countBadStreams = %d, %v; want all 3 streams bad", bad, first)
	}
	if bad, first := countBadStreams(ctx, c.Upstream.URL(), "", 3, 5, nil); bad != 0 {
		t.Fatalf("countBadStreams on complete streams = %d, %v", bad, first)
	}
}

// A damaged chunk (its counter cut off) makes a bad stream, not a panic.
func TestCheckStreamsDamagedChunk(t *testing.T) {
	for name, event := range map[string]string{
		"no space after the counter": `data: {"choices":[{"delta":{"content":"t0`,
		"no number":                  `data: {"choices":[{"delta":{"content":"tx "}}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			up, err := mockllm.Start(mockllm.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer up.Close()
			up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
				w.Header().Set("Content-Type", "text/event-stream")
				io.WriteString(w, event+"\n\ndata: [DONE]\n\n")
				return true
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			bad, first := countBadStreams(ctx, up.URL(), "", 2, 1, nil)
			if bad != 2 || first == nil || !strings.Contains(first.Error(), "damaged chunk") {
				t.Fatalf("countBadStreams = %d, %v; want both streams reported damaged", bad, first)
			}
		})
	}
}

func TestCompareRuns(t *testing.T) {
	c := startBench(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := compare(ctx, c, 50)
	if err != nil {
		t.Fatal(err)
	}
	for name, res := range map[string]loadResult{"direct1": r.Direct1, "proxy16": r.Proxy16, "proxyStream": r.ProxyStream, "reference16": r.Reference16} {
		if res.Requests != 50 || res.P50 <= 0 || res.PerSecond() <= 0 {
			t.Fatalf("%s: %+v", name, res)
		}
	}
	if r.ProxyStream.FirstChunkP50 <= 0 || r.ProxyStream.FirstChunkP50 > r.ProxyStream.P99 {
		t.Fatalf("first chunk %v, p99 %v", r.ProxyStream.FirstChunkP50, r.ProxyStream.P99)
	}
}

// BenchmarkCompare runs the measurement: the same load directly and
// through A's proxy -> B -> upstream, and reports the ratios. Run with
// -benchtime=1x; the request count per run is fixed.
func BenchmarkCompare(b *testing.B) {
	c := startBench(b, 16)
	ctx := context.Background()
	var r compareReport
	for i := 0; i < b.N; i++ {
		var err error
		if r, err = compare(ctx, c, 3000); err != nil {
			b.Fatal(err)
		}
	}
	b.Log("\n" + r.String())
	b.ReportMetric(r.ThroughputRatio16(), "x-direct-16")
	b.ReportMetric(float64(r.AddedP50().Microseconds()), "µs-added-p50-1")
	b.ReportMetric(float64(r.AddedFirstChunk().Microseconds()), "µs-added-ttfc")
	b.ReportMetric(r.Proxy16.PerSecond(), "req/s-proxy-16")
}

func benchLoad(b *testing.B, proxied bool, concurrency int, stream bool) {
	c := startBench(b, 16)
	o := loadOptions{URL: c.Upstream.URL(), Model: benchModel, Concurrency: concurrency, Stream: stream}
	if proxied {
		o.URL, o.APIKey = c.Front.URL(), c.Key
	}
	client := newLoadClient(concurrency)
	defer client.CloseIdleConnections()
	ctx := context.Background()
	warm := o
	warm.Requests = 100
	if _, err := runLoad(ctx, client, warm); err != nil {
		b.Fatal(err)
	}
	o.Requests = b.N
	b.ResetTimer()
	r, err := runLoad(ctx, client, o)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(r.P50.Microseconds()), "µs-p50")
	if stream {
		b.ReportMetric(float64(r.FirstChunkP50.Microseconds()), "µs-ttfc")
	}
}

func BenchmarkChat(b *testing.B) {
	for _, bc := range []struct {
		name        string
		concurrency int
		stream      bool
	}{{"c1", 1, false}, {"c16", 16, false}, {"stream-c1", 1, true}} {
		b.Run("direct-"+bc.name, func(b *testing.B) { benchLoad(b, false, bc.concurrency, bc.stream) })
		b.Run("proxied-"+bc.name, func(b *testing.B) { benchLoad(b, true, bc.concurrency, bc.stream) })
	}
}

// BenchmarkStreams1000 sends 1,000 concurrent 16-chunk streams over the one
// A-B link per iteration, checking every chunk.
func BenchmarkStreams1000(b *testing.B) {
	c := startBench(b, 16)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		if err := checkStreams(ctx, c.Front.URL(), c.Key, 1000, 16); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStreamMemory reports the memory of the whole in-process setup per
// open stream, through the proxy and directly; the difference is the
// proxy's (front, two mesh nodes, serving side).
func BenchmarkStreamMemory(b *testing.B) {
	c := startBench(b, 4)
	ctx := context.Background()
	const n = 500
	var direct, proxied uint64
	for i := 0; i < b.N; i++ {
		var err error
		if direct, err = streamMemory(ctx, c.Upstream, c.Upstream.URL(), "", n); err != nil {
			b.Fatal(err)
		}
		if proxied, err = streamMemory(ctx, c.Upstream, c.Front.URL(), c.Key, n); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(direct), "B/stream-direct")
	b.ReportMetric(float64(proxied), "B/stream-proxied")
	b.ReportMetric(float64(int64(proxied)-int64(direct)), "B/stream-added")
}
