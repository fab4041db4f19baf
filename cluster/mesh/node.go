package mesh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
	"go.opentelemetry.io/otel/trace"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
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
	pending map[transport.Conn]struct{}
	regs    map[string]*regLock
	caps    Capabilities
	topo    topology
	changed chan struct{}
	// untrustedLog rate-limits the log line for refused node keys.
	untrustedLog map[string]time.Time
	// rttAnnAt is n.mono() at the last announcement made for an RTT change.
	rttAnnAt int64
	// announcing is the timer of a pending announcement
	// (announceSoonLocked), recomputing that of a pending recomputation
	// of the routes (recomputeSoonLocked).
	announcing, recomputing *time.Timer

	routes atomic.Pointer[routeTable]

	// transport carries the links (Config.Transport, else ws); ws also
	// serves ServeHTTP.
	transport transport.Transport
	ws        *wsTransport
	ln        transport.Listener
	url       string

	dedup *dedupSet
	stats counters
	// tracer records spans; nil when Config.TracerProvider is not set.
	tracer trace.Tracer

	hmu      sync.RWMutex
	handlers map[string]Handler

	smu     sync.Mutex
	clients map[uint64]*Stream
	servers map[serverKey]*serverStream
	// pendingReq is the request bytes held by servers still reassembling
	// their request (MaxPendingRequestBytes); each serverStream's held share.
	pendingReq atomic.Int64
	shares     map[string]*peerShare // per caller, see share.go
	ended      *endedStreams
}

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
		pending:   make(map[transport.Conn]struct{}),
		regs:      make(map[string]*regLock),
		caps:      withOwnFeatures(cloneCaps(cfg.Capabilities)),
		changed:   make(chan struct{}),
		dedup:     newDedupSet(cfg.DedupSize),
		ended:     newEndedStreams(maxEndedStreams),
		handlers:  make(map[string]Handler),
		clients:   make(map[uint64]*Stream),
		servers:   make(map[serverKey]*serverStream),
		shares:    make(map[string]*peerShare),
	}
	if cfg.TracerProvider != nil {
		n.tracer = cfg.TracerProvider.Tracer(tracerName)
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
	n.topo = topology{entries: make(map[string]*storedEntry), held: make(map[string]string), version: n.inc}
	n.routes.Store(&routeTable{self: n.id, next: map[string]*link{}, index: map[string]int{}, parent: map[string]string{}, edges: map[edgeKey]uint64{}})
	n.ws = newWSTransport(&n.cfg, n.log, func() { n.stats.evicted.Add(1) })
	n.transport = cfg.Transport
	if n.transport == nil {
		n.transport = n.ws
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
		ln, err := n.transport.Listen(ctx, n.cfg.ListenAddr)
		if err != nil {
			return fmt.Errorf("mesh: listen on %s: %w", n.cfg.ListenAddr, err)
		}
		n.ln = ln
		n.url = ln.URL()
		n.wg.Add(1)
		go n.acceptLoop(ln)
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
	if err := n.cfg.checkPeerAddr(p.URL); err != nil {
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

// URL returns the URL peers dial (ws:// or wss:// with the default
// transport), or "" when not listening.
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
	n.stopAnnouncingLocked()
	n.stopRecomputingLocked()
	links := make([]*link, 0, len(n.links))
	for _, l := range n.links {
		links = append(links, l)
	}
	for c := range n.pending {
		_ = c.Close()
	}
	ln := n.ln
	n.mu.Unlock()

	// No new stream after cancel (Open checks n.ctx), then the streams
	// before the links: closing a link fails the streams on it as lost
	// (ErrUnreachable), and callers are promised ErrClosed.
	n.cancel()
	n.failAllStreams()
	if ln != nil {
		_ = ln.Close()
	}
	for _, l := range links {
		l.close(CloseShutdown, "")
	}
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

// SetCapabilities replaces this node's capabilities and gossips them.
func (n *Node) SetCapabilities(c Capabilities) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.caps = withOwnFeatures(cloneCaps(c))
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
// reachable nodes, their status, route or capabilities (not on RTT or Load
// changes).
// Call it again after it fires to wait for the next change.
func (n *Node) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changed
}

// Stats are counters for diagnostics and tests.
type Stats struct {
	FramesRelayed    uint64 // routed frames forwarded to another node
	BytesRelayed     uint64 // their size, headers included
	DroppedSpoofed   uint64 // routed frames whose from was neither the link's peer nor a known node
	DroppedDuplicate uint64 // routed frames whose id was seen before
	DroppedTTL       uint64 // routed frames whose TTL ran out
	DroppedNoRoute   uint64 // routed frames for a node with no route
	AuthFailed       uint64 // inbound handshakes refused
	EvictedPending   uint64 // unauthenticated connections evicted for newer ones
	GossipBytesSent  uint64 // topology gossip (peer_sync frames) sent on links, before encryption
	Links            int    // current direct links
}

type counters struct {
	relayed, relayedBytes, spoofed, dup, ttl, noRoute, authFailed, evicted, gossipBytes atomic.Uint64
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	links := len(n.links)
	n.mu.Unlock()
	return Stats{
		FramesRelayed:    n.stats.relayed.Load(),
		BytesRelayed:     n.stats.relayedBytes.Load(),
		DroppedSpoofed:   n.stats.spoofed.Load(),
		DroppedDuplicate: n.stats.dup.Load(),
		DroppedTTL:       n.stats.ttl.Load(),
		DroppedNoRoute:   n.stats.noRoute.Load(),
		AuthFailed:       n.stats.authFailed.Load(),
		EvictedPending:   n.stats.evicted.Load(),
		GossipBytesSent:  n.stats.gossipBytes.Load(),
		Links:            links,
	}
}

var _ io.Closer = (*Node)(nil)
