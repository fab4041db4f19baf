package mesh

import (
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"sync"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

// ServeHTTP accepts a peer: it upgrades to WebSocket and runs the listener
// side of the handshake. It is exported so a node can be mounted in another
// HTTP server; Start listens by itself when ListenAddr is set.
func (n *Node) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !n.enter() {
		http.Error(w, "mesh node is shutting down", http.StatusServiceUnavailable)
		return
	}
	defer n.wg.Done()
	conn, err := n.ws.upgrade(w, r)
	if err != nil {
		return // the upgrader has answered with an HTTP error
	}
	n.serveConn(conn)
}

// acceptLoop serves the connections of the node's listener until it closes.
func (n *Node) acceptLoop(ln transport.Listener) {
	defer n.wg.Done()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				n.log.Error("mesh: listener stopped", "err", err)
			}
			return
		}
		if !n.enter() {
			closeConn(conn, CloseShutdown, closeReasons[CloseShutdown])
			continue
		}
		go func() {
			defer n.wg.Done()
			n.serveConn(conn)
		}()
	}
}

// serveConn runs the listener side of the handshake on an accepted
// connection and starts the link. The caller holds n.wg for it.
func (n *Node) serveConn(conn transport.Conn) {
	if !n.trackPending(conn, true) {
		closeConn(conn, CloseShutdown, closeReasons[CloseShutdown])
		return
	}
	defer n.trackPending(conn, false)
	l, err := n.acceptHandshake(conn)
	if err != nil {
		code := closeCodeOf(err)
		n.stats.authFailed.Add(1)
		n.log.Warn("mesh: refused inbound peer", "remote", conn.RemoteAddr(), "code", code, "err", err)
		closeConn(conn, code, reasonOf(err))
		return
	}
	if a, ok := conn.(authenticator); ok {
		a.authenticated()
	}
	l.start()
}

// Pre-authentication limits.
//
// A connection costs a socket and a goroutine before its handshake proves
// anything, so unauthenticated connections are bounded: at most
// MaxPendingAuth in all and MaxPendingAuthPerSource per source address.
// A connection over either bound evicts the oldest unauthenticated one
// (of that source, or overall) instead of being refused, so a flood of idle
// connections cannot lock a legitimate peer out: its handshake takes
// milliseconds, while the flood's connections are evicted in arrival order.
// Authenticated connections are never evicted; MaxConns bounds all
// connections.

// trackedListener applies the pre-authentication limits at accept time.
type trackedListener struct {
	net.Listener
	maxConns, maxPending, maxPerSource int
	onEvict                            func()

	mu      sync.Mutex
	open    int
	pending []*trackedConn // unauthenticated, oldest first
}

func newTrackedListener(l net.Listener, cfg *Config, onEvict func()) *trackedListener {
	return &trackedListener{Listener: l, maxConns: cfg.MaxConns, maxPending: cfg.MaxPendingAuth, maxPerSource: cfg.MaxPendingAuthPerSource, onEvict: onEvict}
}

func (l *trackedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, l: l, source: sourceOf(c.RemoteAddr())}
		var evict []*trackedConn
		l.mu.Lock()
		if l.open-len(l.pending) >= l.maxConns {
			// Full of authenticated links: nothing to evict.
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		same := 0
		for _, p := range l.pending {
			if p.source == tc.source {
				same++
			}
		}
		for i := 0; i < len(l.pending) && same >= l.maxPerSource; i++ {
			if p := l.pending[i]; p.source == tc.source {
				evict = append(evict, p)
				l.removeLocked(p)
				i--
				same--
			}
		}
		for len(l.pending) > 0 && (len(l.pending) >= l.maxPending || l.open-len(evict) >= l.maxConns) {
			p := l.pending[0]
			evict = append(evict, p)
			l.removeLocked(p)
		}
		l.open++
		l.pending = append(l.pending, tc)
		l.mu.Unlock()
		for _, p := range evict {
			_ = p.Close()
			if l.onEvict != nil {
				l.onEvict()
			}
		}
		return tc, nil
	}
}

// removeLocked takes p off the pending list (not off the open count).
func (l *trackedListener) removeLocked(p *trackedConn) bool {
	for i, q := range l.pending {
		if q == p {
			copy(l.pending[i:], l.pending[i+1:])
			l.pending[len(l.pending)-1] = nil
			l.pending = l.pending[:len(l.pending)-1]
			return true
		}
	}
	return false
}

func sourceOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

type trackedConn struct {
	net.Conn
	l      *trackedListener
	source string
	once   sync.Once
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.removeLocked(c)
		c.l.open--
		c.l.mu.Unlock()
	})
	return err
}

// markAuthenticated exempts a connection from eviction once its handshake
// has succeeded.
func markAuthenticated(c net.Conn) {
	if t, ok := c.(*tls.Conn); ok {
		c = t.NetConn()
	}
	if tc, ok := c.(*trackedConn); ok {
		tc.l.mu.Lock()
		tc.l.removeLocked(tc)
		tc.l.mu.Unlock()
	}
}

func (n *Node) trackPending(c transport.Conn, on bool) bool {
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
