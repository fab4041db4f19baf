package mesh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

func TestDedupSetBounded(t *testing.T) {
	const size = 4
	d := newDedupSet(size)
	k := func(i int) dedupKey { return dedupKey{"a", uint64(i)} }
	steps := []struct {
		key  dedupKey
		want bool
	}{
		{k(1), true}, {k(1), false}, // a repeat is refused
		{dedupKey{"b", 1}, true},   // ids are per origin
		{k(2), true}, {k(3), true}, // set full: a1 b1 a2 a3
		{k(4), true},             // evicts the oldest, a1
		{k(1), true},             // so a1 counts as new again, evicting b1
		{k(3), false},            // still remembered
		{dedupKey{"b", 1}, true}, // evicted
	}
	for i, st := range steps {
		if got := d.add(st.key); got != st.want {
			t.Fatalf("step %d: add(%v) = %v, want %v", i, st.key, got, st.want)
		}
		if len(d.set) > size {
			t.Fatalf("step %d: %d ids remembered, bound is %d", i, len(d.set), size)
		}
	}
	for i := 0; i < 10*size; i++ {
		d.add(k(100 + i))
	}
	if len(d.set) != size {
		t.Fatalf("%d ids remembered after many adds, want %d", len(d.set), size)
	}
}

// A routed frame that arrives twice (as it may over two paths) runs once.
func TestDuplicateRoutedFrameDropped(t *testing.T) {
	a, b := pair(t)
	got := make(chan string, 4)
	b.Handle("probe", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		got <- string(r.Payload)
		return nil
	}))
	p := rawDial(t, b.URL(), "raw")
	p.login()
	waitUntil(t, b, 5*time.Second, "raw linked", func() bool { _, ok := b.Peer("raw"); return ok })
	before := b.Stats().DroppedDuplicate
	send := func(id, s uint64, body string) {
		p.sendFrame(&Frame{Type: typeReq, ID: id, From: "raw", To: "b", TTL: 4, Stream: s, Payload: appendStreamMsg(nil, &streamMsg{M: "probe", W: 1, D: []byte(body)})})
	}
	send(1, 1, "first")
	send(1, 2, "replayed id")
	send(2, 3, "second")
	ran := map[string]bool{}
	for len(ran) < 2 { // handlers run concurrently: any order
		select {
		case g := <-got:
			ran[g] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("handlers ran for %v only", ran)
		}
	}
	if !ran["first"] || !ran["second"] {
		t.Fatalf("handlers ran for %v, want first and second", ran)
	}
	if n := b.Stats().DroppedDuplicate - before; n != 1 {
		t.Fatalf("dropped %d duplicates, want 1", n)
	}
	stillServes(t, a, b)
}

func TestRouteTablePath(t *testing.T) {
	// self -> b -> c -> d, with link ids as announced.
	rt := &routeTable{
		self:   "a",
		parent: map[string]string{"b": "a", "c": "b", "d": "c"},
		edges:  map[edgeKey]uint64{{"a", "b"}: 1, {"b", "c"}: 2, {"c", "d"}: 3, {"c", "b"}: 2},
	}
	p := rt.path("d")
	if len(p) != 3 || p[0].edgeKey != (edgeKey{"c", "d"}) || p[2].edgeKey != (edgeKey{"a", "b"}) || p[1].since != 2 {
		t.Fatalf("path to d = %+v", p)
	}
	tests := []struct {
		name  string
		edit  func(map[edgeKey]uint64)
		ok    bool
		which edgeKey
	}{
		{"unchanged", func(map[edgeKey]uint64) {}, true, edgeKey{}},
		{"other link gone", func(e map[edgeKey]uint64) { delete(e, edgeKey{"c", "b"}) }, true, edgeKey{}},
		{"link gone", func(e map[edgeKey]uint64) { delete(e, edgeKey{"b", "c"}) }, false, edgeKey{"b", "c"}},
		{"link replaced", func(e map[edgeKey]uint64) { e[edgeKey{"c", "d"}] = 9 }, false, edgeKey{"c", "d"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := &routeTable{self: "a", parent: rt.parent, edges: map[edgeKey]uint64{}}
			for k, v := range rt.edges {
				now.edges[k] = v
			}
			tt.edit(now.edges)
			e, ok := now.intact(p)
			if ok != tt.ok || e != tt.which {
				t.Fatalf("intact = %v, %v; want %v, %v", e, ok, tt.which, tt.ok)
			}
		})
	}
	loop := &routeTable{self: "a", parent: map[string]string{"x": "y", "y": "x"}}
	if p := loop.path("x"); p != nil {
		t.Fatalf("path through a parent loop = %v, want nil", p)
	}
}

func TestRouteLostRecordsNewRoute(t *testing.T) {
	rt := &routeTable{
		self:   "a",
		next:   map[string]*link{"d": {}},
		parent: map[string]string{"b": "a", "d": "b"},
		edges:  map[edgeKey]uint64{{"a", "b"}: 1, {"b", "d"}: 2, {"a", "c"}: 3, {"c", "d"}: 4},
	}
	path := rt.path("d")
	// A new route a-c-d appears; the old one is still intact.
	rt.parent = map[string]string{"c": "a", "d": "c", "b": "a"}
	if why := routeLost(rt, "d", &path); why != "" {
		t.Fatalf("route change without a lost link failed the stream: %s", why)
	}
	if len(path) != 4 {
		t.Fatalf("recorded links %+v, want the old and the new route", path)
	}
	// Losing a link of the old route still fails it: frames may be on it.
	delete(rt.edges, edgeKey{"b", "d"})
	if why := routeLost(rt, "d", &path); why != "link b-d on the route was lost" {
		t.Fatalf("why = %q", why)
	}
	rt.next = map[string]*link{}
	if why := routeLost(rt, "d", &path); why != "no route" {
		t.Fatalf("why = %q", why)
	}
}

// TTL bounds hops: a frame that has run out of hops is dropped at the relay,
// one with a hop left is relayed and delivered.
func TestTTLBoundsHops(t *testing.T) {
	for _, tc := range []struct {
		hops int
		ok   bool
	}{{1, false}, {2, true}} {
		t.Run(strconv.Itoa(tc.hops), func(t *testing.T) {
			cfg := testConfig("a")
			cfg.MaxHops = tc.hops
			a := startNode(t, cfg)
			ns := startNodes(t, "b", "c")
			b, c := ns[0], ns[1]
			c.Handle("echo", echoHandler())
			dial(t, a, b)
			dial(t, c, b)
			waitAll(t, []*Node{a, b, c}, 5*time.Second)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := a.Call(ctx, "c", "echo", []byte("x"))
			if tc.ok != (err == nil) {
				t.Fatalf("MaxHops %d: call a->b->c: %v", tc.hops, err)
			}
			if !tc.ok && b.Stats().DroppedTTL == 0 {
				t.Fatalf("MaxHops %d: b dropped nothing for TTL", tc.hops)
			}
		})
	}
}

// computeRoutes is a pure function of the links and entries: each case
// lists them and the route expected to every node.
func TestComputeRoutes(t *testing.T) {
	entry := func(origin string, links ...string) *storedEntry {
		e := &storedEntry{nodeEntry: nodeEntry{Origin: origin, Caps: Capabilities{Tags: []string{"t-" + origin}}}}
		for i, p := range links {
			e.Links = append(e.Links, linkEntry{Peer: p, Since: uint64(i + 1), RTTMicros: 100})
		}
		return e
	}
	type want struct {
		status PeerStatus
		via    string
		hops   int
	}
	for _, tc := range []struct {
		name    string
		links   []string
		entries []*storedEntry
		want    map[string]want
	}{
		{"alone", nil, nil, map[string]want{}},
		{"direct links, no gossip yet", []string{"b", "c"}, nil,
			map[string]want{"b": {StatusConnected, "", 1}, "c": {StatusConnected, "", 1}}},
		{"relayed through b", []string{"b"}, []*storedEntry{entry("b", "a", "c"), entry("c", "b")},
			map[string]want{"b": {StatusConnected, "", 1}, "c": {StatusRelay, "b", 2}}},
		{"beyond b but no entry of its own yet", []string{"b"}, []*storedEntry{entry("b", "a", "c")},
			map[string]want{"b": {StatusConnected, "", 1}}},
		{"shortest path wins", []string{"b", "d"}, []*storedEntry{entry("b", "c"), entry("c", "e"), entry("d", "e"), entry("e")},
			map[string]want{"b": {StatusConnected, "", 1}, "d": {StatusConnected, "", 1}, "c": {StatusRelay, "b", 2}, "e": {StatusRelay, "d", 2}}},
		{"tie goes to the first link by id", []string{"b", "c"}, []*storedEntry{entry("b", "x"), entry("c", "x"), entry("x")},
			map[string]want{"b": {StatusConnected, "", 1}, "c": {StatusConnected, "", 1}, "x": {StatusRelay, "b", 2}}},
		{"unreachable entry is left out", []string{"b"}, []*storedEntry{entry("b"), entry("z", "y"), entry("y", "z")},
			map[string]want{"b": {StatusConnected, "", 1}}},
		{"three hops", []string{"b"}, []*storedEntry{entry("b", "c"), entry("c", "d"), entry("d")},
			map[string]want{"b": {StatusConnected, "", 1}, "c": {StatusRelay, "b", 2}, "d": {StatusRelay, "b", 3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var links []*link
			for i, p := range tc.links {
				links = append(links, &link{peer: p, epoch: uint64(100 + i), done: make(chan struct{})})
			}
			entries := map[string]*storedEntry{}
			for _, e := range tc.entries {
				entries[e.Origin] = e
			}
			rt := computeRoutes("a", links, entries)
			if len(rt.peers) != len(tc.want) {
				t.Fatalf("reached %v, want %v", rt.peers, tc.want)
			}
			for _, p := range rt.peers {
				w, ok := tc.want[p.NodeID]
				if !ok || p.Status != w.status || p.Via != w.via || p.Hops != w.hops {
					t.Fatalf("%s: %+v, want %+v", p.NodeID, p, w)
				}
				if rt.next[p.NodeID] == nil || (w.via == "" && rt.next[p.NodeID].peer != p.NodeID) || (w.via != "" && rt.next[p.NodeID].peer != w.via) {
					t.Fatalf("%s: next hop %v", p.NodeID, rt.next[p.NodeID])
				}
				if e := entries[p.NodeID]; e != nil && !slices.Equal(p.Tags, e.Caps.Tags) {
					t.Fatalf("%s: tags %v, want its entry's", p.NodeID, p.Tags)
				}
			}
			if p := rt.path("a"); p != nil {
				t.Fatalf("path to self = %v", p)
			}
		})
	}
}

// BenchmarkComputeRoutes builds the routes of a node of a cluster of
// sparse random links around 8 relays, as every node does on gossip news.
func BenchmarkComputeRoutes(b *testing.B) {
	for _, size := range []int{256, 1000} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			id := func(i int) string { return fmt.Sprintf("n%04d", i) }
			adj := make([][]int, size)
			connect := func(i, j int) { adj[i], adj[j] = append(adj[i], j), append(adj[j], i) }
			for i := 1; i < size; i++ {
				connect(i, rng.IntN(min(i, 8))) // a relay
				if i > 8 {
					connect(i, 8+rng.IntN(i-8)) // another node
				}
			}
			entries := map[string]*storedEntry{}
			for i := range size {
				e := &storedEntry{nodeEntry: nodeEntry{Origin: id(i), Caps: Capabilities{Tags: []string{"gpu"}}}}
				for _, j := range adj[i] {
					e.Links = append(e.Links, linkEntry{Peer: id(j), Since: uint64(j), RTTMicros: 300})
				}
				entries[id(i)] = e
			}
			self := size / 2
			var links []*link
			for _, j := range adj[self] {
				links = append(links, &link{peer: id(j)})
			}
			for b.Loop() {
				if rt := computeRoutes(id(self), links, entries); len(rt.peers) != size-1 {
					b.Fatalf("%d nodes reached, want %d", len(rt.peers), size-1)
				}
			}
		})
	}
}
