package remote

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// openPolicy allows every tool, with the default limits.
func openPolicy() schema.ToolProxy {
	return schema.ToolProxy{Enabled: true, Allow: []string{"*"}, MaxOutputBytes: DefaultMaxOutputBytes, MaxTimeoutMs: 600000}
}

// newTestTarget makes a Target without a mesh node, for the executors.
func newTestTarget(t testing.TB, nodeID string, cfg TargetConfig) *Target {
	t.Helper()
	if cfg.WorkspaceDir == "" {
		cfg.WorkspaceDir = t.TempDir()
	}
	tg, err := newTarget(nodeID, cfg)
	if err != nil {
		t.Fatalf("newTarget: %v", err)
	}
	t.Cleanup(tg.Close)
	return tg
}

// mustJSON encodes v or fails the test.
func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// detailsMap turns a Result's details into a generic map.
func detailsMap(t testing.TB, r Result) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(mustJSON(t, r.Details), &m); err != nil {
		t.Fatalf("details %v: %v", r.Details, err)
	}
	return m
}

// fakeOpenclaw writes a stand-in for the OpenClaw CLI into dir. Its
// behaviour is chosen by the message text:
//
//	FAIL     prints OpenClaw's failure JSON and some stderr, exits 1
//	GARBAGE  prints text that is not JSON, exits 0
//	LOGS     prints a log line before the JSON reply
//	SLEEP    records its pid and a background child's pid, then sleeps 30 s
//	TRACK    records how many TRACK runs are going at once, sleeps briefly
//	EMPTY    a reply without text payloads
//	other    replies "done by <agent>"
//
// Every run records its message and --timeout in dir.
func fakeOpenclaw(t testing.TB, dir string) string {
	t.Helper()
	script := `#!/bin/sh
dir='` + dir + `'
agent=""; msg=""; timeout=""; session=""
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) agent="$2"; shift ;;
    --message) msg="$2"; shift ;;
    --timeout) timeout="$2"; shift ;;
    --session-key) session="$2"; shift ;;
  esac
  shift
done
printf '%s' "$msg" > "$dir/msg.$agent"
printf '%s' "$timeout" > "$dir/timeout.$agent"
[ -n "$session" ] && printf '%s' "$session" > "$dir/session.$agent"
reply() { printf '{"runId":"run-%s","status":"ok","result":{"payloads":[{"text":"%s"}],"meta":{"durationMs":1}}}\n' "$$" "$1"; }
case "$msg" in
  *FAIL*) echo "starting" >&2; echo "fatal: model unavailable" >&2
          echo '{"ok":false,"error":{"message":"agent exploded"}}'; exit 1 ;;
  *GARBAGE*) echo "this is not json"; exit 0 ;;
  *LOGS*) echo "[plugins] loaded 3 plugins"; reply "after logs" ;;
  *EMPTY*) echo '{"runId":"r1","status":"ok","result":{"payloads":[],"meta":{}}}' ;;
  *SLEEP*) sleep 30 & echo $! > "$dir/child.$agent.tmp"; mv "$dir/child.$agent.tmp" "$dir/child.$agent"
           echo $$ > "$dir/pid.$agent.tmp"; mv "$dir/pid.$agent.tmp" "$dir/pid.$agent"
           wait; reply "woke up" ;;
  *TRACK*) touch "$dir/running.$$"; ls "$dir" | grep -c '^running\.' >> "$dir/seen"
           sleep 0.5; rm -f "$dir/running.$$"; reply "tracked" ;;
  *) reply "done by $agent" ;;
esac
`
	path := filepath.Join(dir, "openclaw")
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitFile waits for a file to appear and returns its content.
func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 10s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readPid reads a pid written by a test command.
func readPid(t *testing.T, path string) int {
	t.Helper()
	pid, err := strconv.Atoi(waitFile(t, path))
	if err != nil || pid <= 1 {
		t.Fatalf("bad pid in %s: %v", path, err)
	}
	return pid
}

// processGone reports whether pid no longer runs. A zombie counts as gone:
// it has been killed and only waits to be reaped by its new parent.
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// The state follows the command name, which is in parentheses.
	s := string(stat)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] == 'Z' || s[i+2] == 'X'
	}
	return false
}

// waitGone fails the test unless pid ends within a few seconds.
func waitGone(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("%s (pid %d) is still running: it was left behind", what, pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid is running (and not a zombie).
func alive(pid int) bool { return !processGone(pid) }

// recorder is a mesh.ResponseWriter that keeps what the handler wrote.
type recorder struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (r *recorder) Write(msg []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, append([]byte(nil), msg...))
	return nil
}

// result decodes the single response message.
func (r *recorder) result(t *testing.T) Result {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.msgs) != 1 {
		t.Fatalf("handler wrote %d messages, want 1", len(r.msgs))
	}
	var w wireResult
	if err := json.Unmarshal(r.msgs[0], &w); err != nil {
		t.Fatalf("response %q: %v", r.msgs[0], err)
	}
	return Result{Text: w.Text, Details: w.Details, IsError: w.IsError}
}

func meshRequest(from string, payload []byte) *mesh.Request {
	return &mesh.Request{From: from, Payload: payload}
}
