package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

var errStreamClosed = errors.New("mesh: stream closed")

// Stream is the caller's side of a request: Recv returns the handler's
// messages in order. A Stream must be closed (or read to its end).
type Stream struct {
	n      *Node
	id     uint64
	to     string
	window int
	lane   string
	stop   func() bool // stops the ctx watcher

	mu       sync.Mutex
	msgs     [][]byte
	partial  []byte
	nextQ    uint64
	finished bool  // no more frames will be accepted
	err      error // returned once msgs are drained
	closed   bool
	consumed uint64 // response frames credited
	acked    uint64 // consumed as of the last ack sent
	reqSent  uint64 // request frames sent
	reqAcked uint64 // request frames the target credited
	credit   chan struct{}
	stash    map[uint64]resFrame // response frames that arrived early
	gap      *time.Timer         // fails the stream if a gap stays open
	gapGen   uint64              // which gap timer is current
	path     []pathEdge          // every link the stream's frames may have used
	inLink   *link               // link responses arrive on
	outLink  *link               // link requests and acks leave on
	heard    int64               // n.mono() of the last response frame, or of the last probe
	notify   chan struct{}
}

// Open sends a request to node `to` (this node's own id works too, through
// the same handlers) and returns the stream of response messages. It fails
// with ErrUnknownNode when no route to `to` is known. ctx covers the whole
// stream: cancelling it cancels the remote handler and ends Recv with the
// context's error.
func (n *Node) Open(ctx context.Context, to, method string, payload []byte) (*Stream, error) {
	if method == "" {
		return nil, errors.New("mesh: Open: empty method")
	}
	if len(payload) > n.cfg.MaxMessageBytes {
		return nil, fmt.Errorf("mesh: Open: payload of %d bytes exceeds MaxMessageBytes %d", len(payload), n.cfg.MaxMessageBytes)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n.ctx.Err() != nil {
		return nil, ErrClosed
	}
	rt := n.routes.Load()
	if to != n.id && rt.next[to] == nil {
		return nil, fmt.Errorf("mesh: %w: %q", ErrUnknownNode, to)
	}
	s := &Stream{
		n:      n,
		id:     n.nextID(),
		to:     to,
		window: n.cfg.RequestWindow,
		notify: make(chan struct{}, 1),
		credit: make(chan struct{}, 1),
	}
	s.lane = "c" + strconv.FormatUint(s.id, 36)
	n.smu.Lock()
	if n.ctx.Err() != nil {
		n.smu.Unlock()
		return nil, ErrClosed
	}
	n.clients[s.id] = s
	if to != n.id {
		// Recorded under smu, so that checkStreams either sees this
		// stream or ran before the table loaded here.
		s.path = n.routes.Load().path(to)
	}
	n.smu.Unlock()

	ext, endSend := n.sendTrace(ctx, to)
	chunk := n.cfg.ChunkBytes
	for q, off := uint64(0), 0; ; q++ {
		end := min(off+chunk, len(payload))
		m := &streamMsg{S: s.id, Q: q, D: payload[off:end], More: end < len(payload)}
		if q == 0 {
			m.M, m.W, m.X, m.written = method, s.window, ext, endSend
		}
		if err := s.waitReqCredit(ctx); err != nil {
			if q == 0 && endSend != nil {
				endSend(err)
			}
			s.finish(err)
			n.removeClient(s)
			s.sendCancel()
			return nil, err
		}
		l, err := n.sendRouted(ctx, to, typeReq, s.lane, m)
		if err != nil {
			s.finish(err)
			n.removeClient(s)
			if q > 0 {
				s.sendCancel()
			}
			return nil, err
		}
		s.mu.Lock()
		s.outLink = l
		s.reqSent++
		s.mu.Unlock()
		off = end
		if off >= len(payload) {
			break
		}
	}
	s.mu.Lock()
	s.heard = n.mono()
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() {
		if s.finish(context.Cause(ctx)) {
			s.sendCancel()
		}
		n.removeClient(s)
	})
	s.mu.Lock()
	s.stop = stop
	ended := s.finished
	s.mu.Unlock()
	if ended {
		stop()
	}
	return s, nil
}

// Call sends a unary request: the handler must write exactly one message.
func (n *Node) Call(ctx context.Context, to, method string, payload []byte) ([]byte, error) {
	s, err := n.Open(ctx, to, method, payload)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	msg, err := s.Recv()
	if err == io.EOF {
		return nil, fmt.Errorf("mesh: Call %s on %q: the handler returned no message", method, to)
	}
	if err != nil {
		return nil, err
	}
	if _, err := s.Recv(); err != io.EOF {
		if err == nil {
			return nil, fmt.Errorf("mesh: Call %s on %q: the handler wrote more than one message", method, to)
		}
		return nil, err
	}
	return msg, nil
}

// Node returns the node the stream talks to.
func (s *Stream) Node() string { return s.to }

// Recv returns the next message. At the normal end it returns io.EOF; when
// the handler failed, a *RemoteError; when the node became unreachable, an
// error wrapping ErrUnreachable; when the caller's ctx ended, its error.
func (s *Stream) Recv() ([]byte, error) {
	for {
		s.mu.Lock()
		if len(s.msgs) > 0 {
			m := s.msgs[0]
			s.msgs[0] = nil
			s.msgs = s.msgs[1:]
			ack := s.creditLocked(1)
			s.mu.Unlock()
			s.sendAck(ack)
			return m, nil
		}
		if s.finished {
			err := s.err
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		<-s.notify
	}
}

// Close ends the stream; if the handler is still running it is cancelled.
// Close is idempotent.
func (s *Stream) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.msgs = nil
	s.mu.Unlock()
	s.stopWatch()
	if s.finish(errStreamClosed) {
		s.sendCancel()
	}
	s.n.removeClient(s)
}

// finish ends the stream with err unless it has ended already; it reports
// whether this call ended it.
func (s *Stream) finish(err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return false
	}
	s.finished = true
	s.err = err
	s.partial = nil
	s.stash = nil
	s.stopGapLocked()
	s.signal()
	select { // wake a sender waiting for request credit
	case s.credit <- struct{}{}:
	default:
	}
	return true
}

// stopWatch stops watching the caller's ctx once the stream has ended.
func (s *Stream) stopWatch() {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
}

func (s *Stream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *Stream) sendAck(n uint64) {
	if n > 0 {
		_, _ = s.n.sendRouted(nil, s.to, typeAck, "", &streamMsg{S: s.id, N: n})
	}
}

// sendCancel tells the target to stop the handler. When the stream failed
// because the route broke, the reason goes along so that the handler's
// context says why.
func (s *Stream) sendCancel() {
	m := &streamMsg{S: s.id}
	s.mu.Lock()
	var ue *unreachableError
	if errors.As(s.err, &ue) {
		m.E = &RemoteError{Code: CodeUnavailable, Message: s.n.id + " gave up the stream: " + ue.why}
	}
	s.mu.Unlock()
	_, _ = s.n.sendRouted(nil, s.to, typeCancel, "", m)
}

func (n *Node) removeClient(s *Stream) {
	n.smu.Lock()
	if n.clients[s.id] == s {
		delete(n.clients, s.id)
	}
	n.smu.Unlock()
}

// onRes handles a response chunk or the end of a stream this node opened.
func (n *Node) onRes(l *link, f *Frame, m *streamMsg) {
	n.smu.Lock()
	s := n.clients[m.S]
	n.smu.Unlock()
	if s == nil || s.to != f.From {
		if f.Type == typeRes {
			// The caller forgot the stream (closed, cancelled): stop the handler.
			_, _ = n.sendRouted(nil, f.From, typeNoStream, "", &streamMsg{S: m.S})
		}
		return
	}
	s.mu.Lock()
	if s.finished || m.Q < s.nextQ {
		s.mu.Unlock()
		return
	}
	s.inLink = l
	s.heard = n.mono()
	var fail error
	var ack uint64
	cur := resFrame{end: f.Type == typeEnd, m: *m}
	if m.Q > s.nextQ {
		// Overtaken on a new, shorter route: hold it until the gap fills.
		// The target cannot have more than a window of frames (and the
		// end) unacknowledged, so anything further ahead is lost or forged.
		if m.Q-s.nextQ > uint64(s.window)+1 || len(s.stash) > s.window {
			fail = unreachable(s.to, "response frames lost in transit")
		} else {
			if s.stash == nil {
				s.stash = make(map[uint64]resFrame)
			}
			s.stash[m.Q] = cur
			if s.gap == nil {
				s.armGapLocked()
			}
		}
	} else {
		for {
			var a uint64
			a, fail = s.applyLocked(&cur, f.From)
			if a > 0 {
				ack = a
			}
			s.nextQ++
			if fail != nil || s.finished {
				break
			}
			next, ok := s.stash[s.nextQ]
			if !ok {
				break
			}
			delete(s.stash, s.nextQ)
			cur = next
		}
		if len(s.stash) == 0 {
			s.stopGapLocked()
		}
	}
	done := s.finished
	s.mu.Unlock()
	s.sendAck(ack)
	if fail != nil {
		if s.finish(fail) {
			s.sendCancel()
		}
		n.removeClient(s)
		return
	}
	if done {
		n.removeClient(s)
		s.stopWatch()
	}
	s.signal()
}

// applyLocked applies the next in-order response frame; it returns the
// cumulative credit to acknowledge (0 for none) or a reason to fail.
func (s *Stream) applyLocked(r *resFrame, from string) (uint64, error) {
	m := &r.m
	switch {
	case r.end:
		s.finished = true
		if m.E != nil {
			e := *m.E
			e.Node = from
			s.err = &e
		} else {
			s.err = io.EOF
		}
		s.stash = nil
		s.stopGapLocked()
		return 0, nil
	case len(s.partial)+len(m.D) > s.n.cfg.MaxMessageBytes:
		return 0, fmt.Errorf("mesh: response message from %q exceeds MaxMessageBytes %d", s.to, s.n.cfg.MaxMessageBytes)
	}
	s.partial = append(s.partial, m.D...)
	if m.More {
		return s.creditLocked(1), nil
	}
	msg := s.partial
	if msg == nil {
		msg = []byte{}
	}
	s.msgs = append(s.msgs, msg)
	s.partial = nil
	if len(s.msgs) > s.window+1 {
		return 0, fmt.Errorf("mesh: node %q sent more than the flow-control window", s.to)
	}
	return 0, nil
}

// onPath reports whether node id is the target or on a route the stream's
// frames may have taken: only those nodes can have dropped one of them, so
// only their "lost" notices may end the stream.
func (s *Stream) onPath(id string) bool {
	if id == s.to || id == s.n.id {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return pathHas(s.path, id)
}
