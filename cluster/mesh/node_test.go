package mesh

import (
	"context"
	"testing"
	"time"
)

func echoHandler() Handler {
	return HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return w.Write(append([]byte(r.From+":"), r.Payload...))
	})
}

func TestTwoNodesCall(t *testing.T) {
	ns := startNodes(t, "a", "b")
	a, b := ns[0], ns[1]
	dial(t, a, b)
	waitAll(t, ns, 5*time.Second)
	b.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "b", "echo", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "a:hi" {
		t.Fatalf("got %q", got)
	}
	p, ok := a.Peer("b")
	if !ok || p.Status != StatusConnected || p.Hops != 1 {
		t.Fatalf("peer b = %+v %v", p, ok)
	}
}

func TestLineRelay(t *testing.T) {
	ns := startNodes(t, "a", "b", "c")
	a, b, c := ns[0], ns[1], ns[2]
	dial(t, a, b)
	dial(t, c, b)
	waitAll(t, ns, 5*time.Second)
	c.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "c", "echo", []byte("via b"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "a:via b" {
		t.Fatalf("got %q", got)
	}
	p, _ := a.Peer("c")
	if p.Status != StatusRelay || p.Via != "b" || p.Hops != 2 {
		t.Fatalf("a sees c as %+v", p)
	}
	if b.Stats().FramesRelayed == 0 {
		t.Fatal("b relayed nothing")
	}
}

func TestSelfCall(t *testing.T) {
	a := startNode(t, testConfig("a"))
	a.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "a", "echo", []byte("me"))
	if err != nil || string(got) != "a:me" {
		t.Fatalf("got %q, %v", got, err)
	}
}
