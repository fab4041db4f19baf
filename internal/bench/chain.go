package bench

// The proxy suite's yardstick: the same load, in the same rounds, sent to
// the synthetic upstream directly, through two chained standard-library
// reverse proxy processes (client -> relay -> relay -> upstream), and
// through the cluster with each node its own process
// (client -> A's proxy -> mesh -> B -> upstream). Both indirect paths cross
// two processes besides the client's and the upstream's, so they compete
// for the same cores the same way.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// chainPaths are the three ways to the upstream, and the processes behind
// the two indirect ones.
type chainPaths struct {
	direct, chain, cluster loadOptions
	procs                  []*proc // in start order
}

// startChainPaths starts node B (serving benchModel from upstream),
// node A (dialing B, proxying the model) and two relays in a chain in front
// of upstream, the nodes as processes of nodeBin (clawmatrix-plugin) and
// the relays of relayBin (clawmatrix-bench), and returns once a request through
// each path succeeds. upstream is an OpenAI base URL (…/v1). On error
// nothing is left running.
func startChainPaths(ctx context.Context, nodeBin, relayBin, upstream string) (_ *chainPaths, err error) {
	p := &chainPaths{direct: loadOptions{URL: upstream, Model: benchModel}}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	dir, err := os.MkdirTemp("", "clawmatrix-chain-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir) // the nodes read their configs at start
	b, err := startNodeProc(ctx, nodeBin, dir, map[string]any{
		"nodeId": "chain-b", "listen": true, "listenHost": "127.0.0.1", "listenPort": 0,
		"models": []any{map[string]any{"id": benchModel, "provider": "bench", "upstream": map[string]any{"baseUrl": upstream}}},
	}, "")
	if err != nil {
		return nil, err
	}
	p.procs = append(p.procs, b.proc)
	a, err := startNodeProc(ctx, nodeBin, dir, map[string]any{
		"nodeId":      "chain-a",
		"peers":       []any{map[string]any{"url": b.MeshURL, "nodeId": b.ID}},
		"proxyModels": []any{map[string]any{"id": benchModel}},
	}, "")
	if err != nil {
		return nil, err
	}
	p.procs = append(p.procs, a.proc)
	p.cluster = loadOptions{URL: a.ProxyURL, APIKey: a.ProxyKey, Model: benchModel}

	target := strings.TrimSuffix(upstream, "/v1")
	for _, name := range []string{"relay 2", "relay 1"} {
		r, err := startRelayProc(ctx, relayBin, name, target)
		if err != nil {
			return nil, err
		}
		p.procs = append(p.procs, r.proc)
		target = r.URL
	}
	p.chain = loadOptions{URL: target + "/v1", Model: benchModel}

	// A serves the model once it has a link to B and B's offer: until then
	// its proxy answers that no node serves it.
	ready, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	client := newLoadClient(1)
	defer client.CloseIdleConnections()
	for _, o := range []loadOptions{p.chain, p.cluster} {
		if err := untilAnswered(ready, client, o); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// untilAnswered sends one request to o's path every 20 ms until one
// succeeds or ctx ends.
func untilAnswered(ctx context.Context, client *http.Client, o loadOptions) error {
	o.Requests, o.Concurrency = 1, 1
	for {
		_, err := runLoad(ctx, client, o)
		if err == nil {
			return nil
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("%s did not answer within %s: %w", o.URL, joinTimeout, err)
			}
			return ctx.Err()
		}
	}
}

// Close stops the processes, the last started first.
func (p *chainPaths) Close() error {
	var errs []error
	for _, pr := range slices.Backward(p.procs) {
		errs = append(errs, pr.Stop())
	}
	p.procs = nil
	return errors.Join(errs...)
}

// chainReport is the median round of each load.
type chainReport struct {
	direct1, chain1, cluster1    loadResult // 1 client
	direct16, chain16, cluster16 loadResult // 16 clients
	rounds                       int
}

// throughputVsChain is the cluster's throughput over the chain's, 16 clients.
func (r chainReport) throughputVsChain() float64 {
	return r.cluster16.PerSecond() / r.chain16.PerSecond()
}

// throughputVsDirect is the cluster's throughput over a direct call's.
func (r chainReport) throughputVsDirect() float64 {
	return r.cluster16.PerSecond() / r.direct16.PerSecond()
}

// chainAdded and clusterAdded are the p50 each path adds to a direct call
// at 1 client.
func (r chainReport) chainAdded() time.Duration   { return r.chain1.P50 - r.direct1.P50 }
func (r chainReport) clusterAdded() time.Duration { return r.cluster1.P50 - r.direct1.P50 }

// addedVsChain is the cluster's added p50 over the chain's; NaN when the
// chain added nothing measurable.
func (r chainReport) addedVsChain() float64 {
	if r.chainAdded() <= 0 {
		return math.NaN()
	}
	return float64(r.clusterAdded()) / float64(r.chainAdded())
}

// compareChain runs each load (1 client, then 16) against the three paths
// in compareRounds rounds of requests requests per path, after a
// warm-up, rotating the order of the paths from round to round, and keeps
// for each load the round whose comparison of the cluster with the chain is
// the median.
func compareChain(ctx context.Context, p *chainPaths, requests int) (chainReport, error) {
	r := chainReport{rounds: compareRounds}
	client := newLoadClient(16)
	defer client.CloseIdleConnections()
	type round struct {
		res   [3]loadResult // direct, chain, cluster
		score float64
	}
	loads := []struct {
		concurrency int
		out         [3]*loadResult
		score       func(chainReport) float64
	}{
		{1, [3]*loadResult{&r.direct1, &r.chain1, &r.cluster1}, chainReport.addedVsChain},
		{16, [3]*loadResult{&r.direct16, &r.chain16, &r.cluster16}, chainReport.throughputVsChain},
	}
	paths := [3]loadOptions{p.direct, p.chain, p.cluster}
	for _, load := range loads {
		for i := range paths {
			w := paths[i]
			w.Concurrency, w.Requests = load.concurrency, max(requests/10, load.concurrency)
			if _, err := runLoad(ctx, client, w); err != nil {
				return r, fmt.Errorf("warm-up of %s: %w", pathName[i], err)
			}
		}
		rounds := make([]round, 0, r.rounds)
		for k := range r.rounds {
			var rd round
			for j := range paths {
				i := (j + k) % len(paths)
				o := paths[i]
				o.Concurrency, o.Requests = load.concurrency, requests
				res, err := runLoad(ctx, client, o)
				if err != nil {
					return r, fmt.Errorf("%s, %d clients: %w", pathName[i], load.concurrency, err)
				}
				rd.res[i] = res
			}
			*load.out[0], *load.out[1], *load.out[2] = rd.res[0], rd.res[1], rd.res[2]
			rd.score = load.score(r)
			if math.IsNaN(rd.score) {
				rd.score = math.Inf(1)
			}
			rounds = append(rounds, rd)
		}
		slices.SortFunc(rounds, func(a, b round) int { return cmp.Compare(a.score, b.score) })
		med := rounds[len(rounds)/2]
		*load.out[0], *load.out[1], *load.out[2] = med.res[0], med.res[1], med.res[2]
	}
	if r.chainAdded() <= 0 {
		return r, fmt.Errorf("the chain of two proxies added no latency to a direct call (p50 %v vs %v): too noisy to compare; run again", r.chain1.P50, r.direct1.P50)
	}
	return r, nil
}

var pathName = [3]string{"direct", "chain of two relays", "cluster nodes"}

// chainMetrics are the proxy suite's figures from a chainReport.
func chainMetrics(r chainReport, requests int) []Metric {
	return []Metric{
		{Name: "two-proxy chain throughput, 16 clients (yardstick)", Value: r.chain16.PerSecond(), Unit: "req/s",
			Note: fmt.Sprintf("client -> httputil.ReverseProxy process -> httputil.ReverseProxy process -> upstream; median of %d rounds of %d requests, each round also running the cluster and a direct call", r.rounds, requests)},
		{Name: "cluster processes throughput / chain, 16 clients", Value: r.throughputVsChain(), Unit: "x", Goal: AtLeast(1.5),
			Note: fmt.Sprintf("%.0f req/s through client -> node A's proxy -> mesh -> node B -> upstream, each node a process, vs %.0f req/s through the chain, same round", r.cluster16.PerSecond(), r.chain16.PerSecond())},
		{Name: "cluster processes throughput / direct, 16 clients", Value: r.throughputVsDirect(), Unit: "x",
			Note: fmt.Sprintf("%.0f vs %.0f req/s to the upstream directly, same round; bound by the cores the client, upstream and two node processes share, so reported, not judged", r.cluster16.PerSecond(), r.direct16.PerSecond())},
		{Name: "two-proxy chain added p50, 1 client (yardstick)", Value: ms(r.chainAdded()), Unit: "ms",
			Note: fmt.Sprintf("chain p50 %.3f ms - direct p50 %.3f ms, same round", ms(r.chain1.P50), ms(r.direct1.P50))},
		{Name: "cluster processes added p50 / chain added p50, 1 client", Value: r.addedVsChain(), Unit: "x", Goal: AtMost(0.8),
			Note: fmt.Sprintf("cluster p50 %.3f ms - direct p50 %.3f ms = %.3f ms added, vs %.3f ms added by the chain, same round (median of %d)",
				ms(r.cluster1.P50), ms(r.direct1.P50), ms(r.clusterAdded()), ms(r.chainAdded()), r.rounds)},
	}
}
