package mesh

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"
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
	payload, _ := json.Marshal(streamMsg{S: 1, M: "flood", W: maxWindow})
	p.sendFrame(&Frame{Type: typeReq, ID: "flood-1", From: "raw", To: "b", TTL: 4, Timestamp: 1, Payload: payload})
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
	acfg := testConfig("a")
	acfg.WriteTimeout = time.Minute
	acfg.MaxQueueBytes = 4 * acfg.MaxFrameBytes
	a := startNode(t, acfg)
	bcfg := testConfig("b")
	bcfg.RequestWindow = maxWindow // far more in flight than the socket buffers hold
	b := startNode(t, bcfg)
	px := newTCPProxy(t, a.Addr().String())
	if err := b.AddPeer(PeerAddr{URL: px.url(), NodeID: "a"}); err != nil {
		t.Fatal(err)
	}
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

	px.freeze()
	waitPoll(t, 20*time.Second, "a's writer blocked with its queue half full", func() bool {
		return l.q.queued() >= acfg.MaxQueueBytes/2
	})
	// Generous bound (DeadAfter is 2 s); without the reader's own deadline
	// the link would end only with the one-minute write timeout.
	select {
	case <-l.done:
	case <-time.After(15 * time.Second):
		t.Fatal("a did not declare the silent peer dead while its write was blocked")
	}
	l.closeMu.Lock()
	code := l.sentCode
	l.closeMu.Unlock()
	if code != CloseDead {
		t.Fatalf("link closed with code %d, want CloseDead (%d)", code, CloseDead)
	}
}
