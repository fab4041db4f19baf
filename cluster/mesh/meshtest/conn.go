package meshtest

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

// A connection is two pipes, one per direction. The network runs no
// goroutine of its own: a writer stamps each message with the time it may
// be read (delay, jitter, retransmissions), and the reader waits for that
// time, its deadline, or a wake-up.

// message is one message in flight, or a close notice.
type message struct {
	data  []byte
	at    time.Time // when it may be read
	close *transport.CloseError
}

// pipe is one direction of a connection.
type pipe struct {
	mu      sync.Mutex
	q       []message
	bytes   int       // data bytes queued
	last    time.Time // the latest delivery time queued: messages keep their order
	held    bool      // a partition or freeze holds what is queued
	fin     bool      // the writing end closed: the reader gets EOF once the queue is empty
	rclosed bool      // the reading end closed: writes fail
	reset   bool      // the connection was reset: everything fails at once
	rdl     time.Time // the reader's deadline
	wdl     time.Time // the writer's deadline
	closeIn *transport.CloseError
	rng     *rand.Rand

	readable chan struct{} // capacity 1: the reader should look again
	writable chan struct{} // capacity 1: the writer should look again
}

func newPipe(rng *rand.Rand) *pipe {
	return &pipe{rng: rng, readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (p *pipe) setHeld(h bool) {
	p.mu.Lock()
	p.held = h
	p.mu.Unlock()
	wake(p.readable)
}

// conn is one end of a connection.
type conn struct {
	nw            *Network
	local, remote string
	in, out       *pipe
	stats         *counters // the local host's

	// wmu (capacity 1) orders writes and the close notice.
	wmu       chan struct{}
	closeSent bool
	closeOnce sync.Once
	rtimer    *time.Timer // the reader's, made on first use
}

// newConnPair makes both ends of the k-th connection from host `from` to
// host `to`. The caller holds nw.mu.
func newConnPair(nw *Network, from, to string, k uint64) (client, server *conn) {
	ab := newPipe(nw.rngFor(from, to, k, '>'))
	ba := newPipe(nw.rngFor(from, to, k, '<'))
	client = &conn{nw: nw, local: from, remote: to, in: ba, out: ab, stats: nw.countersLocked(from), wmu: make(chan struct{}, 1)}
	server = &conn{nw: nw, local: to, remote: from, in: ab, out: ba, stats: nw.countersLocked(to), wmu: make(chan struct{}, 1)}
	return client, server
}

var (
	errReset  = errors.New("connection reset by peer")
	errClosed = errors.New("close notice sent: nothing may follow it")
)

func (c *conn) ReadMessage(_ []byte, limit int) ([]byte, error) {
	p := c.in
	for {
		p.mu.Lock()
		switch {
		case p.reset:
			p.mu.Unlock()
			return nil, fmt.Errorf("meshtest: read from %s: %w", c.remote, errReset)
		case p.rclosed:
			p.mu.Unlock()
			return nil, fmt.Errorf("meshtest: read from %s: %w", c.remote, net.ErrClosed)
		case p.closeIn != nil:
			ce := p.closeIn
			p.mu.Unlock()
			return nil, ce
		}
		now := time.Now()
		wait := time.Duration(-1) // none
		if !p.held && len(p.q) > 0 {
			m := p.q[0]
			if !m.at.After(now) {
				p.q[0] = message{}
				p.q = p.q[1:]
				p.bytes -= len(m.data)
				if m.close != nil {
					p.closeIn = m.close
				}
				p.mu.Unlock()
				wake(p.writable)
				if m.close != nil {
					// As WebSocket's closing handshake: answer with a
					// close notice unless this side sent one.
					c.writeClose(m.close.Code, "", time.Second, true)
					return nil, m.close
				}
				c.stats.bytesReceived.Add(uint64(len(m.data)))
				c.stats.msgsReceived.Add(1)
				if len(m.data) > limit {
					return nil, fmt.Errorf("meshtest: a message of %d bytes from %s: %w", len(m.data), c.remote, transport.ErrMessageTooLarge)
				}
				return m.data, nil
			}
			wait = m.at.Sub(now)
		}
		if !p.held && len(p.q) == 0 && p.fin {
			p.mu.Unlock()
			return nil, io.EOF
		}
		if !p.rdl.IsZero() {
			d := p.rdl.Sub(now)
			if d <= 0 {
				p.mu.Unlock()
				return nil, fmt.Errorf("meshtest: read from %s: %w", c.remote, os.ErrDeadlineExceeded)
			}
			if wait < 0 || d < wait {
				wait = d
			}
		}
		p.mu.Unlock()
		c.sleep(p.readable, wait)
	}
}

// sleep waits for a wake-up on ch, or d when d is not negative.
func (c *conn) sleep(ch chan struct{}, d time.Duration) {
	if d < 0 {
		<-ch
		return
	}
	if c.rtimer == nil {
		c.rtimer = time.NewTimer(d)
	} else {
		c.rtimer.Reset(d)
	}
	select {
	case <-ch:
	case <-c.rtimer.C:
	}
	c.rtimer.Stop()
}

func (c *conn) WriteMessages(msgs ...[]byte) error {
	c.wmu <- struct{}{}
	defer func() { <-c.wmu }()
	if c.closeSent {
		return fmt.Errorf("meshtest: write to %s: %w", c.remote, errClosed)
	}
	c.nw.mu.Lock()
	l := c.nw.linkLocked(c.local, c.remote)
	c.nw.mu.Unlock()
	p := c.out
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for _, m := range msgs {
		p.mu.Lock()
		for {
			if err := c.writableLocked(); err != nil {
				p.mu.Unlock()
				return err
			}
			now := time.Now()
			if !p.wdl.IsZero() && !now.Before(p.wdl) {
				p.mu.Unlock()
				return fmt.Errorf("meshtest: write to %s: %w", c.remote, os.ErrDeadlineExceeded)
			}
			if p.bytes == 0 || p.bytes+len(m) <= l.buffer() {
				break
			}
			// The peer does not read: wait for room, as a full socket
			// buffer makes a writer wait.
			ch := p.writable
			var tc <-chan time.Time
			if !p.wdl.IsZero() {
				if timer == nil {
					timer = time.NewTimer(p.wdl.Sub(now))
				} else {
					timer.Reset(p.wdl.Sub(now))
				}
				tc = timer.C
			}
			p.mu.Unlock()
			select {
			case <-ch:
			case <-tc:
			}
			p.mu.Lock()
		}
		at := time.Now().Add(l.Delay)
		if l.Jitter > 0 {
			at = at.Add(time.Duration(p.rng.Int64N(int64(l.Jitter) + 1)))
		}
		rto := l.rto()
		for try := 0; try < maxRetries && l.Loss > 0 && p.rng.Float64() < l.Loss; try++ {
			at = at.Add(rto)
			rto *= 2
		}
		if at.Before(p.last) {
			at = p.last
		}
		p.last = at
		p.q = append(p.q, message{data: append([]byte(nil), m...), at: at})
		p.bytes += len(m)
		p.mu.Unlock()
		wake(p.readable)
		c.stats.bytesSent.Add(uint64(len(m)))
		c.stats.msgsSent.Add(1)
	}
	return nil
}

// writableLocked says why nothing can be written to c.out, if so.
func (c *conn) writableLocked() error {
	p := c.out
	switch {
	case p.reset || p.rclosed && !p.held: // a held path cannot tell that the peer closed
		return fmt.Errorf("meshtest: write to %s: %w", c.remote, errReset)
	case p.fin:
		return fmt.Errorf("meshtest: write to %s: %w", c.remote, net.ErrClosed)
	}
	return nil
}

func (c *conn) WriteClose(code int, reason string, wait time.Duration) error {
	return c.writeClose(code, reason, wait, false)
}

func (c *conn) writeClose(code int, reason string, wait time.Duration, echo bool) error {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case c.wmu <- struct{}{}:
	case <-t.C:
		return fmt.Errorf("meshtest: close notice to %s not sent: a write has been blocked for %v", c.remote, wait)
	}
	defer func() { <-c.wmu }()
	if c.closeSent {
		return nil
	}
	c.closeSent = true
	c.nw.mu.Lock()
	l := c.nw.linkLocked(c.local, c.remote)
	c.nw.mu.Unlock()
	p := c.out
	p.mu.Lock()
	if err := c.writableLocked(); err != nil {
		p.mu.Unlock()
		return err
	}
	at := time.Now().Add(l.Delay)
	if at.Before(p.last) {
		at = p.last
	}
	p.last = at
	p.q = append(p.q, message{close: &transport.CloseError{Code: code, Reason: reason}, at: at})
	p.mu.Unlock()
	wake(p.readable)
	c.nw.notice(Notice{From: c.local, To: c.remote, Code: code, Reason: reason, Echo: echo})
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.in.mu.Lock()
	c.in.rdl = t
	c.in.mu.Unlock()
	wake(c.in.readable)
	return nil
}

func (c *conn) SetWriteDeadline(t time.Time) error {
	c.out.mu.Lock()
	c.out.wdl = t
	c.out.mu.Unlock()
	wake(c.out.writable)
	return nil
}

// Close ends this side: the peer reads what was sent, then EOF; its writes
// fail.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.in.mu.Lock()
		c.in.rclosed = true
		c.in.mu.Unlock()
		wake(c.in.readable)
		wake(c.in.writable)
		c.out.mu.Lock()
		c.out.fin = true
		c.out.mu.Unlock()
		wake(c.out.readable)
		wake(c.out.writable)
		c.nw.removeConn(c)
	})
	return nil
}

// resetLocked resets the connection both ways. The caller holds nw.mu.
func (c *conn) resetLocked() {
	for _, p := range []*pipe{c.in, c.out} {
		p.mu.Lock()
		p.reset = true
		p.q = nil
		p.bytes = 0
		p.mu.Unlock()
		wake(p.readable)
		wake(p.writable)
	}
}

func (c *conn) RemoteAddr() net.Addr { return addr(c.remote) }
