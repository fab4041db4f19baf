package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Limits on what an `openclaw agent` run may print.
const (
	maxAgentStdout = 16 << 20
	stderrTail     = 2 << 10
)

// maxMessageBytes is the longest message a handoff or send can carry. The
// message is a single argument of the `openclaw agent` command, and Linux
// refuses one argument of MAX_ARG_STRLEN (128 KiB, counting its terminating
// NUL) or more with "argument list too long".
const maxMessageBytes = 128<<10 - 1

// runTimeoutLimit is the most a handoff's timeoutMs may ask for on this node:
// toolProxy.maxTimeoutMs, the node's bound on every caller-given time limit
// (exec clamps to it too), but never below DefaultRunTimeout, so that a short
// limit meant for commands does not cut a handoff's default time. Agent runs
// do not need the tool proxy enabled; only this bound is shared with it.
func (t *Target) runTimeoutLimit() time.Duration {
	return max(t.maxTimeout, DefaultRunTimeout)
}

// checkMessage refuses a message too long to pass to `openclaw agent`.
func (t *Target) checkMessage(agent, what string, n int, fix string) error {
	if n <= maxMessageBytes {
		return nil
	}
	return fmt.Errorf("node %q cannot pass a %d-byte %s to agent %q: one agent message can hold at most %d bytes "+
		"(it goes to `openclaw agent` as a single command-line argument, which Linux limits to 128 KiB). %s",
		t.nodeID, n, what, agent, maxMessageBytes, fix)
}

// RunDetails are the details of a cluster_handoff or cluster_send result.
type RunDetails struct {
	Node  string `json:"node"`
	Agent string `json:"agent"`
	RunID string `json:"runId,omitempty"`
	// TimeoutMs is the run's time limit; RequestedTimeoutMs is what the
	// caller asked for, when the node lowered it to its limit.
	TimeoutMs          int64 `json:"timeoutMs,omitempty"`
	RequestedTimeoutMs int64 `json:"requestedTimeoutMs,omitempty"`
	DurationMs         int64 `json:"durationMs,omitempty"`
	QueuedMs           int64 `json:"queuedMs,omitempty"`
	Truncated          bool  `json:"truncated,omitempty"`
	CutBytes           int   `json:"cutBytes,omitempty"`
}

// agentFor picks the agent a run goes to: the requested one, which the node
// must offer, or else the node's first agent.
func (t *Target) agentFor(requested string) (string, error) {
	if len(t.agents) == 0 {
		return "", fmt.Errorf("node %q offers no agents, so it cannot take handoffs or messages. "+
			"Use cluster_peers to find a node with agents, or cluster_exec for single commands on %q", t.nodeID, t.nodeID)
	}
	if requested == "" {
		return t.agents[0].ID, nil
	}
	ids := make([]string, len(t.agents))
	for i, a := range t.agents {
		if a.ID == requested {
			return a.ID, nil
		}
		ids[i] = a.ID
	}
	return "", fmt.Errorf("node %q has no agent %q; its agents: %s", t.nodeID, requested, strings.Join(ids, ", "))
}

// acquire takes a run slot, waiting in line while MaxConcurrentRuns runs
// are going; it gives up when ctx ends. With counted, the wait counts in
// Runs.
func (t *Target) acquire(ctx context.Context, counted bool) error {
	select {
	case t.slots <- struct{}{}:
		t.loadChanged()
		return nil
	default:
	}
	if counted {
		t.waiting.Add(1)
		t.loadChanged()
		defer func() {
			t.waiting.Add(-1)
			t.loadChanged()
		}()
	}
	select {
	case t.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// acquireBy is acquire with a deadline.
func (t *Target) acquireBy(ctx context.Context, deadline time.Time) error {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	return t.acquire(ctx, true)
}

func (t *Target) release() {
	<-t.slots
	t.loadChanged()
}

// AcquireRun waits for a free run slot (shared with handoffs that wait for
// their answer), for a run started with StartMessage or StartTask. Its
// wait does not count in Runs: the inbox counts its messages itself.
func (t *Target) AcquireRun(ctx context.Context) (release func(), err error) {
	if err := t.acquire(ctx, false); err != nil {
		return nil, err
	}
	return t.release, nil
}

func (t *Target) loadChanged() {
	if t.onLoad != nil {
		t.onLoad()
	}
}

// Runs reports the agent runs going on this node and the handoffs that
// wait for their answer and for a run slot (messages waiting in the
// durable inbox are counted by package delivery).
func (t *Target) Runs() (running, waiting int) {
	return len(t.slots), int(t.waiting.Load())
}

// agentMessage is what the remote agent reads: the task, then the context.
func agentMessage(task, context string) string {
	if strings.TrimSpace(context) == "" {
		return task
	}
	return task + "\n\nContext:\n" + context
}

// agentRun is one started `openclaw agent` process.
type agentRun struct {
	agent   string
	timeout time.Duration // what is left of the time limit
	limit   time.Duration // the time limit of the run
	ceiling time.Duration // the most a caller may ask for on this node
	proc    *groupProc
	stdout  *limitedBuffer
	stderr  *tailBuffer
	started time.Time
}

// startRun starts `<openclawBin> agent --agent <id> --message <msg> --json`.
// --timeout tells the gateway to stop the turn at the same time we stop
// waiting for it.
func (t *Target) startRun(agent, message string, timeout, limit, ceiling time.Duration) (*agentRun, error) {
	secs := int64((timeout + time.Second - 1) / time.Second)
	cmd := exec.Command(t.openclawBin, "agent", "--agent", agent, "--message", message, "--json",
		"--timeout", strconv.FormatInt(secs, 10))
	cmd.Dir = t.baseDir
	r := &agentRun{
		agent: agent, timeout: timeout, limit: limit, ceiling: ceiling,
		stdout: &limitedBuffer{max: maxAgentStdout},
		// A little more than the tail shown, so that it can start where it
		// splits no secret.
		stderr:  &tailBuffer{max: stderrTail + t.redact.lookahead()},
		started: time.Now(),
	}
	p, err := startGroup(cmd, r.stdout, r.stderr)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("node %q cannot run agents: the OpenClaw CLI %q was not found there. "+
				"Set openclawBin in that node's clawmatrix config to the openclaw executable", t.nodeID, t.openclawBin)
		}
		return nil, fmt.Errorf("node %q could not start agent %q: %v", t.nodeID, agent, err)
	}
	r.proc = p
	return r, nil
}

// waitRun waits for the run to end (killing its process group when ctx ends
// or the timeout passes) and returns the agent's reply text.
func (t *Target) waitRun(ctx context.Context, r *agentRun) (reply, runID string, err error) {
	runCtx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	waitErr := r.proc.wait(runCtx)
	switch {
	case ctx.Err() != nil:
		return "", "", fmt.Errorf("the run of agent %q on node %q was cancelled and stopped", r.agent, t.nodeID)
	case errors.Is(runCtx.Err(), context.DeadlineExceeded):
		hint := "Split the task into smaller steps"
		if r.limit < r.ceiling {
			hint += fmt.Sprintf(", or pass a larger timeoutMs (node's limit: %d)", r.ceiling.Milliseconds())
		} else {
			hint += fmt.Sprintf(" (%d ms is node %q's limit for agent runs)", r.ceiling.Milliseconds(), t.nodeID)
		}
		return "", "", fmt.Errorf("agent %q on node %q did not finish within %s and was stopped. %s",
			r.agent, t.nodeID, r.limit, hint)
	}
	out := parseAgentOutput(r.stdout.buf, t.redact)
	exit := exitOf(r.proc, waitErr)
	if exit.Code != 0 || waitErr != nil || (out.parsed && out.failed) {
		msg := fmt.Sprintf("agent %q on node %q failed", r.agent, t.nodeID)
		if exit.Signal != "" {
			msg += " (killed by signal " + exit.Signal + ")"
		} else if exit.Code != 0 {
			msg += fmt.Sprintf(" (exit code %d)", exit.Code)
		}
		if out.errMsg != "" {
			msg += ": " + out.errMsg
		}
		if tail := strings.TrimSpace(string(t.redact.tail(r.stderr.buf, stderrTail))); tail != "" {
			msg += "\nstderr (last lines):\n" + tail
		}
		return "", out.runID, errors.New(msg + "\nCheck that node's gateway and agent, or try another agent.")
	}
	if !out.parsed {
		if r.stdout.total > int64(r.stdout.max) {
			return "", "", fmt.Errorf("agent %q on node %q printed more than %d bytes, which is not a reply clawmatrix can return",
				r.agent, t.nodeID, r.stdout.max)
		}
		// Scrubbed before it is quoted: quoting would change how a secret
		// holding quotes or backslashes reads.
		b := bytes.TrimSpace(r.stdout.buf)
		start := t.redact.bytes(b[:t.redact.cutPoint(b, 200)])
		return "", "", fmt.Errorf("agent %q on node %q finished, but its output is not the JSON `openclaw agent --json` prints, "+
			"so there is no reply to return (is openclawBin %q really the OpenClaw CLI?). Output began: %q",
			r.agent, t.nodeID, t.openclawBin, start)
	}
	return out.reply, out.runID, nil
}

// agentOutput is what was understood of `openclaw agent --json` output:
// {runId, status, result: {payloads: [{text}]}} on success,
// {ok: false, error: {message}} on failure.
type agentOutput struct {
	parsed, failed bool
	reply, runID   string
	errMsg         string
}

func parseAgentOutput(stdout []byte, r redactor) agentOutput {
	var v struct {
		OK     *bool  `json:"ok"`
		RunID  string `json:"runId"`
		Status string `json:"status"`
		Result *struct {
			Payloads []struct {
				Text string `json:"text"`
			} `json:"payloads"`
		} `json:"result"`
		Error json.RawMessage `json:"error"`
	}
	// The JSON document may follow log lines; try each line that opens an
	// object, first to last.
	data := bytes.TrimSpace(stdout)
	decoded := false
	for tries := 0; len(data) > 0 && tries < 64; tries++ {
		if data[0] == '{' && json.Unmarshal(data, &v) == nil {
			decoded = true
			break
		}
		i := bytes.Index(data, []byte("\n{"))
		if i < 0 {
			break
		}
		data = data[i+1:]
	}
	if !decoded {
		return agentOutput{}
	}
	out := agentOutput{runID: v.RunID}
	switch {
	case v.OK != nil && !*v.OK, len(v.Error) > 0 && string(v.Error) != "null":
		out.parsed, out.failed = true, true
		out.errMsg = gatewayErrorText(data, r)
	case v.Result != nil:
		out.parsed = true
		var texts []string
		for _, p := range v.Result.Payloads {
			if strings.TrimSpace(p.Text) != "" {
				texts = append(texts, p.Text)
			}
		}
		out.reply = strings.Join(texts, "\n\n")
		if v.Status != "" && v.Status != "ok" {
			out.failed = true
			out.errMsg = "the run ended with status " + strconv.Quote(v.Status)
		}
	}
	return out
}

// task is a checked handoff, ready to run.
type task struct {
	agent, message   string
	timeout, ceiling time.Duration
	d                RunDetails
	note             string // says the time limit was lowered
}

// prepareTask checks a handoff's agent and message and works out its time
// limit.
func (t *Target) prepareTask(a schema.HandoffArgs) (task, error) {
	agent, err := t.agentFor(a.Agent)
	if err != nil {
		return task{}, err
	}
	message := agentMessage(a.Task, a.Context)
	if err := t.checkMessage(agent, "task and context", len(message), fmt.Sprintf(
		"Shorten the task, or write the context to a file on node %q with cluster_write and give its path in the task.",
		t.nodeID)); err != nil {
		return task{}, err
	}
	ceiling := t.runTimeoutLimit()
	timeout, lowered := clampTimeout(a.TimeoutMs, DefaultRunTimeout, ceiling)
	tk := task{agent: agent, message: message, timeout: timeout, ceiling: ceiling,
		d: RunDetails{Node: t.nodeID, Agent: agent, TimeoutMs: timeout.Milliseconds()}}
	if lowered {
		tk.d.RequestedTimeoutMs = int64(a.TimeoutMs)
		tk.note = fmt.Sprintf("[timeoutMs %d is above node %q's limit for agent runs; it was lowered to %d "+
			"(toolProxy.maxTimeoutMs, but at least the default %d)]\n",
			a.TimeoutMs, t.nodeID, ceiling.Milliseconds(), DefaultRunTimeout.Milliseconds())
	}
	return tk, nil
}

// handoff runs the task as one turn of the agent and returns its reply,
// waiting for a run slot first.
func (t *Target) handoff(ctx context.Context, from string, a schema.HandoffArgs) Result {
	tk, err := t.prepareTask(a)
	if err != nil {
		return errorResult(err.Error())
	}
	// The time limit covers the wait for a run slot too: it is how long
	// the caller is prepared to wait in all.
	queued := time.Now()
	deadline := queued.Add(tk.timeout)
	if err := t.acquireBy(ctx, deadline); err != nil {
		if ctx.Err() != nil {
			return errorResult(fmt.Sprintf("the handoff to agent %q on node %q was cancelled while waiting for a free run slot "+
				"(the node runs at most %d at once)", tk.agent, t.nodeID, cap(t.slots)))
		}
		return errorResult(fmt.Sprintf("agent %q on node %q never started: all %d run slots stayed busy for %s (timeoutMs). "+
			"Try again later, pass a larger timeoutMs (node's limit: %d), use wait: false to queue it, or pick an agent on another node.",
			tk.agent, t.nodeID, cap(t.slots), tk.timeout, tk.ceiling.Milliseconds()))
	}
	defer t.release()
	return t.startTask(ctx, from, tk, queued, deadline)()
}

// StartTask starts a handoff's run, with a run slot already held (see
// AcquireRun), and returns once the agent process runs; wait waits for its
// reply. Its time limit counts from the start.
func (t *Target) StartTask(ctx context.Context, from string, a schema.HandoffArgs) (wait func() Result) {
	tk, err := t.prepareTask(a)
	if err != nil {
		return func() Result { return errorResult(err.Error()) }
	}
	ctx, done, err := t.owned(ctx)
	if err != nil {
		return func() Result { return errorResult(err.Error()) }
	}
	now := time.Now()
	w := t.startTask(ctx, from, tk, now, now.Add(tk.timeout))
	return func() Result {
		defer done()
		return t.redact.result(w())
	}
}

// owned makes a run the target's: it ends when ctx ends or the target
// closes, and Close waits for it (until done is called).
func (t *Target) owned(ctx context.Context) (context.Context, func(), error) {
	if !t.begin() {
		return nil, nil, fmt.Errorf("node %q is shutting down and starts no runs; the message is tried again after its restart", t.nodeID)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(t.ctx, cancel)
	return ctx, func() {
		stop()
		cancel()
		t.runs.Done()
	}, nil
}

// startTask starts the run and returns the wait for its reply; it fills
// in the details as it goes.
func (t *Target) startTask(ctx context.Context, from string, tk task, queued, deadline time.Time) func() Result {
	d := tk.d
	d.QueuedMs = time.Since(queued).Milliseconds()
	finish := func(res Result) Result {
		res.Text = tk.note + res.Text
		res.Details = d
		return res
	}
	run, err := t.startRun(tk.agent, tk.message, time.Until(deadline), tk.timeout, tk.ceiling)
	if err != nil {
		return func() Result { return finish(errorResult(err.Error())) }
	}
	t.log.Info("handoff started", "agent", tk.agent, "from", from)
	return func() Result {
		reply, runID, err := t.waitRun(ctx, run)
		d.RunID, d.DurationMs = runID, time.Since(run.started).Milliseconds()
		if err != nil {
			t.log.Warn("handoff failed", "agent", tk.agent, "from", from, "error", t.redact.text(err.Error()))
			return finish(errorResult(err.Error()))
		}
		t.log.Info("handoff finished", "agent", tk.agent, "from", from, "durationMs", d.DurationMs)
		if reply == "" {
			return finish(Result{Text: fmt.Sprintf("agent %q on node %q finished the task without a text reply.", tk.agent, t.nodeID)})
		}
		reply, d.CutBytes = t.redact.capText(reply, t.maxOutput)
		d.Truncated = d.CutBytes > 0
		return finish(Result{Text: reply})
	}
}

// StartMessage starts a cluster_send message's run, with a run slot
// already held (see AcquireRun), and returns once the agent process runs;
// wait waits for it to end. The reply is not passed on (a send has none):
// the result says how the run ended.
func (t *Target) StartMessage(ctx context.Context, from string, a schema.SendArgs) (wait func() Result) {
	agent, err := t.agentFor(a.Agent)
	if err == nil {
		err = t.checkMessage(agent, "message", len(a.Message), fmt.Sprintf(
			"Shorten the message, or write the long part to a file on node %q with cluster_write and give its path in the message.",
			t.nodeID))
	}
	if err != nil {
		return func() Result { return errorResult(err.Error()) }
	}
	ctx, done, err := t.owned(ctx)
	if err != nil {
		return func() Result { return errorResult(err.Error()) }
	}
	run, err := t.startRun(agent, a.Message, DefaultRunTimeout, DefaultRunTimeout, DefaultRunTimeout)
	if err != nil {
		done()
		return func() Result { return errorResult(err.Error()) }
	}
	return func() Result {
		defer done()
		reply, runID, err := t.waitRun(ctx, run)
		d := RunDetails{Node: t.nodeID, Agent: agent, RunID: runID, DurationMs: time.Since(run.started).Milliseconds()}
		if err != nil {
			t.log.Warn("cluster_send run failed", "agent", agent, "from", from, "runId", runID, "durationMs", d.DurationMs,
				"error", t.redact.text(err.Error()))
			return t.redact.result(Result{Text: err.Error(), IsError: true, Details: d})
		}
		t.log.Info("cluster_send run finished", "agent", agent, "from", from, "runId", runID, "durationMs", d.DurationMs,
			"replyBytes", len(reply))
		return Result{Text: fmt.Sprintf("agent %q on node %q handled the message (its reply stays on that node).", agent, t.nodeID), Details: d}
	}
}

// Admit checks, when a message for one of this node's agents arrives,
// that this node takes it: the caller passes allowFrom, the agent is one
// of this node's, and the arguments are valid for the tool.
func (t *Target) Admit(from, tool, agent string, args []byte) error {
	if err := t.checkCaller(from); err != nil {
		var re *mesh.RemoteError
		if errors.As(err, &re) {
			return errors.New(re.Message)
		}
		return err
	}
	if _, err := t.agentFor(agent); err != nil {
		return err
	}
	if _, problems := schema.DecodeToolCall(tool, args); len(problems) > 0 {
		return fmt.Errorf("node %q refused %s: invalid arguments: %s", t.nodeID, tool, formatProblems(problems))
	}
	return nil
}

// RunSessionTurn adds text to an OpenClaw session on this node as a new
// turn: `<openclawBin> agent --session-key <key> [--agent <id>] --message
// <text> --json`, through the running gateway. It returns nil once the
// gateway took the turn (even when the agent's reply then failed: the text
// is in the session); an error means it did not get there.
func (t *Target) RunSessionTurn(ctx context.Context, sessionKey, agentID, text string) error {
	args := []string{"agent", "--session-key", sessionKey}
	if agentID != "" {
		args = append(args, "--agent", agentID)
	}
	timeout := DefaultRunTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	secs := int64((timeout + time.Second - 1) / time.Second)
	args = append(args, "--message", text, "--json", "--timeout", strconv.FormatInt(secs, 10))
	cmd := exec.Command(t.openclawBin, args...)
	cmd.Dir = t.baseDir
	run := &agentRun{agent: agentID, timeout: timeout, limit: timeout, ceiling: timeout,
		stdout: &limitedBuffer{max: maxAgentStdout}, stderr: &tailBuffer{max: stderrTail + t.redact.lookahead()}, started: time.Now()}
	p, err := startGroup(cmd, run.stdout, run.stderr)
	if err != nil {
		return fmt.Errorf("could not start %q: %v", t.openclawBin, err)
	}
	run.proc = p
	_, runID, err := t.waitRun(ctx, run)
	if err != nil && runID == "" {
		return err
	}
	return nil
}
