package remote

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
)

func TestExec(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	cases := []struct {
		name    string
		args    schema.ExecArgs
		isError bool
		want    []string
		exit    float64
	}{
		{"stdout stderr and exit code", schema.ExecArgs{Command: "echo hello; echo oops >&2; exit 3"}, false,
			[]string{"exit code 3", "--- stdout ---\nhello\n", "--- stderr ---\noops\n"}, 3},
		{"cwd defaults to the workspace", schema.ExecArgs{Command: "pwd"}, false, []string{dir + "\n"}, 0},
		{"relative cwd starts at the workspace", schema.ExecArgs{Command: "pwd", Cwd: "sub"}, false, []string{filepath.Join(dir, "sub") + "\n"}, 0},
		{"no output", schema.ExecArgs{Command: "true"}, false, []string{"exit code 0\n(no output)"}, 0},
		{"missing cwd", schema.ExecArgs{Command: "pwd", Cwd: "nope"}, true, []string{`working directory "` + filepath.Join(dir, "nope") + `" does not exist on node "n1"`}, 0},
		{"killed by a signal", schema.ExecArgs{Command: "kill -TERM $$"}, false, []string{"killed by signal terminated"}, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tg.exec(t.Context(), tc.args)
			if r.IsError != tc.isError {
				t.Fatalf("isError = %v, want %v: %s", r.IsError, tc.isError, r.Text)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.Text, w) {
					t.Errorf("result %q lacks %q", r.Text, w)
				}
			}
			if !tc.isError {
				d := detailsMap(t, r)
				if got := d["exitCode"]; got != tc.exit {
					t.Errorf("details exitCode = %v, want %v", got, tc.exit)
				}
				if d["timeoutMs"] != float64(DefaultExecTimeout.Milliseconds()) || DefaultExecTimeout != 120*time.Second {
					t.Errorf("without timeoutMs the limit is %vms, want the default 120000", d["timeoutMs"])
				}
			}
		})
	}
}

func TestExecOutputCap(t *testing.T) {
	p := openPolicy()
	p.MaxOutputBytes = 1000
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p})

	r := tg.exec(t.Context(), schema.ExecArgs{Command: "head -c 5000 /dev/zero | tr '\\0' a"})
	d := detailsMap(t, r)
	if r.IsError || d["stdoutBytes"] != 5000.0 || d["cutBytes"] != 4000.0 || d["truncated"] != true {
		t.Fatalf("details %v, isError %v", d, r.IsError)
	}
	if !strings.Contains(r.Text, strings.Repeat("a", 1000)+"\n[... 4000 bytes cut") || strings.Contains(r.Text, strings.Repeat("a", 1001)) {
		t.Errorf("stdout not cut at 1000 bytes with a note: %.200q...", r.Text)
	}

	// When both streams overflow, stderr keeps half of the budget.
	r = tg.exec(t.Context(), schema.ExecArgs{Command: "head -c 5000 /dev/zero | tr '\\0' o; head -c 5000 /dev/zero | tr '\\0' e >&2"})
	if strings.Count(r.Text, "o") < 500 || strings.Count(r.Text, "e") < 500 || strings.Contains(r.Text, strings.Repeat("e", 501)) {
		t.Errorf("the budget is not shared between stdout and stderr: %d o, %d e", strings.Count(r.Text, "o"), strings.Count(r.Text, "e"))
	}
	if d := detailsMap(t, r); d["cutBytes"] != 9000.0 {
		t.Errorf("cutBytes = %v, want 9000", d["cutBytes"])
	}
}

// A command that times out is killed together with every process it
// started, so nothing is left running on the node.
func TestExecTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	r := tg.exec(t.Context(), schema.ExecArgs{Command: "sleep 30 & echo $! > child; echo started; sleep 30", TimeoutMs: 300})
	if !r.IsError || !strings.Contains(r.Text, "timed out after 300ms") || !strings.Contains(r.Text, "started") {
		t.Fatalf("got %+v", r)
	}
	if d := detailsMap(t, r); d["timedOut"] != true {
		t.Errorf("details %v lack timedOut", d)
	}
	waitGone(t, readPid(t, filepath.Join(dir, "child")), "background child of a timed-out command")
}

// A command that exits normally does not wait for, nor leave behind, the
// background processes it started.
func TestExecKillsLeftoverChildren(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	done := make(chan Result, 1)
	go func() { done <- tg.exec(t.Context(), schema.ExecArgs{Command: "sleep 30 & echo $! > child; echo bye"}) }()
	select {
	case r := <-done:
		if r.IsError || !strings.Contains(r.Text, "bye") {
			t.Fatalf("got %+v", r)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("exec waited for its background child")
	}
	waitGone(t, readPid(t, filepath.Join(dir, "child")), "background child of a finished command")
}

func TestExecCancelKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan Result, 1)
	go func() { done <- tg.exec(ctx, schema.ExecArgs{Command: "sleep 30 & echo $! > child; sleep 30"}) }()
	child := readPid(t, filepath.Join(dir, "child"))
	cancel()
	r := <-done
	if !r.IsError || !strings.Contains(r.Text, "cancelled") {
		t.Fatalf("got %+v", r)
	}
	waitGone(t, child, "background child of a cancelled command")
}

func TestExecTimeoutCappedByPolicy(t *testing.T) {
	p := openPolicy()
	p.MaxTimeoutMs = 200
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p})
	r := tg.exec(t.Context(), schema.ExecArgs{Command: "sleep 30", TimeoutMs: 60000})
	if !r.IsError || !strings.Contains(r.Text, "lowered to 200") || detailsMap(t, r)["timeoutMs"] != 200.0 {
		t.Fatalf("got %+v", r)
	}
}

func TestTargetCloseKillsExec(t *testing.T) {
	dir := t.TempDir()
	tg, err := newTarget("n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	h := tg.handler(schema.ToolExec)
	done := make(chan error, 1)
	w := &recorder{}
	go func() {
		done <- h.ServeMesh(context.Background(), w, meshRequest("a", mustJSON(t, schema.ExecArgs{Node: "n1", Command: "sleep 30 & echo $! > child; sleep 30"})))
	}()
	child := readPid(t, filepath.Join(dir, "child"))
	tg.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitGone(t, child, "child of a command running when the target closed")
	if r := w.result(t); !r.IsError {
		t.Errorf("got %+v", r)
	}
}

// serve runs one request through the target's handler, as the mesh does,
// and returns the result the caller would get.
func serve(t *testing.T, tg *Target, tool string, args any) Result {
	t.Helper()
	w := &recorder{}
	if err := tg.handler(tool).ServeMesh(t.Context(), w, meshRequest("caller", mustJSON(t, args))); err != nil {
		t.Fatal(err)
	}
	return w.result(t)
}

// A secret spanning the output limit is not cut in two (which would leave a
// prefix the scrub cannot recognise): the cut moves before it, and the
// counts stay the command's own bytes.
func TestExecCutSplitsNoSecret(t *testing.T) {
	const secret = "s3cr3t-0123456789abcdefghijklmn" // 31 bytes
	a, b := strings.Repeat("a", 990), strings.Repeat("b", 100)
	cases := []struct {
		name   string
		output string
		stderr bool
		shown  string // what precedes the cut note
		cutAt  int    // bytes of the output shown (before scrubbing)
	}{
		{"stdout", a + secret + b, false, a, 990},
		{"stderr", a + secret + b, true, a, 990},
		{"whole secret before the cut", secret + a[:959] + secret + b, false, "[redacted]" + a[:959], 990},
		{"secret ends at the limit", a[:969] + secret + b, false, a[:969] + "[redacted]", 1000},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "out.txt"), []byte(tc.output), 0o644); err != nil {
				t.Fatal(err)
			}
			p := openPolicy()
			p.MaxOutputBytes = 1000
			tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, WorkspaceDir: dir, Secrets: []string{secret}})
			cmd, stream, bytesKey := "cat out.txt", "stdout", "stdoutBytes"
			if tc.stderr {
				cmd, stream, bytesKey = "cat out.txt >&2", "stderr", "stderrBytes"
			}
			r := serve(t, tg, schema.ToolExec, schema.ExecArgs{Node: "n1", Command: cmd})
			if strings.Contains(r.Text, secret[:6]) {
				t.Fatalf("a piece of the secret survived the cut: %q", r.Text)
			}
			cutBytes := len(tc.output) - tc.cutAt
			want := fmt.Sprintf("--- %s ---\n%s\n[... %d bytes cut", stream, tc.shown, cutBytes)
			if !strings.Contains(r.Text, want) {
				t.Errorf("result %q lacks %q", r.Text, want)
			}
			d := detailsMap(t, r)
			if d["cutBytes"] != float64(cutBytes) || d[bytesKey] != float64(len(tc.output)) {
				t.Errorf("details %v: want cutBytes %d of %d", d, cutBytes, len(tc.output))
			}
		})
	}
}

// A timeoutMs too large for a time.Duration is lowered to the limit, not
// overflowed into an instant timeout.
func TestExecHugeTimeoutLowered(t *testing.T) {
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy()})
	r := tg.exec(t.Context(), schema.ExecArgs{Command: "echo ok", TimeoutMs: 1 << 60})
	if r.IsError || !strings.Contains(r.Text, "it was lowered to 600000") || !strings.Contains(r.Text, "ok\n") {
		t.Fatalf("got %+v", r)
	}
	if d := detailsMap(t, r); d["timeoutMs"] != 600000.0 {
		t.Errorf("details %v", d)
	}
}
