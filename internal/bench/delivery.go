package bench

// The delivery suite: what the durable outbox costs and how fast it moves.
// A sender and a target mesh node on loopback, each with a delivery.Service
// (cluster/delivery) on a file in a temporary directory; the target's runner
// finishes every message at once, so the figures are the outbox's own and
// not an agent's. Each figure is measured with fsync on (what nodes run) and
// again without it in the same run, and the cost of durability is their
// ratio.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/delivery"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/faultnet"
)

type deliveryPlan struct {
	messages   int // per throughput run
	writers    int // concurrent senders for the group-commit run
	queued     int // messages held for the memory and disk figures
	redelivery int // partitions healed
}

func planDelivery(o Options) deliveryPlan {
	if o.Quick {
		return deliveryPlan{messages: 300, writers: 8, queued: 1000, redelivery: 2}
	}
	return deliveryPlan{messages: 3000, writers: 16, queued: 10000, redelivery: 5}
}

// instantRunner finishes every inbound message as soon as it starts.
type instantRunner struct{ slots chan struct{} }

func (r instantRunner) Admit(string, delivery.Kind, string, json.RawMessage) error { return nil }

func (r instantRunner) Acquire(ctx context.Context) (func(), error) {
	select {
	case r.slots <- struct{}{}:
		return func() { <-r.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r instantRunner) Start(context.Context, delivery.Inbound) func() delivery.Outcome {
	return func() delivery.Outcome { return delivery.Outcome{Text: "done"} }
}

// deliveryPair is a sender and a target, linked through a faultnet proxy.
type deliveryPair struct {
	dir                string
	nodes              []*mesh.Node
	sender, target     *delivery.Service
	link               *faultnet.Proxy
	senderNode, tgNode *mesh.Node
}

func startDeliveryPair(ctx context.Context, noSync bool) (p *deliveryPair, err error) {
	p = &deliveryPair{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if p.dir, err = os.MkdirTemp("", "clawmatrix-bench-delivery-"); err != nil {
		return nil, err
	}
	secret := randomSecret()
	if p.nodes, err = startNodes(ctx, secret, []string{"target"}, func(c *mesh.Config) {
		c.Capabilities = mesh.Capabilities{Agents: []mesh.AgentInfo{{ID: "worker"}}}
	}); err != nil {
		return nil, err
	}
	p.tgNode = p.nodes[0]
	if p.link, err = faultnet.Listen(p.tgNode.Addr().String()); err != nil {
		return nil, err
	}
	sc := lanConfig("sender", secret)
	sc.ListenAddr = ""
	sc.Peers = []mesh.PeerAddr{{URL: p.link.URL(), NodeID: "target"}}
	if p.senderNode, err = mesh.New(sc); err != nil {
		return nil, err
	}
	p.nodes = append(p.nodes, p.senderNode)
	// Reconnect timings of loopback tests: the redelivery figure is the
	// outbox's reaction to a link coming back, not the dialer's backoff
	// (reported beside it).
	if p.target, err = delivery.Open(delivery.Config{Node: p.tgNode, Path: filepath.Join(p.dir, "target.db"), NoSync: noSync,
		Runner: instantRunner{slots: make(chan struct{}, 16)}, MaxInbox: 1 << 20}); err != nil {
		return nil, err
	}
	if p.sender, err = delivery.Open(delivery.Config{Node: p.senderNode, Path: filepath.Join(p.dir, "sender.db"), NoSync: noSync,
		MaxQueued: 1 << 20}); err != nil {
		return nil, err
	}
	if err = p.senderNode.Start(ctx); err != nil {
		return nil, err
	}
	if err = waitPeers(ctx, p.senderNode, []string{"target"}); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *deliveryPair) Close() {
	if p.sender != nil {
		p.sender.Close()
	}
	if p.target != nil {
		p.target.Close()
	}
	closeNodes(p.nodes)
	if p.link != nil {
		p.link.Close()
	}
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
}

var benchPayload = json.RawMessage(`{"agent":"worker","message":"` + strings.Repeat("m", 160) + `"}`)

func (p *deliveryPair) enqueue() (delivery.Record, error) {
	return p.sender.Enqueue(delivery.Outgoing{Kind: delivery.KindSend, Node: "target", Agent: "worker", Payload: benchPayload, Summary: "bench"})
}

// waitStats polls the target's counters until cond holds.
func waitStats(ctx context.Context, s *delivery.Service, cond func(delivery.Stats) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for !cond(s.Stats()) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("delivery: %w waiting for the target (%+v)", ctx.Err(), s.Stats())
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// throughput is one run of n messages from writers goroutines: the rate
// they were stored in the outbox, the rate they were stored on the target,
// and the rate they were run and reported back.
type throughput struct{ accepted, delivered, done float64 }

func (p *deliveryPair) throughput(ctx context.Context, n, writers int) (throughput, error) {
	base := p.target.Stats().Accepted
	ids := make([]string, n)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < n; i += writers {
				rec, err := p.enqueue()
				if err != nil {
					errs <- err
					return
				}
				ids[i] = rec.ID
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return throughput{}, err
	}
	accepted := time.Since(start)
	if err := waitStats(ctx, p.target, func(s delivery.Stats) bool { return s.Accepted-base >= uint64(n) }); err != nil {
		return throughput{}, err
	}
	delivered := time.Since(start)
	// Done on the sender once the last report came back.
	for _, id := range []string{ids[n-1], ids[0]} {
		for {
			rec, err := p.sender.Get(id)
			if err != nil {
				return throughput{}, err
			}
			if rec.State == delivery.Done {
				break
			}
			if ctx.Err() != nil {
				return throughput{}, ctx.Err()
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Every report is in once the outbox holds nothing unreported.
	if err := waitStats(ctx, p.target, func(s delivery.Stats) bool { return s.Waiting == 0 && s.Running == 0 }); err != nil {
		return throughput{}, err
	}
	done := time.Since(start)
	rate := func(d time.Duration) float64 { return float64(n) / d.Seconds() }
	return throughput{rate(accepted), rate(delivered), rate(done)}, nil
}

// redelivery cuts the link, queues messages, heals it, and returns the
// time from the heal to the first message stored on the target, and from
// the sender seeing the target again to that message.
func (p *deliveryPair) redelivery(ctx context.Context, queued int) (fromHeal, fromSeen time.Duration, err error) {
	p.link.Cut()
	if err := waitGone(ctx, p.senderNode, "target"); err != nil {
		return 0, 0, err
	}
	for range queued {
		if _, err := p.enqueue(); err != nil {
			return 0, 0, err
		}
	}
	base := p.target.Stats().Accepted
	seen := make(chan time.Time, 1)
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			ch := p.senderNode.Changed()
			if _, ok := p.senderNode.Peer("target"); ok {
				seen <- time.Now()
				return
			}
			select {
			case <-ch:
			case <-watchCtx.Done():
				return
			}
		}
	}()
	healed := time.Now()
	p.link.Heal()
	if err := waitStats(ctx, p.target, func(s delivery.Stats) bool { return s.Accepted > base }); err != nil {
		return 0, 0, err
	}
	first := time.Now()
	select {
	case at := <-seen:
		return first.Sub(healed), first.Sub(at), nil
	case <-time.After(5 * time.Second):
		return 0, 0, fmt.Errorf("delivery: the sender never reported seeing the target again")
	}
}

// waitGone waits until n no longer sees id.
func waitGone(ctx context.Context, n *mesh.Node, id string) error {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	for {
		ch := n.Changed()
		if _, ok := n.Peer(id); !ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%s still sees %s: %w", n.ID(), id, ctx.Err())
		}
	}
}

// footprint queues n messages for a node that is cut off and returns the
// heap and the file growth per message.
func (p *deliveryPair) footprint(ctx context.Context, n int) (heap, disk float64, err error) {
	p.link.Cut()
	if err := waitGone(ctx, p.senderNode, "target"); err != nil {
		return 0, 0, err
	}
	file := filepath.Join(p.dir, "sender.db")
	size := func() int64 {
		fi, err := os.Stat(file)
		if err != nil {
			return 0
		}
		return fi.Size()
	}
	mem0, disk0 := memInUse(), size()
	for range n {
		if _, err := p.enqueue(); err != nil {
			return 0, 0, err
		}
	}
	mem1, disk1 := memInUse(), size()
	p.link.Heal()
	return (float64(mem1) - float64(mem0)) / float64(n), float64(disk1-disk0) / float64(n), nil
}

func runDelivery(ctx context.Context, o Options) ([]Metric, error) {
	plan := planDelivery(o)
	log := o.logger()
	var out []Metric
	add := func(name string, v float64, unit, note string) {
		out = append(out, Metric{Name: name, Value: v, Unit: unit, Note: note})
	}
	runs := map[bool][2]throughput{}
	for _, noSync := range []bool{false, true} {
		p, err := startDeliveryPair(ctx, noSync)
		if err != nil {
			return out, err
		}
		one, err := p.throughput(ctx, plan.messages, 1)
		var many throughput
		if err == nil {
			many, err = p.throughput(ctx, plan.messages, plan.writers)
		}
		p.Close()
		if err != nil {
			return out, err
		}
		runs[noSync] = [2]throughput{one, many}
		log.Info("delivery throughput", "noSync", noSync, "one", one, "many", many)
	}
	durable, fast := runs[false], runs[true]
	note := fmt.Sprintf("%d messages of %d bytes to one remote agent; stored in the sender's outbox, stored in the target's inbox, run and reported back", plan.messages, len(benchPayload))
	add("accepted into the outbox, 1 writer", durable[0].accepted, "msg/s", note)
	add("delivered to the target's inbox, 1 writer", durable[0].delivered, "msg/s", note)
	add("run and reported back, 1 writer", durable[0].done, "msg/s", note)
	add(fmt.Sprintf("accepted into the outbox, %d writers", plan.writers), durable[1].accepted, "msg/s", "group commit: writers share an fsync")
	add(fmt.Sprintf("delivered to the target's inbox, %d writers", plan.writers), durable[1].delivered, "msg/s", note)
	add(fmt.Sprintf("run and reported back, %d writers", plan.writers), durable[1].done, "msg/s", note)
	add("outbox with fsync vs without, 1 writer (accepted)", durable[0].accepted/fast[0].accepted, "x",
		fmt.Sprintf("%.0f vs %.0f msg/s", durable[0].accepted, fast[0].accepted))
	add(fmt.Sprintf("outbox with fsync vs without, %d writers (accepted)", plan.writers), durable[1].accepted/fast[1].accepted, "x",
		fmt.Sprintf("%.0f vs %.0f msg/s", durable[1].accepted, fast[1].accepted))
	add("end to end with fsync vs without, 1 writer (delivered)", durable[0].delivered/fast[0].delivered, "x",
		fmt.Sprintf("%.0f vs %.0f msg/s", durable[0].delivered, fast[0].delivered))

	p, err := startDeliveryPair(ctx, false)
	if err != nil {
		return out, err
	}
	defer p.Close()
	var fromHeal, fromSeen []time.Duration
	for range plan.redelivery {
		h, s, err := p.redelivery(ctx, 20)
		if err != nil {
			return out, err
		}
		fromHeal, fromSeen = append(fromHeal, h), append(fromSeen, s)
	}
	add("first redelivery after the link is back (median)", ms(median(fromHeal)), "ms",
		"from the heal of a cut link to the first queued message stored on the target; includes the dialer's backoff (LAN timings)")
	add("first redelivery after the sender sees the target (median)", ms(median(fromSeen)), "ms",
		"from the sender's mesh showing the target again to the first queued message stored there: the outbox's own reaction")
	heap, disk, err := p.footprint(ctx, plan.queued)
	if err != nil {
		return out, err
	}
	add("heap per queued message", heap, "B", fmt.Sprintf("%d messages queued for a node that is cut off", plan.queued))
	add("disk per queued message", disk, "B", "growth of the bbolt file (record, payload, queue key), payload 180 bytes")
	return out, nil
}
