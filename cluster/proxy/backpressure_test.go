package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
)

// A client that stops reading must stall the upstream through the mesh's
// flow control instead of letting any node buffer the stream.
func TestProxySlowClientStallsUpstream(t *testing.T) {
	_, _, up, front := twoNodes(t)
	const total = 256 << 20
	var written atomic.Int64
	event := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("x", 1000) + "\"}}]}\n\n"
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for written.Load() < total {
			if _, err := w.Write([]byte(event)); err != nil {
				return true
			}
			fl.Flush()
			written.Add(int64(len(event)))
		}
		return true
	})

	conn, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(16 << 10)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	body := `{"model":"m","stream":true,"messages":[]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", testKey, len(body), body)
	br := bufio.NewReaderSize(conn, 4096)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, "200") {
		t.Fatalf("status line %q, %v", status, err)
	}
	// Stop reading; wait until the upstream cannot write any more.
	last, still := int64(-1), 0
	deadline := time.Now().Add(15 * time.Second)
	for still < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("upstream never stalled: %d bytes written", written.Load())
		}
		time.Sleep(100 * time.Millisecond)
		if n := written.Load(); n == last {
			still++
		} else {
			last, still = n, 0
		}
	}
	if last >= total {
		t.Fatalf("the upstream wrote the whole %d-byte stream to a client that reads nothing", total)
	}
	t.Logf("upstream stalled after %.1f MiB (socket buffers and the mesh window)", float64(last)/(1<<20))
	// Hanging up releases everything down to the upstream.
	conn.Close()
	select {
	case <-up.Cancelled():
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled after the client hung up")
	}
}

// A plain (non-streamed) response longer than MaxBufferedBytes is passed on
// as it arrives instead of being held whole; if it then breaks, the client
// sees a cut connection, never a complete-looking body.
func TestProxyLargePlainResponse(t *testing.T) {
	up := startLLM(t, "up-b")
	b := startNode(t, "b", []schema.Model{upstreamModel("m", up)})
	a := startNode(t, "a", nil, b)
	waitServes(t, a, "b", "m")
	front, err := NewServer(ServerConfig{Node: a, Addr: "127.0.0.1:0", APIKey: testKey, MaxBufferedBytes: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if err := front.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	defer front.Close()

	content := strings.Repeat("y", 300<<10)
	body := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"` + content + `"},"finish_reason":"stop"}]}`
	hold := make(chan struct{})
	var breakOff atomic.Bool
	up.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Content-Type", "application/json")
		if !breakOff.Load() {
			io.WriteString(w, body)
			return true
		}
		io.WriteString(w, body[:len(body)/2])
		w.(http.Flusher).Flush()
		close(hold)
		<-r.Context().Done()
		return true
	})

	post := func() (*http.Response, error) {
		req, _ := http.NewRequestWithContext(testCtx(t), "POST", front.URL()+"/chat/completions", strings.NewReader(`{"model":"m","messages":[]}`))
		req.Header.Set("Authorization", "Bearer "+testKey)
		return http.DefaultClient.Do(req)
	}
	resp, err := post()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(got) != body {
		t.Fatalf("status %d, %d of %d bytes, err %v", resp.StatusCode, len(got), len(body), err)
	}

	breakOff.Store(true)
	go func() {
		select {
		case <-hold:
			time.Sleep(50 * time.Millisecond) // let the first half reach the client
			b.Close()
		case <-time.After(10 * time.Second):
		}
	}()
	resp, err = post()
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err = io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("a response broken after %d bytes ended cleanly (status %d)", len(got), resp.StatusCode)
	}
	if resp.StatusCode != 200 || len(got) < minPassedOn || len(got) >= len(body) {
		t.Fatalf("status %d, got %d of %d bytes before the cut (%v)", resp.StatusCode, len(got), len(body), err)
	}
}

// minPassedOn is the least the client must have received before the
// break above: more than the front may hold, so it was passed on.
const minPassedOn = 16 << 10
