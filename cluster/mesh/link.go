package mesh

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
	"github.com/gorilla/websocket"
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
	conn        *websocket.Conn
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
	// srtt is the smoothed RTT (nanoseconds) that this node gossips for
	// the link, annRTT the value its latest announced entry carries.
	srtt, annRTT atomic.Int64

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
	// wmu (capacity 1) orders the writer's batches and the close frame:
	// once close has taken it, no batch follows the close frame.
	wmu       chan struct{}
	readBuf   []byte
	frag      []byte // a frame being reassembled from records
	sealBuf   []byte // the writer's scratch for a record's plaintext
	startedAt time.Time
}

func (n *Node) newLink(conn *websocket.Conn, outbound bool, k *linkKeys) *link {
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
		wmu:         make(chan struct{}, 1),
		done:        make(chan struct{}),
		exited:      make(chan struct{}),
		startedAt:   time.Now(),
	}
	l.lastRecv.Store(n.mono())
	return l
}

// start runs the link's goroutines; they end after close.
func (l *link) start() {
	// The peer's close frame is echoed under wmu too, so that it is the
	// last thing this side writes (as with gorilla's default handler).
	l.conn.SetCloseHandler(func(code int, _ string) error {
		l.writeControlClose(websocket.FormatCloseMessage(code, ""), time.Second)
		return nil
	})
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
		l.writeControlClose(websocket.FormatCloseMessage(code, truncReason(reason)), closeGrace)
		// The reader sees the peer's close frame or this deadline, then
		// closes the socket and reports the link down. (Under closeMu, so
		// that the reader's silence deadline cannot replace it.)
		l.closeMu.Lock()
		_ = l.conn.SetReadDeadline(time.Now().Add(closeGrace))
		l.closeMu.Unlock()
	})
}

// writeControlClose sends a close frame once no batch of the writer is in
// flight, waiting at most d for one to finish.
func (l *link) writeControlClose(msg []byte, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case l.wmu <- struct{}{}:
	case <-t.C:
		return // the writer is stuck on a slow peer; the reader's deadline ends the link
	}
	defer func() { <-l.wmu }()
	_ = l.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(d))
}

// truncReason keeps a close reason within the 123 bytes a close frame allows.
func truncReason(s string) string {
	if len(s) <= 120 {
		return s
	}
	return s[:120]
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
		mt, r, err := l.conn.NextReader()
		if err != nil {
			var ce *websocket.CloseError
			var ne net.Error
			switch {
			case errors.As(err, &ce):
				l.closeMu.Lock()
				l.peerCode, l.peerWhy = ce.Code, ce.Text
				l.closeMu.Unlock()
				l.n.log.Debug("mesh: peer closed link", "peer", l.peer, "code", ce.Code, "reason", ce.Text)
			case l.isDown():
			case errors.As(err, &ne) && ne.Timeout():
				l.n.log.Info("mesh: peer silent, closing link", "peer", l.peer, "silent_for", time.Duration(l.n.mono()-l.lastRecv.Load()))
				l.close(CloseDead, "")
			default:
				l.n.log.Debug("mesh: link read failed", "peer", l.peer, "err", err)
			}
			return
		}
		data, err := readLimited(r, l.readBuf[:0], maxRecordBytes)
		l.readBuf = data[:0]
		if cap(l.readBuf) > 64<<10 {
			l.readBuf = nil // do not keep a big buffer on an idle link
		}
		if err != nil {
			if errors.Is(err, errTooLarge) {
				l.n.log.Warn("mesh: record too large", "peer", l.peer, "limit", maxRecordBytes)
				l.close(CloseFrameTooLarge, "record larger than "+strconv.Itoa(maxRecordBytes)+" bytes")
				continue // drain until the peer's close or the grace deadline
			}
			l.n.log.Debug("mesh: link read failed", "peer", l.peer, "err", err)
			return
		}
		if l.isDown() {
			continue
		}
		if mt != websocket.BinaryMessage {
			l.close(CloseProtocol, "text messages are not part of the protocol")
			continue
		}
		frame, err := l.openRecord(data, max)
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

var errTooLarge = errors.New("frame too large")

// readLimited reads one message into buf, refusing more than max bytes
// without buffering them.
func readLimited(r io.Reader, buf []byte, max int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			if len(buf) > max {
				return buf, errTooLarge
			}
			grow := cap(buf)
			if grow < 512 {
				grow = 512
			}
			if cap(buf)+grow > max+1 {
				grow = max + 1 - cap(buf)
				if grow <= 0 {
					grow = 1
				}
			}
			buf = append(buf, make([]byte, grow)...)[:len(buf)]
		}
		k, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+k]
		if len(buf) > max {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
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
	var batch, gbuf []byte
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
			// Take frames in the queue's order (control first, then
			// round-robin between lanes) until the batch is full.
			batch = batch[:0]
			for len(batch) < maxBatch {
				item, ok := l.q.pop(cfg.MaxFrameBytes / 2)
				if !ok {
					break
				}
				data := item.data
				if item.gossip != nil {
					gbuf = appendPeerSync(gbuf[:0], item.gossip)
					data = gbuf
				}
				batch = l.sealRecords(batch, data)
			}
			if len(batch) == 0 {
				break
			}
			if err := l.writeBatch(batch); err != nil {
				if errors.Is(err, errLinkClosed) {
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
			if cap(batch) > 4*maxBatch {
				batch = nil // one huge frame: do not keep its buffer
			}
			if cap(gbuf) > 64<<10 {
				gbuf = nil
			}
		}
	}
}

// writeBatch writes whole WebSocket frames to the connection in one call,
// unless the link has started closing (its close frame must be the last).
func (l *link) writeBatch(b []byte) error {
	select {
	case l.wmu <- struct{}{}:
	case <-l.done:
		return errLinkClosed
	}
	defer func() { <-l.wmu }()
	if l.isDown() {
		return errLinkClosed
	}
	nc := l.conn.NetConn()
	_ = nc.SetWriteDeadline(time.Now().Add(l.n.cfg.writeTimeout()))
	_, err := nc.Write(b)
	return err
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
			// Only the reader writes srtt.
			s := l.srtt.Load()
			if s == 0 {
				s = max(d, 1)
			} else {
				s = max(s+(d-s)/4, 1)
			}
			l.srtt.Store(s)
			if rttChanged(l.annRTT.Load(), s) {
				l.n.announceRTT(l)
			}
		}
	}
	select {
	case l.pongs <- struct{}{}:
	default:
	}
}

// rttMinChange is the smallest change of a link's RTT worth gossiping.
const rttMinChange = 500 * time.Microsecond

// rttChanged reports whether a link's smoothed RTT cur differs enough from
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
func closeConn(conn *websocket.Conn, code int, reason string) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, truncReason(reason)), time.Now().Add(closeGrace))
	_ = conn.SetReadDeadline(time.Now().Add(closeGrace))
	conn.SetReadLimit(4096)
	for i := 0; i < 16; i++ {
		if _, _, err := conn.NextReader(); err != nil {
			break
		}
	}
	_ = conn.Close()
}
