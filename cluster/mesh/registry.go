package mesh

import (
	"sort"
	"sync"
	"time"
)

func (n *Node) linkTo(peer string) *link {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.links[peer]; l != nil && !l.isDown() {
		return l
	}
	return nil
}

// regLock serializes registrations for one peer id.
type regLock struct {
	mu   sync.Mutex
	refs int
}

func (n *Node) lockPeer(id string) func() {
	n.mu.Lock()
	r := n.regs[id]
	if r == nil {
		r = &regLock{}
		n.regs[id] = r
	}
	r.refs++
	n.mu.Unlock()
	r.mu.Lock()
	return func() {
		r.mu.Unlock()
		n.mu.Lock()
		r.refs--
		if r.refs == 0 {
			delete(n.regs, id)
		}
		n.mu.Unlock()
	}
}

// probeTimeout is how long a liveness probe of an existing link may take.
func (n *Node) probeTimeout() time.Duration {
	return min(max(n.cfg.DeadAfter/2, 2*n.cfg.PingInterval), 2*time.Second)
}

// register installs a freshly authenticated link. When a link to the same
// node id exists already, one of them is closed:
//
//   - Same incarnation, same direction: the peer redialed because it
//     considers the old link dead; the new link replaces it (CloseReplaced).
//   - Same incarnation, opposite directions: both nodes dialed each other.
//     The link dialed by the node with the smaller id is kept on both sides
//     (CloseDuplicateLink for the other), so they settle on one link
//     whatever order the handshakes finish in.
//   - Different incarnation: the old link is probed with a ping. If it does
//     not answer, it is stale (the peer restarted, or the network dropped it
//     silently) and the new link replaces it (CloseReplaced). If it answers,
//     a second live process claims the id, and the newcomer is refused
//     (CloseDuplicateNode).
func (n *Node) register(l *link) error {
	unlock := n.lockPeer(l.peer)
	defer unlock()
	for {
		n.mu.Lock()
		if n.closing {
			n.mu.Unlock()
			return authFail(CloseShutdown, "")
		}
		old := n.links[l.peer]
		if old == nil || old.isDown() {
			n.installLocked(l)
			n.mu.Unlock()
			n.checkStreams()
			return nil
		}
		n.mu.Unlock()

		replace := false
		switch {
		case old.incarnation == l.incarnation && old.outbound == l.outbound:
			replace = true
		case old.incarnation == l.incarnation:
			// Simultaneous dial by the same process (the new handshake
			// proves it is alive): keep the link dialed by the smaller id,
			// without a probe, which could not be answered while the
			// peer is registering its side of the other link.
			dialerOfNew := l.peer
			if l.outbound {
				dialerOfNew = n.id
			}
			if dialerOfNew != min(n.id, l.peer) {
				return authFail(CloseDuplicateLink, "")
			}
			n.mu.Lock()
			if n.links[l.peer] == old {
				delete(n.links, l.peer)
			}
			n.mu.Unlock()
			old.close(CloseDuplicateLink, "")
			continue
		case !old.probe(n.probeTimeout()):
			replace = true
		default:
			n.log.Warn("mesh: refused a second live node claiming an existing id", "peer", l.peer)
			return authFail(CloseDuplicateNode, "duplicate node id %q: a live node with this id is connected", l.peer)
		}
		if replace {
			n.mu.Lock()
			if n.links[l.peer] == old {
				delete(n.links, l.peer)
			}
			n.mu.Unlock()
			n.log.Info("mesh: replacing link", "peer", l.peer)
			old.close(CloseReplaced, "")
		}
	}
}

// installLocked makes l the link to its peer and tells the cluster.
func (n *Node) installLocked(l *link) {
	n.links[l.peer] = l
	// From now on Close ends it as a link, with CloseShutdown; as a
	// pending connection it would be dropped without a word.
	delete(n.pending, l.conn)
	n.log.Info("mesh: link up", "peer", l.peer, "outbound", l.outbound)
	// Full sync to the new peer; it forwards only what is news to it.
	for origin, e := range n.topo.entries {
		l.q.pushGossip(origin, e.raw)
	}
	n.announceSoonLocked()
	n.recomputeLocked()
}

// linkDown is called once by a link's reader when the link has ended.
func (n *Node) linkDown(l *link) {
	n.mu.Lock()
	if n.links[l.peer] == l {
		delete(n.links, l.peer)
		n.log.Info("mesh: link down", "peer", l.peer)
		if !n.closing {
			n.announceSoonLocked()
			n.recomputeLocked()
		}
	}
	n.mu.Unlock()
	n.failStreamsOnLink(l)
	n.checkStreams()
	close(l.exited)
}

// sortedLinksLocked returns the active links sorted by peer id.
func (n *Node) sortedLinksLocked() []*link {
	ls := make([]*link, 0, len(n.links))
	for _, l := range n.links {
		if !l.isDown() {
			ls = append(ls, l)
		}
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].peer < ls[j].peer })
	return ls
}
