package mesh

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

// closeGrace is how long a closing side waits for the peer's close frame
// before dropping the TCP connection; waiting lets the peer read our close
// code instead of a reset.
const closeGrace = 250 * time.Millisecond

// link is one authenticated connection to a direct peer. It owns two
// goroutines: the reader (which also reports the link's end to the node) and
// the writer (which drains the send queue and runs the heartbeat).
type link struct {
	n           *Node
	conn        transport.Conn
	peer        string
	key         ed25519.PublicKey // the peer's node key
	static      []byte            // the peer's Noise static key
	outbound    bool              // this node dialed
	incarnation uint64
	caps        Capabilities
	// send is used by the writer only, recv by the reader only: Noise
	// transport messages on a link are strictly in order.
	send, recv *noise.CipherState
	epoch      uint64 // unique id of this link, gossiped as "since"
	q          *sendQueue

	lastRecv atomic.Int64 // node-relative nanoseconds of the last frame received
	rtt      atomic.Int64 // nanoseconds, 0 until the first pong
	// pathRTT is the RTT (nanoseconds) this node gossips for the link:
	// the least sample of the last rttWindow to 2*rttWindow pongs.
	// Scheduling delays on either node only ever add to a sample, so the
	// least one is the path's own and does not move with the load of the
	// machines (on a loaded one, a smoothed RTT moved by a quarter and
	// half a millisecond every few pings, and each move was gossiped to
	// the whole cluster). annRTT is the value the latest announced entry
	// carries.
	pathRTT, annRTT atomic.Int64
	rttWin          rttWindowMin // the reader's alone

	pongs chan struct{}

	done      chan struct{} // closed when the link starts closing
	exited    chan struct{} // closed after the node has processed the link's end
	closeOnce sync.Once
	closeMu   sync.Mutex
	sentCode  int    // close code this side sent, 0 if none
	sentWhy   string // its reason
	peerCode  int    // close code received from the peer, 0 if none
	peerWhy   string
	gone      atomic.Bool // reader has exited; the link is no longer usable
	frag      []byte      // a frame being reassembled from records
	startedAt time.Time
}

func (n *Node) newLink(conn transport.Conn, outbound bool, k *linkKeys) *link {
	l := &link{
		n:           n,
		conn:        conn,
		peer:        k.peer,
		key:         k.key,
		static:      k.static,
		send:        k.send,
		recv:        k.recv,
		outbound:    outbound,
		incarnation: k.inc,
		caps:        k.caps,
		epoch:       n.nextID(),
		q:           newSendQueue(n.cfg.MaxQueueBytes),
		pongs:       make(chan struct{}, 1),
		done:        make(chan struct{}),
		exited:      make(chan struct{}),
		startedAt:   time.Now(),
	}
	l.lastRecv.Store(n.mono())
	return l
}

// start runs the link's goroutines; they end after close.
func (l *link) start() {
	l.n.wg.Add(2)
	go l.readLoop()
	go l.writeLoop()
}

// close starts closing the link with a code and reason sent to the peer. It
// is safe to call from any goroutine, any number of times.
func (l *link) close(code int, reason string) {
	l.closeOnce.Do(func() {
		if reason == "" {
			reason = closeReasons[code]
		}
		l.closeMu.Lock()
		l.sentCode, l.sentWhy = code, reason
		l.closeMu.Unlock()
		close(l.done)
		l.q.close()
		// After a batch in flight, waiting at most closeGrace for it: a
		// writer stuck on a slow peer is ended by the reader's deadline.
		_ = l.conn.WriteClose(code, truncReason(reason), closeGrace)
		// The reader sees the peer's close frame or this deadline, then
		// closes the socket and reports the link down. (Under closeMu, so
		// that the reader's silence deadline cannot replace it.)
		l.closeMu.Lock()
		_ = l.conn.SetReadDeadline(time.Now().Add(closeGrace))
		l.closeMu.Unlock()
	})
}

// truncReason keeps a close reason within the 123 bytes a close notice
// allows.
func truncReason(s string) string {
	if len(s) <= transport.MaxCloseReason {
		return s
	}
	return s[:transport.MaxCloseReason]
}

func (l *link) isDown() bool {
	select {
	case <-l.done:
		return true
	default:
		return l.gone.Load()
	}
}

func (l *link) readLoop() {
	defer l.n.wg.Done()
	defer func() {
		l.gone.Store(true)
		l.closeOnce.Do(func() { // the socket ended without this side closing
			close(l.done)
			l.q.close()
		})
		_ = l.conn.Close()
		l.n.linkDown(l)
	}()
	max := l.n.cfg.MaxFrameBytes
	// Silence is detected here, by a read deadline that every frame moves
	// on, rather than only by the writer's heartbeat: a writer blocked on a
	// peer that stopped taking data would check nothing until its write
	// timed out. The deadline is moved at most every slack, and set slack
	// beyond DeadAfter, so it never fires before DeadAfter of silence.
	deadAfter := l.n.cfg.DeadAfter
	slack := deadAfter / 64
	deadlineSet := l.n.mono()
	l.extendReadDeadline(deadAfter + slack)
	for {
		// The buffer comes from a pool once a message arrives and goes
		// back once its record is decrypted: an idle link holds none.
		data, err := l.conn.ReadMessage(nil, maxRecordBytes)
		if err != nil {
			putReadBuf(data)
			var ce *transport.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce):
				l.closeMu.Lock()
				l.peerCode, l.peerWhy = ce.Code, ce.Reason
				l.closeMu.Unlock()
				l.n.log.Debug("mesh: peer closed link", "peer", l.peer, "code", ce.Code, "reason", ce.Reason)
			case errors.Is(err, transport.ErrMessageTooLarge):
				l.n.log.Warn("mesh: record too large", "peer", l.peer, "limit", maxRecordBytes)
				l.close(CloseFrameTooLarge, "record larger than "+strconv.Itoa(maxRecordBytes)+" bytes")
				continue // drain until the peer's close or the grace deadline
			case errors.Is(err, errTextMessage):
				l.close(CloseProtocol, "text messages are not part of the protocol")
				continue
			case l.isDown():
			case errors.As(err, &ne) && ne.Timeout():
				l.n.log.Info("mesh: peer silent, closing link", "peer", l.peer, "silent_for", time.Duration(l.n.mono()-l.lastRecv.Load()))
				l.close(CloseDead, "")
			default:
				l.n.log.Debug("mesh: link read failed", "peer", l.peer, "err", err)
			}
			return
		}
		if l.isDown() {
			putReadBuf(data)
			continue
		}
		frame, err := l.openRecord(data, max)
		putReadBuf(data)
		if err != nil {
			l.n.log.Warn("mesh: bad record, closing link", "peer", l.peer, "err", err)
			l.close(closeCodeOf(err), reasonOf(err))
			continue
		}
		if frame == nil {
			continue // more fragments follow
		}
		now := l.n.mono()
		l.lastRecv.Store(now)
		if time.Duration(now-deadlineSet) >= slack {
			deadlineSet = now
			l.extendReadDeadline(deadAfter + slack)
		}
		f, err := decodeFrame(frame)
		if err != nil {
			l.n.log.Warn("mesh: malformed frame", "peer", l.peer, "err", err)
			l.close(CloseProtocol, "malformed frame")
			continue
		}
		l.n.handleFrame(l, f, frame)
	}
}

// extendReadDeadline lets the reader wait d for the next frame, unless the
// link has started closing (close has set its own, short deadline).
func (l *link) extendReadDeadline(d time.Duration) {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if !l.isDown() {
		_ = l.conn.SetReadDeadline(time.Now().Add(d))
	}
}

// maxBatch is how many bytes of frames the writer gathers into one write.
// Under load it turns a write system call per frame into one per batch, which
// also lets the peer read many frames at once; a ping waits behind at most
// one batch, no longer than behind one large frame.
const maxBatch = 64 << 10

func (l *link) writeLoop() {
	defer l.n.wg.Done()
	cfg := &l.n.cfg
	// The first ping goes out at once, so the link's RTT is known from the
	// start rather than one interval later.
	ping := time.NewTimer(0)
	defer ping.Stop()
	var w *writerBufs
	for {
		select {
		case <-l.done:
			return
		case <-ping.C:
			l.heartbeat()
			ping.Reset(jitter(cfg.PingInterval))
		case <-l.q.wake:
		}
		for {
			select {
			case <-ping.C:
				l.heartbeat()
				ping.Reset(jitter(cfg.PingInterval))
			default:
			}
			if w == nil {
				w = writerBufPool.Get().(*writerBufs)
			}
			// Take frames in the queue's order (control first, then
			// round-robin between lanes) until the batch is full.
			w.batch, w.ends = w.batch[:0], w.ends[:0]
			for len(w.batch) < maxBatch {
				item, ok := l.q.pop(cfg.MaxFrameBytes / 2)
				if !ok {
					break
				}
				data := item.data
				if item.gossip != nil {
					w.gossip = appendPeerSync(w.gossip[:0], item.gossip)
					data = w.gossip
					l.n.stats.gossipBytes.Add(uint64(len(data)))
				}
				l.sealRecords(w, data)
			}
			if len(w.batch) == 0 {
				break
			}
			w.msgs = w.msgs[:0]
			for i, end := range w.ends {
				start := 0
				if i > 0 {
					start = w.ends[i-1]
				}
				w.msgs = append(w.msgs, w.batch[start:end])
			}
			if err := l.writeBatch(w.msgs); err != nil {
				w.release()
				if errors.Is(err, errLinkClosed) || l.isDown() {
					return
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					l.close(CloseSlowPeer, "write timed out")
				} else {
					l.close(CloseProtocol, "write failed")
				}
				return
			}
		}
		// The queue is drained: the buffers go back to the pool, so an
		// idle link holds none (after a full sync or a bulk transfer, a
		// link kept several hundred KB).
		if w != nil {
			w.release()
			w = nil
		}
	}
}

// writerBufs are a link writer's buffers while it has frames to write.
type writerBufs struct {
	batch  []byte   // the batch's records
	ends   []int    // where each record of batch ends
	msgs   [][]byte // the records, as slices of batch
	gossip []byte   // a peer_sync frame being encoded
	seal   []byte   // a record's plaintext
}

var writerBufPool = sync.Pool{New: func() any { return new(writerBufs) }}

// maxPooledBatch is the largest batch buffer kept in the pool: one huge
// frame's buffer is dropped.
const maxPooledBatch = 4 * maxBatch

// release puts the buffers back into the pool.
func (w *writerBufs) release() {
	clear(w.msgs) // no reference to a batch buffer dropped below
	w.msgs = w.msgs[:0]
	if cap(w.batch) > maxPooledBatch {
		w.batch = nil
	}
	if cap(w.gossip) > 64<<10 {
		w.gossip = nil
	}
	writerBufPool.Put(w)
}

// writeBatch writes records to the connection, in one write where the
// transport can, unless the link has started closing (the transport writes
// nothing after the close notice in any case).
func (l *link) writeBatch(msgs [][]byte) error {
	if l.isDown() {
		return errLinkClosed
	}
	_ = l.conn.SetWriteDeadline(time.Now().Add(l.n.cfg.writeTimeout()))
	return l.conn.WriteMessages(msgs...)
}

// heartbeat declares the link dead after DeadAfter of silence (the reader's
// deadline normally has by then), else pings.
func (l *link) heartbeat() {
	now := l.n.mono()
	if time.Duration(now-l.lastRecv.Load()) > l.n.cfg.DeadAfter {
		l.n.log.Info("mesh: peer silent, closing link", "peer", l.peer, "silent_for", time.Duration(now-l.lastRecv.Load()))
		l.close(CloseDead, "")
		return
	}
	l.sendPing()
}

func (l *link) sendPing() {
	f := Frame{Type: typePing, Payload: binary.BigEndian.AppendUint64(nil, uint64(l.n.mono()))}
	if err := l.q.pushCtrl(encodeFrame(&f)); errors.Is(err, errQueueOverflow) {
		l.close(CloseSlowPeer, "control queue overflow")
	}
}

func (l *link) handlePing(f *Frame) {
	pf := Frame{Type: typePong, Payload: append([]byte(nil), f.Payload...)}
	if err := l.q.pushCtrl(encodeFrame(&pf)); errors.Is(err, errQueueOverflow) {
		l.close(CloseSlowPeer, "control queue overflow")
	}
}

func (l *link) handlePong(f *Frame) {
	if len(f.Payload) == 8 {
		t := int64(binary.BigEndian.Uint64(f.Payload))
		if d := l.n.mono() - t; t > 0 && d >= 0 {
			l.rtt.Store(d)
			est := l.rttWin.add(d)
			l.pathRTT.Store(est)
			if ann := l.annRTT.Load(); rttChanged(ann, est) {
				l.n.announceRTT(l, ann == 0)
			}
		}
	}
	select {
	case l.pongs <- struct{}{}:
	default:
	}
}

// rttWindow is how many pongs a window of the RTT estimate spans.
const rttWindow = 8

// rttWindowMin is a link's RTT estimate: the least sample of the current
// window of samples and of the whole window before it.
type rttWindowMin struct {
	min, prevMin int64
	n            int
}

// add takes a sample (nanoseconds) and returns the estimate, at least 1.
func (w *rttWindowMin) add(d int64) int64 {
	d = max(d, 1)
	if w.n == 0 || d < w.min {
		w.min = d
	}
	w.n++
	est := w.min
	if w.prevMin > 0 {
		est = min(est, w.prevMin)
	}
	if w.n == rttWindow {
		w.prevMin, w.n = w.min, 0
	}
	return est
}

// rttMinChange is the smallest change of a link's RTT worth gossiping.
const rttMinChange = 500 * time.Microsecond

// rttChanged reports whether a link's RTT estimate cur differs enough from
// the announced ann to announce it again: the first measurement, or a change
// by at least a quarter and rttMinChange.
func rttChanged(ann, cur int64) bool {
	if ann == 0 {
		return cur > 0
	}
	d := cur - ann
	if d < 0 {
		d = -d
	}
	return d*4 >= ann && time.Duration(d) >= rttMinChange
}

// probe reports whether the peer answers a ping within d. It is used to
// tell a live link from a stale one when another link claims the same id.
func (l *link) probe(d time.Duration) bool {
	if l.isDown() {
		return false
	}
	select { // forget pongs that answered earlier pings
	case <-l.pongs:
	default:
	}
	l.sendPing()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-l.pongs:
		return true
	case <-l.done:
		return false
	case <-t.C:
		return false
	}
}

// jitter returns d ±20%.
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return d
	}
	return d*8/10 + time.Duration(rand.Int64N(int64(d)*4/10+1))
}

// closeConn refuses a connection that never became a link: it sends the
// close code and waits briefly for the peer's close so the code arrives.
func closeConn(conn transport.Conn, code int, reason string) {
	_ = conn.WriteClose(code, truncReason(reason), closeGrace)
	_ = conn.SetReadDeadline(time.Now().Add(closeGrace))
	for i := 0; i < 16; i++ {
		if _, err := conn.ReadMessage(nil, 4096); err != nil {
			break
		}
	}
	_ = conn.Close()
}
