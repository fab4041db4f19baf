//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clawmatrix/clawmatrix/internal/mockllm"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var clusterTools = []string{
	"cluster_peers", "cluster_exec", "cluster_read", "cluster_write",
	"cluster_tool", "cluster_handoff", "cluster_send", "cluster_tasks",
}

const (
	modelID  = "e2e-model"
	bobAgent = "bob"
	nodeA    = "node-a"
	nodeB    = "node-b"
	secret   = "e2e-cluster-secret-0123456789"
	mockProv = "mockprov"

	aAgentDesc = "Coordinator on node A"
	bAgentDesc = "Builder on node B who knows node B's files"
	bootLimit  = 4 * time.Minute
	turnLimit  = 4 * time.Minute
)

func nonce(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// cluster is the two-gateway setup shared by the subtests.
type cluster struct {
	a, b, bad *gateway
	insp      *gateway // A's config in a state dir of its own
	llm       *scriptedLLM
	bKey      string // node B's OpenClaw provider key for the mock
	bOnly     string // a value only node B's processes have in their environment
	// proxyPort is each node's model proxy port (insp shares A's).
	proxyPort map[*gateway]int
}

func modelEntry() map[string]any {
	return map[string]any{
		"id": modelID, "name": "mock model", "reasoning": false, "input": []string{"text"},
		"cost":          map[string]any{"input": 0, "output": 0, "cacheRead": 0, "cacheWrite": 0},
		"contextWindow": 128000, "maxTokens": 4096,
	}
}

// gatewayConfig is the OpenClaw config both gateways share; the caller adds
// models, agents and the plugin's config. OpenClaw's tool search is left
// at its default (the cluster tools deferred behind tool_call) unless the
// caller turns it off.
func gatewayConfig(port int, token, pluginDir, workspace string, pluginConfig map[string]any) map[string]any {
	return map[string]any{
		"gateway": map[string]any{
			"mode": "local", "port": port, "bind": "loopback",
			"auth": map[string]any{"mode": "token", "token": token},
			"http": map[string]any{"endpoints": map[string]any{"chatCompletions": map[string]any{"enabled": true}}},
		},
		// No background turns (heartbeat, memory dreaming): each one is an
		// unscripted model call that a stopping gateway would wait for.
		"agents": map[string]any{
			"defaults": map[string]any{"workspace": workspace, "heartbeat": map[string]any{"every": "0m"}},
		},
		"plugins": map[string]any{
			"load": map[string]any{"paths": []string{pluginDir}},
			"entries": map[string]any{
				"clawmatrix": map[string]any{
					"enabled": true,
					"hooks":   map[string]any{"allowConversationAccess": true},
					"config":  pluginConfig,
				},
				"memory-core": map[string]any{"config": map[string]any{"dreaming": map[string]any{"enabled": false}}},
			},
		},
	}
}

func TestTwoGatewayCluster(t *testing.T) {
	root := repoRoot(t)
	ocBin := openclawBinDir(t, root)

	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(14 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-30*time.Second))
	defer cancel()

	work, err := os.MkdirTemp("", "cmx-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("work dir %s", work)

	sidecar := buildSidecar(ctx, t, root, filepath.Join(work, "build"))
	pluginDir := filepath.Join(work, "plugin")
	stagePlugin(t, root, pluginDir)

	llm := startScriptedLLM(t)
	c := &cluster{llm: llm, bKey: "key-b-" + nonce(t), bOnly: "only-on-b-" + nonce(t)}

	meshPort := freePort(t, 1)

	// Node A: listens for peers, uses B's model through clawmatrix, serves nothing.
	aPort, aToken, aProxyPort := freePort(t, 12), "token-a-"+nonce(t), freePort(t, 1)
	aConfig := func(dir string) map[string]any {
		cfg := gatewayConfig(aPort, aToken, pluginDir, filepath.Join(dir, "ws"), map[string]any{
			"nodeId": nodeA, "secret": secret,
			"listen": true, "listenHost": "127.0.0.1", "listenPort": meshPort,
			"proxyPort":   aProxyPort,
			"agents":      []any{map[string]any{"id": "main", "description": aAgentDesc, "tags": []string{"coordinator"}}},
			"proxyModels": []any{map[string]any{"id": modelID, "nodeId": nodeB, "description": "the mock model node B serves"}},
			"tags":        []string{"e2e-a"},
			// Commands on B wait for the user's approval.
			"approvals": map[string]any{"tools": []string{"cluster_exec"}, "nodes": []string{nodeB}, "timeoutMs": approvalTimeout.Milliseconds()},
		})
		cfg["agents"].(map[string]any)["defaults"].(map[string]any)["model"] = map[string]any{"primary": "clawmatrix/" + modelID}
		return cfg
	}
	aDir := filepath.Join(work, "a")
	c.a = newGateway(t, "A", aDir, ocBin, aPort, aConfig(aDir))
	// The same config in its own state dir for `plugins inspect`, which would
	// otherwise hold A's database while A starts ("database is locked").
	inspDir := filepath.Join(work, "inspect")
	c.insp = newGateway(t, "inspect", inspDir, ocBin, aPort, aConfig(inspDir))

	bProxyPort := freePort(t, 1)
	// Node B: dials A, serves the model through its OpenClaw provider for the
	// mock, offers agent bob and runs remote tools.
	bDir := filepath.Join(work, "b")
	bConfig := gatewayConfig(freePort(t, 12), "token-b-"+nonce(t), pluginDir, filepath.Join(bDir, "ws"), map[string]any{
		"nodeId": nodeB, "secret": secret,
		"peers":       []any{map[string]any{"url": fmt.Sprintf("ws://127.0.0.1:%d", meshPort), "nodeId": nodeA}},
		"proxyPort":   bProxyPort,
		"agents":      []any{map[string]any{"id": bobAgent, "description": bAgentDesc, "tags": []string{"builder"}}},
		"models":      []any{map[string]any{"id": modelID, "provider": mockProv, "description": "mock model on node B"}},
		"toolProxy":   map[string]any{"enabled": true, "allow": []string{"*"}, "env": []string{"E2E_ONLY_ON_B"}},
		"openclawBin": filepath.Join(ocBin, "openclaw"),
		"tags":        []string{"e2e-b"},
	})
	// B's agents see the cluster tools directly: the other way OpenClaw
	// can show them.
	bConfig["tools"] = map[string]any{"toolSearch": false}
	bConfig["models"] = map[string]any{"providers": map[string]any{mockProv: map[string]any{
		"baseUrl": llm.URL(), "apiKey": c.bKey, "api": "openai-completions", "models": []any{modelEntry()},
	}}}
	bAgents := bConfig["agents"].(map[string]any)
	bAgents["defaults"].(map[string]any)["model"] = map[string]any{"primary": mockProv + "/" + modelID}
	bAgents["entries"] = map[string]any{bobAgent: map[string]any{"workspace": filepath.Join(bDir, "ws")}}
	c.b = newGateway(t, "B", bDir, ocBin, bConfig["gateway"].(map[string]any)["port"].(int), bConfig, "E2E_ONLY_ON_B="+c.bOnly)

	// A third config that OpenClaw must refuse: bad plugin config fields.
	badDir := filepath.Join(work, "bad")
	badConfig := gatewayConfig(freePort(t, 12), "token-bad-"+nonce(t), pluginDir, filepath.Join(badDir, "ws"), map[string]any{
		"nodeId": "node c!", "secret": "short", "listenPort": 70000,
	})
	c.bad = newGateway(t, "bad", badDir, ocBin, badConfig["gateway"].(map[string]any)["port"].(int), badConfig)

	c.proxyPort = map[*gateway]int{c.a: aProxyPort, c.insp: aProxyPort, c.b: bProxyPort}
	gateways := []*gateway{c.a, c.b, c.bad, c.insp}
	for _, g := range gateways {
		copyExecutable(t, sidecar, g.bin)
	}
	t.Cleanup(func() {
		for _, g := range gateways {
			g.kill()
		}
		if t.Failed() {
			for _, g := range gateways {
				g.dumpLogs(t)
			}
			t.Logf("--- mock model requests:\n%s", llm.summary())
			t.Logf("work dir kept for inspection: %s", work)
		} else if os.Getenv("CLAWMATRIX_E2E_KEEP") == "" {
			os.RemoveAll(work)
		}
		llm.Close()
	})

	// Both gateways boot in parallel with the checks that need no gateway.
	t.Run("boot", func(t *testing.T) {
		for _, g := range []*gateway{c.a, c.b} {
			t.Run("gateway "+g.name+" ready", func(t *testing.T) {
				t.Parallel()
				bootCtx, cancel := context.WithTimeout(ctx, bootLimit)
				defer cancel()
				if err := g.startWithRetry(bootCtx, t); err != nil {
					t.Fatal(err)
				}
			})
		}
		t.Run("plugins inspect", func(t *testing.T) {
			t.Parallel()
			testInspect(ctx, t, c.insp)
		})
		t.Run("invalid config refused", func(t *testing.T) {
			t.Parallel()
			testInvalidConfig(ctx, t, c.bad)
		})
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("cluster forms", func(t *testing.T) { testClusterForms(ctx, t, c) })
	if t.Failed() {
		t.FailNow()
	}
	t.Run("remote model and prompt context", func(t *testing.T) { testRemoteModel(ctx, t, c) })
	t.Run("cluster_exec on B after the user's approval", func(t *testing.T) { testApprovals(ctx, t, c) })
	t.Run("cluster_handoff to B's agent", func(t *testing.T) { testHandoff(ctx, t, c) })
	t.Run("background handoff reaches its session across a caller restart", func(t *testing.T) { testBackgroundHandoff(ctx, t, c) })
	t.Run("tool search: call forms and tokens", func(t *testing.T) { testToolSearch(ctx, t, c) })
	t.Run("openclaw clawmatrix commands", func(t *testing.T) { testCLI(ctx, t, c) })
	t.Run("sidecar restarts after a crash", func(t *testing.T) { testRestart(ctx, t, c) })
	t.Run("stop leaves no sidecar", func(t *testing.T) { testStop(t, c) })
	t.Run("the commands without a running gateway", func(t *testing.T) { testCLIWithoutGateway(ctx, t, c) })
	t.Run("config the sidecar refuses", func(t *testing.T) { testSidecarRefusesConfig(ctx, t, c.insp) })
}

// testInspect: OpenClaw loads the package and sees the eight tools, the
// prompt hook, the service and the provider, and no sidecar starts for it.
func testInspect(ctx context.Context, t *testing.T, g *gateway) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := g.cli(cctx, "plugins", "inspect", "clawmatrix", "--runtime", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Plugin struct {
			Status      string   `json:"status"`
			ProviderIDs []string `json:"providerIds"`
		} `json:"plugin"`
		Tools []struct {
			Names []string `json:"names"`
		} `json:"tools"`
		TypedHooks []struct {
			Name string `json:"name"`
		} `json:"typedHooks"`
		Services    []string `json:"services"`
		Diagnostics []struct {
			Level   string `json:"level"`
			Message string `json:"message"`
		} `json:"diagnostics"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &res); err != nil {
		t.Fatalf("inspect output is not JSON: %v\n%s", err, tailString(out, 40))
	}
	for _, d := range res.Diagnostics {
		t.Logf("diagnostic %s: %s", d.Level, d.Message)
		if d.Level == "error" {
			t.Errorf("inspect reports an error diagnostic: %s", d.Message)
		}
	}
	if res.Plugin.Status != "loaded" {
		t.Errorf("plugin status = %q, want loaded", res.Plugin.Status)
	}
	var tools []string
	for _, tl := range res.Tools {
		tools = append(tools, tl.Names...)
	}
	slices.Sort(tools)
	want := slices.Clone(clusterTools)
	slices.Sort(want)
	if !slices.Equal(tools, want) {
		t.Errorf("tools = %v, want %v", tools, want)
	}
	for _, hook := range []string{"before_prompt_build", "before_tool_call"} {
		if !slices.ContainsFunc(res.TypedHooks, func(h struct {
			Name string `json:"name"`
		}) bool {
			return h.Name == hook
		}) {
			t.Errorf("typed hooks = %+v, want %s", res.TypedHooks, hook)
		}
	}
	if !slices.Contains(res.Services, "clawmatrix") {
		t.Errorf("services = %v, want clawmatrix", res.Services)
	}
	if !slices.Contains(res.Plugin.ProviderIDs, "clawmatrix") {
		t.Errorf("provider ids = %v, want clawmatrix", res.Plugin.ProviderIDs)
	}
	if pids := processesOf(g.bin); len(pids) != 0 {
		t.Errorf("plugins inspect left sidecar processes %v running", pids)
	}

	// README step 4: an agent's model is set to a cluster model with
	// `openclaw config patch`, which resolves clawmatrix/<id> in a CLI
	// process where no catalog runs and no sidecar starts.
	patch := filepath.Join(t.TempDir(), "model.json5")
	ref := "clawmatrix/another-" + modelID
	if err := os.WriteFile(patch, []byte(`{agents: {defaults: {model: {primary: "`+ref+`"}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := g.cli(cctx, "config", "patch", "--file", patch); err != nil {
		t.Fatalf("config patch with a cluster model: %v", err)
	}
	out, err = g.cli(cctx, "config", "get", "agents.defaults.model.primary")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, ref) {
		t.Errorf("after config patch, agents.defaults.model.primary = %q, want %q", strings.TrimSpace(out), ref)
	}
	if pids := processesOf(g.bin); len(pids) != 0 {
		t.Errorf("config patch left sidecar processes %v running", pids)
	}
}

// testInvalidConfig: OpenClaw validates the plugin config against the
// manifest's schema and names the fields; the gateway refuses to start and
// no sidecar is spawned.
func testInvalidConfig(ctx context.Context, t *testing.T, g *gateway) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := g.command(cctx, "config", "validate")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("openclaw config validate accepted an invalid plugin config:\n%s", out)
	}
	for _, field := range []string{"secret", "nodeId", "listenPort"} {
		path := "plugins.entries.clawmatrix.config." + field
		if !strings.Contains(string(out), path) {
			t.Errorf("config validate output does not name %s:\n%s", path, tailString(string(out), 30))
		}
	}

	cmd = g.command(cctx, "gateway", "run", "--port", fmt.Sprint(g.port))
	out, err = cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("gateway started with an invalid plugin config:\n%s", tailString(string(out), 30))
	}
	if code := cmd.ProcessState.ExitCode(); code != 78 {
		t.Errorf("gateway exit code = %d, want 78 (config error)\n%s", code, tailString(string(out), 30))
	}
	if pids := processesOf(g.bin); len(pids) != 0 {
		t.Errorf("a sidecar runs for the refused config: pids %v", pids)
	}
}

// testClusterForms: through OpenClaw's /tools/invoke, each node's
// cluster_peers lists the other node.
func testClusterForms(ctx context.Context, t *testing.T, c *cluster) {
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, p := range []struct {
		g     *gateway
		other string
		also  []string
	}{
		{c.a, nodeB, []string{bobAgent, modelID, "e2e-b"}},
		{c.b, nodeA, []string{"e2e-a"}},
	} {
		var text string
		err := waitFor(cctx, time.Second, func() error {
			var err error
			text, err = p.g.invokeTool(cctx, "cluster_peers", map[string]any{})
			if err != nil {
				return err
			}
			if !strings.Contains(text, p.other) {
				return fmt.Errorf("cluster_peers on %s does not list %s yet: %s", p.g.name, p.other, text)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.also {
			if !strings.Contains(text, s) {
				t.Errorf("cluster_peers on %s does not mention %q:\n%s", p.g.name, s, text)
			}
		}
		t.Logf("cluster_peers on %s:\n%s", p.g.name, text)
		// The sidecar's own log notifications reach OpenClaw's logger.
		want := "clawmatrix: clawmatrix node started node=" + map[*gateway]string{c.a: nodeA, c.b: nodeB}[p.g]
		found := false
		for _, f := range []string{p.g.logFile, p.g.outFile} {
			if b, _ := os.ReadFile(f); strings.Contains(string(b), want) {
				found = true
			}
		}
		if !found {
			t.Errorf("gateway %s's log lacks the sidecar's %q", p.g.name, want)
		}
	}
}

// testRemoteModel: A's agent uses clawmatrix/<B's model>; the request reaches
// the mock with B's provider key (A has no provider for the mock at all),
// and A's prompt carries the cluster context naming node B and its agent.
func testRemoteModel(ctx context.Context, t *testing.T, c *cluster) {
	token := "tok-model-" + nonce(t)
	want := "answer-from-b-model-" + nonce(t)
	c.llm.on(token, func(mockllm.Turn) mockllm.Answer { return mockllm.Answer{Text: want} })

	cctx, cancel := context.WithTimeout(ctx, turnLimit)
	defer cancel()
	got, err := c.a.agentTurn(cctx, "main", "model-"+token, "Say hello. "+token)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, want) {
		t.Errorf("A's reply = %q, want it to contain %q", got, want)
	}
	reqs := c.llm.answered(token)
	if len(reqs) == 0 {
		t.Fatal("the mock never saw A's prompt")
	}
	r := reqs[0]
	if auth := r.Header.Get("Authorization"); auth != "Bearer "+c.bKey {
		t.Errorf("A's request reached the mock with Authorization %q, want node B's provider key", redactBearer(auth))
	}
	prompt := r.UserText()
	for _, s := range []string{nodeB, bobAgent, bAgentDesc,
		// The exact call form for OpenClaw's default tool search.
		`tool_call {"id": "cluster_exec", "args": {"node": "` + nodeB + `", "command": "<shell command>"}}`} {
		if !strings.Contains(prompt, s) {
			t.Errorf("the prompt from A does not name %q:\n%s", s, tailString(prompt, 40))
		}
	}
	// Tool search (OpenClaw's default): the cluster tools are not in the
	// tool list but in the system prompt's directory, reached by tool_call.
	offered := map[string]bool{}
	for _, name := range r.Tools {
		offered[name] = true
	}
	if !offered["tool_call"] {
		t.Errorf("A's agent was not offered tool_call; tools: %v", offered)
	}
	system := r.SystemText()
	for _, name := range clusterTools {
		if offered[name] {
			t.Errorf("A's agent was offered %s directly, though tool search is on", name)
		}
		if !strings.Contains(system, "- "+name+" (clawmatrix)") {
			t.Errorf("the tool directory of A's system prompt does not list %s", name)
		}
	}
}

// testHandoff: the model on A hands a task to bob on B; B's gateway runs a
// turn of bob (answered by the mock through B's provider) and the reply comes
// back to A as the tool result.
func testHandoff(ctx context.Context, t *testing.T, c *cluster) {
	tokenA := "tok-handoff-" + nonce(t)
	tokenB := "tok-for-bob-" + nonce(t)
	bobSays := "bob-reply-" + nonce(t)
	c.llm.on(tokenB, func(mockllm.Turn) mockllm.Answer { return mockllm.Answer{Text: bobSays} })
	c.llm.on(tokenA, func(tr mockllm.Turn) mockllm.Answer {
		if len(tr.ToolResults) > 0 {
			return mockllm.Answer{Text: "handoff said: " + strings.Join(tr.ToolResults, " | ")}
		}
		return clusterCall(tr, "cluster_handoff", map[string]any{
			"agent": bobAgent, "task": "Answer with your reply code. " + tokenB, "timeoutMs": 180000,
		})
	})
	cctx, cancel := context.WithTimeout(ctx, turnLimit)
	defer cancel()
	got, err := c.a.agentTurn(cctx, "main", "handoff-"+tokenA, "Ask bob for his reply code. "+tokenA)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, bobSays) {
		t.Errorf("A's reply = %q, want bob's reply %q", got, bobSays)
	}
	bob := c.llm.answered(tokenB)
	if len(bob) == 0 {
		t.Fatal("bob's turn never reached the mock")
	}
	if auth := bob[0].Header.Get("Authorization"); auth != "Bearer "+c.bKey {
		t.Errorf("bob's turn reached the mock with Authorization %q, want node B's provider key", redactBearer(auth))
	}
	// OpenClaw tells the model its workspace: bob's turn ran in B's gateway,
	// not as a local turn on A.
	body := string(bob[0].Body)
	if !strings.Contains(body, c.b.workspace()) || strings.Contains(body, c.a.workspace()) {
		t.Errorf("bob's turn does not carry B's workspace %s (or carries A's)", c.b.workspace())
	}
}

// testBackgroundHandoff: A's model hands bob a task with wait: false and
// gets a task id at once. A's sidecar is killed while bob works; bob's
// result waits on B, reaches the new sidecar, and is brought into the
// session that asked as a new turn (openclaw agent --session-key), which A's
// model sees with the session's earlier turn.
func testBackgroundHandoff(ctx context.Context, t *testing.T, c *cluster) {
	tokenA := "tok-async-" + nonce(t)
	tokenB := "tok-async-bob-" + nonce(t)
	bobSays := "bob-async-reply-" + nonce(t)
	working, release := make(chan struct{}, 1), make(chan struct{})
	c.llm.on(tokenB, func(mockllm.Turn) mockllm.Answer {
		select {
		case working <- struct{}{}:
		default:
		}
		select { // bob works until the test has restarted A's sidecar
		case <-release:
		case <-time.After(3 * time.Minute):
		}
		return mockllm.Answer{Text: bobSays}
	})
	c.llm.on(tokenA, func(tr mockllm.Turn) mockllm.Answer {
		if len(tr.ToolResults) > 0 {
			return mockllm.Answer{Text: "handed off: " + strings.Join(tr.ToolResults, " | ")}
		}
		return clusterCall(tr, "cluster_handoff", map[string]any{
			"agent": bobAgent, "task": "Answer with your reply code. " + tokenB, "wait": false,
		})
	})
	// The notice of the finished task holds bob's reply.
	c.llm.on(bobSays, func(mockllm.Turn) mockllm.Answer { return mockllm.Answer{Text: "noted the result"} })
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	cctx, cancel := context.WithTimeout(ctx, turnLimit)
	defer cancel()
	session := "async-" + tokenA
	got, err := c.a.agentTurn(cctx, "main", session, "Hand bob a task in the background. "+tokenA)
	if err != nil {
		t.Fatal(err)
	}
	// Through tool_call the result comes wrapped in JSON: look for its parts.
	if !strings.Contains(got, "handed off: ") || !strings.Contains(got, "task t-") || !strings.Contains(got, "arrives in this conversation") {
		t.Fatalf("A's reply = %q, want the task id and the promise of the result", got)
	}
	select {
	case <-working:
	case <-cctx.Done():
		t.Fatal("bob's turn never reached the mock")
	}

	old := processesOf(c.a.bin)
	if len(old) != 1 {
		t.Fatalf("gateway A runs %d sidecars (%v), want 1", len(old), old)
	}
	if err := syscall.Kill(old[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Bob finishes while A's sidecar is down: the result waits on B.
	close(release)
	released = true
	err = waitFor(cctx, 500*time.Millisecond, func() error {
		if now := processesOf(c.a.bin); len(now) != 1 || now[0] == old[0] {
			return fmt.Errorf("sidecars of A: %v (killed %d)", now, old[0])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("no new sidecar after the kill: %v", err)
	}

	// The notice is a new turn of the same session: its request carries the
	// session's first prompt, and the notice with bob's reply.
	err = waitFor(cctx, time.Second, func() error {
		for _, call := range c.llm.answered(bobSays) {
			text := call.UserText()
			if strings.Contains(text, tokenA) && strings.Contains(text, "[clawmatrix] task t-") && strings.Contains(text, "on "+bobAgent+" (node "+nodeB+") finished") {
				return nil
			}
		}
		return fmt.Errorf("no turn of session %s with bob's result yet (%d requests hold it)", session, len(c.llm.answered(bobSays)))
	})
	if err != nil {
		t.Fatal(err)
	}
	text, err := c.a.invokeTool(cctx, "cluster_tasks", map[string]any{"all": true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, "handoff to "+bobAgent+" on "+nodeB+": done") {
		t.Errorf("cluster_tasks on A: %s", text)
	}
}

// testRestart: when A's sidecar dies, the adapter starts a new one and A
// rejoins the cluster without a gateway restart.
func testRestart(ctx context.Context, t *testing.T, c *cluster) {
	old := processesOf(c.a.bin)
	if len(old) != 1 {
		t.Fatalf("gateway A runs %d sidecars (%v), want 1", len(old), old)
	}
	if err := syscall.Kill(old[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	err := waitFor(cctx, 500*time.Millisecond, func() error {
		now := processesOf(c.a.bin)
		if len(now) != 1 || now[0] == old[0] {
			return fmt.Errorf("sidecars of A: %v (killed %d)", now, old[0])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("no new sidecar after the crash: %v", err)
	}
	err = waitFor(cctx, time.Second, func() error {
		text, err := c.a.invokeTool(cctx, "cluster_peers", map[string]any{})
		if err == nil && !strings.Contains(text, nodeB) {
			err = fmt.Errorf("cluster_peers on A does not list %s: %s", nodeB, text)
		}
		return err
	})
	if err != nil {
		t.Fatalf("A did not rejoin the cluster after the restart: %v", err)
	}
}

// testStop: each gateway ran exactly one sidecar (despite OpenClaw loading
// the plugin several times and CLI processes loading it too), and SIGTERM to
// the gateway leaves none behind.
func testStop(t *testing.T, c *cluster) {
	gws := []*gateway{c.a, c.b}
	for _, g := range gws {
		if pids := processesOf(g.bin); len(pids) != 1 {
			t.Errorf("gateway %s runs %d sidecars (%v), want 1", g.name, len(pids), pids)
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(gws))
	for i, g := range gws {
		wg.Go(func() { errs[i] = g.stop(60 * time.Second) })
	}
	wg.Wait()
	for i, g := range gws {
		if errs[i] != nil {
			t.Errorf("stop %s: %v", g.name, errs[i])
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := waitFor(ctx, 200*time.Millisecond, func() error {
			if pids := processesOf(g.bin); len(pids) > 0 {
				return fmt.Errorf("sidecar processes %v still run after gateway %s stopped", pids, g.name)
			}
			return nil
		})
		cancel()
		if err != nil {
			t.Error(err)
		}
	}
}

// testSidecarRefusesConfig: a config that passes OpenClaw's schema check but
// not the sidecar's own checks (two agents with one id) lets the gateway
// start; the gateway log names the field, and no sidecar is left running or
// restarted for a config that cannot heal. It runs on the inspect gateway's
// state dir, on A's port, once A has stopped.
func testSidecarRefusesConfig(ctx context.Context, t *testing.T, g *gateway) {
	patch := filepath.Join(t.TempDir(), "dup.json5")
	if err := os.WriteFile(patch, []byte(`{plugins: {entries: {clawmatrix: {config: {agents: [{id: "dup"}, {id: "dup"}]}}}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, bootLimit+time.Minute)
	defer cancel()
	if _, err := g.cli(cctx, "config", "patch", "--file", patch); err != nil {
		t.Fatalf("config patch: %v", err)
	}
	if err := g.startWithRetry(cctx, t); err != nil {
		t.Fatal(err)
	}
	want := "invalid plugins.entries.clawmatrix.config: agents[1].id"
	err := waitFor(cctx, 500*time.Millisecond, func() error {
		for _, f := range []string{g.logFile, g.outFile} {
			if b, _ := os.ReadFile(f); strings.Contains(string(b), want) {
				return nil
			}
		}
		return fmt.Errorf("the gateway log never said %q", want)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = waitFor(cctx, 200*time.Millisecond, func() error {
		if pids := processesOf(g.bin); len(pids) > 0 {
			return fmt.Errorf("sidecar processes %v run for a refused config", pids)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if err := g.stop(60 * time.Second); err != nil {
		t.Error(err)
	}
}
