package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// line starts a-b-c with a and c talking through b.
func line(t *testing.T, cfg func(*Config)) (a, b, c *Node) {
	t.Helper()
	var ns []*Node
	for _, id := range []string{"a", "b", "c"} {
		c := testConfig(id)
		if cfg != nil {
			cfg(&c)
		}
		ns = append(ns, startNode(t, c))
	}
	dial(t, ns[0], ns[1])
	dial(t, ns[2], ns[1])
	waitAll(t, ns, 5*time.Second)
	return ns[0], ns[1], ns[2]
}

func TestStreamOrdering(t *testing.T) {
	a, _, c := line(t, nil)
	const count = 2000
	c.Handle("count", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		for i := 0; i < count; i++ {
			if err := w.Write([]byte(strconv.Itoa(i))); err != nil {
				return err
			}
		}
		return nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := a.Open(ctx, "c", "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; ; i++ {
		m, err := s.Recv()
		if err == io.EOF {
			if i != count {
				t.Fatalf("EOF after %d messages, want %d", i, count)
			}
			return
		}
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(m) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, m)
		}
	}
}

func TestLargeMessagesFragmented(t *testing.T) {
	a, b, c := line(t, func(c *Config) {
		c.MaxFrameBytes = 64 << 10
		c.ChunkBytes = 16 << 10
		c.MaxQueueBytes = 1 << 20
	})
	rng := rand.New(rand.NewPCG(3, 4))
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(rng.UintN(256))
	}
	c.Handle("echo2", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		if err := w.Write(r.Payload); err != nil {
			return err
		}
		return w.Write(r.Payload[:100])
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := a.Open(ctx, "c", "echo2", big)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m1, err := s.Recv()
	if err != nil || !bytes.Equal(m1, big) {
		t.Fatalf("first message: %d bytes, equal=%v, err=%v", len(m1), bytes.Equal(m1, big), err)
	}
	m2, err := s.Recv()
	if err != nil || !bytes.Equal(m2, big[:100]) {
		t.Fatalf("second message: %v", err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	if b.Stats().FramesRelayed < uint64(2*(len(big)/(16<<10))) {
		t.Fatalf("b relayed %d frames; the message was not chunked", b.Stats().FramesRelayed)
	}
}

func TestCancelPropagatesAcrossRelay(t *testing.T) {
	for _, how := range []string{"close", "ctx"} {
		t.Run(how, func(t *testing.T) {
			a, _, c := line(t, nil)
			started := make(chan struct{})
			cancelled := make(chan error, 1)
			c.Handle("wait", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
				close(started)
				<-ctx.Done()
				cancelled <- context.Cause(ctx)
				return nil
			}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s, err := a.Open(ctx, "c", "wait", nil)
			if err != nil {
				t.Fatal(err)
			}
			<-started
			if how == "close" {
				s.Close()
			} else {
				cancel()
				if _, err := s.Recv(); !errors.Is(err, context.Canceled) {
					t.Fatalf("Recv after cancel: %v", err)
				}
			}
			select {
			case cause := <-cancelled:
				if !errors.Is(cause, errCancelled) {
					t.Fatalf("handler ctx cause: %v", cause)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the handler on c was not cancelled")
			}
			s.Close()
		})
	}
}

func TestSlowReaderBackpressure(t *testing.T) {
	const window = 4
	a, _, c := line(t, func(c *Config) { c.RequestWindow = window })
	var written atomic.Int64
	blocked := make(chan struct{}, 1)
	c.Handle("flood", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		msg := bytes.Repeat([]byte("x"), 1000)
		for i := 0; i < 100; i++ {
			if written.Load() == window {
				select {
				case blocked <- struct{}{}:
				default:
				}
			}
			if err := w.Write(msg); err != nil {
				return err
			}
			written.Add(1)
		}
		return nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := a.Open(ctx, "c", "flood", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-blocked // the handler is about to write message window+1
	// Give the writes every chance to run ahead if flow control were
	// broken; the handler must stay blocked at the window.
	time.Sleep(200 * time.Millisecond)
	if got := written.Load(); got != window {
		t.Fatalf("handler wrote %d messages with nobody reading; window is %d", got, window)
	}
	s.mu.Lock()
	buffered := len(s.msgs)
	s.mu.Unlock()
	if buffered > window {
		t.Fatalf("caller buffers %d messages, window is %d", buffered, window)
	}
	for i := 0; i < 100; i++ {
		if _, err := s.Recv(); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
}

func TestRemoteErrors(t *testing.T) {
	a, _, c := line(t, nil)
	c.Handle("coded", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return Errorf(CodeNotFound, "no such file %s", r.Payload)
	}))
	c.Handle("plain", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return fmt.Errorf("disk on fire")
	}))
	c.Handle("panics", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		panic("bug")
	}))
	c.Handle("partial", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		_ = w.Write([]byte("one"))
		return Errorf(CodeUnavailable, "gave up")
	}))
	c.Handle("none", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error { return nil }))
	c.Handle("two", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		_ = w.Write([]byte("1"))
		return w.Write([]byte("2"))
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		method, code, msg string
	}{
		{"coded", CodeNotFound, "no such file x"},
		{"plain", CodeInternal, "disk on fire"},
		{"panics", CodeInternal, `handler for "panics" failed`},
		{"missing", CodeNoHandler, `no handler for method "missing" on node "c"`},
	} {
		_, err := a.Call(ctx, "c", tc.method, []byte("x"))
		var re *RemoteError
		if !errors.As(err, &re) || re.Code != tc.code || re.Message != tc.msg || re.Node != "c" {
			t.Fatalf("%s: %#v", tc.method, err)
		}
	}
	s, err := a.Open(ctx, "c", "partial", nil)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.Recv(); err != nil || string(m) != "one" {
		t.Fatalf("partial first: %q %v", m, err)
	}
	var re *RemoteError
	if _, err := s.Recv(); !errors.As(err, &re) || re.Code != CodeUnavailable {
		t.Fatalf("partial end: %v", err)
	}
	s.Close()
	if _, err := a.Call(ctx, "c", "none", nil); err == nil {
		t.Fatal("Call of a handler that wrote nothing succeeded")
	}
	if _, err := a.Call(ctx, "c", "two", nil); err == nil {
		t.Fatal("Call of a handler that wrote two messages succeeded")
	}
}

func TestOpenUnknownNode(t *testing.T) {
	a := startNode(t, testConfig("a"))
	_, err := a.Open(context.Background(), "ghost", "x", nil)
	if !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("got %v", err)
	}
}

func TestCloseFailsPendingStreams(t *testing.T) {
	a, _, c := line(t, nil)
	started := make(chan struct{})
	c.Handle("wait", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		close(started)
		<-ctx.Done()
		return nil
	}))
	s, err := a.Open(context.Background(), "c", "wait", nil)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	a.Close()
	if _, err := s.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
	if _, err := a.Open(context.Background(), "c", "wait", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Open after Close: %v", err)
	}
}

func TestManyConcurrentStreams(t *testing.T) {
	a, _, c := line(t, nil)
	c.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		go func() {
			want := "a:" + strconv.Itoa(i)
			got, err := a.Call(ctx, "c", "echo", []byte(strconv.Itoa(i)))
			if err == nil && string(got) != want {
				err = fmt.Errorf("got %q want %q", got, want)
			}
			errs <- err
		}()
	}
	for i := 0; i < 64; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
