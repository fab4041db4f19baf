package faultnet

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echoServer echoes lines on 127.0.0.1 until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func listen(t *testing.T) *Proxy {
	t.Helper()
	p, err := Listen(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func connect(t *testing.T, p *Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and waits up to wait for its echo.
func roundTrip(c net.Conn, r *bufio.Reader, wait time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(wait))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

func TestProxyFaults(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, p *Proxy)
	}{
		{"forwards", func(t *testing.T, p *Proxy) {
			c, r := connect(t, p)
			if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
				t.Fatalf("echo through the proxy: %q, %v", got, err)
			}
		}},
		{"freeze holds bytes, heal delivers them", func(t *testing.T, p *Proxy) {
			c, r := connect(t, p)
			if _, err := roundTrip(c, r, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			p.Freeze()
			if got, err := roundTrip(c, r, 200*time.Millisecond); !isTimeout(err) {
				t.Fatalf("a frozen proxy delivered %q (err %v)", got, err)
			}
			p.Heal()
			// The line held during the freeze arrives now.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if got, err := r.ReadString('\n'); err != nil || got != "ping\n" {
				t.Fatalf("after heal: %q, %v", got, err)
			}
		}},
		{"cut drops connections and refuses new ones until heal", func(t *testing.T, p *Proxy) {
			c, r := connect(t, p)
			if _, err := roundTrip(c, r, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			p.Cut()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := r.ReadString('\n'); err == nil || isTimeout(err) {
				t.Fatalf("read on a cut connection: %v, want it closed", err)
			}
			c2, r2 := connect(t, p) // TCP accepts, then the proxy closes it
			if _, err := roundTrip(c2, r2, 5*time.Second); err == nil || isTimeout(err) {
				t.Fatalf("new connection while cut: %v, want it closed", err)
			}
			p.Heal()
			c3, r3 := connect(t, p)
			if got, err := roundTrip(c3, r3, 5*time.Second); err != nil || got != "ping\n" {
				t.Fatalf("after heal: %q, %v", got, err)
			}
		}},
		{"close ends frozen connections and is idempotent", func(t *testing.T, p *Proxy) {
			c, r := connect(t, p)
			p.Freeze()
			io.WriteString(c, "held\n")
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := r.ReadString('\n'); err == nil || isTimeout(err) {
				t.Fatalf("read after Close: %v, want it closed", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, listen(t)) })
	}
}

func TestListenNeedsTarget(t *testing.T) {
	if _, err := Listen(""); err == nil {
		t.Fatal("Listen accepted an empty target")
	}
}
