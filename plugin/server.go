// Package plugin speaks the host protocol: JSON-RPC 2.0, one object per line
// on stdin/stdout, between the OpenClaw adapter and the sidecar
// (docs/HOST-PROTOCOL.md).
package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/cluster/proxy"
	"github.com/clawmatrix/clawmatrix/internal/buildinfo"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Methods of the host protocol.
const (
	MethodInitialize   = "initialize"
	MethodToolsCall    = "tools/call"
	MethodPromptBuild  = "hooks/beforePromptBuild"
	MethodToolApproval = "hooks/beforeToolCall"
	MethodStatus       = "cluster/status"
	MethodShutdown     = "shutdown"
	NotificationLog    = "log"
	// NotificationCancel (host → sidecar, params {id}) abandons a request
	// still running: its context is cancelled, so a remote command or agent
	// run it started is killed on the target. The answer that follows is
	// still sent, and the host may ignore it.
	NotificationCancel = "$/cancelRequest"
)

// ProviderID is the OpenClaw model provider that the local proxy backs.
const ProviderID = "clawmatrix"

var methods = []string{MethodInitialize, MethodToolsCall, MethodPromptBuild, MethodToolApproval, MethodStatus, MethodShutdown}

// Server serves the host protocol for one host connection.
type Server struct {
	// Logger receives the sidecar's own log lines (stderr in the binary).
	// Records at Info and above also go to the host as log notifications.
	Logger *slog.Logger
	// Start brings the node up on initialize; cluster.Start when nil.
	Start func(context.Context, cluster.Options) (*cluster.Runtime, error)

	mu    sync.Mutex
	state serverState
	rt    *cluster.Runtime

	log   *slog.Logger // Logger plus host notifications
	calls sync.WaitGroup

	inflightMu sync.Mutex
	inflight   map[jsonrpc2.ID]*inflightCall // requests still running, for NotificationCancel
}

type serverState int

const (
	stateNew serverState = iota
	stateInitializing
	stateReady
	stateShutDown
)

// Serve answers requests from in on out until in ends or ctx is done, then
// shuts the node down and waits for every call in flight.
func (s *Server) Serve(ctx context.Context, in io.Reader, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	stream := newLineStream(in, out, nil)
	base := s.Logger
	if base == nil {
		base = slog.New(slog.DiscardHandler)
	}
	s.log = slog.New(&hostHandler{next: base.Handler(), stream: stream})

	// Requests get their own context: cancelling ctx closes the connection,
	// and at the end of input the calls in flight must end but still answer.
	callCtx, cancelCalls := context.WithCancel(ctx)
	defer cancelCalls()
	finish := func() {
		cancelCalls()
		s.shutdown()
		s.calls.Wait()
	}
	stream.beforeEnd = finish
	conn := jsonrpc2.NewConn(ctx, stream, &asyncHandler{s: s, ctx: callCtx},
		jsonrpc2.SetLogger(log.New(io.Discard, "", 0)))
	select {
	case <-conn.DisconnectNotify():
	case <-ctx.Done():
		conn.Close()
	}
	finish()
	return nil
}

// asyncHandler runs each request on its own goroutine, owned by the server's
// WaitGroup, so a long tool call never blocks the next request.
type asyncHandler struct {
	s   *Server
	ctx context.Context
}

func (h *asyncHandler) Handle(_ context.Context, conn *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if req.Notif {
		if req.Method == NotificationCancel {
			h.s.cancelRequest(req)
		}
		return // other notifications from the host carry nothing to act on
	}
	ctx, cancel := context.WithCancel(h.ctx)
	call := h.s.track(req.ID, cancel)
	h.s.calls.Add(1)
	go func() {
		defer h.s.calls.Done()
		defer h.s.untrack(req.ID, call)
		result, err := h.s.dispatch(ctx, req)
		if err != nil {
			rpcErr, ok := err.(*jsonrpc2.Error)
			if !ok {
				rpcErr = &jsonrpc2.Error{Code: CodeInternalError, Message: err.Error()}
			}
			conn.ReplyWithError(h.ctx, req.ID, rpcErr)
			return
		}
		conn.Reply(h.ctx, req.ID, result)
	}()
}

// inflightCall is a running request's cancel; a pointer, so that a request
// only ever removes its own entry when the host reuses an id.
type inflightCall struct{ cancel context.CancelFunc }

func (s *Server) track(id jsonrpc2.ID, cancel context.CancelFunc) *inflightCall {
	c := &inflightCall{cancel: cancel}
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	if s.inflight == nil {
		s.inflight = map[jsonrpc2.ID]*inflightCall{}
	}
	s.inflight[id] = c // a reused id cancels the newest request, the one the host knows
	return c
}

func (s *Server) untrack(id jsonrpc2.ID, c *inflightCall) {
	c.cancel()
	s.inflightMu.Lock()
	defer s.inflightMu.Unlock()
	if s.inflight[id] == c {
		delete(s.inflight, id)
	}
}

// cancelRequest handles NotificationCancel; an unknown or finished id is
// ignored, since the answer may have crossed the notification on the wire.
func (s *Server) cancelRequest(req *jsonrpc2.Request) {
	var p struct {
		ID *jsonrpc2.ID `json:"id"`
	}
	if req.Params == nil || json.Unmarshal(*req.Params, &p) != nil || p.ID == nil {
		s.log.Warn("ignored a " + NotificationCancel + " notification without a valid params.id")
		return
	}
	s.inflightMu.Lock()
	c := s.inflight[*p.ID]
	s.inflightMu.Unlock()
	if c != nil {
		c.cancel()
	}
}

func (s *Server) dispatch(ctx context.Context, req *jsonrpc2.Request) (any, error) {
	switch req.Method {
	case MethodInitialize:
		return s.initialize(ctx, req)
	case MethodToolsCall:
		return s.toolsCall(ctx, req)
	case MethodPromptBuild:
		return s.promptBuild(req)
	case MethodToolApproval:
		return s.toolApproval(req)
	case MethodStatus:
		rt, err := s.ready()
		if err != nil {
			return nil, err
		}
		return status(rt), nil
	case MethodShutdown:
		s.shutdown()
		return nil, nil
	default:
		return nil, &jsonrpc2.Error{Code: CodeMethodNotFound,
			Message: fmt.Sprintf("method %q not found; the sidecar serves %s", req.Method, strings.Join(methods, ", "))}
	}
}

func invalidParams(format string, args ...any) *jsonrpc2.Error {
	return &jsonrpc2.Error{Code: CodeInvalidParams, Message: fmt.Sprintf(format, args...)}
}

func decodeParams(req *jsonrpc2.Request, v any) error {
	if req.Params == nil {
		return invalidParams("%s needs params (a JSON object)", req.Method)
	}
	if err := json.Unmarshal(*req.Params, v); err != nil {
		return invalidParams("%s params: %v", req.Method, err)
	}
	return nil
}

func (s *Server) initialize(ctx context.Context, req *jsonrpc2.Request) (any, error) {
	var p InitializeParams
	if err := decodeParams(req, &p); err != nil {
		return nil, err
	}
	s.mu.Lock()
	switch s.state {
	case stateNew:
		s.state = stateInitializing
	case stateShutDown:
		s.mu.Unlock()
		return nil, &jsonrpc2.Error{Code: CodeInvalidRequest, Message: "the sidecar has shut down; start a new one"}
	case stateInitializing:
		s.mu.Unlock()
		return nil, &jsonrpc2.Error{Code: CodeInvalidRequest, Message: "initialize is already in progress; wait for its answer (on an error, initialize again)"}
	default:
		s.mu.Unlock()
		return nil, &jsonrpc2.Error{Code: CodeInvalidRequest, Message: "already initialized; to change the config, restart the sidecar"}
	}
	s.mu.Unlock()

	rt, err := s.startNode(ctx, &p)

	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		if s.state == stateInitializing {
			s.state = stateNew
		}
		return nil, err
	}
	if s.state == stateShutDown { // shutdown arrived while starting
		rt.Close()
		return nil, &jsonrpc2.Error{Code: CodeInvalidRequest, Message: "shut down while initializing"}
	}
	s.state, s.rt = stateReady, rt
	s.log.Info("clawmatrix node started", "node", rt.NodeID(), "proxy", rt.ProxyURL(), "version", buildinfo.Version())
	return InitializeResult{
		NodeID:  rt.NodeID(),
		Version: buildinfo.Version(),
		Tools:   toolInfos(),
		Provider: ProviderResult{
			ID:      ProviderID,
			BaseURL: rt.ProxyURL(),
			APIKey:  rt.ProxyKey(),
			API:     "openai-completions",
			Models:  rt.Models(),
		},
	}, nil
}

func (s *Server) startNode(ctx context.Context, p *InitializeParams) (*cluster.Runtime, error) {
	cfg, problems := schema.Parse(p.Config)
	if len(problems) > 0 {
		lines := make([]string, len(problems))
		for i, pr := range problems {
			lines[i] = pr.String()
		}
		return nil, &jsonrpc2.Error{
			Code:    CodeInvalidParams,
			Message: "invalid clawmatrix config: " + strings.Join(lines, "; "),
			Data:    rawJSON(map[string]any{"errors": problems}),
		}
	}
	opts := cluster.Options{Config: cfg, WorkspaceDir: p.WorkspaceDir, StateDir: p.StateDir, Logger: s.log}
	if p.Gateway != nil && p.Gateway.Port > 0 {
		opts.Gateway = &schema.Gateway{URL: "http://127.0.0.1:" + strconv.Itoa(p.Gateway.Port), Token: p.Gateway.Token}
	}
	if len(p.Providers) > 0 {
		opts.Providers = make(map[string]proxy.Provider, len(p.Providers))
		for id, pv := range p.Providers {
			opts.Providers[id] = proxy.Provider{BaseURL: pv.BaseURL, API: pv.API, APIKey: pv.APIKey}
		}
	}
	start := s.Start
	if start == nil {
		start = cluster.Start
	}
	rt, err := start(ctx, opts)
	if err != nil {
		return nil, &jsonrpc2.Error{Code: CodeInternalError, Message: "starting the clawmatrix node: " + err.Error()}
	}
	return rt, nil
}

func rawJSON(v any) *json.RawMessage {
	data, _ := json.Marshal(v)
	raw := json.RawMessage(data)
	return &raw
}

func (s *Server) ready() (*cluster.Runtime, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateReady:
		return s.rt, nil
	case stateShutDown:
		return nil, &jsonrpc2.Error{Code: CodeInvalidRequest, Message: "the sidecar has shut down"}
	default:
		return nil, &jsonrpc2.Error{Code: CodeInvalidRequest, Message: "not initialized: send initialize with the plugin config first"}
	}
}

func (s *Server) promptBuild(req *jsonrpc2.Request) (any, error) {
	var p PromptParams
	if req.Params != nil {
		if err := json.Unmarshal(*req.Params, &p); err != nil {
			return nil, invalidParams("%s params: %v", req.Method, err)
		}
	}
	s.mu.Lock()
	rt := s.rt
	ready := s.state == stateReady
	s.mu.Unlock()
	if !ready {
		return PromptResult{}, nil
	}
	form := p.ToolCallForm
	if !slices.Contains(callForms, form) {
		form = FormDirect
	}
	return PromptResult{PrependContext: promptContext(rt.Config(), rt.Peers(), form)}, nil
}

// shutdown closes the node once; later requests are refused.
func (s *Server) shutdown() {
	s.mu.Lock()
	rt := s.rt
	s.rt, s.state = nil, stateShutDown
	s.mu.Unlock()
	if rt != nil {
		if err := rt.Close(); err != nil {
			s.log.Warn("closing the node", "err", err)
		}
	}
}
