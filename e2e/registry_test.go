//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// verdaccioLauncher returns Verdaccio's launcher from
// scripts/install-verdaccio.sh. A missing install skips the test on a
// developer machine and fails it under CI.
func verdaccioLauncher(t *testing.T, root string) string {
	t.Helper()
	cache := os.Getenv("CLAWMATRIX_VERDACCIO_CACHE")
	if cache == "" {
		cache = filepath.Join(root, ".cache", "verdaccio")
	}
	launcher := filepath.Join(cache, "node_modules", "verdaccio", "bin", "verdaccio")
	if _, err := os.Stat(launcher); err != nil {
		msg := fmt.Sprintf("Verdaccio is not installed in %s (%v): run `bash scripts/install-verdaccio.sh` (or `make e2e`)", cache, err)
		if underCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return launcher
}

// registry is a private npm registry (Verdaccio) on 127.0.0.1 with no
// uplinks: it serves exactly what the test publishes, and nothing reaches
// out of the machine.
type registry struct {
	url    string // http://127.0.0.1:PORT/
	dir    string
	npmrc  string // the publisher's credentials
	ocBin  string // node 24, for npm and Verdaccio
	cmd    *exec.Cmd
	exited chan struct{}
}

// startRegistry starts Verdaccio in dir and makes a publishing user. The
// registry is stopped when the test ends.
func startRegistry(ctx context.Context, t *testing.T, launcher, ocBin, dir string) *registry {
	t.Helper()
	port := freePort(t, 1)
	r := &registry{url: fmt.Sprintf("http://127.0.0.1:%d/", port), dir: dir, ocBin: ocBin, npmrc: filepath.Join(dir, "npmrc")}
	if err := os.MkdirAll(filepath.Join(dir, "storage"), 0o755); err != nil {
		t.Fatal(err)
	}
	config := strings.Join([]string{
		"storage: " + filepath.Join(dir, "storage"),
		"auth:",
		"  htpasswd:",
		"    file: " + filepath.Join(dir, "htpasswd"),
		"    max_users: 1",
		"uplinks: {}", // nothing is fetched from elsewhere
		"packages:",
		"  '**':",
		"    access: $all",
		"    publish: $authenticated",
		"web:",
		"  enable: false",
		"log: {type: stdout, format: pretty, level: warn}",
		"",
	}, "\n")
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(filepath.Join(dir, "verdaccio.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(ocBin, "node"), launcher, "--config", cfgPath, "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	cmd.Env = append(os.Environ(), "HOME="+dir)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("starting Verdaccio: %v", err)
	}
	r.cmd, r.exited = cmd, make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(r.exited)
	}()
	t.Cleanup(r.stop)

	client := &http.Client{Timeout: 2 * time.Second}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = waitFor(wctx, 250*time.Millisecond, func() error {
		select {
		case <-r.exited:
			return fmt.Errorf("Verdaccio exited: %s", r.log())
		default:
		}
		resp, err := client.Get(r.url + "-/ping")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ping: HTTP %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Verdaccio did not come up on %s: %v", r.url, err)
	}

	// The publisher: the CouchDB-style sign-up npm adduser does.
	body, _ := json.Marshal(map[string]string{"name": "e2e", "password": "e2e-publisher-" + nonce(t)})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, r.url+"-/user/org.couchdb.user:e2e", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var user struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(raw, &user); err != nil || user.Token == "" {
		t.Fatalf("making the publishing user: HTTP %d %s (%v)", resp.StatusCode, raw, err)
	}
	npmrc := fmt.Sprintf("//127.0.0.1:%d/:_authToken=%s\n", port, user.Token)
	if err := os.WriteFile(r.npmrc, []byte(npmrc), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *registry) log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "verdaccio.log"))
	return tailString(string(b), 20)
}

func (r *registry) stop() {
	syscall.Kill(-r.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.exited
	}
}

// publishDir publishes every tarball `make npm` wrote into dir for version,
// the platform packages before the plugin package that depends on them,
// with npm publish as a maintainer would.
func (r *registry) publishDir(ctx context.Context, t *testing.T, dir, version string) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.tgz"))
	if err != nil || len(files) < 2 {
		t.Fatalf("%d tarballs in %s (%v), want the plugin package and at least one platform package", len(files), dir, err)
	}
	plugin := filepath.Join(dir, "clawmatrix-openclaw-plugin-"+version+".tgz")
	i := slices.Index(files, plugin)
	if i < 0 {
		t.Fatalf("no %s among %v", filepath.Base(plugin), files)
	}
	files = append(slices.Delete(files, i, i+1), plugin)
	for _, f := range files {
		cmd := exec.CommandContext(ctx, "npm", "publish", f, "--registry", r.url)
		cmd.Env = append(os.Environ(),
			"PATH="+r.ocBin+string(os.PathListSeparator)+os.Getenv("PATH"),
			"NPM_CONFIG_USERCONFIG="+r.npmrc,
			"npm_config_cache="+filepath.Join(r.dir, "npm-cache"),
			"npm_config_update_notifier=false",
		)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm publish %s: %v\n%s\nregistry log:\n%s", filepath.Base(f), err, tailString(string(out), 20), r.log())
		}
	}
}

// packageVersion is package.json's version.
func packageVersion(t *testing.T, root string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil || pkg.Version == "" {
		t.Fatalf("package.json version: %q (%v)", pkg.Version, err)
	}
	return pkg.Version
}

// nextPatch is version with its patch number one higher (1.2.3 → 1.2.4),
// any pre-release dropped.
func nextPatch(t *testing.T, version string) string {
	t.Helper()
	core, _, _ := strings.Cut(version, "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		t.Fatalf("version %q is not major.minor.patch", version)
	}
	patch, err := strconv.Atoi(parts[2])
	if err != nil {
		t.Fatalf("version %q: %v", version, err)
	}
	return fmt.Sprintf("%s.%s.%d", parts[0], parts[1], patch+1)
}

// packNpm runs what `make npm` runs, into out, with extra flags.
func packNpm(ctx context.Context, t *testing.T, root, out string, flags ...string) {
	t.Helper()
	args := append([]string{"run", "./scripts/npmpack", "-out", out}, flags...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	started := time.Now()
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	t.Logf("packed in %v:\n%s", time.Since(started).Round(100*time.Millisecond), strings.TrimSpace(string(b)))
}
