package telemetry

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// StateDown is the state of a node that was reachable and is not now.
const StateDown = "down"

// maxKnownPeers bounds the nodes remembered; the longest gone are
// forgotten first.
const maxKnownPeers = 1024

// KnownPeer is a node this node has seen.
type KnownPeer struct {
	NodeID string
	// Reachable says the node can be reached now; LastSeen is when it was
	// last reachable (now, for a reachable one) and Since when it became
	// reachable or unreachable.
	Reachable       bool
	LastSeen, Since time.Time
	// Last is the node as last seen (capabilities, status, route).
	Last mesh.PeerInfo
}

// peerMemory remembers the nodes seen, so that one that stops shows as
// down instead of vanishing.
type peerMemory struct {
	self  string
	mu    sync.Mutex
	known map[string]*KnownPeer
}

func newPeerMemory(self string) *peerMemory {
	return &peerMemory{self: self, known: map[string]*KnownPeer{}}
}

// watch updates the memory on every change of the mesh's view until ctx
// ends, and journals the nodes that become unreachable.
func (m *peerMemory) watch(ctx context.Context, n *mesh.Node, jr *Journal) {
	for {
		changed := n.Changed()
		m.update(n.Peers(), time.Now(), jr)
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

func (m *peerMemory) update(peers []mesh.PeerInfo, now time.Time, jr *Journal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[string]bool, len(peers))
	for _, p := range peers {
		seen[p.NodeID] = true
		k := m.known[p.NodeID]
		if k == nil {
			k = &KnownPeer{NodeID: p.NodeID}
			m.known[p.NodeID] = k
		}
		if !k.Reachable {
			k.Reachable, k.Since = true, now
		}
		k.LastSeen, k.Last = now, p
	}
	for id, k := range m.known {
		if !seen[id] && k.Reachable {
			k.Reachable, k.Since = false, now
			if jr != nil {
				jr.addError(ErrorEntry{At: now, Kind: "peer", Node: id, Message: "node " + id + " became unreachable"})
			}
		}
	}
	for len(m.known) > maxKnownPeers {
		var oldest *KnownPeer
		for _, k := range m.known {
			if !k.Reachable && (oldest == nil || k.LastSeen.Before(oldest.LastSeen)) {
				oldest = k
			}
		}
		if oldest == nil {
			break
		}
		delete(m.known, oldest.NodeID)
	}
}

// list returns every remembered node, sorted by id.
func (m *peerMemory) list() []KnownPeer {
	m.mu.Lock()
	out := make([]KnownPeer, 0, len(m.known))
	for _, k := range m.known {
		out = append(out, *k)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].NodeID < out[j].NodeID })
	return out
}

// NodeRefused records that node was cut off because its key is no longer
// trusted here (the revoke or trust command changed the known-nodes file
// while the node ran). A nil Telemetry records nothing.
func (t *Telemetry) NodeRefused(node, message string) {
	if t == nil {
		return
	}
	t.jr.addError(ErrorEntry{At: time.Now(), Kind: "peer", Node: node, Message: message})
}
