package mesh

import (
	"fmt"
	"sync/atomic"
	"time"
)

// Fair shares. Every caller gets its own slice of what this node serves:
// at most MaxStreamsPerPeer requests at once and MaxPendingBytesPerPeer
// bytes of requests still being reassembled, on top of the node-wide
// bounds. A caller past its share is refused as unavailable while every
// other caller goes on; a direct peer that keeps asking after as many
// refusals as its stream share is flooding, and its link is closed
// (CloseFlood). A request that stays half-sent for RequestIdleTimeout is
// given up, so idle halves cannot hold a share for ever.

// peerShare is one caller's use of this node, guarded by Node.smu except
// the byte count, which the target's streams update under their own lock.
type peerShare struct {
	streams int
	refused int
	pending atomic.Int64
}

// shareLocked returns from's share, making it if needed (smu held).
func (n *Node) shareLocked(from string) *peerShare {
	sh := n.shares[from]
	if sh == nil {
		sh = &peerShare{}
		n.shares[from] = sh
	}
	return sh
}

// admitStreamLocked decides whether from may open one more stream (smu
// held). It returns the refusal to send, and whether the link l that
// brought the request should be closed for flooding.
func (n *Node) admitStreamLocked(l *link, from string) (refusal *RemoteError, flood bool) {
	sh := n.shareLocked(from)
	if sh.streams < n.cfg.MaxStreamsPerPeer {
		sh.streams++
		sh.refused = 0
		return nil, false
	}
	sh.refused++
	flood = l != nil && l.peer == from && sh.refused >= n.cfg.MaxStreamsPerPeer
	return &RemoteError{Code: CodeUnavailable, Message: fmt.Sprintf(
		"node %q serves at most %d requests at once from node %q; retry when some have finished", n.id, n.cfg.MaxStreamsPerPeer, from)}, flood
}

// releaseStreamLocked returns a stream slot of from (smu held).
func (n *Node) releaseStreamLocked(from string) {
	sh := n.shares[from]
	if sh == nil {
		return
	}
	sh.streams--
	if sh.streams <= 0 && sh.pending.Load() == 0 {
		delete(n.shares, from)
	}
}

// takePending counts k more request bytes against the node-wide and the
// caller's budget; false (and nothing counted) when either would overflow.
func (n *Node) takePending(sh *peerShare, k int) bool {
	if n.pendingReq.Add(int64(k)) > int64(n.cfg.MaxPendingRequestBytes) {
		n.pendingReq.Add(-int64(k))
		return false
	}
	if sh.pending.Add(int64(k)) > int64(n.cfg.MaxPendingBytesPerPeer) {
		sh.pending.Add(-int64(k))
		n.pendingReq.Add(-int64(k))
		return false
	}
	return true
}

// idleRequests gives up the requests that have been half-sent for longer
// than RequestIdleTimeout; watchStreams calls it.
func (n *Node) idleRequests(now int64) {
	var idle []*serverStream
	n.smu.Lock()
	for _, ss := range n.servers {
		ss.mu.Lock()
		if !ss.started && time.Duration(now-ss.lastChunk) > n.cfg.RequestIdleTimeout {
			idle = append(idle, ss)
		}
		ss.mu.Unlock()
	}
	n.smu.Unlock()
	for _, ss := range idle {
		why := fmt.Sprintf("the request stayed half-sent for more than %v", n.cfg.RequestIdleTimeout)
		n.abortServer(ss, unreachable(ss.key.from, why), why)
	}
}
