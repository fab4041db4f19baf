package bench

// The in-process cluster of the proxy suite: client -> A's proxy -> mesh link
// -> B (serving) -> a synthetic upstream, all in the bench's process on
// 127.0.0.1, with one standard-library reverse proxy in front of the same
// upstream as a yardstick.

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/proxy"
	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/clawmatrix/clawmatrix/schema"
)

// syntheticUpstream is the mock model server answering at once, so that a
// measurement shows the proxy's own cost. Streamed answers carry chunks
// "t0 ", "t1 ", ... so a reader can check that none was lost or reordered
// (checkStreams). It keeps no record of requests: the memory figure counts
// the whole process.
type syntheticUpstream struct {
	*mockllm.Server

	mu      sync.Mutex
	release chan struct{} // non-nil while streams are held after their first chunk
}

func startSynthetic(chunks int) (*syntheticUpstream, error) {
	pieces := make([]string, max(chunks, 1))
	for i := range pieces {
		pieces[i] = "t" + strconv.Itoa(i) + " "
	}
	srv, err := mockllm.Start(mockllm.Options{NoRecord: true, Reply: func(r *mockllm.Request) mockllm.Answer {
		if r.Stream {
			return mockllm.Answer{Pieces: pieces}
		}
		return mockllm.Answer{Text: "a short synthetic reply"}
	}})
	if err != nil {
		return nil, err
	}
	u := &syntheticUpstream{Server: srv}
	srv.SetBetween(func(r *http.Request, chunk int) {
		if chunk != 0 {
			return
		}
		u.mu.Lock()
		rel := u.release
		u.mu.Unlock()
		if rel != nil {
			select {
			case <-rel:
			case <-r.Context().Done():
			}
		}
	})
	return u, nil
}

// Hold makes new and running streams stop after their first chunk until
// Hold(false).
func (u *syntheticUpstream) Hold(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if on && u.release == nil {
		u.release = make(chan struct{})
	} else if !on && u.release != nil {
		close(u.release)
		u.release = nil
	}
}

// Close ends held streams and stops the server.
func (u *syntheticUpstream) Close() error {
	u.Hold(false)
	return u.Server.Close()
}

// benchModel is the model the bench cluster serves.
const benchModel = "bench"

// inprocCluster is client -> A (proxy) -> mesh link -> B (serving) -> upstream,
// all on 127.0.0.1.
type inprocCluster struct {
	Upstream *syntheticUpstream
	A, B     *mesh.Node
	Front    *proxy.Server
	// Key is the front's bearer key.
	Key string
	// Reference is the OpenAI base URL of the standard library's
	// httputil.ReverseProxy in front of the upstream: what one plain HTTP
	// proxy hop costs on this machine, a yardstick for the proxy's figures.
	Reference string
	serving   *proxy.Serving
	refServer *http.Server
	refDone   chan struct{}
	refProxy  *http.Transport
}

// startInprocCluster starts the cluster with LAN mesh timings and waits until
// A sees B serving benchModel.
func startInprocCluster(ctx context.Context, chunks int) (*inprocCluster, error) {
	c := &inprocCluster{}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var err error
	if c.Upstream, err = startSynthetic(chunks); err != nil {
		return nil, err
	}
	secret := randomSecret()
	c.Key = randomSecret()
	models := []schema.Model{{ID: benchModel, Provider: "bench", ModelParams: schema.DefaultModelParams(), Upstream: &schema.Upstream{BaseURL: c.Upstream.URL()}}}

	cfg := mesh.DefaultLANConfig()
	cfg.NodeID, cfg.Secret, cfg.ListenAddr = "bench-b", secret, "127.0.0.1:0"
	cfg.Capabilities = mesh.Capabilities{Models: []mesh.ModelInfo{{ID: benchModel, Provider: "bench"}}}
	if c.B, err = mesh.New(cfg); err != nil {
		return nil, err
	}
	c.serving = proxy.RegisterServing(c.B, proxy.ServingConfig{Models: models})
	if err = c.B.Start(ctx); err != nil {
		return nil, err
	}
	cfg = mesh.DefaultLANConfig()
	cfg.NodeID, cfg.Secret = "bench-a", secret
	cfg.Peers = []mesh.PeerAddr{{URL: c.B.URL(), NodeID: "bench-b"}}
	if c.A, err = mesh.New(cfg); err != nil {
		return nil, err
	}
	if err = c.A.Start(ctx); err != nil {
		return nil, err
	}
	for {
		ch := c.A.Changed()
		if p, found := c.A.Peer("bench-b"); found && slices.ContainsFunc(p.Models, func(m mesh.ModelInfo) bool { return m.ID == benchModel }) {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("bench cluster: node A never saw node B: %w", ctx.Err())
		}
	}
	if c.Front, err = proxy.NewServer(proxy.ServerConfig{Node: c.A, Addr: "127.0.0.1:0", APIKey: c.Key}); err != nil {
		return nil, err
	}
	if err = c.Front.Start(ctx); err != nil {
		return nil, err
	}
	if err = c.startReference(); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

func (c *inprocCluster) startReference() error {
	target, err := url.Parse(strings.TrimSuffix(c.Upstream.URL(), "/v1"))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	c.refProxy = &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	rp.Transport = c.refProxy
	c.refServer = &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}
	c.refDone = make(chan struct{})
	go func() {
		defer close(c.refDone)
		c.refServer.Serve(ln) // ends with http.ErrServerClosed on Close
	}()
	c.Reference = "http://" + ln.Addr().String() + "/v1"
	return nil
}

// Close stops everything the cluster started.
func (c *inprocCluster) Close() {
	if c.refServer != nil {
		c.refServer.Close()
		<-c.refDone
		c.refProxy.CloseIdleConnections()
	}
	if c.Front != nil {
		c.Front.Close()
	}
	if c.A != nil {
		c.A.Close()
	}
	if c.B != nil {
		c.B.Close()
	}
	if c.serving != nil {
		c.serving.Close()
	}
	if c.Upstream != nil {
		c.Upstream.Close()
	}
}
