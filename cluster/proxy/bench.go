package proxy

// Measurement harness shared by the package's Go benchmarks and the `bench`
// command: a synthetic upstream, a two-node loopback cluster
// (client -> A's proxy -> mesh -> B -> upstream), and load runs whose results
// are compared with the same load sent to the upstream directly.

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// SyntheticUpstream is an OpenAI-compatible chat completions server that
// answers at once, so that a measurement shows the proxy's own cost. Streamed
// responses carry Chunks events whose contents are "t0 ", "t1 ", ... so a
// reader can check that none was lost or reordered.
type SyntheticUpstream struct {
	// URL is the OpenAI base URL, http://127.0.0.1:PORT/v1.
	URL    string
	Chunks int

	srv  *http.Server
	ln   net.Listener
	done chan struct{}

	mu      sync.Mutex
	release chan struct{} // non-nil while streams are held after their first chunk
}

// StartSyntheticUpstream listens on 127.0.0.1 and serves until Close.
func StartSyntheticUpstream(chunks int) (*SyntheticUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if chunks < 1 {
		chunks = 1
	}
	u := &SyntheticUpstream{URL: "http://" + ln.Addr().String() + "/v1", Chunks: chunks, ln: ln, done: make(chan struct{})}
	u.srv = &http.Server{Handler: u, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(u.done)
		u.srv.Serve(ln)
	}()
	return u, nil
}

// Close stops the server and ends held streams.
func (u *SyntheticUpstream) Close() error {
	u.Hold(false)
	err := u.srv.Close()
	<-u.done
	return err
}

// Hold makes new and running streams stop after their first chunk until
// Hold(false).
func (u *SyntheticUpstream) Hold(on bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if on && u.release == nil {
		u.release = make(chan struct{})
	} else if !on && u.release != nil {
		close(u.release)
		u.release = nil
	}
}

var syntheticCompletion = []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"bench","choices":[{"index":0,"message":{"role":"assistant","content":"a short synthetic reply"},"finish_reason":"stop"}],"usage":{"prompt_tokens":8,"completion_tokens":4,"total_tokens":12}}`)

func (u *SyntheticUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	if !bytes.Contains(body, []byte(`"stream":true`)) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(syntheticCompletion)))
		w.Write(syntheticCompletion)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	buf := make([]byte, 0, 256)
	for i := 0; i < u.Chunks; i++ {
		buf = append(buf[:0], `data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench","choices":[{"index":0,"delta":{"content":"t`...)
		buf = strconv.AppendInt(buf, int64(i), 10)
		buf = append(buf, " \"},\"finish_reason\":null}]}\n\n"...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		fl.Flush()
		if i == 0 {
			u.mu.Lock()
			rel := u.release
			u.mu.Unlock()
			if rel != nil {
				select {
				case <-rel:
				case <-r.Context().Done():
					return
				}
			}
		}
	}
	io.WriteString(w, "data: [DONE]\n\n")
}

// BenchModel is the model the bench cluster serves.
const BenchModel = "bench"

// BenchCluster is client -> A (proxy) -> mesh link -> B (serving) -> upstream,
// all on 127.0.0.1.
type BenchCluster struct {
	Upstream *SyntheticUpstream
	A, B     *mesh.Node
	Front    *Server
	// Key is the front's bearer key.
	Key string
	// Reference is the OpenAI base URL of the standard library's
	// httputil.ReverseProxy in front of the upstream: what one plain HTTP
	// proxy hop costs on this machine, a yardstick for the proxy's figures.
	Reference string
	serving   *Serving
	refServer *http.Server
	refDone   chan struct{}
	refProxy  *http.Transport
}

// StartBenchCluster starts the cluster with LAN mesh timings and waits until
// A sees B serving BenchModel.
func StartBenchCluster(ctx context.Context, chunks int) (*BenchCluster, error) {
	c := &BenchCluster{}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	var err error
	if c.Upstream, err = StartSyntheticUpstream(chunks); err != nil {
		return nil, err
	}
	secret := randomHex(16)
	c.Key = randomHex(16)
	models := []schema.Model{{ID: BenchModel, Provider: "bench", ModelParams: schema.DefaultModelParams(), Upstream: &schema.Upstream{BaseURL: c.Upstream.URL}}}

	cfg := mesh.DefaultLANConfig()
	cfg.NodeID, cfg.Secret, cfg.ListenAddr = "bench-b", secret, "127.0.0.1:0"
	cfg.Capabilities = mesh.Capabilities{Models: []mesh.ModelInfo{{ID: BenchModel, Provider: "bench"}}}
	if c.B, err = mesh.New(cfg); err != nil {
		return nil, err
	}
	c.serving = RegisterServing(c.B, ServingConfig{Models: models})
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
		if p, found := c.A.Peer("bench-b"); found && slices.ContainsFunc(p.Models, func(m mesh.ModelInfo) bool { return m.ID == BenchModel }) {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("bench cluster: node A never saw node B: %w", ctx.Err())
		}
	}
	if c.Front, err = NewServer(ServerConfig{Node: c.A, Addr: "127.0.0.1:0", APIKey: c.Key}); err != nil {
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

func (c *BenchCluster) startReference() error {
	target, err := url.Parse(strings.TrimSuffix(c.Upstream.URL, "/v1"))
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
func (c *BenchCluster) Close() {
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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// LoadOptions describes one load run.
type LoadOptions struct {
	// URL is an OpenAI base URL (…/v1); APIKey its bearer key, if any.
	URL, APIKey string
	Model       string
	Concurrency int
	// Requests is the total number of requests, spread over the workers.
	Requests int
	Stream   bool
}

// LoadResult summarises a load run.
type LoadResult struct {
	Requests int
	Elapsed  time.Duration
	// Latency percentiles of whole requests (response fully read).
	P50, P90, P99 time.Duration
	// FirstChunkP50 is the median time to the first SSE event (streams only).
	FirstChunkP50 time.Duration
}

// PerSecond is the request throughput.
func (r LoadResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

func (r LoadResult) String() string {
	s := fmt.Sprintf("%6.0f req/s  p50 %v  p90 %v  p99 %v", r.PerSecond(), r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond))
	if r.FirstChunkP50 > 0 {
		s += fmt.Sprintf("  first chunk p50 %v", r.FirstChunkP50.Round(time.Microsecond))
	}
	return s
}

// NewLoadClient returns an HTTP client that keeps enough idle connections
// for the given concurrency.
func NewLoadClient(concurrency int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}
}

// RunLoad sends o.Requests chat completions with o.Concurrency workers and
// measures them. Any failed request fails the run.
func RunLoad(ctx context.Context, client *http.Client, o LoadOptions) (LoadResult, error) {
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	body := []byte(`{"model":"` + o.Model + `","messages":[{"role":"user","content":"say something short"}],"max_tokens":16}`)
	if o.Stream {
		body = []byte(`{"model":"` + o.Model + `","stream":true,"messages":[{"role":"user","content":"say something short"}],"max_tokens":16}`)
	}
	url := strings.TrimRight(o.URL, "/") + "/chat/completions"
	lat := make([]time.Duration, o.Requests)
	first := make([]time.Duration, o.Requests)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.Concurrency)
	start := time.Now()
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 32<<10)
			for {
				i := int(next.Add(1)) - 1
				if i >= o.Requests {
					return
				}
				t0 := time.Now()
				ttfc, err := oneRequest(ctx, client, url, o.APIKey, body, o.Stream, buf)
				if err != nil {
					errs <- fmt.Errorf("request %d: %w", i, err)
					next.Store(int64(o.Requests))
					return
				}
				lat[i] = time.Since(t0)
				first[i] = ttfc
			}
		}()
	}
	wg.Wait()
	res := LoadResult{Requests: o.Requests, Elapsed: time.Since(start)}
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	slices.Sort(lat)
	res.P50, res.P90, res.P99 = pct(lat, 50), pct(lat, 90), pct(lat, 99)
	if o.Stream {
		slices.Sort(first)
		res.FirstChunkP50 = pct(first, 50)
	}
	return res, nil
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[(len(sorted)-1)*p/100]
}

// oneRequest sends one completion and reads the whole response; for a
// stream it returns the time to the end of the first event.
func oneRequest(ctx context.Context, client *http.Client, url, key string, body []byte, stream bool, buf []byte) (time.Duration, error) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var ttfc time.Duration
	prevNL := false
	for {
		n, err := resp.Body.Read(buf)
		if stream && ttfc == 0 && n > 0 {
			// The first chunk has arrived when its event's blank line has.
			if (prevNL && buf[0] == '\n') || bytes.Contains(buf[:n], []byte("\n\n")) {
				ttfc = time.Since(t0)
			}
			prevNL = buf[n-1] == '\n'
		}
		if err == io.EOF {
			return ttfc, nil
		}
		if err != nil {
			return ttfc, err
		}
	}
}

// CompareReport is the same load sent directly to the upstream and through
// the proxy (A -> B -> upstream), in one run.
type CompareReport struct {
	Direct1, Proxy1   LoadResult // 1 client
	Direct16, Proxy16 LoadResult // 16 concurrent clients
	DirectStream      LoadResult // 1 client, streamed
	ProxyStream       LoadResult
	// Reference16 is the 16-client load through one standard-library
	// reverse proxy, from the same round as Direct16 and Proxy16.
	Reference16 LoadResult
	// Rounds is how many times each direct/proxied pair ran, alternating;
	// each pair above is the round with the median comparison.
	Rounds int
}

// ThroughputRatio16 is proxied over direct throughput at 16 clients.
func (r CompareReport) ThroughputRatio16() float64 {
	return r.Proxy16.PerSecond() / r.Direct16.PerSecond()
}

// ReferenceRatio16 is one standard-library reverse proxy's throughput over
// direct at 16 clients: the cost of a single plain HTTP hop here.
func (r CompareReport) ReferenceRatio16() float64 {
	return r.Reference16.PerSecond() / r.Direct16.PerSecond()
}

// AddedP50 is the median latency the proxy adds at 1 client.
func (r CompareReport) AddedP50() time.Duration { return r.Proxy1.P50 - r.Direct1.P50 }

// AddedFirstChunk is the median time to first chunk the proxy adds.
func (r CompareReport) AddedFirstChunk() time.Duration {
	return r.ProxyStream.FirstChunkP50 - r.DirectStream.FirstChunkP50
}

func (r CompareReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "direct    1 client : %v\n", r.Direct1)
	fmt.Fprintf(&b, "proxied   1 client : %v\n", r.Proxy1)
	fmt.Fprintf(&b, "direct   16 clients: %v\n", r.Direct16)
	fmt.Fprintf(&b, "proxied  16 clients: %v\n", r.Proxy16)
	fmt.Fprintf(&b, "direct   stream    : %v\n", r.DirectStream)
	fmt.Fprintf(&b, "proxied  stream    : %v\n", r.ProxyStream)
	fmt.Fprintf(&b, "(each pair: the median of %d alternating direct/proxied rounds)\n", r.Rounds)
	fmt.Fprintf(&b, "reference 16 clients: %v\n", r.Reference16)
	fmt.Fprintf(&b, "throughput at 16 clients: %.2fx direct (goal >= 0.4x); one httputil.ReverseProxy: %.2fx\n", r.ThroughputRatio16(), r.ReferenceRatio16())
	fmt.Fprintf(&b, "added p50 at 1 client: %v (goal <= 300µs)\n", r.AddedP50().Round(time.Microsecond))
	fmt.Fprintf(&b, "added time to first chunk: %v (goal <= 1ms)\n", r.AddedFirstChunk().Round(time.Microsecond))
	return b.String()
}

// CompareRounds is how many times Compare runs each direct/proxied pair.
// On a shared machine a single short run swings by a factor of two with
// the neighbours' load; alternating the two sides and keeping the median
// round compares them under like conditions.
const CompareRounds = 5

// Compare runs each load directly against the upstream and through the
// proxy, alternating, CompareRounds times with requests requests per run
// (after a warm-up), and reports for each pair the round whose comparison
// (throughput ratio, added p50, added time to first chunk) is the median.
func Compare(ctx context.Context, c *BenchCluster, requests int) (CompareReport, error) {
	r := CompareReport{Rounds: CompareRounds}
	direct := LoadOptions{URL: c.Upstream.URL, Model: BenchModel, Requests: requests}
	proxied := LoadOptions{URL: c.Front.URL(), APIKey: c.Key, Model: BenchModel, Requests: requests}
	client := NewLoadClient(16)
	defer client.CloseIdleConnections()
	reference := LoadOptions{URL: c.Reference, Model: BenchModel, Requests: requests}
	pairs := []struct {
		direct, proxy *LoadResult
		// ref, when set, also runs the reference proxy in each round.
		ref         *LoadResult
		concurrency int
		stream      bool
		// score orders the rounds; the median one is reported.
		score func(d, p LoadResult) float64
	}{
		{&r.Direct1, &r.Proxy1, nil, 1, false, func(d, p LoadResult) float64 { return float64(p.P50 - d.P50) }},
		{&r.Direct16, &r.Proxy16, &r.Reference16, 16, false, func(d, p LoadResult) float64 { return p.PerSecond() / d.PerSecond() }},
		{&r.DirectStream, &r.ProxyStream, nil, 1, true, func(d, p LoadResult) float64 { return float64(p.FirstChunkP50 - d.FirstChunkP50) }},
	}
	run := func(o LoadOptions, concurrency int, stream bool, warm bool) (LoadResult, error) {
		o.Concurrency, o.Stream = concurrency, stream
		if warm {
			w := o
			w.Requests = max(requests/10, o.Concurrency)
			if _, err := RunLoad(ctx, client, w); err != nil {
				return LoadResult{}, err
			}
		}
		return RunLoad(ctx, client, o)
	}
	type round struct {
		d, p, ref LoadResult
		score     float64
	}
	for _, pair := range pairs {
		rounds := make([]round, 0, CompareRounds)
		for i := range CompareRounds {
			var rd round
			var err error
			if rd.d, err = run(direct, pair.concurrency, pair.stream, i == 0); err != nil {
				return r, err
			}
			if rd.p, err = run(proxied, pair.concurrency, pair.stream, i == 0); err != nil {
				return r, err
			}
			if pair.ref != nil {
				if rd.ref, err = run(reference, pair.concurrency, pair.stream, i == 0); err != nil {
					return r, fmt.Errorf("reference proxy: %w", err)
				}
			}
			rd.score = pair.score(rd.d, rd.p)
			rounds = append(rounds, rd)
		}
		slices.SortFunc(rounds, func(a, b round) int { return cmp.Compare(a.score, b.score) })
		med := rounds[len(rounds)/2]
		*pair.direct, *pair.proxy = med.d, med.p
		if pair.ref != nil {
			*pair.ref = med.ref
		}
	}
	return r, nil
}

// CheckStreams opens n concurrent streams at url and reads them all,
// failing on any lost, duplicated or reordered chunk. Every stream must carry
// chunks "t0 " .. "t<chunks-1> " and end with [DONE].
func CheckStreams(ctx context.Context, url, key string, n, chunks int) error {
	bad, first := CountBadStreams(ctx, url, key, n, chunks)
	if bad > 0 {
		return fmt.Errorf("%d of %d streams failed; first: %w", bad, n, first)
	}
	return nil
}

// CountBadStreams is CheckStreams returning how many of the n streams failed
// (lost, duplicated or reordered chunk, missing [DONE], request error) and
// the first failure.
func CountBadStreams(ctx context.Context, url, key string, n, chunks int) (bad int, first error) {
	return countBadStreams(ctx, url, key, n, chunks, nil)
}

// countBadStreams is CountBadStreams calling firstChunk (when not nil) as
// each stream's first chunk arrives.
func countBadStreams(ctx context.Context, url, key string, n, chunks int, firstChunk func()) (bad int, first error) {
	client := NewLoadClient(n)
	defer client.CloseIdleConnections()
	body := []byte(`{"model":"` + BenchModel + `","stream":true,"messages":[{"role":"user","content":"count"}]}`)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := checkStream(ctx, client, strings.TrimRight(url, "/")+"/chat/completions", key, body, chunks, firstChunk); err != nil {
				errs <- fmt.Errorf("stream %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if bad == 0 {
			first = err
		}
		bad++
	}
	return bad, first
}

func checkStream(ctx context.Context, client *http.Client, url, key string, body []byte, chunks int, firstChunk func()) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	sc := bufio.NewScanner(resp.Body)
	want := 0
	done := false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") {
			continue
		}
		if line == "data: [DONE]" {
			done = true
			continue
		}
		i := strings.Index(line, `"content":"t`)
		if i < 0 {
			return fmt.Errorf("unexpected event %q", line)
		}
		rest := line[i+len(`"content":"t`):]
		num, _, found := strings.Cut(rest, " ")
		got, err := strconv.Atoi(num)
		if !found || err != nil {
			return fmt.Errorf("damaged chunk where chunk %d was due: %q", want, line)
		}
		if got != want {
			return fmt.Errorf("chunk %d arrived where chunk %d was due", got, want)
		}
		if want == 0 && firstChunk != nil {
			firstChunk()
		}
		want++
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if want != chunks || !done {
		return fmt.Errorf("got %d of %d chunks (done=%v)", want, chunks, done)
	}
	return nil
}

// StreamMemory opens n streams at url that the upstream holds after their
// first chunk and returns the in-process memory (heap plus goroutine stacks)
// per open stream. Everything in the process counts: client, proxy, mesh
// nodes and upstream, so compare with the same measure taken directly
// against the upstream.
func StreamMemory(ctx context.Context, up *SyntheticUpstream, url, key string, n int) (uint64, error) {
	client := NewLoadClient(n)
	defer client.CloseIdleConnections()
	body := []byte(`{"model":"` + BenchModel + `","stream":true,"messages":[{"role":"user","content":"hold"}]}`)
	before := inUse()
	up.Hold(true)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var opened, finished sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		opened.Add(1)
		finished.Add(1)
		go func() {
			defer finished.Done()
			first := true
			defer func() {
				if first {
					opened.Done()
				}
			}()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(url, "/")+"/chat/completions", bytes.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			if key != "" {
				req.Header.Set("Authorization", "Bearer "+key)
			}
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\n" && first {
					first = false
					opened.Done()
				}
			}
		}()
	}
	opened.Wait()
	close(errs)
	var during uint64
	if err := <-errs; err == nil {
		during = inUse()
	} else {
		up.Hold(false)
		finished.Wait()
		return 0, err
	}
	up.Hold(false)
	finished.Wait()
	if during < before {
		return 0, errors.New("memory shrank while streams were open; measure again")
	}
	return (during - before) / uint64(n), nil
}

func inUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}
