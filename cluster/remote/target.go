package remote

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// TargetConfig is what a node needs to serve remote tools and agent runs.
type TargetConfig struct {
	// ToolProxy is the node's policy for exec, read, write and cluster_tool.
	ToolProxy schema.ToolProxy
	// WorkspaceDir is where relative paths and commands start (the host's
	// OpenClaw workspace). Empty means the process's working directory.
	WorkspaceDir string
	// Gateway is the local OpenClaw gateway for cluster_tool; nil on a
	// standalone node, which then refuses cluster_tool.
	Gateway *schema.Gateway
	// OpenclawBin is the CLI that runs handoff and send turns ("openclaw").
	OpenclawBin string
	// Agents are the agents this node offers; handoff and send accept only
	// these, and a node without agents accepts none.
	Agents []schema.Agent
	// MaxConcurrentRuns bounds handoff and send runs at once (default 2);
	// further runs wait their turn.
	MaxConcurrentRuns int
	// Secrets are further values (e.g. the cluster secret) scrubbed from
	// every result; the gateway token always is.
	Secrets []string
	// Logger receives run outcomes and failures; nil discards them.
	Logger *slog.Logger
	// AllowFrom is the config's allowFrom: which callers may use any of
	// the methods served here. nil admits every member (a parsed config
	// always has a list; an empty one admits nobody).
	AllowFrom []string
	// CallerTags returns the tags a caller announces, for tag:<t> entries;
	// Register fills it from the mesh node when nil.
	CallerTags func(nodeID string) []string
	// OnLoadChange is called when the number of agent runs going or
	// waiting for a slot changes (see Load).
	OnLoadChange func()
}

// Target serves remote tool and agent-run requests on one node. It owns the
// processes it starts: Close ends them and waits.
type Target struct {
	nodeID      string
	policy      schema.ToolProxy
	maxOutput   int
	maxTimeout  time.Duration
	baseDir     string
	roots       []fsRoot // the workspace, then toolProxy.allowPaths
	gateway     *schema.Gateway
	gatewayURL  *url.URL
	http        *http.Client
	openclawBin string
	agents      []schema.Agent
	log         *slog.Logger
	redact      redactor
	allowFrom   []string
	callerTags  func(string) []string

	slots     chan struct{} // one token per running handoff/send
	waiting   atomic.Int64  // callers waiting for a slot
	onLoad    func()
	execSlots chan struct{} // one token per running exec command

	ctx    context.Context // ends on Close; parent of every run
	cancel context.CancelFunc
	mu     sync.Mutex
	closed bool
	runs   sync.WaitGroup // in-flight handlers

	closeRootsOnce sync.Once

	// servers run each remote tool of schema's catalogue, by name.
	servers map[string]toolServer
}

func newTarget(nodeID string, cfg TargetConfig) (*Target, error) {
	t := &Target{
		nodeID:      nodeID,
		policy:      cfg.ToolProxy,
		maxOutput:   cfg.ToolProxy.MaxOutputBytes,
		maxTimeout:  time.Duration(cfg.ToolProxy.MaxTimeoutMs) * time.Millisecond,
		baseDir:     cfg.WorkspaceDir,
		openclawBin: cfg.OpenclawBin,
		agents:      cfg.Agents,
		log:         cfg.Logger,
		allowFrom:   cfg.AllowFrom,
		callerTags:  cfg.CallerTags,
		onLoad:      cfg.OnLoadChange,
		// The request context (capped at maxTimeout) bounds each call. The
		// gateway is local: no proxy from the environment applies.
		http: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 4, IdleConnTimeout: 90 * time.Second,
		}},
	}
	if t.maxOutput <= 0 {
		t.maxOutput = DefaultMaxOutputBytes
	}
	if t.maxTimeout <= 0 {
		t.maxTimeout = DefaultMaxTimeout
	}
	if t.openclawBin == "" {
		t.openclawBin = "openclaw"
	}
	if t.log == nil {
		t.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if t.baseDir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, fmt.Errorf("remote: no workspace dir given and the working directory is unknown: %w", err)
		}
		t.baseDir = wd
	}
	if abs, err := filepath.Abs(t.baseDir); err == nil {
		t.baseDir = abs
	}
	roots, err := openRoots(t.baseDir, cfg.ToolProxy.AllowPaths)
	if err != nil {
		return nil, err
	}
	t.roots = roots
	secrets := append([]string(nil), cfg.Secrets...)
	if cfg.Gateway != nil && cfg.Gateway.URL != "" {
		u, err := url.Parse(strings.TrimRight(cfg.Gateway.URL, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			closeRoots(t.roots)
			return nil, fmt.Errorf("remote: gateway URL %q is not an http(s) URL", cfg.Gateway.URL)
		}
		t.gateway, t.gatewayURL = cfg.Gateway, u
		secrets = append(secrets, cfg.Gateway.Token)
	}
	t.redact = newRedactor(secrets...)
	runs := cfg.MaxConcurrentRuns
	if runs <= 0 {
		runs = DefaultMaxRuns
	}
	t.slots = make(chan struct{}, runs)
	execs := cfg.ToolProxy.MaxConcurrent
	if execs <= 0 {
		execs = schema.DefaultMaxConcurrentExec
	}
	t.execSlots = make(chan struct{}, execs)
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.servers = map[string]toolServer{
		schema.ToolExec:    serveAs(func(ctx context.Context, _ string, a schema.ExecArgs) Result { return t.exec(ctx, a) }),
		schema.ToolRead:    serveAs(func(ctx context.Context, _ string, a schema.ReadArgs) Result { return t.read(ctx, a) }),
		schema.ToolWrite:   serveAs(func(_ context.Context, _ string, a schema.WriteArgs) Result { return t.write(a) }),
		schema.ToolTool:    serveAs(func(ctx context.Context, _ string, a schema.ToolArgs) Result { return t.invokeTool(ctx, a) }),
		schema.ToolHandoff: serveAs(t.handoff),
	}
	return t, nil
}

// toolServer runs one remote tool with its decoded arguments.
type toolServer func(ctx context.Context, from string, args any) Result

// serveAs adapts a tool's executor to a toolServer. Arguments of another
// type than A mean schema's catalogue and this table disagree on the
// tool's Args type, which the package's tests check.
func serveAs[A any](run func(ctx context.Context, from string, a A) Result) toolServer {
	return func(ctx context.Context, from string, args any) Result {
		a, ok := args.(*A)
		if !ok {
			return errorResult(fmt.Sprintf("internal error: arguments of type %T where %T was expected", args, a))
		}
		return run(ctx, from, *a)
	}
}

// Close stops taking requests, kills every running command and agent run
// (their process groups), and waits until they are gone.
func (t *Target) Close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.cancel()
	t.runs.Wait()
	t.http.CloseIdleConnections()
	t.closeRootsOnce.Do(func() { closeRoots(t.roots) })
}

// begin registers one unit of work; false once the target is closed.
func (t *Target) begin() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.runs.Add(1)
	return true
}

// handler is the mesh handler of one remote tool: it checks the caller,
// decodes and checks the arguments once against the tool's schema (they
// come from the network), runs the tool, scrubs secrets from the result and
// writes it as the single response message.
func (t *Target) handler(tool string) mesh.Handler {
	serve := t.servers[tool]
	return mesh.HandlerFunc(func(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request) error {
		if !t.begin() {
			return mesh.Errorf(mesh.CodeUnavailable, "node %q is shutting down; try again later or use another node", t.nodeID)
		}
		defer t.runs.Done()
		// Work started for a request also ends when the target closes.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stop := context.AfterFunc(t.ctx, cancel)
		defer stop()

		if err := t.checkCaller(r.From); err != nil {
			return err
		}
		start := time.Now()
		var res Result
		if call, problems := schema.DecodeToolCall(tool, r.Payload); len(problems) > 0 {
			res = errorResult(fmt.Sprintf("node %q refused %s: invalid arguments: %s. Fix them and call again.",
				t.nodeID, tool, formatProblems(problems)))
		} else {
			res = serve(ctx, r.From, call.Args)
		}
		// Arguments are not logged: they may hold file contents or secrets.
		t.log.Debug("remote request served", "tool", tool, "from", r.From,
			"durationMs", time.Since(start).Milliseconds(), "isError", res.IsError)
		msg, err := t.redact.result(res).wire()
		if err != nil {
			return fmt.Errorf("encoding the %s result: %w", tool, err)
		}
		return w.Write(msg)
	})
}

// checkCaller applies allowFrom to the node a request came from. The id is
// the mesh's From: once the mesh authenticates the origin of every frame,
// this rule is as strong as that.
func (t *Target) checkCaller(from string) error {
	if t.allowFrom == nil {
		return nil
	}
	var tags []string
	if t.callerTags != nil {
		tags = t.callerTags(from)
	}
	if schema.AllowsCaller(t.allowFrom, from, tags) {
		return nil
	}
	return mesh.Errorf(mesh.CodeRefused, "node %q does not take requests from node %q: it is not in the node's allowFrom list. "+
		"To let it in, the node's owner adds %q (or a tag:<tag> it announces) to allowFrom in node %q's clawmatrix config",
		t.nodeID, from, from, t.nodeID)
}

func formatProblems(problems []schema.Problem) string {
	parts := make([]string, len(problems))
	for i, p := range problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}
