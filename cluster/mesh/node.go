package mesh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/flynn/noise"
	"github.com/gorilla/websocket"
)

// Node is one member of the mesh. Create it with New, then Start it.
type Node struct {
	cfg   Config
	id    string
	log   *slog.Logger
	inc   uint64    // incarnation: this run's start time, sent in the handshake
	start time.Time // origin of mono()

	// priv and pub are the node key; static is this run's Noise key pair,
	// which the node key signs (staticSig) for links and topology entries.
	priv      ed25519.PrivateKey
	pub       ed25519.PublicKey
	static    noise.DHKey
	staticSig []byte
	trust     Trust
	pskReady  chan struct{}
	pskKey    []byte
	e2e       *sessions

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
	// untrustedLog rate-limits the log line for refused node keys.
	untrustedLog map[string]time.Time
	// rttAnnAt is n.mono() at the last announcement made for an RTT change.
	rttAnnAt int64

	routes atomic.Pointer[routeTable]

	ln       net.Listener
	srv      *http.Server
	url      string
	upgrader websocket.Upgrader
	dialer   websocket.Dialer

	dedup *dedupSet
	stats counters

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
	priv := cfg.Identity
	if priv == nil {
		// No key given (tests, the demo): an ephemeral one for this run.
		_, priv, _ = ed25519.GenerateKey(rand.Reader)
	}
	static, err := newStatic()
	if err != nil {
		return nil, fmt.Errorf("mesh: static key: %w", err)
	}
	trust := cfg.Trust
	if trust == nil {
		trust = &memoryTrust{}
	}
	now := time.Now()
	n := &Node{
		priv:      priv,
		pub:       priv.Public().(ed25519.PublicKey),
		static:    static,
		staticSig: signStatic(priv, static.Public),
		trust:     trust,
		pskReady:  make(chan struct{}),
		cfg:       cfg,
		id:        cfg.NodeID,
		log:       log.With("node", cfg.NodeID),
		inc:       uint64(now.UnixNano()),
		start:     now,
		links:     make(map[string]*link),
		pending:   make(map[*websocket.Conn]struct{}),
		regs:      make(map[string]*regLock),
		caps:      cloneCaps(cfg.Capabilities),
		changed:   make(chan struct{}),
		dedup:     newDedupSet(cfg.DedupSize),
		ended:     newEndedStreams(maxEndedStreams),
		handlers:  make(map[string]Handler),
		clients:   make(map[uint64]*Stream),
		servers:   make(map[serverKey]*serverStream),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.e2e = newSessions(n)
	// The pre-shared key takes tens of milliseconds to derive; do it in the
	// background so that New returns at once, and handshakes wait for it.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.pskKey = derivePSK(cfg.Secret)
		close(n.pskReady)
	}()
	n.idSeq.Store(n.inc)
	n.topo = topology{entries: make(map[string]*storedEntry), version: n.inc}
	n.routes.Store(&routeTable{self: n.id, next: map[string]*link{}, index: map[string]int{}, parent: map[string]string{}, edges: map[edgeKey]uint64{}})
	n.upgrader = websocket.Upgrader{
		Subprotocols:     []string{subprotocol},
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
		Subprotocols:     []string{subprotocol},
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
func (n *Node) newFrameID() uint64 { return n.nextID() }

// psk returns the pre-shared key, waiting for its derivation.
func (n *Node) psk() []byte {
	<-n.pskReady
	return n.pskKey
}

// PublicKey returns this node's Ed25519 node key.
func (n *Node) PublicKey() ed25519.PublicKey { return n.pub }

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
		ln = newTrackedListener(ln, &n.cfg, func() { n.stats.evicted.Add(1) })
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

// Peer text is data: ids that do not fit the id character set are left
// out, and free text loses control characters and is capped, so that
// nothing a peer announces can start a new line in a prompt or a log.
const (
	maxDescriptionRunes = 200
	maxCapTags          = 32
)

// sanitizeCaps cleans capabilities received from a peer, in place.
func sanitizeCaps(c *Capabilities) {
	agents := c.Agents[:0]
	for _, a := range c.Agents {
		if !ValidCapID(a.ID) {
			continue
		}
		a.Description = cleanText(a.Description, maxDescriptionRunes)
		a.Tags = cleanTags(a.Tags)
		agents = append(agents, a)
	}
	c.Agents = agents
	models := c.Models[:0]
	for _, m := range c.Models {
		if !ValidCapID(m.ID) {
			continue
		}
		if !ValidCapID(m.Provider) {
			m.Provider = ""
		}
		m.Description = cleanText(m.Description, maxDescriptionRunes)
		models = append(models, m)
	}
	c.Models = models
	c.Tags = cleanTags(c.Tags)
}

// ValidCapID reports whether s can name an agent, model, provider or tag
// announced by a peer: 1-128 letters, digits, '.', '_', '-', ':' or '/'.
func ValidCapID(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == ':' || c == '/') {
			return false
		}
	}
	return true
}

func cleanTags(tags []string) []string {
	out := tags[:0]
	for _, t := range tags {
		if ValidCapID(t) && len(out) < maxCapTags {
			out = append(out, t)
		}
	}
	return out
}

// cleanText turns control characters (line breaks included) into spaces,
// collapses runs of spaces and caps the text at max runes.
func cleanText(s string, max int) string {
	var b strings.Builder
	runes := 0
	space := false
	for _, r := range s {
		if unicode.IsControl(r) || unicode.IsSpace(r) || r == '\u2028' || r == '\u2029' {
			space = b.Len() > 0
			continue
		}
		if runes >= max {
			b.WriteString("…")
			break
		}
		if space {
			b.WriteByte(' ')
			runes++
			space = false
		}
		b.WriteRune(r)
		runes++
	}
	return b.String()
}

// Stats are counters for diagnostics and tests.
type Stats struct {
	FramesRelayed    uint64 // routed frames forwarded to another node
	DroppedSpoofed   uint64 // routed frames whose from was neither the link's peer nor a known node
	DroppedDuplicate uint64 // routed frames whose id was seen before
	DroppedTTL       uint64 // routed frames whose TTL ran out
	DroppedNoRoute   uint64 // routed frames for a node with no route
	AuthFailed       uint64 // inbound handshakes refused
	EvictedPending   uint64 // unauthenticated connections evicted for newer ones
	Links            int    // current direct links
}

type counters struct {
	relayed, spoofed, dup, ttl, noRoute, authFailed, evicted atomic.Uint64
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
		EvictedPending:   n.stats.evicted.Load(),
		Links:            links,
	}
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
