package mesh

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// A peer's full sync echoes this node's own latest entry back; that must not
// look like another process using the id (which bumps the version and
// floods the cluster), while a different entry under the same version must.
func TestOwnEntryEcho(t *testing.T) {
	// Hourly pings: after the first one, no RTT change re-announces the
	// entry while the test compares versions.
	quiet := func(id string) Config {
		c := testConfig(id)
		c.PingInterval, c.DeadAfter = time.Hour, 2*time.Hour
		return c
	}
	a, b := startNode(t, quiet("a")), startNode(t, quiet("b"))
	dial(t, a, b)
	waitAll(t, []*Node{a, b}, 5*time.Second)
	l := a.linkTo("b")
	own := func() *storedEntry {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.topo.entries["a"]
	}
	waitPoll(t, 5*time.Second, "a announces the link's first RTT", func() bool {
		e := own()
		return e != nil && len(e.Links) == 1 && e.Links[0].RTTMicros > 0
	})
	sync := func(raw []byte) {
		a.handlePeerSync(l, &Frame{Type: typePeerSync, Payload: appendPeerSync(nil, [][]byte{raw})[1:]})
	}
	cur := own()
	sync(cur.raw)
	if got := own(); got.Version != cur.Version {
		t.Fatalf("an echo of the own entry moved its version from %d to %d", cur.Version, got.Version)
	}
	forged := cur.nodeEntry
	forged.Caps.Tags = []string{"someone-else"}
	// Signed with a's own key: another process holding a copy of it.
	raw, err := a.signEntry(&forged)
	if err != nil {
		t.Fatal(err)
	}
	sync(raw)
	if got := own(); got.Version <= cur.Version || len(got.Caps.Tags) != 0 {
		t.Fatalf("a different entry under this node's id and version: own entry now %+v, want a newer version of its own", got.nodeEntry)
	}
}

// logCapture records a node's log records for tests that check what an
// operator is told.
type logCapture struct {
	mu   sync.Mutex
	recs []capturedRecord
}

type capturedRecord struct {
	level slog.Level
	msg   string
	attrs map[string]string
}

type captureHandler struct {
	c     *logCapture
	attrs []slog.Attr
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	rec := capturedRecord{level: r.Level, msg: r.Message, attrs: map[string]string{}}
	for _, a := range h.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	h.c.mu.Lock()
	h.c.recs = append(h.c.recs, rec)
	h.c.mu.Unlock()
	return nil
}

func (h *captureHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &captureHandler{c: h.c, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *captureHandler) WithGroup(string) slog.Handler { return h }

// errorsNaming returns the error records that carry id as their "id".
func (c *logCapture) errorsNaming(id string) []capturedRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []capturedRecord
	for _, r := range c.recs {
		if r.level >= slog.LevelError && r.attrs["id"] == id {
			out = append(out, r)
		}
	}
	return out
}

// Two live nodes with the same id that are not neighbours (so no handshake
// refuses either) must not outbid each other's topology version forever:
// in x—b—c—x the two x's log the clash and the versions stop climbing.
func TestDuplicateIDApartSettles(t *testing.T) {
	var logs [2]logCapture
	cfg1, cfg2 := testConfig("x"), testConfig("x")
	cfg1.Logger = slog.New(&captureHandler{c: &logs[0]})
	cfg2.Logger = slog.New(&captureHandler{c: &logs[1]})
	x1 := startNode(t, cfg1)
	b := startNode(t, testConfig("b"))
	c := startNode(t, testConfig("c"))
	x2 := startNode(t, cfg2)
	dial(t, x1, b)
	dial(t, c, b)
	dial(t, x2, c)
	waitPeers(t, b, 5*time.Second, "c", "x")
	waitPeers(t, c, 5*time.Second, "b", "x")
	waitPeers(t, x1, 5*time.Second, "b", "c")
	waitPeers(t, x2, 5*time.Second, "b", "c")

	waitPoll(t, 10*time.Second, "an error naming the clashing id", func() bool {
		return len(logs[0].errorsNaming("x"))+len(logs[1].errorsNaming("x")) > 0
	})

	// A gossip round across the whole line: b and c announce, and both
	// ends see it. Entries queued before it have been handled by then.
	round := 0
	gossipRound := func() {
		t.Helper()
		round++
		tag := fmt.Sprintf("round-%d", round)
		b.SetCapabilities(Capabilities{Tags: []string{tag}})
		c.SetCapabilities(Capabilities{Tags: []string{tag}})
		for _, w := range []struct {
			at   *Node
			peer string
		}{{x1, "b"}, {x1, "c"}, {x2, "b"}, {x2, "c"}} {
			waitUntil(t, w.at, 5*time.Second, w.peer+" tagged "+tag, func() bool {
				p, ok := w.at.Peer(w.peer)
				return ok && slices.Contains(p.Capabilities.Tags, tag)
			})
		}
	}
	versions := func() [4]uint64 {
		var v [4]uint64
		for i, n := range []*Node{x1, x2} {
			n.mu.Lock()
			v[i] = n.topo.version
			n.mu.Unlock()
		}
		for i, n := range []*Node{b, c} {
			n.mu.Lock()
			if e := n.topo.entries["x"]; e != nil {
				v[2+i] = e.Version
			}
			n.mu.Unlock()
		}
		return v
	}
	// Settled means no escalation: an ordinary change on either x (such as
	// an RTT re-announcement) may still take a version step, but a storm
	// takes thousands per second.
	gossipRound()
	start := time.Now()
	before := versions()
	for range 3 {
		gossipRound()
	}
	after := versions()
	allowed := uint64(4 + 2*time.Since(start)/testConfig("x").PingInterval) // re-announcements are at most one per two ping intervals
	for i := range after {
		if after[i] < before[i] || after[i]-before[i] > allowed {
			t.Fatalf("versions for id x still climb (x1, x2, at b, at c): %v then %v (at most %d steps allowed)", before, after, allowed)
		}
	}
	if n := len(logs[0].errorsNaming("x")) + len(logs[1].errorsNaming("x")); n > 2 {
		t.Fatalf("the clash was logged %d times; want once per node per %v", n, idClashLogEvery)
	}
}

func TestSupersedes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		e, cur   nodeEntry
		replaces bool
	}{
		{"higher version", nodeEntry{Version: 5, Inc: 1}, nodeEntry{Version: 4, Inc: 9}, true},
		{"lower version", nodeEntry{Version: 3, Inc: 9}, nodeEntry{Version: 4, Inc: 1}, false},
		{"same entry again", nodeEntry{Version: 4, Inc: 1}, nodeEntry{Version: 4, Inc: 1}, false},
		{"tie, later incarnation", nodeEntry{Version: 4, Inc: 2}, nodeEntry{Version: 4, Inc: 1}, true},
		{"tie, earlier incarnation", nodeEntry{Version: 4, Inc: 1}, nodeEntry{Version: 4, Inc: 2}, false},
	} {
		if got := supersedes(&tc.e, &tc.cur); got != tc.replaces {
			t.Errorf("%s: supersedes = %v, want %v", tc.name, got, tc.replaces)
		}
	}
}

// The table knows an entry it holds, byte for byte, by its signature, and
// forgets an origin's old entry when it stores the new one.
func TestTopologyHoldsStoredEntries(t *testing.T) {
	n, err := New(testConfig("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	sign := func(version uint64) []byte {
		raw, err := n.signEntry(&nodeEntry{Origin: "x", Version: version, Inc: 1, Key: n.pub, Static: n.static.Public})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	v1, v2 := sign(1), sign(2)
	changed := bytes.Clone(v1)
	changed[3] ^= 1 // same signature, other JSON
	topo := topology{entries: map[string]*storedEntry{}, held: map[string]string{}}
	topo.put("x", &storedEntry{raw: v1})
	for _, tc := range []struct {
		name string
		raw  []byte
		want bool
	}{
		{"the stored entry", v1, true},
		{"a newer one", v2, false},
		{"the stored signature on other bytes", changed, false},
		{"shorter than a signature", []byte{1, 2, 3}, false},
	} {
		if _, got := topo.holds(tc.raw); got != tc.want {
			t.Errorf("%s: holds = %v, want %v", tc.name, got, tc.want)
		}
	}
	topo.put("x", &storedEntry{raw: v2})
	_, old := topo.holds(v1)
	origin, cur := topo.holds(v2)
	if old || !cur || origin != "x" || len(topo.held) != 1 {
		t.Fatalf("after the newer entry: holds old %v, new %v (of %q), %d held", old, cur, origin, len(topo.held))
	}
	topo.remove("x")
	if _, ok := topo.holds(v2); ok || len(topo.held) != 0 || len(topo.entries) != 0 {
		t.Fatal("a removed entry is still held")
	}
}

// Link changes made together are announced together: three in a row make
// one new version of the node's entry.
func TestLinkChangesAnnouncedTogether(t *testing.T) {
	n := startNode(t, testConfig("a"))
	version := func() uint64 {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.topo.version
	}
	v0 := version()
	n.mu.Lock()
	for range 3 {
		n.announceSoonLocked()
	}
	n.mu.Unlock()
	waitPoll(t, 5*time.Second, "the announcement", func() bool { return version() != v0 })
	n.mu.Lock()
	pending := n.announcing != nil
	n.mu.Unlock()
	if got := version() - v0; got != 1 || pending {
		t.Fatalf("%d announcements (one still pending: %v), want 1", got, pending)
	}
}

// A node's load travels in its signed capability entry: a change reaches a
// node two hops away, and a negative count from a peer is refused.
func TestLoadGossip(t *testing.T) {
	nodes := startNodes(t, "a", "b", "c")
	a, b, c := nodes[0], nodes[1], nodes[2]
	dial(t, a, b)
	dial(t, b, c)
	waitAll(t, nodes, 5*time.Second)
	caps := a.Capabilities()
	caps.Load = &Load{Running: 2, Queued: 7}
	a.SetCapabilities(caps)
	// Load changes, like RTT changes, do not fire Changed: poll.
	waitPoll(t, 5*time.Second, "c sees a's load", func() bool {
		p, ok := c.Peer("a")
		return ok && p.Load != nil && p.Load.Running == 2 && p.Load.Queued == 7
	})
	if err := checkCaps(&Capabilities{Load: &Load{Running: -1}}); err == nil {
		t.Error("checkCaps accepted a negative load")
	}
}
