// Command npmpack builds clawmatrix's npm packages into one folder: a
// package per platform holding only its clawmatrix-plugin binary, and the
// plugin package @clawmatrix/openclaw-plugin that lists them. `make npm`
// runs it; README.md (Development) says how to publish the result.
//
//	go run ./scripts/npmpack [-out dist/npm] [-version V] [-commit C] [-platforms linux-x64,...]
//
// The version is package.json's unless -version stamps another one into
// every package (a test publishes an upgrade that way). The output is
// reproducible: the same commit built with the same Go release gives the
// same bytes, on any machine and in any folder.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "npmpack:", err)
		os.Exit(1)
	}
}

type options struct {
	root      string // the repository
	out       string
	version   string // "" for package.json's
	commit    string // "" for the checkout's HEAD
	goTool    string
	platforms []platform
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("npmpack", flag.ContinueOnError)
	o := options{}
	fl.StringVar(&o.root, "root", ".", "the repository `dir`")
	fl.StringVar(&o.out, "out", "dist/npm", "write the tarballs into `dir`")
	fl.StringVar(&o.version, "version", "", "stamp this `version` instead of package.json's")
	fl.StringVar(&o.commit, "commit", "", "the `commit` to stamp (default: the checkout's HEAD)")
	fl.StringVar(&o.goTool, "go", "go", "the go `command`")
	keys := fl.String("platforms", "", "comma-separated platforms to build (default: all)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	o.platforms = platforms
	if *keys != "" {
		var err error
		if o.platforms, err = platformsByKey(strings.Split(*keys, ",")); err != nil {
			return err
		}
	}
	written, err := pack(ctx, o)
	if err != nil {
		return err
	}
	for _, w := range written {
		fmt.Fprintf(stdout, "%-60s %9d bytes  sha256 %s\n", w.path, w.size, w.sha256)
	}
	return nil
}

// packed is one tarball written.
type packed struct {
	path   string
	size   int
	sha256 string
}

// pack builds every platform binary and writes the tarballs (platform
// packages first, the plugin package last: the order to publish them in)
// and SHA256SUMS into o.out, replacing earlier ones.
func pack(ctx context.Context, o options) ([]packed, error) {
	raw, err := os.ReadFile(filepath.Join(o.root, "package.json"))
	if err != nil {
		return nil, err
	}
	manifest, version, err := stampedManifest(raw, o.version)
	if err != nil {
		return nil, err
	}
	mainFiles, err := packageFiles(o.root, manifest)
	if err != nil {
		return nil, err
	}
	commit := o.commit
	if commit == "" {
		commit = headCommit(ctx, o.root)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	if err := removeOldTarballs(o.out); err != nil {
		return nil, err
	}
	stage, err := os.MkdirTemp("", "npmpack-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(stage)

	var written []packed
	write := func(pkg string, files []file) error {
		data, err := tarball(files)
		if err != nil {
			return fmt.Errorf("%s: %w", pkg, err)
		}
		path := filepath.Join(o.out, tarballName(pkg, version))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		written = append(written, packed{path, len(data), hex.EncodeToString(sum[:])})
		return nil
	}
	for _, p := range o.platforms {
		bin := filepath.Join(stage, p.key(), binName)
		if err := buildBinary(ctx, o.goTool, o.root, p, version, commit, bin); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return nil, err
		}
		pj, err := platformManifest(p, version)
		if err != nil {
			return nil, err
		}
		err = write(p.packageName(), []file{
			{name: "package.json", mode: 0o644, data: pj},
			{name: "bin/" + binName, mode: 0o755, data: data},
		})
		if err != nil {
			return nil, err
		}
	}
	if err := write(mainPackage, mainFiles); err != nil {
		return nil, err
	}
	var sums strings.Builder
	for _, w := range written {
		fmt.Fprintf(&sums, "%s  %s\n", w.sha256, filepath.Base(w.path))
	}
	if err := os.WriteFile(filepath.Join(o.out, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		return nil, err
	}
	return written, nil
}

// removeOldTarballs clears what an earlier run wrote, so that the folder
// holds one release to publish.
func removeOldTarballs(dir string) error {
	// The plugin package's name is a prefix of every platform package's.
	old, err := filepath.Glob(filepath.Join(dir, tarballName(mainPackage, "*")))
	if err != nil {
		return err
	}
	for _, f := range append(old, filepath.Join(dir, "SHA256SUMS")) {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

const stampPkg = "github.com/clawmatrix/clawmatrix/internal/buildinfo"

// buildBinary cross-compiles the sidecar for p. Everything that would make
// two builds differ is pinned: no cgo, no paths (-trimpath), no VCS stamp
// or build id, the default instruction set levels, and the caller's
// GOFLAGS and GOEXPERIMENT left out.
func buildBinary(ctx context.Context, goTool, root string, p platform, version, commit, out string) error {
	ldflags := fmt.Sprintf("-s -w -buildid= -X %s.version=%s -X %s.commit=%s", stampPkg, version, stampPkg, commit)
	cmd := exec.CommandContext(ctx, goTool, "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags,
		"-o", out, "./cmd/clawmatrix-plugin")
	cmd.Dir = root
	cmd.Env = buildEnv(os.Environ(), p)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for %s: %w\n%s", p.key(), err, b)
	}
	return nil
}

func buildEnv(env []string, p platform) []string {
	pinned := map[string]string{
		"CGO_ENABLED": "0", "GOOS": p.goos, "GOARCH": p.goarch,
		"GOAMD64": "v1", "GOARM64": "v8.0", "GOFLAGS": "", "GOEXPERIMENT": "",
	}
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := pinned[k]; !ok {
			out = append(out, kv)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(pinned)) {
		out = append(out, k+"="+pinned[k])
	}
	return out
}

// headCommit is the checkout's HEAD, "-dirty" appended when tracked files
// have changes, or "unknown" outside a git checkout.
func headCommit(ctx context.Context, root string) string {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		b, err := cmd.Output()
		return strings.TrimSpace(string(b)), err
	}
	rev, err := git("rev-parse", "HEAD")
	if err != nil || rev == "" {
		return "unknown"
	}
	if st, err := git("status", "--porcelain", "--untracked-files=no"); err == nil && st != "" {
		rev += "-dirty"
	}
	return rev
}
