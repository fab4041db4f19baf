package bench

// The soak suite: a bounded run of mixed traffic from an in-process client
// node (the hub) to three node processes, each serving the model (with its
// own upstream), remote tools (with its own workspace) and an agent (a
// stand-in for the OpenClaw CLI), while the nodes restart one after another,
// alternately shut down cleanly and killed. Every request carries a unique
// token that its answer must echo, from the node it was meant for.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/clawmatrix/clawmatrix/schema"
)

const soakModel = "soak-model"

// soakAgentScript stands in for `openclaw agent --agent ID --message M --json`:
// it answers with the agent's id and the message, so the reply can be
// checked against the task.
const soakAgentScript = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) shift; agent="$1" ;;
    --message) shift; msg="$1" ;;
  esac
  shift
done
printf '{"runId":"soak","status":"ok","result":{"payloads":[{"text":"%s got: %s"}]}}\n' "$agent" "$msg"
`

// Soak sizing.
const (
	soakWorkers   = 5
	soakQuick     = 5 * time.Second
	soakOpTimeout = 20 * time.Second
	// soakSettle bounds the wait for goroutines to end after everything
	// is closed.
	soakSettle = 5 * time.Second
	// soakHeapBound is the goal for the heap left behind once everything
	// is closed: a leak of even 100 bytes per operation exceeds it after
	// about 10,000 operations, while runtime and package caches that are
	// filled once (HTTP transports' tables, sync.Pools, timers) stay well
	// below it.
	soakHeapBound = 1 << 20
)

// soakDuration is how long the traffic runs.
func (o Options) soakDuration() time.Duration {
	switch {
	case o.Soak > 0:
		return o.Soak
	case o.Quick:
		return soakQuick
	}
	return DefaultSoak
}

// soakPeriod is the time between two restarts: about a dozen per run.
func soakPeriod(d time.Duration) time.Duration {
	return min(max(d/12, 1200*time.Millisecond), 15*time.Second)
}

// Operation kinds, in the order workers cycle through them.
var soakKinds = []string{"proxy", "proxy-stream", "cluster_exec", "cluster_write+read", "cluster_handoff"}

type opOutcome int

const (
	opOK opOutcome = iota
	opError
	opLost      // no answer within soakOpTimeout
	opMisrouted // an answer, but not this request's own, or from another node
)

// soakNode is one node process slot; restarts replace its process.
type soakNode struct {
	id, agent, workspace string
	up                   *mockllm.Server

	mu   sync.Mutex
	proc *nodeProc
}

func (n *soakNode) config(hubURL, hubID, agentBin string) map[string]any {
	return map[string]any{
		"nodeId":      n.id,
		"peers":       []any{map[string]any{"url": hubURL, "nodeId": hubID}},
		"models":      []any{map[string]any{"id": soakModel, "provider": "bench", "upstream": map[string]any{"baseUrl": n.up.URL()}}},
		"agents":      []any{map[string]any{"id": n.agent, "description": "soak stand-in agent on " + n.id}},
		"toolProxy":   map[string]any{"enabled": true, "allow": []string{"*"}},
		"openclawBin": agentBin,
		// Several workers may hand off to the same node at once.
		"maxConcurrentRuns": 4,
	}
}

// window is a span in which a node was down or rejoining; to is zero while
// it is still open.
type window struct {
	node     string
	from, to time.Time
}

type windows struct {
	mu   sync.Mutex
	list []window
}

func (w *windows) open(node string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, window{node: node, from: time.Now()})
	return len(w.list) - 1
}

func (w *windows) close(i int) {
	w.mu.Lock()
	w.list[i].to = time.Now()
	w.mu.Unlock()
}

// overlaps reports whether [from, to] meets a window of node ("" = any node).
func (w *windows) overlaps(node string, from, to time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, x := range w.list {
		if node != "" && x.node != node {
			continue
		}
		if !x.from.After(to) && (x.to.IsZero() || !x.to.Before(from)) {
			return true
		}
	}
	return false
}

// kindStats counts the outcomes of one kind of operation.
type kindStats struct {
	ok, lost, misrouted, windowErrs, otherErrs         int
	firstLost, firstMisrouted, firstWindow, firstOther string
}

type soakRun struct {
	duration, period time.Duration
	nodes            []*soakNode
	hub              *cluster.Runtime
	hc               *http.Client
	win              windows

	mu    sync.Mutex
	kinds map[string]*kindStats

	// Filled by the restart loop.
	restarts, killed, unclean int
	rejoin                    []time.Duration
	firstUnclean              string
	heapPeak                  uint64

	// Before and after, in this process.
	goroutinesBefore, goroutinesAfter int
	heapBefore, heapAfter             uint64
}

func runSoak(ctx context.Context, o Options) ([]Metric, error) {
	r, err := soak(ctx, o)
	if err != nil {
		return nil, err
	}
	return r.metrics(), nil
}

// soak runs the suite; the goroutine and heap figures are taken after
// everything it started is closed.
func soak(ctx context.Context, o Options) (*soakRun, error) {
	bin, err := o.nodeBin()
	if err != nil {
		return nil, err
	}
	r := &soakRun{duration: o.soakDuration(), kinds: map[string]*kindStats{}}
	r.period = soakPeriod(r.duration)
	for _, k := range soakKinds {
		r.kinds[k] = &kindStats{}
	}
	// The first config parse compiles the config schema, a cache kept for
	// the life of the process; do it before the baseline so that it does
	// not count as growth.
	if _, err := hubConfig("soak-hub", soakModel); err != nil {
		return nil, err
	}
	r.goroutinesBefore, r.heapBefore = settledBaseline()
	if err := r.traffic(ctx, o, bin); err != nil {
		return nil, err
	}
	r.goroutinesAfter, r.heapAfter = settle(r.goroutinesBefore)
	return r, nil
}

// settledBaseline is the goroutine count and live heap after a full GC
// (two cycles, so sync.Pool victims are gone too).
func settledBaseline() (int, uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return runtime.NumGoroutine(), ms.HeapAlloc
}

// settle waits up to soakSettle for the goroutine count to come back to
// base, then measures as settledBaseline does.
func settle(base int) (int, uint64) {
	deadline := time.Now().Add(soakSettle)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	return settledBaseline()
}

// traffic starts the cluster, runs the load and the restarts, and closes
// everything before it returns.
func (r *soakRun) traffic(ctx context.Context, o Options, bin string) error {
	log := o.logger()
	// The run's results outlive the cluster; dropping these lets the heap
	// measured afterwards show only what the cluster really left behind.
	defer func() { r.hub, r.hc, r.nodes = nil, nil, nil }()
	dir, err := os.MkdirTemp("", "clawmatrix-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	agentBin := filepath.Join(dir, "openclaw-standin")
	if err := os.WriteFile(agentBin, []byte(soakAgentScript), 0o755); err != nil {
		return err
	}

	r.hub, err = startHub(ctx, "soak-hub", soakModel)
	if err != nil {
		return err
	}
	defer r.hub.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: 2 * soakWorkers}
	defer tr.CloseIdleConnections()
	r.hc = &http.Client{Transport: tr}

	for i := 1; i <= 3; i++ {
		n := &soakNode{id: fmt.Sprintf("soak-%d", i), agent: fmt.Sprintf("agent-%d", i)}
		n.workspace = filepath.Join(dir, "workspace-"+n.id)
		if err := os.Mkdir(n.workspace, 0o755); err != nil {
			return err
		}
		// pwd on the node prints the resolved path.
		if n.workspace, err = filepath.EvalSymlinks(n.workspace); err != nil {
			return err
		}
		if n.up, err = startEchoUpstream(n.id); err != nil {
			return err
		}
		defer n.up.Close()
		r.nodes = append(r.nodes, n)
	}
	defer func() {
		for _, n := range r.nodes {
			n.mu.Lock()
			if n.proc != nil {
				if err := n.proc.Stop(); err != nil {
					log.Warn("soak: stopping a node", "node", n.id, "err", err)
				}
			}
			n.mu.Unlock()
		}
	}()
	start := func(n *soakNode) error {
		p, err := startNodeProc(ctx, bin, dir, n.config(r.hub.Mesh().URL(), r.hub.NodeID(), agentBin), n.workspace)
		if err != nil {
			return err
		}
		n.mu.Lock()
		n.proc = p
		n.mu.Unlock()
		return waitPeer(ctx, r.hub.Mesh(), n.id, []string{soakModel}, []string{n.agent})
	}
	for _, n := range r.nodes {
		if err := start(n); err != nil {
			return err
		}
	}
	log.Info("soak: three nodes up", "duration", r.duration, "restart every", r.period)

	loadCtx, stopLoad := context.WithTimeout(ctx, r.duration)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range soakWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.worker(ctx, loadCtx, w)
		}()
	}
	var restartErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		restartErr = r.restartLoop(ctx, loadCtx, start)
		if restartErr != nil {
			stopLoad()
		}
	}()
	wg.Wait()
	if restartErr != nil {
		return restartErr
	}
	return ctx.Err()
}

// restartLoop restarts one node per period, round robin, alternating a
// clean shutdown (SIGTERM) and a kill (SIGKILL).
func (r *soakRun) restartLoop(ctx, loadCtx context.Context, start func(*soakNode) error) error {
	for i := 0; ; i++ {
		if !sleepCtx(loadCtx, r.period) {
			return nil
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		r.heapPeak = max(r.heapPeak, ms.HeapAlloc)

		n := r.nodes[i%len(r.nodes)]
		kill := i%2 == 1
		t0 := time.Now()
		wi := r.win.open(n.id)
		n.mu.Lock()
		p := n.proc
		n.mu.Unlock()
		if kill {
			if err := p.Kill(); err != nil {
				r.win.close(wi)
				return err
			}
			r.killed++
		} else if err := p.Stop(); err != nil {
			r.unclean++
			if r.firstUnclean == "" {
				r.firstUnclean = err.Error()
			}
		}
		err := start(n)
		r.win.close(wi)
		if err != nil {
			return fmt.Errorf("restarting node %s: %w", n.id, err)
		}
		r.restarts++
		r.rejoin = append(r.rejoin, time.Since(t0))
	}
}

// worker sends operations back to back until loadCtx ends; an operation in
// flight then still runs to its end (bounded by soakOpTimeout).
func (r *soakRun) worker(ctx, loadCtx context.Context, w int) {
	for n := 0; loadCtx.Err() == nil; n++ {
		kind := soakKinds[(w+n)%len(soakKinds)]
		target := r.nodes[rand.IntN(len(r.nodes))]
		token := fmt.Sprintf("tok-%d-%d", w, n)
		opCtx, cancel := context.WithTimeout(ctx, soakOpTimeout)
		from := time.Now()
		out, detail, node := r.op(opCtx, kind, target, token, w)
		lost := errors.Is(opCtx.Err(), context.DeadlineExceeded)
		cancel()
		if lost && out != opOK {
			out = opLost
		}
		r.record(kind, node, from, time.Now(), out, detail)
	}
}

func (r *soakRun) record(kind, node string, from, to time.Time, out opOutcome, detail string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.kinds[kind]
	first := func(p *string) {
		if *p == "" {
			*p = detail
		}
	}
	switch out {
	case opOK:
		s.ok++
	case opLost:
		s.lost++
		first(&s.firstLost)
	case opMisrouted:
		s.misrouted++
		first(&s.firstMisrouted)
	case opError:
		if r.win.overlaps(node, from, to) {
			s.windowErrs++
			first(&s.firstWindow)
		} else {
			s.otherErrs++
			first(&s.firstOther)
		}
	}
}

// op runs one operation and says how it went. node is the node the
// outcome concerns ("" for proxy requests, which any node may serve).
func (r *soakRun) op(ctx context.Context, kind string, target *soakNode, token string, w int) (opOutcome, string, string) {
	call := func(tool string, args map[string]any) (string, bool) {
		raw, _ := json.Marshal(args)
		tc, problems := schema.DecodeToolCall(tool, raw)
		if problems != nil {
			return fmt.Sprintf("the bench built invalid %s arguments: %v", tool, problems), true
		}
		res := r.hub.CallTool(ctx, tc, cluster.CallInfo{})
		return res.Text, res.IsError
	}
	switch kind {
	case "proxy", "proxy-stream":
		rep, err := chat(ctx, r.hc, r.hub.ProxyURL(), r.hub.ProxyKey(), soakModel, token, kind == "proxy-stream")
		if err != nil {
			return opError, err.Error(), ""
		}
		known := func(id string) bool {
			return slices.ContainsFunc(r.nodes, func(n *soakNode) bool { return n.id == id })
		}
		out, detail := checkProxyAnswer(rep, token, known)
		return out, detail, ""
	case "cluster_exec":
		text, isErr := call("cluster_exec", map[string]any{"node": target.id, "command": "echo " + token + "; pwd", "timeoutMs": 10000})
		if isErr {
			return opError, text, target.id
		}
		out, detail := checkExecAnswer(text, token, target.workspace)
		return out, detail, target.id
	case "cluster_write+read":
		path := fmt.Sprintf("soak-w%d.txt", w)
		text, isErr := call("cluster_write", map[string]any{"node": target.id, "path": path, "content": token})
		if isErr {
			return opError, text, target.id
		}
		if out, detail := checkWriteAnswer(text, filepath.Join(target.workspace, path), target.id); out != opOK {
			return out, detail, target.id
		}
		text, isErr = call("cluster_read", map[string]any{"node": target.id, "path": path})
		if isErr {
			return opError, text, target.id
		}
		out, detail := checkReadAnswer(text, token)
		return out, detail, target.id
	case "cluster_handoff":
		task := "soak task " + token
		text, isErr := call("cluster_handoff", map[string]any{"agent": target.agent, "task": task, "timeoutMs": 15000})
		if isErr {
			return opError, text, target.id
		}
		out, detail := checkHandoffAnswer(text, target.agent, task)
		return out, detail, target.id
	}
	return opError, "unknown operation " + kind, ""
}

// The checks below decide whether a successful answer is the answer to its
// own request, from the node it was meant for.

// checkProxyAnswer: the upstream of the node named in the response header
// echoed this request's token.
func checkProxyAnswer(rep chatReply, token string, known func(string) bool) (opOutcome, string) {
	if !known(rep.Node) || rep.Text != echoText(rep.Node, token) {
		return opMisrouted, fmt.Sprintf("request %s answered %q by node %q", token, rep.Text, rep.Node)
	}
	return opOK, ""
}

// checkExecAnswer: `echo TOKEN; pwd` printed the token and the target's own
// workspace, each on a line of its own.
func checkExecAnswer(text, token, workspace string) (opOutcome, string) {
	lines := strings.Split(text, "\n")
	if !strings.HasPrefix(text, "exit code 0\n") || !slices.Contains(lines, token) || !slices.Contains(lines, workspace) {
		return opMisrouted, fmt.Sprintf("exec of %s in %s answered %q", token, workspace, text)
	}
	return opOK, ""
}

// checkWriteAnswer: the write names the file in the target's workspace and
// the target node.
func checkWriteAnswer(text, path, node string) (opOutcome, string) {
	if !strings.Contains(text, fmt.Sprintf("%q on node %q", path, node)) {
		return opMisrouted, fmt.Sprintf("write of %s to node %s answered %q", path, node, text)
	}
	return opOK, ""
}

// checkReadAnswer: reading the file back gives exactly what was written.
func checkReadAnswer(text, token string) (opOutcome, string) {
	if strings.TrimRight(text, "\n") != token {
		return opMisrouted, fmt.Sprintf("read after writing %s answered %q", token, text)
	}
	return opOK, ""
}

// checkHandoffAnswer: the stand-in agent's reply names the agent and
// repeats the task, and nothing else.
func checkHandoffAnswer(text, agent, task string) (opOutcome, string) {
	if text != agent+" got: "+task {
		return opMisrouted, fmt.Sprintf("handoff of %q to %s answered %q", task, agent, text)
	}
	return opOK, ""
}

func (r *soakRun) totals() kindStats {
	var t kindStats
	for _, k := range soakKinds {
		s := r.kinds[k]
		t.ok += s.ok
		t.lost += s.lost
		t.misrouted += s.misrouted
		t.windowErrs += s.windowErrs
		t.otherErrs += s.otherErrs
		for _, p := range []struct {
			dst *string
			src string
		}{
			{&t.firstLost, s.firstLost}, {&t.firstMisrouted, s.firstMisrouted},
			{&t.firstWindow, s.firstWindow}, {&t.firstOther, s.firstOther},
		} {
			if *p.dst == "" && p.src != "" {
				*p.dst = k + ": " + p.src
			}
		}
	}
	return t
}

func (r *soakRun) metrics() []Metric {
	t := r.totals()
	perKind := func(f func(*kindStats) int) string {
		var parts []string
		for _, k := range soakKinds {
			parts = append(parts, fmt.Sprintf("%s %d", k, f(r.kinds[k])))
		}
		return strings.Join(parts, ", ")
	}
	withFirst := func(note, first string) string {
		if first != "" {
			note += "; first: " + first
		}
		return note
	}
	var rejoinMax, rejoinSum time.Duration
	for _, d := range r.rejoin {
		rejoinMax = max(rejoinMax, d)
		rejoinSum += d
	}
	rejoinNote := "no restart"
	if len(r.rejoin) > 0 {
		rejoinNote = fmt.Sprintf("from stop or kill until the hub saw the new process with its model and agent; mean %.0f ms", float64(rejoinSum.Milliseconds())/float64(len(r.rejoin)))
	}
	mib := func(b int64) float64 { return float64(b) / (1 << 20) }
	return []Metric{
		{Name: "operations answered correctly", Value: float64(t.ok), Unit: "ops",
			Note: fmt.Sprintf("%s of traffic from %d workers: %s", r.duration, soakWorkers, perKind(func(s *kindStats) int { return s.ok }))},
		{Name: "lost (no answer within the deadline)", Value: float64(t.lost), Unit: "ops", Goal: AtMost(0),
			Note: withFirst(fmt.Sprintf("deadline %s", soakOpTimeout), t.firstLost)},
		{Name: "misrouted (answer not the request's own)", Value: float64(t.misrouted), Unit: "ops", Goal: AtMost(0),
			Note: withFirst("token or node in the answer did not match the request", t.firstMisrouted)},
		{Name: "errors outside restart windows", Value: float64(t.otherErrs), Unit: "ops", Goal: AtMost(0),
			Note: withFirst(perKind(func(s *kindStats) int { return s.otherErrs }), t.firstOther)},
		{Name: "errors during restart windows", Value: float64(t.windowErrs), Unit: "ops",
			Note: withFirst("operations overlapping a node's stop-to-rejoin window (any node for proxy requests): "+perKind(func(s *kindStats) int { return s.windowErrs }), t.firstWindow)},
		{Name: "non-streamed proxy errors during restarts", Value: float64(r.kinds["proxy"].windowErrs), Unit: "ops", Goal: AtMost(0),
			Note: withFirst("another node serves the model, so the proxy should fail over", r.kinds["proxy"].firstWindow)},
		{Name: "node restarts", Value: float64(r.restarts), Unit: "restarts",
			Note: fmt.Sprintf("one every %s, round robin: %d killed (SIGKILL), %d shut down (SIGTERM)", r.period, r.killed, r.restarts-r.killed)},
		{Name: "unclean shutdowns on SIGTERM", Value: float64(r.unclean), Unit: "nodes", Goal: AtMost(0),
			Note: withFirst("nodes that exited non-zero or had to be killed after SIGTERM", r.firstUnclean)},
		{Name: "slowest rejoin after a restart", Value: float64(rejoinMax.Microseconds()) / 1000, Unit: "ms", Note: rejoinNote},
		{Name: "goroutines after - before", Value: float64(r.goroutinesAfter - r.goroutinesBefore), Unit: "goroutines", Goal: AtMost(0),
			Note: fmt.Sprintf("in the bench process, %d before; after closing everything (waited up to %s)", r.goroutinesBefore, soakSettle)},
		{Name: "heap after - before", Value: mib(int64(r.heapAfter) - int64(r.heapBefore)), Unit: "MiB", Goal: AtMost(mib(soakHeapBound)),
			Note: fmt.Sprintf("live heap after GC: %.1f MiB before, %.1f MiB after; peak sampled during the run %.1f MiB", mib(int64(r.heapBefore)), mib(int64(r.heapAfter)), mib(int64(r.heapPeak)))},
	}
}
