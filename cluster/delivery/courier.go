package delivery

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// courier carries what one side stores for other nodes (messages, reports)
// to them: one goroutine per node with something to carry, which sends a
// batch at a time, in order, while the node is reachable, and backs off on
// failure. It waits for the mesh to see the node again rather than polling,
// so a node that comes back gets its batch at once.
type courier struct {
	s      *Service
	method string
	// next loads the next batch for node; nil when nothing is left.
	next func(node string) (*batch, error)
	// apply takes the node's answer to a batch; hold is true when the
	// node asked to be spared for a while (its inbox is full).
	apply func(node string, b *batch, answer []byte) (hold bool, err error)

	mu    sync.Mutex
	lanes map[string]*lane
}

// batch is one call's payload, and whatever apply needs to read the answer.
type batch struct {
	payload []byte
	ids     []string
}

type lane struct {
	wake  chan struct{}
	dirty bool       // work was added since the lane last looked
	busy  sync.Mutex // held while a batch is out, so a cancel sees settled state
}

func newCourier(s *Service, method string, next func(string) (*batch, error),
	apply func(string, *batch, []byte) (bool, error)) *courier {
	return &courier{s: s, method: method, next: next, apply: apply, lanes: map[string]*lane{}}
}

// kickLocked makes sure node's lane runs and looks for work again. The
// service lock is held (it orders kicks against Close).
func (c *courier) kickLocked(node string) {
	if c.s.closed {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l, ok := c.lanes[node]; ok {
		l.dirty = true
		wake(l.wake)
		return
	}
	l := &lane{wake: make(chan struct{}, 1), dirty: true}
	c.lanes[node] = l
	c.s.wg.Add(1)
	go c.run(node, l)
}

func (c *courier) kick(node string) {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.kickLocked(node)
}

// settle waits until no batch to node is out, and returns a function that
// lets the lane go on.
func (c *courier) settle(node string) (release func()) {
	c.mu.Lock()
	l := c.lanes[node]
	c.mu.Unlock()
	if l == nil {
		return func() {}
	}
	l.busy.Lock()
	return l.busy.Unlock
}

func (c *courier) run(node string, l *lane) {
	defer c.s.wg.Done()
	s := c.s
	backoff := s.t.RetryMin
	for {
		if s.ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		l.dirty = false
		c.mu.Unlock()
		if !s.reachable(node) {
			changed := s.node.Changed()
			if !s.reachable(node) {
				select {
				case <-changed:
				case <-l.wake:
				case <-s.ctx.Done():
					return
				}
				continue
			}
		}
		l.busy.Lock()
		b, err := c.next(node)
		if err == nil && b == nil {
			l.busy.Unlock()
			c.mu.Lock()
			if !l.dirty {
				delete(c.lanes, node)
				c.mu.Unlock()
				return
			}
			c.mu.Unlock()
			continue
		}
		hold := false
		if err == nil {
			s.stats.pushes.Add(1)
			callCtx, cancel := context.WithTimeout(s.ctx, s.t.CallTimeout)
			var answer []byte
			answer, err = s.node.Call(callCtx, node, c.method, b.payload)
			cancel()
			if err == nil {
				hold, err = c.apply(node, b, answer)
			} else {
				s.stats.pushErrors.Add(1)
				c.logFailure(node, err)
			}
		}
		l.busy.Unlock()
		if err == nil && !hold {
			backoff = s.t.RetryMin
			continue
		}
		if s.ctx.Err() != nil {
			return
		}
		// Wait, but go at once when the topology changes: the node may be
		// back on a new link after a restart or a partition. A full inbox
		// does not empty because links change.
		var changed <-chan struct{}
		if !hold {
			changed = s.node.Changed()
		}
		timer := time.NewTimer(jitter(backoff))
		select {
		case <-timer.C:
		case <-changed:
		case <-s.ctx.Done():
		}
		timer.Stop()
		backoff = min(backoff*2, s.t.RetryMax)
	}
}

func (c *courier) logFailure(node string, err error) {
	var re *mesh.RemoteError
	switch {
	case errors.Is(err, mesh.ErrUnknownNode), errors.Is(err, mesh.ErrUnreachable), errors.Is(err, context.Canceled):
		c.s.log.Debug("delivery: node not reachable, will retry", "method", c.method, "node", node, "err", err)
	case errors.As(err, &re) && re.Code == mesh.CodeNoHandler:
		c.s.log.Warn("delivery: node does not take durable messages (an older clawmatrix, or it is starting); will retry",
			"node", node)
	default:
		c.s.log.Info("delivery: call failed, will retry", "method", c.method, "node", node, "err", err)
	}
}
