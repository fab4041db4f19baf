package mesh

import (
	"time"
)

// armGapLocked starts the timer that fails the stream if the frames it is
// missing do not arrive within DeadAfter. A timer that fires after it was
// stopped (the gap filled meanwhile) finds a newer generation and does
// nothing.
func (s *Stream) armGapLocked() {
	s.gapGen++
	gen := s.gapGen
	s.gap = time.AfterFunc(s.n.cfg.DeadAfter, func() {
		s.mu.Lock()
		current := s.gap != nil && s.gapGen == gen
		s.mu.Unlock()
		if !current {
			return
		}
		if s.finish(unreachable(s.to, "response frames lost in transit")) {
			s.sendCancel()
		}
		s.n.removeClient(s)
		s.stopWatch()
	})
}

func (s *Stream) stopGapLocked() {
	if s.gap != nil {
		s.gap.Stop()
		s.gap = nil
		s.gapGen++
	}
}

// resFrame is a response frame held for reordering.
type resFrame struct {
	end bool
	m   streamMsg
}
