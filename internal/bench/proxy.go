package bench

// The proxy suite: the same load against the synthetic upstream directly and
// through A's proxy -> mesh link -> B -> upstream, in one run, first with
// both nodes in the bench's process, then with each node a process of its
// own beside a chain of two standard-library reverse proxy processes (see
// chain.go). The in-process harness is inproc.go (the cluster), load.go,
// compare.go and streams.go, which the Go benchmarks of this package use too.

import (
	"context"
	"fmt"
	"time"
)

type proxyPlan struct {
	chunks   int // per synthetic stream
	requests int // per load run
	streams  int // concurrent streams over the one link
	memory   int // streams held open for the memory figure
}

func planProxy(o Options) proxyPlan {
	if o.Quick {
		return proxyPlan{chunks: 8, requests: 60, streams: 200, memory: 100}
	}
	return proxyPlan{chunks: 16, requests: 3000, streams: 1000, memory: 1000}
}

func runProxy(ctx context.Context, o Options) ([]Metric, error) {
	plan := planProxy(o)
	log := o.logger()
	nodeBin, err := o.nodeBin()
	if err != nil {
		return nil, err
	}
	relayBin, err := o.relayBin()
	if err != nil {
		return nil, err
	}
	startCtx, cancel := context.WithTimeout(ctx, waitLimit)
	c, err := startInprocCluster(startCtx, plan.chunks)
	cancel()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel = context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()

	var out []Metric
	log.Info("proxy: direct vs proxied load", "requests", plan.requests)
	r, err := compare(ctx, c, plan.requests)
	if err != nil {
		return out, fmt.Errorf("load: %w", err)
	}
	out = append(out,
		Metric{Name: "direct throughput, 16 clients (baseline)", Value: r.Direct16.PerSecond(), Unit: "req/s"},
		Metric{Name: "proxied throughput / direct, 16 clients", Value: r.ThroughputRatio16(), Unit: "x", Goal: AtLeast(0.4),
			Note: fmt.Sprintf("%.0f req/s through A's proxy -> B -> upstream, %d requests per run", r.Proxy16.PerSecond(), plan.requests)},
		Metric{Name: "reference: one httputil.ReverseProxy / direct, 16 clients", Value: r.ReferenceRatio16(), Unit: "x",
			Note: fmt.Sprintf("%.0f req/s through the standard library's reverse proxy alone (one HTTP hop, no mesh), same round", r.Reference16.PerSecond())},
		Metric{Name: "direct p50, 1 client (baseline)", Value: ms(r.Direct1.P50), Unit: "ms"},
		Metric{Name: "added p50, 1 client", Value: ms(r.AddedP50()), Unit: "ms", Goal: AtMost(0.3),
			Note: fmt.Sprintf("proxied p50 %.3f ms - direct p50 %.3f ms", ms(r.Proxy1.P50), ms(r.Direct1.P50))},
		Metric{Name: "added time to first chunk, streamed", Value: ms(r.AddedFirstChunk()), Unit: "ms", Goal: AtMost(1),
			Note: fmt.Sprintf("proxied %.3f ms - direct %.3f ms (p50, 1 client)", ms(r.ProxyStream.FirstChunkP50), ms(r.DirectStream.FirstChunkP50))},
	)

	log.Info("proxy: direct vs two-proxy chain vs cluster, each node a process", "requests", plan.requests)
	paths, err := startChainPaths(ctx, nodeBin, relayBin, c.Upstream.URL())
	if err != nil {
		return out, fmt.Errorf("starting the chain and the cluster processes: %w", err)
	}
	cr, err := compareChain(ctx, paths, plan.requests)
	if stopErr := paths.Close(); err == nil && stopErr != nil {
		err = fmt.Errorf("stopping the chain and the cluster processes: %w", stopErr)
	}
	if err != nil {
		return out, fmt.Errorf("load against processes: %w", err)
	}
	out = append(out, chainMetrics(cr, plan.requests)...)

	log.Info("proxy: concurrent streams over one link", "streams", plan.streams)
	bad, first := countBadStreams(ctx, c.Front.URL(), c.Key, plan.streams, plan.chunks, nil)
	note := fmt.Sprintf("streams with a lost, duplicated or reordered chunk (or failed), of %d concurrent %d-chunk streams over the one A-B link", plan.streams, plan.chunks)
	if first != nil {
		note += "; first: " + first.Error()
	}
	out = append(out, Metric{Name: fmt.Sprintf("bad streams of %d concurrent", plan.streams), Value: float64(bad), Unit: "", Goal: AtMost(0), Note: note})
	if p, _ := c.A.Peer("bench-b"); p.Hops != 1 {
		return out, fmt.Errorf("streams did not share one direct link: A reaches B in %d hops", p.Hops)
	}

	log.Info("proxy: memory per open stream", "streams", plan.memory)
	direct, err := streamMemory(ctx, c.Upstream, c.Upstream.URL(), "", plan.memory)
	if err != nil {
		return out, fmt.Errorf("stream memory, direct: %w", err)
	}
	proxied, err := streamMemory(ctx, c.Upstream, c.Front.URL(), c.Key, plan.memory)
	if err != nil {
		return out, fmt.Errorf("stream memory, proxied: %w", err)
	}
	out = append(out,
		Metric{Name: "memory per open stream, added by the proxy", Value: (float64(proxied) - float64(direct)) / 1024, Unit: "KB",
			Note: fmt.Sprintf("heap + stacks of the whole process with %d streams held open: %.1f KB proxied - %.1f KB direct (front, two mesh nodes, serving side)",
				plan.memory, float64(proxied)/1024, float64(direct)/1024)},
	)
	return out, nil
}
