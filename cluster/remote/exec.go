package remote

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
)

// ExecDetails are the details of a cluster_exec result.
type ExecDetails struct {
	Node        string `json:"node"`
	Cwd         string `json:"cwd"`
	ExitCode    int    `json:"exitCode"`
	Signal      string `json:"signal,omitempty"`
	TimedOut    bool   `json:"timedOut,omitempty"`
	TimeoutMs   int64  `json:"timeoutMs"`
	DurationMs  int64  `json:"durationMs"`
	StdoutBytes int64  `json:"stdoutBytes"`
	StderrBytes int64  `json:"stderrBytes"`
	Truncated   bool   `json:"truncated,omitempty"`
	CutBytes    int64  `json:"cutBytes,omitempty"`
}

// exec runs a.Command with sh -c in its own process group. A command that
// ran to the end is a normal result whatever its exit code (the agent reads
// the code); one that could not start or hit its timeout is a tool error.
func (t *Target) exec(ctx context.Context, a schema.ExecArgs) Result {
	if err := checkPolicy(t.policy, t.nodeID, "exec"); err != nil {
		return errorResult(err.Error())
	}
	timeout, lowered := clampTimeout(a.TimeoutMs, DefaultExecTimeout, t.maxTimeout)
	capNote := ""
	if lowered {
		capNote = fmt.Sprintf("[timeoutMs %d is above node %q's limit; it was lowered to %d (toolProxy.maxTimeoutMs)]\n",
			a.TimeoutMs, t.nodeID, t.maxTimeout.Milliseconds())
	}
	root, rel, cwd, err := t.locate(a.Cwd)
	if err != nil {
		return errorResult(t.pathError("run a command in", cwd, err))
	}
	if fi, err := root.root.Stat(rel); escapes(err) {
		return errorResult(t.pathError("run a command in", cwd, err))
	} else if err != nil || !fi.IsDir() {
		return errorResult(fmt.Sprintf("working directory %q does not exist on node %q (or is not a directory); "+
			"pass an existing cwd, or leave it out to use the node's workspace %q", cwd, t.nodeID, t.baseDir))
	}

	select {
	case t.execSlots <- struct{}{}:
		defer func() { <-t.execSlots }()
	default:
		return errorResult(fmt.Sprintf("node %q is already running %d commands for the cluster, its limit (toolProxy.maxConcurrent); "+
			"try again in a moment", t.nodeID, cap(t.execSlots)))
	}

	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.Command("sh", "-c", a.Command)
	cmd.Dir = cwd
	cmd.Env = t.commandEnv()
	// The buffers hold a little more than can be shown, so that the cut can
	// be placed where it splits no secret.
	stdout := &limitedBuffer{max: t.maxOutput + t.redact.lookahead()}
	stderr := &limitedBuffer{max: t.maxOutput + t.redact.lookahead()}
	start := time.Now()
	p, err := startGroup(cmd, stdout, stderr)
	if err != nil {
		return errorResult(fmt.Sprintf("node %q could not start the command: %v", t.nodeID, err))
	}
	waitErr := p.wait(runCtx)
	exit := exitOf(p, waitErr)

	d := ExecDetails{
		Node: t.nodeID, Cwd: cwd, ExitCode: exit.Code, Signal: exit.Signal,
		TimeoutMs: timeout.Milliseconds(), DurationMs: time.Since(start).Milliseconds(),
		StdoutBytes: stdout.total, StderrBytes: stderr.total,
	}
	body, cutBytes := t.formatOutput(stdout, stderr)
	d.Truncated, d.CutBytes = cutBytes > 0, cutBytes

	switch {
	case ctx.Err() != nil:
		return Result{Text: "the command was cancelled and killed (with every process it started)", Details: d, IsError: true}
	case errors.Is(runCtx.Err(), context.DeadlineExceeded):
		d.TimedOut = true
		return Result{
			Text: capNote + fmt.Sprintf("the command timed out after %s on node %q and was killed with every process it started. "+
				"Pass a larger timeoutMs (node's limit: %d), or run long jobs in the background with output to a file.\n%s",
				timeout, t.nodeID, t.maxTimeout.Milliseconds(), body),
			Details: d, IsError: true,
		}
	}
	status := fmt.Sprintf("exit code %d", exit.Code)
	if exit.Signal != "" {
		status = "killed by signal " + exit.Signal
	}
	return Result{Text: capNote + status + "\n" + body, Details: d}
}

// commandEnv is the environment of an exec command: enough for a shell to
// work, plus the variables toolProxy.env names. Everything else in the
// node's environment (the gateway's API keys, tokens) stays out, so that a
// command cannot print it in any encoding the output scrub would miss.
func (t *Target) commandEnv() []string {
	env := make([]string, 0, 5+len(t.policy.Env))
	set := func(name, value string) {
		if value != "" {
			env = append(env, name+"="+value)
		}
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	set("PATH", path)
	home, _ := os.UserHomeDir()
	set("HOME", home)
	lang := os.Getenv("LANG")
	if lang == "" {
		lang = "C.UTF-8"
	}
	set("LANG", lang)
	set("USER", os.Getenv("USER"))
	set("TMPDIR", os.Getenv("TMPDIR"))
	for _, name := range t.policy.Env {
		if v, ok := os.LookupEnv(name); ok {
			env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
			env = append(env, name+"="+v)
		}
	}
	return env
}

// clampTimeout is the time limit for a caller's timeoutMs: def when none is
// given, and never more than limit; lowered says the caller asked for more.
// It compares in milliseconds, so a huge timeoutMs cannot overflow.
func clampTimeout(timeoutMs int, def, limit time.Duration) (timeout time.Duration, lowered bool) {
	if timeoutMs <= 0 {
		return min(def, limit), false
	}
	if int64(timeoutMs) > limit.Milliseconds() {
		return limit, true
	}
	return time.Duration(timeoutMs) * time.Millisecond, false
}

// formatOutput lays out stdout and stderr within maxOutputBytes. When both
// don't fit, stderr keeps at least half the budget (errors matter most) and
// stdout gets the rest. Each stream is cut where no secret is split, then
// scrubbed; the counts are the command's own bytes, like stdoutBytes and
// stderrBytes. It returns the text and the number of bytes cut.
func (t *Target) formatOutput(stdout, stderr *limitedBuffer) (string, int64) {
	budget := int64(t.maxOutput)
	outShare, errShare := stdout.total, stderr.total
	if outShare+errShare > budget {
		errShare = min(stderr.total, max(budget/2, budget-stdout.total))
		outShare = min(stdout.total, budget-errShare)
	}
	var b strings.Builder
	var cutTotal int64
	section := func(name string, buf *limitedBuffer, share int64) {
		if buf.total == 0 {
			return
		}
		c := t.redact.cutPoint(buf.buf, int(share))
		kept := t.redact.bytes(buf.buf[:c])
		dropped := buf.total - int64(c)
		cutTotal += dropped
		fmt.Fprintf(&b, "--- %s ---\n%s", name, kept)
		if dropped > 0 {
			b.WriteString(cutNote(dropped, t.maxOutput))
		}
		if !strings.HasSuffix(b.String(), "\n") {
			b.WriteByte('\n')
		}
	}
	section("stdout", stdout, outShare)
	section("stderr", stderr, errShare)
	if b.Len() == 0 {
		return "(no output)", 0
	}
	return b.String(), cutTotal
}
