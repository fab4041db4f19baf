package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(removeBuiltAfter{m}) }

// removeBuiltAfter runs the tests, then removes the binaries testOptions built.
type removeBuiltAfter struct{ m *testing.M }

func (r removeBuiltAfter) Run() int {
	code := r.m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	return code
}

// built are the clawmatrix-plugin and clawmatrix-bench binaries testOptions
// builds once per run.
var built struct {
	once             sync.Once
	dir, node, relay string
	err              error
}

// testOptions are quick Options with the binaries the suites start nodes
// (clawmatrix-plugin) and relays (clawmatrix-bench) with; the test binary
// itself can run neither.
func testOptions(t *testing.T) Options {
	t.Helper()
	built.once.Do(func() {
		if built.dir, built.err = os.MkdirTemp("", "clawmatrix-bench-test-"); built.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", built.dir+"/", "../../cmd/clawmatrix-plugin", "../../cmd/clawmatrix-bench").CombinedOutput()
		if err != nil {
			built.err = fmt.Errorf("building clawmatrix-plugin and clawmatrix-bench: %v\n%s", err, out)
		}
		built.node = filepath.Join(built.dir, "clawmatrix-plugin")
		built.relay = filepath.Join(built.dir, "clawmatrix-bench")
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return Options{Quick: true, NodeBin: built.node, RelayBin: built.relay}
}

// runQuick runs one suite in quick mode through Run and returns the report
// and what Run printed.
func runQuick(t *testing.T, suite string) (Report, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	o := testOptions(t)
	o.Only = []string{suite}
	if os.Getenv("BENCH_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	rep, err := Run(ctx, o, &out)
	if err != nil {
		t.Fatalf("Run %s: %v\n%s", suite, err, out.String())
	}
	return rep, out.String()
}

func TestSuitesQuick(t *testing.T) {
	tests := []struct {
		suite string
		want  []string // metric names, in order
		goals map[string]Goal
		check func(t *testing.T, m map[string]Metric)
	}{
		{"proxy", []string{
			"direct throughput, 16 clients (baseline)",
			"proxied throughput / direct, 16 clients", "reference: one httputil.ReverseProxy / direct, 16 clients",
			"direct p50, 1 client (baseline)",
			"added p50, 1 client",
			"added time to first chunk, streamed",
			"two-proxy chain throughput, 16 clients (yardstick)",
			"cluster processes throughput / chain, 16 clients",
			"cluster processes throughput / direct, 16 clients",
			"two-proxy chain added p50, 1 client (yardstick)",
			"cluster processes added p50 / chain added p50, 1 client",
			"bad streams of 200 concurrent",
			"memory per open stream, added by the proxy",
		}, map[string]Goal{
			"proxied throughput / direct, 16 clients":                 {">=", 0.4},
			"added p50, 1 client":                                     {"<=", 0.3},
			"added time to first chunk, streamed":                     {"<=", 1},
			"bad streams of 200 concurrent":                           {"<=", 0},
			"cluster processes throughput / chain, 16 clients":        {">=", 1.5},
			"cluster processes added p50 / chain added p50, 1 client": {"<=", 0.8},
		}, func(t *testing.T, m map[string]Metric) {
			if v := m["bad streams of 200 concurrent"]; v.Value != 0 {
				t.Errorf("streams lost or reordered chunks: %+v", v)
			}
			positive(t, m, "direct throughput, 16 clients (baseline)", "proxied throughput / direct, 16 clients", "reference: one httputil.ReverseProxy / direct, 16 clients", "direct p50, 1 client (baseline)",
				"two-proxy chain throughput, 16 clients (yardstick)", "cluster processes throughput / chain, 16 clients",
				"cluster processes throughput / direct, 16 clients", "two-proxy chain added p50, 1 client (yardstick)",
				"cluster processes added p50 / chain added p50, 1 client")
		}},
		{"mesh", []string{
			"small call p50, 1 hop (baseline)",
			"added latency per relay hop",
			"convergence after a join, 16 nodes",
			"cold convergence, 16 nodes",
			"detection of a killed peer",
			"detection of a silent peer",
			"handshake time of a link",
			"memory per idle link",
			"goroutines per idle link",
		}, map[string]Goal{
			"added latency per relay hop":        {"<=", 0.1},
			"convergence after a join, 16 nodes": {"<=", 1000},
			"detection of a killed peer":         {"<=", 1000},
			"detection of a silent peer":         {"<=", 6000},
		}, func(t *testing.T, m map[string]Metric) {
			positive(t, m, "small call p50, 1 hop (baseline)", "convergence after a join, 16 nodes", "cold convergence, 16 nodes",
				"detection of a killed peer", "handshake time of a link", "goroutines per idle link")
			// A silent peer is only found by missing traffic: not before
			// DeadAfter (4 s with LAN timings) less the ping interval (the
			// last frame may have come up to 1.2 s before the freeze).
			if v := m["detection of a silent peer"].Value; v < 2500 {
				t.Errorf("silent peer withdrawn after %.0f ms, sooner than silence can be noticed", v)
			}
		}},
		{"observe", []string{
			"telemetry off throughput, 16 clients (baseline)",
			"metrics on / off throughput, 16 clients",
			"metrics and spans / off throughput, 16 clients",
			"metrics and 10% of spans / off throughput, 16 clients",
			"metrics on / off CPU per request",
			"metrics and spans / off CPU per request",
			"metrics and 10% of spans / off CPU per request",
			"telemetry off p50, 1 client (baseline)",
			"metrics on added p50, 1 client",
			"metrics and spans added p50, 1 client",
			"metrics and 10% of spans added p50, 1 client",
			"span exports received",
		}, map[string]Goal{
			"metrics and spans / off throughput, 16 clients": {">=", 0.95},
			"metrics and spans added p50, 1 client":          {"<=", 20},
		}, func(t *testing.T, m map[string]Metric) {
			positive(t, m, "telemetry off throughput, 16 clients (baseline)", "metrics on / off throughput, 16 clients",
				"metrics and spans / off throughput, 16 clients", "telemetry off p50, 1 client (baseline)", "span exports received")
		}},
		{"tools", []string{
			"cluster_exec p50 on the target",
			"cluster_exec through a relay / on the target",
			"cluster_read 1 MB p50 on the target",
			"cluster_read 1 MB through a relay / on the target",
		}, nil, func(t *testing.T, m map[string]Metric) {
			positive(t, m, "cluster_exec p50 on the target", "cluster_exec through a relay / on the target",
				"cluster_read 1 MB p50 on the target", "cluster_read 1 MB through a relay / on the target")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.suite, func(t *testing.T) {
			rep, out := runQuick(t, tc.suite)
			if len(rep.Failures) > 0 {
				t.Fatalf("failures: %v", rep.Failures)
			}
			var names []string
			byName := map[string]Metric{}
			for _, m := range rep.Metrics {
				names = append(names, m.Name)
				byName[m.Name] = m
				if m.Suite != tc.suite {
					t.Errorf("metric %q has suite %q", m.Name, m.Suite)
				}
				if math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
					t.Errorf("metric %q is %v", m.Name, m.Value)
				}
				if !strings.Contains(out, m.Name) {
					t.Errorf("the table lacks %q", m.Name)
				}
			}
			if !slices.Equal(names, tc.want) {
				t.Fatalf("metrics:\n got %q\nwant %q", names, tc.want)
			}
			// The issues' goals sit on the metrics they bound, and only there.
			for _, m := range rep.Metrics {
				g, ok := tc.goals[m.Name]
				switch {
				case ok && (m.Goal == nil || *m.Goal != g):
					t.Errorf("%s: goal %+v, want %+v", m.Name, m.Goal, g)
				case !ok && m.Goal != nil:
					t.Errorf("%s carries goal %+v; no issue sets one", m.Name, *m.Goal)
				}
			}
			tc.check(t, byName)

			// The last line is the report as JSON.
			lines := strings.Split(strings.TrimSpace(out), "\n")
			var parsed Report
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &parsed); err != nil {
				t.Fatalf("last line is not the JSON report: %v\n%s", err, lines[len(lines)-1])
			}
			if len(parsed.Metrics) != len(tc.want) || parsed.Machine.CPUs < 1 {
				t.Fatalf("JSON report: %+v", parsed)
			}
		})
	}
}

func positive(t *testing.T, m map[string]Metric, names ...string) {
	t.Helper()
	for _, n := range names {
		if v, ok := m[n]; !ok || v.Value <= 0 {
			t.Errorf("%s = %+v, want a positive figure", n, v)
		}
	}
}

func TestRunRejectsUnknownSuite(t *testing.T) {
	var out bytes.Buffer
	_, err := Run(context.Background(), Options{Only: []string{"mesh", "nope"}}, &out)
	if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "proxy, mesh, tools") {
		t.Fatalf("err = %v; want it to name the suite and list the known ones", err)
	}
	if out.Len() != 0 {
		t.Fatalf("Run printed before rejecting its options: %q", out.String())
	}
}

// A suite whose context ends fails with an error and leaves nothing
// running (goleak checks the latter when the package's tests end).
func TestSuitesStopWhenCancelled(t *testing.T) {
	bins := testOptions(t)
	for _, s := range Suites() {
		if !slices.Contains([]string{"proxy", "mesh", "tools"}, s.Name) {
			continue
		}
		t.Run(s.Name, func(t *testing.T) {
			// The context ends as the suite reports its first measurement,
			// so it is cancelled mid-run however fast the machine is.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			log := slog.New(cancelOnRecord{cancel})
			done := make(chan error, 1)
			go func() {
				o := bins
				o.Logger = log
				_, err := s.Run(ctx, o)
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("suite succeeded although its context ended mid-run")
				}
			case <-time.After(30 * time.Second):
				t.Fatal("suite still running 30 s after its context ended")
			}
		})
	}
}

// cancelOnRecord is a log handler that cancels a context at the first record.
type cancelOnRecord struct{ cancel context.CancelFunc }

func (h cancelOnRecord) Enabled(context.Context, slog.Level) bool { return true }
func (h cancelOnRecord) Handle(context.Context, slog.Record) error {
	h.cancel()
	return nil
}
func (h cancelOnRecord) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h cancelOnRecord) WithGroup(string) slog.Handler      { return h }

func TestMeasureDetectionRejectsUnknownFault(t *testing.T) {
	if _, err := measureDetection(context.Background(), "melted"); err == nil || !strings.Contains(err.Error(), "melted") {
		t.Fatalf("err = %v", err)
	}
}

// Go benchmarks over the suites' own functions. The scenario benchmarks
// (convergence, detection, links) report their figure as a custom
// metric; run them with a small -benchtime such as 3x.

func BenchmarkRelayHop(b *testing.B) {
	l, err := startMeshLine(context.Background(), 3)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	for _, hops := range []int{1, 3} {
		b.Run(fmt.Sprintf("hops=%d", hops), func(b *testing.B) {
			for b.Loop() {
				if err := l.call(b.Context(), hops); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkConvergence(b *testing.B) {
	for _, size := range []int{16, 64} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, uint64(size)))
			var cold, join time.Duration
			for b.Loop() {
				r, err := measureConvergence(b.Context(), size, rng)
				if err != nil {
					b.Fatal(err)
				}
				cold += r.cold
				join += r.join
			}
			b.ReportMetric(ms(cold)/float64(b.N), "cold-ms")
			b.ReportMetric(ms(join)/float64(b.N), "join-ms")
			b.ReportMetric(0, "ns/op") // setup dominates it; the figures above are timed alone
		})
	}
}

// The silent case takes about 5 s per iteration (LAN timings).
func BenchmarkDetection(b *testing.B) {
	for _, fault := range []string{faultKilled, faultSilent} {
		b.Run(fault, func(b *testing.B) {
			var total time.Duration
			for b.Loop() {
				d, err := measureDetection(b.Context(), fault)
				if err != nil {
					b.Fatal(err)
				}
				total += d
			}
			b.ReportMetric(ms(total)/float64(b.N), "detect-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func BenchmarkLinks(b *testing.B) {
	var last links
	for b.Loop() {
		var err error
		if last, err = measureLinks(b.Context(), 50); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(ms(median(last.handshakes)), "handshake-ms")
	b.ReportMetric(last.bytes, "bytes/link")
	b.ReportMetric(last.goroutines, "goroutines/link")
	b.ReportMetric(0, "ns/op")
}

func benchTool(b *testing.B, op func(tl *toolsLine) func(context.Context, bool) error) {
	tl, err := startToolsLine(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	defer tl.Close()
	for _, relay := range []bool{false, true} {
		name := "on-target"
		if relay {
			name = "relay"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := op(tl)(b.Context(), relay); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkToolExec(b *testing.B) {
	benchTool(b, func(tl *toolsLine) func(context.Context, bool) error { return tl.exec })
}

func BenchmarkToolRead1MB(b *testing.B) {
	benchTool(b, func(tl *toolsLine) func(context.Context, bool) error { return tl.read })
}

// BenchmarkObservePath is one proxied request (client -> A -> mesh -> B ->
// upstream, in process) with telemetry off, with metrics (the default) and
// with every request's spans exported; the observe suite runs the same
// clusters under 16 clients.
func BenchmarkObservePath(b *testing.B) {
	up, err := startSynthetic(4)
	if err != nil {
		b.Fatal(err)
	}
	defer up.Close()
	sink, err := startSpanSink()
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	for _, c := range []struct {
		name string
		otel map[string]any
		off  bool
	}{
		{"off", nil, true},
		{"metrics", nil, false},
		{"traced", map[string]any{"endpoint": sink.URL, "sampleRatio": 1}, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			p, err := startObservedPath(ctx, c.name, up.URL(), c.otel, c.off)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			if _, err := p.load(ctx, 1, 100); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			cpu0, ok0 := processCPU()
			if _, err := p.load(ctx, 1, b.N); err != nil {
				b.Fatal(err)
			}
			// CPU time moves less than wall time when other processes
			// load the machine.
			if cpu1, ok1 := processCPU(); ok0 && ok1 {
				b.ReportMetric(float64(cpu1-cpu0)/float64(b.N)/1000, "cpu-µs/op")
			}
		})
	}
}
