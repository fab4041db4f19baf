package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/faultnet"
)

// pair is a sender and a target linked through a faultnet proxy, so that
// the link can be cut.
type pair struct {
	snd, tgt *testNode
	run      *testRunner
	net      *faultnet.Proxy
}

func newPair(t *testing.T, slots int) *pair {
	t.Helper()
	p := &pair{run: newTestRunner(slots)}
	p.tgt = newTestNode(t, "tgt", "worker")
	p.tgt.cfg.Runner = p.run
	p.tgt.start()
	t.Cleanup(p.tgt.stop)
	var err error
	p.net, err = faultnet.Listen(p.tgt.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.net.Close() })
	p.snd = newTestNode(t, "snd")
	p.snd.linkTo(p.tgt, p.net.URL())
	p.snd.start()
	t.Cleanup(p.snd.stop)
	p.snd.waitSees("tgt")
	return p
}

// Messages sent while the target is cut off wait in the outbox, survive a
// restart of both ends, and are each started once, in order, when the link
// is back.
func TestQueuedAcrossPartitionAndRestarts(t *testing.T) {
	p := newPair(t, 1)
	p.net.Cut()
	waitFor(t, 5*time.Second, "the sender to lose the target", func() bool { return !p.snd.sees("tgt") })
	var ids []string
	for i := range 20 {
		rec := p.snd.send("tgt", "worker", fmt.Sprintf("m%02d", i))
		if rec.State != Queued || rec.Seq != uint64(i+1) {
			t.Fatalf("message %d: state %s seq %d, want queued seq %d", i, rec.State, rec.Seq, i+1)
		}
		ids = append(ids, rec.ID)
	}
	// Both ends restart while the link is down.
	p.snd.stop()
	p.snd.start()
	p.tgt.stop()
	p.tgt.start()
	if got := p.snd.svc.Stats().Queued; got != 20 {
		t.Fatalf("after the restart the outbox holds %d messages, want 20", got)
	}
	p.net.Heal()
	for _, id := range ids {
		p.snd.waitState(id, Done)
	}
	want := make([]string, 20)
	for i := range want {
		want[i] = fmt.Sprintf("m%02d", i)
	}
	if got := p.run.started(); !slices.Equal(got, want) {
		t.Fatalf("started %v, want each once in order %v", got, want)
	}
	if r := p.snd.record(ids[3]); r.Text != "did m03" {
		t.Errorf("result text %q, want the run's outcome", r.Text)
	}
	waitFor(t, 5*time.Second, "the target to forget finished entries", func() bool {
		n := 0
		p.tgt.svc.st.view(func(tx *bolt.Tx) error { n = tx.Bucket(bucketIn).Stats().KeyN; return nil })
		return n == 0
	})
}

// A push whose answer is lost is pushed again; the target recognises it and
// starts it once.
func TestLostAckIsDeduplicated(t *testing.T) {
	p := newPair(t, 1)
	var cut atomic.Bool
	p.run.admit = func(from, agent string, payload json.RawMessage) error {
		if payloadText(payload) == "second" && cut.CompareAndSwap(false, true) {
			// The message is stored, but its answer is held until both
			// ends have given the link up, so it never gets back.
			p.net.Freeze()
			go func() {
				time.Sleep(time.Second)
				p.net.Heal()
			}()
		}
		return nil
	}
	a := p.snd.send("tgt", "worker", "first")
	p.snd.waitState(a.ID, Done)
	b := p.snd.send("tgt", "worker", "second")
	c := p.snd.send("tgt", "worker", "third")
	p.snd.waitState(b.ID, Done)
	p.snd.waitState(c.ID, Done)
	if got := p.run.started(); !slices.Equal(got, []string{"first", "second", "third"}) {
		t.Fatalf("started %v, want first, second, third once each", got)
	}
	if d := p.tgt.svc.Stats().Duplicates; d == 0 {
		t.Errorf("no duplicate counted; the cut should have cost the sender the answer to %q", "second")
	}
}

// Two senders, many messages, a small inbox bound is never passed: every
// message starts exactly once, and each sender's start in sending order.
func TestTwoSendersOrderAndBound(t *testing.T) {
	tgt := newTestNode(t, "tgt", "worker")
	run := newTestRunner(2)
	tgt.cfg.Runner, tgt.cfg.MaxInbox = run, 5
	tgt.start()
	t.Cleanup(tgt.stop)
	const n = 60
	var wg sync.WaitGroup
	senders := []*testNode{newTestNode(t, "s1"), newTestNode(t, "s2")}
	var maxWaiting atomic.Int64
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if w, _ := tgt.svc.InboxLoad(); int64(w) > maxWaiting.Load() {
				maxWaiting.Store(int64(w))
			}
		}
	})
	var ids sync.Map
	for _, s := range senders {
		s.linkTo(tgt, tgt.url())
		s.start()
		t.Cleanup(s.stop)
		s.waitSees("tgt")
	}
	var sendWG sync.WaitGroup
	for _, s := range senders {
		sendWG.Go(func() {
			for i := range n {
				for {
					rec, err := s.svc.Enqueue(Outgoing{Kind: KindSend, Node: "tgt", Agent: "worker",
						Payload: textPayload(fmt.Sprintf("%s-%03d", s.id, i))})
					if errors.Is(err, ErrInboxFull) {
						time.Sleep(10 * time.Millisecond) // refused, not dropped: send again
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					ids.Store(rec.ID, s)
					break
				}
			}
		})
	}
	sendWG.Wait()
	ids.Range(func(k, v any) bool {
		v.(*testNode).waitState(k.(string), Done)
		return true
	})
	close(stop)
	wg.Wait()
	got := run.started()
	if len(got) != 2*n {
		t.Fatalf("%d starts, want %d", len(got), 2*n)
	}
	next := map[string]int{}
	for _, m := range got {
		who, num, _ := strings.Cut(m, "-")
		var i int
		fmt.Sscanf(num, "%d", &i)
		if i != next[who] {
			t.Fatalf("%s started %s after %d of its messages: out of order or repeated (%v)", who, m, next[who], got)
		}
		next[who]++
	}
	if m := maxWaiting.Load(); m > 5 {
		t.Errorf("the inbox held %d waiting messages, over its bound of 5", m)
	}
}

// A full inbox refuses at the sender, with what to do, and keeps the
// messages already sent; they go through when there is room.
func TestInboxFullRefusesNewKeepsOld(t *testing.T) {
	p := newPair(t, 1)
	p.tgt.stop()
	p.tgt.cfg.MaxInbox = 2
	p.tgt.start()
	p.snd.waitSees("tgt")
	p.run.hold = make(chan struct{})
	var recs []Record
	for i := range 4 {
		recs = append(recs, p.snd.send("tgt", "worker", fmt.Sprintf("m%d", i)))
	}
	// One runs (holding the slot), two wait, the fourth is refused as full.
	p.snd.waitState(recs[2].ID, Delivered)
	waitFor(t, 5*time.Second, "the sender to hear that the inbox is full", func() bool {
		p.snd.svc.mu.Lock()
		defer p.snd.svc.mu.Unlock()
		_, full := p.snd.svc.full["tgt"]
		return full
	})
	_, err := p.snd.svc.Enqueue(Outgoing{Kind: KindSend, Node: "tgt", Agent: "worker", Payload: textPayload("m4")})
	if !errors.Is(err, ErrInboxFull) || !strings.Contains(err.Error(), "inbox is full") || !strings.Contains(err.Error(), "maxInbox") {
		t.Fatalf("a send to a full inbox: %v, want ErrInboxFull saying so", err)
	}
	if r := p.snd.record(recs[3].ID); r.State != Queued {
		t.Fatalf("the message refused as full is %s, want still queued", r.State)
	}
	close(p.run.hold)
	for _, r := range recs {
		p.snd.waitState(r.ID, Done)
	}
	if got := p.run.started(); !slices.Equal(got, []string{"m0", "m1", "m2", "m3"}) {
		t.Fatalf("started %v", got)
	}
}

// The sender remembers nodes and agents it has seen: after its own
// restart, a message for an agent whose node is down is queued, and one for
// an agent never seen is refused.
func TestRemembersNodesAcrossRestart(t *testing.T) {
	p := newPair(t, 1)
	// Let the directory record the target.
	waitFor(t, 5*time.Second, "the directory to hold tgt", func() bool {
		p.snd.svc.mu.Lock()
		defer p.snd.svc.mu.Unlock()
		return p.snd.svc.dir["tgt"] != nil
	})
	p.tgt.stop()
	p.snd.stop()
	p.snd.start()
	tg, err := p.snd.svc.Resolve(Selector{Agent: "worker"}, true)
	if err != nil || tg.Node != "tgt" || tg.Online {
		t.Fatalf("Resolve(worker) after restart = %+v, %v; want tgt, offline", tg, err)
	}
	if _, err := p.snd.svc.Resolve(Selector{Agent: "worker"}, false); err == nil || !strings.Contains(err.Error(), "not reachable") {
		t.Errorf("Resolve(worker) for a waiting handoff: %v, want not reachable", err)
	}
	_, err = p.snd.svc.Resolve(Selector{Agent: "nobody"}, true)
	if !errors.Is(err, ErrNoTarget) || !strings.Contains(err.Error(), `"nobody"`) || !strings.Contains(err.Error(), "worker (node tgt, not reachable now)") {
		t.Errorf("Resolve(nobody) = %v, want a refusal listing the agents known", err)
	}
	if _, err := p.snd.svc.Resolve(Selector{Node: "ghost"}, true); err == nil || !strings.Contains(err.Error(), "no node named") {
		t.Errorf("Resolve(node ghost) = %v, want no node named", err)
	}
	rec := p.snd.send(tg.Node, tg.Agent, "while down")
	p.tgt.start()
	p.snd.waitState(rec.ID, Done)
}

// Messages that do not reach, or do not start on, their target within
// their time to live expire, and the state says so on the sender.
func TestExpiry(t *testing.T) {
	p := newPair(t, 1)
	p.net.Cut()
	waitFor(t, 5*time.Second, "the sender to lose the target", func() bool { return !p.snd.sees("tgt") })
	rec, err := p.snd.svc.Enqueue(Outgoing{Kind: KindSend, Node: "tgt", Agent: "worker", Payload: textPayload("late"), TTL: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r := p.snd.waitState(rec.ID, Expired)
	if !strings.Contains(r.Text, "time to live") {
		t.Errorf("expired text %q", r.Text)
	}
	p.net.Heal()
	p.snd.waitSees("tgt")
	// Delivered, then stuck behind a run that holds the only slot.
	p.run.hold = make(chan struct{})
	first := p.snd.send("tgt", "worker", "holder")
	p.snd.waitState(first.ID, Started)
	waiting, err := p.snd.svc.Enqueue(Outgoing{Kind: KindSend, Node: "tgt", Agent: "worker", Payload: textPayload("waits"), TTL: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r = p.snd.waitState(waiting.ID, Expired)
	if !strings.Contains(r.Text, "did not start") {
		t.Errorf("expired-on-target text %q", r.Text)
	}
	close(p.run.hold)
	p.snd.waitState(first.ID, Done)
	if got := p.run.started(); !slices.Equal(got, []string{"holder"}) {
		t.Errorf("started %v, want only the holder", got)
	}
}

// A cancel stops a message wherever it is: queued here, waiting there, or
// running there.
func TestCancel(t *testing.T) {
	p := newPair(t, 1)
	p.run.hold = make(chan struct{})
	running := p.snd.send("tgt", "worker", "running")
	p.snd.waitState(running.ID, Started)
	waiting := p.snd.send("tgt", "worker", "waiting")
	p.snd.waitState(waiting.ID, Delivered)
	p.net.Cut()
	waitFor(t, 5*time.Second, "the sender to lose the target", func() bool { return !p.snd.sees("tgt") })
	queued := p.snd.send("tgt", "worker", "queued")

	r, err := p.snd.svc.Cancel(context.Background(), queued.ID)
	if err != nil || r.State != Cancelled {
		t.Fatalf("cancel of a queued message: %+v, %v", r, err)
	}
	if _, err := p.snd.svc.Cancel(context.Background(), waiting.ID); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("cancel of a delivered message while its node is cut off: %v, want ErrUnreachable", err)
	}
	p.net.Heal()
	p.snd.waitSees("tgt")
	if r, err = p.snd.svc.Cancel(context.Background(), waiting.ID); err != nil || r.State != Cancelled {
		t.Fatalf("cancel of a delivered message: %+v, %v", r, err)
	}
	// The answer says it is being stopped; the final state may already be in.
	if r, err = p.snd.svc.Cancel(context.Background(), running.ID); err != nil || (r.State != Started && r.State != Cancelled) {
		t.Fatalf("cancel of a running message: %+v, %v (want started, being stopped)", r, err)
	}
	p.snd.waitState(running.ID, Cancelled)
	if got := p.run.started(); !slices.Equal(got, []string{"running"}) {
		t.Errorf("started %v, want only the one already running", got)
	}
	if _, err := p.snd.svc.Cancel(context.Background(), "m-0000000000000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("cancel of an unknown id: %v", err)
	}
}

// The target refuses for good what it does not take; the sender records
// why, and later messages of the stream still go through.
func TestRefusedByTarget(t *testing.T) {
	p := newPair(t, 1)
	p.run.admit = func(from, agent string, payload json.RawMessage) error {
		if payloadText(payload) == "bad" {
			return errors.New("node tgt does not take that")
		}
		return nil
	}
	bad := p.snd.send("tgt", "worker", "bad")
	good := p.snd.send("tgt", "worker", "good")
	r := p.snd.waitState(bad.ID, Failed)
	if !strings.Contains(r.Text, "does not take that") {
		t.Errorf("refusal text %q", r.Text)
	}
	p.snd.waitState(good.ID, Done)
}

// A finished task with a session is handed to the Notifier, retried until
// it takes it, also across a restart of the sender.
func TestNoticeAfterSenderRestart(t *testing.T) {
	p := newPair(t, 1)
	var calls atomic.Int32
	got := make(chan Record, 10)
	notifier := notifierFunc(func(ctx context.Context, r Record) error {
		if calls.Add(1) == 1 {
			return errors.New("gateway not up yet")
		}
		got <- r
		return nil
	})
	p.snd.stop()
	p.snd.cfg.Notifier = notifier
	p.snd.start()
	p.run.hold = make(chan struct{})
	rec, err := p.snd.svc.Enqueue(Outgoing{Kind: KindHandoff, Node: "tgt", Agent: "worker", Payload: textPayload("task"),
		Session: "agent:main:s1", SessionAgent: "main"})
	if err != nil || !strings.HasPrefix(rec.ID, "t-") {
		t.Fatalf("enqueue: %+v, %v", rec, err)
	}
	p.snd.waitState(rec.ID, Started)
	// The sender goes down; the task finishes meanwhile.
	p.snd.stop()
	close(p.run.hold)
	waitFor(t, 5*time.Second, "the target to finish", func() bool { _, r := p.tgt.svc.InboxLoad(); return r == 0 })
	p.snd.start()
	select {
	case r := <-got:
		if r.ID != rec.ID || r.State != Done || r.Text != "did task" || r.Session != "agent:main:s1" {
			t.Errorf("notice for %+v", r)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the finished task never reached the notifier")
	}
	waitFor(t, 5*time.Second, "the notice to be recorded", func() bool { return p.snd.record(rec.ID).Notice == NoticeSent })
	if n := calls.Load(); n != 2 {
		t.Errorf("notifier called %d times, want 2 (one failure, one success)", n)
	}
}

type notifierFunc func(context.Context, Record) error

func (f notifierFunc) Notify(ctx context.Context, r Record) error { return f(ctx, r) }

// A run cut off by the target's shutdown is reported failed once the target
// is back, and not run again.
func TestRunCutByShutdown(t *testing.T) {
	p := newPair(t, 1)
	p.run.hold = make(chan struct{})
	rec := p.snd.send("tgt", "worker", "long")
	p.snd.waitState(rec.ID, Started)
	p.tgt.stop() // the drain (200 ms) passes, the run is stopped
	p.run.hold = nil
	p.tgt.start()
	r := p.snd.waitState(rec.ID, Failed)
	if !strings.Contains(r.Text, "shut down while it ran") {
		t.Errorf("text %q", r.Text)
	}
	time.Sleep(100 * time.Millisecond)
	if got := p.run.started(); !slices.Equal(got, []string{"long"}) {
		t.Errorf("started %v, want once", got)
	}
}

// Tags choose among reachable nodes by load, then round-trip time; the
// refusal names the tags and who has which.
func TestResolveByTags(t *testing.T) {
	c := newTestNode(t, "caller")
	c.start()
	t.Cleanup(c.stop)
	var nodes []*testNode
	for _, id := range []string{"mac1", "mac2", "linux"} {
		n := newTestNode(t, id, "agent-"+id)
		n.tags = []string{"macos"}
		if id == "linux" {
			n.tags = []string{"linux"}
			n.agents[0].Tags = []string{"gpu"}
		}
		n.start()
		t.Cleanup(n.stop)
		c.linkTo(n, n.url())
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		c.waitSees(n.id)
	}
	setLoad := func(n *testNode, running, queued int) {
		caps := n.mesh.Capabilities()
		caps.Load = &mesh.Load{Running: running, Queued: queued}
		n.mesh.SetCapabilities(caps)
		waitFor(t, 5*time.Second, "the load to arrive", func() bool {
			pi, ok := c.mesh.Peer(n.id)
			return ok && pi.Load != nil && pi.Load.Running == running && pi.Load.Queued == queued
		})
	}
	setLoad(nodes[0], 2, 1)
	setLoad(nodes[1], 0, 1)
	tg, err := c.svc.Resolve(Selector{Tags: []string{"macos"}}, true)
	if err != nil || tg.Node != "mac2" || tg.Agent != "agent-mac2" {
		t.Fatalf("Resolve(macos) = %+v, %v; want mac2, the less loaded", tg, err)
	}
	setLoad(nodes[1], 3, 3)
	if tg, err = c.svc.Resolve(Selector{Tags: []string{"macos"}}, true); err != nil || tg.Node != "mac1" {
		t.Fatalf("Resolve(macos) = %+v, %v; want mac1 once mac2 is busier", tg, err)
	}
	if tg, err = c.svc.Resolve(Selector{Tags: []string{"linux", "gpu"}}, true); err != nil || tg.Node != "linux" {
		t.Fatalf("Resolve(linux, gpu) = %+v, %v; the agent's tag gpu should count", tg, err)
	}
	_, err = c.svc.Resolve(Selector{Tags: []string{"macos", "gpu"}}, true)
	for _, want := range []string{"[macos, gpu]", "mac1: macos", "linux: linux (agent agent-linux: gpu)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve(macos, gpu) = %v; want it to say %q", err, want)
		}
	}
}

// A target that stops while it starts messages lets every run it started
// finish and records it: restarts in the middle of a stream of messages
// leave none failed and none started twice.
func TestRestartsWhileStarting(t *testing.T) {
	p := newPair(t, 4)
	var recs []Record
	for i := range 150 {
		recs = append(recs, p.snd.send("tgt", "worker", fmt.Sprintf("m%03d", i)))
		if i%50 == 25 {
			p.tgt.stop()
			p.tgt.start()
		}
	}
	for _, r := range recs {
		if got := p.snd.waitState(r.ID, Done); got.State != Done {
			t.Fatalf("%s: %s %s", r.ID, got.State, got.Text)
		}
	}
	seen := map[string]int{}
	for _, m := range p.run.started() {
		seen[m]++
	}
	for i := range 150 {
		if n := seen[fmt.Sprintf("m%03d", i)]; n != 1 {
			t.Errorf("m%03d started %d times", i, n)
		}
	}
}

// A run a crash cut off (recorded as started, never as ended) is reported
// failed at the next start, and not run again.
func TestRunCutByCrash(t *testing.T) {
	p := newPair(t, 1)
	p.run.hold = make(chan struct{})
	rec := p.snd.send("tgt", "worker", "long")
	p.snd.waitState(rec.ID, Started)
	p.tgt.stop()
	p.run.hold = nil
	// What a kill -9 leaves: the start recorded, no end, no report.
	st, err := openStore(p.tgt.path, false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = st.update(func(tx *bolt.Tx) error {
		k := key("snd", rec.ID)
		var e inEntry
		if !getJSON(tx.Bucket(bucketIn), k, &e) {
			return fmt.Errorf("no inbox entry for %s", rec.ID)
		}
		e.State, e.Outcome = Started, nil
		if err := tx.Bucket(bucketReports).Delete(k); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketIn), k, &e)
	})
	st.close()
	if err != nil {
		t.Fatal(err)
	}
	p.tgt.start()
	r := p.snd.waitState(rec.ID, Failed)
	if !strings.Contains(r.Text, "stopped while it ran (a crash or a kill)") {
		t.Errorf("text %q", r.Text)
	}
	time.Sleep(100 * time.Millisecond)
	if got := p.run.started(); !slices.Equal(got, []string{"long"}) {
		t.Errorf("started %v, want once", got)
	}
}
