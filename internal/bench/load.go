package bench

// The load generator of the in-process proxy measurements and of the chain
// comparison (chain.go): a fixed number of chat completions sent by a few
// workers over kept-alive connections, each timed whole and, for a stream,
// to its first event.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadOptions describes one load run.
type loadOptions struct {
	// URL is an OpenAI base URL (…/v1); APIKey its bearer key, if any.
	URL, APIKey string
	Model       string
	Concurrency int
	// Requests is the total number of requests, spread over the workers.
	Requests int
	Stream   bool
}

// loadResult summarises a load run.
type loadResult struct {
	Requests int
	Elapsed  time.Duration
	// Latency percentiles of whole requests (response fully read).
	P50, P90, P99 time.Duration
	// FirstChunkP50 is the median time to the first SSE event (streams only).
	FirstChunkP50 time.Duration
}

// PerSecond is the request throughput.
func (r loadResult) PerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

func (r loadResult) String() string {
	s := fmt.Sprintf("%6.0f req/s  p50 %v  p90 %v  p99 %v", r.PerSecond(), r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond))
	if r.FirstChunkP50 > 0 {
		s += fmt.Sprintf("  first chunk p50 %v", r.FirstChunkP50.Round(time.Microsecond))
	}
	return s
}

// newLoadClient returns an HTTP client that keeps enough idle connections
// for the given concurrency.
func newLoadClient(concurrency int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}}
}

// runLoad sends o.Requests chat completions with o.Concurrency workers and
// measures them. Any failed request fails the run.
func runLoad(ctx context.Context, client *http.Client, o loadOptions) (loadResult, error) {
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
	res := loadResult{Requests: o.Requests, Elapsed: time.Since(start)}
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
