package bench

// Standalone nodes as real processes (`clawmatrix-plugin node`), for the
// suites that kill or restart nodes: a SIGKILL must behave like a crashed
// machine, which an in-process node cannot imitate.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// joinTimeout bounds the wait until a node is seen by another.
const joinTimeout = 20 * time.Second

// benchSecret is the cluster secret of the nodes the fault suites start.
const benchSecret = "bench-fault-suites-secret-0123456789"

// nodeBin is the clawmatrix-plugin binary that runs `node`: Options.NodeBin,
// else a clawmatrix-plugin beside this executable (where make bench builds
// both). The nodes measured are the shipped sidecar, never a build of the
// bench.
func (o Options) nodeBin() (string, error) {
	if o.NodeBin != "" {
		return o.NodeBin, nil
	}
	self, err := o.relayBin()
	if err != nil {
		return "", fmt.Errorf("locating the clawmatrix-plugin binary to start nodes with: %w", err)
	}
	bin := filepath.Join(filepath.Dir(self), "clawmatrix-plugin")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("the bench starts nodes as clawmatrix-plugin processes and found none beside %s: "+
			"build both into one directory (make bench does: go build -o bin/ ./cmd/clawmatrix-plugin ./cmd/clawmatrix-bench), "+
			"or pass --node-bin PATH", self)
	}
	return bin, nil
}

// relayBin is the binary that runs the yardstick proxies (RelayCommand):
// Options.RelayBin, else this executable, the bench.
func (o Options) relayBin() (string, error) {
	if o.RelayBin != "" {
		return o.RelayBin, nil
	}
	bin, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("locating the bench's own binary to start relays with: %w (set Options.RelayBin)", err)
	}
	// A test binary has neither the relay mode nor a clawmatrix-plugin
	// beside it; run with no arguments it would run the tests again.
	if strings.HasSuffix(filepath.Base(bin), ".test") {
		return "", fmt.Errorf("%s is a test binary, which cannot run nodes or relays: set Options.NodeBin and Options.RelayBin", bin)
	}
	return bin, nil
}

// nodeProc is one `clawmatrix-plugin node` process.
type nodeProc struct {
	*proc
	ID       string
	MeshURL  string // empty when the node does not listen
	ProxyURL string
	ProxyKey string
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
	p, v, err := startProc(ctx, "node "+id, bin, args, "mesh: ", "model proxy: ", "proxy key: ")
	if err != nil {
		return nil, err
	}
	return &nodeProc{proc: p, ID: id, MeshURL: v[0], ProxyURL: v[1], ProxyKey: v[2]}, nil
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
