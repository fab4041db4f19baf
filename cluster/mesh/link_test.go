package mesh

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/meshtest"
)

// A peer that stops reading is closed as slow (CloseSlowPeer) once a write
// to it times out, and meanwhile the node keeps serving its other peers.
func TestSlowPeerClosed(t *testing.T) {
	cfg := testConfig("b")
	cfg.PingInterval = time.Second
	cfg.DeadAfter = 10 * time.Second // only the write timeout may end the link
	cfg.WriteTimeout = 200 * time.Millisecond
	b := startNode(t, cfg)
	a := startNode(t, testConfig("a"))
	dial(t, a, b)
	waitAll(t, []*Node{a, b}, 5*time.Second)
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	b.Handle("flood", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		for range 64 { // far beyond the socket buffers
			if err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	}))
	b.Handle("echo", echoHandler())

	p := rawDial(t, b.URL(), "raw")
	p.login()
	waitUntil(t, b, 5*time.Second, "raw linked", func() bool { _, ok := b.Peer("raw"); return ok })
	l := b.linkTo("raw")
	p.sendFrame(&Frame{Type: typeReq, ID: 1, From: "raw", To: "b", TTL: 4, Stream: 1, Payload: appendStreamMsg(nil, &streamMsg{M: "flood", W: maxWindow})})
	// raw never reads again.

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-l.done:
	case <-ctx.Done():
		t.Fatal("the link to a peer that does not read was not closed")
	}
	l.closeMu.Lock()
	code, why := l.sentCode, l.sentWhy
	l.closeMu.Unlock()
	if code != CloseSlowPeer || why == "" {
		t.Fatalf("closed with %d %q, want %d with a reason", code, why, CloseSlowPeer)
	}
	waitPeers(t, b, 5*time.Second, "a")
	if got, err := a.Call(ctx, "b", "echo", []byte("x")); err != nil || string(got) != "a:x" {
		t.Fatalf("a->b after the slow peer: %q %v", got, err)
	}
}

// A peer that falls silent while this node's writer is blocked writing to
// it (data queued, socket buffers full) is declared dead after DeadAfter of
// silence, not only once the blocked write times out: the write timeout
// here is a minute, far beyond the wait.
func TestSilentPeerDeadWhileWriteBlocked(t *testing.T) {
	nw := meshtest.NewNetwork(1)
	acfg := memConfig(nw, "a")
	acfg.WriteTimeout = time.Minute
	acfg.MaxQueueBytes = 4 * acfg.MaxFrameBytes
	a := startNode(t, acfg)
	bcfg := memConfig(nw, "b")
	bcfg.RequestWindow = maxWindow // far more in flight than the connection holds
	b := startNode(t, bcfg)
	dial(t, b, a)
	waitAll(t, []*Node{a, b}, 5*time.Second)
	msg := bytes.Repeat([]byte("x"), 256<<10)
	a.Handle("flood", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		for {
			if err := w.Write(msg); err != nil {
				return err
			}
		}
	}))
	l := a.linkTo("b")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := b.Open(ctx, "a", "flood", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		s.Close()
		t.Fatalf("first message: %v", err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			if _, err := s.Recv(); err != nil {
				return
			}
		}
	}()
	defer func() { s.Close(); <-readerDone }()

	nw.Freeze("b")
	waitPoll(t, 20*time.Second, "a's writer blocked with its queue half full", func() bool {
		return l.q.queued() >= acfg.MaxQueueBytes/2
	})
	// Generous bound (DeadAfter is 2 s); without the reader's own deadline
	// the link would end only with the one-minute write timeout.
	waitClosedWith(t, l, 15*time.Second, CloseDead, "a declaring the silent peer dead while its write was blocked")
}

// A link's RTT is gossiped again on its first measurement and on a change
// by at least a quarter and at least rttMinChange, not on jitter.
func TestRTTChanged(t *testing.T) {
	us := int64(time.Microsecond)
	for _, tc := range []struct {
		ann, cur int64
		want     bool
	}{
		{0, 0, false},
		{0, 1, true},                  // first measurement
		{1000 * us, 1100 * us, false}, // 10%
		{1000 * us, 1500 * us, true},  // 50% and 0.5 ms
		{1000 * us, 400 * us, true},
		{200 * us, 600 * us, false},         // loopback jitter: large ratio, 0.4 ms
		{100_000 * us, 110_000 * us, false}, // 10 ms, but 10%
		{100_000 * us, 130_000 * us, true},
		{100_000 * us, 70_000 * us, true},
	} {
		if got := rttChanged(tc.ann, tc.cur); got != tc.want {
			t.Errorf("rttChanged(%v, %v) = %v, want %v", time.Duration(tc.ann), time.Duration(tc.cur), got, tc.want)
		}
	}
}

// RTT-driven announcements are rate-limited per node: one per
// rttAnnounceEvery, however many links report a change.
func TestRTTAnnounceRateLimited(t *testing.T) {
	ns := make([]*Node, 2)
	for i, id := range []string{"a", "b"} {
		c := testConfig(id)
		c.PingInterval = 10 * time.Second // a window no scheduling stall outlasts
		c.DeadAfter = 30 * time.Second
		ns[i] = startNode(t, c)
	}
	a, b := ns[0], ns[1]
	dial(t, a, b)
	waitAll(t, ns, 5*time.Second)
	l := a.linkTo("b")
	// The first pong's announcement is made; the next ping is 8 s away.
	waitPoll(t, 5*time.Second, "a announced its first RTT to b", func() bool { return l.annRTT.Load() > 0 })
	version := func() uint64 {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.topo.version
	}
	a.mu.Lock()
	a.rttAnnAt = 0 // as if none was made yet
	a.mu.Unlock()
	v0 := version()
	for range 5 {
		a.announceRTT(l, false)
	}
	if got := version() - v0; got != 1 {
		t.Fatalf("5 RTT changes in a row made %d announcements, want 1", got)
	}
}

// The RTT a link gossips is the least sample of the last one to two
// windows: a stall of either machine (a late sample) does not move it, a
// lasting change does within two windows, and a lower sample at once.
func TestRTTWindowMin(t *testing.T) {
	ms := int64(time.Millisecond)
	steady := func(v int64, k int) []int64 {
		s := make([]int64, k)
		for i := range s {
			s[i] = v
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		samples []int64
		want    int64 // the estimate after the last sample
	}{
		{"first sample", []int64{3 * ms}, 3 * ms},
		{"never below 1", []int64{0}, 1},
		{"stalls ignored", append(steady(ms, 5), 40*ms, 9*ms, ms, 25*ms), ms},
		{"lower at once", append(steady(5*ms, 20), 2*ms), 2 * ms},
		{"higher within a window", append(steady(ms, rttWindow), steady(4*ms, rttWindow-1)...), ms},
		{"higher after two windows", append(steady(ms, rttWindow), steady(4*ms, 2*rttWindow)...), 4 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w rttWindowMin
			var got int64
			for _, d := range tc.samples {
				got = w.add(d)
			}
			if got != tc.want {
				t.Fatalf("estimate %v, want %v", time.Duration(got), time.Duration(tc.want))
			}
		})
	}
}

// RTT changes are announced less often the larger the cluster, so that
// the cluster as a whole makes about one such flood per rttChangeBudget
// ping intervals; a link's first measurement keeps the short bound.
func TestRTTAnnounceEveryGrowsWithCluster(t *testing.T) {
	cfg := DefaultLANConfig()
	for _, tc := range []struct {
		nodes int
		first bool
		want  time.Duration
	}{
		{0, false, 2 * time.Second},
		{1, true, 2 * time.Second},
		{1000, true, 2 * time.Second},
		{2, false, 10 * time.Second},
		{1000, false, 5000 * time.Second},
	} {
		n := &Node{cfg: cfg, topo: topology{entries: map[string]*storedEntry{}}}
		for i := range tc.nodes {
			n.topo.entries[fmt.Sprint(i)] = &storedEntry{}
		}
		if got := n.rttAnnounceEvery(tc.first); got != tc.want {
			t.Errorf("%d nodes, first=%v: %v, want %v", tc.nodes, tc.first, got, tc.want)
		}
	}
}
