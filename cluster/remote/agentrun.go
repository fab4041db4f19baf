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

	"github.com/clawmatrix/clawmatrix/schema"
)

// sendQueueWait bounds how long a cluster_send waits for a run slot.
const sendQueueWait = 10 * time.Minute

// Limits on what an `openclaw agent` run may print.
const (
	maxAgentStdout = 16 << 20
	stderrTail     = 2 << 10
)

// RunDetails are the details of a cluster_handoff or cluster_send result.
type RunDetails struct {
	Node       string `json:"node"`
	Agent      string `json:"agent"`
	RunID      string `json:"runId,omitempty"`
	DurationMs int64  `json:"durationMs,omitempty"`
	QueuedMs   int64  `json:"queuedMs,omitempty"`
	Truncated  bool   `json:"truncated,omitempty"`
	CutBytes   int    `json:"cutBytes,omitempty"`
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
// are going; it gives up when ctx ends.
func (t *Target) acquire(ctx context.Context) error {
	select {
	case t.slots <- struct{}{}:
		return nil
	default:
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
	return t.acquire(ctx)
}

func (t *Target) release() { <-t.slots }

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
	limit   time.Duration // the time limit as the caller gave it
	proc    *groupProc
	stdout  *limitedBuffer
	stderr  *tailBuffer
	started time.Time
}

// startRun starts `<openclawBin> agent --agent <id> --message <msg> --json`.
// --timeout tells the gateway to stop the turn at the same time we stop
// waiting for it.
func (t *Target) startRun(agent, message string, timeout, limit time.Duration) (*agentRun, error) {
	secs := int64((timeout + time.Second - 1) / time.Second)
	cmd := exec.Command(t.openclawBin, "agent", "--agent", agent, "--message", message, "--json",
		"--timeout", strconv.FormatInt(secs, 10))
	cmd.Dir = t.baseDir
	r := &agentRun{
		agent: agent, timeout: timeout, limit: limit,
		stdout:  &limitedBuffer{max: maxAgentStdout},
		stderr:  &tailBuffer{max: stderrTail},
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
		return "", "", fmt.Errorf("agent %q on node %q did not finish within %s and was stopped. "+
			"Split the task into smaller steps, or pass a larger timeoutMs", r.agent, t.nodeID, r.limit)
	}
	out := parseAgentOutput(r.stdout.buf)
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
		if tail := strings.TrimSpace(string(r.stderr.buf)); tail != "" {
			msg += "\nstderr (last lines):\n" + tail
		}
		return "", out.runID, errors.New(msg + "\nCheck that node's gateway and agent, or try another agent.")
	}
	if !out.parsed {
		if r.stdout.total > int64(r.stdout.max) {
			return "", "", fmt.Errorf("agent %q on node %q printed more than %d bytes, which is not a reply clawmatrix can return",
				r.agent, t.nodeID, r.stdout.max)
		}
		start, _ := cut(bytes.TrimSpace(r.stdout.buf), 200)
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

func parseAgentOutput(stdout []byte) agentOutput {
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
		out.errMsg = gatewayErrorText(data)
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

// handoff runs the task as one turn of the agent and returns its reply.
func (t *Target) handoff(ctx context.Context, from string, a schema.HandoffArgs) Result {
	agent, err := t.agentFor(a.Agent)
	if err != nil {
		return errorResult(err.Error())
	}
	timeout := DefaultRunTimeout
	if a.TimeoutMs > 0 {
		timeout = time.Duration(a.TimeoutMs) * time.Millisecond
	}
	// The time limit covers the wait for a run slot too: it is how long
	// the caller is prepared to wait in all.
	queued := time.Now()
	deadline := queued.Add(timeout)
	d := RunDetails{Node: t.nodeID, Agent: agent}
	if err := t.acquireBy(ctx, deadline); err != nil {
		if ctx.Err() != nil {
			return errorResult(fmt.Sprintf("the handoff to agent %q on node %q was cancelled while waiting for a free run slot "+
				"(the node runs at most %d at once)", agent, t.nodeID, cap(t.slots)))
		}
		return errorResult(fmt.Sprintf("agent %q on node %q never started: all %d run slots stayed busy for %s (timeoutMs). "+
			"Try again later, pass a larger timeoutMs, or pick an agent on another node.", agent, t.nodeID, cap(t.slots), timeout))
	}
	defer t.release()
	d.QueuedMs = time.Since(queued).Milliseconds()
	run, err := t.startRun(agent, agentMessage(a.Task, a.Context), time.Until(deadline), timeout)
	if err != nil {
		return errorResult(err.Error())
	}
	t.log.Info("handoff started", "agent", agent, "from", from)
	reply, runID, err := t.waitRun(ctx, run)
	d.RunID, d.DurationMs = runID, time.Since(run.started).Milliseconds()
	if err != nil {
		t.log.Warn("handoff failed", "agent", agent, "from", from, "error", t.redact.text(err.Error()))
		return Result{Text: err.Error(), Details: d, IsError: true}
	}
	t.log.Info("handoff finished", "agent", agent, "from", from, "durationMs", d.DurationMs)
	if reply == "" {
		return Result{Text: fmt.Sprintf("agent %q on node %q finished the task without a text reply.", agent, t.nodeID), Details: d}
	}
	reply, d.CutBytes = capText(reply, t.maxOutput)
	d.Truncated = d.CutBytes > 0
	return Result{Text: reply, Details: d}
}

// send starts a run for the message and returns once it is running; the run
// belongs to the Target (Close ends it) and its outcome goes to the log.
// While all run slots are busy, the caller waits for one.
func (t *Target) send(ctx context.Context, from string, a schema.SendArgs) Result {
	agent, err := t.agentFor(a.Agent)
	if err != nil {
		return errorResult(err.Error())
	}
	if !t.begin() {
		return errorResult(fmt.Sprintf("node %q is shutting down and takes no new messages; try again later", t.nodeID))
	}
	started := false
	defer func() {
		if !started {
			t.runs.Done()
		}
	}()
	queued := time.Now()
	if err := t.acquireBy(ctx, queued.Add(sendQueueWait)); err != nil {
		if ctx.Err() != nil {
			return errorResult(fmt.Sprintf("the message to agent %q on node %q was not delivered: cancelled while waiting for "+
				"a free run slot (the node runs at most %d at once)", agent, t.nodeID, cap(t.slots)))
		}
		return errorResult(fmt.Sprintf("the message to agent %q on node %q was not delivered: all %d run slots stayed busy for %s. "+
			"Try again later.", agent, t.nodeID, cap(t.slots), sendQueueWait))
	}
	run, err := t.startRun(agent, a.Message, DefaultRunTimeout, DefaultRunTimeout)
	if err != nil {
		t.release()
		return errorResult(err.Error())
	}
	started = true
	go func() {
		defer t.runs.Done()
		defer t.release()
		reply, runID, err := t.waitRun(t.ctx, run)
		dur := time.Since(run.started).Milliseconds()
		if err != nil {
			t.log.Warn("cluster_send run failed", "agent", agent, "from", from, "runId", runID, "durationMs", dur,
				"error", t.redact.text(err.Error()))
			return
		}
		t.log.Info("cluster_send run finished", "agent", agent, "from", from, "runId", runID, "durationMs", dur,
			"replyBytes", len(reply))
	}()
	return Result{
		Text: fmt.Sprintf("message delivered: agent %q on node %q is now running it. No reply comes back from cluster_send "+
			"(the outcome is logged on %q); use cluster_handoff when you need the answer.", agent, t.nodeID, t.nodeID),
		Details: RunDetails{Node: t.nodeID, Agent: agent, QueuedMs: time.Since(queued).Milliseconds()},
	}
}
