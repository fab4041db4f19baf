package mesh

import (
	"sort"
	"time"
)

// What the node shows of itself for metrics and the status page. These read
// the current state on demand; nothing is counted on the hot path for them.

// LinkStat is one direct link of this node.
type LinkStat struct {
	Peer string
	// RTT is the latest measured round trip; zero until the first pong.
	RTT time.Duration
	// QueuedBytes are the frames waiting in the link's write queue.
	QueuedBytes int
	// Outbound says this node dialed the link.
	Outbound bool
}

// LinkStats returns this node's direct links, sorted by peer.
func (n *Node) LinkStats() []LinkStat {
	n.mu.Lock()
	links := n.sortedLinksLocked()
	n.mu.Unlock()
	out := make([]LinkStat, 0, len(links))
	for _, l := range links {
		out = append(out, LinkStat{Peer: l.peer, RTT: time.Duration(l.rtt.Load()), QueuedBytes: l.q.queued(), Outbound: l.outbound})
	}
	return out
}

// Edge is one direct link between two nodes of the cluster.
type Edge struct {
	From, To string
	// RTT is the link's round trip as its From node measures (its own
	// links) or announced it (other nodes' links); zero when not known.
	RTT time.Duration
}

// Edges returns the links among the nodes this node can reach, itself
// included: its own, and those each reachable node announces, one edge per
// pair of nodes (the smaller id first), sorted.
func (n *Node) Edges() []Edge {
	rt := n.routes.Load()
	reach := func(id string) bool {
		_, ok := rt.index[id]
		return ok || id == n.id
	}
	type pair struct{ a, b string }
	seen := map[pair]int{}
	var out []Edge
	add := func(u, v string, rtt time.Duration) {
		if !reach(u) || !reach(v) {
			return
		}
		a, b := u, v
		if b < a {
			a, b = b, a
		}
		if i, ok := seen[pair{a, b}]; ok {
			if out[i].RTT == 0 {
				out[i].RTT = rtt
			}
			return
		}
		seen[pair{a, b}] = len(out)
		out = append(out, Edge{From: a, To: b, RTT: rtt})
	}
	for _, l := range n.LinkStats() {
		add(n.id, l.Peer, l.RTT)
	}
	n.mu.Lock()
	for id, e := range n.topo.entries {
		if !reach(id) {
			continue
		}
		for _, le := range e.Links {
			add(id, le.Peer, time.Duration(le.RTTMicros)*time.Microsecond)
		}
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].From != out[j].From {
			return out[i].From < out[j].From
		}
		return out[i].To < out[j].To
	})
	return out
}

// Path returns the nodes a frame to `to` passes on the current route: this
// node, the relays, then `to`; nil when `to` is not reachable.
func (n *Node) Path(to string) []string {
	if to == n.id {
		return []string{n.id}
	}
	rt := n.routes.Load()
	p := rt.path(to)
	if p == nil {
		return nil
	}
	out := make([]string, 0, len(p)+1)
	out = append(out, n.id)
	for i := len(p) - 1; i >= 0; i-- {
		out = append(out, p[i].v)
	}
	return out
}
