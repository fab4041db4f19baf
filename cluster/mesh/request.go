package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Streams.
//
// Open sends a request (one message, fragmented into "req" chunks) and
// returns a Stream; the target runs the handler, whose Writes come back as
// "res" chunks, and ends with "end" (carrying the handler's error, if any).
// Every chunk carries a per-direction sequence number, so a stream fails
// instead of being corrupted when frames are lost with a link. Responses
// that arrive early are reordered (see Reordering); request chunks out of
// order end the stream at once.
//
// Flow control is per stream and direction, in frames: a sender may have W
// (RequestWindow) frames unacknowledged. The receiver credits a chunk that
// continues a message as soon as it is reassembled, and a message's last
// chunk when Recv returns the message, with cumulative "ack" frames every
// W/2 frames. So a slow reader makes the handler's Write block with at most
// W complete messages buffered, a big message streams through at W chunks
// per round trip, and no stream can put more than W frames on any relay
// link's queue.
//
// Cancellation: Stream.Close or the caller's ctx sends "cancel"; the target
// cancels the handler's context (with the reason in "e" when the caller gave
// the stream up because its route broke). A side that receives frames for a stream it
// does not know answers "no_stream", which ends the stream on the other side.
// The target also sends "no_stream", with the reason in "e", when it gives
// up a stream (its route back lost a link): unlike "end" it is a control
// frame, acted on whatever the sequence, so the caller learns at once even
// if response frames were lost. "r" marks a no_stream for the caller's side
// of the stream, so that it is never taken for a stream the receiver serves.
//
// Reordering: when a shorter route appears mid-stream, newer response frames
// can overtake older ones still on the old route. The caller stashes frames
// that arrive early (at most a window's worth, as the target cannot send
// more) and fails the stream if a gap stays open for DeadAfter. Each side
// records every link its stream's frames may have used and fails the stream
// when one of them is lost, since frames in flight on it are gone.

// streamMsg is a stream frame's content. S and R travel in the routed
// header (so relays can report a lost frame's stream), the rest in the body
// (codec.go).
type streamMsg struct {
	S    uint64       // stream id, chosen by the caller
	Q    uint64       // sequence number within the direction
	M    string       // method (first request chunk)
	W    int          // window (first request chunk)
	D    []byte       // message bytes
	More bool         // the message continues in the next chunk
	N    uint64       // ack: frames consumed so far
	R    bool         // sent by the target's side (acks for request frames, no_stream and lost to the caller)
	E    *RemoteError // end: the handler's error
	P    string       // lost: the other end of the stream
}

// maxWindow bounds the window a caller may ask for.
const maxWindow = 1024

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

// Handle registers h for method, replacing any earlier handler; a nil h
// removes it.
func (n *Node) Handle(method string, h Handler) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	if h == nil {
		delete(n.handlers, method)
		return
	}
	n.handlers[method] = h
}

func (n *Node) handler(method string) Handler {
	n.hmu.RLock()
	defer n.hmu.RUnlock()
	return n.handlers[method]
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

	chunk := n.cfg.ChunkBytes
	for q, off := uint64(0), 0; ; q++ {
		end := min(off+chunk, len(payload))
		m := &streamMsg{S: s.id, Q: q, D: payload[off:end], More: end < len(payload)}
		if q == 0 {
			m.M, m.W = method, s.window
		}
		if err := s.waitReqCredit(ctx); err != nil {
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

// waitReqCredit waits until the target has credited enough request frames
// to send one more.
func (s *Stream) waitReqCredit(ctx context.Context) error {
	for {
		s.mu.Lock()
		ok := s.reqSent-s.reqAcked < uint64(s.window)
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-s.credit:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func (s *Stream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// creditLocked counts k response frames as consumed and returns the
// cumulative count to acknowledge, or 0 when no ack is due yet.
func (s *Stream) creditLocked(k uint64) uint64 {
	s.consumed += k
	if s.finished || s.consumed-s.acked < uint64(max(1, s.window/2)) {
		return 0
	}
	s.acked = s.consumed
	return s.consumed
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

// serverKey names a stream on the target: the caller's id and its stream id.
type serverKey struct {
	from string
	s    uint64
}

// serverStream is the target's side of a request.
type serverStream struct {
	n      *Node
	key    serverKey
	method string
	window uint64
	lane   string
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu      sync.Mutex
	req     []byte // the request being reassembled, counted in n.pendingReq
	removed bool   // removeServer has run: no more request bytes are taken
	reqQ    uint64
	started bool
	sent    uint64 // response frames sent
	acked   uint64 // response frames the caller credited
	reqAck  uint64 // request frames credited to the caller so far
	outQ    uint64
	inLink  *link
	outLink *link
	path    []pathEdge // the route back to the caller
	credit  chan struct{}
	writeMu sync.Mutex
}

var errCancelled = errors.New("mesh: request cancelled by the caller")

// deliver handles a stream frame addressed to this node. l is the link it
// arrived on, nil for this node's own requests.
func (n *Node) deliver(l *link, f *Frame) {
	var m streamMsg
	if err := decodeStreamMsg(f.Payload, &m); err != nil {
		n.log.Debug("mesh: malformed stream frame", "from", f.From, "type", typeName(f.Type), "err", err)
		return
	}
	m.S, m.R = f.Stream, f.R
	switch f.Type {
	case typeReq:
		n.onReq(l, f.From, &m)
	case typeAck:
		if m.R {
			n.smu.Lock()
			s := n.clients[m.S]
			n.smu.Unlock()
			if s != nil && s.to == f.From {
				s.mu.Lock()
				if m.N > s.reqAcked {
					s.reqAcked = m.N
				}
				s.mu.Unlock()
				select {
				case s.credit <- struct{}{}:
				default:
				}
			}
			return
		}
		ss := n.server(f.From, m.S)
		if ss == nil {
			n.answerProbe(f.From, m.S)
			return
		}
		ss.mu.Lock()
		if m.N > ss.acked {
			ss.acked = m.N
		}
		ss.mu.Unlock()
		select {
		case ss.credit <- struct{}{}:
		default:
		}
	case typeCancel:
		if ss := n.server(f.From, m.S); ss != nil {
			var cause error = errCancelled
			if m.E != nil && m.E.Message != "" {
				cause = unreachable(f.From, m.E.Message)
			}
			ss.cancel(cause)
			n.removeServer(ss)
		}
	case typeRes, typeEnd:
		n.onRes(l, f, &m)
	case typeLost:
		n.onLost(f.From, &m)
	case typeNoStream:
		if !m.R {
			if ss := n.server(f.From, m.S); ss != nil {
				ss.cancel(errCancelled)
				n.removeServer(ss)
			}
			return
		}
		n.smu.Lock()
		s := n.clients[m.S]
		n.smu.Unlock()
		if s != nil && s.to == f.From {
			why := "the node lost the stream"
			if m.E != nil && m.E.Message != "" {
				why = m.E.Message
			}
			s.finish(unreachable(f.From, why))
			n.removeClient(s)
			s.stopWatch()
		}
	}
}

func (n *Node) server(from string, id uint64) *serverStream {
	n.smu.Lock()
	defer n.smu.Unlock()
	return n.servers[serverKey{from, id}]
}

func (n *Node) removeServer(ss *serverStream) {
	n.smu.Lock()
	if n.servers[ss.key] == ss {
		delete(n.servers, ss.key)
	}
	n.smu.Unlock()
	ss.mu.Lock()
	ss.removed = true
	ss.releaseLocked()
	ss.mu.Unlock()
}

// releaseLocked drops the request being reassembled and returns its share
// of MaxPendingRequestBytes.
func (ss *serverStream) releaseLocked() {
	if len(ss.req) > 0 {
		ss.n.pendingReq.Add(-int64(len(ss.req)))
	}
	ss.req = nil
}

// maxServerStreams bounds concurrent requests served by one node.
const maxServerStreams = 8192

func (n *Node) onReq(l *link, from string, m *streamMsg) {
	key := serverKey{from, m.S}
	n.smu.Lock()
	ss := n.servers[key]
	if ss == nil {
		if m.Q != 0 || n.ctx.Err() != nil {
			n.smu.Unlock()
			if m.Q != 0 {
				_, _ = n.sendRouted(nil, from, typeNoStream, "", &streamMsg{S: m.S, R: true})
			}
			return
		}
		if len(n.servers) >= maxServerStreams {
			n.smu.Unlock()
			n.sendEnd(nil, from, m.S, 0, &RemoteError{Code: CodeUnavailable, Message: "too many concurrent requests"})
			return
		}
		w := m.W
		if w <= 0 {
			w = 1
		}
		ctx, cancel := context.WithCancelCause(n.ctx)
		ss = &serverStream{
			n:      n,
			key:    key,
			method: m.M,
			window: uint64(min(w, maxWindow)),
			lane:   "s" + from + ":" + strconv.FormatUint(m.S, 36),
			ctx:    ctx,
			cancel: cancel,
			credit: make(chan struct{}, 1),
		}
		n.servers[key] = ss
	}
	n.smu.Unlock()

	ss.mu.Lock()
	if ss.removed {
		// Removed (cancelled, or its route lost) between the lookup and
		// now: its caller has been told; take nothing more for it.
		ss.mu.Unlock()
		return
	}
	if ss.started || m.Q != ss.reqQ {
		ss.mu.Unlock()
		n.abortServer(ss, unreachable(from, "request frames lost"), "request frames were lost in transit")
		return
	}
	ss.reqQ++
	ss.inLink = l
	if ss.path == nil && from != n.id {
		ss.path = n.routes.Load().path(from)
	}
	// refuse ends the stream from the reader: the end frame never waits
	// for room in the caller's queue.
	refuse := func(cause string, e *RemoteError) {
		ss.mu.Unlock()
		ss.cancel(errors.New(cause))
		n.removeServer(ss)
		n.sendEnd(nil, from, m.S, 0, e)
	}
	if len(ss.req)+len(m.D) > n.cfg.MaxMessageBytes {
		refuse("request too large", &RemoteError{Code: CodeBadRequest, Message: "request exceeds MaxMessageBytes"})
		return
	}
	if n.pendingReq.Add(int64(len(m.D))) > int64(n.cfg.MaxPendingRequestBytes) {
		n.pendingReq.Add(-int64(len(m.D)))
		refuse("request buffer full", &RemoteError{Code: CodeUnavailable,
			Message: fmt.Sprintf("node %q is receiving too many large requests at once; retry shortly", n.id)})
		return
	}
	ss.req = append(ss.req, m.D...)
	if m.More {
		// Credit request chunks as they are reassembled.
		var ack uint64
		if ss.reqQ-ss.reqAck >= ss.window/2 || ss.window < 2 {
			ss.reqAck = ss.reqQ
			ack = ss.reqQ
		}
		ss.mu.Unlock()
		if ack > 0 {
			_, _ = n.sendRouted(nil, from, typeAck, "", &streamMsg{S: m.S, N: ack, R: true})
		}
		return
	}
	ss.started = true
	req := &Request{From: from, Method: ss.method, Payload: ss.req}
	if req.Payload == nil {
		req.Payload = []byte{}
	}
	ss.releaseLocked() // the handler owns the payload now
	ss.mu.Unlock()

	n.smu.Lock()
	if n.ctx.Err() != nil {
		n.smu.Unlock()
		n.removeServer(ss)
		return
	}
	n.wg.Add(1)
	n.smu.Unlock()
	go ss.serve(req)
}

func (ss *serverStream) serve(req *Request) {
	n := ss.n
	defer n.wg.Done()
	defer ss.cancel(nil)
	var err error
	if h := n.handler(req.Method); h == nil {
		err = Errorf(CodeNoHandler, "no handler for method %q on node %q", req.Method, n.id)
	} else {
		err = ss.run(h, req)
	}
	if ss.ctx.Err() != nil {
		// Cancelled by the caller, lost route or node close: nobody waits
		// for an end frame, or the caller has failed the stream itself.
		n.removeServer(ss)
		return
	}
	var re *RemoteError
	if err != nil {
		if !errors.As(err, &re) {
			re = &RemoteError{Code: CodeInternal, Message: err.Error()}
		} else {
			re = &RemoteError{Code: re.Code, Message: re.Message}
		}
		if re.Code == "" {
			re.Code = CodeInternal
		}
		re.Node = n.id
	}
	ss.mu.Lock()
	q := ss.outQ
	ss.outQ++
	ss.mu.Unlock()
	n.ended.put(ss.key, endRecord{q: q, e: re})
	n.removeServer(ss)
	n.sendEnd(n.ctx, ss.key.from, ss.key.s, q, re)
}

// run calls the handler, turning a panic into an internal error so one bad
// request cannot take the node down.
func (ss *serverStream) run(h Handler, req *Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			ss.n.log.Error("mesh: handler panicked", "method", req.Method, "panic", p, "stack", string(debug.Stack()))
			err = Errorf(CodeInternal, "handler for %q failed", req.Method)
		}
	}()
	return h.ServeMesh(ss.ctx, ss, req)
}

// sendEnd sends the end frame of a served stream. With ctx non-nil (the
// handler's goroutine) it waits for room in the link's queue like any
// response frame. With ctx nil it never waits, as relayed frames do: that is
// for ends sent from a link's reader (refused requests), which must never
// block on another link's queue, or one slow peer would stop this node
// reading from the others. A frame that does not fit closes that link as
// slow, which ends the stream anyway.
func (n *Node) sendEnd(ctx context.Context, to string, sid, q uint64, e *RemoteError) {
	lane := "s" + to + ":" + strconv.FormatUint(sid, 36)
	_, _ = n.sendRouted(ctx, to, typeEnd, lane, &streamMsg{S: sid, Q: q, E: e})
}

// Write sends one message to the caller. It blocks while the caller has
// RequestWindow frames unacknowledged (a slow reader), and fails once the
// request is cancelled or the caller is unreachable.
func (ss *serverStream) Write(msg []byte) error {
	ss.writeMu.Lock()
	defer ss.writeMu.Unlock()
	n := ss.n
	if len(msg) > n.cfg.MaxMessageBytes {
		return fmt.Errorf("mesh: message of %d bytes exceeds MaxMessageBytes %d", len(msg), n.cfg.MaxMessageBytes)
	}
	chunk := n.cfg.ChunkBytes
	for off := 0; ; {
		if err := ss.waitCredit(); err != nil {
			return err
		}
		end := min(off+chunk, len(msg))
		ss.mu.Lock()
		q := ss.outQ
		ss.outQ++
		ss.sent++
		ss.mu.Unlock()
		l, err := n.sendRouted(ss.ctx, ss.key.from, typeRes, ss.lane, &streamMsg{S: ss.key.s, Q: q, D: msg[off:end], More: end < len(msg)})
		if err != nil {
			ss.cancel(err)
			return fmt.Errorf("mesh: write to %q: %w", ss.key.from, err)
		}
		ss.mu.Lock()
		ss.outLink = l
		ss.mu.Unlock()
		off = end
		if off >= len(msg) {
			return nil
		}
	}
}

// waitCredit waits until the caller has credited enough frames to send one
// more.
func (ss *serverStream) waitCredit() error {
	for {
		if ss.ctx.Err() != nil {
			return fmt.Errorf("mesh: write to %q: %w", ss.key.from, context.Cause(ss.ctx))
		}
		ss.mu.Lock()
		ok := ss.sent-ss.acked < ss.window
		ss.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ss.credit:
		case <-ss.ctx.Done():
		}
	}
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

// armGapLocked starts the timer that fails the stream if the frames it is
// missing do not arrive within DeadAfter. A timer that fires after it was
// stopped (the gap filled meanwhile) finds a newer generation and does
// nothing.
func (s *Stream) armGapLocked() {
	s.gapGen++
	gen := s.gapGen
	s.gap = time.AfterFunc(s.n.cfg.DeadAfter, func() {
		s.mu.Lock()
		current := s.gap != nil && s.gapGen == gen
		s.mu.Unlock()
		if !current {
			return
		}
		if s.finish(unreachable(s.to, "response frames lost in transit")) {
			s.sendCancel()
		}
		s.n.removeClient(s)
		s.stopWatch()
	})
}

func (s *Stream) stopGapLocked() {
	if s.gap != nil {
		s.gap.Stop()
		s.gap = nil
		s.gapGen++
	}
}

// resFrame is a response frame held for reordering.
type resFrame struct {
	end bool
	m   streamMsg
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
	case typeReq, typeRes, typeEnd, typeAck:
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
		if s == nil || s.to != m.P {
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
		n.abortServer(ss, unreachable(m.P, why), why)
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
	every := max(n.cfg.DeadAfter/2, time.Millisecond)
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
