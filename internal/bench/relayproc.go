package bench

// The yardstick proxies: processes that each run one standard-library
// httputil.ReverseProxy in front of a target. Chained two deep
// (client -> relay -> relay -> upstream) they are the least work two machines
// can do to pass an HTTP request on, which the cluster path
// (client -> A's proxy -> mesh -> B -> upstream) is held against. The bench
// starts them as its own binary in the hidden RelayCommand mode.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// RelayCommand is the hidden mode of clawmatrix-bench that runs one
// yardstick proxy (RunRelay); the bench starts it, people have no use for it.
const RelayCommand = "relay"

const relayUsage = "usage: clawmatrix-bench " + RelayCommand + " --target http://127.0.0.1:PORT"

// RunRelay is RelayCommand: it serves an httputil.ReverseProxy to --target
// on a free 127.0.0.1 port, prints "relay: http://127.0.0.1:PORT" once it
// accepts connections, and serves until ctx ends. It returns the exit code.
func RunRelay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(RelayCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	target := fs.String("target", "", "base URL to pass requests to (http://host:port)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	u, err := url.Parse(*target)
	if *target == "" || fs.NArg() > 0 || err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintln(stderr, relayUsage)
		return 1
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(stderr, "relay:", err)
		return 1
	}
	srv, tr := newRelay(u)
	defer tr.CloseIdleConnections()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "relay: http://%s\n", ln.Addr())
	select {
	case err := <-done:
		fmt.Fprintln(stderr, "relay:", err)
		return 1
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		srv.Close()
	}
	<-done
	return 0
}

// newRelay is the yardstick proxy: the standard library's reverse proxy
// with a transport that keeps enough idle connections for 16 clients (the
// default of 2 per host would measure connection set-up instead).
func newRelay(target *url.URL) (*http.Server, *http.Transport) {
	tr := &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 64, IdleConnTimeout: time.Minute}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = tr
	return &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second}, tr
}

// relayProc is one RelayCommand process.
type relayProc struct {
	*proc
	// URL is where it listens, http://127.0.0.1:PORT.
	URL string
}

// startRelayProc starts a relay to target with bin (a clawmatrix-bench
// binary) and returns once it listens. On error nothing is left running.
func startRelayProc(ctx context.Context, bin, name, target string) (*relayProc, error) {
	p, v, err := startProc(ctx, name, bin, []string{RelayCommand, "--target", target}, "relay: ")
	if err != nil {
		return nil, err
	}
	return &relayProc{proc: p, URL: v[0]}, nil
}
