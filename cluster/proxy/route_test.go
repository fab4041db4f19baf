package proxy

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// fakeTopology is a meshNode whose peers a test sets directly, so routing
// decisions can be checked for exact RTTs.
type fakeTopology struct {
	mu      sync.Mutex
	id      string
	models  []mesh.ModelInfo
	peers   []mesh.PeerInfo
	changed chan struct{}
}

func newFakeTopology(id string, models ...string) *fakeTopology {
	f := &fakeTopology{id: id, changed: make(chan struct{})}
	for _, m := range models {
		f.models = append(f.models, mesh.ModelInfo{ID: m})
	}
	return f
}

func (f *fakeTopology) ID() string { return f.id }

func (f *fakeTopology) Capabilities() mesh.Capabilities {
	f.mu.Lock()
	defer f.mu.Unlock()
	return mesh.Capabilities{Models: f.models}
}

func (f *fakeTopology) Peers() []mesh.PeerInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]mesh.PeerInfo(nil), f.peers...)
}

func (f *fakeTopology) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// set replaces the peers and signals the change, as the mesh does.
func (f *fakeTopology) set(peers ...mesh.PeerInfo) {
	f.mu.Lock()
	f.peers = peers
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func peer(id string, rtt time.Duration, models ...string) mesh.PeerInfo {
	p := mesh.PeerInfo{NodeID: id, Status: mesh.StatusConnected, Hops: 1, RTT: rtt}
	for _, m := range models {
		p.Models = append(p.Models, mesh.ModelInfo{ID: m})
	}
	return p
}

// The least loaded node is chosen: fewest requests in flight from this
// proxy first, then the lowest RTT; failed nodes are not tried twice.
func TestRouterLeastLoaded(t *testing.T) {
	topo := newFakeTopology("a")
	topo.set(peer("far", 9*time.Millisecond, "m"), peer("near", time.Millisecond, "m"), peer("mid", 4*time.Millisecond, "m"))
	r := newRouter(topo, nil)
	cands, aerr := r.candidates("m")
	if aerr != nil {
		t.Fatal(aerr)
	}

	steps := []struct {
		op   string // "acquire" or "release <node>"
		want string
	}{
		{"acquire", "near"}, // all idle: lowest RTT
		{"acquire", "mid"},  // near has one in flight
		{"acquire", "far"},
		{"acquire", "near"}, // all have one: lowest RTT again
		{"release mid", ""},
		{"release far", ""},
		{"acquire", "mid"}, // mid and far have none now; mid is nearer
		{"acquire", "far"},
	}
	for i, s := range steps {
		if node, ok := strings.CutPrefix(s.op, "release "); ok {
			r.release(node)
			continue
		}
		if got := r.acquire(cands, nil); got != s.want {
			t.Fatalf("step %d: acquire = %q, want %q (in flight %v)", i, got, s.want, r.inflight)
		}
	}

	// Untried candidates only, in the same order, then "".
	r2 := newRouter(topo, nil)
	var order []string
	var tried []string
	for {
		n := r2.acquire(cands, tried)
		if n == "" {
			break
		}
		order = append(order, n)
		tried = append(tried, n)
		r2.release(n)
	}
	if strings.Join(order, ",") != "near,mid,far" {
		t.Fatalf("failover order %v, want near,mid,far", order)
	}
	if len(r2.inflight) != 0 {
		t.Fatalf("in-flight counts left after release: %v", r2.inflight)
	}

	// A peer not measured yet (RTT 0) ranks behind measured ones; this
	// node itself always comes first.
	topo2 := newFakeTopology("a", "m")
	topo2.set(peer("fresh", 0, "m"), peer("known", 3*time.Millisecond, "m"))
	r3 := newRouter(topo2, nil)
	cands, _ = r3.candidates("m")
	order = nil
	for {
		n := r3.acquire(cands, order)
		if n == "" {
			break
		}
		order = append(order, n)
	}
	if strings.Join(order, ",") != "a,known,fresh" {
		t.Fatalf("order %v, want a,known,fresh", order)
	}
}

// A new RTT measurement changes the choice once the index is rebuilt (a
// topology change rebuilds it at once).
func TestRouterFollowsTopology(t *testing.T) {
	topo := newFakeTopology("a")
	topo.set(peer("b", time.Millisecond, "m"), peer("c", 5*time.Millisecond, "m"))
	r := newRouter(topo, nil)
	cands, _ := r.candidates("m")
	if got := r.acquire(cands, nil); got != "b" {
		t.Fatalf("acquire = %q, want b", got)
	}
	r.release("b")

	topo.set(peer("b", 8*time.Millisecond, "m"), peer("c", 5*time.Millisecond, "m"))
	cands, _ = r.candidates("m")
	if got := r.acquire(cands, nil); got != "c" {
		t.Fatalf("after b got slower: acquire = %q, want c", got)
	}
	r.release("c")

	// The only server leaves: 503 naming the last node, not 404.
	topo.set(peer("b", time.Millisecond))
	_, aerr := r.candidates("m")
	if aerr == nil || aerr.Status != http.StatusServiceUnavailable || !strings.Contains(aerr.Message, `no reachable node serves model "m" now (last served by node "b")`) {
		t.Fatalf("candidates after the model left = %+v", aerr)
	}
}

func TestRouterCandidates(t *testing.T) {
	topo := newFakeTopology("a", "own")
	topo.set(peer("b", time.Millisecond, "m", "shared"), peer("c", 2*time.Millisecond, "shared"))
	r := newRouter(topo, []schema.ProxyModel{
		{ID: "m", NodeID: "c"},           // pinned to a node that does not list it: still c
		{ID: "ghost", NodeID: "nowhere"}, // pinned to an unknown node
		{ID: "wanted"},                   // listed without a pin, served by nobody
		{ID: "m", NodeID: "b"},           // a later duplicate does not win
		{ID: "shared", Description: "x"}, // no pin: every server
	})
	tests := []struct {
		model  string
		nodes  string
		status int
		msg    string
	}{
		{"own", "a", 0, ""},
		{"shared", "b,c", 0, ""},
		{"m", "c", 0, ""},
		{"ghost", "", 503, `model "ghost" is pinned to node "nowhere" (proxyModels), which is not reachable now (reachable: a, b, c)`},
		{"wanted", "", 503, `no reachable node serves model "wanted" (listed in proxyModels); reachable nodes: a, b, c`},
		{"zzz", "", 404, `model "zzz" is not served by any node in the cluster; available models: m, own, shared`},
	}
	for _, tt := range tests {
		nodes, aerr := r.candidates(tt.model)
		if tt.status == 0 {
			if aerr != nil || strings.Join(nodes, ",") != tt.nodes {
				t.Errorf("candidates(%q) = %v, %v; want %s", tt.model, nodes, aerr, tt.nodes)
			}
			continue
		}
		if aerr == nil || aerr.Status != tt.status || aerr.Message != tt.msg {
			t.Errorf("candidates(%q) = %v, %+v; want %d %q", tt.model, nodes, aerr, tt.status, tt.msg)
		}
	}
}
