package remote

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
)

// agentTarget is a target offering agents "coder" and "writer", with the
// fake openclaw CLI; dir holds what the fake records.
func agentTarget(t *testing.T, maxRuns int) (*Target, string) {
	t.Helper()
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{
		OpenclawBin:       fakeOpenclaw(t, dir),
		Agents:            []schema.Agent{{ID: "coder"}, {ID: "writer"}},
		MaxConcurrentRuns: maxRuns,
		// The tool proxy stays disabled: agent runs do not depend on it.
	})
	return tg, dir
}

func TestHandoff(t *testing.T) {
	tg, dir := agentTarget(t, 2)
	cases := []struct {
		name    string
		args    schema.HandoffArgs
		isError bool
		text    []string
	}{
		{"reply", schema.HandoffArgs{Agent: "writer", Task: "write a poem"}, false, []string{"done by writer"}},
		{"first agent by default", schema.HandoffArgs{Task: "anything"}, false, []string{"done by coder"}},
		{"log lines before the JSON", schema.HandoffArgs{Agent: "coder", Task: "LOGS"}, false, []string{"after logs"}},
		{"no text reply", schema.HandoffArgs{Agent: "coder", Task: "EMPTY"}, false, []string{"finished the task without a text reply"}},
		{"unknown agent", schema.HandoffArgs{Agent: "painter", Task: "x"}, true, []string{`node "n1" has no agent "painter"; its agents: coder, writer`}},
		{"failing agent", schema.HandoffArgs{Agent: "coder", Task: "FAIL"}, true,
			[]string{`agent "coder" on node "n1" failed (exit code 1): agent exploded`, "stderr (last lines):\nstarting\nfatal: model unavailable"}},
		{"unparsable output", schema.HandoffArgs{Agent: "coder", Task: "GARBAGE"}, true,
			[]string{"its output is not the JSON `openclaw agent --json` prints", `Output began: "this is not json"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tg.handoff(t.Context(), "caller", tc.args)
			if r.IsError != tc.isError {
				t.Fatalf("isError = %v, want %v: %s", r.IsError, tc.isError, r.Text)
			}
			for _, w := range tc.text {
				if !strings.Contains(r.Text, w) {
					t.Errorf("text %q lacks %q", r.Text, w)
				}
			}
		})
	}

	// Without timeoutMs a run gets the default 600 s.
	if to := readString(t, filepath.Join(dir, "timeout.coder")); to != "600" || DefaultRunTimeout != 600*time.Second {
		t.Errorf("--timeout %q without timeoutMs, want 600", to)
	}

	// The agent reads the task, then the context; --timeout follows timeoutMs.
	r := tg.handoff(t.Context(), "caller", schema.HandoffArgs{Agent: "writer", Task: "the task", Context: "some facts", TimeoutMs: 90500})
	if r.IsError {
		t.Fatal(r.Text)
	}
	if msg := readString(t, filepath.Join(dir, "msg.writer")); msg != "the task\n\nContext:\nsome facts" {
		t.Errorf("message %q", msg)
	}
	if to := readString(t, filepath.Join(dir, "timeout.writer")); to != "91" {
		t.Errorf("--timeout %q, want 91", to)
	}
	if d := detailsMap(t, r); d["agent"] != "writer" || d["node"] != "n1" || !strings.HasPrefix(d["runId"].(string), "run-") {
		t.Errorf("details %v", d)
	}
}

func TestHandoffNoAgents(t *testing.T) {
	tg := newTestTarget(t, "relay", TargetConfig{OpenclawBin: "/bin/false"})
	r := tg.handoff(t.Context(), "caller", schema.HandoffArgs{Task: "x"})
	if !r.IsError || !strings.Contains(r.Text, `node "relay" offers no agents`) {
		t.Errorf("got %+v", r)
	}
}

func TestHandoffMissingCLI(t *testing.T) {
	tg := newTestTarget(t, "n1", TargetConfig{OpenclawBin: "openclaw-not-installed-here", Agents: []schema.Agent{{ID: "a"}}})
	r := tg.handoff(t.Context(), "caller", schema.HandoffArgs{Task: "x"})
	if !r.IsError || !strings.Contains(r.Text, `the OpenClaw CLI "openclaw-not-installed-here" was not found`) {
		t.Errorf("got %+v", r)
	}
}

func TestHandoffTimeoutKillsRun(t *testing.T) {
	tg, dir := agentTarget(t, 2)
	done := make(chan Result, 1)
	go func() {
		done <- tg.handoff(t.Context(), "caller", schema.HandoffArgs{Agent: "coder", Task: "SLEEP", TimeoutMs: 500})
	}()
	pid, child := readPid(t, filepath.Join(dir, "pid.coder")), readPid(t, filepath.Join(dir, "child.coder"))
	r := <-done
	if !r.IsError || !strings.Contains(r.Text, `agent "coder" on node "n1" did not finish within 500ms`) {
		t.Fatalf("got %+v", r)
	}
	waitGone(t, pid, "timed-out openclaw run")
	waitGone(t, child, "child of a timed-out openclaw run")
}

func TestHandoffCancelKillsRun(t *testing.T) {
	tg, dir := agentTarget(t, 2)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan Result, 1)
	go func() { done <- tg.handoff(ctx, "caller", schema.HandoffArgs{Agent: "coder", Task: "SLEEP"}) }()
	pid, child := readPid(t, filepath.Join(dir, "pid.coder")), readPid(t, filepath.Join(dir, "child.coder"))
	cancel()
	if r := <-done; !r.IsError || !strings.Contains(r.Text, "cancelled") {
		t.Fatalf("got %+v", r)
	}
	waitGone(t, pid, "cancelled openclaw run")
	waitGone(t, child, "child of a cancelled openclaw run")
}

// More handoffs than MaxConcurrentRuns wait their turn: the fake CLI
// records how many runs overlap.
func TestHandoffConcurrencyLimit(t *testing.T) {
	const limit, runs = 2, 5
	tg, dir := agentTarget(t, limit)
	var wg sync.WaitGroup
	results := make([]Result, runs)
	for i := range runs {
		wg.Go(func() {
			results[i] = tg.handoff(t.Context(), "caller", schema.HandoffArgs{Agent: "coder", Task: "TRACK"})
		})
	}
	wg.Wait()
	queued := 0
	for _, r := range results {
		if r.IsError || r.Text != "tracked" {
			t.Fatalf("got %+v", r)
		}
		if q, _ := detailsMap(t, r)["queuedMs"].(float64); q > 0 {
			queued++
		}
	}
	var seen []int
	for _, f := range strings.Fields(readString(t, filepath.Join(dir, "seen"))) {
		n, _ := strconv.Atoi(f)
		seen = append(seen, n)
	}
	if len(seen) != runs || slices.Max(seen) != limit {
		t.Errorf("overlapping runs seen by each run: %v; want %d runs, at most and at some point exactly %d at once", seen, runs, limit)
	}
	if queued < runs-limit {
		t.Errorf("%d runs report queueing, want at least %d", queued, runs-limit)
	}
}

// A handoff waiting for a run slot gives up when its caller does.
func TestHandoffQueueRespectsContext(t *testing.T) {
	tg, dir := agentTarget(t, 1)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	first := make(chan Result, 1)
	go func() { first <- tg.handoff(ctx, "caller", schema.HandoffArgs{Agent: "coder", Task: "SLEEP"}) }()
	readPid(t, filepath.Join(dir, "pid.coder"))

	waitCtx, waitCancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer waitCancel()
	r := tg.handoff(waitCtx, "caller", schema.HandoffArgs{Agent: "writer", Task: "x"})
	if !r.IsError || !strings.Contains(r.Text, "cancelled while waiting for a free run slot (the node runs at most 1 at once)") {
		t.Errorf("got %+v", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "msg.writer")); err == nil {
		t.Error("the queued run started anyway")
	}

	// timeoutMs covers the wait in the queue.
	r = tg.handoff(t.Context(), "caller", schema.HandoffArgs{Agent: "writer", Task: "x", TimeoutMs: 100})
	if !r.IsError || !strings.Contains(r.Text, `agent "writer" on node "n1" never started: all 1 run slots stayed busy for 100ms`) {
		t.Errorf("got %+v", r)
	}
	cancel()
	<-first
}

// runMessage runs a cluster_send message the way the durable inbox does:
// a slot, the start, the wait.
func runMessage(t *testing.T, tg *Target, a schema.SendArgs) Result {
	t.Helper()
	release, err := tg.AcquireRun(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	return tg.StartMessage(t.Context(), "caller", a)()
}

// StartMessage returns once the run is going; the run is the target's
// until it ends or the target closes, and a run slot is held throughout.
func TestStartMessage(t *testing.T) {
	dir := t.TempDir()
	tg, err := newTarget("n1", TargetConfig{
		WorkspaceDir: dir, OpenclawBin: fakeOpenclaw(t, dir),
		Agents: []schema.Agent{{ID: "coder"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	release, err := tg.AcquireRun(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if running, waiting := tg.Runs(); running != 1 || waiting != 0 {
		t.Errorf("Runs with one slot taken = %d running, %d waiting", running, waiting)
	}
	wait := tg.StartMessage(t.Context(), "caller", schema.SendArgs{Message: "SLEEP please"})
	pid, child := readPid(t, filepath.Join(dir, "pid.coder")), readPid(t, filepath.Join(dir, "child.coder"))
	if !alive(pid) {
		t.Fatal("the run is not going on after StartMessage returned")
	}
	if msg := readString(t, filepath.Join(dir, "msg.coder")); msg != "SLEEP please" {
		t.Errorf("message %q", msg)
	}
	// Its owner waits for it; Close stops it, and waits for that owner.
	ended := make(chan Result, 1)
	go func() { ended <- wait() }()
	tg.Close()
	waitGone(t, pid, "message run after Close")
	waitGone(t, child, "child of a message run after Close")
	if r := <-ended; !r.IsError || !strings.Contains(r.Text, "cancelled and stopped") {
		t.Errorf("a run stopped by Close ended with %+v", r)
	}
	release()
}

// A message run that finishes says so, without the reply, and frees its
// slot for the next run.
func TestMessageReleasesSlot(t *testing.T) {
	tg, _ := agentTarget(t, 1)
	if r := runMessage(t, tg, schema.SendArgs{Agent: "coder", Message: "hello"}); r.IsError || strings.Contains(r.Text, "done by coder") ||
		!strings.Contains(r.Text, `agent "coder" on node "n1" handled the message`) {
		t.Fatalf("got %+v", r)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if r := tg.handoff(ctx, "caller", schema.HandoffArgs{Agent: "coder", Task: "next"}); r.IsError || r.Text != "done by coder" {
		t.Errorf("got %+v", r)
	}
}

// StartTask runs a handoff with the slot its caller holds and returns the
// reply, as handoff does.
func TestStartTask(t *testing.T) {
	tg, _ := agentTarget(t, 1)
	release, err := tg.AcquireRun(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	r := tg.StartTask(t.Context(), "caller", schema.HandoffArgs{Agent: "coder", Task: "build"})()
	if r.IsError || r.Text != "done by coder" || detailsMap(t, r)["agent"] != "coder" {
		t.Errorf("got %+v", r)
	}
	if r := tg.StartTask(t.Context(), "caller", schema.HandoffArgs{Agent: "nobody", Task: "x"})(); !r.IsError || !strings.Contains(r.Text, `no agent "nobody"`) {
		t.Errorf("unknown agent: %+v", r)
	}
}

// Admit refuses what the node would refuse to run, with the reason.
func TestAdmit(t *testing.T) {
	tg := newTestTarget(t, "n1", TargetConfig{Agents: []schema.Agent{{ID: "coder"}}, AllowFrom: []string{"laptop"}})
	ok := []byte(`{"agent":"coder","message":"hi"}`)
	if err := tg.Admit("laptop", schema.ToolSend, "coder", ok); err != nil {
		t.Errorf("Admit of a valid message: %v", err)
	}
	for _, tc := range []struct {
		from, agent string
		args        string
		want        string
	}{
		{"stranger", "coder", string(ok), "not in the node's allowFrom"},
		{"laptop", "admin", `{"agent":"admin","message":"hi"}`, `no agent "admin"`},
		{"laptop", "coder", `{"agent":"coder"}`, "message: missing required field"},
	} {
		if err := tg.Admit(tc.from, schema.ToolSend, tc.agent, []byte(tc.args)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Admit(%s, %s, %s) = %v, want %q", tc.from, tc.agent, tc.args, err, tc.want)
		}
	}
}

// RunSessionTurn passes the session and the text to the CLI and takes a
// turn the gateway accepted as done.
func TestRunSessionTurn(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{OpenclawBin: fakeOpenclaw(t, dir)})
	if err := tg.RunSessionTurn(t.Context(), "agent:main:s1", "main", "task t-1 finished"); err != nil {
		t.Fatal(err)
	}
	if got := readString(t, filepath.Join(dir, "session.main")); got != "agent:main:s1" {
		t.Errorf("--session-key %q", got)
	}
	if got := readString(t, filepath.Join(dir, "msg.main")); got != "task t-1 finished" {
		t.Errorf("--message %q", got)
	}
	if err := tg.RunSessionTurn(t.Context(), "agent:main:s1", "main", "FAIL now"); err == nil {
		t.Error("a turn the gateway refused counts as delivered")
	}
}

// Only the end of a run's stderr is kept, however much it prints.
func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	for _, w := range []string{"abc", "defgh", "ijklmnopqrstu", "vw"} {
		b.Write([]byte(w))
	}
	if string(b.buf) != "pqrstuvw" || b.total != 23 {
		t.Errorf("kept %q of %d bytes, want the last 8", b.buf, b.total)
	}
}

func TestParseAgentOutput(t *testing.T) {
	cases := []struct {
		name                 string
		out                  string
		parsed, failed       bool
		reply, errMsg, runID string
	}{
		{"ok", `{"runId":"r1","status":"ok","result":{"payloads":[{"text":"a"},{"text":"b"}]}}`, true, false, "a\n\nb", "", "r1"},
		{"pretty printed after logs", "warn: x\n{\n  \"runId\": \"r2\",\n  \"status\": \"ok\",\n  \"result\": {\"payloads\": [{\"text\": \"hi\"}]}\n}\n", true, false, "hi", "", "r2"},
		{"failure", `{"ok":false,"error":{"message":"no such agent"}}`, true, true, "", "no such agent", ""},
		{"bad status", `{"runId":"r3","status":"timeout","result":{"payloads":[]}}`, true, true, "", `the run ended with status "timeout"`, "r3"},
		{"garbage", "hello", false, false, "", "", ""},
		{"truncated json", `{"runId":"r1","status":"ok","result":{"payl`, false, false, "", "", ""},
		{"empty", "", false, false, "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := parseAgentOutput([]byte(tc.out), redactor{})
			if o.parsed != tc.parsed || o.failed != tc.failed || o.reply != tc.reply || o.errMsg != tc.errMsg || o.runID != tc.runID {
				t.Errorf("got %+v", o)
			}
		})
	}
}

// A reply longer than maxOutputBytes is cut with a note, like any output.
func TestHandoffReplyCap(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{
		ToolProxy:   schema.ToolProxy{MaxOutputBytes: 8},
		OpenclawBin: fakeOpenclaw(t, dir), Agents: []schema.Agent{{ID: "writer"}},
	})
	r := tg.handoff(t.Context(), "caller", schema.HandoffArgs{Task: "x"})
	if r.IsError || !strings.HasPrefix(r.Text, "done by \n[... 6 bytes cut: output is limited to 8 bytes") {
		t.Fatalf("got %+v", r)
	}
	if d := detailsMap(t, r); d["truncated"] != true || d["cutBytes"] != 6.0 {
		t.Errorf("details %v", d)
	}
}

// A handoff's timeoutMs is lowered to the node's limit for agent runs
// (toolProxy.maxTimeoutMs, but never below the default), and the result
// says so, so that no caller can hold a run slot for days.
func TestHandoffTimeoutClamped(t *testing.T) {
	const week = 7 * 24 * 3600 * 1000
	cases := []struct {
		name         string
		maxTimeoutMs int // the node's toolProxy.maxTimeoutMs; 0: default
		timeoutMs    int
		wantMs       int64 // the run's limit
		lowered      bool
	}{
		{"default limit", 0, week, 600000, true},
		{"raised limit", 2 * 3600 * 1000, week, 2 * 3600 * 1000, true},
		{"limit below the default", 60000, week, 600000, true},
		{"too large for a duration", 0, 1 << 60, 600000, true},
		{"within the limit", 0, 300000, 300000, false},
		{"not given", 60000, 0, 600000, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tg := newTestTarget(t, "n1", TargetConfig{
				ToolProxy:   schema.ToolProxy{MaxTimeoutMs: tc.maxTimeoutMs},
				OpenclawBin: fakeOpenclaw(t, dir), Agents: []schema.Agent{{ID: "coder"}},
			})
			r := tg.handoff(t.Context(), "caller", schema.HandoffArgs{Task: "x", TimeoutMs: tc.timeoutMs})
			if r.IsError || !strings.HasSuffix(r.Text, "done by coder") {
				t.Fatalf("got %+v", r)
			}
			note := fmt.Sprintf("[timeoutMs %d is above node \"n1\"'s limit for agent runs; it was lowered to %d", tc.timeoutMs, tc.wantMs)
			if got := strings.HasPrefix(r.Text, note); got != tc.lowered {
				t.Errorf("text %q: note present = %v, want %v", r.Text, got, tc.lowered)
			}
			d := detailsMap(t, r)
			wantRequested := any(nil)
			if tc.lowered {
				wantRequested = float64(tc.timeoutMs)
			}
			if d["timeoutMs"] != float64(tc.wantMs) || d["requestedTimeoutMs"] != wantRequested {
				t.Errorf("details %v: want timeoutMs %d, requestedTimeoutMs %v", d, tc.wantMs, wantRequested)
			}
			// The CLI is told the same limit, in seconds.
			if got, want := readString(t, filepath.Join(dir, "timeout.coder")), strconv.FormatInt(tc.wantMs/1000, 10); got != want {
				t.Errorf("openclaw ran with --timeout %s, want %s", got, want)
			}
		})
	}
}

// A message longer than one command-line argument may be is refused with
// a clear error before anything runs; one at the limit runs.
func TestAgentMessageTooLong(t *testing.T) {
	ctxSep := len(agentMessage("t", "c")) - 2 // what joins task and context
	cases := []struct {
		name    string
		run     func(tg *Target) Result
		wantLen int    // length of the message the CLI got; 0: refused
		want    string // in the refusal
	}{
		{"handoff at the limit", func(tg *Target) Result {
			return tg.handoff(t.Context(), "caller", schema.HandoffArgs{Task: "t", Context: strings.Repeat("c", maxMessageBytes-1-ctxSep)})
		}, maxMessageBytes, ""},
		{"handoff over the limit", func(tg *Target) Result {
			return tg.handoff(t.Context(), "caller", schema.HandoffArgs{Task: "t", Context: strings.Repeat("c", maxMessageBytes-ctxSep)})
		}, 0, fmt.Sprintf(`node "n1" cannot pass a %d-byte task and context to agent "coder": one agent message can hold at most 131071 bytes`, maxMessageBytes+1)},
		{"send at the limit", func(tg *Target) Result {
			return runMessage(t, tg, schema.SendArgs{Message: strings.Repeat("m", maxMessageBytes)})
		}, maxMessageBytes, ""},
		{"send over the limit", func(tg *Target) Result {
			return runMessage(t, tg, schema.SendArgs{Message: strings.Repeat("m", 200<<10)})
		}, 0, `node "n1" cannot pass a 204800-byte message to agent "coder": one agent message can hold at most 131071 bytes`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tg := newTestTarget(t, "n1", TargetConfig{OpenclawBin: fakeOpenclaw(t, dir), Agents: []schema.Agent{{ID: "coder"}}})
			r := tc.run(tg)
			if tc.wantLen > 0 {
				if r.IsError {
					t.Fatalf("a message at the limit was refused: %s", r.Text)
				}
				if got := len(waitFile(t, filepath.Join(dir, "msg.coder"))); got != tc.wantLen {
					t.Errorf("the CLI got a %d-byte message, want %d", got, tc.wantLen)
				}
				return
			}
			if !r.IsError || !strings.Contains(r.Text, tc.want) || !strings.Contains(r.Text, "cluster_write") ||
				!strings.Contains(r.Text, "128 KiB") {
				t.Errorf("got %+v, want a refusal saying %q and what to do", r, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "msg.coder")); err == nil {
				t.Error("the CLI ran anyway")
			}
		})
	}
}

// The stderr tail of a failed run starts after any secret the tail's
// start would split, so no piece of one is shown.
func TestHandoffStderrTailSplitsNoSecret(t *testing.T) {
	const secret = "s3cr3t-0123456789abcdefghijklmn" // 31 bytes
	dir := t.TempDir()
	// The last stderrTail bytes start 14 bytes into the secret.
	stderr := strings.Repeat("y", 100) + secret + strings.Repeat("x", stderrTail-len(secret)+14)
	writeFile(t, filepath.Join(dir, "stderr.txt"), stderr)
	bin := filepath.Join(dir, "openclaw")
	writeFile(t, bin, "#!/bin/sh\ncat '"+filepath.Join(dir, "stderr.txt")+"' >&2\nexit 1\n")
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	tg := newTestTarget(t, "n1", TargetConfig{OpenclawBin: bin, Agents: []schema.Agent{{ID: "coder"}}, Secrets: []string{secret}})
	r := serve(t, tg, schema.ToolHandoff, schema.HandoffArgs{Agent: "coder", Task: "x"})
	if !r.IsError || !strings.Contains(r.Text, "stderr (last lines):\nxxxx") {
		t.Fatalf("got %+v", r)
	}
	if strings.Contains(r.Text, secret[len(secret)-6:]) {
		t.Errorf("a piece of the secret survived the cut: %q", r.Text)
	}
}
