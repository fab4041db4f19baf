package mesh

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// A peer that holds its whole share of streams half-sent is refused past it
// while another peer's requests keep working; when it goes on asking, its
// link is closed for flooding.
func TestPeerStreamShare(t *testing.T) {
	cfg := testConfig("b")
	cfg.MaxStreamsPerPeer = 8
	cfg.PingInterval, cfg.DeadAfter = time.Second, 10*time.Second // the raw peer answers no pings
	b := startNode(t, cfg)
	a := startNode(t, testConfig("a"))
	dial(t, a, b)
	waitAll(t, []*Node{a, b}, 5*time.Second)
	hog := rawDial(t, b.URL(), "hog")
	hog.login()
	waitUntil(t, b, 5*time.Second, "hog linked", func() bool { _, ok := b.Peer("hog"); return ok })
	half := func(s uint64) {
		hog.sendFrame(streamFrame(typeReq, "hog", "b", streamMsg{S: s, M: "echo", W: 16, D: []byte("x"), More: true}))
	}
	for s := uint64(1); s <= 8; s++ {
		half(s)
	}
	half(9)
	if m := hog.readUntil(typeEnd, 9); m.E == nil || m.E.Code != CodeUnavailable || !strings.Contains(m.E.Message, "at most 8 requests at once") {
		t.Fatalf("stream 9 ended with %+v, want a refusal of its share", m.E)
	}
	stillServes(t, a, b)
	// Past its share, as many times again: the link is closed.
	l := b.linkTo("hog")
	for s := uint64(10); s < 10+8; s++ {
		half(s)
	}
	waitClosedWith(t, l, 5*time.Second, CloseFlood, "b closing the flooding peer's link")
	stillServes(t, a, b)
	waitPoll(t, 5*time.Second, "the hog's share released", func() bool {
		b.smu.Lock()
		defer b.smu.Unlock()
		return b.shares["hog"] == nil && b.pendingReq.Load() == 0
	})
}

// A caller's request bytes being reassembled are bounded per caller too.
func TestPeerPendingBytesShare(t *testing.T) {
	cfg := testConfig("b")
	cfg.MaxMessageBytes = 64 << 10
	cfg.MaxPendingBytesPerPeer = 48 << 10
	cfg.PingInterval, cfg.DeadAfter = time.Second, 10*time.Second
	b := startNode(t, cfg)
	p := rawDial(t, b.URL(), "p")
	p.login()
	waitUntil(t, b, 5*time.Second, "p linked", func() bool { _, ok := b.Peer("p"); return ok })
	kb := func(n int) []byte { return bytes.Repeat([]byte("z"), n<<10) }
	p.sendFrame(streamFrame(typeReq, "p", "b", streamMsg{S: 1, M: "echo", W: 16, D: kb(30), More: true}))
	p.sendFrame(streamFrame(typeReq, "p", "b", streamMsg{S: 2, M: "echo", W: 16, D: kb(30), More: true}))
	if m := p.readUntil(typeEnd, 2); m.E == nil || m.E.Code != CodeUnavailable {
		t.Fatalf("stream 2 ended with %+v, want unavailable", m.E)
	}
}

// A request left half-sent is given up after RequestIdleTimeout, and the
// caller is told.
func TestHalfSentRequestTimesOut(t *testing.T) {
	cfg := testConfig("b")
	cfg.RequestIdleTimeout = 300 * time.Millisecond
	cfg.PingInterval, cfg.DeadAfter = time.Second, 10*time.Second
	b := startNode(t, cfg)
	p := rawDial(t, b.URL(), "p")
	p.login()
	waitUntil(t, b, 5*time.Second, "p linked", func() bool { _, ok := b.Peer("p"); return ok })
	p.sendFrame(streamFrame(typeReq, "p", "b", streamMsg{S: 1, M: "echo", W: 16, D: []byte("half"), More: true}))
	if m := p.readUntil(typeNoStream, 1); m.E == nil || !strings.Contains(m.E.Message, "half-sent") {
		t.Fatalf("no_stream with %+v, want the reason", m.E)
	}
	waitPoll(t, 5*time.Second, "no request bytes held", func() bool { return b.pendingReq.Load() == 0 })
}

// 300 idle unauthenticated connections do not keep a real peer out: it
// joins within 2 s, as the oldest idle ones are evicted for it.
func TestIdleConnectionFloodDoesNotLockOut(t *testing.T) {
	b := startNode(t, testConfig("b"))
	var idle []net.Conn
	defer func() {
		for _, c := range idle {
			_ = c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		c, err := net.DialTimeout("tcp", b.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	waitPoll(t, 5*time.Second, "the flood evicted down to the bounds", func() bool {
		return b.Stats().EvictedPending >= 300-uint64(testConfig("b").MaxPendingAuthPerSource)
	})
	a := startNode(t, testConfig("a"))
	start := time.Now()
	dial(t, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for {
		if _, ok := b.Peer("a"); ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("a did not join within 2 s of 300 idle connections")
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Logf("joined in %v", time.Since(start))
}
