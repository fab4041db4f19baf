package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/plugin/hosttest"
)

var binary string

const (
	stampPkg    = "github.com/clawmatrix/clawmatrix/internal/buildinfo"
	testVersion = "9.8.7-test"
	testCommit  = "0123456789abcdef"
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "clawmatrix-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "clawmatrix-plugin")
	// Stamped as a release build is (Makefile, scripts/npmpack).
	ldflags := "-X " + stampPkg + ".version=" + testVersion + " -X " + stampPkg + ".commit=" + testCommit
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the binary: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const timeout = 15 * time.Second

// proc is the built binary in sidecar mode, driven over pipes.
type proc struct {
	*hosttest.Client
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *bytes.Buffer
	exited chan error
}

func spawn(tb testing.TB, args ...string) *proc {
	tb.Helper()
	cmd := exec.Command(binary, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	p := &proc{cmd: cmd, stdin: stdin, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p.Client = hosttest.New(stdout, stdin)
	go func() {
		<-p.Client.Done()
		p.exited <- cmd.Wait()
	}()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-p.Client.Done()
	})
	return p
}

// wait closes stdin and waits for a clean exit.
func (p *proc) wait(tb testing.TB) {
	tb.Helper()
	p.stdin.Close()
	select {
	case err := <-p.exited:
		if err != nil {
			tb.Fatalf("sidecar exit: %v\nstderr:\n%s", err, p.stderr)
		}
	case <-time.After(timeout):
		tb.Fatalf("sidecar did not exit after stdin EOF\nstderr:\n%s", p.stderr)
	}
}

func testConfig(nodeID string) map[string]any {
	return map[string]any{"nodeId": nodeID, "secret": "binary-test-secret-123", "proxyPort": 0}
}

func TestSidecarOverPipes(t *testing.T) {
	p := spawn(t)
	var init struct {
		NodeID  string `json:"nodeId"`
		Version string `json:"version"`
		Tools   []struct {
			Name string `json:"name"`
		} `json:"tools"`
		Provider struct {
			BaseURL string `json:"baseUrl"`
			APIKey  string `json:"apiKey"`
		} `json:"provider"`
	}
	if err := p.Call("initialize", map[string]any{"config": testConfig("solo"), "host": map[string]any{"name": "test", "version": "1"}}, &init, timeout); err != nil {
		t.Fatal(err)
	}
	if init.NodeID != "solo" || init.Version != testVersion || len(init.Tools) != 8 || init.Provider.APIKey == "" {
		t.Fatalf("initialize = %+v", init)
	}

	var tool struct {
		Content []struct{ Text string }
		IsError bool
	}
	if err := p.Call("tools/call", map[string]any{"name": "cluster_peers", "arguments": map[string]any{}}, &tool, timeout); err != nil || tool.IsError {
		t.Fatalf("cluster_peers: %+v %v", tool, err)
	}
	var prompt map[string]any
	if err := p.Call("hooks/beforePromptBuild", map[string]any{}, &prompt, timeout); err != nil || len(prompt) != 0 {
		t.Fatalf("prompt: %v %v", prompt, err)
	}
	var st struct {
		NodeID string `json:"nodeId"`
		Peers  []any  `json:"peers"`
	}
	if err := p.Call("cluster/status", map[string]any{}, &st, timeout); err != nil || st.NodeID != "solo" || st.Peers == nil {
		t.Fatalf("status: %+v %v", st, err)
	}
	if err := p.Call("shutdown", map[string]any{}, nil, timeout); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	if err := p.Err(); err != nil {
		t.Fatalf("stdout carried something other than protocol: %v", err)
	}
	if len(p.Logs()) == 0 {
		t.Error("no log notification reached the host")
	}
	if !strings.Contains(p.stderr.String(), "clawmatrix node started") || !strings.Contains(p.stderr.String(), "version="+testVersion) {
		t.Errorf("stderr lacks the start log:\n%s", p.stderr)
	}
}

// vmHWM is the peak resident set of a process, in bytes.
func vmHWM(tb testing.TB, pid int) int64 {
	return procStatus(tb, pid, "VmHWM:")
}

func procStatus(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	tb.Fatalf("%s not in /proc/%d/status", field, pid)
	return 0
}

func TestHugeLineIsRefusedWithoutGrowing(t *testing.T) {
	p := spawn(t)
	if err := p.Call("initialize", map[string]any{"config": testConfig("solo")}, nil, timeout); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	done := make(chan error, 1)
	go func() {
		var err error
		for i := 0; i < 100 && err == nil; i++ {
			_, err = p.stdin.Write(chunk)
		}
		if err == nil {
			_, err = p.stdin.Write([]byte("\n"))
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	orphan, err := p.Orphan(timeout)
	if err != nil || orphan.Error == nil || orphan.Error.Code != -32700 {
		t.Fatalf("100 MB line: %+v %v", orphan, err)
	}
	if err := p.Call("cluster/status", map[string]any{}, nil, timeout); err != nil {
		t.Fatalf("after the long line: %v", err)
	}
	if peak := vmHWM(t, p.cmd.Process.Pid); peak > 64<<20 {
		t.Errorf("peak RSS %d MB after a 100 MB line; the line must not be buffered whole", peak>>20)
	}
	p.wait(t)
}

func runBinary(t *testing.T, args ...string) (stdout string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), 0
}

func TestCommands(t *testing.T) {
	committed, err := os.ReadFile("../../openclaw.plugin.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.json", `{"nodeId":"a","secret":"0123456789abcdef"}`)
	bad := write("bad.json", `{"nodeId":"a","secret":"0123456789abcdef","peers":[{"url":"ws://ok"},{"url":"http://x"}],"listenPort":70000}`)

	tests := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"manifest"}, 0, []string{string(committed)}},
		{[]string{"version"}, 0, []string{"clawmatrix-plugin " + testVersion + " (commit " + testCommit + ", " + runtime.Version() + ")\n"}},
		{[]string{"--help"}, 0, []string{"validate-config", "node --config"}},
		{[]string{"validate-config", good}, 0, []string{"valid"}},
		{[]string{"validate-config", bad}, 2, []string{"peers[1].url: ", "listenPort: "}},
		{[]string{"validate-config", filepath.Join(dir, "missing.json")}, 2, []string{"cannot read"}},
		{[]string{"validate-config", "--help"}, 0, []string{"usage: clawmatrix-plugin validate-config FILE"}},
		{[]string{"node", "--help"}, 0, []string{"-config", "-workspace"}},
		{[]string{"frobnicate"}, 1, []string{`unknown command "frobnicate"`}},
		// The benchmarks moved to their own binary; the sidecar says where.
		{[]string{"bench"}, 1, []string{"clawmatrix-bench", "make bench"}},
		{[]string{"bench-relay"}, 1, []string{`unknown command "bench-relay"`}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, code := runBinary(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if out, _ := runBinary(t, "--help"); strings.Contains(out, "bench") {
		t.Errorf("the sidecar's usage still lists a bench command:\n%s", out)
	}
	out, _ := runBinary(t, "validate-config", bad)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 {
		t.Errorf("want one line per problem (2), got:\n%s", out)
	}
}

func TestNodeCommandRunsUntilSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) { testNodeUntilSignal(t, sig) })
	}
}

func testNodeUntilSignal(t *testing.T, sig syscall.Signal) {
	dir := t.TempDir()
	cfg := `{"nodeId":"relay","secret":"0123456789abcdef","listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0,
		"metrics":{"listen":"127.0.0.1:0"}}`
	path := filepath.Join(dir, "node.json")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary, "node", "--config", path)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var seen []string
	for len(seen) < 6 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("node exited early: %v\n%s", seen, stderr.String())
			}
			seen = append(seen, l)
		case <-time.After(timeout):
			t.Fatalf("node printed only %v", seen)
		}
	}
	text := strings.Join(seen, "\n")
	for _, want := range []string{"node relay up", "mesh: ws://127.0.0.1:", "model proxy: http://127.0.0.1:", "proxy key: ",
		"status page (opens once): http://127.0.0.1:", "metrics: http://127.0.0.1:"} {
		if !strings.Contains(text, want) {
			t.Errorf("node output lacks %q:\n%s", want, text)
		}
	}
	checkPrintedStatusAndMetrics(t, seen)
	cmd.Process.Signal(sig)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("node exit after %v: %v\n%s", sig, err, stderr.String())
		}
	case <-time.After(timeout):
		t.Fatalf("node did not stop on %v", sig)
	}
}

// BenchmarkSpawnInitialize measures spawn → initialize answered, and reports
// the sidecar's resident memory once idle after initialize.
// BenchmarkSpawnVersion is the baseline for BenchmarkSpawnInitialize: the
// cost of starting this binary and waiting for it at all.
func BenchmarkSpawnVersion(b *testing.B) {
	for i := 0; i < b.N; i++ {
		if out, err := exec.Command(binary, "version").Output(); err != nil || len(out) == 0 {
			b.Fatalf("version: %v %q", err, out)
		}
	}
}

func BenchmarkSpawnInitialize(b *testing.B) {
	var rss int64
	for i := 0; i < b.N; i++ {
		p := spawn(b)
		if err := p.Call("initialize", map[string]any{"config": testConfig("bench")}, nil, timeout); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		time.Sleep(50 * time.Millisecond) // let start-up garbage settle before reading RSS
		rss += procStatus(b, p.cmd.Process.Pid, "VmRSS:")
		p.wait(b)
		b.StartTimer()
	}
	b.ReportMetric(float64(rss)/float64(b.N)/(1<<20), "MB-idle-RSS")
}

// Every command the binary has is documented for people and for LLMs.
func TestDocsListEveryCommand(t *testing.T) {
	for _, doc := range []string{"../../README.md", "../../llms.txt"} {
		raw, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range commands() {
			if !strings.Contains(string(raw), "`clawmatrix-plugin "+c.name) {
				t.Errorf("%s does not document the %q command", doc, c.name)
			}
		}
	}
}

// runSplit runs the binary and keeps stdout and stderr apart.
func runSplit(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errOut.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), 0
}

func TestIdentityCommands(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "relay.json")
	if err := os.WriteFile(config, []byte(`{"nodeId":"relay","secret":"0123456789abcdef"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "relay.key")
	knownFile := filepath.Join(dir, "relay.known_nodes.json")

	type ident struct {
		NodeID, PublicKey, Fingerprint, KeyFile string
		Created                                 bool
	}
	identityJSON := func(args ...string) (ident, string) {
		t.Helper()
		out, errOut, code := runSplit(t, append([]string{"identity", "--json"}, args...)...)
		var id ident
		if code != 0 || json.Unmarshal([]byte(out), &id) != nil {
			t.Fatalf("identity %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
		}
		return id, errOut
	}

	first, errOut := identityJSON("--config", config)
	if !first.Created || first.NodeID != "relay" || first.KeyFile != keyFile ||
		!strings.HasPrefix(first.PublicKey, "ed25519:") || !strings.HasPrefix(first.Fingerprint, "SHA256:") {
		t.Fatalf("first identity = %+v", first)
	}
	if !strings.Contains(errOut, "made a new node key in "+keyFile) {
		t.Errorf("stderr does not say a key was made: %q", errOut)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	again, errOut := identityJSON("--config", config)
	if again.Created || again.PublicKey != first.PublicKey || errOut != "" {
		t.Errorf("second identity = %+v, stderr %q", again, errOut)
	}
	out, _, code := runSplit(t, "identity", "--config", config)
	for _, want := range []string{"node id:     relay", "public key:  " + first.PublicKey, "fingerprint: " + first.Fingerprint} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("identity text lacks %q (exit %d):\n%s", want, code, out)
		}
	}
	state := filepath.Join(dir, "state")
	if id, _ := identityJSON("--state", state); id.KeyFile != filepath.Join(state, "clawmatrix", "node.key") || !id.Created || id.NodeID != "" {
		t.Errorf("identity --state = %+v", id)
	}
	peer, _ := identityJSON("--key", filepath.Join(dir, "peer.key"))
	other, _ := identityJSON("--key", filepath.Join(dir, "other.key"))

	strict := filepath.Join(dir, "strict.json")
	os.WriteFile(strict, []byte(`{"nodeId":"s","secret":"0123456789abcdef","trust":[{"nodeId":"b","publicKey":"`+other.PublicKey+`"}],"revoked":["c"]}`), 0o600)
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"nodeId":"x","secret":"0123456789abcdef","trust":[{"nodeId":"b","publicKey":"rsa"}]}`), 0o600)
	loose := filepath.Join(dir, "loose.key")
	os.WriteFile(loose, []byte("whatever"), 0o644)
	os.Chmod(loose, 0o644)
	// Only the fields that place files matter; the gateway checked the rest.
	pluginCfg := filepath.Join(dir, "plugin-config.json")
	movedKnown := filepath.Join(dir, "moved.known_nodes.json")
	os.WriteFile(pluginCfg, []byte(`{"nodeId":"gw","identityFile":"`+filepath.Join(dir, "gw.key")+`","knownNodesFile":"`+movedKnown+`","revoked":["c"],"future":1}`), 0o600)

	tests := []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"identity", "--help"}, 0, []string{"-config", "-state", "-key", "-json"}},
		{[]string{"identity"}, 1, []string{"give exactly one of --config, --state and --key"}},
		{[]string{"identity", "--config", config, "--key", keyFile}, 1, []string{"exactly one"}},
		{[]string{"identity", "--config", bad}, 2, []string{"trust[0].publicKey: "}},
		{[]string{"identity", "--key", loose}, 1, []string{"chmod 600 " + loose}},
		{[]string{"trust", "--help"}, 0, []string{"-known", "NODEID PUBLICKEY"}},
		{[]string{"trust", "--config", config, "b"}, 1, []string{"usage: clawmatrix-plugin trust"}},
		{[]string{"trust", "--config", config, "b", "nope"}, 1, []string{`must start with "ed25519:"`}},
		{[]string{"trust", "--config", config, "b c", peer.PublicKey}, 1, []string{"may contain only"}},
		{[]string{"trust", "--config", config, "relay", peer.PublicKey}, 1, []string{"own id"}},
		{[]string{"trust", "--config", config, "b", peer.PublicKey}, 0, []string{"pinned node b to key " + peer.Fingerprint + " in " + knownFile, "applies it within seconds"}},
		{[]string{"revoke", "--config", config, "b"}, 0, []string{"revoked node b (key " + peer.Fingerprint + ")", "applies it within seconds", "new id", "trust --config " + config + " b"}},
		{[]string{"revoke", "--config", config, "relay"}, 1, []string{"own id"}},
		{[]string{"revoke", "--known", filepath.Join(dir, "k.json"), "z"}, 0, []string{"revoked node z (no key known yet)"}},
		{[]string{"revoke", "--config", config}, 1, []string{"usage: clawmatrix-plugin revoke"}},
		{[]string{"trust", "--config", strict, "b", peer.PublicKey}, 0, []string{"sets trust", `"publicKey": "` + peer.PublicKey + `"`}},
		{[]string{"trust", "--config", strict, "c", peer.PublicKey}, 0, []string{"lists c under revoked"}},
		{[]string{"trust", "--state", state, "b", other.PublicKey}, 0, []string{filepath.Join(state, "clawmatrix", "node.known_nodes.json")}},
		// A gateway's plugin config moves its files.
		{[]string{"revoke", "--state", state, "--plugin-config", pluginCfg, "z"}, 0, []string{"in " + movedKnown, "trust --known " + movedKnown + " z"}},
		{[]string{"trust", "--state", state, "--plugin-config", pluginCfg, "c", peer.PublicKey}, 0, []string{"in " + movedKnown, "note: the plugin config lists c under revoked"}},
		{[]string{"revoke", "--state", state, "--plugin-config", pluginCfg, "gw"}, 1, []string{"own id"}},
		{[]string{"identity", "--state", state, "--plugin-config", pluginCfg}, 0, []string{"key file:    " + filepath.Join(dir, "gw.key")}},
		{[]string{"revoke", "--config", config, "--plugin-config", pluginCfg, "z"}, 1, []string{"--plugin-config goes with --state"}},
		{[]string{"revoke", "--state", state, "--plugin-config", bad + ".missing", "z"}, 2, []string{"--plugin-config: open "}},
		{[]string{"revoke", "--state", state, "--plugin-config", loose, "z"}, 2, []string{"is not a JSON object"}},
		{[]string{"revoke", "--state", state, "--plugin-config", pluginCfg, "--json", "z"}, 0, []string{`{"nodeId":"z","revoked":true,"knownNodesFile":"` + movedKnown + `","notes":["revoke it on every node;`}},
		{[]string{"trust", "--state", state, "--plugin-config", pluginCfg, "--json", "c", peer.PublicKey}, 0,
			[]string{`{"nodeId":"c","fingerprint":"` + peer.Fingerprint + `","revoked":false,"knownNodesFile":"` + movedKnown + `","notes":["the plugin config lists c under revoked`}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, code := runBinary(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	// The plugin config on stdin, as the OpenClaw adapter hands it over.
	cmd := exec.Command(binary, "revoke", "--state", state, "--plugin-config", "-", "y")
	cmd.Stdin = strings.NewReader(`{"nodeId":"gw","knownNodesFile":"` + movedKnown + `"}`)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "revoked node y (no key known yet) in "+movedKnown) {
		t.Errorf("revoke with the plugin config on stdin: %v\n%s", err, out)
	}
	if out, _ := runBinary(t, "trust", "--config", strict, "b", other.PublicKey); strings.Contains(out, "note:") {
		t.Errorf("a pair trust already lists got a note:\n%s", out)
	}

	// What the commands wrote is what the store reads.
	raw, err := os.ReadFile(knownFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Nodes map[string]struct {
			PublicKey string `json:"publicKey"`
			Revoked   bool   `json:"revoked"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || doc.Nodes["b"].PublicKey != peer.PublicKey || !doc.Nodes["b"].Revoked {
		t.Fatalf("known nodes file (%v):\n%s", err, raw)
	}
	if st, _ := os.Stat(knownFile); st.Mode().Perm() != 0o600 {
		t.Errorf("known nodes file mode %04o", st.Mode().Perm())
	}
	if out, code := runBinary(t, "trust", "--config", config, "b", other.PublicKey); code != 0 {
		t.Fatalf("re-pin: %s", out)
	}
	raw, _ = os.ReadFile(knownFile)
	json.Unmarshal(raw, &doc)
	if doc.Nodes["b"].PublicKey != other.PublicKey || doc.Nodes["b"].Revoked {
		t.Errorf("re-pin did not replace the key and clear the revocation:\n%s", raw)
	}
}

// checkPrintedStatusAndMetrics opens the status link the node printed, as a
// browser would (a cookie session), and scrapes the metrics address with
// the printed key.
func checkPrintedStatusAndMetrics(t *testing.T, lines []string) {
	t.Helper()
	value := func(prefix string) string {
		for _, l := range lines {
			if v, ok := strings.CutPrefix(l, prefix); ok {
				return v
			}
		}
		t.Fatalf("no line %q in %q", prefix, lines)
		return ""
	}
	link, key, metrics := value("status page (opens once): "), value("proxy key: "), value("metrics: ")
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	get := func(c *http.Client, url, key string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(browser, link, ""); code != http.StatusOK || !strings.Contains(body, "<title>clawmatrix status</title>") {
		t.Fatalf("status link: %d %s", code, body)
	}
	base := strings.TrimSuffix(link[:strings.Index(link, "?")], "/status")
	if code, body := get(browser, base+"/status.json", ""); code != http.StatusOK || !strings.Contains(body, `"nodeId":"relay"`) {
		t.Fatalf("status.json in the session: %d %s", code, body)
	}
	if code, _ := get(&http.Client{Timeout: 10 * time.Second}, link, ""); code != http.StatusUnauthorized {
		t.Fatalf("the status link opened twice: %d", code)
	}
	if code, _ := get(http.DefaultClient, metrics, ""); code != http.StatusUnauthorized {
		t.Fatalf("metrics without the key: %d", code)
	}
	if code, body := get(http.DefaultClient, metrics, key); code != http.StatusOK || !strings.Contains(body, "clawmatrix_build_info") {
		t.Fatalf("metrics with the key: %d %.300s", code, body)
	}
}
