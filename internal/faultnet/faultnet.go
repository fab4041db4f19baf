// Package faultnet is a TCP forwarder on 127.0.0.1 that can fail on demand,
// for tests and benchmarks that need a peer to die or fall silent without
// the peer's process knowing: Cut drops every connection without any
// protocol-level goodbye (as when a process is killed), Freeze stops
// delivering bytes while the connections stay open (as when a machine hangs
// or a network drops packets).
package faultnet

import (
	"errors"
	"net"
	"sync"
)

// Proxy forwards every connection accepted on its loopback address to a
// target address. Its zero value is not usable; use Listen.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // accept loop and pipes

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	open   chan struct{} // closed while forwarding is allowed; replaced by Freeze
	cutOff bool
	closed bool
}

// Listen starts a proxy on 127.0.0.1 (a free port) that forwards to target
// (host:port). Close stops it.
func Listen(target string) (*Proxy, error) {
	if target == "" {
		return nil, errors.New("faultnet: empty target address; give host:port")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}, open: make(chan struct{})}
	close(p.open)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listening address (127.0.0.1:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL is ws://Addr, for a mesh peer address.
func (p *Proxy) URL() string { return "ws://" + p.Addr() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cutOff || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.mu.Unlock()
		// Dial outside the lock; the target is on loopback, so this is quick.
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		if p.cutOff || p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = up.Close()
			continue
		}
		p.conns[c] = struct{}{}
		p.conns[up] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			p.mu.Lock()
			gate := p.open
			p.mu.Unlock()
			// Held here while frozen; Cut, Heal and Close open the gate.
			<-gate
			if _, werr := dst.Write(buf[:k]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// Freeze stops forwarding bytes in both directions; the connections stay
// open and new ones are still accepted (and frozen too) until Heal or Cut.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

func (p *Proxy) unfreezeLocked() {
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// Cut closes every forwarded connection at the TCP level and refuses new
// ones until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = true
	p.unfreezeLocked()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Heal ends a Freeze or a Cut: bytes flow again and new connections are
// accepted. Connections closed by Cut stay closed.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutOff = false
	p.unfreezeLocked()
}

// Close stops the proxy, closes every connection and waits for its
// goroutines. It may be called more than once.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.unfreezeLocked()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
