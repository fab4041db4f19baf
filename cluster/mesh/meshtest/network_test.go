package meshtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connect opens a connection from host a to host b (which listens) and
// returns both ends; they are closed when the test ends.
func connect(t *testing.T, nw *Network, a, b string) (client, server transport.Conn) {
	t.Helper()
	ln, err := nw.Transport(b).Listen(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan transport.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err = nw.Transport(a).Dial(ctx, ln.URL())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("nothing accepted")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// readWithin reads one message, failing past d.
func readWithin(c transport.Conn, d time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	return c.ReadMessage(nil, 1<<20)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestMessagesArriveWholeInOrderAfterTheDelay(t *testing.T) {
	for _, tc := range []struct {
		name string
		link Link
	}{
		{"loopback", Loopback()},
		{"LAN", LAN()},
		{"WAN", WAN()},
		{"jitter and loss", Link{Delay: time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05, RTO: 2 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := NewNetwork(1)
			nw.SetLink("a", "b", tc.link)
			a, b := connect(t, nw, "a", "b")
			const count = 300
			start := time.Now()
			for i := range count {
				if err := a.WriteMessages([]byte(fmt.Sprint(i)), []byte("x")); err != nil {
					t.Fatal(err)
				}
			}
			for i := range count {
				m, err := readWithin(b, 5*time.Second)
				if err != nil || string(m) != fmt.Sprint(i) {
					t.Fatalf("message %d: %q %v", 2*i, m, err)
				}
				if m, err := readWithin(b, 5*time.Second); err != nil || string(m) != "x" {
					t.Fatalf("message %d: %q %v", 2*i+1, m, err)
				}
				if i == 0 && time.Since(start) < tc.link.Delay {
					t.Fatalf("the first message took %v, under the link's delay %v", time.Since(start), tc.link.Delay)
				}
			}
			if s := nw.Stats("a"); s.MessagesSent != 2*count || nw.Stats("b").MessagesReceived != 2*count {
				t.Fatalf("stats a %+v, b %+v; want %d messages each way", s, nw.Stats("b"), 2*count)
			}
		})
	}
}

// A lost message holds up the ones behind it (head-of-line blocking), so
// with a retransmission timeout longer than the test, the messages read
// before a deadline are exactly those before the first loss: a function of
// the seed alone.
func TestLossDecidedBySeed(t *testing.T) {
	firstLoss := func(seed uint64) int {
		nw := NewNetwork(seed)
		nw.SetLink("a", "b", Link{Loss: 0.1, RTO: time.Hour})
		a, b := connect(t, nw, "a", "b")
		for i := range 200 {
			if err := a.WriteMessages([]byte{byte(i)}); err != nil {
				t.Fatal(err)
			}
		}
		k := 0
		for {
			if _, err := readWithin(b, 50*time.Millisecond); err != nil {
				if !isTimeout(err) {
					t.Fatal(err)
				}
				return k
			}
			k++
		}
	}
	seen := map[int]bool{}
	for seed := range uint64(5) {
		k := firstLoss(seed)
		if again := firstLoss(seed); again != k {
			t.Fatalf("seed %d: first loss at message %d, then at %d", seed, k, again)
		}
		seen[k] = true
	}
	if len(seen) < 2 {
		t.Fatalf("five seeds lost the same message first (%v): the seed decides nothing", seen)
	}
}

func TestFreezeHoldsTrafficUntilThaw(t *testing.T) {
	nw := NewNetwork(1)
	nw.SetLink("a", "b", Link{Buffer: 1000})
	a, b := connect(t, nw, "a", "b")
	nw.Freeze("b")
	if err := a.WriteMessages(make([]byte, 600)); err != nil {
		t.Fatalf("a write within the buffer: %v", err)
	}
	_ = a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if err := a.WriteMessages(make([]byte, 600)); !isTimeout(err) {
		t.Fatalf("a write beyond the buffer of a frozen peer: %v, want a timeout", err)
	}
	if _, err := readWithin(b, 50*time.Millisecond); !isTimeout(err) {
		t.Fatalf("a frozen host read %v, want nothing", err)
	}
	nw.Thaw("b")
	if m, err := readWithin(b, time.Second); err != nil || len(m) != 600 {
		t.Fatalf("after the thaw: %d bytes, %v", len(m), err)
	}
}

func TestPartitionHangsDialsUntilHeal(t *testing.T) {
	nw := NewNetwork(1)
	a, b := connect(t, nw, "a", "b")
	nw.Partition([]string{"a"}, []string{"b", "c"})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := nw.Transport("a").Dial(ctx, URL("b")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("dial across a partition: %v, want it to hang until its deadline", err)
	}
	if err := b.WriteMessages([]byte("held")); err != nil {
		t.Fatal(err)
	}
	if _, err := readWithin(a, 50*time.Millisecond); !isTimeout(err) {
		t.Fatalf("read across a partition: %v, want nothing", err)
	}
	nw.Heal()
	if m, err := readWithin(a, time.Second); err != nil || string(m) != "held" {
		t.Fatalf("after healing: %q %v", m, err)
	}
}

func TestCutAndCrashReset(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(nw *Network)
	}{
		{"cut", func(nw *Network) { nw.Cut("b", "a") }},
		{"crash", func(nw *Network) { nw.Crash("b") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nw := NewNetwork(1)
			a, b := connect(t, nw, "a", "b")
			if err := b.WriteMessages([]byte("lost")); err != nil {
				t.Fatal(err)
			}
			tc.fault(nw)
			if _, err := readWithin(a, time.Second); err == nil || isTimeout(err) {
				t.Fatalf("read after a reset: %v, want it to fail at once", err)
			}
			if err := a.WriteMessages([]byte("x")); err == nil {
				t.Fatal("a write after a reset succeeded")
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			if _, err := nw.Transport("a").Dial(ctx, URL("b")); !errors.Is(err, errRefused) {
				t.Fatalf("dial after the fault: %v, want refused", err)
			}
			if nw.Conns("a", "b") != 1 { // until each side closes its end
				t.Fatalf("%d connections listed", nw.Conns("a", "b"))
			}
			a.Close()
			if nw.Conns("a", "b") != 0 {
				t.Fatal("a closed connection is still listed")
			}
			nw.Heal()
			c, err := nw.Transport("a").Dial(ctx, URL("b"))
			if err != nil {
				t.Fatalf("dial after Heal: %v", err)
			}
			c.Close()
		})
	}
}

// A close notice reaches the peer after the data before it, is answered
// (the closing handshake), and ends writing on both sides.
func TestCloseNotice(t *testing.T) {
	nw := NewNetwork(1)
	a, b := connect(t, nw, "a", "b")
	if err := a.WriteMessages([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteClose(4009, "test reason", time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteMessages([]byte("after")); err == nil {
		t.Fatal("a write after the close notice succeeded")
	}
	if m, err := readWithin(b, time.Second); string(m) != "last words" {
		t.Fatalf("before the notice: %q %v", m, err)
	}
	var ce *transport.CloseError
	if _, err := readWithin(b, time.Second); !errors.As(err, &ce) || ce.Code != 4009 || ce.Reason != "test reason" {
		t.Fatalf("b read %v, want close 4009", err)
	}
	if _, err := readWithin(a, time.Second); !errors.As(err, &ce) || ce.Code != 4009 {
		t.Fatalf("a read %v, want the echo of its close 4009", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nw.Wait(ctx, func() bool { return len(nw.Notices("", "")) == 2 }); err != nil {
		t.Fatalf("waiting for both notices: %v; have %+v", err, nw.Notices("", ""))
	}
	want := []Notice{{From: "a", To: "b", Code: 4009, Reason: "test reason"}, {From: "b", To: "a", Code: 4009, Echo: true}}
	if got := nw.Notices("", ""); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("notices %+v, want %+v", got, want)
	}
}

func TestCloseEndsThePeerAfterItsData(t *testing.T) {
	nw := NewNetwork(1)
	a, b := connect(t, nw, "a", "b")
	if err := a.WriteMessages([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if m, err := readWithin(b, time.Second); string(m) != "bye" {
		t.Fatalf("%q %v", m, err)
	}
	if _, err := readWithin(b, time.Second); err != io.EOF {
		t.Fatalf("after the data: %v, want EOF", err)
	}
	if err := b.WriteMessages([]byte("x")); err == nil {
		t.Fatal("a write to a closed peer succeeded")
	}
	if _, err := a.ReadMessage(nil, 10); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on the closed end: %v", err)
	}
}

func TestReadLimitsAndDeadlines(t *testing.T) {
	nw := NewNetwork(1)
	a, b := connect(t, nw, "a", "b")
	if err := a.WriteMessages(make([]byte, 11)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadMessage(nil, 10); !errors.Is(err, transport.ErrMessageTooLarge) {
		t.Fatalf("an 11-byte message under a 10-byte limit: %v", err)
	}
	// A deadline set while a read waits ends it.
	done := make(chan error, 1)
	go func() { _, err := b.ReadMessage(nil, 10); done <- err }()
	time.Sleep(10 * time.Millisecond)
	_ = b.SetReadDeadline(time.Now())
	select {
	case err := <-done:
		if !isTimeout(err) {
			t.Fatalf("read past its deadline: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read went on past its deadline")
	}
}

func TestListenerAndDialErrors(t *testing.T) {
	nw := NewNetwork(1)
	tr := nw.Transport("a")
	ctx := context.Background()
	if _, err := tr.Dial(ctx, "ws://b:1"); err == nil {
		t.Fatal("dialed a ws:// URL on the in-memory network")
	}
	if _, err := tr.Dial(ctx, URL("nobody")); !errors.Is(err, errRefused) {
		t.Fatalf("dial to a host that does not listen: %v", err)
	}
	ln, err := tr.Listen(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Listen(ctx, "a"); err == nil {
		t.Fatal("a host listened twice")
	}
	if ln.URL() != "mem://a" || ln.Addr().String() != "a" {
		t.Fatalf("listener at %s (%s)", ln.URL(), ln.Addr())
	}
	ln.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}
