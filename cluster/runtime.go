// Package cluster runs one clawmatrix node: the mesh, the model proxy and the
// executors for remote tools, wired from a validated config. The host
// protocol (package plugin), the standalone node command and the demo all
// start a node through Start.
package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/delivery"
	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/proxy"
	"github.com/clawmatrix/clawmatrix/cluster/remote"
	"github.com/clawmatrix/clawmatrix/cluster/status"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Options are everything a node needs besides its config.
type Options struct {
	Config *schema.Config
	// Gateway is the local OpenClaw gateway; nil when there is none (node mode).
	Gateway      *schema.Gateway
	Providers    map[string]proxy.Provider
	WorkspaceDir string
	Logger       *slog.Logger
	// Mesh, when set, replaces the timing profile derived from the config
	// (tests and the demo use mesh.DefaultLocalConfig timings).
	Mesh *mesh.Config
	// StateDir (sidecar mode) or ConfigPath (node mode) says where the node
	// keeps its node key and the keys it has pinned (schema.IdentityPaths).
	// With neither, and no identityFile in the config, the node runs with
	// an ephemeral key and pins peers in memory only (tests, the demo).
	StateDir   string
	ConfigPath string
	// NoTelemetry turns off metrics, spans, the status page and the
	// journal, as if the code were not there: the baseline the cost of
	// telemetry is measured against. Trace context is still passed on.
	NoTelemetry bool
	// Delivery, when set, replaces the retry timings of the durable
	// outbox (tests and benchmarks).
	Delivery *delivery.Timing
	// DeliveryNoSync stores messages without syncing each commit to disk:
	// only for benchmarks measuring what durability costs.
	DeliveryNoSync bool
}

// Runtime is one running node.
type Runtime struct {
	cfg    *schema.Config
	node   *mesh.Node
	proxy  *proxy.Server
	serve  *proxy.Serving
	target *remote.Target
	client *remote.Client
	key    string
	tel    *telemetry.Telemetry // nil with Options.NoTelemetry
	status *status.Handler      // nil with Options.NoTelemetry
	// metricsSrv serves metrics.listen; nil when not set.
	metricsSrv  *http.Server
	metricsAddr net.Addr
	metricsDone chan struct{}

	log   *slog.Logger
	known *identity.KnownNodes // nil without a known-nodes file
	// secrets are the values nothing this node shows may contain.
	secrets []string
	// stopWatch ends watchKnown; watched is closed when it has ended (nil
	// until it runs).
	stopWatch chan struct{}
	watched   chan struct{}

	delivery *delivery.Service // nil until Start opened it
	notices  bool              // finished tasks are brought into their sessions
	loadWake chan struct{}
	loadDone chan struct{}
	loadWG   sync.WaitGroup
}

// knownNodesPoll is how often a running node looks whether its known-nodes
// file changed (the trust and revoke commands write it).
const knownNodesPoll = time.Second

// Start brings a node up: mesh links, the model proxy on 127.0.0.1 and the
// handlers that serve models and tools to the cluster. On error nothing is
// left running.
func Start(ctx context.Context, opts Options) (*Runtime, error) {
	cfg := opts.Config
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mcfg, err := meshConfig(cfg, opts.Mesh, log)
	if err != nil {
		return nil, err
	}
	known, err := loadIdentity(&mcfg, opts, log)
	if err != nil {
		return nil, err
	}
	var tel *telemetry.Telemetry
	if !opts.NoTelemetry {
		if tel, err = telemetry.New(telemetry.Options{NodeID: cfg.NodeID, OTel: cfg.OTel, Logger: log}); err != nil {
			return nil, err
		}
		mcfg.TracerProvider = tel.TracerProvider()
	}
	node, err := mesh.New(mcfg)
	if err != nil {
		tel.Close(context.Background())
		return nil, err
	}
	rt := &Runtime{cfg: cfg, node: node, key: cfg.ProxyKey, client: &remote.Client{Node: node, Telemetry: tel}, tel: tel,
		log: log, known: known, stopWatch: make(chan struct{}),
		loadWake: make(chan struct{}, 1), loadDone: make(chan struct{})}
	if rt.key == "" {
		rt.key = randomKey()
	}
	rt.secrets = secrets(opts, rt.key)
	started := time.Now()
	// fail undoes what Start did so far (the fields still nil are skipped).
	fail := func(err error) (*Runtime, error) {
		rt.shutdown()
		return nil, err
	}

	// A model turn through the gateway runs the node's first agent; with
	// no agents configured, "openclaw/default", the gateway's own default
	// agent, whatever its id.
	gatewayAgent := ""
	if len(cfg.Agents) > 0 {
		gatewayAgent = cfg.Agents[0].ID
	}
	callerTags := func(id string) []string {
		p, _ := node.Peer(id)
		return p.Tags
	}
	rt.serve = proxy.RegisterServing(node, proxy.ServingConfig{Models: cfg.Models, Providers: opts.Providers, Gateway: opts.Gateway, GatewayAgent: gatewayAgent, Logger: log,
		AllowFrom: cfg.AllowFrom, CallerTags: callerTags, Telemetry: tel})
	warnGatewayModels(cfg, opts, log)
	rt.target, err = remote.Register(node, remote.TargetConfig{
		ToolProxy:         cfg.ToolProxy,
		WorkspaceDir:      opts.WorkspaceDir,
		Gateway:           opts.Gateway,
		OpenclawBin:       cfg.OpenclawBin,
		Agents:            cfg.Agents,
		MaxConcurrentRuns: cfg.MaxConcurrentRuns,
		Secrets:           rt.secrets,
		Logger:            log,
		AllowFrom:         cfg.AllowFrom,
		CallerTags:        callerTags,
		OnLoadChange:      rt.loadChanged,
	})
	if err != nil {
		rt.target = nil
		return fail(err)
	}
	dcfg := delivery.Config{
		Node:          node,
		Path:          schema.DeliveryPath(cfg, opts.StateDir, opts.ConfigPath),
		NoSync:        opts.DeliveryNoSync,
		TTL:           time.Duration(cfg.Delivery.TTLMs) * time.Millisecond,
		MaxQueued:     cfg.Delivery.MaxQueued,
		MaxInbox:      cfg.Delivery.MaxInbox,
		Runner:        agentRunner{rt.target},
		LocalLoad:     rt.localLoad,
		OnInboxChange: rt.loadChanged,
		Logger:        log,
	}
	if opts.Delivery != nil {
		dcfg.Timing = *opts.Delivery
	}
	if opts.Gateway != nil {
		// Only a node with an OpenClaw gateway has sessions to bring
		// results into.
		dcfg.Notifier, rt.notices = sessionNotifier{rt.target}, true
	}
	if rt.delivery, err = delivery.Open(dcfg); err != nil {
		return fail(err)
	}
	if tel != nil {
		svc := rt.delivery // closeDelegation clears rt.delivery; a late scrape still reads counts
		tel.RegisterDelivery(func() telemetry.DeliveryCounts {
			st := svc.Stats()
			return telemetry.DeliveryCounts{
				Queued: st.Queued, Pushes: st.Pushes, PushErrors: st.PushErrors,
				Waiting: st.Waiting, Running: st.Running, Accepted: st.Accepted,
				Duplicates: st.Duplicates, Refused: st.Refused, RefusedFull: st.Full,
			}
		})
	}
	rt.loadWG.Add(1)
	go rt.publishLoad(rt.loadDone)
	if err := node.Start(ctx); err != nil {
		return fail(err)
	}
	scfg := proxy.ServerConfig{
		Node:      node,
		Addr:      net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.ProxyPort)),
		APIKey:    rt.key,
		Pins:      cfg.ProxyModels,
		Logger:    log,
		Telemetry: tel,
	}
	if tel != nil {
		tel.WatchMesh(node)
		tel.RegisterRunQueue(rt.target.Runs)
		rt.status = status.NewHandler(status.Source{Node: node, Telemetry: tel, StartedAt: started, Known: known}, rt.key)
		scfg.Ops = rt.status
	}
	var perr error
	rt.proxy, perr = proxy.NewServer(scfg)
	if perr == nil {
		perr = rt.proxy.Start(ctx)
	}
	if perr != nil {
		rt.proxy = nil
		return fail(fmt.Errorf("model proxy on 127.0.0.1:%d: %w (set proxyPort to a free port)", cfg.ProxyPort, perr))
	}
	if cfg.Metrics.Listen != "" && rt.status != nil {
		if err := rt.serveMetrics(ctx, cfg.Metrics.Listen); err != nil {
			return fail(fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err))
		}
	}
	if known != nil {
		rt.watched = make(chan struct{})
		go rt.watchKnown()
	}
	return rt, nil
}

// watchKnown applies edits of the known-nodes file (the trust and revoke
// commands) to the running node until Close: a node no longer trusted is
// cut off at once.
func (r *Runtime) watchKnown() {
	defer close(r.watched)
	tick := time.NewTicker(knownNodesPoll)
	defer tick.Stop()
	for {
		select {
		case <-r.stopWatch:
			return
		case <-tick.C:
			r.reloadKnown()
		}
	}
}

// reloadKnown reads the known-nodes file again if it changed, and asks the
// mesh to drop the nodes it no longer admits.
func (r *Runtime) reloadKnown() {
	changed, err := r.known.ReloadIfChanged()
	if err != nil {
		r.log.Warn("known nodes file changed but cannot be used; the node keeps the keys it knew", "file", r.known.Path(), "err", err)
		return
	}
	if !changed {
		return
	}
	cut := r.node.Recheck()
	if len(cut) == 0 {
		r.log.Info("known nodes file changed: reloaded", "file", r.known.Path())
		return
	}
	r.log.Warn("known nodes file changed: cut off the nodes it no longer admits", "file", r.known.Path(), "nodes", strings.Join(cut, ","))
	for _, id := range cut {
		r.tel.NodeRefused(id, "node "+id+" was cut off: its key is no longer trusted here (revoked, or another key pinned); its links closed with 4012")
	}
}

// serveMetrics serves /metrics on addr (metrics.listen) until Close.
func (r *Runtime) serveMetrics(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	r.metricsAddr = ln.Addr()
	r.metricsSrv = &http.Server{Handler: r.status.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 16 << 10}
	r.metricsDone = make(chan struct{})
	go func() {
		defer close(r.metricsDone)
		r.metricsSrv.Serve(ln) // ends with http.ErrServerClosed at Close
	}()
	return nil
}

// warnGatewayModels says at start which models this node no longer serves
// because they would need the gateway fallback without serveViaGateway: a
// config written when that fallback was implicit must not change quietly.
func warnGatewayModels(cfg *schema.Config, opts Options, log *slog.Logger) {
	if opts.Gateway == nil {
		return
	}
	for _, m := range cfg.Models {
		if m.ServeViaGateway || (m.Upstream != nil && m.Upstream.BaseURL != "") {
			continue
		}
		if p, ok := opts.Providers[m.Provider]; ok && p.BaseURL != "" && (p.API == "" || p.API == schema.DefaultAPI) {
			continue
		}
		log.Warn("model is not served: it would run through the OpenClaw gateway (a full agent turn); "+
			"set serveViaGateway: true on it to allow that, or give it an upstream", "model", m.ID)
	}
}

// meshConfig turns the node's config into the mesh's.
func meshConfig(cfg *schema.Config, profile *mesh.Config, log *slog.Logger) (mesh.Config, error) {
	var m mesh.Config
	if profile != nil {
		m = *profile
	} else {
		m = mesh.DefaultLANConfig()
		if cfg.Mesh.PingIntervalMs > 0 {
			m.PingInterval = time.Duration(cfg.Mesh.PingIntervalMs) * time.Millisecond
		}
		if cfg.Mesh.DeadAfterMs > 0 {
			m.DeadAfter = time.Duration(cfg.Mesh.DeadAfterMs) * time.Millisecond
		}
	}
	m.NodeID = cfg.NodeID
	m.Secret = cfg.Secret
	m.Logger = log
	m.Capabilities = Capabilities(cfg)
	m.Peers = nil
	for _, p := range cfg.Peers {
		m.Peers = append(m.Peers, mesh.PeerAddr{URL: p.URL, NodeID: p.NodeID})
	}
	if cfg.Listen {
		m.ListenAddr = net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.ListenPort))
	}
	if cfg.TLS != nil {
		if cfg.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
			if err != nil {
				return m, fmt.Errorf("tls.certFile/tls.keyFile: %w", err)
			}
			m.ServerTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		if cfg.TLS.CAFile != "" {
			pem, err := os.ReadFile(cfg.TLS.CAFile)
			if err != nil {
				return m, fmt.Errorf("tls.caFile: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return m, errors.New("tls.caFile: no PEM certificate found in the file")
			}
			m.ClientTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	return m, nil
}

// loadIdentity gives the mesh its node key and trust store, from the files
// schema.IdentityPaths names, creating the key on first start, and returns
// the store (nil when nothing names the files).
func loadIdentity(m *mesh.Config, opts Options, log *slog.Logger) (*identity.KnownNodes, error) {
	keyFile, knownFile := schema.IdentityPaths(opts.Config, opts.StateDir, opts.ConfigPath)
	if keyFile == "" {
		return nil, nil
	}
	key, created, err := identity.LoadOrCreate(keyFile)
	if err != nil {
		return nil, fmt.Errorf("node key: %w", err)
	}
	if created {
		log.Info("made a new node key", "file", keyFile, "key", identity.FormatPublicKey(identity.Public(key)))
	}
	topts, err := identity.ConfigOptions(opts.Config)
	if err != nil {
		return nil, err
	}
	if opts.ConfigPath != "" {
		topts.CommandFlags = "--config " + opts.ConfigPath
	} else {
		topts.CommandFlags = "--known " + knownFile
	}
	topts.OnPersistError = func(err error) { log.Warn("known nodes not saved", "file", knownFile, "err", err) }
	known, err := identity.OpenKnownNodes(knownFile, topts)
	if err != nil {
		return nil, fmt.Errorf("known nodes: %w", err)
	}
	m.Identity, m.Trust = key, known
	return known, nil
}

// Capabilities is what a node with this config offers the cluster.
func Capabilities(cfg *schema.Config) mesh.Capabilities {
	c := mesh.Capabilities{Tags: cfg.Tags, Agents: []mesh.AgentInfo{}, Models: []mesh.ModelInfo{}}
	for _, a := range cfg.Agents {
		c.Agents = append(c.Agents, mesh.AgentInfo{ID: a.ID, Description: a.Description, Tags: a.Tags})
	}
	for _, m := range cfg.Models {
		c.Models = append(c.Models, mesh.ModelInfo{ID: m.ID, Provider: m.Provider, Description: m.Description})
	}
	if c.Tags == nil {
		c.Tags = []string{}
	}
	return c
}

// secrets are the values remote tool results and logs must never show,
// whatever a command prints (a config file, the environment).
func secrets(opts Options, proxyKey string) []string {
	out := []string{opts.Config.Secret, proxyKey}
	for _, m := range opts.Config.Models {
		if u := m.Upstream; u != nil {
			out = append(out, u.APIKey)
			if u.APIKeyEnv != "" {
				out = append(out, os.Getenv(u.APIKeyEnv))
			}
		}
	}
	for _, p := range opts.Providers {
		out = append(out, p.APIKey)
	}
	if o := opts.Config.OTel; o != nil {
		for _, v := range o.Headers {
			out = append(out, v)
		}
	}
	return out
}

func randomKey() string {
	b := make([]byte, 24)
	rand.Read(b)
	return "cmx-" + hex.EncodeToString(b)
}

// NodeID is this node's id.
func (r *Runtime) NodeID() string { return r.cfg.NodeID }

// Config is the config the node runs with.
func (r *Runtime) Config() *schema.Config { return r.cfg }

// Mesh is the node's mesh endpoint.
func (r *Runtime) Mesh() *mesh.Node { return r.node }

// Peers are the reachable nodes, sorted by id.
func (r *Runtime) Peers() []mesh.PeerInfo { return r.node.Peers() }

// ProxyURL is the OpenAI-compatible base URL of the local model proxy.
func (r *Runtime) ProxyURL() string { return r.proxy.URL() }

// Secrets are the values (cluster secret, proxy key, model keys) that
// nothing this node shows may contain: tool results, approval prompts.
func (r *Runtime) Secrets() []string { return slices.Clone(r.secrets) }

// AgentNode is the node a handoff or send with these arguments goes to now
// (its agent, node or tags), reachable or, for a call that queues, one
// remembered from before; an error says why none would.
func (r *Runtime) AgentNode(agent, node string, tags []string) (string, error) {
	tg, err := r.delivery.Resolve(delivery.Selector{Agent: agent, Node: node, Tags: tags}, true)
	return tg.Node, err
}

// ProxyKey is the bearer key the model proxy requires.
func (r *Runtime) ProxyKey() string { return r.key }

// Delivery is the node's durable outbox and inbox.
func (r *Runtime) Delivery() *delivery.Service { return r.delivery }

// Models are the models OpenClaw should list for the clawmatrix provider.
func (r *Runtime) Models() []schema.CatalogModel { return r.cfg.CatalogModels() }

// StatusLink returns a one-time link that opens this node's status page
// in a browser; "" when telemetry is off.
func (r *Runtime) StatusLink() string {
	if r.status == nil {
		return ""
	}
	return r.status.Link("http://" + r.proxy.Addr().String())
}

// MetricsAddr is where metrics.listen serves /metrics; nil when not set.
func (r *Runtime) MetricsAddr() net.Addr { return r.metricsAddr }

// Telemetry is the node's telemetry; nil with Options.NoTelemetry.
func (r *Runtime) Telemetry() *telemetry.Telemetry { return r.tel }

// Close stops the proxy, ends running work and closes every link, then
// exports the spans still held.
func (r *Runtime) Close() error {
	return r.shutdown()
}

// shutdown stops whatever of the node has started.
func (r *Runtime) shutdown() error {
	select {
	case <-r.stopWatch:
	default:
		close(r.stopWatch)
	}
	if r.watched != nil {
		<-r.watched
	}
	var err error
	if r.metricsSrv != nil {
		r.metricsSrv.Close()
		<-r.metricsDone
	}
	if r.proxy != nil {
		err = r.proxy.Close()
	}
	err = errors.Join(err, r.closeDelegation())
	if r.target != nil {
		r.target.Close()
	}
	err = errors.Join(err, r.node.Close())
	if r.serve != nil {
		r.serve.Close()
	}
	// Spans that cannot be exported in time are lost (and logged); the
	// node has stopped either way.
	ctx, cancel := context.WithTimeout(context.Background(), telemetryFlushTimeout)
	defer cancel()
	r.tel.Close(ctx)
	return err
}

// closeDelegation closes the outbox and inbox (letting inbound runs end,
// see delivery.Service.Close) and stops announcing load; it does nothing
// when Start never opened them.
func (r *Runtime) closeDelegation() error {
	if r.delivery == nil {
		return nil
	}
	err := r.delivery.Close()
	close(r.loadDone)
	r.loadWG.Wait()
	r.delivery = nil
	return err
}

// telemetryFlushTimeout bounds the export of the last spans at Close.
const telemetryFlushTimeout = 5 * time.Second
