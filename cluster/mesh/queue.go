package mesh

import (
	"context"
	"errors"
	"sync"
)

// errQueueOverflow means a link's write queue is full: the peer does not
// take frames as fast as they are produced for it.
var errQueueOverflow = errors.New("link write queue overflow")

// errLinkClosed is returned when queuing on a link that has gone away.
var errLinkClosed = errors.New("link closed")

// maxCtrlFrames bounds queued control frames; a peer that lets this many
// pile up is not reading.
const maxCtrlFrames = 4096

// sendQueue is a link's write queue. The writer takes, in order:
// control frames (ping, pong, acks, cancels) first, then pending gossip
// (coalesced per origin, so a burst of topology changes costs one frame),
// then stream data round-robin between lanes, one frame per lane per turn.
// A lane is one local stream, or one (origin, destination) flow of relayed
// frames, so frames within a lane keep their order while a big transfer in
// one lane never delays another lane by more than one chunk.
type sendQueue struct {
	mu     sync.Mutex
	ctrl   [][]byte
	gossip map[string][]byte
	gorder []string
	lanes  map[string]*lane
	active []*lane // lanes with frames, in round-robin order
	rr     int
	bytes  int // bytes queued in lanes and ctrl
	max    int
	closed bool
	wake   chan struct{} // capacity 1: something was queued
	space  chan struct{} // closed and replaced when bytes drop below max/2
	waiter bool          // someone waits on space
}

type lane struct {
	key    string
	frames []queuedFrameData
}

// queuedFrameData is one stream frame in a lane; then, when set, is called
// once the writer takes it (with nil) or the queue drops it (with why): a
// traced hop ends.
type queuedFrameData struct {
	data []byte
	then func(error)
}

func newSendQueue(max int) *sendQueue {
	return &sendQueue{
		gossip: make(map[string][]byte),
		lanes:  make(map[string]*lane),
		max:    max,
		wake:   make(chan struct{}, 1),
		space:  make(chan struct{}),
	}
}

func (q *sendQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// pushCtrl queues a control frame ahead of all data.
func (q *sendQueue) pushCtrl(data []byte) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return errLinkClosed
	}
	if len(q.ctrl) >= maxCtrlFrames || q.bytes+len(data) > q.max {
		q.mu.Unlock()
		return errQueueOverflow
	}
	q.ctrl = append(q.ctrl, data)
	q.bytes += len(data)
	q.mu.Unlock()
	q.signal()
	return nil
}

// pushGossip queues one topology entry; a newer entry for the same origin
// replaces a pending older one.
func (q *sendQueue) pushGossip(origin string, raw []byte) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	if _, ok := q.gossip[origin]; !ok {
		q.gorder = append(q.gorder, origin)
	}
	q.gossip[origin] = raw
	q.mu.Unlock()
	q.signal()
}

// pushData queues a stream frame in lane key. With ctx non-nil (a local
// sender) it waits while the queue is at least half full; with ctx nil
// (relayed traffic, which must not stall the link it came from) it fails
// with errQueueOverflow when the frame does not fit.
func (q *sendQueue) pushData(ctx context.Context, key string, data []byte) error {
	return q.pushDataThen(ctx, key, data, nil)
}

// pushDataThen is pushData with a function called once the frame leaves the
// queue: taken by the writer, dropped when the queue closes, or at once
// when it is not queued (the error says why).
func (q *sendQueue) pushDataThen(ctx context.Context, key string, data []byte, then func(error)) error {
	err := q.pushLane(ctx, key, queuedFrameData{data: data, then: then})
	if err != nil && then != nil {
		then(err)
	}
	return err
}

func (q *sendQueue) pushLane(ctx context.Context, key string, fr queuedFrameData) error {
	data := fr.data
	q.mu.Lock()
	for ctx != nil && !q.closed && q.bytes >= q.max/2 {
		q.waiter = true
		space := q.space
		q.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		q.mu.Lock()
	}
	if q.closed {
		q.mu.Unlock()
		return errLinkClosed
	}
	if q.bytes+len(data) > q.max {
		q.mu.Unlock()
		return errQueueOverflow
	}
	ln := q.lanes[key]
	if ln == nil {
		ln = &lane{key: key}
		q.lanes[key] = ln
	}
	if len(ln.frames) == 0 {
		q.active = append(q.active, ln)
	}
	ln.frames = append(ln.frames, fr)
	q.bytes += len(data)
	q.mu.Unlock()
	q.signal()
	return nil
}

// popped is what the writer takes next: one frame, or a batch of gossip
// entries to wrap in a peer_sync frame.
type popped struct {
	data   []byte
	gossip [][]byte
}

// pop takes the next item, or reports false when the queue is empty.
// maxGossip bounds the size of one gossip batch.
func (q *sendQueue) pop(maxGossip int) (popped, bool) {
	q.mu.Lock()
	p, then, ok := q.popLocked(maxGossip)
	q.mu.Unlock()
	if then != nil {
		then(nil)
	}
	return p, ok
}

func (q *sendQueue) popLocked(maxGossip int) (popped, func(error), bool) {
	if len(q.ctrl) > 0 {
		d := q.ctrl[0]
		q.ctrl[0] = nil
		q.ctrl = q.ctrl[1:]
		if len(q.ctrl) == 0 {
			q.ctrl = nil
		}
		q.release(len(d))
		return popped{data: d}, nil, true
	}
	if len(q.gorder) > 0 {
		var batch [][]byte
		size := 0
		i := 0
		for ; i < len(q.gorder); i++ {
			raw := q.gossip[q.gorder[i]]
			if len(batch) > 0 && size+len(raw) > maxGossip {
				break
			}
			batch = append(batch, raw)
			size += len(raw) + 1
			delete(q.gossip, q.gorder[i])
		}
		q.gorder = q.gorder[i:]
		if len(q.gorder) == 0 {
			q.gorder = nil
		}
		return popped{gossip: batch}, nil, true
	}
	if len(q.active) == 0 {
		return popped{}, nil, false
	}
	if q.rr >= len(q.active) {
		q.rr = 0
	}
	ln := q.active[q.rr]
	fr := ln.frames[0]
	d := fr.data
	ln.frames[0] = queuedFrameData{}
	ln.frames = ln.frames[1:]
	if len(ln.frames) == 0 {
		ln.frames = nil
		q.active = append(q.active[:q.rr], q.active[q.rr+1:]...)
		delete(q.lanes, ln.key)
	} else {
		q.rr++
	}
	q.release(len(d))
	return popped{data: d}, fr.then, true
}

func (q *sendQueue) release(n int) {
	q.bytes -= n
	if q.waiter && q.bytes < q.max/2 {
		q.waiter = false
		close(q.space)
		q.space = make(chan struct{})
	}
}

// close drops everything queued and wakes all waiting senders.
func (q *sendQueue) close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	var thens []func(error)
	for _, ln := range q.active {
		for _, fr := range ln.frames {
			if fr.then != nil {
				thens = append(thens, fr.then)
			}
		}
	}
	q.closed = true
	q.ctrl, q.gossip, q.gorder, q.lanes, q.active = nil, nil, nil, nil, nil
	q.bytes = 0
	close(q.space)
	q.mu.Unlock()
	for _, then := range thens {
		then(errLinkClosed)
	}
}

// queued returns the bytes currently queued (for tests and diagnostics).
func (q *sendQueue) queued() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}
