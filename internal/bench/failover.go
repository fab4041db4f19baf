package bench

// The failover suite: three node processes serve the same model behind one
// client node's proxy; a fixed number of clients send non-streamed requests
// without pause, and one serving node is killed (SIGKILL) halfway through.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

const failoverModel = "failover-model"

// failoverProfile sizes a run.
type failoverProfile struct {
	clients       int
	before, after time.Duration
}

func (o Options) failoverProfile() failoverProfile {
	if o.Quick {
		return failoverProfile{clients: 4, before: 1500 * time.Millisecond, after: 2 * time.Second}
	}
	return failoverProfile{clients: 8, before: 5 * time.Second, after: 5 * time.Second}
}

// foRequest is one request of the load.
type foRequest struct {
	start, end time.Time
	node       string // the node that served it
	err        error  // client-visible failure
	mismatch   bool   // answered, but not with this request's own token from the node named
}

// failoverRun is what a run observed.
type failoverRun struct {
	profile failoverProfile
	nodes   []string
	victim  string
	// victimPid and victimState show the kill really happened.
	victimPid   int
	victimState *os.ProcessState
	start, kill time.Time
	end         time.Time
	requests    []foRequest
}

func runFailover(ctx context.Context, o Options) ([]Metric, error) {
	r, err := failover(ctx, o)
	if err != nil {
		return nil, err
	}
	return r.metrics(), nil
}

func failover(ctx context.Context, o Options) (*failoverRun, error) {
	log := o.logger()
	bin, err := o.nodeBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "clawmatrix-failover-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	hub, err := startHub(ctx, "fo-client", failoverModel)
	if err != nil {
		return nil, err
	}
	defer hub.Close()

	run := &failoverRun{profile: o.failoverProfile(), nodes: []string{"fo-1", "fo-2", "fo-3"}, victim: "fo-2"}
	procs := map[string]*nodeProc{}
	for _, id := range run.nodes {
		up, err := startEchoUpstream(id)
		if err != nil {
			return nil, err
		}
		defer up.Close()
		p, err := startNodeProc(ctx, bin, dir, map[string]any{
			"nodeId": id,
			"peers":  []any{map[string]any{"url": hub.Mesh().URL(), "nodeId": hub.NodeID()}},
			"models": []any{map[string]any{"id": failoverModel, "provider": "bench", "upstream": map[string]any{"baseUrl": up.URL()}}},
		}, "")
		if err != nil {
			return nil, err
		}
		defer p.Stop()
		procs[id] = p
	}
	for _, id := range run.nodes {
		if err := waitPeer(ctx, hub.Mesh(), id, []string{failoverModel}, nil); err != nil {
			return nil, err
		}
	}
	log.Info("failover: three serving nodes up", "clients", run.profile.clients)

	tr := &http.Transport{MaxIdleConnsPerHost: 2 * run.profile.clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	// Warm up connections and routing; every warm-up request must succeed.
	for i := range 2 * run.profile.clients {
		token := fmt.Sprintf("warm-%d", i)
		rep, err := chat(ctx, hc, hub.ProxyURL(), hub.ProxyKey(), failoverModel, token, false)
		if err != nil {
			return nil, fmt.Errorf("warm-up request through the client node's proxy: %w", err)
		}
		if rep.Text != echoText(rep.Node, token) {
			return nil, fmt.Errorf("warm-up request %s came back as %q from node %q", token, rep.Text, rep.Node)
		}
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	results := make([][]foRequest, run.profile.clients)
	var wg sync.WaitGroup
	run.start = time.Now()
	for c := range run.profile.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; loadCtx.Err() == nil; n++ {
				token := fmt.Sprintf("fo-%d-%d", c, n)
				reqCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
				q := foRequest{start: time.Now()}
				rep, err := chat(reqCtx, hc, hub.ProxyURL(), hub.ProxyKey(), failoverModel, token, false)
				cancel()
				q.end, q.node, q.err = time.Now(), rep.Node, err
				q.mismatch = err == nil && rep.Text != echoText(rep.Node, token)
				results[c] = append(results[c], q)
			}
		}()
	}
	stopped := func() error {
		stopLoad()
		wg.Wait()
		for _, rs := range results {
			run.requests = append(run.requests, rs...)
		}
		return ctx.Err()
	}
	if !sleepCtx(ctx, run.profile.before) {
		return nil, stopped()
	}
	victim := procs[run.victim]
	run.victimPid = victim.Pid()
	run.kill = time.Now()
	killErr := victim.Kill()
	run.victimState = victim.State()
	log.Info("failover: killed a serving node", "node", run.victim, "pid", run.victimPid, "state", run.victimState)
	sleepCtx(ctx, run.profile.after)
	run.end = time.Now()
	if err := stopped(); err != nil {
		return nil, err
	}
	if killErr != nil {
		return nil, killErr
	}
	return run, nil
}

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// summary is what the metrics are built from.
type failoverSummary struct {
	ok, errors, mismatched int
	firstError             string
	okBefore, okAfter      int
	shareBefore, shareAft  map[string]int
	// moved is the time from the kill until the end of the last request
	// that was in flight at the kill, failed, or was answered by the killed
	// node: from then on, every request succeeded on another node.
	moved time.Duration
	// slowest is the longest request in flight at the kill.
	slowest time.Duration
	// medianBefore is the median latency before the kill.
	medianBefore time.Duration
}

func (r *failoverRun) summary() failoverSummary {
	s := failoverSummary{shareBefore: map[string]int{}, shareAft: map[string]int{}}
	var before []time.Duration
	for _, q := range r.requests {
		switch {
		case q.err != nil:
			s.errors++
			if s.firstError == "" {
				s.firstError = q.err.Error()
			}
		case q.mismatch:
			s.mismatched++
		default:
			s.ok++
			if q.start.Before(r.kill) {
				s.okBefore++
				s.shareBefore[q.node]++
				if q.end.Before(r.kill) {
					before = append(before, q.end.Sub(q.start))
				}
			} else {
				s.okAfter++
				s.shareAft[q.node]++
			}
		}
		across := q.start.Before(r.kill) && q.end.After(r.kill)
		if across {
			s.slowest = max(s.slowest, q.end.Sub(q.start))
		}
		if q.end.After(r.kill) && (across || q.err != nil || q.mismatch || q.node == r.victim) {
			s.moved = max(s.moved, q.end.Sub(r.kill))
		}
	}
	if len(before) > 0 {
		slices.Sort(before)
		s.medianBefore = before[len(before)/2]
	}
	return s
}

func (r *failoverRun) metrics() []Metric {
	s := r.summary()
	p := r.profile
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	errNote := "non-streamed requests that got an error (the proxy retries a node that fails before its first byte)"
	if s.firstError != "" {
		errNote += "; first: " + s.firstError
	}
	out := []Metric{
		{Name: "requests completed", Value: float64(s.ok), Unit: "requests",
			Note: fmt.Sprintf("%d clients without pause, %s before and %s after the kill", p.clients, p.before, p.after)},
		{Name: "client-visible errors (non-streamed)", Value: float64(s.errors), Unit: "requests", Goal: AtMost(0), Note: errNote},
		{Name: "mismatched responses", Value: float64(s.mismatched), Unit: "requests", Goal: AtMost(0),
			Note: "answers that were not the request's own echo from the node the proxy named"},
		{Name: "time until the killed node's share moved", Value: ms(s.moved), Unit: "ms",
			Note: "from SIGKILL to the end of the last request that was in flight at the kill, failed, or was served by the killed node"},
		{Name: "slowest request across the kill", Value: ms(s.slowest), Unit: "ms",
			Note: fmt.Sprintf("median before the kill: %.2f ms", ms(s.medianBefore))},
	}
	if r.kill.Sub(r.start) > 0 && r.end.Sub(r.kill) > 0 && s.okBefore > 0 {
		rateBefore := float64(s.okBefore) / r.kill.Sub(r.start).Seconds()
		rateAfter := float64(s.okAfter) / r.end.Sub(r.kill).Seconds()
		out = append(out, Metric{Name: "throughput after / before the kill", Value: rateAfter / rateBefore, Unit: "x",
			Note: fmt.Sprintf("%.0f req/s before, %.0f req/s after", rateBefore, rateAfter)})
	}
	pct := func(n, total int) float64 {
		if total == 0 {
			return 0
		}
		return 100 * float64(n) / float64(total)
	}
	for _, id := range r.nodes {
		out = append(out, Metric{Name: "share before the kill, " + id, Value: pct(s.shareBefore[id], s.okBefore), Unit: "%"})
	}
	for _, id := range r.nodes {
		m := Metric{Name: "share after the kill, " + id, Value: pct(s.shareAft[id], s.okAfter), Unit: "%"}
		if id == r.victim {
			m.Goal = AtMost(0)
			m.Note = fmt.Sprintf("killed with SIGKILL (pid %d, %s)", r.victimPid, describeState(r.victimState))
		}
		out = append(out, m)
	}
	return out
}

func describeState(st *os.ProcessState) string {
	if st == nil {
		return "not reaped"
	}
	return strings.TrimSpace(st.String())
}
