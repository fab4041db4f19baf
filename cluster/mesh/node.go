package mesh

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Node is one member of the mesh. Create it with New, then Start it.
type Node struct {
	cfg   Config
	id    string
	log   *slog.Logger
	inc   uint64    // incarnation: this run's start time, sent in the handshake
	start time.Time // origin of mono()

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	idSeq atomic.Uint64

	mu      sync.Mutex
	started bool
	closing bool
	links   map[string]*link // active authenticated link per peer id
	pending map[*websocket.Conn]struct{}
	regs    map[string]*regLock
	caps    Capabilities
	topo    topology
	changed chan struct{}
	// rttAnnAt is n.mono() at the last announcement made for an RTT change.
	rttAnnAt int64

	routes atomic.Pointer[routeTable]

	ln       net.Listener
	srv      *http.Server
	url      string
	upgrader websocket.Upgrader
	dialer   websocket.Dialer
	pendAuth atomic.Int32

	nonces *nonceCache
	dedup  *dedupSet
	stats  counters

	hmu      sync.RWMutex
	handlers map[string]Handler

	smu     sync.Mutex
	clients map[uint64]*Stream
	servers map[serverKey]*serverStream
	// pendingReq is the request bytes held by servers still reassembling
	// their request (MaxPendingRequestBytes); each serverStream's held share.
	pendingReq atomic.Int64
	ended      *endedStreams
}

// writeBufferPool shares write buffers between links: an idle link holds
// none, which keeps the memory of idle links small.
var writeBufferPool = &sync.Pool{}

// New validates cfg and creates a node. It does not touch the network until
// Start.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("mesh config: %w", err)
	}
	cfg.Peers = append([]PeerAddr(nil), cfg.Peers...)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	n := &Node{
		cfg:      cfg,
		id:       cfg.NodeID,
		log:      log.With("node", cfg.NodeID),
		inc:      uint64(now.UnixNano()),
		start:    now,
		links:    make(map[string]*link),
		pending:  make(map[*websocket.Conn]struct{}),
		regs:     make(map[string]*regLock),
		caps:     cloneCaps(cfg.Capabilities),
		changed:  make(chan struct{}),
		nonces:   newNonceCache(cfg.NonceCacheSize),
		dedup:    newDedupSet(cfg.DedupSize),
		ended:    newEndedStreams(maxEndedStreams),
		handlers: make(map[string]Handler),
		clients:  make(map[uint64]*Stream),
		servers:  make(map[serverKey]*serverStream),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.idSeq.Store(n.inc)
	n.topo = topology{entries: make(map[string]*storedEntry), version: n.inc}
	n.routes.Store(&routeTable{self: n.id, next: map[string]*link{}, index: map[string]int{}, parent: map[string]string{}, edges: map[edgeKey]uint64{}})
	n.upgrader = websocket.Upgrader{
		HandshakeTimeout: cfg.AuthTimeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  16 << 10,
		WriteBufferPool:  writeBufferPool,
	}
	n.dialer = websocket.Dialer{
		HandshakeTimeout: cfg.AuthTimeout,
		ReadBufferSize:   4096,
		WriteBufferSize:  16 << 10,
		WriteBufferPool:  writeBufferPool,
		TLSClientConfig:  cfg.ClientTLS,
		Proxy:            nil, // peers are dialed directly
	}
	return n, nil
}

// ID returns this node's id.
func (n *Node) ID() string { return n.id }

// mono returns nanoseconds since the node was created (monotonic).
func (n *Node) mono() int64 { return int64(time.Since(n.start)) }

func (n *Node) nextID() uint64 { return n.idSeq.Add(1) }

// newFrameID returns an id unique across this node's runs: the counter
// starts at the start time in nanoseconds.
func (n *Node) newFrameID() string { return strconv.FormatUint(n.nextID(), 36) }

// Start binds the listener (if any), starts the dialers and returns once the
// node is listening. ctx bounds only the start itself; Close stops the node.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing {
		return ErrClosed
	}
	if n.started {
		return errors.New("mesh: node already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.cfg.ListenAddr != "" {
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, "tcp", n.cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("mesh: listen on %s: %w", n.cfg.ListenAddr, err)
		}
		ln = newLimitListener(ln, n.cfg.MaxConns)
		scheme := "ws"
		if n.cfg.ServerTLS != nil {
			ln = tls.NewListener(ln, n.cfg.ServerTLS)
			scheme = "wss"
		}
		n.ln = ln
		n.url = scheme + "://" + ln.Addr().String()
		n.srv = &http.Server{
			Handler:           n,
			ReadHeaderTimeout: n.cfg.AuthTimeout,
			IdleTimeout:       n.cfg.AuthTimeout,
			MaxHeaderBytes:    8 << 10,
			ErrorLog:          slog.NewLogLogger(n.log.Handler(), slog.LevelDebug),
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error("mesh: listener stopped", "err", err)
			}
		}()
		n.log.Info("mesh: listening", "url", n.url)
	}
	n.started = true
	n.wg.Add(1)
	go n.watchStreams()
	for _, p := range n.cfg.Peers {
		n.startDialerLocked(p)
	}
	return nil
}

// AddPeer dials an extra peer, with reconnects, until the node closes.
func (n *Node) AddPeer(p PeerAddr) error {
	if err := checkPeerURL(p.URL); err != nil {
		return fmt.Errorf("mesh: peer url: %w", err)
	}
	if p.NodeID != "" {
		if err := checkNodeID(p.NodeID); err != nil {
			return fmt.Errorf("mesh: peer node id: %w", err)
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing {
		return ErrClosed
	}
	if !n.started {
		n.cfg.Peers = append(n.cfg.Peers, p)
		return nil
	}
	n.startDialerLocked(p)
	return nil
}

func (n *Node) startDialerLocked(p PeerAddr) {
	n.wg.Add(1)
	go n.dialLoop(p)
}

// Addr returns the listener's address, or nil when not listening.
func (n *Node) Addr() net.Addr {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ln == nil {
		return nil
	}
	return n.ln.Addr()
}

// URL returns the ws:// or wss:// URL peers dial, or "" when not listening.
func (n *Node) URL() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.url
}

// Close closes all links (code CloseShutdown), fails pending streams with
// ErrClosed, cancels running handlers and waits for every goroutine the node
// started, handlers included.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closing {
		n.mu.Unlock()
		n.wg.Wait()
		return nil
	}
	n.closing = true
	links := make([]*link, 0, len(n.links))
	for _, l := range n.links {
		links = append(links, l)
	}
	for c := range n.pending {
		_ = c.Close()
	}
	srv := n.srv
	n.mu.Unlock()

	n.cancel()
	if srv != nil {
		_ = srv.Close()
	}
	for _, l := range links {
		l.close(CloseShutdown, "")
	}
	n.failAllStreams()
	n.wg.Wait()
	return nil
}

// enter registers a goroutine that serves a connection; false when closing.
func (n *Node) enter() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing {
		return false
	}
	n.wg.Add(1)
	return true
}

func (n *Node) trackPending(c *websocket.Conn, on bool) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if on {
		if n.closing {
			return false
		}
		n.pending[c] = struct{}{}
	} else {
		delete(n.pending, c)
	}
	return true
}

// ServeHTTP accepts a peer: it upgrades to WebSocket and runs the listener
// side of the handshake. It is exported so a node can be mounted in another
// HTTP server; Start does that itself when ListenAddr is set.
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !n.enter() {
		http.Error(w, "mesh node is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer n.wg.Done()
	if int(n.pendAuth.Add(1)) > n.cfg.MaxPendingAuth {
		n.pendAuth.Add(-1)
		n.stats.refusedBusy.Add(1)
		http.Error(w, "too many unauthenticated connections; retry later", http.StatusServiceUnavailable)
		return
	}
	defer n.pendAuth.Add(-1)
	conn, err := n.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	if !n.trackPending(conn, true) {
		closeConn(conn, CloseShutdown, closeReasons[CloseShutdown])
		return
	}
	defer n.trackPending(conn, false)
	l, err := n.acceptHandshake(conn)
	if err != nil {
		code := closeCodeOf(err)
		n.stats.authFailed.Add(1)
		n.log.Warn("mesh: refused inbound peer", "remote", r.RemoteAddr, "code", code, "err", err)
		closeConn(conn, code, reasonOf(err))
		return
	}
	l.start()
}

func reasonOf(err error) string {
	var ae *authError
	if errors.As(err, &ae) {
		return ae.reason
	}
	return err.Error()
}

// readHandshakeFrame reads one frame during the handshake, mapping a
// deadline to CloseAuthTimeout and anything malformed to CloseProtocol.
func (n *Node) readHandshakeFrame(conn *websocket.Conn) (*Frame, error) {
	mt, r, err := conn.NextReader()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, authFail(CloseAuthTimeout, "no handshake within %v", n.cfg.AuthTimeout)
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return nil, &peerClosedError{code: ce.Code, reason: ce.Text}
		}
		return nil, fmt.Errorf("mesh: handshake read: %w", err)
	}
	data, err := readLimited(r, nil, min(n.cfg.MaxFrameBytes, maxHandshakeBytes))
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return nil, authFail(CloseFrameTooLarge, "handshake frame larger than %d bytes", min(n.cfg.MaxFrameBytes, maxHandshakeBytes))
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, authFail(CloseAuthTimeout, "no handshake within %v", n.cfg.AuthTimeout)
		}
		return nil, fmt.Errorf("mesh: handshake read: %w", err)
	}
	if mt != websocket.TextMessage {
		return nil, authFail(CloseProtocol, "binary frame during handshake")
	}
	f, err := decodeFrame(data)
	if err != nil {
		return nil, authFail(CloseProtocol, "malformed handshake frame")
	}
	return f, nil
}

// maxHandshakeBytes bounds handshake frames (they carry capabilities).
const maxHandshakeBytes = 256 << 10

// peerClosedError is the peer closing the connection during the handshake.
type peerClosedError struct {
	code   int
	reason string
}

func (e *peerClosedError) Error() string {
	return fmt.Sprintf("peer closed the connection: code %d: %s", e.code, e.reason)
}

func (n *Node) writeHandshakeFrame(conn *websocket.Conn, typ string, payload any) error {
	p, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	f := Frame{Type: typ, ID: n.newFrameID(), From: n.id, Timestamp: time.Now().UnixMilli(), Payload: p}
	_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.AuthTimeout))
	return conn.WriteMessage(websocket.TextMessage, encodeFrame(&f))
}

func (n *Node) handshakeFrame(typ string, payload any) []byte {
	p, _ := json.Marshal(payload)
	f := Frame{Type: typ, ID: n.newFrameID(), From: n.id, Timestamp: time.Now().UnixMilli(), Payload: p}
	return encodeFrame(&f)
}

// acceptHandshake runs the listener side: challenge, check the dialer's
// proof, register the link, queue auth_ok with this node's proof.
func (n *Node) acceptHandshake(conn *websocket.Conn) (*link, error) {
	deadline := time.Now().Add(n.cfg.AuthTimeout)
	_ = conn.SetReadDeadline(deadline)
	nonce := newNonce()
	if err := n.writeHandshakeFrame(conn, typeAuthChallenge, challengePayload{Proto: protoVersion, NodeID: n.id, Nonce: nonce}); err != nil {
		return nil, fmt.Errorf("mesh: send challenge: %w", err)
	}
	f, err := n.readHandshakeFrame(conn)
	if err != nil {
		return nil, err
	}
	p, err := n.verifyAuth(f, nonce)
	if err != nil {
		return nil, err
	}
	l := n.newLink(conn, p.NodeID, false, p.Incarnation, p.Caps)
	n.mu.Lock()
	caps := n.caps
	n.mu.Unlock()
	ok := authOKPayload{
		NodeID:      n.id,
		Proof:       computeProof(n.cfg.Secret, roleListener, p.Nonce, n.id, p.NodeID),
		Incarnation: n.inc,
		Caps:        caps,
	}
	// auth_ok goes first in the queue, ahead of the gossip that registering
	// queues; the writer sends it once the link starts.
	if err := l.q.pushCtrl(n.handshakeFrame(typeAuthOK, ok)); err != nil {
		return nil, err
	}
	if time.Now().After(deadline) {
		return nil, authFail(CloseAuthTimeout, "")
	}
	if err := n.register(l); err != nil {
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	return l, nil
}

// verifyAuth checks a dialer's auth frame against the challenge nonce this
// node sent, and records the dialer's nonce so it cannot be used again.
func (n *Node) verifyAuth(f *Frame, challenge string) (*authPayload, error) {
	p, err := parseAuth(f)
	if err != nil {
		return nil, err
	}
	if p.NodeID == n.id {
		return nil, authFail(CloseWrongNode, "node %q dialed itself", n.id)
	}
	if p.Nonce == challenge || n.nonces.seen(p.Nonce) {
		return nil, authFail(CloseReplayedNonce, "")
	}
	if !checkProof(n.cfg.Secret, roleDialer, challenge, p.NodeID, n.id, p.Proof) {
		return nil, authFail(CloseBadProof, "")
	}
	if err := checkCaps(&p.Caps); err != nil {
		return nil, authFail(CloseProtocol, "capabilities of %q: %v", p.NodeID, err)
	}
	if !n.nonces.add(p.Nonce) {
		return nil, authFail(CloseReplayedNonce, "")
	}
	return p, nil
}

// verifyAuthOK checks a listener's auth_ok against the nonce this node sent.
func (n *Node) verifyAuthOK(f *Frame, peer, myNonce string) (*authOKPayload, error) {
	ok, err := parseAuthOK(f)
	if err != nil {
		return nil, err
	}
	if ok.NodeID != peer {
		return nil, authFail(CloseProtocol, "auth_ok from %q, challenge from %q", ok.NodeID, peer)
	}
	if !checkProof(n.cfg.Secret, roleListener, myNonce, peer, n.id, ok.Proof) {
		return nil, authFail(CloseBadProof, "")
	}
	if err := checkCaps(&ok.Caps); err != nil {
		return nil, authFail(CloseProtocol, "capabilities of %q: %v", peer, err)
	}
	return ok, nil
}

// dialOnce connects to p and runs the dialer side of the handshake. It
// returns the peer's id when it learned it, and the started link on success.
func (n *Node) dialOnce(p PeerAddr) (string, *link, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.AuthTimeout)
	defer cancel()
	conn, resp, err := n.dialer.DialContext(ctx, p.URL, nil)
	if err != nil {
		if resp != nil {
			_ = resp.Body.Close()
			return "", nil, fmt.Errorf("dial %s: %w (HTTP %d)", p.URL, err, resp.StatusCode)
		}
		return "", nil, fmt.Errorf("dial %s: %w", p.URL, err)
	}
	if !n.trackPending(conn, true) {
		closeConn(conn, CloseShutdown, closeReasons[CloseShutdown])
		return "", nil, ErrClosed
	}
	defer n.trackPending(conn, false)
	peer, l, err := n.dialHandshake(conn, p)
	if err != nil {
		var pc *peerClosedError
		if !errors.As(err, &pc) {
			closeConn(conn, closeCodeOf(err), reasonOf(err))
		} else {
			_ = conn.Close()
		}
		return peer, nil, err
	}
	l.start()
	return peer, l, nil
}

func (n *Node) dialHandshake(conn *websocket.Conn, pa PeerAddr) (string, *link, error) {
	deadline := time.Now().Add(n.cfg.AuthTimeout)
	_ = conn.SetReadDeadline(deadline)
	f, err := n.readHandshakeFrame(conn)
	if err != nil {
		return "", nil, err
	}
	ch, err := parseChallenge(f)
	if err != nil {
		return "", nil, err
	}
	peer := ch.NodeID
	if peer == n.id {
		return peer, nil, authFail(CloseWrongNode, "%s is this node itself", pa.URL)
	}
	if pa.NodeID != "" && pa.NodeID != peer {
		return peer, nil, authFail(CloseWrongNode, "expected node %q at %s, found %q", pa.NodeID, pa.URL, peer)
	}
	if !n.nonces.add(ch.Nonce) {
		return peer, nil, authFail(CloseReplayedNonce, "")
	}
	n.mu.Lock()
	caps := n.caps
	n.mu.Unlock()
	myNonce := newNonce()
	err = n.writeHandshakeFrame(conn, typeAuth, authPayload{
		Proto:       protoVersion,
		NodeID:      n.id,
		Nonce:       myNonce,
		Proof:       computeProof(n.cfg.Secret, roleDialer, ch.Nonce, n.id, peer),
		Incarnation: n.inc,
		Caps:        caps,
	})
	if err != nil {
		return peer, nil, fmt.Errorf("mesh: send auth: %w", err)
	}
	f, err = n.readHandshakeFrame(conn)
	if err != nil {
		return peer, nil, err
	}
	ok, err := n.verifyAuthOK(f, peer, myNonce)
	if err != nil {
		return peer, nil, err
	}
	l := n.newLink(conn, peer, true, ok.Incarnation, ok.Caps)
	if err := n.register(l); err != nil {
		return peer, nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	return peer, l, nil
}

// dialLoop keeps one peer address connected until the node closes.
func (n *Node) dialLoop(p PeerAddr) {
	defer n.wg.Done()
	known := p.NodeID
	backoff := n.cfg.ReconnectMin
	for n.ctx.Err() == nil {
		// A link to that node may exist already (it dialed us, or another
		// address reached it): wait for it to end instead of duplicating it.
		if known != "" {
			if l := n.linkTo(known); l != nil {
				select {
				case <-l.done:
				case <-n.ctx.Done():
					return
				}
				n.waitGone(l)
				continue
			}
		}
		peer, l, err := n.dialOnce(p)
		if peer != "" && peer != n.id {
			known = peer
		}
		if l != nil {
			select {
			case <-l.done:
			case <-n.ctx.Done():
				return
			}
			n.waitGone(l)
			if time.Since(l.startedAt) > n.cfg.DeadAfter {
				backoff = n.cfg.ReconnectMin
			}
		} else if err != nil && n.ctx.Err() == nil {
			var pc *peerClosedError
			if errors.As(err, &pc) && pc.code == CloseDuplicateLink {
				backoff = n.cfg.ReconnectMin // the other link stays; wait for it above
			} else {
				n.log.Debug("mesh: dial failed", "url", p.URL, "err", err)
			}
		}
		t := time.NewTimer(backoffDelay(backoff, n.cfg.ReconnectMax))
		select {
		case <-t.C:
		case <-n.ctx.Done():
			t.Stop()
			return
		}
		backoff = nextBackoff(backoff, n.cfg.ReconnectMax)
	}
}

// backoffDelay is the wait before the next dial: b jittered by ±20% so that
// nodes cut off together do not redial in lockstep, never above max.
func backoffDelay(b, max time.Duration) time.Duration {
	return min(jitter(b), max)
}

// nextBackoff doubles the backoff after a failed or short-lived link, up to
// max.
func nextBackoff(b, max time.Duration) time.Duration {
	return min(b*2, max)
}

// waitGone waits (bounded) until a closing link's reader has exited, so the
// next dial does not race its removal.
func (n *Node) waitGone(l *link) {
	t := time.NewTimer(2 * closeGrace)
	defer t.Stop()
	select {
	case <-l.exited:
	case <-t.C:
	case <-n.ctx.Done():
	}
}

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
	n.log.Info("mesh: link up", "peer", l.peer, "outbound", l.outbound)
	// Full sync to the new peer; it forwards only what is news to it.
	for origin, e := range n.topo.entries {
		l.q.pushGossip(origin, e.raw)
	}
	n.announceSelfLocked()
	n.recomputeLocked()
}

// linkDown is called once by a link's reader when the link has ended.
func (n *Node) linkDown(l *link) {
	n.mu.Lock()
	if n.links[l.peer] == l {
		delete(n.links, l.peer)
		n.log.Info("mesh: link down", "peer", l.peer)
		if !n.closing {
			n.announceSelfLocked()
			n.recomputeLocked()
		}
	}
	n.mu.Unlock()
	n.failStreamsOnLink(l)
	n.checkStreams()
	close(l.exited)
}

// SetCapabilities replaces this node's capabilities and gossips them.
func (n *Node) SetCapabilities(c Capabilities) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.caps = cloneCaps(c)
	if !n.closing {
		n.announceSelfLocked()
	}
}

// Capabilities returns this node's own capabilities.
func (n *Node) Capabilities() Capabilities {
	n.mu.Lock()
	defer n.mu.Unlock()
	return cloneCaps(n.caps)
}

// Peers returns every reachable node except this one, sorted by id.
func (n *Node) Peers() []PeerInfo {
	rt := n.routes.Load()
	out := make([]PeerInfo, len(rt.peers))
	for i := range rt.peers {
		out[i] = rt.peerAt(i)
	}
	return out
}

// Peer returns one reachable node.
func (n *Node) Peer(id string) (PeerInfo, bool) {
	rt := n.routes.Load()
	i, ok := rt.index[id]
	if !ok {
		return PeerInfo{}, false
	}
	return rt.peerAt(i), true
}

// Changed returns a channel that is closed at the next change of the set of
// reachable nodes, their status, route or capabilities (not on RTT changes).
// Call it again after it fires to wait for the next change.
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

func cloneCaps(c Capabilities) Capabilities {
	out := Capabilities{
		Agents: make([]AgentInfo, len(c.Agents)),
		Models: append([]ModelInfo{}, c.Models...),
		Tags:   append([]string{}, c.Tags...),
	}
	for i, a := range c.Agents {
		a.Tags = append([]string(nil), a.Tags...)
		out.Agents[i] = a
	}
	return out
}

// checkCaps bounds what a peer may announce.
func checkCaps(c *Capabilities) error {
	const maxItems, maxStr = 1024, 4096
	if len(c.Agents) > maxItems || len(c.Models) > maxItems || len(c.Tags) > maxItems {
		return fmt.Errorf("more than %d agents, models or tags", maxItems)
	}
	long := func(s string) bool { return len(s) > maxStr }
	for _, a := range c.Agents {
		if long(a.ID) || long(a.Description) || len(a.Tags) > maxItems {
			return errors.New("agent entry too long")
		}
	}
	for _, m := range c.Models {
		if long(m.ID) || long(m.Provider) || long(m.Description) {
			return errors.New("model entry too long")
		}
	}
	for _, t := range c.Tags {
		if long(t) {
			return errors.New("tag too long")
		}
	}
	return nil
}

// Stats are counters for diagnostics and tests.
type Stats struct {
	FramesRelayed    uint64 // routed frames forwarded to another node
	DroppedSpoofed   uint64 // routed frames whose from was neither the link's peer nor a known node
	DroppedDuplicate uint64 // routed frames whose id was seen before
	DroppedTTL       uint64 // routed frames whose TTL ran out
	DroppedNoRoute   uint64 // routed frames for a node with no route
	AuthFailed       uint64 // inbound handshakes refused
	RefusedBusy      uint64 // inbound connections refused for MaxPendingAuth
	Links            int    // current direct links
}

type counters struct {
	relayed, spoofed, dup, ttl, noRoute, authFailed, refusedBusy atomic.Uint64
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	links := len(n.links)
	n.mu.Unlock()
	return Stats{
		FramesRelayed:    n.stats.relayed.Load(),
		DroppedSpoofed:   n.stats.spoofed.Load(),
		DroppedDuplicate: n.stats.dup.Load(),
		DroppedTTL:       n.stats.ttl.Load(),
		DroppedNoRoute:   n.stats.noRoute.Load(),
		AuthFailed:       n.stats.authFailed.Load(),
		RefusedBusy:      n.stats.refusedBusy.Load(),
		Links:            links,
	}
}

// limitListener closes accepted connections beyond max open ones at once,
// so a flood of idle TCP connections costs a bounded number of sockets.
type limitListener struct {
	net.Listener
	sem chan struct{}
}

func newLimitListener(l net.Listener, max int) net.Listener {
	return &limitListener{Listener: l, sem: make(chan struct{}, max)}
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
		default:
			_ = c.Close()
		}
	}
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
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

var _ io.Closer = (*Node)(nil)
