package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// routeTable is an immutable snapshot of where every reachable node is. It
// is rebuilt under Node.mu on every topology change and read lock-free on
// the hot path.
type routeTable struct {
	self   string
	next   map[string]*link   // next-hop link per reachable node
	peers  []PeerInfo         // sorted by NodeID
	beyond []time.Duration    // per peers entry: RTT past the first hop, as gossiped
	index  map[string]int     // NodeID -> position in peers
	parent map[string]string  // previous node on the shortest path
	edges  map[edgeKey]uint64 // usable links, as announced by their first node
}

// edgeKey is a directed link u -> v as u announces it.
type edgeKey struct{ u, v string }

// pathEdge is one link of a recorded route, with the id (Since) of the link
// that carried it, so a replaced link counts as broken.
type pathEdge struct {
	edgeKey
	since uint64
}

// path returns the links from this node to `to` on the current route.
func (rt *routeTable) path(to string) []pathEdge {
	var p []pathEdge
	for v := to; v != rt.self; {
		u, ok := rt.parent[v]
		if !ok || len(p) > len(rt.parent) {
			return nil
		}
		k := edgeKey{u, v}
		p = append(p, pathEdge{k, rt.edges[k]})
		v = u
	}
	return p
}

// intact reports whether every link of p still exists as it was.
func (rt *routeTable) intact(p []pathEdge) (edgeKey, bool) {
	for _, e := range p {
		if since, ok := rt.edges[e.edgeKey]; !ok || since != e.since {
			return e.edgeKey, false
		}
	}
	return edgeKey{}, true
}

// computeRoutes runs a breadth-first search from self over its own links
// and the gossiped links of the nodes it reaches. Edges are taken from the
// side that announces them, so a node whose neighbours all dropped it is
// withdrawn even though its own stale entry still lists them.
//
// It builds the route table of node self from its live links
// (sorted by peer id) and the topology entries it holds. It depends on its
// arguments only. A node is reached through the first link (in that order)
// on a shortest path; a node beyond the first hop counts only once its own
// signed entry has arrived, since without its key it cannot be reached end
// to end.
func computeRoutes(self string, links []*link, entries map[string]*storedEntry) *routeTable {
	type hop struct {
		via    *link
		hops   int
		beyond time.Duration // RTT past the first hop, from gossip
	}
	reach := make(map[string]hop, len(entries))
	queue := make([]string, 0, len(entries))
	parent := make(map[string]string, len(entries))
	// Sized for every announced link at once: growing it rehashed every
	// edge several times, the most of the cost in a large cluster.
	announced := len(links)
	for _, e := range entries {
		announced += len(e.Links)
	}
	edges := make(map[edgeKey]uint64, announced)
	for _, l := range links {
		reach[l.peer] = hop{via: l, hops: 1}
		queue = append(queue, l.peer)
		parent[l.peer] = self
		edges[edgeKey{self, l.peer}] = l.epoch
	}
	for i := 0; i < len(queue); i++ {
		u := queue[i]
		e := entries[u]
		if e == nil {
			continue
		}
		hu := reach[u]
		for _, le := range e.Links {
			v := le.Peer
			edges[edgeKey{u, v}] = le.Since
			if v == self {
				continue
			}
			if _, ok := reach[v]; ok {
				continue
			}
			if entries[v] == nil {
				// Known only from a neighbour's word: without its own
				// signed entry there is no key to reach it end to end.
				continue
			}
			reach[v] = hop{via: hu.via, hops: hu.hops + 1, beyond: hu.beyond + time.Duration(le.RTTMicros)*time.Microsecond}
			queue = append(queue, v)
			parent[v] = u
		}
	}
	rt := &routeTable{
		self:   self,
		parent: parent,
		edges:  edges,
		next:   make(map[string]*link, len(reach)),
		peers:  make([]PeerInfo, 0, len(reach)),
		index:  make(map[string]int, len(reach)),
	}
	// The ids are sorted rather than the PeerInfos: moving the large
	// structs was a fifth of the cost in a large cluster. queue holds
	// every reached id once.
	slices.Sort(queue)
	rt.beyond = make([]time.Duration, len(queue))
	for i, id := range queue {
		h := reach[id]
		rt.next[id] = h.via
		rt.index[id] = i
		rt.beyond[i] = h.beyond
		p := PeerInfo{NodeID: id, Hops: h.hops}
		if h.hops == 1 {
			p.Status = StatusConnected
		} else {
			p.Status = StatusRelay
			p.Via = h.via.peer
		}
		if e := entries[id]; e != nil {
			p.Capabilities = e.Caps
		} else if h.hops == 1 {
			p.Capabilities = h.via.caps
		}
		rt.peers = append(rt.peers, p)
	}
	return rt
}

// recomputeSoonLocked recomputes the routes after routeDelay, once for all
// the gossip that arrives meanwhile, then checks the streams. One change
// reaches a node as several entries by several paths (a joining node's
// and its neighbours', each a few milliseconds apart), and in a large
// cluster computing the routes for each was most of what gossip cost.
// Gossip itself is passed on at once; only this node's view waits.
func (n *Node) recomputeSoonLocked() {
	if n.closing || n.recomputing != nil {
		return
	}
	n.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(n.routeDelay(), func() {
		defer n.wg.Done()
		n.mu.Lock()
		if n.recomputing != t || n.closing {
			n.mu.Unlock()
			return
		}
		n.recomputeLocked()
		n.mu.Unlock()
		n.checkStreams()
	})
	n.recomputing = t
}

// routeDelay is how long gossip waits to be taken into the routes: a
// hundredth of the ping interval, at most 10 ms.
func (n *Node) routeDelay() time.Duration {
	return min(n.cfg.PingInterval/100, 10*time.Millisecond)
}

// stopRecomputingLocked cancels a pending recomputation.
func (n *Node) stopRecomputingLocked() {
	if n.recomputing != nil {
		if n.recomputing.Stop() {
			n.wg.Done() // its function will not run
		}
		n.recomputing = nil
	}
}

// recomputeLocked publishes the route table for the current links and
// entries, and fires Changed when the view changed. It takes up any
// pending recomputation (whose caller checks the streams).
func (n *Node) recomputeLocked() {
	n.stopRecomputingLocked()
	rt := computeRoutes(n.id, n.sortedLinksLocked(), n.topo.entries)
	old := n.routes.Swap(rt)
	if !samePeers(old.peers, rt.peers) {
		close(n.changed)
		n.changed = make(chan struct{})
	}
}

// samePeers compares two views, ignoring RTT.
func samePeers(a, b []PeerInfo) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.NodeID != y.NodeID || x.Status != y.Status || x.Via != y.Via || x.Hops != y.Hops || !sameCaps(x.Capabilities, y.Capabilities) {
			return false
		}
	}
	return true
}

// sameCaps compares capabilities, ignoring Load: like RTT, load changes
// with every turn, and a Changed per turn would wake every watcher for
// nothing; readers of Load look it up when they route.
func sameCaps(a, b Capabilities) bool {
	if !slices.Equal(a.Tags, b.Tags) || !slices.Equal(a.Models, b.Models) || !slices.Equal(a.Features, b.Features) || len(a.Agents) != len(b.Agents) {
		return false
	}
	for i := range a.Agents {
		x, y := a.Agents[i], b.Agents[i]
		if x.ID != y.ID || x.Description != y.Description || !slices.Equal(x.Tags, y.Tags) {
			return false
		}
	}
	return true
}

// dedupSet remembers recent routed frame ids (origin, id) in bounded memory.
// It grows to size as frames are routed rather than up front: most nodes
// never relay, and a pre-sized set costs about a megabyte and milliseconds
// at start-up.
type dedupSet struct {
	mu   sync.Mutex
	size int
	set  map[dedupKey]struct{}
	ring []dedupKey
	next int
}

type dedupKey struct {
	from string
	id   uint64
}

func newDedupSet(size int) *dedupSet {
	return &dedupSet{size: size, set: make(map[dedupKey]struct{})}
}

// add records k and reports false if it was seen already.
func (d *dedupSet) add(k dedupKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.set[k]; ok {
		return false
	}
	if len(d.ring) < d.size {
		d.ring = append(d.ring, k)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = k
		d.next = (d.next + 1) % d.size
	}
	d.set[k] = struct{}{}
	return true
}

// handleFrame dispatches one frame read from an authenticated link. raw is
// the frame as it arrived (the reader's buffer, valid during the call).
func (n *Node) handleFrame(l *link, f *Frame, raw []byte) {
	switch f.Type {
	case typePing:
		l.handlePing(f)
	case typePong:
		l.handlePong(f)
	case typePeerSync:
		n.handlePeerSync(l, f)
	case typeWelcome:
		l.close(CloseProtocol, "welcome on an established link")
	default:
		if isRouted(f.Type) {
			n.route(l, f, raw)
			return
		}
		// An unknown hop-local type from a newer peer: ignore it.
		n.log.Debug("mesh: ignoring frame of unknown type", "peer", l.peer, "type", typeName(f.Type))
	}
}

// route delivers a routed frame here or relays it toward its destination.
//
// Who may send what: a plain (unsealed) stream frame travels one hop, from
// its origin to its destination, so it is accepted only from the link peer
// that is its origin; anything else must be sealed end to end, and a sealed
// frame is believed only once it opens with a session bound to its origin's
// node key. The e2e handshake frames are plain but authenticate themselves.
// So a relay, or a peer forging "from", can drop frames but not forge them.
func (n *Node) route(l *link, f *Frame, raw []byte) {
	if f.From == n.id {
		// One of this node's own frames came back: a routing loop while
		// routes converge (or a peer forging this node's id, which can at
		// worst end one of this node's streams, as dropping it would).
		n.stats.spoofed.Add(1)
		n.frameLost(f, "a routing loop brought it back to its origin")
		return
	}
	handshake := f.Type == typeE2EInit || f.Type == typeE2EResp
	if !f.Sealed && !handshake && (f.From != l.peer || f.To != n.id) {
		n.stats.spoofed.Add(1)
		n.log.Debug("mesh: dropped a routed frame that its sender may not send", "peer", l.peer, "from", f.From, "to", f.To, "type", typeName(f.Type))
		return
	}
	if !n.dedup.add(dedupKey{f.From, f.ID}) {
		n.stats.dup.Add(1)
		if f.To != n.id {
			n.frameLost(f, "it came by twice (a routing loop)")
		}
		return
	}
	if f.To == n.id {
		switch {
		case f.Type == typeE2EInit:
			n.e2e.onInit(f)
		case f.Type == typeE2EResp:
			n.e2e.onResp(f)
		case f.Sealed:
			if err := n.e2e.open(f); err != nil {
				n.stats.spoofed.Add(1)
				n.log.Debug("mesh: dropped a sealed frame that did not open", "from", f.From, "via", l.peer, "type", typeName(f.Type))
				return
			}
			n.deliver(l, f)
		default:
			n.deliver(l, f)
		}
		return
	}
	if f.TTL <= 1 {
		n.stats.ttl.Add(1)
		n.frameLost(f, "it ran out of hops")
		return
	}
	rt := n.routes.Load()
	next := rt.next[f.To]
	if next == nil {
		n.stats.noRoute.Add(1)
		n.frameLost(f, "no route to "+strconv.Quote(f.To))
		return
	}
	// Forwarded as it came, but for the hop count (not covered by the seal).
	data := append([]byte(nil), raw...)
	data[1]--
	var err error
	if isControl(f.Type) {
		err = next.q.pushCtrl(data)
	} else {
		var written func(error)
		if f.Type == typeReqExt && n.tracer != nil {
			written = n.relayTrace(f, next)
		}
		err = next.q.pushDataThen(nil, f.From+">"+f.To, data, written)
	}
	switch {
	case err == nil:
		n.stats.relayed.Add(1)
		n.stats.relayedBytes.Add(uint64(len(data)))
	case errors.Is(err, errQueueOverflow):
		n.log.Warn("mesh: relay queue overflow, closing link", "peer", next.peer)
		next.close(CloseSlowPeer, "relay queue overflow")
		n.frameLost(f, "the queue to "+next.peer+" overflowed")
	default:
		n.frameLost(f, "the link to "+next.peer+" closed")
	}
}

// unreachable makes the error for a stream whose peer cannot be reached.
func unreachable(node, why string) error {
	return &unreachableError{node: node, why: why}
}

// unreachableError wraps ErrUnreachable with the node and the reason, which
// a side that gives up a stream passes on to the other side.
type unreachableError struct{ node, why string }

func (e *unreachableError) Error() string {
	return fmt.Sprintf("mesh: %v: %q (%s)", ErrUnreachable, e.node, e.why)
}

func (e *unreachableError) Unwrap() error { return ErrUnreachable }

// sendRouted sends a stream frame from this node to `to`. Control frames
// never wait; data frames wait for room in the link's queue (and, the
// first time a node beyond the next hop is addressed, for the end-to-end
// session) until ctx ends. It returns the link used (nil when to is this
// node).
func (n *Node) sendRouted(ctx context.Context, to string, typ byte, lane string, msg *streamMsg) (*link, error) {
	f := &Frame{Type: typ, ID: n.newFrameID(), From: n.id, To: to, TTL: uint8(min(n.cfg.MaxHops, 255)), Stream: msg.S, R: msg.R, written: msg.written}
	if typ == typeReq && len(msg.X) > 0 {
		f.Type, f.Ext = typeReqExt, msg.X
	}
	f.Payload = appendStreamMsg(make([]byte, 0, streamMsgSize(msg)), msg)
	if to == n.id {
		n.deliver(nil, f)
		f.done(nil)
		return nil, nil
	}
	l := n.routes.Load().next[to]
	if l == nil {
		err := unreachable(to, "no route")
		f.done(err)
		return nil, err
	}
	if l.peer == to {
		return l, n.pushFrame(ctx, l, f, lane)
	}
	ss, err := n.e2e.await(ctx, to, f, lane)
	if err != nil {
		if errors.Is(err, errNoSession) {
			return l, nil // queued until the session is up
		}
		f.done(err)
		return l, err
	}
	return n.sendSealed(ctx, ss, f, lane)
}

// done reports that f has left this node (err nil) or never will
// (Frame.written).
func (f *Frame) done(err error) {
	if f.written != nil {
		f.written(err)
		f.written = nil
	}
}

// sendSealed seals f for its destination and queues it on the next hop.
func (n *Node) sendSealed(ctx context.Context, ss *session, f *Frame, lane string) (*link, error) {
	l := n.routes.Load().next[f.To]
	if l == nil {
		err := unreachable(f.To, "no route")
		f.done(err)
		return nil, err
	}
	if l.peer == f.To {
		// The route became direct meanwhile: the link protects it.
		return l, n.pushFrame(ctx, l, f, lane)
	}
	ss.seal(f)
	return l, n.pushFrame(ctx, l, f, lane)
}

// pushFrame queues an encoded frame on link l.
func (n *Node) pushFrame(ctx context.Context, l *link, f *Frame, lane string) error {
	data := encodeFrame(f)
	var err error
	if isControl(f.Type) {
		err = l.q.pushCtrl(data)
	} else {
		err = l.q.pushDataThen(ctx, lane, data, f.written)
		f.written = nil // the queue calls it now, or it was called
	}
	f.done(err)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errQueueOverflow):
		l.close(CloseSlowPeer, "write queue overflow")
		return unreachable(f.To, "link to "+l.peer+" overflowed")
	case errors.Is(err, errLinkClosed):
		return unreachable(f.To, "link to "+l.peer+" closed")
	default:
		return err
	}
}

// peerAt returns peers[i] with its RTT as of now: the first hop's RTT changes
// with every pong, without a topology change to rebuild the table.
func (rt *routeTable) peerAt(i int) PeerInfo {
	p := rt.peers[i]
	if first := rt.next[p.NodeID].rtt.Load(); first > 0 {
		p.RTT = time.Duration(first) + rt.beyond[i]
	}
	p.Capabilities = cloneCaps(p.Capabilities)
	return p
}
