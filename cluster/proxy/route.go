package proxy

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// indexMaxAge is how long a routing index is used before it is rebuilt to
// pick up new RTT measurements (topology changes rebuild it at once).
const indexMaxAge = time.Second

// unknownRTT ranks a peer whose RTT is not measured yet behind every
// measured one, so a fresh link to a far node does not look nearest.
const unknownRTT = time.Duration(1<<63 - 1)

// maxSeen bounds the memory of models seen on nodes that have since gone.
const maxSeen = 4096

// router picks the nodes for a model: the pinned one, or every reachable node
// serving it, least loaded first.
type router struct {
	node meshNode
	pins map[string]schema.ProxyModel

	mu       sync.Mutex
	idx      *index
	inflight map[string]int
	// seen remembers, for models no longer reachable, the last node that
	// served them, so a vanished model gets 503 rather than 404.
	seen map[string]string
}

// meshNode is what the router needs from *mesh.Node.
type meshNode interface {
	ID() string
	Peers() []mesh.PeerInfo
	Capabilities() mesh.Capabilities
	Changed() <-chan struct{}
}

type index struct {
	built     time.Time
	changed   <-chan struct{}
	models    map[string][]string // model id -> node ids, sorted
	rtt       map[string]time.Duration
	reachable []string // every reachable node id, this one included, sorted
}

func newRouter(node meshNode, pins []schema.ProxyModel) *router {
	r := &router{node: node, pins: make(map[string]schema.ProxyModel, len(pins)), inflight: map[string]int{}, seen: map[string]string{}}
	for _, p := range pins {
		if _, dup := r.pins[p.ID]; !dup {
			r.pins[p.ID] = p
		}
	}
	return r
}

// current returns an up-to-date index; call with r.mu held.
func (r *router) currentLocked() *index {
	if r.idx != nil && time.Since(r.idx.built) < indexMaxAge {
		select {
		case <-r.idx.changed:
		default:
			return r.idx
		}
	}
	changed := r.node.Changed() // taken first so no change is missed
	idx := &index{built: time.Now(), changed: changed, models: map[string][]string{}, rtt: map[string]time.Duration{}}
	add := func(id string, rtt time.Duration, models []mesh.ModelInfo) {
		idx.rtt[id] = rtt
		idx.reachable = append(idx.reachable, id)
		for _, m := range models {
			if l := idx.models[m.ID]; len(l) == 0 || l[len(l)-1] != id {
				idx.models[m.ID] = append(l, id)
			}
		}
	}
	self := r.node.ID()
	add(self, 0, r.node.Capabilities().Models)
	for _, p := range r.node.Peers() {
		rtt := p.RTT
		if rtt <= 0 {
			rtt = unknownRTT
		}
		add(p.NodeID, rtt, p.Models)
	}
	sort.Strings(idx.reachable)
	for m, nodes := range idx.models {
		sort.Strings(nodes)
		if len(r.seen) < maxSeen || r.seen[m] != "" {
			r.seen[m] = nodes[0]
		}
	}
	r.idx = idx
	return idx
}

// modelEntry is one model for GET /v1/models.
type modelEntry struct {
	ID    string
	Nodes []string
}

func (r *router) models() []modelEntry {
	r.mu.Lock()
	idx := r.currentLocked()
	r.mu.Unlock()
	out := make([]modelEntry, 0, len(idx.models))
	for id, nodes := range idx.models {
		out = append(out, modelEntry{ID: id, Nodes: nodes})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// candidates returns the nodes that may serve model, or the error to answer.
func (r *router) candidates(model string) ([]string, *apiError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := r.currentLocked()
	if pin, ok := r.pins[model]; ok && pin.NodeID != "" {
		if _, ok := idx.rtt[pin.NodeID]; ok {
			return []string{pin.NodeID}, nil
		}
		return nil, &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: codeModelUnavailable,
			Message: fmt.Sprintf("model %q is pinned to node %q (proxyModels), which is not reachable now (reachable: %s)", model, pin.NodeID, strings.Join(idx.reachable, ", "))}
	}
	if nodes := idx.models[model]; len(nodes) > 0 {
		return nodes, nil
	}
	if last, ok := r.seen[model]; ok {
		return nil, &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: codeModelUnavailable,
			Message: fmt.Sprintf("no reachable node serves model %q now (last served by node %q)", model, last)}
	}
	if _, ok := r.pins[model]; ok {
		return nil, &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: codeModelUnavailable,
			Message: fmt.Sprintf("no reachable node serves model %q (listed in proxyModels); reachable nodes: %s", model, strings.Join(idx.reachable, ", "))}
	}
	ids := make([]string, 0, len(idx.models))
	for id := range idx.models {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	avail := "none"
	if len(ids) > 0 {
		avail = strings.Join(ids, ", ")
	}
	return nil, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: codeModelNotFound,
		Message: fmt.Sprintf("model %q is not served by any node in the cluster; available models: %s", model, avail)}
}

// acquire picks the least loaded of the untried candidates (fewest requests
// in flight from this proxy, then lowest RTT) and counts a request on it.
// It returns "" when every candidate has been tried.
func (r *router) acquire(cands []string, tried []string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := r.currentLocked()
	best := ""
	for _, c := range cands {
		if contains(tried, c) {
			continue
		}
		if best == "" || r.inflight[c] < r.inflight[best] ||
			(r.inflight[c] == r.inflight[best] && idx.rtt[c] < idx.rtt[best]) {
			best = c
		}
	}
	if best != "" {
		r.inflight[best]++
	}
	return best
}

func (r *router) release(node string) {
	r.mu.Lock()
	if r.inflight[node]--; r.inflight[node] <= 0 {
		delete(r.inflight, node)
	}
	r.mu.Unlock()
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
