package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func popAll(q *sendQueue) []string {
	var out []string
	for {
		it, ok := q.pop(1 << 20)
		if !ok {
			return out
		}
		if it.gossip != nil {
			for _, g := range it.gossip {
				out = append(out, "g:"+string(g))
			}
			continue
		}
		out = append(out, string(it.data))
	}
}

func TestQueueOrder(t *testing.T) {
	q := newSendQueue(1 << 20)
	ctx := context.Background()
	_ = q.pushData(ctx, "big", []byte("b1"))
	_ = q.pushData(ctx, "big", []byte("b2"))
	_ = q.pushData(ctx, "big", []byte("b3"))
	_ = q.pushData(ctx, "small", []byte("s1"))
	q.pushGossip("x", []byte("x1"))
	q.pushGossip("x", []byte("x2")) // replaces x1
	_ = q.pushCtrl([]byte("ping"))
	_ = q.pushData(ctx, "other", []byte("o1"))
	got := popAll(q)
	// Control first, then coalesced gossip, then lanes round-robin with
	// each lane's frames in order.
	want := []string{"ping", "g:x2", "b1", "s1", "o1", "b2", "b3"}
	if len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v want %v", got, want)
		}
	}
	if q.queued() != 0 {
		t.Fatalf("queued %d after draining", q.queued())
	}
}

func TestQueueBounds(t *testing.T) {
	q := newSendQueue(100)
	// Relayed data (nil ctx) past the bound is refused, not buffered.
	if err := q.pushData(nil, "r", make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	if err := q.pushData(nil, "r", make([]byte, 60)); !errors.Is(err, errQueueOverflow) {
		t.Fatalf("overflow: %v", err)
	}
	// A local sender waits while the queue is at least half full...
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.pushData(ctx, "l", make([]byte, 10)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("local sender did not wait: %v", err)
	}
	// ...and proceeds once the writer drains it.
	done := make(chan error, 1)
	go func() { done <- q.pushData(context.Background(), "l", make([]byte, 10)) }()
	q.pop(1 << 20)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Closing wakes waiters with errLinkClosed.
	_ = q.pushData(nil, "r", make([]byte, 45))
	go func() { done <- q.pushData(context.Background(), "l", make([]byte, 10)) }()
	q.close()
	if err := <-done; !errors.Is(err, errLinkClosed) {
		t.Fatalf("after close: %v", err)
	}
	if err := q.pushCtrl([]byte("x")); !errors.Is(err, errLinkClosed) {
		t.Fatalf("ctrl after close: %v", err)
	}
}

func TestHeartbeatNotStalledByBulk(t *testing.T) {
	// A big transfer on a link must not delay pings: with a large message
	// in flight, the link stays alive and a small call on the same link
	// completes. The queue order itself is checked exactly in
	// TestQueueOrder.
	a, b := pair(t)
	b.Handle("bulk", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return w.Write(make([]byte, 8<<20))
	}))
	b.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := a.Open(ctx, "b", "bulk", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := a.Call(ctx, "b", "echo", []byte("x")); err != nil || string(got) != "a:x" {
		t.Fatalf("small call during bulk: %q %v", got, err)
	}
	m, err := s.Recv()
	if err != nil || len(m) != 8<<20 {
		t.Fatalf("bulk: %d %v", len(m), err)
	}
	if l := a.linkTo("b"); l == nil || l.isDown() {
		t.Fatal("link did not survive the bulk transfer")
	}
}

// The function given with a frame runs once: when the writer takes the
// frame, when the queue drops it on close, or at once when it does not fit.
func TestQueueThen(t *testing.T) {
	q := newSendQueue(100)
	var got []string
	note := func(name string) func(error) {
		return func(err error) { got = append(got, fmt.Sprintf("%s:%v", name, err)) }
	}
	if err := q.pushDataThen(context.Background(), "l", make([]byte, 10), note("taken")); err != nil {
		t.Fatal(err)
	}
	if err := q.pushDataThen(nil, "l", make([]byte, 200), note("overflow")); !errors.Is(err, errQueueOverflow) {
		t.Fatalf("push past the limit: %v", err)
	}
	if err := q.pushDataThen(context.Background(), "m", make([]byte, 10), note("dropped")); err != nil {
		t.Fatal(err)
	}
	if _, ok := q.pop(1000); !ok {
		t.Fatal("nothing to pop")
	}
	q.close()
	q.close()
	want := []string{"overflow:" + errQueueOverflow.Error(), "taken:<nil>", "dropped:" + errLinkClosed.Error()}
	if !slices.Equal(got, want) {
		t.Fatalf("calls %q, want %q", got, want)
	}
}
