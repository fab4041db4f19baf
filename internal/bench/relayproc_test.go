package bench

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// upstreamEcho answers every request with its method and path.
func upstreamEcho(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string) string {
	t.Helper()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %q %v", url, resp.StatusCode, b, err)
	}
	return string(b)
}

// Two relay processes in a chain pass a request on to the upstream and
// shut down cleanly on SIGTERM.
func TestRelayProcsChain(t *testing.T) {
	bin := testOptions(t).RelayBin
	up := upstreamEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second, err := startRelayProc(ctx, bin, "relay 2", up.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Kill()
	first, err := startRelayProc(ctx, bin, "relay 1", second.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Kill()
	if !strings.HasPrefix(first.URL, "http://127.0.0.1:") {
		t.Fatalf("relay listens at %q, want a loopback address", first.URL)
	}
	if got := get(t, first.URL+"/v1/models"); got != "GET /v1/models" {
		t.Fatalf("through two relays: %q", got)
	}
	for _, p := range []*relayProc{first, second} {
		if err := p.Stop(); err != nil {
			t.Fatal(err)
		}
		if !p.State().Success() {
			t.Fatalf("%s ended with %s", p.name, p.State())
		}
	}
}

func TestRunRelayArguments(t *testing.T) {
	for _, args := range [][]string{nil, {"--target", "ftp://127.0.0.1:1"}, {"--target", "http://"}, {"--target", "http://127.0.0.1:1", "extra"}, {"--nope"}} {
		var stderr strings.Builder
		if code := RunRelay(context.Background(), args, io.Discard, &stderr); code != 1 {
			t.Errorf("RunRelay(%q) = %d, want 1", args, code)
		}
		if !strings.Contains(stderr.String(), "usage") && !strings.Contains(stderr.String(), "flag provided but not defined") {
			t.Errorf("RunRelay(%q) printed %q, want a usage line", args, stderr.String())
		}
	}
}

// In process: RunRelay prints its address, serves, and returns 0 when its
// context ends.
func TestRunRelayServesUntilCancelled(t *testing.T) {
	up := upstreamEcho(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- RunRelay(ctx, []string{"--target", up.URL}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "relay: ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	if got := get(t, url+"/v1/chat/completions"); got != "GET /v1/chat/completions" {
		t.Fatalf("through the relay: %q", got)
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RunRelay still running 10 s after its context ended")
	}
}

func TestBinariesRefuseTestBinary(t *testing.T) {
	if _, err := (Options{}).nodeBin(); err == nil || !strings.Contains(err.Error(), "test binary") {
		t.Fatalf("nodeBin() from a test binary: err = %v", err)
	}
	if _, err := (Options{}).relayBin(); err == nil || !strings.Contains(err.Error(), "test binary") {
		t.Fatalf("relayBin() from a test binary: err = %v", err)
	}
	if bin, err := (Options{NodeBin: "/x/clawmatrix-plugin"}).nodeBin(); bin != "/x/clawmatrix-plugin" || err != nil {
		t.Fatalf("nodeBin() with NodeBin set = %q, %v", bin, err)
	}
}

// Without NodeBin, the nodes are the clawmatrix-plugin beside the bench; with
// none there, the error says how to get one.
func TestNodeBinBesideTheBench(t *testing.T) {
	dir := t.TempDir()
	bench := filepath.Join(dir, "clawmatrix-bench")
	if _, err := (Options{RelayBin: bench}).nodeBin(); err == nil || !strings.Contains(err.Error(), "--node-bin") {
		t.Fatalf("nodeBin() with no clawmatrix-plugin beside the bench: err = %v", err)
	}
	plugin := filepath.Join(dir, "clawmatrix-plugin")
	if err := os.WriteFile(plugin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if bin, err := (Options{RelayBin: bench}).nodeBin(); bin != plugin || err != nil {
		t.Fatalf("nodeBin() = %q, %v; want %s", bin, err, plugin)
	}
}

// The chain and the cluster processes answer, a load cut short by its
// context fails, and closing the paths leaves no process running.
func TestChainPathsStopWhenCancelled(t *testing.T) {
	o := testOptions(t)
	up, err := startSynthetic(2)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p, err := startChainPaths(ctx, o.NodeBin, o.RelayBin, up.URL())
	if err != nil {
		t.Fatal(err)
	}
	procs := slices.Clone(p.procs)
	if len(procs) != 4 {
		t.Fatalf("%d processes, want nodes A and B and two relays", len(procs))
	}
	loadCtx, stop := context.WithCancel(ctx)
	stop()
	if _, err := compareChain(loadCtx, p, 50); err == nil {
		t.Fatal("compareChain succeeded with its context ended")
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pr := range procs {
		if !pr.Exited() || !pr.State().Success() {
			t.Errorf("%s: exited %v, state %v", pr.name, pr.Exited(), pr.State())
		}
	}
}

// A context that has ended starts nothing.
func TestStartChainPathsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := startChainPaths(ctx, "/bin/true", "/bin/true", "http://127.0.0.1:1/v1"); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
