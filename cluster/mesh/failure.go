package mesh

import (
	"slices"
	"strconv"
	"sync"
	"time"
)

// checkStreams fails the streams whose peer is no longer reachable, or
// whose route lost a link: frames in flight on that link are gone, so the
// stream cannot continue intact even if another route exists. A stream
// whose route changed without losing a link goes on, and from then on the
// links of the new route count as its route too. The target tells the
// caller with no_stream (see abortServer); the caller tells the target with
// cancel.
func (n *Node) checkStreams() {
	rt := n.routes.Load()
	type lost struct {
		c   *Stream
		s   *serverStream
		why string
	}
	var gone []lost
	n.smu.Lock()
	for _, s := range n.clients {
		if s.to == n.id {
			continue
		}
		s.mu.Lock()
		why := routeLost(rt, s.to, &s.path)
		s.mu.Unlock()
		if why != "" {
			gone = append(gone, lost{c: s, why: why})
		}
	}
	for _, ss := range n.servers {
		if ss.key.from == n.id {
			continue
		}
		ss.mu.Lock()
		why := routeLost(rt, ss.key.from, &ss.path)
		ss.mu.Unlock()
		if why != "" {
			gone = append(gone, lost{s: ss, why: why})
		}
	}
	n.smu.Unlock()
	for _, g := range gone {
		if g.c != nil {
			if g.c.finish(unreachable(g.c.to, g.why)) {
				g.c.sendCancel()
			}
			n.removeClient(g.c)
			g.c.stopWatch()
			continue
		}
		n.abortServer(g.s, unreachable(g.s.key.from, g.why), g.why)
	}
}

// maxPathEdges bounds the links recorded per stream; a stream whose route
// changed so often that it exceeds this keeps only its current route.
const maxPathEdges = 64

// routeLost checks a stream's recorded links against the current routes
// and returns why the stream must fail, or "". When the route to peer
// changed but every recorded link still exists, the new route's links are
// added to *path: frames from now on may travel on either.
func routeLost(rt *routeTable, peer string, path *[]pathEdge) string {
	if rt.next[peer] == nil {
		return "no route"
	}
	if e, ok := rt.intact(*path); !ok {
		return "link " + e.u + "-" + e.v + " on the route was lost"
	}
	for _, e := range rt.path(peer) {
		if !slices.Contains(*path, e) {
			if len(*path) >= maxPathEdges {
				*path = rt.path(peer)
				return ""
			}
			*path = append(*path, e)
		}
	}
	return ""
}

// abortServer ends a served stream that cannot continue: it cancels the
// handler with cause and tells the caller why with a no_stream, a control
// frame that never waits behind data and is acted on whatever the sequence
// (an end frame could be stuck behind lost response frames).
func (n *Node) abortServer(ss *serverStream, cause error, why string) {
	ss.cancel(cause)
	msg := n.id + " gave up the stream: " + why
	n.ended.put(ss.key, endRecord{abort: msg})
	n.removeServer(ss)
	_, _ = n.sendRouted(nil, ss.key.from, typeNoStream, "", &streamMsg{S: ss.key.s, R: true, E: &RemoteError{Code: CodeUnavailable, Message: msg}})
}

// failStreamsOnLink fails the streams whose frames travelled over l: frames
// in flight on it are lost, so those streams cannot continue intact even if
// another route exists. The other side is told with best effort.
func (n *Node) failStreamsOnLink(l *link) {
	var lostC []*Stream
	var lostS []*serverStream
	n.smu.Lock()
	for _, s := range n.clients {
		s.mu.Lock()
		if s.inLink == l || s.outLink == l {
			lostC = append(lostC, s)
		}
		s.mu.Unlock()
	}
	for _, ss := range n.servers {
		ss.mu.Lock()
		if ss.inLink == l || ss.outLink == l {
			lostS = append(lostS, ss)
		}
		ss.mu.Unlock()
	}
	n.smu.Unlock()
	for _, s := range lostC {
		if s.finish(unreachable(s.to, "link to "+l.peer+" lost")) {
			s.sendCancel()
		}
		n.removeClient(s)
		s.stopWatch()
	}
	for _, ss := range lostS {
		n.abortServer(ss, unreachable(ss.key.from, "link to "+l.peer+" lost"), "link to "+l.peer+" lost mid-stream")
	}
}

// failAllStreams ends every stream when the node closes.
func (n *Node) failAllStreams() {
	n.smu.Lock()
	cs := make([]*Stream, 0, len(n.clients))
	for _, s := range n.clients {
		cs = append(cs, s)
	}
	ss := make([]*serverStream, 0, len(n.servers))
	for _, s := range n.servers {
		ss = append(ss, s)
	}
	n.smu.Unlock()
	for _, s := range cs {
		s.finish(ErrClosed)
		n.removeClient(s)
		s.stopWatch()
	}
	for _, s := range ss {
		s.cancel(ErrClosed)
		n.removeServer(s)
	}
}

// Lost frames.
//
// While routes converge after a change, relays may disagree about the next
// hop: a frame can run out of hops, meet a relay with no route, or loop
// (a relay sees it twice, or its origin gets it back). Such a frame is
// dropped, and the stream it belongs to cannot continue intact, yet neither
// end may have lost a link it watches. So whoever drops a stream frame
// tells the frame's origin with a "lost" control frame (or acts on it
// itself when it is the origin), and the origin ends the stream at once.

// frameLost reports a dropped stream frame to its origin.
func (n *Node) frameLost(f *Frame, why string) {
	switch f.Type {
	case typeReq, typeReqExt, typeRes, typeEnd, typeAck:
	default:
		return // endings and notices: nobody waits for them
	}
	n.log.Debug("mesh: stream frame lost", "type", typeName(f.Type), "from", f.From, "to", f.To, "stream", f.Stream, "why", why)
	notice := &streamMsg{
		S: f.Stream,
		R: f.Type == typeRes || f.Type == typeEnd || (f.Type == typeAck && f.R), // the target sent it
		P: f.To,
		E: &RemoteError{Code: CodeUnavailable, Message: n.id + " dropped a frame of the stream: " + why},
	}
	if f.From == n.id {
		n.onLost(n.id, notice)
		return
	}
	_, _ = n.sendRouted(nil, f.From, typeLost, "", notice)
}

// onLost ends the stream whose frame (sent by this node) was dropped on the
// way to m.P, as reported by node `by`.
func (n *Node) onLost(by string, m *streamMsg) {
	why := "a frame was dropped on the way"
	if m.E != nil && m.E.Message != "" {
		why = m.E.Message
	}
	if !m.R { // this node is the caller
		n.smu.Lock()
		s := n.clients[m.S]
		n.smu.Unlock()
		if s == nil || s.to != m.P || !s.onPath(by) {
			return
		}
		if s.finish(unreachable(m.P, why)) {
			s.sendCancel()
		}
		n.removeClient(s)
		s.stopWatch()
		return
	}
	// This node is the target. The stream may be over here already (a lost
	// end frame), but the caller still waits: tell it in any case.
	if ss := n.server(m.P, m.S); ss != nil {
		ss.mu.Lock()
		ok := by == m.P || pathHas(ss.path, by)
		ss.mu.Unlock()
		if ok {
			n.abortServer(ss, unreachable(m.P, why), why)
		}
		return
	}
	_, _ = n.sendRouted(nil, m.P, typeNoStream, "", &streamMsg{S: m.S, R: true, E: &RemoteError{Code: CodeUnavailable, Message: n.id + " gave up the stream: " + why}})
}

// watchStreams probes the streams this node opened that have heard nothing
// for DeadAfter: it repeats their last ack, which the target ignores when
// it serves the stream (so a lost ack cannot stall it) and answers with
// no_stream when it does not. So a stream whose frames were lost on the way
// while no link it watches broke (routes converging, a relay's queue or
// link gone, a lost notice) fails within about DeadAfter once the target
// is reachable, instead of waiting for the caller's deadline.
func (n *Node) watchStreams() {
	defer n.wg.Done()
	every := max(min(n.cfg.DeadAfter, n.cfg.RequestIdleTimeout)/2, time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	var probe []*Stream
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-t.C:
		}
		now := n.mono()
		n.idleRequests(now)
		probe = probe[:0]
		n.smu.Lock()
		for _, s := range n.clients {
			if s.to != n.id {
				probe = append(probe, s)
			}
		}
		n.smu.Unlock()
		for i, s := range probe {
			s.mu.Lock()
			due := !s.finished && s.heard != 0 && time.Duration(now-s.heard) > n.cfg.DeadAfter
			acked := s.acked
			if due {
				s.heard = now
			}
			s.mu.Unlock()
			if due {
				_, _ = n.sendRouted(nil, s.to, typeAck, "", &streamMsg{S: s.id, N: acked})
			}
			probe[i] = nil
		}
	}
}

// answerProbe answers an ack (a probe, or a late ack) for a stream this node
// does not serve. A stream that ended here gets its ending again: the end
// frame goes into the stream's lane, behind any response frames still
// queued, so it can neither overtake them nor be taken for news (the caller
// drops a repeated end). A stream unknown here gets no_stream: the caller
// must not wait for it.
func (n *Node) answerProbe(caller string, sid uint64) {
	rec, ok := n.ended.get(serverKey{caller, sid})
	switch {
	case ok && rec.abort == "":
		lane := "s" + caller + ":" + strconv.FormatUint(sid, 36)
		_, _ = n.sendRouted(nil, caller, typeEnd, lane, &streamMsg{S: sid, Q: rec.q, E: rec.e})
	case ok:
		_, _ = n.sendRouted(nil, caller, typeNoStream, "", &streamMsg{S: sid, R: true, E: &RemoteError{Code: CodeUnavailable, Message: rec.abort}})
	default:
		_, _ = n.sendRouted(nil, caller, typeNoStream, "", &streamMsg{S: sid, R: true})
	}
}

// maxEndedStreams bounds how many ended streams a node remembers.
const maxEndedStreams = 4096

// endRecord is how a served stream ended: its end frame's sequence number
// and error, or why it was given up.
type endRecord struct {
	q     uint64
	e     *RemoteError
	abort string
}

// endedStreams remembers the most recent endings in bounded memory.
type endedStreams struct {
	mu   sync.Mutex
	m    map[serverKey]endRecord
	ring []serverKey
	next int
}

func newEndedStreams(size int) *endedStreams {
	return &endedStreams{m: make(map[serverKey]endRecord, size), ring: make([]serverKey, size)}
}

func (e *endedStreams) put(k serverKey, r endRecord) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.m[k]; !ok {
		if old := e.ring[e.next]; old.from != "" {
			delete(e.m, old)
		}
		e.ring[e.next] = k
		e.next = (e.next + 1) % len(e.ring)
	}
	e.m[k] = r
}

func (e *endedStreams) get(k serverKey) (endRecord, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.m[k]
	return r, ok
}

// pathHas reports whether node id is an end of a link in p.
func pathHas(p []pathEdge, id string) bool {
	for _, e := range p {
		if e.u == id || e.v == id {
			return true
		}
	}
	return false
}
