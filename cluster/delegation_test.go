package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/delivery"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/faultnet"
	"github.com/clawmatrix/clawmatrix/schema"
)

var fullFaults = flag.Bool("faults.full", false,
	"run TestDelegationSurvivesFaults at full size: 1,000 messages and a 30 s partition (about a minute)")

// standInAgent is `openclaw agent` for these tests: it appends its message
// to log, one line per run (so the log is the order runs started, with one
// run slot), sleeps 3 s on a message holding SLOW, and answers as the CLI
// does.
func standInAgent(t *testing.T, dir string) (bin, log string) {
	t.Helper()
	bin, log = filepath.Join(dir, "openclaw"), filepath.Join(dir, "runs.log")
	script := `#!/bin/sh
msg=""; agent=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) agent="$2"; shift ;;
    --message) msg="$2"; shift ;;
  esac
  shift
done
printf '%s\n' "$msg" >> '` + log + `'
case "$msg" in *SLOW*) sleep 3 ;; esac
printf '{"runId":"r-%s","status":"ok","result":{"payloads":[{"text":"%s ran %s"}]}}\n' "$$" "$agent" "$msg"
`
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, log
}

// restartable is a node with a state dir of its own, started again and
// again on the same port and files.
type restartable struct {
	t     *testing.T
	raw   string // config
	state string
	logs  *syncBuffer
	rt    *Runtime
	// dups adds up the inbox's duplicate count over the node's runs.
	dups uint64
}

func newRestartable(t *testing.T, raw string, logs *syncBuffer) *restartable {
	n := &restartable{t: t, raw: raw, state: t.TempDir(), logs: logs}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *restartable) start() {
	n.t.Helper()
	cfg, problems := schema.Parse([]byte(n.raw))
	if len(problems) > 0 {
		n.t.Fatalf("config %s: %v", n.raw, problems)
	}
	local := mesh.DefaultLocalConfig()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	var err error
	// A restart may find its port held for a moment.
	for deadline := time.Now().Add(10 * time.Second); ; {
		n.rt, err = Start(ctx, Options{Config: cfg, WorkspaceDir: n.state, StateDir: n.state, Mesh: &local,
			Logger: slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if err == nil || time.Now().After(deadline) || !strings.Contains(err.Error(), "address already in use") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		n.t.Fatal(err)
	}
}

func (n *restartable) stop() {
	if n.rt == nil {
		return
	}
	n.dups += n.rt.Delivery().Stats().Duplicates
	n.rt.Close()
	n.rt = nil
}

func (n *restartable) restart() {
	n.stop()
	n.start()
}

func freePortNumber(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func sendText(t *testing.T, rt *Runtime, args map[string]any) (delivery.Record, string) {
	t.Helper()
	raw, _ := json.Marshal(args)
	call, problems := schema.DecodeToolCall(schema.ToolSend, raw)
	if problems != nil {
		t.Fatalf("cluster_send %s: %v", raw, problems)
	}
	res := rt.CallTool(context.Background(), call, CallInfo{})
	if res.IsError {
		t.Fatalf("cluster_send %s: %s", raw, res.Text)
	}
	d := res.Details.(TaskDetails)
	rec, err := rt.Delivery().Get(d.ID)
	if err != nil {
		t.Fatal(err)
	}
	return rec, res.Text
}

// Two senders send to one agent while its node restarts twice and is cut
// off (30 s at full size), and one sender restarts: every message is
// started exactly once, each sender's in the order sent, and the
// duplicates the target dropped are counted.
func TestDelegationSurvivesFaults(t *testing.T) {
	perSender, pace := 60, 30*time.Millisecond
	restart1, cutAt, cutFor, restart2, senderRestart := 300*time.Millisecond, 500*time.Millisecond, 3*time.Second,
		1500*time.Millisecond, 2*time.Second
	if *fullFaults {
		perSender, pace = 500, 70*time.Millisecond
		restart1, cutAt, cutFor, restart2, senderRestart = 3*time.Second, 5*time.Second, 30*time.Second, 20*time.Second, 25*time.Second
	}
	dir := t.TempDir()
	bin, runLog := standInAgent(t, dir)
	var logs syncBuffer
	port := freePortNumber(t)
	target := newRestartable(t, fmt.Sprintf(`{"nodeId":"target","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":%d,
		"proxyPort":0,"agents":[{"id":"worker"}],"maxConcurrentRuns":1,"openclawBin":%q}`, testSecret, port, bin), &logs)
	link, err := faultnet.Listen(fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { link.Close() })
	var senders []*restartable
	for _, id := range []string{"s1", "s2"} {
		senders = append(senders, newRestartable(t, fmt.Sprintf(`{"nodeId":%q,"secret":%q,"proxyPort":0,
			"peers":[{"url":%q,"nodeId":"target"}]}`, id, testSecret, link.URL()), &logs))
	}
	for _, s := range senders {
		waitReachable(t, s.rt, "target")
	}

	start := time.Now()
	at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }
	type sent struct {
		id, text string
		sender   int
	}
	var mu sync.Mutex
	var all []sent
	var wg sync.WaitGroup
	for i, s := range senders {
		wg.Go(func() {
			restarted := false
			for k := range perSender {
				at(time.Duration(k) * pace)
				if i == 0 && !restarted && time.Since(start) >= senderRestart {
					s.restart() // while the target is cut off: it is known from before
					restarted = true
				}
				text := fmt.Sprintf("%s-%04d", s.rt.NodeID(), k)
				rec, reply := sendText(t, s.rt, map[string]any{"agent": "worker", "message": text})
				if rec.State != delivery.Queued || !strings.Contains(reply, "queued") {
					t.Errorf("send %s: state %s, %q", text, rec.State, reply)
				}
				mu.Lock()
				all = append(all, sent{rec.ID, text, i})
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		at(restart1)
		target.restart()
		at(cutAt)
		link.Cut()
		at(restart2)
		target.restart() // while cut off
		at(cutAt + cutFor)
		link.Heal()
	})
	wg.Wait()
	t.Logf("%d messages sent in %s; the cut healed at %s", len(all), time.Since(start).Round(time.Millisecond), cutAt+cutFor)

	deadline := time.Now().Add(2*time.Minute + cutFor)
	for _, m := range all {
		for {
			rec, err := senders[m.sender].rt.Delivery().Get(m.id)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State == delivery.Done {
				break
			}
			if rec.State.Final() {
				t.Fatalf("%s (%s) ended %s: %s", m.id, m.text, rec.State, rec.Text)
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s (%s) still %s", m.id, m.text, rec.State)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Logf("all done %s after the start", time.Since(start).Round(time.Millisecond))
	if os.Getenv("DELEG_DEBUG") != "" {
		os.WriteFile(os.Getenv("DELEG_DEBUG"), []byte(logs.String()), 0o644)
	}

	f, err := os.Open(runLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runs := map[string]int{}
	last := map[string]int{"s1": -1, "s2": -1}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		runs[line]++
		who, num, _ := strings.Cut(line, "-")
		k, _ := strconv.Atoi(num)
		if k <= last[who] {
			t.Errorf("%s started after %s-%04d: out of the order sent", line, who, last[who])
		}
		last[who] = k
	}
	for _, m := range all {
		if n := runs[m.text]; n != 1 {
			t.Errorf("%s started %d times, want exactly once", m.text, n)
		}
	}
	if len(runs) != len(all) {
		t.Errorf("%d distinct runs for %d messages", len(runs), len(all))
	}
	target.stop()
	t.Logf("every one of %d messages started exactly once, in order per sender; duplicate pushes dropped by the target: %d",
		len(all), target.dups)
}

func waitReachable(t *testing.T, rt *Runtime, id string) {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for {
		if _, ok := rt.Mesh().Peer(id); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never saw %s", rt.NodeID(), id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With two nodes having the tags, a message with tags goes to the one with
// fewer running and queued turns, as the nodes announce them.
func TestTagsPickTheLessLoadedNode(t *testing.T) {
	var logs syncBuffer
	type tagged struct {
		rt  *Runtime
		log string
	}
	nodes := map[string]tagged{}
	for _, id := range []string{"mac-a", "mac-b"} {
		bin, log := standInAgent(t, t.TempDir())
		rt := startNode(t, fmt.Sprintf(`{"nodeId":%q,"secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0,
			"tags":["macos"],"agents":[{"id":"w-%s"}],"maxConcurrentRuns":1,"openclawBin":%q}`, id, testSecret, id, bin), &logs)
		nodes[id] = tagged{rt, log}
	}
	caller := startNode(t, fmt.Sprintf(`{"nodeId":"caller","secret":%q,"proxyPort":0,"peers":[{"url":%q,"nodeId":"mac-a"},{"url":%q,"nodeId":"mac-b"}]}`,
		testSecret, nodes["mac-a"].rt.Mesh().URL(), nodes["mac-b"].rt.Mesh().URL()), &logs)
	waitReachable(t, caller, "mac-a")
	waitReachable(t, caller, "mac-b")

	load := func(id string) mesh.Load {
		p, _ := caller.Mesh().Peer(id)
		if p.Load == nil {
			return mesh.Load{}
		}
		return *p.Load
	}
	waitLoad := func(id string, want mesh.Load) {
		t.Helper()
		deadline := time.Now().Add(testDeadline)
		for load(id) != want {
			if time.Now().After(deadline) {
				t.Fatalf("caller sees %s's load as %+v, want %+v", id, load(id), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	pick := func(text string) string {
		t.Helper()
		rec, _ := sendText(t, caller, map[string]any{"tags": []string{"macos"}, "message": text})
		return rec.Node
	}
	// Load mac-a: one run going, two waiting.
	for i := range 3 {
		sendText(t, caller, map[string]any{"node": "mac-a", "message": fmt.Sprintf("SLOW %d", i)})
	}
	waitLoad("mac-a", mesh.Load{Running: 1, Queued: 2})
	if got := pick("first pick"); got != "mac-b" {
		t.Fatalf("with mac-a busy (%+v) and mac-b idle, tags chose %s", load("mac-a"), got)
	}
	// Now mac-b is busier than mac-a.
	for i := range 4 {
		sendText(t, caller, map[string]any{"node": "mac-b", "message": fmt.Sprintf("SLOW b%d", i)})
	}
	waitLoad("mac-b", mesh.Load{Running: 1, Queued: 3}) // the first pick ran already
	if got := pick("second pick"); got != "mac-a" {
		t.Fatalf("with mac-b busier (%+v) than mac-a (%+v), tags chose %s", load("mac-b"), load("mac-a"), got)
	}
	// The pick ran where it was sent.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(readFile(t, nodes["mac-b"].log), "first pick") {
		if time.Now().After(deadline) {
			t.Fatalf("mac-b never ran the first pick; its runs:\n%s", readFile(t, nodes["mac-b"].log))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}
