package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/meshtest"
)

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

// A node that learns of a peer through a relay may send it a request before
// the peer has a route back: the peer's answer to the end-to-end handshake
// waits for that route instead of being dropped, so the first request to a
// node that has just joined succeeds.
func TestFirstRequestAfterJoinThroughRelay(t *testing.T) {
	for round := range 8 {
		nw := meshtest.NewNetwork(uint64(round))
		ns := startMemNodes(t, nw, "a", "r", "c")
		a, r, c := ns[0], ns[1], ns[2]
		c.Handle("hello", HandlerFunc(func(ctx context.Context, w ResponseWriter, req *Request) error {
			return w.Write([]byte("hi"))
		}))
		dial(t, a, r)
		dial(t, c, r)
		waitPeers(t, a, 5*time.Second, "c", "r")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := a.Open(ctx, "c", "hello", nil)
		if err != nil {
			cancel()
			t.Fatalf("round %d: first request from a to c: %v", round, err)
		}
		m, err := s.Recv()
		s.Close()
		cancel()
		if err != nil || string(m) != "hi" {
			t.Fatalf("round %d: answer %q, %v", round, m, err)
		}
		for _, n := range ns {
			_ = n.Close()
		}
	}
}
