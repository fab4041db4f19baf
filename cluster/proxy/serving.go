package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Provider is an OpenClaw model provider as the host passes it in initialize.
type Provider struct {
	BaseURL string
	API     string
	APIKey  string
}

// Default upstream timeouts.
const (
	DefaultConnectTimeout   = 10 * time.Second
	DefaultFirstByteTimeout = 5 * time.Minute
	DefaultRequestTimeout   = 10 * time.Minute
)

// ServingConfig configures the serving side of the proxy on one node.
type ServingConfig struct {
	// Models are the models this node serves to the cluster.
	Models []schema.Model
	// Providers are the host's OpenClaw providers by id.
	Providers map[string]Provider
	// Gateway is the local OpenClaw gateway, the last resort for serving a
	// model (with serveViaGateway); nil when there is none.
	Gateway *schema.Gateway
	// GatewayAgent is the agent whose full turn a request through the
	// gateway runs (model "openclaw/<agent>"); empty means the gateway's
	// default agent.
	GatewayAgent string
	// Client makes the upstream requests; nil means a client owned by the
	// Serving, with ConnectTimeout applied to dialing.
	Client *http.Client
	// ConnectTimeout bounds dialing an upstream (own client only).
	ConnectTimeout time.Duration
	// FirstByteTimeout bounds the wait for the upstream's response headers.
	FirstByteTimeout time.Duration
	// RequestTimeout bounds a whole upstream request, body included.
	RequestTimeout time.Duration
	Logger         *slog.Logger
	// AllowFrom is the config's allowFrom: which callers may use the
	// models served here; nil admits every member.
	AllowFrom []string
	// CallerTags returns the tags a caller announces, for tag:<t> entries.
	CallerTags func(nodeID string) []string
	// Telemetry records the upstream calls; nil records nothing (the
	// caller's trace context still goes to the upstream).
	Telemetry *telemetry.Telemetry
}

// Serving answers model.chat requests for the models of one node.
type Serving struct {
	nodeID   string
	models   map[string]schema.Model
	names    []string
	cfg      ServingConfig
	client   *http.Client
	ownTrans *http.Transport
	log      *slog.Logger
	// The causes of the two upstream timeouts, made once: formatting them
	// per request was a visible part of a busy node's CPU time.
	errRequestTimeout, errFirstByteTimeout error
}

// HandlerRegistry is where the serving side registers its mesh handler;
// *mesh.Node is one.
type HandlerRegistry interface {
	ID() string
	Handle(method string, h mesh.Handler)
}

// RegisterServing makes node serve cfg.Models to the cluster under
// MethodChat. Close the returned Serving after the node to release idle
// upstream connections.
func RegisterServing(node HandlerRegistry, cfg ServingConfig) *Serving {
	s := NewServing(node.ID(), cfg)
	node.Handle(MethodChat, s)
	return s
}

// NewServing builds the serving side for node nodeID without registering it.
func NewServing(nodeID string, cfg ServingConfig) *Serving {
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.FirstByteTimeout <= 0 {
		cfg.FirstByteTimeout = DefaultFirstByteTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	s := &Serving{nodeID: nodeID, models: make(map[string]schema.Model, len(cfg.Models)), cfg: cfg, log: cfg.Logger,
		errRequestTimeout:   fmt.Errorf("no complete response within %v", cfg.RequestTimeout),
		errFirstByteTimeout: fmt.Errorf("no response within %v", cfg.FirstByteTimeout),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, m := range cfg.Models {
		if _, dup := s.models[m.ID]; !dup {
			s.models[m.ID] = m
			s.names = append(s.names, m.ID)
		}
	}
	sort.Strings(s.names)
	s.client = cfg.Client
	if s.client == nil {
		s.ownTrans = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   64,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   cfg.ConnectTimeout,
			ExpectContinueTimeout: time.Second,
			// Upstreams are near; compressing a token stream only adds latency.
			DisableCompression: true,
		}
		s.client = &http.Client{Transport: s.ownTrans}
	}
	return s
}

// Close releases the idle upstream connections of the Serving's own client.
func (s *Serving) Close() error {
	if s.ownTrans != nil {
		s.ownTrans.CloseIdleConnections()
	}
	return nil
}

// target is where one model's requests go.
type target struct {
	url    string
	key    string
	model  string // the body's "model" for the upstream
	header http.Header
	via    string // for errors and logs; never holds a secret
	kind   string // upstream, provider or gateway
}

// target picks how to serve m: its upstream, else the host's OpenClaw
// provider when it speaks OpenAI chat completions, else the local gateway.
func (s *Serving) target(m schema.Model) (target, error) {
	if u := m.Upstream; u != nil && u.BaseURL != "" {
		t := target{url: chatURL(u.BaseURL), key: u.APIKey, model: m.ID, via: "upstream " + redact(u.BaseURL), kind: "upstream"}
		if t.key == "" && u.APIKeyEnv != "" {
			t.key = os.Getenv(u.APIKeyEnv)
			if t.key == "" {
				return t, fmt.Errorf("model %q on node %q: environment variable %s (upstream.apiKeyEnv) is empty or unset; set it for the node's process or put the key in upstream.apiKey", m.ID, s.nodeID, u.APIKeyEnv)
			}
		}
		return t, nil
	}
	p, havep := s.cfg.Providers[m.Provider]
	if havep && p.BaseURL != "" && (p.API == "" || p.API == schema.DefaultAPI) {
		return target{url: chatURL(p.BaseURL), key: p.APIKey, model: m.ID, via: fmt.Sprintf("provider %q", m.Provider), kind: "provider"}, nil
	}
	if g := s.cfg.Gateway; g != nil && g.URL != "" && m.ServeViaGateway {
		agent := s.cfg.GatewayAgent
		if agent == "" {
			agent = "default"
		}
		h := http.Header{}
		h.Set("x-openclaw-model", m.Provider+"/"+m.ID)
		return target{url: strings.TrimRight(g.URL, "/") + "/v1/chat/completions", key: g.Token, model: "openclaw/" + agent, header: h, via: "OpenClaw gateway (agent " + agent + ")", kind: "gateway"}, nil
	}
	why := fmt.Sprintf("the host passed no provider %q", m.Provider)
	if havep {
		why = fmt.Sprintf("provider %q has api %q, not openai-completions", m.Provider, p.API)
	}
	if g := s.cfg.Gateway; g != nil && g.URL != "" {
		return target{}, fmt.Errorf("node %q does not serve model %q through its OpenClaw gateway: it has no upstream and %s, "+
			"and serving through the gateway runs a full agent turn (with that agent's tools) for the caller, so it needs consent. "+
			"To allow it, set serveViaGateway: true on the model in node %q's clawmatrix config, or give the model an upstream",
			s.nodeID, m.ID, why, s.nodeID)
	}
	return target{}, fmt.Errorf("node %q cannot serve model %q: it has no upstream, %s, and there is no OpenClaw gateway; set models[].upstream.baseUrl to an OpenAI-compatible server", s.nodeID, m.ID, why)
}

// chatURL appends the chat completions path to base, before any query
// (some servers take e.g. ?api-version=... on every request).
func chatURL(base string) string {
	if q := strings.IndexAny(base, "?#"); q >= 0 {
		query := base[q:]
		if f := strings.IndexByte(query, '#'); f >= 0 {
			query = query[:f]
		}
		return strings.TrimRight(base[:q], "/") + "/chat/completions" + query
	}
	return strings.TrimRight(base, "/") + "/chat/completions"
}

// redact drops credentials and query from a URL shown in errors.
func redact(raw string) string {
	if i := strings.Index(raw, "://"); i >= 0 {
		if at := strings.LastIndex(raw[i+3:], "@"); at >= 0 && !strings.Contains(raw[i+3:i+3+at], "/") {
			raw = raw[:i+3] + raw[i+3+at+1:]
		}
	}
	if q := strings.IndexAny(raw, "?#"); q >= 0 {
		raw = raw[:q]
	}
	return raw
}

// redactErr is err with every URL in its text passed through redact:
// net/http names the request URL, query and all, in its errors, and a query
// can carry an API key.
func redactErr(err error) error {
	msg := err.Error()
	var ue *url.Error
	if errors.As(err, &ue) && ue.URL != "" {
		msg = strings.ReplaceAll(msg, ue.URL, redact(ue.URL))
	}
	if !strings.Contains(msg, "://") {
		return errors.New(msg)
	}
	var b strings.Builder
	for {
		i := strings.Index(msg, "://")
		if i < 0 {
			b.WriteString(msg)
			return errors.New(b.String())
		}
		start := i
		for start > 0 && isSchemeByte(msg[start-1]) {
			start--
		}
		end := i + 3
		for end < len(msg) && msg[end] > ' ' && msg[end] != '"' && msg[end] != '\'' && msg[end] != 0x7f {
			end++
		}
		b.WriteString(msg[:start])
		b.WriteString(redact(msg[start:end]))
		msg = msg[end:]
	}
}

func isSchemeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}

// ServeMesh serves one model.chat request: it sends the upstream's status
// and headers, then relays the body as it arrives. Each Write waits for the
// caller under the mesh's flow control, so a slow client slows the upstream
// read instead of filling memory.
func (s *Serving) ServeMesh(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request) error {
	if s.cfg.AllowFrom != nil {
		var tags []string
		if s.cfg.CallerTags != nil {
			tags = s.cfg.CallerTags(r.From)
		}
		if !schema.AllowsCaller(s.cfg.AllowFrom, r.From, tags) {
			s.served("", mesh.CodeRefused)
			return mesh.Errorf(mesh.CodeRefused, "node %q does not serve models to node %q: it is not in the node's allowFrom list. "+
				"To let it in, the node's owner adds %q (or a tag:<tag> it announces) to allowFrom in node %q's clawmatrix config",
				s.nodeID, r.From, r.From, s.nodeID)
		}
	}
	cr, err := parseChatRequest(r.Payload)
	if err != nil {
		s.served("", mesh.CodeBadRequest)
		return mesh.Errorf(mesh.CodeBadRequest, "%v", err)
	}
	m, ok := s.models[cr.Model]
	if !ok {
		s.served("", mesh.CodeNotFound)
		return mesh.Errorf(mesh.CodeNotFound, "node %q does not serve model %q (it serves %s)", s.nodeID, cr.Model, listOrNone(s.names))
	}
	t, err := s.target(m)
	if err != nil {
		s.served(m.ID, mesh.CodeUnavailable)
		return mesh.Errorf(mesh.CodeUnavailable, "%v", err)
	}
	up := s.observeUpstream(ctx, m.ID, t)
	err = s.callUpstream(ctx, w, r, cr, m, t, up)
	up.end(err)
	return err
}

// callUpstream makes the upstream request of ServeMesh and relays the answer.
func (s *Serving) callUpstream(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request, cr chatRequest, m schema.Model, t target, up *upstreamObs) error {
	callerCtx := ctx
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.RequestTimeout, s.errRequestTimeout)
	defer cancel()
	ctx, cancelFirst := context.WithCancelCause(ctx)
	defer cancelFirst(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(withModel(r.Payload, cr, t.model)))
	if err != nil {
		return mesh.Errorf(mesh.CodeUnavailable, "model %q on node %q: bad URL for %s: %v", m.ID, s.nodeID, t.via, redactErr(err))
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	if cr.Stream {
		req.Header.Set("Accept", "text/event-stream")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	if t.key != "" {
		req.Header.Set("Authorization", "Bearer "+t.key)
	}
	// The request's trace goes on to the upstream, so that a model server
	// that exports its own spans joins it.
	telemetry.Inject(ctx, req.Header)

	first := time.AfterFunc(s.cfg.FirstByteTimeout, func() {
		cancelFirst(s.errFirstByteTimeout)
	})
	resp, err := s.client.Do(req)
	first.Stop()
	up.headers(resp)
	if err != nil {
		if callerCtx.Err() != nil {
			return callerCtx.Err() // the caller went away; nobody reads this
		}
		if c := context.Cause(ctx); c != nil {
			err = c
		}
		err = redactErr(err)
		s.log.Warn("model upstream failed", "model", m.ID, "via", t.via, "err", err)
		return mesh.Errorf(mesh.CodeUnavailable, "node %q: %s for model %q: %v", s.nodeID, t.via, m.ID, err)
	}
	defer resp.Body.Close()
	if err := w.Write(encodeHead(resp.StatusCode, resp.Header)); err != nil {
		return err
	}
	if err := relay(w, resp.Body, isEventStream(resp.Header.Get("Content-Type"))); err != nil {
		if errors.Is(err, errWrite) || callerCtx.Err() != nil {
			return err
		}
		if c := context.Cause(ctx); c != nil {
			err = c
		}
		err = redactErr(err)
		s.log.Warn("model upstream broke off", "model", m.ID, "via", t.via, "err", err)
		return mesh.Errorf(mesh.CodeUnavailable, "node %q: %s broke off the response for model %q: %v", s.nodeID, t.via, m.ID, err)
	}
	return nil
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "no models"
	}
	return strings.Join(names, ", ")
}

// errWrite marks a failed Write to the mesh (the caller is gone).
var errWrite = errors.New("mesh write failed")

const (
	readChunk = 32 << 10
	// maxEvent bounds how much of an unfinished SSE event is held back
	// before it is sent anyway.
	maxEvent = 1 << 20
)

// relayBufs recycles relay's read buffers. A fresh 32 KB buffer per request
// was most of the bytes a busy serving node allocated, and the garbage
// collection it caused was a large part of the proxy's CPU time. Only
// buffers of the base size are kept; one grown for a long SSE event is
// dropped.
var relayBufs = sync.Pool{New: func() any { b := make([]byte, readChunk); return &b }}

// relay copies body to w: for SSE in batches of whole events, otherwise as
// the bytes arrive. It holds at most maxEvent bytes.
func relay(w mesh.ResponseWriter, body io.Reader, sse bool) error {
	pb := relayBufs.Get().(*[]byte)
	buf := (*pb)[:0]
	defer func() {
		if cap(buf) == readChunk {
			*pb = buf[:readChunk]
			relayBufs.Put(pb)
		}
	}()
	send := func(n int) error {
		msg := bytes.Clone(buf[:n])
		rest := copy(buf, buf[n:])
		buf = buf[:rest]
		if err := w.Write(msg); err != nil {
			return fmt.Errorf("%w: %v", errWrite, err)
		}
		return nil
	}
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= maxEvent {
				if err := send(len(buf)); err != nil {
					return err
				}
			} else {
				buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
			}
		}
		n, rerr := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			end := len(buf)
			if sse {
				end = eventsEnd(buf)
			}
			if end > 0 {
				if err := send(end); err != nil {
					return err
				}
			}
		}
		if rerr == io.EOF {
			if len(buf) > 0 {
				return send(len(buf))
			}
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}
