// Package meshtest runs mesh nodes on an in-memory network, for tests and
// simulations: a Network is a transport.Transport per host, whose connections
// carry messages between nodes of one process with the delay, jitter and
// loss chosen per pair of hosts, and which can partition hosts, freeze
// them, cut their connections or crash them on demand.
//
// Only the transport is simulated. Nodes on a Network run the real mesh:
// the Noise handshake with the pre-shared key, records, gossip, routing,
// heartbeats and close codes, on real timers. What the network decides
// (which message is late, by how much) is drawn from a seeded generator per
// connection, so the same seed and the same traffic give the same
// decisions; and nothing depends on the machine's TCP stack, its buffers or
// its ports. A fault takes effect the moment the test calls for it, and
// the network reports what crossed it (bytes, close notices), so a test
// waits for an event instead of a while.
package meshtest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

// Scheme is the URL scheme of listeners on a Network: mem://HOST.
const Scheme = "mem"

// Link is how messages travel between two hosts, each way.
type Link struct {
	// Delay is the one-way latency of every message. A dial takes one
	// round trip.
	Delay time.Duration
	// Jitter adds up to this much more per message, drawn from the seed.
	// Messages of one connection never overtake each other.
	Jitter time.Duration
	// Loss is the chance (0 to 1) that a message is lost on the wire. The
	// connection is reliable, as TCP is: a lost message is sent again
	// after RTO (doubling on each further loss), and the messages behind
	// it wait for it. Loss shows as late bursts, never as a gap.
	Loss float64
	// RTO is the first retransmission timeout; zero means 200 ms (the
	// least Linux waits).
	RTO time.Duration
	// Buffer is how many bytes may be in flight one way before a writer
	// blocks (socket buffers); zero means 1 MiB.
	Buffer int
}

// Loopback is the default link: no delay, no loss.
func Loopback() Link { return Link{} }

// LAN is a switched local network: about a quarter of a millisecond one way.
func LAN() Link { return Link{Delay: 200 * time.Microsecond, Jitter: 100 * time.Microsecond} }

// WAN is a link between sites: 40 ms one way, a few ms of jitter and a
// loss of one message in a thousand.
func WAN() Link {
	return Link{Delay: 40 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.001}
}

const (
	defaultRTO    = 200 * time.Millisecond
	defaultBuffer = 1 << 20
	maxRetries    = 8
)

func (l Link) rto() time.Duration {
	if l.RTO > 0 {
		return l.RTO
	}
	return defaultRTO
}

func (l Link) buffer() int {
	if l.Buffer > 0 {
		return l.Buffer
	}
	return defaultBuffer
}

// Network is an in-memory network of hosts. Its zero value is not usable;
// use NewNetwork. It is safe for concurrent use.
type Network struct {
	seed uint64

	mu        sync.Mutex
	def       Link
	links     map[pair]Link // per unordered pair of hosts
	listeners map[string]*listener
	conns     map[string]map[*conn]struct{} // open connections per host (both ends)
	dials     map[[2]string]uint64          // connections made so far per (dialer, listener)
	frozen    map[string]bool
	crashed   map[string]bool
	parted    map[pair]bool
	cut       map[pair]bool
	notices   []Notice
	stats     map[string]*counters
	changed   chan struct{}
}

// pair is an unordered pair of hosts.
type pair struct{ a, b string }

func pairOf(a, b string) pair {
	if a > b {
		a, b = b, a
	}
	return pair{a, b}
}

// NewNetwork makes an empty network whose random decisions (jitter, loss)
// derive from seed. Links default to Loopback.
func NewNetwork(seed uint64) *Network {
	return &Network{
		seed:      seed,
		links:     map[pair]Link{},
		listeners: map[string]*listener{},
		conns:     map[string]map[*conn]struct{}{},
		dials:     map[[2]string]uint64{},
		frozen:    map[string]bool{},
		crashed:   map[string]bool{},
		parted:    map[pair]bool{},
		cut:       map[pair]bool{},
		stats:     map[string]*counters{},
		changed:   make(chan struct{}),
	}
}

// Transport is host's view of the network, for mesh.Config.Transport: it
// listens at mem://HOST (whatever ListenAddr says) and its dials leave from
// host.
func (nw *Network) Transport(host string) transport.Transport {
	return &hostTransport{nw: nw, host: host}
}

// URL is the address of host's listener.
func URL(host string) string { return Scheme + "://" + host }

// SetDefault sets the link used between hosts without one of their own.
// It applies to messages sent from then on.
func (nw *Network) SetDefault(l Link) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.def = l
}

// SetLink sets the link between hosts a and b, both ways, for messages
// sent from then on.
func (nw *Network) SetLink(a, b string, l Link) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.links[pairOf(a, b)] = l
}

func (nw *Network) linkLocked(a, b string) Link {
	if l, ok := nw.links[pairOf(a, b)]; ok {
		return l
	}
	return nw.def
}

// Partition stops all traffic between every host of side and every host of
// other, as a network split does: messages in flight are held, new
// connections hang, and both ends see silence. Heal ends it, and what was
// held is delivered then (a connection that was not given up in between
// goes on).
func (nw *Network) Partition(side, other []string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, a := range side {
		for _, b := range other {
			if a != b {
				nw.parted[pairOf(a, b)] = true
			}
		}
	}
	nw.updateHeldLocked()
}

// Freeze stops all traffic to and from the hosts, as when their process is
// stopped or their machine hangs: their connections stay open but silent.
// Thaw or Heal ends it.
func (nw *Network) Freeze(hosts ...string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, h := range hosts {
		nw.frozen[h] = true
	}
	nw.updateHeldLocked()
}

// Thaw ends the freeze of the hosts.
func (nw *Network) Thaw(hosts ...string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for _, h := range hosts {
		delete(nw.frozen, h)
	}
	nw.updateHeldLocked()
}

// Cut resets every connection between hosts a and b at once, without a
// close notice (as a reset or a killed peer does), and refuses new ones
// between them until Heal.
func (nw *Network) Cut(a, b string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.cut[pairOf(a, b)] = true
	for c := range nw.conns[a] {
		if c.remote == b {
			c.resetLocked()
		}
	}
	nw.changedLocked()
}

// Crash resets every connection of host and refuses connections to and
// from it until Heal, as when its process is killed: peers see their
// connections end without a close notice. Close the host's node afterwards
// to end its goroutines; what it sends while closing goes nowhere.
func (nw *Network) Crash(host string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.crashed[host] = true
	for c := range nw.conns[host] {
		c.resetLocked()
	}
	nw.changedLocked()
}

// Heal ends every partition, freeze, cut and crash. Connections that were
// reset stay closed.
func (nw *Network) Heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	clear(nw.parted)
	clear(nw.frozen)
	clear(nw.cut)
	clear(nw.crashed)
	nw.updateHeldLocked()
}

// blockedLocked reports whether nothing may flow between hosts a and b.
func (nw *Network) blockedLocked(a, b string) bool {
	return nw.frozen[a] || nw.frozen[b] || nw.parted[pairOf(a, b)]
}

// refusedLocked reports whether a connection from a to b is refused.
func (nw *Network) refusedLocked(a, b string) bool {
	return nw.crashed[a] || nw.crashed[b] || nw.cut[pairOf(a, b)]
}

// updateHeldLocked applies the partitions and freezes to every open
// connection and wakes those whose state changed.
func (nw *Network) updateHeldLocked() {
	for host, cs := range nw.conns {
		for c := range cs {
			if c.local == host { // each end once: it sets its incoming pipe
				c.in.setHeld(nw.blockedLocked(c.remote, c.local))
			}
		}
	}
	nw.changedLocked()
}

func (nw *Network) changedLocked() {
	close(nw.changed)
	nw.changed = make(chan struct{})
}

// Changed returns a channel that is closed at the network's next event: a
// connection opened or ended, a close notice sent, a fault applied or
// healed. Call it again after it fires.
func (nw *Network) Changed() <-chan struct{} {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	return nw.changed
}

// Wait waits until cond holds, checking it at every event of the network,
// or until ctx ends.
func (nw *Network) Wait(ctx context.Context, cond func() bool) error {
	for {
		ch := nw.Changed()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Notice is a close notice a host sent on a connection.
type Notice struct {
	From, To string
	Code     int
	Reason   string
	// Echo marks the answer to the peer's close notice.
	Echo bool
}

// Notices returns the close notices sent from host from to host to, oldest
// first (both "" for all).
func (nw *Network) Notices(from, to string) []Notice {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var out []Notice
	for _, n := range nw.notices {
		if (from == "" || n.From == from) && (to == "" || n.To == to) {
			out = append(out, n)
		}
	}
	return out
}

// Conns returns how many connections are open between hosts a and b.
func (nw *Network) Conns(a, b string) int {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	k := 0
	for c := range nw.conns[a] {
		if c.remote == b {
			k++
		}
	}
	return k
}

// HostStats counts what a host's connections carried: message payloads
// (link records), without any framing or packet headers.
type HostStats struct {
	BytesSent, BytesReceived       uint64
	MessagesSent, MessagesReceived uint64
}

// counters are a host's HostStats as they are counted.
type counters struct {
	bytesSent, bytesReceived, msgsSent, msgsReceived atomic.Uint64
}

func (c *counters) load() HostStats {
	return HostStats{
		BytesSent: c.bytesSent.Load(), BytesReceived: c.bytesReceived.Load(),
		MessagesSent: c.msgsSent.Load(), MessagesReceived: c.msgsReceived.Load(),
	}
}

// countersLocked returns host's counters, made on first use.
func (nw *Network) countersLocked(host string) *counters {
	c := nw.stats[host]
	if c == nil {
		c = &counters{}
		nw.stats[host] = c
	}
	return c
}

// Stats returns the counters of host.
func (nw *Network) Stats(host string) HostStats {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if c := nw.stats[host]; c != nil {
		return c.load()
	}
	return HostStats{}
}

// TotalStats sums the counters of every host.
func (nw *Network) TotalStats() HostStats {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	var t HostStats
	for _, c := range nw.stats {
		s := c.load()
		t.BytesSent += s.BytesSent
		t.BytesReceived += s.BytesReceived
		t.MessagesSent += s.MessagesSent
		t.MessagesReceived += s.MessagesReceived
	}
	return t
}

// rngFor returns the generator of the k-th connection from a to b in one
// direction: the same for the same seed, whatever other connections do.
func (nw *Network) rngFor(from, to string, k uint64, dir byte) *rand.Rand {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%c", from, to, k, dir)
	return rand.New(rand.NewPCG(nw.seed, h.Sum64()))
}

// hostTransport is one host's transport.Transport.
type hostTransport struct {
	nw   *Network
	host string
}

var errRefused = errors.New("connection refused")

func (t *hostTransport) Dial(ctx context.Context, addr string) (transport.Conn, error) {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme != Scheme || u.Host == "" {
		return nil, fmt.Errorf("meshtest: dial %q: want %s://HOST", addr, Scheme)
	}
	to := u.Host
	nw := t.nw
	for {
		nw.mu.Lock()
		l := nw.listeners[to]
		if l == nil || nw.refusedLocked(t.host, to) {
			nw.mu.Unlock()
			return nil, fmt.Errorf("meshtest: dial %s from %s: %w", addr, t.host, errRefused)
		}
		if !nw.blockedLocked(t.host, to) {
			nw.mu.Unlock()
			break
		}
		ch := nw.changed
		nw.mu.Unlock()
		select { // a partition drops the connection attempt: wait it out
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("meshtest: dial %s from %s: %w", addr, t.host, ctx.Err())
		}
	}
	nw.mu.Lock()
	rtt := 2 * nw.linkLocked(t.host, to).Delay
	nw.mu.Unlock()
	if rtt > 0 {
		tm := time.NewTimer(rtt)
		select {
		case <-tm.C:
		case <-ctx.Done():
			tm.Stop()
			return nil, fmt.Errorf("meshtest: dial %s from %s: %w", addr, t.host, ctx.Err())
		}
	}
	nw.mu.Lock()
	l := nw.listeners[to]
	if l == nil || nw.refusedLocked(t.host, to) {
		nw.mu.Unlock()
		return nil, fmt.Errorf("meshtest: dial %s from %s: %w", addr, t.host, errRefused)
	}
	k := nw.dials[[2]string{t.host, to}]
	nw.dials[[2]string{t.host, to}] = k + 1
	client, server := newConnPair(nw, t.host, to, k)
	held := nw.blockedLocked(t.host, to)
	client.in.held, server.in.held = held, held
	nw.addConnLocked(client)
	nw.addConnLocked(server)
	nw.changedLocked()
	nw.mu.Unlock()
	// Queued under nw.mu while l is registered, so that a listener's
	// Close, which unregisters it first, finds and closes every
	// connection it did not accept.
	for {
		nw.mu.Lock()
		if nw.listeners[to] != l {
			nw.mu.Unlock()
			break
		}
		select {
		case l.accepts <- server:
			nw.mu.Unlock()
			return client, nil
		default: // the backlog is full
		}
		nw.mu.Unlock()
		select {
		case <-l.taken:
			continue
		case <-l.done:
		case <-ctx.Done():
		}
		break
	}
	client.Close()
	server.Close()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("meshtest: dial %s from %s: %w", addr, t.host, err)
	}
	return nil, fmt.Errorf("meshtest: dial %s from %s: %w", addr, t.host, errRefused)
}

func (nw *Network) addConnLocked(c *conn) {
	m := nw.conns[c.local]
	if m == nil {
		m = map[*conn]struct{}{}
		nw.conns[c.local] = m
	}
	m[c] = struct{}{}
}

func (nw *Network) removeConn(c *conn) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if _, ok := nw.conns[c.local][c]; ok {
		delete(nw.conns[c.local], c)
		if len(nw.conns[c.local]) == 0 {
			delete(nw.conns, c.local)
		}
		nw.changedLocked()
	}
}

func (nw *Network) notice(n Notice) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	nw.notices = append(nw.notices, n)
	nw.changedLocked()
}

func (t *hostTransport) Listen(ctx context.Context, addr string) (transport.Listener, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nw := t.nw
	nw.mu.Lock()
	defer nw.mu.Unlock()
	if nw.listeners[t.host] != nil {
		return nil, fmt.Errorf("meshtest: host %s listens already", t.host)
	}
	l := &listener{nw: nw, host: t.host, accepts: make(chan *conn, backlog), taken: make(chan struct{}, 1), done: make(chan struct{})}
	nw.listeners[t.host] = l
	return l, nil
}

// backlog is how many connections may wait for Accept before dials wait
// too.
const backlog = 128

// listener is a host's listener.
type listener struct {
	nw      *Network
	host    string
	accepts chan *conn
	taken   chan struct{} // capacity 1: Accept made room in the backlog
	done    chan struct{}
	once    sync.Once
}

func (l *listener) Accept() (transport.Conn, error) {
	select {
	case c := <-l.accepts:
		wake(l.taken)
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("meshtest: accept on %s: %w", URL(l.host), net.ErrClosed)
	}
}

func (l *listener) Close() error {
	l.once.Do(func() {
		l.nw.mu.Lock()
		if l.nw.listeners[l.host] == l {
			delete(l.nw.listeners, l.host)
		}
		close(l.done)
		l.nw.mu.Unlock()
		for {
			select {
			case c := <-l.accepts: // dialed, never accepted
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (l *listener) Addr() net.Addr { return addr(l.host) }
func (l *listener) URL() string    { return URL(l.host) }

// addr is a host's address.
type addr string

func (a addr) Network() string { return Scheme }
func (a addr) String() string  { return string(a) }
