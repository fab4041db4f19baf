package mesh

import (
	"context"
	"errors"
	"fmt"
	"time"
)

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

// unreachableRepeat is how often an unchanged dial failure is logged again.
const unreachableRepeat = 5 * time.Minute

// dialLoop keeps one peer address connected until the node closes.
func (n *Node) dialLoop(p PeerAddr) {
	defer n.wg.Done()
	known := p.NodeID
	backoff := n.cfg.ReconnectMin
	// A peer that cannot be reached is said once at warning level, then
	// again only when the reason changes or after unreachableRepeat, so a
	// wrong URL shows in the log without filling it.
	var lastWarn string
	var lastWarnAt time.Time
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
			lastWarn = ""
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
			switch {
			case errors.As(err, &pc) && pc.code == CloseDuplicateLink:
				backoff = n.cfg.ReconnectMin // the other link stays; wait for it above
			case refusedForTrust(err):
				// The operator has to act (secret, key, version): say so.
				n.log.Warn("mesh: link refused", "url", p.URL, "err", err)
			case err.Error() != lastWarn || time.Since(lastWarnAt) >= unreachableRepeat:
				lastWarn, lastWarnAt = err.Error(), time.Now()
				n.log.Warn("mesh: peer unreachable, retrying; check its URL, that it listens (listen: true) and that no firewall is between", "url", p.URL, "err", err)
			default:
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

// refusedForTrust reports whether a handshake failed for a reason only the
// operator can fix: the secret, a node key, or the protocol version.
func refusedForTrust(err error) bool {
	code := 0
	var pc *peerClosedError
	var ae *authError
	switch {
	case errors.As(err, &pc):
		code = pc.code
	case errors.As(err, &ae):
		code = ae.code
	}
	switch code {
	case CloseBadProof, CloseUntrusted, CloseVersion, CloseWrongNode:
		return true
	}
	return false
}
