// Command clawmatrix-bench measures clawmatrix on loopback: the model proxy,
// the mesh, remote tools, failover and a soak run (package internal/bench).
// It starts nodes in its own process and as clawmatrix-plugin processes, so
// it needs that binary beside it (make bench builds both) or --node-bin.
//
// It is a separate binary so that the shipped sidecar carries none of the
// measurement machinery. Its hidden mode `relay --target URL` runs one
// standard-library reverse proxy, the yardstick the bench starts as
// processes of its own binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/clawmatrix/clawmatrix/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal stops the run cleanly; restoring the default
	// handling then lets a second one end a stop that hangs.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const usage = "usage: clawmatrix-bench [--quick] [--soak DURATION] [--only SUITE,...] [--node-bin PATH]"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == bench.RelayCommand {
		return bench.RunRelay(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("clawmatrix-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "small runs only (well under a minute in all)")
	soak := fs.Duration("soak", 0, fmt.Sprintf("how long the soak suite runs (default %s)", bench.DefaultSoak))
	only := fs.String("only", "", "comma-separated suites to run: "+strings.Join(bench.SuiteNames(), ", "))
	nodeBin := fs.String("node-bin", "", "the clawmatrix-plugin binary to start nodes with (default: the one beside this binary)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fmt.Fprintln(stderr, "\nsuites:")
		for _, s := range bench.Suites() {
			fmt.Fprintf(stderr, "  %-9s %s\n", s.Name, s.About)
		}
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "clawmatrix-bench: unexpected arguments %q\n%s\n", fs.Args(), usage)
		return 1
	}
	if *soak < 0 || (*soak > 0 && *soak < time.Second) {
		fmt.Fprintf(stderr, "clawmatrix-bench: --soak %s is too short; give at least 1s (for example --soak 2m)\n", *soak)
		return 1
	}
	o := bench.Options{Quick: *quick, Soak: *soak, NodeBin: *nodeBin, Logger: stderrLogger(stderr)}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	if _, err := bench.Run(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "clawmatrix-bench:", err)
		return 1
	}
	return 0
}

func stderrLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("CLAWMATRIX_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
