package remote

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
)

// A command sees none of the node's secrets in its environment, whatever
// encoding it prints them in: only PATH, HOME, LANG, USER, TMPDIR and what
// toolProxy.env names reach it.
func TestExecEnvironmentHoldsNoSecrets(t *testing.T) {
	const (
		apiKey   = "sk-ant-gateway-key-0123456789"
		proxyKey = "cmx-proxy-key-0123456789abcdef"
		shared   = "value-the-owner-shares"
	)
	t.Setenv("ANTHROPIC_API_KEY", apiKey)
	t.Setenv("OPENCLAW_GATEWAY_TOKEN", "gateway-token-0123456789")
	t.Setenv(schema.ProxyKeyEnv, proxyKey)
	t.Setenv("SHARED_SETTING", shared)
	p := openPolicy()
	p.Env = []string{"SHARED_SETTING"}
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, Secrets: []string{proxyKey}})

	cases := []struct {
		name, command string
		decode        func(string) string
	}{
		{"env", "env", func(s string) string { return s }},
		{"env | base64", "env | base64 -w0", func(s string) string {
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
			if err != nil {
				t.Fatalf("output is not base64: %v", err)
			}
			return string(b)
		}},
		{"env | rev", "env | rev", func(s string) string {
			var lines []string
			for _, l := range strings.Split(s, "\n") {
				r := []rune(l)
				for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
					r[i], r[j] = r[j], r[i]
				}
				lines = append(lines, string(r))
			}
			return strings.Join(lines, "\n")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tg.exec(t.Context(), schema.ExecArgs{Command: tc.command})
			if r.IsError {
				t.Fatal(r.Text)
			}
			out := strings.TrimPrefix(strings.SplitN(r.Text, "--- stdout ---\n", 2)[1], "")
			out = strings.SplitN(out, "--- stderr ---", 2)[0]
			env := tc.decode(out)
			for _, leak := range []string{apiKey, proxyKey, "gateway-token-0123456789", "ANTHROPIC_API_KEY", schema.ProxyKeyEnv + "="} {
				if strings.Contains(env, leak) {
					t.Errorf("the command saw %q:\n%s", leak, env)
				}
			}
			for _, want := range []string{"PATH=", "HOME=", "LANG=", "SHARED_SETTING=" + shared} {
				if !strings.Contains(env, want) {
					t.Errorf("the command lacks %q:\n%s", want, env)
				}
			}
		})
	}
}

// Commands beyond toolProxy.maxConcurrent are refused with a request to
// try again, and the slot is free again once a command ends.
func TestExecConcurrencyCap(t *testing.T) {
	p := openPolicy()
	p.MaxConcurrent = 2
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, WorkspaceDir: dir})
	release := filepath.Join(dir, "go")
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Go(func() {
			r := tg.exec(t.Context(), schema.ExecArgs{Command: fmt.Sprintf("echo up > started%d; while [ ! -e go ]; do sleep 0.02; done", i)})
			if r.IsError {
				t.Errorf("a command within the cap failed: %s", r.Text)
			}
		})
	}
	waitFile(t, filepath.Join(dir, "started0"))
	waitFile(t, filepath.Join(dir, "started1"))
	r := tg.exec(t.Context(), schema.ExecArgs{Command: "touch third"})
	if !r.IsError || !strings.Contains(r.Text, "toolProxy.maxConcurrent") || !strings.Contains(r.Text, "try again") {
		t.Errorf("a third command: got %+v, want a refusal asking to try again", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "third")); err == nil {
		t.Error("the refused command ran")
	}
	writeFile(t, release, "go")
	wg.Wait()
	if r := tg.exec(t.Context(), schema.ExecArgs{Command: "true"}); r.IsError {
		t.Errorf("after the others ended: %s", r.Text)
	}
}

// Nothing a command starts outlives it: processes that left its process
// group with setsid die with it when it times out or ends.
func TestExecKillsEveryDescendant(t *testing.T) {
	cases := []struct {
		name, command string
		timeout       int
	}{
		{"setsid child of a timed-out command", "setsid sleep 300 & echo $! > pid; sleep 300", 300},
		{"setsid grandchild whose parent exited, timed out", "(setsid sleep 300 & echo $! > pid); sleep 300", 300},
		{"setsid child of a command that ended", "setsid sleep 300 & echo $! > pid", 0},
		{"setsid child holding the output pipes", "setsid sh -c 'echo $$ > pid; exec sleep 300'  & sleep 300", 300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
			start := time.Now()
			r := tg.exec(t.Context(), schema.ExecArgs{Command: tc.command, TimeoutMs: tc.timeout})
			if tc.timeout > 0 && (!r.IsError || !strings.Contains(r.Text, "timed out")) {
				t.Fatalf("got %+v, want a timeout", r)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("the command took %v to end", d)
			}
			pid, err := strconv.Atoi(strings.TrimSpace(waitFile(t, filepath.Join(dir, "pid"))))
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(2 * time.Second)
			for alive(pid) {
				if time.Now().After(deadline) {
					syscall.Kill(pid, syscall.SIGKILL)
					t.Fatalf("process %d outlived its command", pid)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// allowFrom applies to every method a target serves, tools and agent runs
// alike, by node id or by a tag the caller announces.
func TestTargetAllowFrom(t *testing.T) {
	dir := t.TempDir()
	tags := map[string][]string{"ops": {"trusted"}, "evil": {"untrusted"}}
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir,
		OpenclawBin: fakeOpenclaw(t, dir), Agents: []schema.Agent{{ID: "coder"}},
		AllowFrom: []string{"laptop", "tag:trusted"}, CallerTags: func(id string) []string { return tags[id] }})
	calls := []struct {
		tool string
		args any
	}{
		{schema.ToolExec, schema.ExecArgs{Node: "n1", Command: "echo ran >> ran"}},
		{schema.ToolRead, schema.ReadArgs{Node: "n1", Path: "x"}},
		{schema.ToolWrite, schema.WriteArgs{Node: "n1", Path: "ran", Content: "x"}},
		{schema.ToolTool, schema.ToolArgs{Node: "n1", Tool: "web_fetch"}},
		{schema.ToolHandoff, schema.HandoffArgs{Agent: "coder", Task: "t"}},
	}
	for _, c := range calls {
		for _, caller := range []struct {
			from string
			ok   bool
		}{{"laptop", true}, {"ops", true}, {"evil", false}, {"stranger", false}} {
			if caller.ok {
				continue // the executors' own tests cover what runs
			}
			// Messages that do not wait are checked by Admit when they arrive.
			if err := tg.Admit(caller.from, schema.ToolSend, "coder", mustJSON(t, schema.SendArgs{Agent: "coder", Message: "m"})); err == nil ||
				!strings.Contains(err.Error(), "allowFrom") {
				t.Errorf("Admit of a message from %q: %v, want a refusal naming allowFrom", caller.from, err)
			}
			err := tg.handler(c.tool).ServeMesh(t.Context(), &recorder{}, meshRequest(caller.from, mustJSON(t, c.args)))
			if err == nil || !strings.Contains(err.Error(), "allowFrom") || !strings.Contains(err.Error(), caller.from) {
				t.Errorf("%s from %q: got %v, want a refusal naming allowFrom", c.tool, caller.from, err)
			}
		}
		rec := &recorder{}
		if err := tg.handler(c.tool).ServeMesh(t.Context(), rec, meshRequest("ops", mustJSON(t, c.args))); err != nil {
			t.Errorf("%s from a tagged caller: %v", c.tool, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "ran")); err == nil {
		if b, _ := os.ReadFile(filepath.Join(dir, "ran")); strings.Count(string(b), "ran") > 1 {
			t.Errorf("a refused caller's command ran: %q", b)
		}
	}
}

// Handoff and send reach only the agents the node lists.
func TestAgentRunsOnlyListedAgents(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{OpenclawBin: fakeOpenclaw(t, dir), Agents: []schema.Agent{{ID: "coder"}, {ID: "writer"}}})
	for _, r := range []Result{
		tg.handoff(t.Context(), "caller", schema.HandoffArgs{Agent: "main", Task: "t"}),
		runMessage(t, tg, schema.SendArgs{Agent: "admin", Message: "m"}),
		tg.StartTask(t.Context(), "caller", schema.HandoffArgs{Agent: "main", Task: "t"})(),
	} {
		if !r.IsError || !strings.Contains(r.Text, "coder, writer") {
			t.Errorf("got %+v, want a refusal naming the listed agents", r)
		}
	}
}
