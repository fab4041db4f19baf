package cluster

import (
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// StatusPath is where the model proxy serves the node's status, behind its
// bearer key (docs/STATUS.md).
const StatusPath = "/status.json"

// Peer states in a status document.
const (
	StateDirect  = "direct"  // a direct link
	StateRelayed = "relayed" // reached through other nodes
	StateDown    = "down"    // known, but not reachable now
)

// Status is the live state of a running node: the document GET
// /status.json serves (docs/STATUS.md, which is its contract).
type Status struct {
	Node       StatusNode    `json:"node"`
	Peers      []StatusPeer  `json:"peers"`
	LastErrors []StatusError `json:"lastErrors"`
}

// StatusNode is the node itself.
type StatusNode struct {
	ID          string        `json:"id"`
	Version     string        `json:"version"`
	PublicKey   string        `json:"publicKey"`
	Fingerprint string        `json:"fingerprint"`
	Tags        []string      `json:"tags"`
	Agents      []StatusAgent `json:"agents"`
	Models      []string      `json:"models"`
}

// StatusAgent is an agent a node offers.
type StatusAgent struct {
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
}

// StatusPeer is another node: reachable now, or known and down.
type StatusPeer struct {
	ID    string `json:"id"`
	State string `json:"state"`
	// Via is the next hop toward a relayed node.
	Via string `json:"via,omitempty"`
	// RTTMs is the round trip in milliseconds, when measured.
	RTTMs *float64 `json:"rttMs,omitempty"`
	// Agents, Models and Tags are what the node offers; for a down node,
	// what it offered when last reachable (empty if never seen this run).
	Agents []StatusAgent `json:"agents"`
	Models []string      `json:"models"`
	Tags   []string      `json:"tags"`
	// Fingerprint is the node key it is reached with, or for a down node
	// the key pinned for it; empty when none is known.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Revoked: the node is refused for good (revoke command or config).
	Revoked bool `json:"revoked,omitempty"`
	// LastSeen is when a down node was last reachable, if it was this run.
	LastSeen *time.Time `json:"lastSeen,omitempty"`
}

// maxSeen bounds the nodes remembered as seen this run.
const maxSeen = 1024

// seenPeer is what a node offered when it was last reachable.
type seenPeer struct {
	caps mesh.Capabilities
	key  ed25519.PublicKey
	last time.Time
}

// peerBook remembers the nodes that were reachable during this run, so a
// node that went down is still listed, with what it offered.
type peerBook struct {
	mu    sync.Mutex
	peers map[string]*seenPeer
	now   map[string]bool // reachable at the last note
}

// note records the reachable nodes; those reachable until now but not any
// more get now as their last sighting.
func (b *peerBook) note(node *mesh.Node, at time.Time) {
	peers := node.Peers()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.peers == nil {
		b.peers = map[string]*seenPeer{}
	}
	current := make(map[string]bool, len(peers))
	for _, p := range peers {
		current[p.NodeID] = true
		s := b.peers[p.NodeID]
		if s == nil {
			s = &seenPeer{}
			b.peers[p.NodeID] = s
		}
		s.caps, s.last = p.Capabilities, at
		if k := node.PeerKey(p.NodeID); k != nil {
			s.key = k
		}
	}
	for id := range b.now {
		if !current[id] && b.peers[id] != nil {
			b.peers[id].last = at
		}
	}
	b.now = current
	for len(b.peers) > maxSeen {
		var oldest string
		for id, s := range b.peers {
			if !current[id] && (oldest == "" || s.last.Before(b.peers[oldest].last)) {
				oldest = id
			}
		}
		if oldest == "" {
			break
		}
		delete(b.peers, oldest)
	}
}

func (b *peerBook) get(id string) (seenPeer, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s, ok := b.peers[id]
	if !ok {
		return seenPeer{}, false
	}
	return *s, true
}

func (b *peerBook) ids() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.peers))
	for id := range b.peers {
		out = append(out, id)
	}
	return out
}

// Status is the node's live state: itself, every node it reaches or knows
// of, and its recent warnings and errors.
func (r *Runtime) Status() Status {
	pub := r.node.PublicKey()
	caps := Capabilities(r.cfg)
	st := Status{
		Node: StatusNode{
			ID: r.cfg.NodeID, Version: schema.Version,
			PublicKey: identity.FormatPublicKey(pub), Fingerprint: identity.Fingerprint(pub),
			Tags: nonNil(caps.Tags), Agents: agentsOf(caps), Models: modelsOf(caps),
		},
		Peers:      []StatusPeer{},
		LastErrors: r.errs.list(),
	}

	var store map[string]identity.Entry
	if r.known != nil {
		store = map[string]identity.Entry{}
		for _, e := range r.known.List() {
			store[e.NodeID] = e
		}
	}
	reachable := map[string]bool{}
	for _, p := range r.node.Peers() {
		reachable[p.NodeID] = true
		sp := StatusPeer{ID: p.NodeID, State: StateDirect, Agents: agentsOf(p.Capabilities),
			Models: modelsOf(p.Capabilities), Tags: nonNil(p.Tags)}
		if p.Status == mesh.StatusRelay {
			sp.State, sp.Via = StateRelayed, p.Via
		}
		if p.RTT > 0 {
			ms := float64(p.RTT.Round(10*time.Microsecond)) / float64(time.Millisecond)
			sp.RTTMs = &ms
		}
		if k := r.node.PeerKey(p.NodeID); k != nil {
			sp.Fingerprint = identity.Fingerprint(k)
		}
		sp.Revoked = store[p.NodeID].Revoked
		st.Peers = append(st.Peers, sp)
	}

	// Down: every other node this one knows of by config, by its
	// known-nodes file, or from having reached it this run.
	known := r.peers.ids()
	for _, p := range r.cfg.Peers {
		known = append(known, p.NodeID)
	}
	for _, t := range r.cfg.Trust {
		known = append(known, t.NodeID)
	}
	for id := range store {
		known = append(known, id)
	}
	slices.Sort(known)
	for _, id := range slices.Compact(known) {
		if id == "" || id == r.cfg.NodeID || reachable[id] {
			continue
		}
		sp := StatusPeer{ID: id, State: StateDown, Agents: []StatusAgent{}, Models: []string{}, Tags: []string{}}
		if s, ok := r.peers.get(id); ok {
			sp.Agents, sp.Models, sp.Tags = agentsOf(s.caps), modelsOf(s.caps), nonNil(s.caps.Tags)
			last := s.last.UTC()
			sp.LastSeen = &last
			if s.key != nil {
				sp.Fingerprint = identity.Fingerprint(s.key)
			}
		}
		if e, ok := store[id]; ok {
			sp.Revoked = e.Revoked
			if e.PublicKey != nil {
				sp.Fingerprint = identity.Fingerprint(e.PublicKey)
			}
		}
		st.Peers = append(st.Peers, sp)
	}
	slices.SortFunc(st.Peers, func(a, b StatusPeer) int { return strings.Compare(a.ID, b.ID) })
	return st
}

func agentsOf(c mesh.Capabilities) []StatusAgent {
	out := make([]StatusAgent, 0, len(c.Agents))
	for _, a := range c.Agents {
		out = append(out, StatusAgent{ID: a.ID, Description: a.Description})
	}
	return out
}

func modelsOf(c mesh.Capabilities) []string {
	out := make([]string, 0, len(c.Models))
	for _, m := range c.Models {
		out = append(out, m.ID)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

// statusHandler serves Status as JSON; the proxy has checked the key.
func (r *Runtime) statusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet && req.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed; use GET", http.StatusMethodNotAllowed)
			return
		}
		body, err := json.Marshal(r.Status())
		if err != nil {
			http.Error(w, "cannot encode the status", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(append(body, '\n'))
	})
}
