package mesh

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// appendBinaryFrame is how the link writer frames a payload.
func appendBinaryFrame(dst, payload []byte, client bool) []byte {
	dst, key, mask := appendBinaryHeader(dst, len(payload), client)
	start := len(dst)
	dst = append(dst, payload...)
	if mask {
		maskFrame(dst[start:], key)
	}
	return dst
}

// Frames written by appendBinaryHeader, several per write, are read back by
// gorilla/websocket intact in both directions: masked from the client (a
// server refuses unmasked frames) and unmasked from the server, at every
// length encoding.
func TestBinaryFramesReadByGorilla(t *testing.T) {
	sizes := []int{0, 1, 7, 8, 9, 125, 126, 127, 1000, 0xffff, 0x10000, 70001}
	payload := func(n, seed int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + (i*7+seed)%26)
		}
		return b
	}
	var batch []byte
	for i, n := range sizes {
		batch = appendBinaryFrame(batch, payload(n, i), true)
	}
	serverGot := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := websocket.Upgrader{}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			serverGot <- err
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		serverGot <- readFrames(c, sizes, payload)
		var out []byte
		for i, n := range sizes {
			out = appendBinaryFrame(out, payload(n, i+1), false)
		}
		_, _ = c.NetConn().Write(out)
		_, _, _ = c.NextReader() // until the client closes
	}))
	defer srv.Close()

	c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.NetConn().Write(batch); err != nil {
		t.Fatal(err)
	}
	if err := <-serverGot; err != nil {
		t.Fatalf("server reading masked frames: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := readFrames(c, sizes, func(n, seed int) []byte { return payload(n, seed+1) }); err != nil {
		t.Fatalf("client reading unmasked frames: %v", err)
	}
}

func readFrames(c *websocket.Conn, sizes []int, payload func(n, seed int) []byte) error {
	for i, n := range sizes {
		mt, got, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("frame %d (%d bytes): %w", i, n, err)
		}
		if mt != websocket.BinaryMessage || !bytes.Equal(got, payload(n, i)) {
			return fmt.Errorf("frame %d: type %d, %d bytes, want binary of %d bytes as sent", i, mt, len(got), n)
		}
	}
	return nil
}

func TestMaskFrameMatchesBytewise(t *testing.T) {
	for n := range 40 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i * 31)
		}
		want := bytes.Clone(b)
		key := [4]byte{0x12, 0x34, 0x56, 0x78}
		for i := range want {
			want[i] ^= key[i%4]
		}
		maskFrame(b, 0x78563412)
		if !bytes.Equal(b, want) {
			t.Fatalf("n=%d: got %x want %x", n, b, want)
		}
	}
}
