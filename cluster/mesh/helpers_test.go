package mesh

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/meshtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testSecret = "test-secret-0123456789abcdef"

// testLogger logs to stderr when MESH_TEST_LOG is set, else discards.
func testLogger() *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// testConfig is the local profile with a dead-link timeout that tolerates
// the scheduling stalls of -race on a loaded 2-core machine: with 300 ms,
// and even 1 s, links carrying bulk data were now and then declared dead
// while a dozen other processes competed for the CPUs. Silent peers are
// still found within about 2.3 s.
func testConfig(id string) Config {
	c := DefaultLocalConfig()
	c.PingInterval = 200 * time.Millisecond
	c.DeadAfter = 2 * time.Second
	c.NodeID = id
	c.Secret = testSecret
	c.Identity = testKey(id)
	c.ListenAddr = "127.0.0.1:0"
	c.Logger = testLogger()
	return c
}

// memConfig is testConfig on the in-memory network nw, on a host named
// like the node.
func memConfig(nw *meshtest.Network, id string) Config {
	c := testConfig(id)
	c.Transport, c.ListenAddr = nw.Transport(id), id
	return c
}

// startMemNodes starts one node per id on nw.
func startMemNodes(t testing.TB, nw *meshtest.Network, ids ...string) []*Node {
	t.Helper()
	out := make([]*Node, len(ids))
	for i, id := range ids {
		out[i] = startNode(t, memConfig(nw, id))
	}
	return out
}

// testKey is the node key of test node id: the same for every run under
// that id, as a key file kept beside the config would be.
func testKey(id string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("test node key " + id))
	return ed25519.NewKeyFromSeed(seed[:])
}

// startNode creates and starts a node that is closed when the test ends.
func startNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeID, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// startNodes starts one listening node per id.
func startNodes(t testing.TB, ids ...string) []*Node {
	t.Helper()
	out := make([]*Node, len(ids))
	for i, id := range ids {
		out[i] = startNode(t, testConfig(id))
	}
	return out
}

// link makes a dial b.
func dial(t testing.TB, a, b *Node) {
	t.Helper()
	if err := a.AddPeer(PeerAddr{URL: b.URL(), NodeID: b.ID()}); err != nil {
		t.Fatal(err)
	}
}

// waitUntil waits, without sleeping, until cond holds for n's topology.
func waitUntil(t testing.TB, n *Node, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := n.Changed()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: timed out after %v waiting for %s; peers=%v; topo=%s", n.ID(), timeout, what, peerIDs(n), n.debugTopology())
		}
	}
}

func peerIDs(n *Node) []string {
	var ids []string
	for _, p := range n.Peers() {
		ids = append(ids, p.NodeID)
	}
	return ids
}

// waitPeers waits until n sees exactly the given peers.
func waitPeers(t testing.TB, n *Node, timeout time.Duration, ids ...string) {
	t.Helper()
	want := slices.Clone(ids)
	slices.Sort(want)
	waitUntil(t, n, timeout, "peers "+strings.Join(want, ","), func() bool {
		return slices.Equal(peerIDs(n), want)
	})
}

// waitAll waits until every node sees all the others.
func waitAll(t testing.TB, nodes []*Node, timeout time.Duration) {
	t.Helper()
	for _, n := range nodes {
		var ids []string
		for _, o := range nodes {
			if o != n {
				ids = append(ids, o.ID())
			}
		}
		waitPeers(t, n, timeout, ids...)
	}
}

// waitPoll polls cond for state that Changed does not signal (which link
// carries a peer, counters).
func waitPoll(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// openHanging opens a stream from "from" to a "hang" handler on "to" that
// runs until its context ends, and returns once the handler runs; ended is
// closed when the handler's context has ended. The stream is closed at the
// end of the test.
func openHanging(t testing.TB, from, to *Node) (s *Stream, ended <-chan struct{}) {
	t.Helper()
	started := make(chan struct{}, 1)
	done := make(chan struct{})
	to.Handle("hang", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		started <- struct{}{}
		<-ctx.Done()
		close(done)
		return ctx.Err()
	}))
	s, err := from.Open(context.Background(), to.ID(), "hang", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatalf("the hang handler on %s never started", to.ID())
	}
	return s, done
}

// frameID numbers frames built by tests.
var frameID atomic.Uint64

// streamFrame builds a plain routed frame carrying m, as its origin sends it.
func streamFrame(typ byte, from, to string, m streamMsg) *Frame {
	return &Frame{Type: typ, ID: frameID.Add(1), From: from, To: to, TTL: 4, Stream: m.S, R: m.R, Payload: appendStreamMsg(nil, &m)}
}

// waitClosedWith waits until link l has been closed by this side, and checks
// the close code it sent.
func waitClosedWith(t testing.TB, l *link, timeout time.Duration, code int, what string) {
	t.Helper()
	select {
	case <-l.done:
	case <-time.After(timeout):
		t.Fatalf("%s: the link is still up after %v", what, timeout)
	}
	l.closeMu.Lock()
	got := l.sentCode
	l.closeMu.Unlock()
	if got != code {
		t.Fatalf("%s: link closed with code %d, want %d", what, got, code)
	}
}
