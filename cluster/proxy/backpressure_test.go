package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A client that stops reading must stall the upstream through the mesh's
// flow control instead of letting any node buffer the stream.
func TestProxySlowClientStallsUpstream(t *testing.T) {
	_, _, up, front := twoNodes(t)
	const total = 256 << 20
	var written atomic.Int64
	event := "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + strings.Repeat("x", 1000) + "\"}}]}\n\n"
	up.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
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
	case <-up.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled after the client hung up")
	}
}
