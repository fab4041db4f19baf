package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Arguments the bench refuses or explains, without running a suite.
func TestArguments(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want []string
	}{
		{[]string{"--help"}, 0, []string{"usage: clawmatrix-bench", "failover", "soak", "-quick", "-node-bin"}},
		{[]string{"--only", "nope"}, 1, []string{`unknown suite "nope"`, "proxy, mesh"}},
		{[]string{"--soak", "10ms"}, 1, []string{"too short"}},
		{[]string{"extra"}, 1, []string{`unexpected arguments ["extra"]`}},
		{[]string{"--frobnicate"}, 1, []string{"flag provided but not defined"}},
		{[]string{"relay"}, 1, []string{"usage: clawmatrix-bench relay --target"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var out strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if code := run(ctx, tc.args, &out, &out); code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// The relay mode serves a reverse proxy until its context ends.
func TestRelayMode(t *testing.T) {
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "upstream "+r.URL.Path) })}
	upURL := serve(t, up)
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"relay", "--target", upURL}, pw, io.Discard)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go io.Copy(io.Discard, pr)
	relay, ok := strings.CutPrefix(strings.TrimSpace(line), "relay: ")
	if !ok {
		t.Fatalf("first line %q", line)
	}
	tr := &http.Transport{}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(relay + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()
	if string(body) != "upstream /v1/models" {
		t.Fatalf("through the relay: %q", body)
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("relay exit code %d", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay still runs 10 s after its context ended")
	}
}

// serve runs srv on a free loopback port until the test ends.
func serve(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "http://" + ln.Addr().String()
}
