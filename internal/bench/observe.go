package bench

// The observe suite: what telemetry costs on the model proxy's path. Three
// in-process clusters of the same shape (client -> A's proxy -> mesh -> B
// -> synthetic upstream, each node started by cluster.Start) differ only in
// telemetry: off (cluster.Options.NoTelemetry, the baseline), the default
// (metrics, journal and status page, no otel), and everything on (spans of
// every request exported over OTLP/HTTP to a collector on loopback, sample
// ratio 1), and the same with sample ratio 0.1. Rounds alternate between them, so drift of the shared machine
// hits all three alike; each figure is the median over rounds. Besides
// throughput, the process's CPU time per request (load generator, both
// nodes and the upstream alike in every cluster) is compared: on a machine
// other processes load, it moves less than throughput does.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/schema"
)

type observePlan struct {
	rounds   int
	requests int // per 16-client run
	single   int // per 1-client run
}

func planObserve(o Options) observePlan {
	if o.Quick {
		return observePlan{rounds: 1, requests: 200, single: 100}
	}
	return observePlan{rounds: 5, requests: 4000, single: 1500}
}

// observedPath is one cluster of the suite.
type observedPath struct {
	name   string
	a, b   *cluster.Runtime
	client *http.Client
}

func (p *observedPath) Close() {
	p.client.CloseIdleConnections()
	if p.a != nil {
		p.a.Close()
	}
	if p.b != nil {
		p.b.Close()
	}
}

// startObservedPath starts B serving benchModel from upstream and A
// using it; otel, when not nil, goes into both configs.
func startObservedPath(ctx context.Context, name, upstream string, otel map[string]any, noTelemetry bool) (_ *observedPath, err error) {
	p := &observedPath{name: name, client: newLoadClient(32)}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	start := func(fields map[string]any) (*cluster.Runtime, error) {
		fields["secret"] = benchSecret
		fields["proxyPort"] = 0
		if otel != nil {
			fields["otel"] = otel
		}
		raw, err := json.Marshal(fields)
		if err != nil {
			return nil, err
		}
		cfg, problems := schema.Parse(raw)
		if len(problems) > 0 {
			return nil, fmt.Errorf("config: %v", problems)
		}
		return cluster.Start(ctx, cluster.Options{Config: cfg, NoTelemetry: noTelemetry})
	}
	if p.b, err = start(map[string]any{"nodeId": "b", "listen": true, "listenHost": "127.0.0.1", "listenPort": 0,
		"models": []any{map[string]any{"id": benchModel, "provider": "bench", "upstream": map[string]any{"baseUrl": upstream}}}}); err != nil {
		return nil, err
	}
	if p.a, err = start(map[string]any{"nodeId": "a", "peers": []any{map[string]any{"url": p.b.Mesh().URL(), "nodeId": "b"}},
		"proxyModels": []any{map[string]any{"id": benchModel}}}); err != nil {
		return nil, err
	}
	if err := waitPeer(ctx, p.a.Mesh(), "b", []string{benchModel}, nil); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *observedPath) load(ctx context.Context, clients, requests int) (loadResult, error) {
	return runLoad(ctx, p.client, loadOptions{URL: p.a.ProxyURL(), APIKey: p.a.ProxyKey(), Model: benchModel,
		Concurrency: clients, Requests: requests})
}

// spanSink is an OTLP/HTTP collector that reads each export and drops it,
// counting the bytes: the cheapest collector a node can export to.
type spanSink struct {
	URL     string
	srv     *http.Server
	done    chan struct{}
	exports atomic.Int64
	bytes   atomic.Int64
}

func startSpanSink() (*spanSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &spanSink{URL: "http://" + ln.Addr().String(), done: make(chan struct{})}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.bytes.Add(n)
		s.exports.Add(1)
		// An empty body is an empty ExportTraceServiceResponse.
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *spanSink) Close() {
	s.srv.Close()
	<-s.done
}

// observeCost is the suite's measurements: per path, the median over
// rounds of the 16-client throughput and the 1-client p50.
type observeCost struct {
	perSecond map[string]float64
	p50       map[string]time.Duration
	cpu       map[string]time.Duration // per request, 16 clients; empty when not measured
	exports   int64
	bytes     int64
}

func measureObserveCost(ctx context.Context, plan observePlan) (observeCost, error) {
	res := observeCost{perSecond: map[string]float64{}, p50: map[string]time.Duration{}, cpu: map[string]time.Duration{}}
	up, err := startSynthetic(4)
	if err != nil {
		return res, err
	}
	defer up.Close()
	sink, err := startSpanSink()
	if err != nil {
		return res, err
	}
	defer sink.Close()
	startCtx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	var paths []*observedPath
	defer func() {
		for _, p := range paths {
			p.Close()
		}
	}()
	for _, c := range []struct {
		name string
		otel map[string]any
		off  bool
	}{
		{"off", nil, true},
		{"metrics", nil, false},
		{"traced", map[string]any{"endpoint": sink.URL, "sampleRatio": 1}, false},
		{"sampled", map[string]any{"endpoint": sink.URL, "sampleRatio": 0.1}, false},
	} {
		p, err := startObservedPath(startCtx, c.name, up.URL(), c.otel, c.off)
		if err != nil {
			return res, fmt.Errorf("starting the %s cluster: %w", c.name, err)
		}
		paths = append(paths, p)
	}
	// Warm every path (connections, buffers) before measuring.
	for _, p := range paths {
		if _, err := p.load(ctx, 16, 200); err != nil {
			return res, fmt.Errorf("%s warm-up: %w", p.name, err)
		}
	}
	rates := map[string][]float64{}
	p50s := map[string][]time.Duration{}
	cpus := map[string][]time.Duration{}
	for round := range plan.rounds {
		// Each round starts with another path, so none always goes first.
		for i := range paths {
			p := paths[(round+i)%len(paths)]
			cpu0, cpuOK := processCPU()
			r, err := p.load(ctx, 16, plan.requests)
			if err != nil {
				return res, fmt.Errorf("%s, 16 clients: %w", p.name, err)
			}
			if cpu1, ok := processCPU(); ok && cpuOK {
				cpus[p.name] = append(cpus[p.name], (cpu1-cpu0)/time.Duration(plan.requests))
			}
			rates[p.name] = append(rates[p.name], r.PerSecond())
			r, err = p.load(ctx, 1, plan.single)
			if err != nil {
				return res, fmt.Errorf("%s, 1 client: %w", p.name, err)
			}
			p50s[p.name] = append(p50s[p.name], r.P50)
		}
	}
	for name, v := range rates {
		slices.Sort(v)
		res.perSecond[name] = v[len(v)/2]
	}
	for name, v := range p50s {
		res.p50[name] = median(v)
	}
	for name, v := range cpus {
		res.cpu[name] = median(v)
	}
	// The traced clusters' last spans leave when they close.
	paths[2].Close()
	paths[3].Close()
	paths = paths[:2]
	res.exports, res.bytes = sink.exports.Load(), sink.bytes.Load()
	return res, nil
}

func runObserve(ctx context.Context, o Options) ([]Metric, error) {
	plan := planObserve(o)
	o.logger().Info("observe: telemetry off vs metrics vs metrics and spans", "rounds", plan.rounds, "requests", plan.requests)
	c, err := measureObserveCost(ctx, plan)
	if err != nil {
		return nil, err
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	note := fmt.Sprintf("median of %d rounds of %d requests; A's proxy -> mesh -> B -> upstream, in process", plan.rounds, plan.requests)
	cpuRatio := func(name string) float64 {
		if c.cpu["off"] <= 0 {
			return 0
		}
		return float64(c.cpu[name]) / float64(c.cpu["off"])
	}
	cpuNote := func(name string) string {
		return fmt.Sprintf("%.1f µs vs %.1f µs of process CPU per request (client, both nodes, upstream), 16 clients", us(c.cpu[name]), us(c.cpu["off"]))
	}
	return []Metric{
		{Name: "telemetry off throughput, 16 clients (baseline)", Value: c.perSecond["off"], Unit: "req/s", Note: note},
		{Name: "metrics on / off throughput, 16 clients", Value: c.perSecond["metrics"] / c.perSecond["off"], Unit: "x",
			Note: fmt.Sprintf("%.0f req/s with metrics, the journal and the status page, no otel (the default)", c.perSecond["metrics"])},
		{Name: "metrics and spans / off throughput, 16 clients", Value: c.perSecond["traced"] / c.perSecond["off"], Unit: "x", Goal: AtLeast(0.95),
			Note: fmt.Sprintf("%.0f req/s with every request's spans exported over OTLP/HTTP (sample ratio 1); %d exports, %d bytes",
				c.perSecond["traced"], c.exports, c.bytes)},
		{Name: "metrics and 10% of spans / off throughput, 16 clients", Value: c.perSecond["sampled"] / c.perSecond["off"], Unit: "x",
			Note: fmt.Sprintf("%.0f req/s with otel sampleRatio 0.1", c.perSecond["sampled"])},
		{Name: "metrics on / off CPU per request", Value: cpuRatio("metrics"), Unit: "x", Note: cpuNote("metrics")},
		{Name: "metrics and spans / off CPU per request", Value: cpuRatio("traced"), Unit: "x", Note: cpuNote("traced")},
		{Name: "metrics and 10% of spans / off CPU per request", Value: cpuRatio("sampled"), Unit: "x", Note: cpuNote("sampled")},
		{Name: "telemetry off p50, 1 client (baseline)", Value: us(c.p50["off"]), Unit: "µs"},
		{Name: "metrics on added p50, 1 client", Value: us(c.p50["metrics"] - c.p50["off"]), Unit: "µs"},
		{Name: "metrics and spans added p50, 1 client", Value: us(c.p50["traced"] - c.p50["off"]), Unit: "µs", Goal: AtMost(20)},
		{Name: "metrics and 10% of spans added p50, 1 client", Value: us(c.p50["sampled"] - c.p50["off"]), Unit: "µs"},
		{Name: "span exports received", Value: float64(c.exports), Unit: "",
			Note: "OTLP/HTTP requests the collector got from the traced clusters: proof the spans left"},
	}, nil
}
