//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the checkout the test runs in (the package dir's parent).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("cannot find the repository root from %s: %v", root, err)
	}
	return root
}

func underCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "false" && v != "0"
}

// openclawBinDir returns the directory holding node and openclaw from
// scripts/install-openclaw.sh. A missing install skips the test on a
// developer machine and fails it under CI.
func openclawBinDir(t *testing.T, root string) string {
	t.Helper()
	cache := os.Getenv("CLAWMATRIX_OPENCLAW_CACHE")
	if cache == "" {
		cache = filepath.Join(root, ".cache", "openclaw")
	}
	bin := filepath.Join(cache, "bin")
	for _, name := range []string{"node", "openclaw"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			msg := fmt.Sprintf("OpenClaw is not installed in %s (%v): run `bash scripts/install-openclaw.sh` (or `make e2e`)", cache, err)
			if underCI() {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	return bin
}

// buildSidecar builds cmd/clawmatrix-plugin into dir.
func buildSidecar(ctx context.Context, t *testing.T, root, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "clawmatrix-plugin")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/clawmatrix-plugin")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/clawmatrix-plugin: %v\n%s", err, b)
	}
	return out
}

// copyExecutable gives each gateway its own copy of the sidecar, so that
// /proc tells which gateway a sidecar process belongs to.
func copyExecutable(t *testing.T, src, dst string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// stagePlugin copies what the npm package ships (package.json and its
// "files") into dir, the way an installed plugin looks: no bin/, no .cache/.
func stagePlugin(t *testing.T, root, dir string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Files []string `json:"files"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	required := map[string]bool{"index.js": true, "openclaw.plugin.json": true, "openclaw.tools.json": true}
	for _, name := range append([]string{"package.json"}, pkg.Files...) {
		if fi, err := os.Stat(filepath.Join(root, name)); err == nil && fi.IsDir() {
			// A listed folder (docs) ships whole, as npm pack does.
			if err := os.CopyFS(filepath.Join(dir, name), os.DirFS(filepath.Join(root, name))); err != nil {
				t.Fatalf("package folder %s: %v", name, err)
			}
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && !required[name] && name != "package.json" {
				continue // npm pack skips a listed file that does not exist
			}
			t.Fatalf("package file %s: %v", name, err)
		}
		delete(required, name)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name := range required {
		t.Fatalf("package.json \"files\" does not ship %s", name)
	}
}

// freePort returns the first of span consecutive free loopback ports. The
// block is taken below the kernel's ephemeral range, where the outgoing
// connections of other tests on a busy machine never sit; a random start
// keeps concurrent runs apart.
func freePort(t *testing.T, span int) int {
	t.Helper()
	low := ephemeralLow()
	for range 200 {
		port := 10000 + rand.IntN(max(low-10000-span, 1))
		if blockFree(port, span) {
			return port
		}
	}
	t.Fatalf("no block of %d free loopback ports below %d", span, low)
	return 0
}

// ephemeralLow is the first port the kernel hands out for outgoing
// connections (32768 when it cannot be read).
func ephemeralLow() int {
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 11000 {
				return n
			}
		}
	}
	return 32768
}

func blockFree(port, span int) bool {
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for p := port; p < port+span; p++ {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			return false
		}
		held = append(held, l)
	}
	return true
}

// gateway is one real OpenClaw gateway with its own home, state and config.
type gateway struct {
	name    string
	dir     string
	port    int
	token   string
	bin     string // this gateway's copy of the sidecar binary
	ocBin   string // dir with node and openclaw
	env     []string
	logFile string // logging.file
	outFile string // stdout and stderr of `openclaw gateway run`

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited closes
}

// newGateway prepares dir/{home,state,ws} and writes config as the first
// config of a fresh state dir.
func newGateway(t *testing.T, name, dir, ocBin string, port int, config map[string]any, extraEnv ...string) *gateway {
	t.Helper()
	g := &gateway{
		name: name, dir: dir, port: port, ocBin: ocBin,
		bin:     filepath.Join(dir, "bin", "clawmatrix-plugin"),
		logFile: filepath.Join(dir, "gateway.log"),
		outFile: filepath.Join(dir, "gateway.out"),
	}
	for _, sub := range []string{"home", "state", "ws"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if gw, ok := config["gateway"].(map[string]any); ok {
		if auth, ok := gw["auth"].(map[string]any); ok {
			g.token, _ = auth["token"].(string)
		}
	}
	config["logging"] = map[string]any{"file": g.logFile}
	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	configPath := filepath.Join(dir, "state", "openclaw.json")
	if err := os.WriteFile(configPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OPENCLAW_") || strings.HasPrefix(k, "CLAWMATRIX_") || k == "PATH" || k == "HOME" {
			continue
		}
		g.env = append(g.env, kv)
	}
	g.env = append(g.env,
		"PATH="+ocBin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+filepath.Join(dir, "home"),
		"OPENCLAW_HOME="+filepath.Join(dir, "home"),
		"OPENCLAW_STATE_DIR="+filepath.Join(dir, "state"),
		"OPENCLAW_CONFIG_PATH="+configPath,
		"CLAWMATRIX_BIN="+g.bin,
		"NO_COLOR=1",
	)
	g.env = append(g.env, extraEnv...)
	return g
}

func (g *gateway) workspace() string { return filepath.Join(g.dir, "ws") }
func (g *gateway) stateDir() string  { return filepath.Join(g.dir, "state") }
func (g *gateway) baseURL() string   { return "http://127.0.0.1:" + strconv.Itoa(g.port) }

// command builds an openclaw command in its own process group, killed as a
// group when ctx ends.
func (g *gateway) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(g.ocBin, "openclaw"), args...)
	cmd.Env = g.env
	cmd.Dir = g.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// start runs `openclaw gateway run` in the background.
func (g *gateway) start() error {
	// Appending keeps the output of an earlier attempt (see startWithRetry).
	out, err := os.OpenFile(g.outFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	// Not CommandContext: the gateway outlives the start call; stop and kill own it.
	cmd := exec.Command(filepath.Join(g.ocBin, "openclaw"), "gateway", "run", "--port", strconv.Itoa(g.port))
	cmd.Env = g.env
	cmd.Dir = g.dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return err
	}
	exited := make(chan struct{})
	g.cmd, g.exited = cmd, exited
	go func() {
		g.err = cmd.Wait()
		out.Close()
		close(exited)
	}()
	return nil
}

// leaseTimeout is how OpenClaw 2026.9.6 reports that a worker of its state
// database did not come up within its fixed 5 s budget, which happens on a
// heavily loaded machine during the first start of a state dir. The gateway
// exits with 78; starting it again succeeds.
const leaseTimeout = "state lease heartbeat did not become ready"

// startWithRetry starts the gateway and waits until it is ready, starting
// it again (at most twice) only when it exited for leaseTimeout.
func (g *gateway) startWithRetry(ctx context.Context, t *testing.T) error {
	for attempt := 1; ; attempt++ {
		if err := g.start(); err != nil {
			return err
		}
		err := g.waitReady(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-g.exited:
		default:
			return err // still running but not ready: no retry
		}
		out, _ := os.ReadFile(g.outFile)
		if attempt >= 3 || !strings.Contains(string(out), leaseTimeout) {
			return err
		}
		t.Logf("gateway %s exited at startup because OpenClaw's state lease timed out (a loaded machine); starting it again", g.name)
	}
}

// waitReady polls /readyz until it answers 200.
func (g *gateway) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.baseURL()+"/readyz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-g.exited:
			return fmt.Errorf("gateway %s exited before it was ready: %v", g.name, g.err)
		case <-ctx.Done():
			return fmt.Errorf("gateway %s not ready on %s: %w", g.name, g.baseURL(), ctx.Err())
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM to the gateway process alone (not its group, so that a
// sidecar it fails to stop stays visible) and waits for it to exit.
func (g *gateway) stop(timeout time.Duration) error {
	if g.cmd == nil {
		return nil
	}
	select {
	case <-g.exited:
		return fmt.Errorf("gateway %s had already exited: %v", g.name, g.err)
	default:
	}
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-g.exited:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("gateway %s did not exit within %v of SIGTERM", g.name, timeout)
	}
}

// kill ends the gateway's whole process group and waits for the gateway.
// It is the test's last line of cleanup; it never fails.
func (g *gateway) kill() {
	if g.cmd == nil {
		return
	}
	syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
	}
	// Sidecars are in the gateway's group, but make sure of ours.
	for _, pid := range processesOf(g.bin) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// cli runs one openclaw command against this gateway's config.
func (g *gateway) cli(ctx context.Context, args ...string) (stdout string, err error) {
	cmd := g.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err = cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("openclaw %s: %w\nstdout: %s\nstderr: %s",
			strings.Join(args, " "), err, tailString(out.String(), 40), tailString(errb.String(), 40))
	}
	return out.String(), nil
}

// agentTurn runs one agent turn through the running gateway and returns the
// reply text.
func (g *gateway) agentTurn(ctx context.Context, agent, session, message string) (string, error) {
	out, err := g.cli(ctx, "agent", "--agent", agent, "--session-key", "agent:"+agent+":"+session,
		"--message", message, "--json", "--timeout", "300")
	if err != nil {
		return "", err
	}
	var res struct {
		Status string `json:"status"`
		Result struct {
			Payloads []struct {
				Text string `json:"text"`
			} `json:"payloads"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &res); err != nil {
		return "", fmt.Errorf("agent --json output is not JSON: %v\n%s", err, tailString(out, 40))
	}
	if res.Status != "ok" {
		return "", fmt.Errorf("agent turn status %q: %s", res.Status, tailString(out, 40))
	}
	var texts []string
	for _, p := range res.Result.Payloads {
		texts = append(texts, p.Text)
	}
	return strings.Join(texts, "\n"), nil
}

// invokeTool calls POST /tools/invoke on the gateway and returns the text
// content of the result.
func (g *gateway) invokeTool(ctx context.Context, tool string, args map[string]any) (string, error) {
	body, _ := json.Marshal(map[string]any{"tool": tool, "args": args})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL()+"/tools/invoke", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+g.token)
	req.Header.Set("Content-Type", "application/json")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /tools/invoke %s: HTTP %d: %s", tool, resp.StatusCode, raw)
	}
	var res struct {
		OK     bool `json:"ok"`
		Result struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"result"`
	}
	if err := json.Unmarshal(raw, &res); err != nil || !res.OK {
		return "", fmt.Errorf("POST /tools/invoke %s: unexpected answer %s (%v)", tool, raw, err)
	}
	var texts []string
	for _, c := range res.Result.Content {
		texts = append(texts, c.Text)
	}
	return strings.Join(texts, "\n"), nil
}

// dumpLogs prints the tails of everything the gateway and its sidecar wrote.
func (g *gateway) dumpLogs(t *testing.T) {
	for _, f := range []struct{ label, path string }{
		{"gateway stdout/stderr", g.outFile},
		{"gateway log file", g.logFile},
		{"sidecar stderr", filepath.Join(g.stateDir(), "clawmatrix", "sidecar.log")},
	} {
		data, err := os.ReadFile(f.path)
		if err != nil {
			t.Logf("--- %s %s: %v", g.name, f.label, err)
			continue
		}
		t.Logf("--- %s %s (%s), last lines:\n%s", g.name, f.label, f.path, tailString(readableLog(string(data)), 60))
	}
}

// readableLog turns OpenClaw's JSON log lines into "time level message";
// other lines pass unchanged.
func readableLog(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		var rec struct {
			Time    string `json:"time"`
			Message string `json:"message"`
			Meta    struct {
				Level string `json:"logLevelName"`
			} `json:"_meta"`
		}
		if json.Unmarshal([]byte(l), &rec) == nil && rec.Time != "" {
			lines[i] = rec.Time + " " + rec.Meta.Level + " " + rec.Message
		}
	}
	return strings.Join(lines, "\n")
}

// processesOf lists the live processes running the executable at path.
func processesOf(path string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil {
			continue
		}
		if exe == path && !isZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func isZombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] == 'Z'
	}
	return false
}

// waitFor polls cond every interval until it returns nil or ctx ends, and
// returns the last error.
func waitFor(ctx context.Context, interval time.Duration, cond func() error) error {
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(interval):
		}
	}
}

// jsonPart drops anything a CLI prints before its JSON document.
func jsonPart(s string) string {
	if i := strings.IndexByte(s, '{'); i >= 0 {
		return s[i:]
	}
	return s
}

// tailString returns the last n lines of s, each cut to 600 bytes.
func tailString(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 600 {
			lines[i] = l[:600] + "…"
		}
	}
	return strings.Join(lines, "\n")
}
