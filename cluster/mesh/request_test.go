package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/meshtest"
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

// recvWithin runs s.Recv with a guard so that a stream that never ends
// fails the test instead of hanging it.
func recvWithin(t *testing.T, s *Stream, d time.Duration) ([]byte, error) {
	t.Helper()
	type res struct {
		m   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := s.Recv()
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		return r.m, r.err
	case <-time.After(d):
		s.Close() // ends the Recv above
		<-ch
		t.Fatalf("Recv from %s did not return within %v", s.Node(), d)
		return nil, nil
	}
}

// A shorter route appearing mid-stream does not break the stream: its old
// route is intact, responses and acks move to the new one, and every
// message arrives once, in order.
func TestStreamSurvivesShorterRoute(t *testing.T) {
	a, b, c := line(t, nil)
	const before, after = 5, 300 // after spans many windows of acks on the new route
	release := make(chan struct{})
	c.Handle("count", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		for i := 0; i < before+after; i++ {
			if i == before {
				select {
				case <-release:
				case <-ctx.Done():
					return context.Cause(ctx)
				}
			}
			if err := w.Write([]byte(strconv.Itoa(i))); err != nil {
				return err
			}
		}
		return nil
	}))
	s, err := a.Open(context.Background(), "c", "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < before; i++ {
		if m, err := recvWithin(t, s, 5*time.Second); err != nil || string(m) != strconv.Itoa(i) {
			t.Fatalf("message %d before the route change: %q %v", i, m, err)
		}
	}
	dial(t, a, c)
	for _, n := range []*Node{a, c} {
		other := map[*Node]string{a: "c", c: "a"}[n]
		waitUntil(t, n, 5*time.Second, "a direct link", func() bool {
			p, ok := n.Peer(other)
			return ok && p.Hops == 1
		})
	}
	relayed0 := b.Stats().FramesRelayed
	close(release)
	for i := before; ; i++ {
		m, err := recvWithin(t, s, 5*time.Second)
		if err == io.EOF {
			if i != before+after {
				t.Fatalf("EOF after %d messages, want %d", i, before+after)
			}
			break
		}
		if err != nil || string(m) != strconv.Itoa(i) {
			t.Fatalf("message %d after the route change: %q %v", i, m, err)
		}
	}
	if relayed := b.Stats().FramesRelayed - relayed0; relayed >= after/2 {
		t.Fatalf("b relayed %d frames after the direct link came up: the stream did not move to it", relayed)
	}
}

// blockedStream opens a stream from a to c whose handler never writes, so
// the test can inject response frames on a as if they came from c.
func blockedStream(t *testing.T) (a, c *Node, s *Stream, cancelled chan error) {
	t.Helper()
	a, _, c = line(t, nil)
	started := make(chan struct{})
	cancelled = make(chan error, 1)
	c.Handle("block", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		close(started)
		<-ctx.Done()
		cancelled <- context.Cause(ctx)
		return nil
	}))
	s, err := a.Open(context.Background(), "c", "block", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	<-started
	return a, c, s, cancelled
}

func injectRes(n *Node, from string, typ byte, m streamMsg) {
	n.deliver(nil, streamFrame(typ, from, n.ID(), m))
}

// Response frames that overtake earlier ones on a new, shorter route are
// held until the gap fills, and the stream delivers every message once, in
// order. The network makes it happen: a split between a and the relay b
// holds the first responses, a direct link a-c comes up meanwhile, the
// rest of the stream takes it and arrives first; then the split heals.
func TestResponseFramesReordered(t *testing.T) {
	nw := meshtest.NewNetwork(1)
	var ns []*Node
	for _, id := range []string{"a", "b", "c"} {
		cfg := memConfig(nw, id)
		cfg.PingInterval, cfg.DeadAfter = time.Second, 10*time.Second // the split outlasts no link
		ns = append(ns, startNode(t, cfg))
	}
	a, b, c := ns[0], ns[1], ns[2]
	dial(t, a, b)
	dial(t, c, b)
	waitAll(t, ns, 5*time.Second)
	started, first, second, done := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	c.Handle("count", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		defer close(done)
		close(started)
		for i, gate := range []chan struct{}{first, first, second, second} {
			select {
			case <-gate:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if err := w.Write([]byte(strconv.Itoa(i))); err != nil {
				return err
			}
		}
		return nil
	}))
	c.Handle("echo", echoHandler())
	s, err := a.Open(context.Background(), "c", "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-started

	nw.Partition([]string{"a"}, []string{"b"})
	relayed := b.Stats().FramesRelayed
	close(first)
	waitPoll(t, 5*time.Second, "b relays responses 0 and 1 into the split", func() bool { return b.Stats().FramesRelayed >= relayed+2 })
	dial(t, a, c)
	for _, n := range []*Node{a, c} {
		other := map[*Node]string{a: "c", c: "a"}[n]
		waitUntil(t, n, 5*time.Second, "a direct link", func() bool {
			p, ok := n.Peer(other)
			return ok && p.Hops == 1
		})
	}
	close(second)
	<-done
	// A call answered on the direct link arrives behind responses 2 and
	// 3, which a therefore holds when the split heals.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Call(ctx, "c", "echo", nil); err != nil {
		t.Fatal(err)
	}
	nw.Heal()
	var got []string
	for {
		m, err := recvWithin(t, s, 5*time.Second)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m))
	}
	if want := "0|1|2|3"; strings.Join(got, "|") != want {
		t.Fatalf("messages %q, want %s", got, want)
	}
}

func TestResponseGapFailsStream(t *testing.T) {
	tests := []struct {
		name   string
		inject func(a *Node, s *Stream)
		want   string
	}{
		{"gap never filled", func(a *Node, s *Stream) {
			injectRes(a, "c", typeRes, streamMsg{S: s.id, Q: 1, D: []byte("x")})
		}, "response frames lost in transit"},
		{"frame beyond the window", func(a *Node, s *Stream) {
			injectRes(a, "c", typeRes, streamMsg{S: s.id, Q: uint64(s.window) + 2, D: []byte("x")})
		}, "response frames lost in transit"},
		{"more early frames than the window", func(a *Node, s *Stream) {
			for q := 1; q <= s.window+1; q++ {
				injectRes(a, "c", typeRes, streamMsg{S: s.id, Q: uint64(q), D: []byte("x")})
			}
		}, "response frames lost in transit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _, s, cancelled := blockedStream(t)
			tt.inject(a, s)
			_, err := recvWithin(t, s, 5*time.Second)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Recv: %v, want ErrUnreachable with %q", err, tt.want)
			}
			select { // the handler on c is cancelled too, and told why
			case cause := <-cancelled:
				if !errors.Is(cause, ErrUnreachable) || !strings.Contains(cause.Error(), "a gave up the stream: "+tt.want) {
					t.Fatalf("handler's cause: %v", cause)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("handler on c was not cancelled")
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.gap != nil || s.stash != nil {
				t.Fatal("gap timer or stash left after the stream failed")
			}
		})
	}
}

// A gap timer that fires just after its gap was filled must not fail the
// stream.
func TestStaleGapTimerIgnored(t *testing.T) {
	a, _, s, _ := blockedStream(t)
	s.mu.Lock()
	s.armGapLocked()
	gen := s.gapGen
	fire := s.gap
	s.stopGapLocked()
	s.mu.Unlock()
	if s.gapGen == gen {
		t.Fatal("stopping the gap timer did not move to a new generation")
	}
	fire.Reset(0) // as if it had fired before Stop
	injectRes(a, "c", typeRes, streamMsg{S: s.id, Q: 0, D: []byte("ok")})
	if m, err := recvWithin(t, s, 5*time.Second); err != nil || string(m) != "ok" {
		t.Fatalf("Recv: %q %v", m, err)
	}
	time.Sleep(50 * time.Millisecond) // let the stale timer run
	s.mu.Lock()
	finished := s.finished
	s.mu.Unlock()
	if finished {
		t.Fatalf("a stale gap timer ended the stream: %v", s.err)
	}
}

// When the target gives a stream up after responses were delivered, the
// caller learns at once, with the target's reason (an end frame would be
// out of sequence and dropped).
func TestTargetAbortReachesCaller(t *testing.T) {
	a, _, c := line(t, nil)
	c.Handle("two", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		_ = w.Write([]byte("1"))
		_ = w.Write([]byte("2"))
		<-ctx.Done()
		return nil
	}))
	s, err := a.Open(context.Background(), "c", "two", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 2; i++ {
		if _, err := recvWithin(t, s, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ss := c.server("a", s.id)
	if ss == nil {
		t.Fatal("c does not serve the stream")
	}
	c.abortServer(ss, errors.New("test abort"), "test reason")
	_, err = recvWithin(t, s, 5*time.Second)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "c gave up the stream: test reason") {
		t.Fatalf("Recv after abort: %v", err)
	}
}

// A stream whose route loses a link fails on both sides with an error that
// names the link, even though another (longer) route remains.
func TestStreamFailsWhenRouteLosesLink(t *testing.T) {
	nw := meshtest.NewNetwork(1)
	ns := startMemNodes(t, nw, "a", "b", "c", "d", "e", "f", "g")
	a, b, c, d := ns[0], ns[1], ns[2], ns[3]
	dial(t, a, b)
	dial(t, b, c)
	dial(t, c, d)
	dial(t, a, ns[4]) // the long way round: a-e-f-g-d
	dial(t, ns[4], ns[5])
	dial(t, ns[5], ns[6])
	dial(t, ns[6], d)
	waitAll(t, ns, 5*time.Second)
	// Every link is up and both ends route the short way, and know the
	// long way round, before the stream starts.
	for _, pr := range [][2]*Node{{a, b}, {b, c}, {c, d}, {a, ns[4]}, {ns[4], ns[5]}, {ns[5], ns[6]}, {ns[6], d}} {
		for _, x := range []int{0, 1} {
			n, other := pr[x], pr[1-x].ID()
			waitUntil(t, n, 5*time.Second, "a direct link to "+other, func() bool {
				p, ok := n.Peer(other)
				return ok && p.Hops == 1
			})
		}
	}
	for _, r := range []struct {
		n       *Node
		to, via string
	}{{a, "d", "b"}, {d, "a", "c"}} {
		waitUntil(t, r.n, 5*time.Second, "3 hops to "+r.to+" via "+r.via, func() bool {
			p, ok := r.n.Peer(r.to)
			return ok && p.Hops == 3 && p.Via == r.via
		})
	}
	longWay := []string{"a", "e", "f", "g", "d"}
	for _, end := range []*Node{a, d} {
		waitPoll(t, 5*time.Second, end.ID()+" knows a-e-f-g-d both ways", func() bool {
			rt := end.routes.Load()
			for i := 0; i+1 < len(longWay); i++ {
				u, v := longWay[i], longWay[i+1]
				if _, ok := rt.edges[edgeKey{u, v}]; !ok {
					return false
				}
				if _, ok := rt.edges[edgeKey{v, u}]; !ok {
					return false
				}
			}
			return true
		})
	}
	started := make(chan struct{})
	cause := make(chan error, 1)
	d.Handle("hang", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		if err := w.Write([]byte("hi")); err != nil {
			return err
		}
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return nil
	}))
	s, err := a.Open(context.Background(), "d", "hang", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-started
	if m, err := recvWithin(t, s, 5*time.Second); err != nil || string(m) != "hi" {
		t.Fatalf("first message: %q %v", m, err)
	}
	nw.Cut("b", "c")
	_, err = recvWithin(t, s, 5*time.Second)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `"d"`) || !(strings.Contains(err.Error(), "b-c") || strings.Contains(err.Error(), "c-b")) {
		t.Fatalf("caller: %v, want ErrUnreachable naming d and the lost link", err)
	}
	select {
	case err := <-cause:
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `"a"`) || !(strings.Contains(err.Error(), "b-c") || strings.Contains(err.Error(), "c-b")) {
			t.Fatalf("target: %v, want ErrUnreachable naming a and the lost link", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler on d was not cancelled")
	}
	// The cluster still serves a to d. b redials c meanwhile, so a call
	// opened while the routes settle may fail the same way, but it must
	// fail: at once when a relay drops its frame, or within about 1.5
	// DeadAfter when the caller's probe finds it gone. None may hang.
	d.Handle("echo", echoHandler())
	waitPoll(t, 15*time.Second, "a call from a to d", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		got, err := a.Call(ctx, "d", "echo", []byte("q"))
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("a call from a to d hung while routes settled")
		}
		if err == nil && string(got) != "a:q" {
			t.Fatalf("a->d afterwards: %q", got)
		}
		return err == nil
	})
}

// A frame dropped on the way (here: reported by the relay, or come back to
// its origin through a loop) ends its stream at once on the caller, with the
// reason, and the handler is cancelled.
func TestLostFrameEndsStream(t *testing.T) {
	tests := []struct {
		name string
		drop func(a, b *Node, s *Stream)
		want string
	}{
		{"relay reports it", func(a, b *Node, s *Stream) {
			b.frameLost(streamFrame(typeReq, "a", "c", streamMsg{S: s.id, Q: 1}), "test drop")
		}, "b dropped a frame of the stream: test drop"},
		{"origin gets its own frame back", func(a, b *Node, s *Stream) {
			f := streamFrame(typeAck, "a", "c", streamMsg{S: s.id, N: 1})
			a.route(a.linkTo("b"), f, encodeFrame(f))
		}, "a dropped a frame of the stream: a routing loop brought it back to its origin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b, c := line(t, nil)
			cause := make(chan error, 1)
			started := make(chan struct{})
			c.Handle("block", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
				close(started)
				<-ctx.Done()
				cause <- context.Cause(ctx)
				return nil
			}))
			s, err := a.Open(context.Background(), "c", "block", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			<-started
			tt.drop(a, b, s)
			_, err = recvWithin(t, s, 5*time.Second)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Recv: %v, want ErrUnreachable with %q", err, tt.want)
			}
			select {
			case err := <-cause:
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("handler's cause: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("handler on c was not cancelled")
			}
		})
	}
}

// A stream whose target forgot it without a word (its end frame lost, say)
// is found out by the caller's probe within about DeadAfter.
func TestSilentlyForgottenStreamProbed(t *testing.T) {
	a, _, c := line(t, func(c *Config) { c.DeadAfter = 500 * time.Millisecond })
	started := make(chan struct{})
	c.Handle("block", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		close(started)
		<-ctx.Done()
		return nil
	}))
	s, err := a.Open(context.Background(), "c", "block", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-started
	ss := c.server("a", s.id)
	if ss == nil {
		t.Fatal("c does not serve the stream")
	}
	c.removeServer(ss) // forget it; the handler ends without an end frame
	ss.cancel(errors.New("forgotten by the test"))
	_, err = recvWithin(t, s, 5*time.Second)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "lost the stream") {
		t.Fatalf("Recv: %v, want ErrUnreachable: the node lost the stream", err)
	}
}

// A stream that ended on the target but whose end frame never arrived: the
// caller's probe gets the end again, and the stream ends normally.
func TestLostEndResent(t *testing.T) {
	a, _, c := line(t, func(c *Config) { c.DeadAfter = 500 * time.Millisecond })
	started := make(chan struct{})
	c.Handle("block", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		close(started)
		<-ctx.Done()
		return nil
	}))
	s, err := a.Open(context.Background(), "c", "block", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	<-started
	ss := c.server("a", s.id)
	if ss == nil {
		t.Fatal("c does not serve the stream")
	}
	// As serve does when the handler returns, minus the end frame.
	c.ended.put(ss.key, endRecord{q: 0})
	c.removeServer(ss)
	ss.cancel(errors.New("ended by the test"))
	if _, err := recvWithin(t, s, 5*time.Second); err != io.EOF {
		t.Fatalf("Recv: %v, want io.EOF from the resent end", err)
	}
}

func TestEndedStreamsBounded(t *testing.T) {
	e := newEndedStreams(3)
	for i := range 5 {
		e.put(serverKey{"a", uint64(i)}, endRecord{q: uint64(i)})
	}
	if len(e.m) != 3 {
		t.Fatalf("%d endings remembered, bound is 3", len(e.m))
	}
	if _, ok := e.get(serverKey{"a", 1}); ok {
		t.Fatal("an old ending was not forgotten")
	}
	if r, ok := e.get(serverKey{"a", 4}); !ok || r.q != 4 {
		t.Fatalf("latest ending: %+v %v", r, ok)
	}
}

// A request refused from a link's reader (here: too large) is answered with
// an end frame without waiting for room in the caller's link queue: with
// that queue half full behind a peer that does not read, the reader of
// another link must go on reading. The refused request comes from the slow
// peer's id but over another link, as a relayed one would.
func TestRefusedRequestDoesNotBlockReader(t *testing.T) {
	cfg := testConfig("b")
	cfg.PingInterval = time.Second
	cfg.DeadAfter = 10 * time.Second // the slow peer stays linked throughout
	cfg.MaxFrameBytes = 256 << 10
	cfg.ChunkBytes = 32 << 10
	cfg.MaxMessageBytes = 64 << 10
	cfg.MaxQueueBytes = 1 << 20
	b := startNode(t, cfg)
	msg := bytes.Repeat([]byte("x"), 48<<10)
	b.Handle("flood", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		for {
			if err := w.Write(msg); err != nil {
				return err
			}
		}
	}))

	slow := rawDial(t, b.URL(), "slow")
	slow.login()
	waitUntil(t, b, 5*time.Second, "slow linked", func() bool { _, ok := b.Peer("slow"); return ok })
	l := b.linkTo("slow")
	slow.sendFrame(streamFrame(typeReq, "slow", "b", streamMsg{S: 1, M: "flood", W: maxWindow}))
	// slow never reads again; the handler fills the socket buffers, then
	// the queue up to the half where local senders wait.
	waitPoll(t, 20*time.Second, "the queue to the slow peer half full", func() bool {
		return l.q.queued() >= cfg.MaxQueueBytes/2
	})

	other := rawDial(t, b.URL(), "other")
	other.login()
	waitUntil(t, b, 5*time.Second, "other linked", func() bool { _, ok := b.Peer("other"); return ok })
	// A request from other itself, too large: refused by b's reader,
	// which must not wait for room in the slow peer's queue.
	other.sendFrame(streamFrame(typeReq, "other", "b", streamMsg{S: 7, M: "x", W: 1, D: bytes.Repeat([]byte("y"), 32<<10), More: true}))
	other.sendFrame(streamFrame(typeReq, "other", "b", streamMsg{S: 7, Q: 1, D: bytes.Repeat([]byte("y"), cfg.MaxMessageBytes)}))
	marker := []byte{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1}
	other.sendFrame(&Frame{Type: typePing, Payload: marker})
	for {
		f, err := other.read()
		if err != nil {
			t.Fatalf("no pong from b after the refused request (its reader is blocked?): %v", err)
		}
		if f.Type == typePong && bytes.Equal(f.Payload, marker) {
			break
		}
	}
	if l.isDown() {
		t.Fatal("the link to the slow peer was closed; the test needs it open with its queue half full")
	}
}

// Requests being reassembled share MaxPendingRequestBytes across callers: a
// request that would pass it is refused as unavailable while the others go
// on, and the bytes are returned once a request is complete.
func TestPendingRequestBytesBounded(t *testing.T) {
	cfg := testConfig("b")
	cfg.PingInterval = time.Second
	cfg.DeadAfter = 10 * time.Second // the raw peer answers no pings
	cfg.MaxFrameBytes = 256 << 10
	cfg.ChunkBytes = 32 << 10
	cfg.MaxMessageBytes = 64 << 10
	cfg.MaxPendingRequestBytes = 64 << 10
	b := startNode(t, cfg)
	b.Handle("size", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return w.Write([]byte(strconv.Itoa(len(r.Payload))))
	}))
	p := rawDial(t, b.URL(), "p")
	p.login()
	waitUntil(t, b, 5*time.Second, "p linked", func() bool { _, ok := b.Peer("p"); return ok })

	sendAs := func(typ byte, m streamMsg) {
		t.Helper()
		p.sendFrame(streamFrame(typ, "p", "b", m))
	}
	send := func(m streamMsg) { t.Helper(); sendAs(typeReq, m) }
	next := func(s uint64, typ byte) streamMsg { t.Helper(); return p.readUntil(typ, s) }
	kb := func(n int) []byte { return bytes.Repeat([]byte("z"), n<<10) }

	send(streamMsg{S: 1, M: "size", W: maxWindow, D: kb(40), More: true})
	send(streamMsg{S: 2, M: "size", W: maxWindow, D: kb(40), More: true}) // 80 KB pending: refused
	if m := next(2, typeEnd); m.E == nil || m.E.Code != CodeUnavailable || !strings.Contains(m.E.Message, "too many large requests") {
		t.Fatalf("stream 2 ended with %+v, want a refusal as unavailable", m.E)
	}
	send(streamMsg{S: 1, Q: 1, D: kb(10)}) // stream 1 goes on and completes
	if m := next(1, typeRes); string(m.D) != strconv.Itoa(50<<10) {
		t.Fatalf("stream 1 answered %q, want its 50 KB request", m.D)
	}
	send(streamMsg{S: 3, M: "size", W: maxWindow, D: kb(60)}) // the bytes came back
	if m := next(3, typeRes); string(m.D) != strconv.Itoa(60<<10) {
		t.Fatalf("stream 3 answered %q, want its 60 KB request", m.D)
	}
	waitPoll(t, 5*time.Second, "no request bytes held", func() bool { return b.pendingReq.Load() == 0 })

	// A request cancelled halfway returns its bytes too.
	send(streamMsg{S: 4, M: "size", W: maxWindow, D: kb(40), More: true})
	waitPoll(t, 5*time.Second, "40 KB held for stream 4", func() bool { return b.pendingReq.Load() == 40<<10 })
	sendAs(typeCancel, streamMsg{S: 4})
	waitPoll(t, 5*time.Second, "no request bytes held after the cancel", func() bool { return b.pendingReq.Load() == 0 })
}
