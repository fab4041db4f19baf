package mesh

import "testing"

// The replay window accepts each counter once, in any order within the
// window, and refuses counters too old to tell.
func TestReplayWindow(t *testing.T) {
	var ss session
	steps := []struct {
		ctr  uint64
		want bool
	}{
		{0, true}, {0, false}, // a repeat
		{5, true}, {3, true}, {3, false}, {4, true}, // out of order, once each
		{5000, true},                                                            // a jump ahead
		{5001 - (replayWindow - 64), true}, {5001 - (replayWindow - 64), false}, // oldest still told apart
		{5000 - (replayWindow - 64), false}, // too old to tell
		{5, false},                          // far behind
		{5001, true}, {4999, true},
	}
	for i, st := range steps {
		got := ss.fresh(st.ctr)
		if got {
			ss.mark(st.ctr)
		}
		if got != st.want {
			t.Fatalf("step %d: counter %d accepted = %v, want %v", i, st.ctr, got, st.want)
		}
	}
}
