package mesh

import (
	"context"
	"fmt"
)

// waitReqCredit waits until the target has credited enough request frames
// to send one more.
func (s *Stream) waitReqCredit(ctx context.Context) error {
	for {
		s.mu.Lock()
		ok := s.reqSent-s.reqAcked < uint64(s.window)
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-s.credit:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// creditLocked counts k response frames as consumed and returns the
// cumulative count to acknowledge, or 0 when no ack is due yet.
func (s *Stream) creditLocked(k uint64) uint64 {
	s.consumed += k
	if s.finished || s.consumed-s.acked < uint64(max(1, s.window/2)) {
		return 0
	}
	s.acked = s.consumed
	return s.consumed
}

// waitCredit waits until the caller has credited enough frames to send one
// more.
func (ss *serverStream) waitCredit() error {
	for {
		if ss.ctx.Err() != nil {
			return fmt.Errorf("mesh: write to %q: %w", ss.key.from, context.Cause(ss.ctx))
		}
		ss.mu.Lock()
		ok := ss.sent-ss.acked < ss.window
		ss.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ss.credit:
		case <-ss.ctx.Done():
		}
	}
}
