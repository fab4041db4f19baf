package bench

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// compareReport is the same load sent directly to the upstream and through
// the proxy (A -> B -> upstream), in one run.
type compareReport struct {
	Direct1, Proxy1   loadResult // 1 client
	Direct16, Proxy16 loadResult // 16 concurrent clients
	DirectStream      loadResult // 1 client, streamed
	ProxyStream       loadResult
	// Reference16 is the 16-client load through one standard-library
	// reverse proxy, from the same round as Direct16 and Proxy16.
	Reference16 loadResult
	// Rounds is how many times each direct/proxied pair ran, alternating;
	// each pair above is the round with the median comparison.
	Rounds int
}

// ThroughputRatio16 is proxied over direct throughput at 16 clients.
func (r compareReport) ThroughputRatio16() float64 {
	return r.Proxy16.PerSecond() / r.Direct16.PerSecond()
}

// ReferenceRatio16 is one standard-library reverse proxy's throughput over
// direct at 16 clients: the cost of a single plain HTTP hop here.
func (r compareReport) ReferenceRatio16() float64 {
	return r.Reference16.PerSecond() / r.Direct16.PerSecond()
}

// AddedP50 is the median latency the proxy adds at 1 client.
func (r compareReport) AddedP50() time.Duration { return r.Proxy1.P50 - r.Direct1.P50 }

// AddedFirstChunk is the median time to first chunk the proxy adds.
func (r compareReport) AddedFirstChunk() time.Duration {
	return r.ProxyStream.FirstChunkP50 - r.DirectStream.FirstChunkP50
}

func (r compareReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "direct    1 client : %v\n", r.Direct1)
	fmt.Fprintf(&b, "proxied   1 client : %v\n", r.Proxy1)
	fmt.Fprintf(&b, "direct   16 clients: %v\n", r.Direct16)
	fmt.Fprintf(&b, "proxied  16 clients: %v\n", r.Proxy16)
	fmt.Fprintf(&b, "direct   stream    : %v\n", r.DirectStream)
	fmt.Fprintf(&b, "proxied  stream    : %v\n", r.ProxyStream)
	fmt.Fprintf(&b, "(each pair: the median of %d alternating direct/proxied rounds)\n", r.Rounds)
	fmt.Fprintf(&b, "reference 16 clients: %v\n", r.Reference16)
	fmt.Fprintf(&b, "throughput at 16 clients: %.2fx direct (goal >= 0.4x); one httputil.ReverseProxy: %.2fx\n", r.ThroughputRatio16(), r.ReferenceRatio16())
	fmt.Fprintf(&b, "added p50 at 1 client: %v (goal <= 300µs)\n", r.AddedP50().Round(time.Microsecond))
	fmt.Fprintf(&b, "added time to first chunk: %v (goal <= 1ms)\n", r.AddedFirstChunk().Round(time.Microsecond))
	return b.String()
}

// compareRounds is how many times Compare runs each direct/proxied pair.
// On a shared machine a single short run swings by a factor of two with
// the neighbours' load; alternating the two sides and keeping the median
// round compares them under like conditions.
const compareRounds = 5

// Compare runs each load directly against the upstream and through the
// proxy, alternating, compareRounds times with requests requests per run
// (after a warm-up), and reports for each pair the round whose comparison
// (throughput ratio, added p50, added time to first chunk) is the median.
func compare(ctx context.Context, c *inprocCluster, requests int) (compareReport, error) {
	r := compareReport{Rounds: compareRounds}
	direct := loadOptions{URL: c.Upstream.URL(), Model: benchModel, Requests: requests}
	proxied := loadOptions{URL: c.Front.URL(), APIKey: c.Key, Model: benchModel, Requests: requests}
	client := newLoadClient(16)
	defer client.CloseIdleConnections()
	reference := loadOptions{URL: c.Reference, Model: benchModel, Requests: requests}
	pairs := []struct {
		direct, proxy *loadResult
		// ref, when set, also runs the reference proxy in each round.
		ref         *loadResult
		concurrency int
		stream      bool
		// score orders the rounds; the median one is reported.
		score func(d, p loadResult) float64
	}{
		{&r.Direct1, &r.Proxy1, nil, 1, false, func(d, p loadResult) float64 { return float64(p.P50 - d.P50) }},
		{&r.Direct16, &r.Proxy16, &r.Reference16, 16, false, func(d, p loadResult) float64 { return p.PerSecond() / d.PerSecond() }},
		{&r.DirectStream, &r.ProxyStream, nil, 1, true, func(d, p loadResult) float64 { return float64(p.FirstChunkP50 - d.FirstChunkP50) }},
	}
	run := func(o loadOptions, concurrency int, stream bool, warm bool) (loadResult, error) {
		o.Concurrency, o.Stream = concurrency, stream
		if warm {
			w := o
			w.Requests = max(requests/10, o.Concurrency)
			if _, err := runLoad(ctx, client, w); err != nil {
				return loadResult{}, err
			}
		}
		return runLoad(ctx, client, o)
	}
	type round struct {
		d, p, ref loadResult
		score     float64
	}
	for _, pair := range pairs {
		rounds := make([]round, 0, compareRounds)
		for i := range compareRounds {
			var rd round
			var err error
			if rd.d, err = run(direct, pair.concurrency, pair.stream, i == 0); err != nil {
				return r, err
			}
			if rd.p, err = run(proxied, pair.concurrency, pair.stream, i == 0); err != nil {
				return r, err
			}
			if pair.ref != nil {
				if rd.ref, err = run(reference, pair.concurrency, pair.stream, i == 0); err != nil {
					return r, fmt.Errorf("reference proxy: %w", err)
				}
			}
			rd.score = pair.score(rd.d, rd.p)
			rounds = append(rounds, rd)
		}
		slices.SortFunc(rounds, func(a, b round) int { return cmp.Compare(a.score, b.score) })
		med := rounds[len(rounds)/2]
		*pair.direct, *pair.proxy = med.d, med.p
		if pair.ref != nil {
			*pair.ref = med.ref
		}
	}
	return r, nil
}
