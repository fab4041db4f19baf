//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostPlatform is this machine as npm names it (linux-x64), or "" when no
// prebuilt package fits it.
func hostPlatform() string {
	arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
	if arch == "" || (runtime.GOOS != "linux" && runtime.GOOS != "darwin") {
		return ""
	}
	return runtime.GOOS + "-" + arch
}

// pathWithout is PATH with ocBin first and without any directory that
// holds one of names, so that a gateway can find neither.
func pathWithout(t *testing.T, ocBin string, names ...string) string {
	t.Helper()
	dirs := []string{ocBin}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" || slices.Contains(dirs, dir) {
			continue
		}
		if !slices.ContainsFunc(names, func(n string) bool { return isExecutableFile(filepath.Join(dir, n)) }) {
			dirs = append(dirs, dir)
		}
	}
	return strings.Join(dirs, string(os.PathListSeparator))
}

func isExecutableFile(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// lookPathIn is exec.LookPath on the given PATH.
func lookPathIn(pathList, name string) (string, bool) {
	for _, dir := range filepath.SplitList(pathList) {
		if p := filepath.Join(dir, name); isExecutableFile(p) {
			return p, true
		}
	}
	return "", false
}

// setenv replaces or adds one variable of the gateway's environment, for
// its CLI commands and its next start.
func (g *gateway) setenv(key, value string) {
	g.unsetenv(key)
	g.env = append(g.env, key+"="+value)
}

func (g *gateway) unsetenv(key string) {
	g.env = slices.DeleteFunc(g.env, func(kv string) bool { return strings.HasPrefix(kv, key+"=") })
}

// sidecarsUnder lists the live clawmatrix-plugin processes whose executable
// lies under dir, by pid, with the executable's path.
func sidecarsUnder(dir string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		if err != nil || isZombie(pid) {
			continue
		}
		exe = strings.TrimSuffix(exe, " (deleted)")
		if strings.HasPrefix(exe, dir+string(os.PathSeparator)) && filepath.Base(exe) == "clawmatrix-plugin" {
			out[pid] = exe
		}
	}
	return out
}

// filesNamed lists the files called name under dir.
func filesNamed(dir, name string) []string {
	var found []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == name {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// oneSidecar waits until exactly one sidecar runs from under dir, other
// than the pids in not, and returns it.
func oneSidecar(ctx context.Context, dir string, not ...int) (int, string, error) {
	var pid int
	var exe string
	err := waitFor(ctx, 500*time.Millisecond, func() error {
		now := sidecarsUnder(dir)
		for _, p := range not {
			if _, ok := now[p]; ok {
				return fmt.Errorf("sidecar %d still runs: %v", p, now)
			}
		}
		if len(now) != 1 {
			return fmt.Errorf("%d sidecars run from under %s: %v", len(now), dir, now)
		}
		for p, e := range now {
			pid, exe = p, e
		}
		return nil
	})
	return pid, exe, err
}

// TestInstallFromRegistry installs the plugin the way a user does, from an
// npm registry with `openclaw plugins install`, into a gateway that has
// neither Go nor clawmatrix-plugin on its PATH: the gateway runs the
// sidecar from the platform package and joins a second gateway. Then an
// upgrade published to the registry replaces the running sidecar, and an
// uninstall leaves no sidecar and no binary.
func TestInstallFromRegistry(t *testing.T) {
	platform := hostPlatform()
	if platform == "" {
		t.Skipf("no prebuilt package for %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	root := repoRoot(t)
	ocBin := openclawBinDir(t, root)
	launcher := verdaccioLauncher(t, root)

	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(14 * time.Minute)
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline.Add(-30*time.Second))
	defer cancel()

	work, err := os.MkdirTemp("", "cmx-npm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("work dir %s", work)

	// What `make npm` makes, and the same build stamped one patch release on.
	version := packageVersion(t, root)
	next := nextPatch(t, version)
	// The upgrade carries only this machine's platform package: npm skips an
	// optional dependency the registry lacks, and the test saves the links.
	packNpm(ctx, t, root, filepath.Join(work, "npm", version))
	packNpm(ctx, t, root, filepath.Join(work, "npm", next), "-version", next, "-platforms", platform)

	reg := startRegistry(ctx, t, launcher, ocBin, filepath.Join(work, "registry"))
	reg.publishDir(ctx, t, filepath.Join(work, "npm", version), version)

	meshPort := freePort(t, 1)

	// Node B: the plugin from a staged folder and a built binary, listening.
	pluginDir := filepath.Join(work, "plugin")
	stagePlugin(t, root, pluginDir)
	bDir := filepath.Join(work, "b")
	bConfig := gatewayConfig(freePort(t, 12), "token-b-"+nonce(t), pluginDir, filepath.Join(bDir, "ws"), map[string]any{
		"nodeId": nodeB, "secret": secret, "proxyPort": freePort(t, 1),
		"listen": true, "listenHost": "127.0.0.1", "listenPort": meshPort,
	})
	b := newGateway(t, "B", bDir, ocBin, bConfig["gateway"].(map[string]any)["port"].(int), bConfig)
	copyExecutable(t, buildSidecar(ctx, t, root, filepath.Join(work, "build")), b.bin)

	// Node A: a plain gateway config; the plugin comes from the registry.
	aDir := filepath.Join(work, "a")
	aPort, aToken := freePort(t, 12), "token-a-"+nonce(t)
	aConfig := gatewayConfig(aPort, aToken, "", filepath.Join(aDir, "ws"), nil)
	plugins := aConfig["plugins"].(map[string]any)
	delete(plugins, "load")
	delete(plugins["entries"].(map[string]any), "clawmatrix")
	a := newGateway(t, "A", aDir, ocBin, aPort, aConfig)
	a.unsetenv("CLAWMATRIX_BIN")
	for _, k := range []string{"GOBIN", "GOPATH", "GOROOT"} {
		a.unsetenv(k)
	}
	aPath := pathWithout(t, ocBin, "go", "clawmatrix-plugin")
	a.setenv("PATH", aPath)
	a.setenv("NPM_CONFIG_REGISTRY", reg.url)
	for _, name := range []string{"go", "clawmatrix-plugin"} {
		if p, found := lookPathIn(aPath, name); found {
			t.Fatalf("gateway A's PATH still has %s", p)
		}
	}
	if _, found := lookPathIn(aPath, "npm"); !found {
		t.Fatalf("gateway A's PATH %s has no npm, which OpenClaw installs plugins with", aPath)
	}
	aNpm := filepath.Join(a.stateDir(), "npm") // where OpenClaw keeps npm plugin installs

	gateways := []*gateway{a, b}
	t.Cleanup(func() {
		for _, g := range gateways {
			g.kill()
		}
		for pid := range sidecarsUnder(aNpm) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			for _, g := range gateways {
				g.dumpLogs(t)
			}
			t.Logf("--- registry log:\n%s", reg.log())
			t.Logf("work dir kept for inspection: %s", work)
		} else if os.Getenv("CLAWMATRIX_E2E_KEEP") == "" {
			os.RemoveAll(work)
		}
	})

	// B boots while A installs the plugin.
	bReady, bDone := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(bDone)
		bctx, cancel := context.WithTimeout(ctx, bootLimit)
		defer cancel()
		bReady <- b.startWithRetry(bctx, t)
	}()
	t.Cleanup(func() { <-bDone }) // ctx has ended by then

	// README, Install: the three steps a user takes.
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Minute)
	defer ccancel()
	started := time.Now()
	out, err := a.cli(cctx, "plugins", "install", "@clawmatrix/openclaw-plugin", "--force", "--accept-capabilities")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("openclaw plugins install took %v:\n%s", time.Since(started).Round(100*time.Millisecond), tailString(out, 8))
	installed := filesNamed(aNpm, "clawmatrix-plugin")
	if len(installed) != 1 || !strings.Contains(installed[0], filepath.Join("@clawmatrix", "openclaw-plugin-"+platform, "bin")) {
		t.Fatalf("binaries installed under %s: %v, want one, from @clawmatrix/openclaw-plugin-%s", aNpm, installed, platform)
	}
	if !isExecutableFile(installed[0]) {
		t.Errorf("%s is not executable after the install", installed[0])
	}
	patch := filepath.Join(work, "clawmatrix.json5")
	entry, _ := json.Marshal(map[string]any{"plugins": map[string]any{"entries": map[string]any{"clawmatrix": map[string]any{
		"enabled": true,
		"hooks":   map[string]any{"allowConversationAccess": true},
		"config": map[string]any{
			"nodeId": nodeA, "secret": secret, "proxyPort": freePort(t, 1),
			"peers": []any{map[string]any{"url": fmt.Sprintf("ws://127.0.0.1:%d", meshPort), "nodeId": nodeB}},
		},
	}}}})
	if err := os.WriteFile(patch, entry, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := a.cli(cctx, "config", "patch", "--file", patch); err != nil {
		t.Fatal(err)
	}
	bootCtx, bootCancel := context.WithTimeout(ctx, bootLimit)
	defer bootCancel()
	if err := a.startWithRetry(bootCtx, t); err != nil {
		t.Fatal(err)
	}
	if err := <-bReady; err != nil {
		t.Fatal(err)
	}

	t.Run("sidecar from the platform package", func(t *testing.T) {
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		_, exe, err := oneSidecar(wctx, aNpm)
		if err != nil {
			t.Fatal(err)
		}
		if exe != installed[0] {
			t.Errorf("A's sidecar runs %s, want the platform package's %s", exe, installed[0])
		}
		assertVersion(ctx, t, exe, version)
		// The binary is not in the plugin's own folder, which OpenClaw copies
		// on every load. OpenClaw also snapshots each declared dependency of
		// a plugin it loads (under <state dir>/tmp/plugin-captures), so copies
		// of the platform package may sit there; the sidecar never runs one.
		pkgDir := string(os.PathSeparator) + filepath.Join("@clawmatrix", "openclaw-plugin-"+platform, "bin") + string(os.PathSeparator)
		var snapshots int
		for _, f := range filesNamed(a.dir, "clawmatrix-plugin") {
			switch {
			case f == installed[0]:
			case strings.Contains(f, pkgDir) && strings.HasPrefix(f, filepath.Join(a.stateDir(), "tmp")+string(os.PathSeparator)):
				snapshots++
			default:
				t.Errorf("a copy of the binary outside the platform package: %s", f)
			}
		}
		t.Logf("OpenClaw holds %d snapshot(s) of the platform package while the plugin runs", snapshots)
	})
	if t.Failed() {
		t.FailNow()
	}
	t.Run("cluster forms", func(t *testing.T) { waitPeers(ctx, t, a, b) })
	if t.Failed() {
		t.FailNow()
	}

	t.Run("update replaces the binary and the sidecar", func(t *testing.T) {
		oldPid, oldExe, err := oneSidecar(ctx, aNpm)
		if err != nil {
			t.Fatal(err)
		}
		reg.publishDir(ctx, t, filepath.Join(work, "npm", next), next)
		uctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		started := time.Now()
		out, err := a.cli(uctx, "plugins", "update", "clawmatrix")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("openclaw plugins update took %v:\n%s", time.Since(started).Round(100*time.Millisecond), tailString(out, 6))
		wctx, wcancel := context.WithTimeout(ctx, 2*time.Minute)
		defer wcancel()
		_, exe, err := oneSidecar(wctx, aNpm, oldPid)
		if err != nil {
			t.Fatalf("no new sidecar after the update: %v", err)
		}
		if exe == oldExe {
			t.Errorf("the new sidecar runs the old binary %s", exe)
		}
		assertVersion(ctx, t, exe, next)
		// The running sidecar says so itself, in the gateway log.
		want := fmt.Sprintf("clawmatrix node started node=%s", nodeA)
		err = waitFor(wctx, 500*time.Millisecond, func() error {
			for _, f := range []string{a.logFile, a.outFile} {
				data, _ := os.ReadFile(f)
				for _, line := range strings.Split(string(data), "\n") {
					if strings.Contains(line, want) && strings.Contains(line, "version="+next) {
						return nil
					}
				}
			}
			return fmt.Errorf("the gateway log has no %q with version=%s", want, next)
		})
		if err != nil {
			t.Error(err)
		}
		waitPeers(ctx, t, a, b)
	})

	t.Run("uninstall leaves no sidecar and no binary", func(t *testing.T) {
		uctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if _, err := a.cli(uctx, "plugins", "uninstall", "clawmatrix", "--force"); err != nil {
			t.Fatal(err)
		}
		err := waitFor(uctx, 500*time.Millisecond, func() error {
			if now := sidecarsUnder(aNpm); len(now) > 0 {
				return fmt.Errorf("sidecars still run after the uninstall: %v", now)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// OpenClaw keeps the install an update replaced until the gateway
		// starts again (the running process may still use its files), and
		// removes it then.
		if err := b.stop(60 * time.Second); err != nil {
			t.Error(err)
		}
		if err := a.stop(60 * time.Second); err != nil {
			t.Fatal(err)
		}
		if err := a.startWithRetry(uctx, t); err != nil {
			t.Fatal(err)
		}
		err = waitFor(uctx, time.Second, func() error {
			if left := filesNamed(a.stateDir(), "clawmatrix-plugin"); len(left) > 0 {
				return fmt.Errorf("binaries left under A's state dir: %v", left)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		if now := sidecarsUnder(a.dir); len(now) > 0 {
			t.Errorf("a sidecar runs after the uninstall and a restart: %v", now)
		}
		if err := a.stop(60 * time.Second); err != nil {
			t.Error(err)
		}
	})
}

// assertVersion runs `exe version` and wants version in it.
func assertVersion(ctx context.Context, t *testing.T, exe, version string) {
	t.Helper()
	out, err := exec.CommandContext(ctx, exe, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "clawmatrix-plugin "+version+" (commit ") {
		t.Errorf("%s version: %q (%v), want clawmatrix-plugin %s (commit …)", exe, out, err, version)
	}
}

// waitPeers waits until A's and B's cluster_peers each list the other.
func waitPeers(ctx context.Context, t *testing.T, a, b *gateway) {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, p := range []struct {
		g     *gateway
		other string
	}{{a, nodeB}, {b, nodeA}} {
		err := waitFor(cctx, time.Second, func() error {
			text, err := p.g.invokeTool(cctx, "cluster_peers", map[string]any{})
			if err == nil && !strings.Contains(text, p.other) {
				err = fmt.Errorf("cluster_peers on %s does not list %s: %s", p.g.name, p.other, text)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
