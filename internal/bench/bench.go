// Package bench is the clawmatrix-bench command: it starts real nodes on
// loopback (in its own process, and as clawmatrix-plugin processes),
// measures the proxy, the mesh, the remote tools, failover and a soak run,
// and prints a table for people and one JSON line for tools.
//
// Figures that depend on the machine are reported as ratios or differences
// against a baseline measured in the same run.
package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Options tune a bench run.
type Options struct {
	// Quick shrinks every suite (fewer requests, shorter soak) so the whole
	// run takes well under a minute; the tests use it.
	Quick bool
	// Soak is how long the soak suite runs; 0 means its default
	// (DefaultSoak, or a few seconds when Quick).
	Soak time.Duration
	// Only lists the suites to run by name; empty runs all.
	Only []string
	// Logger receives progress; nil discards it.
	Logger *slog.Logger
	// NodeBin is the clawmatrix-plugin binary the proxy, failover and soak
	// suites start nodes with (`node --config FILE`); empty means a
	// clawmatrix-plugin beside this executable.
	NodeBin string
	// RelayBin is the binary the proxy suite starts its yardstick proxies
	// with (RelayCommand, a mode of clawmatrix-bench); empty means this
	// executable.
	RelayBin string
}

// DefaultSoak is the soak duration when Options.Soak is 0.
const DefaultSoak = 3 * time.Minute

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// Metric is one measured figure.
type Metric struct {
	Suite string  `json:"suite"`
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// Goal, when set, is the target the figure is held to.
	Goal *Goal `json:"goal,omitempty"`
	// Note says how the figure was obtained, where the name alone does not.
	Note string `json:"note,omitempty"`
}

// Goal is a bound on a metric: Op is "<=" or ">=".
type Goal struct {
	Op    string  `json:"op"`
	Bound float64 `json:"bound"`
}

// AtMost and AtLeast build goals.
func AtMost(v float64) *Goal  { return &Goal{Op: "<=", Bound: v} }
func AtLeast(v float64) *Goal { return &Goal{Op: ">=", Bound: v} }

// Met reports whether the metric meets its goal; ok is false when there is none.
func (m Metric) Met() (met, ok bool) {
	if m.Goal == nil {
		return false, false
	}
	switch m.Goal.Op {
	case "<=":
		return m.Value <= m.Goal.Bound, true
	case ">=":
		return m.Value >= m.Goal.Bound, true
	}
	return false, false
}

// Suite is a named group of measurements.
type Suite struct {
	Name string
	// About is one line for `bench --help`.
	About string
	Run   func(ctx context.Context, o Options) ([]Metric, error)
}

// Suites lists every suite in the order Run runs them.
func Suites() []Suite {
	return []Suite{
		{"proxy", "model proxy against the upstream directly and against two chained reverse proxy processes: throughput, latency, first chunk, 1,000 streams, memory per stream", runProxy},
		{"mesh", "relay cost per hop, convergence for 16 and 64 nodes, failure detection, link handshake time, memory per idle link", runMesh},
		{"tools", "cluster_exec and a 1 MB cluster_read, direct and through a relay", runTools},
		{"delivery", "durable outbox: messages/s stored, delivered and reported, with and without fsync; first redelivery after a cut link heals; memory and disk per queued message", runDelivery},
		{"failover", "three nodes serve one model; one is killed under steady load", runFailover},
		{"soak", "mixed proxy, tool and handoff traffic with nodes restarting", runSoak},
		{"sim", "256 and 1,000 simulated nodes in this process (in-memory network): convergence after a join and a death, link and gossip bytes per node at rest and during churn, memory per node", runSim},
		{"observe", "cost of metrics and of exported spans on the proxied path, against telemetry off", runObserve},
	}
}

// Report is the outcome of a run.
type Report struct {
	Started  time.Time `json:"started"`
	Machine  Machine   `json:"machine"`
	Metrics  []Metric  `json:"metrics"`
	Failures []string  `json:"failures,omitempty"` // suites that could not finish, with why
}

// Machine describes where the figures came from.
type Machine struct {
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	CPUs   int    `json:"cpus"`
	CPU    string `json:"cpu,omitempty"`
	Go     string `json:"go"`
	Memory string `json:"memory,omitempty"`
}

// Run runs the selected suites, then writes the table and the JSON line to w.
// A suite that fails is reported and the others still run; the error says
// which failed.
func Run(ctx context.Context, o Options, w io.Writer) (Report, error) {
	suites := Suites()
	for _, name := range o.Only {
		if !slices.ContainsFunc(suites, func(s Suite) bool { return s.Name == name }) {
			return Report{}, fmt.Errorf("unknown suite %q; choose from %s", name, strings.Join(SuiteNames(), ", "))
		}
	}
	rep := Report{Started: time.Now().UTC(), Machine: thisMachine()}
	log := o.logger()
	for _, s := range suites {
		if len(o.Only) > 0 && !slices.Contains(o.Only, s.Name) {
			continue
		}
		if ctx.Err() != nil {
			rep.Failures = append(rep.Failures, s.Name+": "+ctx.Err().Error())
			continue
		}
		log.Info("suite starting", "suite", s.Name)
		start := time.Now()
		ms, err := s.Run(ctx, o)
		for i := range ms {
			ms[i].Suite = s.Name
		}
		rep.Metrics = append(rep.Metrics, ms...)
		if err != nil {
			rep.Failures = append(rep.Failures, s.Name+": "+err.Error())
			log.Error("suite failed", "suite", s.Name, "err", err)
		}
		log.Info("suite done", "suite", s.Name, "took", time.Since(start).Round(time.Millisecond))
	}
	writeTable(w, rep)
	line, err := json.Marshal(rep)
	if err != nil {
		return rep, err
	}
	fmt.Fprintf(w, "%s\n", line)
	if len(rep.Failures) > 0 {
		return rep, fmt.Errorf("%d suite(s) failed: %s", len(rep.Failures), strings.Join(rep.Failures, "; "))
	}
	return rep, nil
}

// SuiteNames lists the suites' names.
func SuiteNames() []string {
	var names []string
	for _, s := range Suites() {
		names = append(names, s.Name)
	}
	return names
}

func writeTable(w io.Writer, rep Report) {
	m := rep.Machine
	fmt.Fprintf(w, "clawmatrix bench, %s, %s/%s, %d CPUs %s, %s\n\n", rep.Started.Format(time.RFC3339), m.OS, m.Arch, m.CPUs, m.CPU, m.Go)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUITE\tMETRIC\tVALUE\tGOAL\t")
	for _, x := range rep.Metrics {
		goal := ""
		if x.Goal != nil {
			goal = x.Goal.Op + " " + formatValue(x.Goal.Bound, x.Unit)
			if met, _ := x.Met(); met {
				goal += "  ok"
			} else {
				goal += "  MISSED"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", x.Suite, x.Name, formatValue(x.Value, x.Unit), goal)
	}
	tw.Flush()
	for _, f := range rep.Failures {
		fmt.Fprintf(w, "FAILED %s\n", f)
	}
	fmt.Fprintln(w)
}

func formatValue(v float64, unit string) string {
	var s string
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		s = fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		s = fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		s = fmt.Sprintf("%.2f", v)
	default:
		s = fmt.Sprintf("%.3f", v)
	}
	if unit == "" {
		return s
	}
	if unit == "x" {
		return s + "x"
	}
	return s + " " + unit
}

func thisMachine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "MemTotal" {
				m.Memory = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}
