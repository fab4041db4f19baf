package bench

// Stream checks of the proxy suite: many concurrent streams read to the end,
// every chunk checked for loss, duplication and order; and the memory each
// open stream costs the process.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// checkStreams opens n concurrent streams at url and reads them all,
// failing on any lost, duplicated or reordered chunk. Every stream must carry
// chunks "t0 " .. "t<chunks-1> " and end with [DONE].
func checkStreams(ctx context.Context, url, key string, n, chunks int) error {
	bad, first := countBadStreams(ctx, url, key, n, chunks, nil)
	if bad > 0 {
		return fmt.Errorf("%d of %d streams failed; first: %w", bad, n, first)
	}
	return nil
}

// countBadStreams is checkStreams returning how many of the n streams failed
// (lost, duplicated or reordered chunk, missing [DONE], request error) and
// the first failure. It calls firstChunk (when not nil) as each stream's
// first chunk arrives.
func countBadStreams(ctx context.Context, url, key string, n, chunks int, firstChunk func()) (bad int, first error) {
	client := newLoadClient(n)
	defer client.CloseIdleConnections()
	body := []byte(`{"model":"` + benchModel + `","stream":true,"messages":[{"role":"user","content":"count"}]}`)
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
			if !strings.Contains(line, `"content"`) {
				continue // the finish or usage chunk
			}
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

// streamMemory opens n streams at url that the upstream holds after their
// first chunk and returns the in-process memory (heap plus goroutine stacks)
// per open stream. Everything in the process counts: client, proxy, mesh
// nodes and upstream, so compare with the same measure taken directly
// against the upstream.
func streamMemory(ctx context.Context, up *syntheticUpstream, url, key string, n int) (uint64, error) {
	client := newLoadClient(n)
	defer client.CloseIdleConnections()
	body := []byte(`{"model":"` + benchModel + `","stream":true,"messages":[{"role":"user","content":"hold"}]}`)
	before := memInUse()
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
		during = memInUse()
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
