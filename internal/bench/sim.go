package bench

// The sim suite: clusters of hundreds to a thousand nodes, far more than
// this machine could run as processes, simulated in this process. Every
// node is a real mesh.Node (handshake, Noise, gossip, routing, heartbeats
// on real timers); only the network is meshtest's in-memory one, with LAN
// delays. The graph is sparse and random around a few relays, as clusters
// of laptops behind NAT and a few reachable machines are: the relays link
// to each other, every other node dials one relay and one other node.
//
// It measures how long the cluster takes to agree after a node joins and
// after one dies, what the links carry per node while nothing happens and
// while nodes come and go, and what a node costs in memory and goroutines.
// Every node's work shares this machine's CPUs, so the times are those of
// a cluster whose machines are this many times slower; the CPU time spent
// is reported beside them.

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/mesh/meshtest"
)

// SimPlan sizes one simulation.
type SimPlan struct {
	Nodes  int // members of the cluster
	Relays int // of which relays
	// Settle is how long the cluster runs after the cold start before
	// anything is measured (new links announce their first RTT).
	Settle time.Duration
	// Rest is how long traffic is measured while nothing changes; Churn
	// how long it is measured while, every ChurnEvery, one node is killed
	// and a new one joins.
	Rest, Churn, ChurnEvery time.Duration
	Seed                    uint64
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
}

// simDeadAfter is the simulated nodes' DeadAfter and AuthTimeout.
const simDeadAfter = 30 * time.Second

// simBuildLimit bounds the wait for one wave of the build to converge,
// simMeasureLimit that for a join or a death: a number far beyond the
// goals is still worth reporting, on a busy machine.
const (
	simBuildLimit   = 10 * time.Minute
	simMeasureLimit = 3 * time.Minute
)

// simWave is how many nodes join at once while a simulated cluster is
// built.
const simWave = 64

// SimResult is what a simulation measured.
type SimResult struct {
	Plan SimPlan
	// Build is from the first dial until every node sees every other, the
	// nodes joining in waves of simWave.
	Build time.Duration
	// Join is from a new node's start until it sees every node and every
	// node sees it; Killed from a node's crash until no node lists it.
	Join, Killed time.Duration
	// JoinCPU and KilledCPU are the CPU time this process spent meanwhile:
	// the work of every node, which real nodes do each on their own
	// machine.
	JoinCPU, KilledCPU time.Duration
	// Bytes per node per second: everything the links carried (link
	// records: heartbeats, gossip, their framing and tags) and the gossip
	// alone (peer_sync frames before encryption), at rest and during
	// churn.
	RestBytes, RestGossip, ChurnBytes, ChurnGossip float64
	// Per member node at rest: heap and stacks, and goroutines.
	MemPerNode, GoroutinesPerNode float64
}

// simCluster is the running simulation.
type simCluster struct {
	plan   SimPlan
	nw     *meshtest.Network
	secret string
	rng    *rand.Rand

	mu     sync.Mutex
	live   map[string]*mesh.Node
	all    []*mesh.Node // every node started, for the gossip counters
	joined int          // nodes started after the cold start
	closes sync.WaitGroup
}

// simConfig is the LAN timings on the in-memory network, with a node key
// fixed per id.
func (c *simCluster) config(id string, peers []string) mesh.Config {
	cfg := mesh.DefaultLANConfig()
	// All nodes share this machine's few CPUs, so a burst of gossip can
	// hold a link's heartbeat up for seconds, which their own machines
	// would not: silence and handshakes get more time than on a LAN.
	// Killed nodes are found as fast (their connections reset).
	cfg.DeadAfter, cfg.AuthTimeout = simDeadAfter, simDeadAfter
	cfg.NodeID, cfg.Secret = id, c.secret
	seed := sha256.Sum256([]byte("sim node key " + id))
	cfg.Identity = ed25519.NewKeyFromSeed(seed[:])
	cfg.Transport, cfg.ListenAddr = c.nw.Transport(id), id
	for _, p := range peers {
		cfg.Peers = append(cfg.Peers, mesh.PeerAddr{URL: meshtest.URL(p), NodeID: p})
	}
	return cfg
}

func (c *simCluster) start(ctx context.Context, id string, peers []string) (*mesh.Node, error) {
	n, err := mesh.New(c.config(id, peers))
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		return nil, fmt.Errorf("start %s: %w", id, err)
	}
	c.mu.Lock()
	c.live[id] = n
	c.all = append(c.all, n)
	c.mu.Unlock()
	return n, nil
}

// members returns the live nodes, sorted by id.
func (c *simCluster) members() []*mesh.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	ns := make([]*mesh.Node, 0, len(c.live))
	for _, n := range c.live {
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b *mesh.Node) int { return strings.Compare(a.ID(), b.ID()) })
	return ns
}

// cpuNow is this process's CPU time so far, 0 where it is not measured.
func cpuNow() time.Duration {
	d, _ := processCPU()
	return d
}

func relayID(i int) string  { return fmt.Sprintf("relay%d", i) }
func memberID(i int) string { return fmt.Sprintf("n%04d", i) }

// randomMember picks a live node that is not a relay, or "".
func (c *simCluster) randomMember() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ids []string
	for id := range c.live {
		if id[0] != 'r' {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return ""
	}
	slices.Sort(ids)
	return ids[c.rng.IntN(len(ids))]
}

// join starts a new node that dials one relay and one other node.
func (c *simCluster) join(ctx context.Context) (*mesh.Node, error) {
	c.mu.Lock()
	c.joined++
	id := fmt.Sprintf("join%04d", c.joined)
	relay := relayID(c.rng.IntN(c.plan.Relays))
	c.mu.Unlock()
	peers := []string{relay}
	if other := c.randomMember(); other != "" {
		peers = append(peers, other)
	}
	return c.start(ctx, id, peers)
}

// kill crashes a node: its connections are reset, as when its process is
// killed; the node is then closed in the background.
func (c *simCluster) kill(id string) {
	c.nw.Crash(id)
	c.mu.Lock()
	n := c.live[id]
	delete(c.live, id)
	c.mu.Unlock()
	if n != nil {
		c.closes.Go(func() { n.Close() })
	}
}

func (c *simCluster) Close() {
	c.mu.Lock()
	ns := make([]*mesh.Node, 0, len(c.live))
	for _, n := range c.live {
		ns = append(ns, n)
	}
	clear(c.live)
	c.mu.Unlock()
	closeNodes(ns)
	c.closes.Wait()
}

// gossipSent sums the gossip bytes every node ever started has sent.
func (c *simCluster) gossipSent() uint64 {
	c.mu.Lock()
	all := slices.Clone(c.all)
	c.mu.Unlock()
	var sum uint64
	for _, n := range all {
		sum += n.Stats().GossipBytesSent
	}
	return sum
}

// simEdges is the graph: relays linked to each other; every other node
// dials one relay and, from the second on, one earlier non-relay node (a
// random tree), and one node in eight one more random earlier node.
func simEdges(plan SimPlan, rng *rand.Rand) map[string][]string {
	dials := map[string][]string{}
	for i := 1; i < plan.Relays; i++ {
		for j := range i {
			dials[relayID(i)] = append(dials[relayID(i)], relayID(j))
		}
	}
	members := plan.Nodes - plan.Relays
	for i := range members {
		id := memberID(i)
		dials[id] = append(dials[id], relayID(rng.IntN(plan.Relays)))
		if i > 0 {
			dials[id] = append(dials[id], memberID(rng.IntN(i)))
		}
		if i > 1 && rng.IntN(8) == 0 {
			if j := memberID(rng.IntN(i)); !slices.Contains(dials[id], j) {
				dials[id] = append(dials[id], j)
			}
		}
	}
	return dials
}

// waitAllSee waits until every node in ns lists id, or (gone) none does,
// or until ctx ends.
func waitAllSee(ctx context.Context, ns []*mesh.Node, id string, gone bool) error {
	for _, n := range ns {
		if n.ID() == id {
			continue
		}
		for {
			ch := n.Changed()
			if _, ok := n.Peer(id); ok != gone {
				break
			}
			select {
			case <-ch:
			case <-ctx.Done():
				if gone {
					return fmt.Errorf("node %s still sees %s: %w", n.ID(), id, ctx.Err())
				}
				return fmt.Errorf("node %s does not see %s: %w", n.ID(), id, ctx.Err())
			}
		}
	}
	return nil
}

// waitSeesAll waits until n lists every node of ns but itself, or until
// ctx ends.
func waitSeesAll(ctx context.Context, n *mesh.Node, ns []*mesh.Node) error {
	for {
		ch := n.Changed()
		missing := ""
		for _, o := range ns {
			if o != n {
				if _, ok := n.Peer(o.ID()); !ok {
					missing = o.ID()
					break
				}
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node %s does not see %s: %w", n.ID(), missing, ctx.Err())
		}
	}
}

// waitSimConverged waits until every node sees every other.
func waitSimConverged(ctx context.Context, ns []*mesh.Node) error {
	for _, n := range ns {
		if err := waitSeesAll(ctx, n, ns); err != nil {
			return err
		}
	}
	return nil
}

// simGaps describes an unconverged cluster: how many nodes miss others,
// and how many of the links they dial are up, which tells links lost to
// an overloaded machine from gossip that did not arrive.
func simGaps(ns []*mesh.Node, dials map[string][]string) string {
	live := make(map[string]bool, len(ns))
	for _, n := range ns {
		live[n.ID()] = true
	}
	planned, up, short, pairs := 0, 0, 0, 0
	for _, n := range ns {
		for _, p := range dials[n.ID()] {
			if live[p] {
				planned++
			}
		}
		up += n.Stats().Links
		if missing := len(ns) - 1 - len(n.Peers()); missing > 0 {
			short++
			pairs += missing
		}
	}
	return fmt.Sprintf("%d of %d nodes miss others, %d pairs in all; %d link ends up for %d planned links",
		short, len(ns), pairs, up, planned)
}

// traffic measures what the links carry per node per second over d:
// all link records, and gossip alone. With churn, every ChurnEvery one
// node is killed and a new one joins.
func (c *simCluster) traffic(ctx context.Context, d time.Duration, churn bool) (bytes, gossip float64, err error) {
	nodes := float64(len(c.members()))
	b0, g0, t0 := c.nw.TotalStats().BytesSent, c.gossipSent(), time.Now()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	var tick <-chan time.Time
	if churn {
		tk := time.NewTicker(c.plan.ChurnEvery)
		defer tk.Stop()
		tick = tk.C
	}
	for done := false; !done; {
		select {
		case <-deadline.C:
			done = true
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-tick:
			if id := c.randomMember(); id != "" {
				c.kill(id)
			}
			if _, err := c.join(ctx); err != nil {
				return 0, 0, err
			}
		}
	}
	secs := time.Since(t0).Seconds()
	b1, g1 := c.nw.TotalStats().BytesSent, c.gossipSent()
	return float64(b1-b0) / nodes / secs, float64(g1-g0) / nodes / secs, nil
}

// Simulate builds a cluster by plan on an in-memory LAN and measures it:
// the build, a join, a killed node, traffic at rest and during churn,
// memory and goroutines per node.
func Simulate(ctx context.Context, plan SimPlan) (SimResult, error) {
	if plan.Relays < 1 || plan.Nodes <= plan.Relays+1 {
		return SimResult{}, fmt.Errorf("simulate: %d nodes with %d relays; need at least one relay and two other nodes", plan.Nodes, plan.Relays)
	}
	r := SimResult{Plan: plan}
	log := plan.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	nw := meshtest.NewNetwork(plan.Seed)
	nw.SetDefault(meshtest.LAN())
	c := &simCluster{plan: plan, nw: nw, secret: randomSecret(), rng: rand.New(rand.NewPCG(plan.Seed, 1)), live: map[string]*mesh.Node{}}
	defer c.Close()

	mem0, g0 := memInUse(), runtime.NumGoroutine()
	dials := simEdges(plan, rand.New(rand.NewPCG(plan.Seed, 2)))
	ids := make([]string, 0, plan.Nodes)
	for i := range plan.Relays {
		ids = append(ids, relayID(i))
	}
	for i := range plan.Nodes - plan.Relays {
		ids = append(ids, memberID(i))
	}
	// Built in waves, each joining the converged cluster before it:
	// started all at once, a few hundred nodes sharing this machine's
	// CPUs starve their own heartbeats, and the links that time out
	// redial and resync, which feeds the storm (every node does the work
	// of its own machine here).
	t0 := time.Now()
	for first := 0; first < len(ids); first += simWave {
		for _, id := range ids[first:min(first+simWave, len(ids))] {
			if _, err := c.start(ctx, id, dials[id]); err != nil {
				return r, err
			}
		}
		wctx, cancel := context.WithTimeout(ctx, simBuildLimit)
		err := waitSimConverged(wctx, c.members())
		cancel()
		if err != nil {
			return r, fmt.Errorf("building %d nodes in waves of %d, at %d: %w (%s)", plan.Nodes, simWave, first+simWave, err, simGaps(c.members(), dials))
		}
		log.Info("sim: wave converged", "nodes", min(first+simWave, len(ids)), "took", time.Since(t0).Round(time.Millisecond))
	}
	r.Build = time.Since(t0)

	// At rest, once the new links' first RTTs have been announced:
	// traffic, then memory and goroutines.
	select {
	case <-time.After(plan.Settle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	var err error
	if r.RestBytes, r.RestGossip, err = c.traffic(ctx, plan.Rest, false); err != nil {
		return r, err
	}
	mem1, g1 := memInUse(), runtime.NumGoroutine()
	r.MemPerNode = (float64(mem1) - float64(mem0)) / float64(plan.Nodes)
	r.GoroutinesPerNode = float64(g1-g0) / float64(plan.Nodes)

	mctx, cancel := context.WithTimeout(ctx, simMeasureLimit)
	defer cancel()
	t1, cpu1 := time.Now(), cpuNow()
	j, err := c.join(mctx)
	if err != nil {
		return r, err
	}
	ns := c.members()
	if err := waitAllSee(mctx, ns, j.ID(), false); err != nil {
		return r, fmt.Errorf("join: %w", err)
	}
	if err := waitSeesAll(mctx, j, ns); err != nil {
		return r, fmt.Errorf("join: %w", err)
	}
	r.Join, r.JoinCPU = time.Since(t1), cpuNow()-cpu1

	victim := c.randomMember()
	if victim == "" {
		return r, errors.New("simulate: no node left to kill")
	}
	t2, cpu2 := time.Now(), cpuNow()
	c.kill(victim)
	if err := waitAllSee(mctx, c.members(), victim, true); err != nil {
		return r, fmt.Errorf("after %s was killed: %w", victim, err)
	}
	r.Killed, r.KilledCPU = time.Since(t2), cpuNow()-cpu2

	if r.ChurnBytes, r.ChurnGossip, err = c.traffic(ctx, plan.Churn, true); err != nil {
		return r, err
	}
	return r, nil
}

// simPlans is what the suite simulates.
func simPlans(o Options) []SimPlan {
	if o.Quick {
		return []SimPlan{{Nodes: 64, Relays: 2, Settle: 2 * time.Second, Rest: 2 * time.Second, Churn: 2 * time.Second, ChurnEvery: 500 * time.Millisecond, Seed: 1}}
	}
	return []SimPlan{
		{Nodes: 256, Relays: 4, Settle: 15 * time.Second, Rest: 10 * time.Second, Churn: 10 * time.Second, ChurnEvery: time.Second, Seed: 1},
		{Nodes: 1000, Relays: 8, Settle: 15 * time.Second, Rest: 10 * time.Second, Churn: 10 * time.Second, ChurnEvery: time.Second, Seed: 1},
	}
}

func runSim(ctx context.Context, o Options) ([]Metric, error) {
	log := o.logger()
	var out []Metric
	for _, plan := range simPlans(o) {
		log.Info("sim: simulating", "nodes", plan.Nodes, "relays", plan.Relays)
		plan.Logger = log
		r, err := Simulate(ctx, plan)
		if err != nil {
			return out, fmt.Errorf("%d nodes: %w", plan.Nodes, err)
		}
		out = append(out, r.metrics()...)
	}
	return out, nil
}

// metrics turns a result into the suite's figures.
func (r SimResult) metrics() []Metric {
	p := r.Plan
	name := func(s string) string { return fmt.Sprintf("%s, %d nodes", s, p.Nodes) }
	graph := fmt.Sprintf("in-memory LAN (%v one way), DefaultLANConfig timings but DeadAfter %v, %d relays, sparse random graph", meshtest.LAN().Delay, simDeadAfter, p.Relays)
	churn := fmt.Sprintf("one node killed and one joining every %v, over %v", p.ChurnEvery, p.Churn)
	return []Metric{
		{Name: name("sim: convergence after a join"), Value: ms(r.Join), Unit: "ms", Goal: AtMost(5000),
			Note: fmt.Sprintf("from the new node's start until it sees all and all see it; %s; the process spent %.2f CPU-s (%.2f ms per node)", graph, r.JoinCPU.Seconds(), ms(r.JoinCPU)/float64(p.Nodes))},
		{Name: name("sim: convergence after a node is killed"), Value: ms(r.Killed), Unit: "ms", Goal: AtMost(5000),
			Note: fmt.Sprintf("connections reset, as when its process dies; until no node lists it; the process spent %.2f CPU-s", r.KilledCPU.Seconds())},
		{Name: name("sim: build"), Value: ms(r.Build), Unit: "ms", Note: fmt.Sprintf("nodes joining in waves of %d, each wave until every node sees every other", simWave)},
		{Name: name("sim: link bytes per node per second at rest"), Value: r.RestBytes, Unit: "B/s", Goal: AtMost(1024),
			Note: fmt.Sprintf("all link records (heartbeats, gossip, tags) over %v; no WebSocket or TCP/IP headers", p.Rest)},
		{Name: name("sim: gossip bytes per node per second at rest"), Value: r.RestGossip, Unit: "B/s"},
		{Name: name("sim: link bytes per node per second during churn"), Value: r.ChurnBytes, Unit: "B/s", Note: churn},
		{Name: name("sim: gossip bytes per node per second during churn"), Value: r.ChurnGossip, Unit: "B/s", Note: churn},
		{Name: name("sim: memory per node"), Value: r.MemPerNode / 1024, Unit: "KB", Note: "heap in use + stacks at rest, each node holding the whole topology"},
		{Name: name("sim: goroutines per node"), Value: r.GoroutinesPerNode, Unit: ""},
	}
}
