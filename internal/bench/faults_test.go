package bench

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func faultsMetric(t *testing.T, ms []Metric, name string) Metric {
	t.Helper()
	for _, m := range ms {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("no metric %q among %d", name, len(ms))
	return Metric{}
}

func faultsFinite(t *testing.T, ms []Metric) {
	t.Helper()
	if len(ms) == 0 {
		t.Fatal("no metrics")
	}
	for _, m := range ms {
		if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			t.Errorf("metric %q = %v, want a finite number", m.Name, m.Value)
		}
		if m.Name == "" || m.Unit == "" {
			t.Errorf("metric without a name or unit: %+v", m)
		}
	}
}

func TestFailoverQuick(t *testing.T) {
	defer goleak.VerifyNone(t)
	o := testOptions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run, err := failover(ctx, o)
	if err != nil {
		t.Fatal(err)
	}

	// The kill really happened: the victim was reaped, ended by SIGKILL,
	// and its pid no longer names a process of ours.
	st := run.victimState
	if st == nil {
		t.Fatal("the killed node was never reaped")
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("killed node ended with %v, want death by SIGKILL", st)
	}
	if err := syscall.Kill(run.victimPid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("signal 0 to the killed node's pid %d: %v, want ESRCH", run.victimPid, err)
	}

	ms := run.metrics()
	faultsFinite(t, ms)
	s := run.summary()
	if s.okBefore == 0 || s.okAfter == 0 {
		t.Fatalf("load did not run on both sides of the kill: %d ok before, %d ok after", s.okBefore, s.okAfter)
	}
	// Every node served before the kill; after it, the killed one served
	// nothing and the two others everything.
	for _, id := range run.nodes {
		if s.shareBefore[id] == 0 {
			t.Errorf("node %s served nothing before the kill: %v", id, s.shareBefore)
		}
	}
	if n := s.shareAft[run.victim]; n != 0 {
		t.Errorf("killed node %s served %d requests started after the kill", run.victim, n)
	}
	if got := faultsMetric(t, ms, "share after the kill, "+run.victim).Value; got != 0 {
		t.Errorf("reported share of the killed node after the kill = %v%%", got)
	}
	if s.mismatched != 0 {
		t.Errorf("%d mismatched responses", s.mismatched)
	}
	// Client-visible errors are the suite's measured outcome (goal 0). The
	// one kind seen so far is a response from the killed node that broke
	// off after its head (see the report in the suite's note); anything
	// else, or an error away from the kill, is a failure here.
	for _, q := range run.requests {
		if q.err == nil {
			continue
		}
		if !strings.Contains(q.err.Error(), `node \"`+run.victim+`\" broke off`) || q.start.After(run.kill.Add(time.Second)) {
			t.Errorf("request %s..%s failed: %v", q.start.Sub(run.start), q.end.Sub(run.start), q.err)
		} else {
			t.Logf("request cut by the kill: %v", q.err)
		}
	}
	moved := faultsMetric(t, ms, "time until the killed node's share moved").Value
	if moved < 0 || moved > float64(run.end.Sub(run.kill).Milliseconds()) {
		t.Errorf("share moved after %v ms, want within the %s after the kill", moved, run.profile.after)
	}
	for _, m := range ms {
		if m.Note != "" && strings.Contains(m.Note, "not reaped") {
			t.Errorf("metric %q: %s", m.Name, m.Note)
		}
	}
}

func TestSoakQuick(t *testing.T) {
	defer goleak.VerifyNone(t)
	o := testOptions(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run, err := soak(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	ms := run.metrics()
	faultsFinite(t, ms)

	tot := run.totals()
	if tot.misrouted != 0 {
		t.Errorf("%d misrouted answers; first: %s", tot.misrouted, tot.firstMisrouted)
	}
	if tot.lost != 0 {
		t.Errorf("%d operations lost; first: %s", tot.lost, tot.firstLost)
	}
	if tot.otherErrs != 0 {
		t.Errorf("%d errors outside restart windows; first: %s", tot.otherErrs, tot.firstOther)
	}
	// Every kind of traffic really ran and was checked.
	for _, k := range soakKinds {
		if run.kinds[k].ok == 0 {
			t.Errorf("no %s operation answered correctly", k)
		}
	}
	// Nodes really restarted, both ways, and came back.
	if run.restarts < 2 || run.killed < 1 || run.restarts-run.killed < 1 {
		t.Errorf("%d restarts (%d killed) in %s, want at least one kill and one clean shutdown", run.restarts, run.killed, run.duration)
	}
	if run.unclean != 0 {
		t.Errorf("%d unclean shutdowns; first: %s", run.unclean, run.firstUnclean)
	}
	if got := faultsMetric(t, ms, "node restarts").Value; got != float64(run.restarts) {
		t.Errorf("reported %v restarts, counted %d", got, run.restarts)
	}
	// The run's goroutines were all gone when it measured.
	if d := run.goroutinesAfter - run.goroutinesBefore; d > 0 {
		t.Errorf("%d goroutines more after the soak than before", d)
	}
}

func TestSoakWindows(t *testing.T) {
	var w windows
	t0 := time.Now()
	i := w.open("a")
	w.list[i].from = t0
	w.list[i].to = t0.Add(time.Second)
	open := w.open("b")
	w.list[open].from = t0.Add(2 * time.Second)
	for _, c := range []struct {
		name     string
		node     string
		from, to time.Duration
		want     bool
	}{
		{"inside", "a", 100 * time.Millisecond, 200 * time.Millisecond, true},
		{"straddles the start", "a", -time.Second, 0, true},
		{"straddles the end", "a", 900 * time.Millisecond, 1100 * time.Millisecond, true},
		{"before", "a", -2 * time.Second, -time.Second, false},
		{"after", "a", 1100 * time.Millisecond, 1500 * time.Millisecond, false},
		{"other node", "c", 100 * time.Millisecond, 200 * time.Millisecond, false},
		{"any node", "", 100 * time.Millisecond, 200 * time.Millisecond, true},
		{"open window", "b", time.Hour, 2 * time.Hour, true},
		{"before the open window", "b", 0, time.Second, false},
	} {
		if got := w.overlaps(c.node, t0.Add(c.from), t0.Add(c.to)); got != c.want {
			t.Errorf("%s: overlaps = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestStartNodeProcFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	for _, c := range []struct {
		name string
		bin  string
		cfg  map[string]any
		want string
	}{
		{"invalid config", "/bin/true", map[string]any{"nodeId": "x", "listenPort": "not a port"}, "config for node x"},
		{"exits before it is up", "/bin/true", map[string]any{"nodeId": "early"}, "exited before it was up"},
		{"missing binary", filepath.Join(dir, "no-such-binary"), map[string]any{"nodeId": "gone"}, "starting node gone"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := startNodeProc(ctx, c.bin, dir, c.cfg, "")
			if err == nil {
				p.Kill()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
		})
	}
}

func TestTailWriterKeepsTheEnd(t *testing.T) {
	w := &tailWriter{max: 8}
	for _, s := range []string{"abc", "defgh", "ijklmnop", "q"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if got := w.String(); got != "jklmnopq" {
		t.Fatalf("tail = %q, want %q", got, "jklmnopq")
	}
}

func TestSoakAnswerChecks(t *testing.T) {
	known := func(id string) bool { return id == "soak-1" || id == "soak-2" }
	check := func(name string, got opOutcome, want opOutcome, detail string) {
		t.Helper()
		if got != want {
			t.Errorf("%s: outcome %d, want %d (%s)", name, got, want, detail)
		}
		if (got == opMisrouted) != (detail != "") {
			t.Errorf("%s: outcome %d with detail %q", name, got, detail)
		}
	}
	for _, c := range []struct {
		name string
		rep  chatReply
		want opOutcome
	}{
		{"own echo", chatReply{Node: "soak-1", Text: echoText("soak-1", "tok-1-2")}, opOK},
		{"another request's token", chatReply{Node: "soak-1", Text: echoText("soak-1", "tok-1-23")}, opMisrouted},
		{"header names another node", chatReply{Node: "soak-2", Text: echoText("soak-1", "tok-1-2")}, opMisrouted},
		{"unknown node", chatReply{Node: "elsewhere", Text: echoText("elsewhere", "tok-1-2")}, opMisrouted},
		{"no header", chatReply{Text: echoText("", "tok-1-2")}, opMisrouted},
	} {
		out, detail := checkProxyAnswer(c.rep, "tok-1-2", known)
		check("proxy "+c.name, out, c.want, detail)
	}
	for _, c := range []struct {
		name, text string
		want       opOutcome
	}{
		{"token and workspace", "exit code 0\ntok-1-2\n/ws/soak-1\n", opOK},
		{"another token", "exit code 0\ntok-1-23\n/ws/soak-1\n", opMisrouted},
		{"another workspace", "exit code 0\ntok-1-2\n/ws/soak-2\n", opMisrouted},
		{"failed command", "exit code 1\ntok-1-2\n/ws/soak-1\n", opMisrouted},
	} {
		out, detail := checkExecAnswer(c.text, "tok-1-2", "/ws/soak-1")
		check("exec "+c.name, out, c.want, detail)
	}
	out, detail := checkWriteAnswer(`created "/ws/soak-1/w1.txt" on node "soak-1" (7 bytes)`, "/ws/soak-1/w1.txt", "soak-1")
	check("write to the target", out, opOK, detail)
	out, detail = checkWriteAnswer(`created "/ws/soak-1/w1.txt" on node "soak-2" (7 bytes)`, "/ws/soak-1/w1.txt", "soak-1")
	check("write to another node", out, opMisrouted, detail)
	out, detail = checkWriteAnswer(`created "/ws/soak-2/w1.txt" on node "soak-1" (7 bytes)`, "/ws/soak-1/w1.txt", "soak-1")
	check("write to another workspace", out, opMisrouted, detail)
	out, detail = checkReadAnswer("tok-1-2", "tok-1-2")
	check("read back", out, opOK, detail)
	out, detail = checkReadAnswer("tok-1-1", "tok-1-2")
	check("read an older write", out, opMisrouted, detail)
	out, detail = checkHandoffAnswer("agent-1 got: soak task tok-1-2", "agent-1", "soak task tok-1-2")
	check("handoff reply", out, opOK, detail)
	out, detail = checkHandoffAnswer("agent-1 got: soak task tok-1-23", "agent-1", "soak task tok-1-2")
	check("handoff reply to another task", out, opMisrouted, detail)
	out, detail = checkHandoffAnswer("agent-2 got: soak task tok-1-2", "agent-1", "soak task tok-1-2")
	check("handoff answered by another agent", out, opMisrouted, detail)
}
