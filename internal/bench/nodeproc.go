package bench

// Standalone nodes as real processes (`clawmatrix-plugin node`), for the
// suites that kill or restart nodes: a SIGKILL must behave like a crashed
// machine, which an in-process node cannot imitate.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Deadlines for node processes.
const (
	nodeStartTimeout = 20 * time.Second
	nodeStopTimeout  = 5 * time.Second
	// joinTimeout bounds the wait until a node is seen by another.
	joinTimeout = 20 * time.Second
)

// benchSecret is the cluster secret of the nodes the fault suites start.
const benchSecret = "bench-fault-suites-secret-0123456789"

// nodeBin is the binary that runs `node`: Options.NodeBin, else this one.
func (o Options) nodeBin() (string, error) {
	if o.NodeBin != "" {
		return o.NodeBin, nil
	}
	bin, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locating the clawmatrix-plugin binary to start nodes: %w (set Options.NodeBin)", err)
	}
	return bin, nil
}

// nodeProc is one `clawmatrix-plugin node` process.
type nodeProc struct {
	ID       string
	MeshURL  string
	ProxyURL string
	ProxyKey string

	cmd    *exec.Cmd
	stderr *tailWriter
	done   chan struct{} // closed once the process has been waited for
	state  *os.ProcessState
}

// startNodeProc writes cfg (a plugin config object; secret and proxyPort
// are filled in) to dir and starts a node with it, returning once the node
// has printed its addresses. On error nothing is left running.
func startNodeProc(ctx context.Context, bin, dir string, cfg map[string]any, workspace string) (*nodeProc, error) {
	id, _ := cfg["nodeId"].(string)
	cfg["secret"] = benchSecret
	cfg["proxyPort"] = 0
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if _, problems := schema.Parse(raw); len(problems) > 0 {
		return nil, fmt.Errorf("config for node %s: %v", id, problems)
	}
	path := filepath.Join(dir, id+".json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		return nil, err
	}
	args := []string{"node", "--config", path}
	if workspace != "" {
		args = append(args, "--workspace", workspace)
	}
	p := &nodeProc{ID: id, stderr: &tailWriter{max: 8 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = nodeSysProcAttr()
	// A child that still holds the stderr pipe must not stall Wait.
	p.cmd.WaitDelay = 2 * time.Second
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting node %s (%s): %w", id, bin, err)
	}
	up := make(chan struct{})
	var addrs struct{ mesh, proxy, key string }
	go func() {
		// Reads stdout to its end (so the node never blocks on it), then
		// reaps the process.
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			if signalled {
				continue
			}
			if v, ok := strings.CutPrefix(line, "mesh: "); ok {
				addrs.mesh = v
			} else if v, ok := strings.CutPrefix(line, "model proxy: "); ok {
				addrs.proxy = v
			} else if v, ok := strings.CutPrefix(line, "proxy key: "); ok {
				addrs.key = v
				signalled = true
				close(up)
			}
		}
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
	}()
	timer := time.NewTimer(nodeStartTimeout)
	defer timer.Stop()
	select {
	case <-up:
		p.MeshURL, p.ProxyURL, p.ProxyKey = addrs.mesh, addrs.proxy, addrs.key
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("node %s exited before it was up (%s); its stderr ends:\n%s", id, p.state, p.stderr)
	case <-timer.C:
		p.Kill()
		return nil, fmt.Errorf("node %s printed no addresses within %s; its stderr ends:\n%s", id, nodeStartTimeout, p.stderr)
	case <-ctx.Done():
		p.Kill()
		return nil, ctx.Err()
	}
}

// Pid is the process id.
func (p *nodeProc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended and been reaped.
func (p *nodeProc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// State is the exit state, nil while the process runs.
func (p *nodeProc) State() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.state
}

// Kill sends SIGKILL (a crash) and waits until the process is reaped.
func (p *nodeProc) Kill() error {
	if p.Exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	return p.wait(nodeStopTimeout)
}

// Stop asks the node to shut down (SIGTERM) and kills it if it has not
// exited within nodeStopTimeout.
func (p *nodeProc) Stop() error {
	if p.Exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(nodeStopTimeout); err == nil {
		if !p.state.Success() {
			return fmt.Errorf("node %s shut down with %s; its stderr ends:\n%s", p.ID, p.state, p.stderr)
		}
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(nodeStopTimeout)
	return fmt.Errorf("node %s did not exit within %s of SIGTERM and was killed", p.ID, nodeStopTimeout)
}

func (p *nodeProc) wait(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("node %s (pid %d) was not reaped within %s", p.ID, p.Pid(), d)
	}
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// hubConfig is the config of the in-process node the load comes from: it
// listens on 127.0.0.1 for the node processes to dial it and wants model
// through its proxy.
func hubConfig(id, model string) (*schema.Config, error) {
	raw, err := json.Marshal(map[string]any{
		"nodeId": id, "secret": benchSecret, "listen": true, "listenHost": "127.0.0.1", "listenPort": 0,
		"proxyPort": 0, "proxyModels": []any{map[string]any{"id": model}},
	})
	if err != nil {
		return nil, err
	}
	cfg, problems := schema.Parse(raw)
	if len(problems) > 0 {
		return nil, fmt.Errorf("hub config: %v", problems)
	}
	return cfg, nil
}

// startHub starts the in-process hub node (see hubConfig).
func startHub(ctx context.Context, id, model string) (*cluster.Runtime, error) {
	cfg, err := hubConfig(id, model)
	if err != nil {
		return nil, err
	}
	return cluster.Start(ctx, cluster.Options{Config: cfg})
}

// waitPeer returns once node sees peer id with every model and agent named,
// or fails after joinTimeout.
func waitPeer(ctx context.Context, node *mesh.Node, id string, models, agents []string) error {
	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	for {
		changed := node.Changed()
		if p, ok := node.Peer(id); ok && offers(p, models, agents) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("node %s did not see node %s with models %v and agents %v within %s", node.ID(), id, models, agents, joinTimeout)
			}
			return ctx.Err()
		}
	}
}

func offers(p mesh.PeerInfo, models, agents []string) bool {
	has := func(n int, get func(int) string, want string) bool {
		for i := range n {
			if get(i) == want {
				return true
			}
		}
		return false
	}
	for _, m := range models {
		if !has(len(p.Models), func(i int) string { return p.Models[i].ID }, m) {
			return false
		}
	}
	for _, a := range agents {
		if !has(len(p.Agents), func(i int) string { return p.Agents[i].ID }, a) {
			return false
		}
	}
	return true
}
