package mesh

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"
)

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
	share   *peerShare // the caller's share of this node
	// lastChunk is n.mono() when the last request chunk arrived.
	lastChunk int64
	credit    chan struct{}
	writeMu   sync.Mutex
	// parent is the caller's trace context from the first request frame
	// (zero when it sent none); arrived is when that frame came, for the
	// serve span (trace.go).
	parent  trace.SpanContext
	arrived time.Time
}

var errCancelled = errors.New("mesh: request cancelled by the caller")

func (n *Node) server(from string, id uint64) *serverStream {
	n.smu.Lock()
	defer n.smu.Unlock()
	return n.servers[serverKey{from, id}]
}

func (n *Node) removeServer(ss *serverStream) {
	ss.mu.Lock()
	ss.removed = true
	ss.releaseLocked()
	ss.mu.Unlock()
	n.smu.Lock()
	if n.servers[ss.key] == ss {
		delete(n.servers, ss.key)
		n.releaseStreamLocked(ss.key.from)
	}
	n.smu.Unlock()
}

// releaseLocked drops the request being reassembled and returns its share
// of MaxPendingRequestBytes.
func (ss *serverStream) releaseLocked() {
	if len(ss.req) > 0 {
		ss.n.pendingReq.Add(-int64(len(ss.req)))
		ss.share.pending.Add(-int64(len(ss.req)))
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
		if refusal, flood := n.admitStreamLocked(l, from); refusal != nil {
			n.smu.Unlock()
			n.sendEnd(nil, from, m.S, 0, refusal)
			if flood {
				n.log.Warn("mesh: closing the link of a peer that floods this node with requests", "peer", from)
				l.close(CloseFlood, "")
			}
			return
		}
		w := m.W
		if w <= 0 {
			w = 1
		}
		ctx, cancel := context.WithCancelCause(n.ctx)
		ss = &serverStream{
			n:       n,
			key:     key,
			method:  m.M,
			window:  uint64(min(w, maxWindow)),
			lane:    "s" + from + ":" + strconv.FormatUint(m.S, 36),
			ctx:     ctx,
			cancel:  cancel,
			credit:  make(chan struct{}, 1),
			share:   n.shareLocked(from),
			arrived: n.traceArrival(),
		}
		if len(m.X) > 0 {
			ss.parent, _ = extSpanContext(m.X)
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
	ss.lastChunk = n.mono()
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
	if !n.takePending(ss.share, len(m.D)) {
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
	ctx, endSpan := ss.serveTrace(req.Method)
	var err error
	if h := n.handler(req.Method); h == nil {
		err = Errorf(CodeNoHandler, "no handler for method %q on node %q", req.Method, n.id)
	} else {
		err = ss.run(ctx, h, req)
	}
	endSpan(err)
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
func (ss *serverStream) run(ctx context.Context, h Handler, req *Request) (err error) {
	defer func() {
		if p := recover(); p != nil {
			ss.n.log.Error("mesh: handler panicked", "method", req.Method, "panic", p, "stack", string(debug.Stack()))
			err = Errorf(CodeInternal, "handler for %q failed", req.Method)
		}
	}()
	return h.ServeMesh(ctx, ss, req)
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
