// Package demo runs the README's main job: a three-node cluster on loopback
// that shows topology, a relayed streamed completion, a remote command and a
// handoff, then shuts everything down.
package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/remote"
	"github.com/clawmatrix/clawmatrix/schema"
)

const (
	secret = "demo-cluster-secret-0123456789"
	model  = "demo-llm"
)

// agentScript stands in for `openclaw agent ... --json` on node c: the demo
// has no OpenClaw, so c's "agent" is this script, run the same way.
const agentScript = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    --agent) shift; agent="$1" ;;
    --message) shift; msg="$1" ;;
  esac
  shift
done
words=$(printf '%s' "$msg" | wc -w | tr -d ' ')
printf '{"runId":"demo","status":"ok","result":{"payloads":[{"text":"%s on %s: got your task (%s words); summary: the cluster works end to end."}]}}\n' "$agent" "$(hostname)" "$words"
`

// Run starts the cluster, runs every step, prints what happens to w and
// stops everything before returning.
func Run(ctx context.Context, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	started := time.Now()
	step := func(name string, t0 time.Time) {
		fmt.Fprintf(w, "   (%s: %s)\n\n", name, time.Since(t0).Round(100*time.Microsecond))
	}

	dir, err := os.MkdirTemp("", "clawmatrix-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	workspace := filepath.Join(dir, "workspace-c")
	agentBin := filepath.Join(dir, "openclaw-standin")
	if err := os.MkdirAll(workspace, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(workspace, "notes.txt"), []byte("this file lives only on node c\n"), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(agentBin, []byte(agentScript), 0o755); err != nil {
		return err
	}

	llm, err := startEchoModel("node c's model answers: ")
	if err != nil {
		return err
	}
	defer llm.close()

	t0 := time.Now()
	fmt.Fprintln(w, "1. Starting three nodes in a line: a — b — c (c serves a model, tools and an agent)")
	c, err := startNode(ctx, map[string]any{
		"nodeId": "c", "listen": true, "tags": []string{"gpu", "linux"},
		"agents":      []any{map[string]any{"id": "researcher", "description": "digs through data on node c"}},
		"models":      []any{map[string]any{"id": model, "provider": "demo", "description": "echo model on c", "upstream": map[string]any{"baseUrl": llm.URL()}}},
		"toolProxy":   map[string]any{"enabled": true, "allow": []string{"*"}},
		"openclawBin": agentBin,
	}, workspace)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := startNode(ctx, map[string]any{"nodeId": "b", "listen": true, "tags": []string{"relay"},
		"peers": []any{map[string]any{"url": c.Mesh().URL(), "nodeId": "c"}}}, "")
	if err != nil {
		return err
	}
	defer b.Close()
	a, err := startNode(ctx, map[string]any{"nodeId": "a",
		"peers":       []any{map[string]any{"url": b.Mesh().URL(), "nodeId": "b"}},
		"agents":      []any{map[string]any{"id": "main", "description": "the user's assistant on a"}},
		"proxyModels": []any{map[string]any{"id": model}}}, "")
	if err != nil {
		return err
	}
	defer a.Close()
	// Seeing c is not enough: its model and agent arrive with its own
	// entry, which may come after b's word that c is linked.
	if err := waitFor(ctx, a.Mesh(), "c", func(p mesh.PeerInfo) bool {
		return slices.ContainsFunc(p.Models, func(m mesh.ModelInfo) bool { return m.ID == model }) && len(p.Agents) > 0
	}); err != nil {
		return err
	}
	fmt.Fprintln(w, "   every link is a Noise session between node keys; a's traffic to c is sealed end to end, so b relays what it cannot read")
	step("cluster converged", t0)

	t0 = time.Now()
	fmt.Fprintln(w, "2. Topology as node a sees it:")
	for _, p := range a.Peers() {
		how := "direct"
		if p.Status == mesh.StatusRelay {
			how = "via " + p.Via
		}
		var agents, models []string
		for _, ag := range p.Agents {
			agents = append(agents, ag.ID)
		}
		for _, m := range p.Models {
			models = append(models, m.ID)
		}
		fmt.Fprintf(w, "   %-3s %-8s rtt=%-9s tags=%-12s agents=%-12s models=%s\n", p.NodeID, how,
			p.RTT.Round(time.Microsecond), strings.Join(p.Tags, ","), strings.Join(agents, ","), strings.Join(models, ","))
	}
	step("topology", t0)

	t0 = time.Now()
	fmt.Fprintf(w, "3. Streamed completion from a's model proxy (%s), served by c through b:\n   ", a.ProxyURL())
	ttfc, err := streamCompletion(ctx, w, a.ProxyURL(), a.ProxyKey())
	if err != nil {
		return fmt.Errorf("streamed completion: %w", err)
	}
	fmt.Fprintf(w, "\n   first chunk after %s\n", ttfc.Round(10*time.Microsecond))
	step("completion", t0)

	t0 = time.Now()
	fmt.Fprintln(w, "4. cluster_exec on c from a:")
	res := callTool(ctx, a, "cluster_exec", mustJSON(map[string]any{"node": "c", "command": "echo \"pwd: $(pwd)\"; cat notes.txt"}))
	if res.IsError {
		return fmt.Errorf("cluster_exec: %s", res.Text)
	}
	fmt.Fprintln(w, indent(res.Text))
	step("exec", t0)

	t0 = time.Now()
	fmt.Fprintln(w, "5. cluster_handoff from a to agent \"researcher\" (on c):")
	res = callTool(ctx, a, "cluster_handoff", mustJSON(map[string]any{"agent": "researcher", "task": "Summarise what you can see on your node.", "context": "asked by the demo"}))
	if res.IsError {
		return fmt.Errorf("cluster_handoff: %s", res.Text)
	}
	fmt.Fprintln(w, indent(res.Text))
	step("handoff", t0)

	t0 = time.Now()
	fmt.Fprintln(w, "6. cluster_handoff from a to a node tagged \"gpu\", without waiting; then cluster_tasks:")
	res = callTool(ctx, a, "cluster_handoff", mustJSON(map[string]any{"tags": []string{"gpu"}, "task": "Count the files in your workspace.", "wait": false}))
	if res.IsError {
		return fmt.Errorf("cluster_handoff with wait false: %s", res.Text)
	}
	fmt.Fprintln(w, indent(res.Text))
	id := res.Details.(cluster.TaskDetails).ID
	for {
		rec, err := a.Delivery().Get(id)
		if err != nil {
			return err
		}
		if rec.State.Final() {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("task %s still %s: %w", id, rec.State, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	res = callTool(ctx, a, "cluster_tasks", mustJSON(map[string]any{"id": id}))
	fmt.Fprintln(w, indent(res.Text))
	step("background handoff", t0)

	fmt.Fprintf(w, "Done in %s. Shutting the cluster down.\n", time.Since(started).Round(time.Millisecond))
	return nil
}

// callTool runs a cluster tool from node rt as an agent's call would: the
// arguments checked and decoded once, then sent.
func callTool(ctx context.Context, rt *cluster.Runtime, name string, args []byte) remote.Result {
	call, problems := schema.DecodeToolCall(name, args)
	if problems != nil {
		return remote.Result{Text: fmt.Sprintf("%s: invalid arguments: %v", name, problems), IsError: true}
	}
	return rt.CallTool(ctx, call, cluster.CallInfo{})
}

func startNode(ctx context.Context, fields map[string]any, workspace string) (*cluster.Runtime, error) {
	fields["secret"] = secret
	fields["proxyPort"] = 0
	if fields["listen"] == true {
		fields["listenHost"] = "127.0.0.1"
		fields["listenPort"] = 0
	}
	cfg, problems := schema.Parse(mustJSON(fields))
	if len(problems) > 0 {
		return nil, fmt.Errorf("demo config for %v: %v", fields["nodeId"], problems)
	}
	timing := mesh.DefaultLocalConfig()
	return cluster.Start(ctx, cluster.Options{Config: cfg, WorkspaceDir: workspace, Mesh: &timing})
}

// waitFor returns once node knows the node id and ready holds for it.
func waitFor(ctx context.Context, node *mesh.Node, id string, ready func(mesh.PeerInfo) bool) error {
	for {
		changed := node.Changed()
		if p, ok := node.Peer(id); ok && ready(p) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("node %s never saw %s: %w", node.ID(), id, ctx.Err())
		}
	}
}

// streamCompletion prints the deltas of a streamed completion as they arrive
// and returns the time to the first content chunk.
func streamCompletion(ctx context.Context, w io.Writer, baseURL, key string) (time.Duration, error) {
	body := mustJSON(map[string]any{"model": model, "stream": true,
		"messages": []any{map[string]any{"role": "user", "content": "hello from node a, relayed by b"}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, msg)
	}
	var ttfc time.Duration
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || data == "[DONE]" {
			continue
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return 0, fmt.Errorf("bad chunk %q: %w", data, err)
		}
		for _, ch := range chunk.Choices {
			if ch.Delta.Content == "" {
				continue
			}
			if ttfc == 0 {
				ttfc = time.Since(start)
			}
			fmt.Fprint(w, ch.Delta.Content)
		}
	}
	if ttfc == 0 {
		return 0, fmt.Errorf("the stream ended without content")
	}
	return ttfc, sc.Err()
}

func mustJSON(v any) []byte {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // only ever called on literal maps built above
	}
	return data
}

func indent(s string) string {
	return "   " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n   ")
}
