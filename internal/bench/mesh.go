package bench

// The mesh suite: what one relay hop adds to a small request, how fast the
// topology converges after a join, how fast a killed or a silent peer is
// withdrawn, how long a link takes to come up and what an idle link costs.
// Each measurement is a function that the suite and the package's Go
// benchmarks both call.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/faultnet"
)

// meshLine is nodes n0 - n1 - ... in a line, each dialing its predecessor,
// so n0 reaches nK through K-1 relays. Every node echoes.
type meshLine struct {
	nodes   []*mesh.Node
	payload []byte
}

const methodEcho = "bench.echo"

func startMeshLine(ctx context.Context, hops int) (*meshLine, error) {
	ids := make([]string, hops+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("line%d", i)
	}
	ns, err := startNodes(ctx, randomSecret(), ids, nil)
	if err != nil {
		return nil, err
	}
	l := &meshLine{nodes: ns, payload: []byte(`{"q":"a small request"}`)}
	echo := mesh.HandlerFunc(func(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request) error {
		return w.Write(r.Payload)
	})
	for i, n := range ns {
		n.Handle(methodEcho, echo)
		if i > 0 {
			if err := dial(n, ns[i-1]); err != nil {
				l.Close()
				return nil, err
			}
		}
	}
	if err := waitConverged(ctx, ns); err != nil {
		l.Close()
		return nil, err
	}
	if p, _ := ns[0].Peer(ns[hops].ID()); p.Hops != hops {
		l.Close()
		return nil, fmt.Errorf("line: %s reaches %s in %d hops, want %d", ns[0].ID(), ns[hops].ID(), p.Hops, hops)
	}
	return l, nil
}

func (l *meshLine) Close() { closeNodes(l.nodes) }

// call sends the small request from the first node to the node hops away
// and checks the echo.
func (l *meshLine) call(ctx context.Context, hops int) error {
	got, err := l.nodes[0].Call(ctx, l.nodes[hops].ID(), methodEcho, l.payload)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, l.payload) {
		return fmt.Errorf("echo over %d hops returned %q", hops, got)
	}
	return nil
}

// relayHop is the median latency of a small call over one and three hops.
type relayHop struct{ one, three time.Duration }

// perHop is what each relay adds.
func (r relayHop) perHop() time.Duration { return (r.three - r.one) / 2 }

// measureRelayHop alternates calls over one and three hops, calls times
// each, after a warm-up.
func measureRelayHop(ctx context.Context, calls int) (relayHop, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	l, err := startMeshLine(ctx, 3)
	if err != nil {
		return relayHop{}, err
	}
	defer l.Close()
	for i := 0; i < min(calls/10+1, 100); i++ {
		if err := l.call(ctx, 1); err != nil {
			return relayHop{}, err
		}
		if err := l.call(ctx, 3); err != nil {
			return relayHop{}, err
		}
	}
	one := make([]time.Duration, calls)
	three := make([]time.Duration, calls)
	for i := 0; i < calls; i++ {
		t0 := time.Now()
		if err := l.call(ctx, 1); err != nil {
			return relayHop{}, err
		}
		t1 := time.Now()
		if err := l.call(ctx, 3); err != nil {
			return relayHop{}, err
		}
		one[i], three[i] = t1.Sub(t0), time.Since(t1)
	}
	return relayHop{one: median(one), three: median(three)}, nil
}

// sparseEdges is a random spanning tree of n nodes plus n/4 extra edges.
func sparseEdges(n int, rng *rand.Rand) [][2]int {
	var e [][2]int
	for i := 1; i < n; i++ {
		e = append(e, [2]int{i, rng.IntN(i)})
	}
	for k := 0; k < n/4; k++ {
		if i, j := rng.IntN(n), rng.IntN(n); i != j {
			e = append(e, [2]int{i, j})
		}
	}
	return e
}

// convergence is one run: cold is from the first dial of a fresh random
// sparse graph until every node sees every other; join is from a new node
// dialing one member of the converged graph until every node, the new one
// included, sees all.
type convergence struct{ cold, join time.Duration }

func measureConvergence(ctx context.Context, size int, rng *rand.Rand) (convergence, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	ids := make([]string, size+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%03d", i)
	}
	ns, err := startNodes(ctx, randomSecret(), ids, nil)
	if err != nil {
		return convergence{}, err
	}
	defer closeNodes(ns)
	members, joiner := ns[:size], ns[size]
	var r convergence
	t0 := time.Now()
	for _, e := range sparseEdges(size, rng) {
		if err := dial(members[e[0]], members[e[1]]); err != nil {
			return r, err
		}
	}
	if err := waitConverged(ctx, members); err != nil {
		return r, fmt.Errorf("cold start of %d nodes: %w", size, err)
	}
	r.cold = time.Since(t0)
	t1 := time.Now()
	if err := dial(joiner, members[rng.IntN(size)]); err != nil {
		return r, err
	}
	if err := waitConverged(ctx, ns); err != nil {
		return r, fmt.Errorf("join into %d nodes: %w", size, err)
	}
	r.join = time.Since(t1)
	return r, nil
}

// Peer failures measureDetection can cause.
const (
	// faultKilled drops the peer's TCP connections without a close frame,
	// as when its process dies.
	faultKilled = "killed"
	// faultSilent stops delivering bytes while the connections stay open,
	// as when its machine hangs or the network drops everything.
	faultSilent = "silent"
)

// measureDetection links two nodes with DefaultLANConfig timings through a
// fault proxy, causes the fault and returns how long the dialing node takes
// to withdraw its peer.
func measureDetection(ctx context.Context, fault string) (time.Duration, error) {
	if fault != faultKilled && fault != faultSilent {
		return 0, fmt.Errorf("unknown fault %q; use %q or %q", fault, faultKilled, faultSilent)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ns, err := startNodes(ctx, randomSecret(), []string{"watcher", "victim"}, nil)
	if err != nil {
		return 0, err
	}
	defer closeNodes(ns)
	a, peer := ns[0], ns[1]
	px, err := faultnet.Listen(peer.Addr().String())
	if err != nil {
		return 0, err
	}
	// Closed before the nodes, so that a redial into a frozen proxy ends.
	defer px.Close()
	if err := a.AddPeer(mesh.PeerAddr{URL: px.URL(), NodeID: peer.ID()}); err != nil {
		return 0, err
	}
	if err := waitConverged(ctx, ns); err != nil {
		return 0, err
	}
	t0 := time.Now()
	if fault == faultKilled {
		px.Cut()
	} else {
		px.Freeze()
	}
	if err := waitPeers(ctx, a, nil); err != nil {
		return 0, fmt.Errorf("%s peer never withdrawn: %w", fault, err)
	}
	return time.Since(t0), nil
}

// detectRuns repeats measureDetection.
func detectRuns(ctx context.Context, fault string, runs int) ([]time.Duration, error) {
	var took []time.Duration
	for range runs {
		d, err := measureDetection(ctx, fault)
		if err != nil {
			return took, err
		}
		took = append(took, d)
	}
	return took, nil
}

// links is what it takes to set up links and keep them idle, in process,
// both ends included.
type links struct {
	// handshakes are the times from a dial until both ends list each
	// other, one per link.
	handshakes []time.Duration
	bytes      float64 // per idle link: heap in use plus goroutine stacks
	goroutines float64 // per idle link
}

// measureLinks starts 2*pairs nodes, links them in pairs one pair at a
// time, timing each link from the dial until both ends list each other,
// and compares memory and goroutines before and after.
func measureLinks(ctx context.Context, pairs int) (links, error) {
	if pairs < 1 {
		return links{}, errors.New("measureLinks: need at least one pair")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	ids := make([]string, 2*pairs)
	for i := range ids {
		ids[i] = fmt.Sprintf("idle%03d", i)
	}
	ns, err := startNodes(ctx, randomSecret(), ids, nil)
	if err != nil {
		return links{}, err
	}
	defer closeNodes(ns)
	r := links{handshakes: make([]time.Duration, 0, pairs)}
	mem0, g0 := memInUse(), runtime.NumGoroutine()
	for p := 0; p < pairs; p++ {
		t0 := time.Now()
		if err := dial(ns[2*p], ns[2*p+1]); err != nil {
			return r, err
		}
		if err := waitConverged(ctx, ns[2*p:2*p+2]); err != nil {
			return r, err
		}
		r.handshakes = append(r.handshakes, time.Since(t0))
	}
	// Let the handshakes' buffers and goroutines go before measuring.
	select {
	case <-time.After(200 * time.Millisecond):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	mem1, g1 := memInUse(), runtime.NumGoroutine()
	r.bytes = (float64(mem1) - float64(mem0)) / float64(pairs)
	r.goroutines = float64(g1-g0) / float64(pairs)
	return r, nil
}

// memInUse is heap in use plus goroutine stacks after a full collection.
func memInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}

// meshPlan is how much the suite measures.
type meshPlan struct {
	calls                  int
	runs16, runs64         int
	killedRuns, silentRuns int
	pairs                  int
}

func planMesh(o Options) meshPlan {
	if o.Quick {
		return meshPlan{calls: 200, runs16: 1, runs64: 0, killedRuns: 1, silentRuns: 1, pairs: 10}
	}
	return meshPlan{calls: 3000, runs16: 5, runs64: 3, killedRuns: 5, silentRuns: 3, pairs: 100}
}

func runMesh(ctx context.Context, o Options) ([]Metric, error) {
	plan := planMesh(o)
	log := o.logger()
	var out []Metric

	// A silent peer takes about 5 s per run to be found, nearly all of it
	// waiting; those runs go on beside the relay, convergence and killed
	// peer measurements (two idle nodes with a ping a second disturb them
	// little) and end before the memory of idle links is measured.
	log.Info("mesh: failure detection in the background", "fault", faultSilent, "runs", plan.silentRuns)
	silentCtx, stopSilent := context.WithCancel(ctx)
	var silent struct {
		took []time.Duration
		err  error
	}
	var silentDone sync.WaitGroup
	silentDone.Go(func() { silent.took, silent.err = detectRuns(silentCtx, faultSilent, plan.silentRuns) })
	defer silentDone.Wait()
	defer stopSilent()

	log.Info("mesh: relay cost per hop", "calls", plan.calls)
	hop, err := measureRelayHop(ctx, plan.calls)
	if err != nil {
		return out, fmt.Errorf("relay hop: %w", err)
	}
	out = append(out,
		Metric{Name: "small call p50, 1 hop (baseline)", Value: ms(hop.one), Unit: "ms"},
		Metric{Name: "added latency per relay hop", Value: ms(hop.perHop()), Unit: "ms", Goal: AtMost(0.1),
			Note: fmt.Sprintf("(p50 over 3 hops %.3f ms - p50 over 1 hop %.3f ms) / 2, %d calls each, alternating", ms(hop.three), ms(hop.one), plan.calls)},
	)

	rng := rand.New(rand.NewPCG(7, uint64(time.Now().UnixNano())))
	for _, c := range []struct {
		size, runs int
		goal       float64
	}{{16, plan.runs16, 1000}, {64, plan.runs64, 2000}} {
		if c.runs == 0 {
			continue
		}
		log.Info("mesh: convergence", "nodes", c.size, "runs", c.runs)
		var cold, join []time.Duration
		for range c.runs {
			r, err := measureConvergence(ctx, c.size, rng)
			if err != nil {
				return out, fmt.Errorf("convergence: %w", err)
			}
			cold, join = append(cold, r.cold), append(join, r.join)
		}
		out = append(out,
			Metric{Name: fmt.Sprintf("convergence after a join, %d nodes", c.size), Value: ms(worst(join)), Unit: "ms", Goal: AtMost(c.goal),
				Note: fmt.Sprintf("worst of %d runs (median %.1f ms); random sparse graph (spanning tree + n/4 edges), LAN timings", c.runs, ms(median(join)))},
			Metric{Name: fmt.Sprintf("cold convergence, %d nodes", c.size), Value: ms(worst(cold)), Unit: "ms",
				Note: fmt.Sprintf("worst of %d runs, from the first dial until every node sees all", c.runs)},
		)
	}

	for _, f := range []struct {
		fault string
		runs  int
		goal  float64
	}{{faultKilled, plan.killedRuns, 1000}, {faultSilent, plan.silentRuns, 6000}} {
		var took []time.Duration
		var err error
		if f.fault == faultSilent {
			silentDone.Wait()
			took, err = silent.took, silent.err
		} else {
			log.Info("mesh: failure detection", "fault", f.fault, "runs", f.runs)
			took, err = detectRuns(ctx, f.fault, f.runs)
		}
		if err != nil {
			return out, fmt.Errorf("detection: %w", err)
		}
		note := fmt.Sprintf("worst of %d runs (median %.1f ms), DefaultLANConfig timings", f.runs, ms(median(took)))
		if f.fault == faultSilent {
			note += ", run beside the relay, convergence and killed-peer measurements"
		}
		out = append(out, Metric{Name: "detection of a " + f.fault + " peer", Value: ms(worst(took)), Unit: "ms", Goal: AtMost(f.goal), Note: note})
	}

	log.Info("mesh: link set-up and idle cost", "pairs", plan.pairs)
	ls, err := measureLinks(ctx, plan.pairs)
	if err != nil {
		return out, fmt.Errorf("links: %w", err)
	}
	out = append(out,
		Metric{Name: "handshake time of a link", Value: ms(median(ls.handshakes)), Unit: "ms",
			Note: fmt.Sprintf("median of %d links (worst %.3f ms), from the dial until both ends list each other, in process over loopback", len(ls.handshakes), ms(worst(ls.handshakes)))},
		Metric{Name: "memory per idle link", Value: ls.bytes / 1024, Unit: "KB",
			Note: fmt.Sprintf("heap in use + stacks, both ends, %d links", plan.pairs)},
		Metric{Name: "goroutines per idle link", Value: ls.goroutines, Unit: "",
			Note: "both ends"},
	)
	return out, nil
}
