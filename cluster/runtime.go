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
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/delivery"
	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/proxy"
	"github.com/clawmatrix/clawmatrix/cluster/remote"
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
	// Delivery, when set, replaces the retry timings of the durable
	// outbox (tests and benchmarks).
	Delivery *delivery.Timing
	// DeliveryNoSync stores messages without syncing each commit to disk:
	// only for benchmarks measuring what durability costs.
	DeliveryNoSync bool
}

// Runtime is one running node.
type Runtime struct {
	cfg      *schema.Config
	node     *mesh.Node
	proxy    *proxy.Server
	serve    *proxy.Serving
	target   *remote.Target
	client   *remote.Client
	delivery *delivery.Service
	notices  bool // finished tasks are brought into their sessions
	key      string

	loadWake chan struct{}
	loadDone chan struct{}
	loadWG   sync.WaitGroup
}

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
	if err := loadIdentity(&mcfg, opts, log); err != nil {
		return nil, err
	}
	node, err := mesh.New(mcfg)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{cfg: cfg, node: node, key: cfg.ProxyKey, client: &remote.Client{Node: node},
		loadWake: make(chan struct{}, 1), loadDone: make(chan struct{})}
	if rt.key == "" {
		rt.key = randomKey()
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
		AllowFrom: cfg.AllowFrom, CallerTags: callerTags})
	warnGatewayModels(cfg, opts, log)
	rt.target, err = remote.Register(node, remote.TargetConfig{
		ToolProxy:         cfg.ToolProxy,
		WorkspaceDir:      opts.WorkspaceDir,
		Gateway:           opts.Gateway,
		OpenclawBin:       cfg.OpenclawBin,
		Agents:            cfg.Agents,
		MaxConcurrentRuns: cfg.MaxConcurrentRuns,
		Secrets:           secrets(opts, rt.key),
		Logger:            log,
		AllowFrom:         cfg.AllowFrom,
		CallerTags:        callerTags,
		OnLoadChange:      rt.loadChanged,
	})
	if err != nil {
		node.Close()
		rt.serve.Close()
		return nil, err
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
		rt.target.Close()
		node.Close()
		rt.serve.Close()
		return nil, err
	}
	rt.loadWG.Add(1)
	go rt.publishLoad(rt.loadDone)
	if err := node.Start(ctx); err != nil {
		rt.closeDelegation()
		rt.target.Close()
		node.Close()
		rt.serve.Close()
		return nil, err
	}
	rt.proxy, err = proxy.NewServer(proxy.ServerConfig{
		Node:   node,
		Addr:   net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.ProxyPort)),
		APIKey: rt.key,
		Pins:   cfg.ProxyModels,
		Logger: log,
	})
	if err == nil {
		err = rt.proxy.Start(ctx)
	}
	if err != nil {
		rt.closeDelegation()
		rt.target.Close()
		node.Close()
		rt.serve.Close()
		return nil, fmt.Errorf("model proxy on 127.0.0.1:%d: %w (set proxyPort to a free port)", cfg.ProxyPort, err)
	}
	return rt, nil
}

// closeDelegation closes the outbox and inbox (letting inbound runs end,
// see delivery.Service.Close) and stops announcing load.
func (r *Runtime) closeDelegation() error {
	err := r.delivery.Close()
	close(r.loadDone)
	r.loadWG.Wait()
	return err
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
// schema.IdentityPaths names, creating the key on first start.
func loadIdentity(m *mesh.Config, opts Options, log *slog.Logger) error {
	keyFile, knownFile := schema.IdentityPaths(opts.Config, opts.StateDir, opts.ConfigPath)
	if keyFile == "" {
		return nil
	}
	key, created, err := identity.LoadOrCreate(keyFile)
	if err != nil {
		return fmt.Errorf("node key: %w", err)
	}
	if created {
		log.Info("made a new node key", "file", keyFile, "key", identity.FormatPublicKey(identity.Public(key)))
	}
	topts, err := identity.ConfigOptions(opts.Config)
	if err != nil {
		return err
	}
	if opts.ConfigPath != "" {
		topts.CommandFlags = "--config " + opts.ConfigPath
	} else {
		topts.CommandFlags = "--known " + knownFile
	}
	topts.OnPersistError = func(err error) { log.Warn("known nodes not saved", "file", knownFile, "err", err) }
	known, err := identity.OpenKnownNodes(knownFile, topts)
	if err != nil {
		return fmt.Errorf("known nodes: %w", err)
	}
	m.Identity, m.Trust = key, known
	return nil
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

// ProxyKey is the bearer key the model proxy requires.
func (r *Runtime) ProxyKey() string { return r.key }

// Models are the models OpenClaw should list for the clawmatrix provider.
func (r *Runtime) Models() []schema.CatalogModel { return r.cfg.CatalogModels() }

// Delivery is the node's durable outbox and inbox.
func (r *Runtime) Delivery() *delivery.Service { return r.delivery }

// Close stops the proxy, ends running work and closes every link.
func (r *Runtime) Close() error {
	err := r.proxy.Close()
	err = errors.Join(err, r.closeDelegation())
	r.target.Close()
	err = errors.Join(err, r.node.Close())
	r.serve.Close()
	return err
}
