package proxy

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Front-side defaults.
const (
	DefaultMaxBodyBytes     = 32 << 20
	DefaultMaxBufferedBytes = 16 << 20
	// The front waits a little longer than the serving side's own deadline,
	// so the serving node's clearer error arrives first.
	defaultFrontTimeout = DefaultRequestTimeout + time.Minute
)

// NodeHeader names the node that served a response.
const NodeHeader = "X-Clawmatrix-Node"

// ServerConfig configures the front of the proxy.
type ServerConfig struct {
	Node *mesh.Node
	// Addr is host:port to listen on; the host must be 127.0.0.1, localhost
	// or empty (the proxy never listens beyond loopback). Port 0 picks one.
	Addr string
	// APIKey is the bearer key every request must carry.
	APIKey string
	// Pins are this node's proxyModels; an entry with NodeID pins the model
	// to that node.
	Pins []schema.ProxyModel
	// MaxBodyBytes bounds a request body (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// MaxBufferedBytes bounds how much of a non-streamed response is held
	// so that a break can still be answered with a clean 502; a longer
	// response is passed on as it arrives (default DefaultMaxBufferedBytes).
	MaxBufferedBytes int
	// RequestTimeout bounds one request end to end (default: the serving
	// side's DefaultRequestTimeout plus a minute).
	RequestTimeout time.Duration
	Logger         *slog.Logger
	// Telemetry records each request's spans, metrics and journal entry;
	// nil records nothing (the trace context is passed on either way).
	Telemetry *telemetry.Telemetry
	// Ops, when set, serves the paths isOpsPath names (metrics and the
	// status page) and does its own authorization.
	Ops http.Handler
}

// isOpsPath reports whether the front hands a path to ServerConfig.Ops:
// /metrics, /status, /status.json and everything under /status/.
func isOpsPath(p string) bool {
	return p == "/metrics" || p == "/status" || p == "/status.json" || strings.HasPrefix(p, "/status/")
}

// Server is the OpenAI-compatible front of the cluster model proxy.
type Server struct {
	cfg    ServerConfig
	node   *mesh.Node
	router *router
	key    []byte
	log    *slog.Logger
	tel    *telemetry.Telemetry

	mu       sync.Mutex
	ln       net.Listener
	srv      *http.Server
	served   chan struct{}
	handlers sync.WaitGroup
	closed   bool

	base   context.Context
	cancel context.CancelFunc

	// headHook, when set (by tests, before Start), is called with each
	// response head that is about to be relayed, before anything of that
	// response is written to the client.
	headHook func(node string, status int)
}

// NewServer checks cfg and prepares a Server; Start makes it listen.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Node == nil {
		return nil, errors.New("proxy: ServerConfig.Node is nil")
	}
	if cfg.APIKey == "" {
		return nil, errors.New("proxy: ServerConfig.APIKey is empty; the proxy always requires a bearer key")
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("proxy address %q: %v (want 127.0.0.1:PORT)", cfg.Addr, err)
	}
	switch host {
	case "", "127.0.0.1", "localhost":
	default:
		return nil, fmt.Errorf("proxy address %q: the model proxy only listens on 127.0.0.1", cfg.Addr)
	}
	cfg.Addr = net.JoinHostPort("127.0.0.1", port)
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxBufferedBytes <= 0 {
		cfg.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultFrontTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base, cancel := context.WithCancel(context.Background())
	return &Server{
		cfg:    cfg,
		node:   cfg.Node,
		router: newRouter(cfg.Node, cfg.Pins),
		key:    []byte(cfg.APIKey),
		log:    log,
		tel:    cfg.Telemetry,
		base:   base,
		cancel: cancel,
	}, nil
}

// Start listens and serves in the background until Close. ctx bounds only
// the start itself.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("proxy: server is closed")
	}
	if s.ln != nil {
		return errors.New("proxy: server already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.srv = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		s.srv.Serve(ln)
	}()
	return nil
}

// Addr is the listening address (nil before Start).
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// URL is the OpenAI base URL, http://127.0.0.1:PORT/v1.
func (s *Server) URL() string {
	a := s.Addr()
	if a == nil {
		return ""
	}
	return "http://" + a.String() + "/v1"
}

// Close stops listening and ends every request in flight (their mesh
// streams, and so the upstream requests, are cancelled).
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	srv, served := s.srv, s.served
	s.mu.Unlock()
	s.cancel()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.Shutdown(ctx)
	if err != nil {
		err = srv.Close()
	}
	<-served
	s.handlers.Wait()
	return err
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handlers.Add(1)
	defer s.handlers.Done()
	if s.cfg.Ops != nil && isOpsPath(r.URL.Path) {
		s.cfg.Ops.ServeHTTP(w, r)
		return
	}
	if !s.authorized(r) {
		if s.tel != nil {
			s.tel.Unauthorized()
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="clawmatrix"`)
		writeError(w, &apiError{Status: http.StatusUnauthorized, Type: typeAuth, Code: codeInvalidAPIKey,
			Message: "missing or wrong API key: send Authorization: Bearer <key>, the provider apiKey the clawmatrix sidecar returned from initialize"})
		return
	}
	path := r.URL.Path
	switch {
	case path == "/v1/chat/completions":
		if r.Method != http.MethodPost {
			s.methodNotAllowed(w, "POST")
			return
		}
		s.chat(w, r)
	case path == "/v1/models":
		if r.Method != http.MethodGet {
			s.methodNotAllowed(w, "GET")
			return
		}
		s.listModels(w)
	case strings.HasPrefix(path, "/v1/models/"):
		if r.Method != http.MethodGet {
			s.methodNotAllowed(w, "GET")
			return
		}
		s.getModel(w, strings.TrimPrefix(path, "/v1/models/"))
	default:
		writeError(w, &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: codeNotFound,
			Message: fmt.Sprintf("no route %s %s: the clawmatrix proxy serves GET /v1/models and POST /v1/chat/completions", r.Method, path)})
	}
}

func (s *Server) authorized(r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(auth[len(prefix):])), s.key) == 1
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalidRequest, Code: codeMethod,
		Message: "method not allowed; use " + allow})
}

type modelObject struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	OwnedBy string   `json:"owned_by"`
	Nodes   []string `json:"nodes"`
}

func toObject(m modelEntry) modelObject {
	return modelObject{ID: m.ID, Object: "model", OwnedBy: m.Nodes[0], Nodes: m.Nodes}
}

func (s *Server) listModels(w http.ResponseWriter) {
	ms := s.router.models()
	list := struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{Object: "list", Data: make([]modelObject, 0, len(ms))}
	for _, m := range ms {
		list.Data = append(list.Data, toObject(m))
	}
	writeJSON(w, list)
}

func (s *Server) getModel(w http.ResponseWriter, id string) {
	for _, m := range s.router.models() {
		if m.ID == id {
			writeJSON(w, toObject(m))
			return
		}
	}
	_, aerr := s.router.candidates(id)
	if aerr == nil || aerr.Status != http.StatusNotFound {
		aerr = &apiError{Status: http.StatusNotFound, Type: typeInvalidRequest, Code: codeModelNotFound,
			Message: fmt.Sprintf("model %q is not served by any reachable node", id)}
	}
	writeError(w, aerr)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	var buf bytes.Buffer
	if r.ContentLength > 0 && r.ContentLength <= s.cfg.MaxBodyBytes {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: codeTooLarge,
				Message: fmt.Sprintf("request body is larger than %d bytes", s.cfg.MaxBodyBytes)}
		}
		return nil, &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: codeBadRequest,
			Message: "reading the request body: " + err.Error()}
	}
	return buf.Bytes(), nil
}

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	rctx, w, o := s.observeChat(w, r)
	if o != nil {
		defer func() {
			// respond aborts a broken answer with http.ErrAbortHandler:
			// recorded as broken, then passed on to the server.
			p := recover()
			o.finish(p != nil)
			if p != nil {
				panic(p)
			}
		}()
	}
	body, aerr := s.readBody(w, r)
	if aerr != nil {
		o.fail(reasonFor(aerr), aerr.Message)
		writeError(w, aerr)
		return
	}
	cr, err := parseChatRequest(body)
	if err != nil {
		o.fail(reasonBadRequest, "the request is not a valid chat completion")
		writeError(w, &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: codeBadRequest, Message: err.Error()})
		return
	}
	cands, aerr := s.router.candidates(cr.Model)
	if aerr != nil {
		o.fail(reasonFor(aerr), aerr.Message)
		writeError(w, aerr)
		return
	}
	o.known(cr.Model, cr.Stream)
	ctx, cancel := context.WithTimeout(rctx, s.cfg.RequestTimeout)
	defer cancel()

	var tried, fails []string
	for {
		node := s.router.acquire(cands, tried)
		if node == "" {
			break
		}
		tried = append(tried, node)
		o.startAttempt(len(tried), node)
		st, h, err := s.begin(ctx, node, body)
		if err != nil {
			s.router.release(node)
			if r.Context().Err() != nil {
				o.fail(reasonClientGone, "the client left before an answer")
				return // the client left
			}
			if ctx.Err() != nil {
				o.fail(reasonTimeout, fmt.Sprintf("model %q: no response from node %q within %v", cr.Model, node, s.cfg.RequestTimeout))
				writeError(w, &apiError{Status: http.StatusGatewayTimeout, Type: typeServer, Code: codeUpstream,
					Message: fmt.Sprintf("model %q: no response from node %q within %v", cr.Model, node, s.cfg.RequestTimeout)})
				return
			}
			var re *mesh.RemoteError
			if errors.As(err, &re) && re.Code == mesh.CodeBadRequest {
				o.answered(node, nil)
				o.fail(reasonBadRequest, fmt.Sprintf("node %q could not read the request", node))
				writeError(w, &apiError{Status: http.StatusBadRequest, Type: typeInvalidRequest, Code: codeBadRequest, Message: re.Message})
				return
			}
			s.log.Debug("model proxy: node failed before responding, trying the next", "model", cr.Model, "node", node, "err", err)
			fails = append(fails, node+": "+describe(err))
			o.failover(node, failoverReason(err), node+": "+describe(err))
			continue
		}
		if retryStatus(h.Status) && len(tried) < len(cands) {
			// Nothing has reached the client yet and another node serves
			// the model; the last node's answer is passed on as it is.
			st.Close()
			s.router.release(node)
			s.log.Debug("model proxy: node's upstream refused the request, trying the next", "model", cr.Model, "node", node, "status", h.Status)
			fails = append(fails, fmt.Sprintf("%s: upstream answered HTTP %d", node, h.Status))
			o.failover(node, failoverStatus, fmt.Sprintf("%s: upstream answered HTTP %d", node, h.Status))
			continue
		}
		if s.headHook != nil {
			s.headHook(node, h.Status)
		}
		if o != nil {
			o.answered(node, s.node.Path(node))
		}
		retry := func() bool {
			defer s.router.release(node)
			defer st.Close()
			return s.respond(ctx, w, r, st, h, node, cr.Model, cr.Stream, len(tried) < len(cands), o)
		}()
		if !retry {
			return
		}
		s.log.Debug("model proxy: node became unreachable before the response was complete, trying the next", "model", cr.Model, "node", node)
		fails = append(fails, node+": became unreachable before the response was complete")
		o.failover(node, failoverBrokeOff, node+": became unreachable before the response was complete")
	}
	msg := fmt.Sprintf("no node could serve model %q; tried %s (%s)", cr.Model, strings.Join(tried, ", "), strings.Join(fails, "; "))
	s.log.Warn("model proxy: " + msg)
	o.answered("", nil)
	o.fail(reasonUnavailable, msg)
	writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: codeModelUnavailable, Message: msg})
}

// reasonFor is the error reason of an answer the front makes itself.
func reasonFor(e *apiError) string {
	switch e.Status {
	case http.StatusRequestEntityTooLarge:
		return reasonTooLarge
	case http.StatusNotFound:
		return reasonUnknownModel
	case http.StatusServiceUnavailable:
		return reasonUnavailable
	}
	return reasonBadRequest
}

// begin sends the request to node and waits for the response head.
func (s *Server) begin(ctx context.Context, node string, body []byte) (*mesh.Stream, head, error) {
	st, err := s.node.Open(ctx, node, MethodChat, body)
	if err != nil {
		return nil, head{}, err
	}
	msg, err := st.Recv()
	if err == nil {
		var h head
		if h, err = decodeHead(msg); err == nil {
			return st, h, nil
		}
	} else if err == io.EOF {
		err = errors.New("the serving node ended the response without a head")
	}
	st.Close()
	return nil, head{}, err
}

// retryStatus reports whether an upstream status means the request was not
// taken up at all (rate limited, or a bad or unavailable upstream behind the
// node), so another node may serve it. 500 and 504 are passed on: the model
// may have run.
func retryStatus(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable:
		return true
	}
	return false
}

func describe(err error) string {
	var re *mesh.RemoteError
	if errors.As(err, &re) {
		return re.Message
	}
	return err.Error()
}

// respond relays a response whose head has arrived. A stream (SSE, or any
// successful answer to a request that asked for one) is written and flushed
// message by message; anything else is held (up to MaxBufferedBytes) so that
// a break can still be answered with a 502. Either way nothing, not even the
// head, reaches the client before the first bytes of the body: a response
// that breaks off before them because the node became unreachable is sent to
// another node when canRetry (respond then writes nothing and reports true),
// and otherwise answered with a 502.
func (s *Server) respond(ctx context.Context, w http.ResponseWriter, r *http.Request, st *mesh.Stream, h head, node, model string, stream, canRetry bool, o *chatObs) (retry bool) {
	hdr := w.Header()
	for k, v := range h.Header {
		hdr[k] = v
	}
	hdr.Set(NodeHeader, node)
	brokeOff := func(err error) *apiError {
		msg := describe(err)
		if ctx.Err() != nil && r.Context().Err() == nil {
			msg = fmt.Sprintf("no complete response within %v", s.cfg.RequestTimeout)
		}
		return &apiError{Status: http.StatusBadGateway, Type: typeServer, Code: codeUpstream,
			Message: fmt.Sprintf("model %q: node %q broke off the response: %s", model, node, msg)}
	}
	// unsent handles a break before anything was written to the client.
	unsent := func(err error) bool {
		if r.Context().Err() != nil {
			o.fail(reasonClientGone, "the client left before an answer")
			return false
		}
		clear(hdr)
		if canRetry && ctx.Err() == nil && errors.Is(err, mesh.ErrUnreachable) {
			return true
		}
		e := brokeOff(err)
		o.fail(reasonBroken, e.Message)
		writeError(w, e)
		return false
	}

	// Some servers stream SSE without saying text/event-stream; holding such
	// a stream would hold back every chunk until the end. An error status is
	// a plain error body whatever the request asked for.
	if sse := isEventStream(hdr.Get("Content-Type")); sse || (stream && h.Status >= 200 && h.Status < 300) {
		msg, err := st.Recv()
		if err != nil && err != io.EOF {
			return unsent(err)
		}
		fl, _ := w.(http.Flusher)
		w.WriteHeader(h.Status)
		for err == nil {
			if _, werr := w.Write(msg); werr != nil {
				return false
			}
			if fl != nil {
				fl.Flush()
			}
			msg, err = st.Recv()
		}
		if r.Context().Err() != nil {
			o.fail(reasonClientGone, "the client left before the answer ended")
		}
		if err == io.EOF || r.Context().Err() != nil {
			return false
		}
		if !sse {
			// An error event would corrupt a body of another type: abort
			// the connection, so the client sees a truncated response.
			panic(http.ErrAbortHandler)
		}
		e := brokeOff(err)
		o.fail(reasonBroken, e.Message)
		w.Write(sseError(e))
		if fl != nil {
			fl.Flush()
		}
		return false
	}

	var buf []byte
	for {
		msg, err := st.Recv()
		if err == io.EOF {
			hdr.Set("Content-Length", strconv.Itoa(len(buf)))
			w.WriteHeader(h.Status)
			w.Write(buf)
			return false
		}
		if err != nil {
			return unsent(err)
		}
		if len(buf)+len(msg) > s.cfg.MaxBufferedBytes {
			s.passOn(w, st, h.Status, append(buf, msg...))
			return false
		}
		buf = append(buf, msg...)
	}
}

// passOn streams a response too large to hold. A break can no longer be
// reported in the body, so the connection is aborted and the client sees a
// truncated response instead of a complete-looking one.
func (s *Server) passOn(w http.ResponseWriter, st *mesh.Stream, status int, first []byte) {
	w.WriteHeader(status)
	if _, err := w.Write(first); err != nil {
		return
	}
	for {
		msg, err := st.Recv()
		if err == io.EOF {
			return
		}
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		if _, err := w.Write(msg); err != nil {
			return
		}
	}
}
