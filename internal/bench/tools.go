package bench

// The tools suite: what the mesh costs a remote tool. The same cluster_exec
// and 1 MB cluster_read run on the target itself (its own client, no link)
// and from a node two hops away through a relay. The suite and the package's
// Go benchmarks share the functions below.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/remote"
	"github.com/clawmatrix/clawmatrix/schema"
)

// readFileBytes is the size of the file cluster_read fetches.
const readFileBytes = 1 << 20

// toolsLine is a - b - c with remote tools served on c from a temp workspace.
type toolsLine struct {
	nodes  []*mesh.Node
	target *remote.Target
	dir    string
	// onTarget is c's own client; viaRelay is a's, two hops from c.
	onTarget, viaRelay *remote.Client
	execCall, readCall schema.ToolCall
	// readXs is how many 'x' the file holds, to check reads are whole.
	readXs int
}

func startToolsLine(ctx context.Context) (tl *toolsLine, err error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "clawmatrix-bench-tools-")
	if err != nil {
		return nil, err
	}
	tl = &toolsLine{dir: dir}
	defer func() {
		if err != nil {
			tl.Close()
		}
	}()
	line := strings.Repeat("x", 99) + "\n"
	content := strings.Repeat(line, readFileBytes/len(line))
	tl.readXs = strings.Count(content, "x")
	if err := os.WriteFile(filepath.Join(dir, "big.txt"), []byte(content), 0o644); err != nil {
		return nil, err
	}
	if tl.nodes, err = startNodes(ctx, randomSecret(), []string{"a", "b", "c"}, nil); err != nil {
		return nil, err
	}
	a, b, c := tl.nodes[0], tl.nodes[1], tl.nodes[2]
	tl.target, err = remote.Register(c, remote.TargetConfig{
		ToolProxy:    schema.ToolProxy{Enabled: true, Allow: []string{"*"}, MaxOutputBytes: 4 << 20, MaxTimeoutMs: 60000},
		WorkspaceDir: dir,
	})
	if err != nil {
		return nil, err
	}
	if err := dial(a, b); err != nil {
		return nil, err
	}
	if err := dial(c, b); err != nil {
		return nil, err
	}
	if err := waitConverged(ctx, tl.nodes); err != nil {
		return nil, err
	}
	if p, _ := a.Peer("c"); p.Status != mesh.StatusRelay {
		return nil, fmt.Errorf("tools line: a reaches c as %q, want through a relay", p.Status)
	}
	tl.onTarget, tl.viaRelay = &remote.Client{Node: c}, &remote.Client{Node: a}
	if tl.execCall, err = decodeCall(schema.ToolExec, schema.ExecArgs{Node: "c", Command: "echo hi"}); err != nil {
		return nil, err
	}
	if tl.readCall, err = decodeCall(schema.ToolRead, schema.ReadArgs{Node: "c", Path: "big.txt"}); err != nil {
		return nil, err
	}
	return tl, nil
}

// decodeCall makes the call of tool with args, as the plugin does once per
// agent's call; the bench decodes once and times the calls alone.
func decodeCall(tool string, args any) (schema.ToolCall, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return schema.ToolCall{}, err
	}
	call, problems := schema.DecodeToolCall(tool, raw)
	if problems != nil {
		return call, fmt.Errorf("the bench built invalid %s arguments: %v", tool, problems)
	}
	return call, nil
}

func (tl *toolsLine) Close() {
	closeNodes(tl.nodes)
	if tl.target != nil {
		tl.target.Close()
	}
	os.RemoveAll(tl.dir)
}

func (tl *toolsLine) client(relay bool) *remote.Client {
	if relay {
		return tl.viaRelay
	}
	return tl.onTarget
}

// exec runs `echo hi` on c and checks its output.
func (tl *toolsLine) exec(ctx context.Context, relay bool) error {
	r := tl.client(relay).Call(ctx, tl.execCall)
	if r.IsError || !strings.Contains(r.Text, "hi") {
		return fmt.Errorf("cluster_exec (relay %v): isError %v: %.300s", relay, r.IsError, r.Text)
	}
	return nil
}

// read fetches the 1 MB file from c and checks that all of it came back.
func (tl *toolsLine) read(ctx context.Context, relay bool) error {
	r := tl.client(relay).Call(ctx, tl.readCall)
	if got := strings.Count(r.Text, "x"); r.IsError || got != tl.readXs {
		return fmt.Errorf("cluster_read of 1 MB (relay %v): isError %v, %d of %d x's: %.200q", relay, r.IsError, got, tl.readXs, r.Text)
	}
	return nil
}

// toolLatency is the median of one tool call on the target and via a relay.
type toolLatency struct{ direct, relay time.Duration }

func (t toolLatency) ratio() float64 { return float64(t.relay) / float64(t.direct) }

// measureTool alternates op on the target and through the relay, n times
// each, after a short warm-up.
func measureTool(ctx context.Context, n int, op func(ctx context.Context, relay bool) error) (toolLatency, error) {
	for i := 0; i < min(n/10, 10); i++ {
		for _, relay := range []bool{false, true} {
			if err := op(ctx, relay); err != nil {
				return toolLatency{}, err
			}
		}
	}
	direct := make([]time.Duration, n)
	relayed := make([]time.Duration, n)
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := op(ctx, false); err != nil {
			return toolLatency{}, err
		}
		t1 := time.Now()
		if err := op(ctx, true); err != nil {
			return toolLatency{}, err
		}
		direct[i], relayed[i] = t1.Sub(t0), time.Since(t1)
	}
	return toolLatency{direct: median(direct), relay: median(relayed)}, nil
}

func runTools(ctx context.Context, o Options) ([]Metric, error) {
	execs, reads := 300, 100
	if o.Quick {
		execs, reads = 10, 3
	}
	tl, err := startToolsLine(ctx)
	if err != nil {
		return nil, err
	}
	defer tl.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var out []Metric
	o.logger().Info("tools: cluster_exec", "calls", execs)
	ex, err := measureTool(ctx, execs, tl.exec)
	if err != nil {
		return out, err
	}
	out = append(out,
		Metric{Name: "cluster_exec p50 on the target", Value: ms(ex.direct), Unit: "ms", Note: "`echo hi` through the target's own client, no link"},
		Metric{Name: "cluster_exec through a relay / on the target", Value: ex.ratio(), Unit: "x",
			Note: fmt.Sprintf("p50 %.3f ms from a node two hops away, %d calls each", ms(ex.relay), execs)},
	)
	o.logger().Info("tools: cluster_read 1 MB", "calls", reads)
	rd, err := measureTool(ctx, reads, tl.read)
	if err != nil {
		return out, err
	}
	out = append(out,
		Metric{Name: "cluster_read 1 MB p50 on the target", Value: ms(rd.direct), Unit: "ms", Note: "through the target's own client, no link"},
		Metric{Name: "cluster_read 1 MB through a relay / on the target", Value: rd.ratio(), Unit: "x",
			Note: fmt.Sprintf("p50 %.3f ms from a node two hops away, %d calls each", ms(rd.relay), reads)},
	)
	return out, nil
}
