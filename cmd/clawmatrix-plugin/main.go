// Command clawmatrix-plugin is the clawmatrix sidecar: OpenClaw drives it over
// stdio, and it also runs standalone nodes and the demo. The benchmarks are
// a binary of their own, cmd/clawmatrix-bench.
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
	"syscall"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"github.com/clawmatrix/clawmatrix/internal/buildinfo"
	"github.com/clawmatrix/clawmatrix/internal/demo"
	"github.com/clawmatrix/clawmatrix/plugin"
	"github.com/clawmatrix/clawmatrix/schema"
)

// command is one subcommand of the binary.
type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "serve                      sidecar mode (the default): JSON-RPC on stdin/stdout, logs on stderr", runServe},
		{"manifest", "manifest                   print openclaw.plugin.json", runManifest},
		{"tools", "tools                      print openclaw.tools.json, the tool catalogue the OpenClaw adapter registers", runTools},
		{"validate-config", "validate-config FILE       check a plugin config (JSON); exit 2 with one 'path: message' line per problem", runValidate},
		{"demo", "demo                       start a three-node cluster on loopback, show every feature, then exit", runDemo},
		{"node", "node --config FILE [--workspace DIR]  run a standalone mesh node until SIGINT/SIGTERM", runNode},
		{"identity", "identity (--config FILE | --state DIR | --key PATH) [--json]  print this node's id, public key and fingerprint (makes the key if missing)", runIdentity},
		{"trust", "trust (--config FILE | --state DIR | --known PATH) NODEID PUBLICKEY  pin a node's key (after a key change, or to undo revoke)", runTrust},
		{"revoke", "revoke (--config FILE | --state DIR | --known PATH) NODEID  refuse a node and its key for good", runRevoke},
		{"version", "version                    print the version, the commit and the Go release it was built with", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// The first signal starts a clean shutdown; restoring the default
	// handling then lets a second one end a shutdown that hangs.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 {
		name, args = args[0], args[1:]
	}
	if name == "help" || name == "-h" || name == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, args, stdout, stderr)
		}
	}
	if name == "bench" {
		fmt.Fprintln(stderr, "clawmatrix-plugin: the benchmarks are a binary of their own: run make bench, or build ./cmd/clawmatrix-bench beside clawmatrix-plugin")
		return 1
	}
	fmt.Fprintf(stderr, "clawmatrix-plugin: unknown command %q\n\n", name)
	usage(stderr)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: clawmatrix-plugin [command]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands() {
		fmt.Fprintln(w, "  "+c.usage)
	}
}

func stderrLogger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("CLAWMATRIX_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintf(stderr, "clawmatrix-plugin serve: takes no arguments (got %q)\n", args)
		return 1
	}
	log := stderrLogger(stderr)
	telemetry.LogExportErrors(log)
	s := &plugin.Server{Logger: log}
	if err := s.Serve(ctx, os.Stdin, stdout); err != nil {
		fmt.Fprintln(stderr, "clawmatrix-plugin:", err)
		return 1
	}
	return 0
}

func runManifest(_ context.Context, _ []string, stdout, _ io.Writer) int {
	stdout.Write(schema.Manifest())
	return 0
}

func runTools(_ context.Context, _ []string, stdout, _ io.Writer) int {
	stdout.Write(schema.ToolCatalogue())
	return 0
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) int {
	fmt.Fprintln(stdout, "clawmatrix-plugin", buildinfo.String())
	return 0
}

// readConfig loads and validates a config file, printing every problem.
func readConfig(path string, stdout io.Writer) (*schema.Config, bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(stdout, "%s: cannot read the config file: %v\n", path, err)
		return nil, false
	}
	cfg, problems := schema.Parse(raw)
	for _, p := range problems {
		fmt.Fprintln(stdout, p.String())
	}
	return cfg, len(problems) == 0
}

const validateUsage = "usage: clawmatrix-plugin validate-config FILE"

func runValidate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "-h" || args[0] == "--help") {
		fmt.Fprintln(stdout, validateUsage)
		return 0
	}
	if len(args) != 1 {
		fmt.Fprintln(stderr, validateUsage)
		return 1
	}
	if _, ok := readConfig(args[0], stdout); !ok {
		return 2
	}
	fmt.Fprintf(stdout, "%s: valid\n", args[0])
	return 0
}

func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "plugin config file (JSON)")
	workspace := fs.String("workspace", "", "directory for cluster_exec/read/write (default: the current directory)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 1
	}
	if *path == "" {
		fmt.Fprintln(stderr, "usage: clawmatrix-plugin node --config FILE [--workspace DIR]")
		return 1
	}
	cfg, ok := readConfig(*path, stderr)
	if !ok {
		return 2
	}
	log := stderrLogger(stderr)
	telemetry.LogExportErrors(log)
	rt, err := cluster.Start(ctx, cluster.Options{Config: cfg, WorkspaceDir: *workspace, ConfigPath: *path, Logger: log})
	if err != nil {
		fmt.Fprintln(stderr, "clawmatrix-plugin node:", err)
		return 1
	}
	fmt.Fprintf(stdout, "node %s up\n", rt.NodeID())
	if addr := rt.Mesh().Addr(); addr != nil {
		fmt.Fprintf(stdout, "mesh: %s\n", rt.Mesh().URL())
	}
	fmt.Fprintf(stdout, "model proxy: %s\nproxy key: %s\n", rt.ProxyURL(), rt.ProxyKey())
	fmt.Fprintf(stdout, "status page (opens once): %s\n", rt.StatusLink())
	if a := rt.MetricsAddr(); a != nil {
		fmt.Fprintf(stdout, "metrics: http://%s/metrics\n", a)
	}
	<-ctx.Done()
	log.Info("shutting down", "node", rt.NodeID())
	if err := rt.Close(); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "clawmatrix-plugin node: shutdown:", err)
		return 1
	}
	return 0
}

func runDemo(ctx context.Context, _ []string, stdout, stderr io.Writer) int {
	if err := demo.Run(ctx, stdout); err != nil {
		fmt.Fprintln(stderr, "clawmatrix-plugin demo:", err)
		return 1
	}
	return 0
}
