package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// readTarball returns the headers and contents of a gzipped tar, and the
// gzip header.
func readTarball(t *testing.T, data []byte) (gzip.Header, []*tar.Header, map[string][]byte) {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var hdrs []*tar.Header
	contents := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		hdrs = append(hdrs, h)
		contents[h.Name] = b
	}
	return zr.Header, hdrs, contents
}

func TestTarball(t *testing.T) {
	files := []file{
		{name: "package.json", mode: 0o644, data: []byte("{}\n")},
		{name: "bin/clawmatrix-plugin", mode: 0o755, data: []byte("binary")},
		{name: "a/b.md", mode: 0o644, data: nil},
	}
	data, err := tarball(files)
	if err != nil {
		t.Fatal(err)
	}
	zh, hdrs, contents := readTarball(t, data)
	if zh.Name != "" || !zh.ModTime.IsZero() || zh.Comment != "" {
		t.Errorf("gzip header carries a name or time: %+v", zh)
	}
	var names []string
	for _, h := range hdrs {
		names = append(names, h.Name)
		if !h.ModTime.Equal(packTime) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" || h.Typeflag != tar.TypeReg {
			t.Errorf("%s: header %+v is not the fixed one", h.Name, h)
		}
	}
	want := []string{"package/a/b.md", "package/bin/clawmatrix-plugin", "package/package.json"}
	if !slices.Equal(names, want) {
		t.Errorf("entries %v, want %v (sorted, under package/)", names, want)
	}
	if hdrs[1].Mode != 0o755 || hdrs[2].Mode != 0o644 {
		t.Errorf("modes %o and %o, want 755 for the binary and 644", hdrs[1].Mode, hdrs[2].Mode)
	}
	if string(contents["package/bin/clawmatrix-plugin"]) != "binary" {
		t.Errorf("binary content %q", contents["package/bin/clawmatrix-plugin"])
	}
	// The same files in another order give the same bytes.
	again, err := tarball([]file{files[2], files[0], files[1]})
	if err != nil || !bytes.Equal(again, data) {
		t.Errorf("the order of the input changed the tarball (err %v)", err)
	}
	if _, err := tarball(append(files, files[0])); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("a file listed twice: err %v, want one naming it", err)
	}
}

// The committed package.json comes back byte for byte: key order and
// layout are npm's, so a stamped copy differs only in its versions.
func TestJSONRoundTrip(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range [][]byte{raw, []byte("{\n  \"a\": [],\n  \"b\": {},\n  \"c\": \"<ü>\",\n  \"d\": 1.50,\n  \"e\": null,\n  \"f\": [\n    true\n  ]\n}\n")} {
		o, err := decodeObject(doc)
		if err != nil {
			t.Fatal(err)
		}
		out, err := encodeJSON(o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, doc) {
			t.Errorf("round trip changed the document:\n%s\nwant:\n%s", out, doc)
		}
	}
	for _, bad := range []string{`[]`, `{"a":1}{}`, `{"a":1,"a":2}`, `{"a":`} {
		if _, err := decodeObject([]byte(bad)); err == nil {
			t.Errorf("decodeObject(%s) accepted it", bad)
		}
	}
}

func TestStampedManifest(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	o, err := decodeObject(raw)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := o.get("version")

	got, v, err := stampedManifest(raw, "")
	if err != nil || v != own || !bytes.Equal(got, raw) {
		t.Fatalf("unstamped: version %q err %v; want package.json unchanged at %v", v, err, own)
	}

	got, v, err = stampedManifest(raw, "9.9.9-next.1")
	if err != nil || v != "9.9.9-next.1" {
		t.Fatalf("stamped: version %q err %v", v, err)
	}
	// Only the version strings changed, every one of them.
	if want := strings.ReplaceAll(string(raw), `"`+own.(string)+`"`, `"9.9.9-next.1"`); string(got) != want {
		t.Errorf("stamped package.json:\n%s\nwant:\n%s", got, want)
	}

	edit := func(from, to string) []byte { return []byte(strings.Replace(string(raw), from, to, 1)) }
	bad := []struct {
		name    string
		doc     []byte
		version string
		wantErr string
	}{
		{"a platform package at another version", edit(`"@clawmatrix/openclaw-plugin-darwin-x64": "`+own.(string)+`"`, `"@clawmatrix/openclaw-plugin-darwin-x64": "0.0.1"`), "", `optionalDependencies["@clawmatrix/openclaw-plugin-darwin-x64"] is 0.0.1`},
		{"a platform missing from the required list", edit(`"@clawmatrix/openclaw-plugin-linux-arm64",`, ``), "", "openclaw.install.requiredPlatformPackages lists"},
		{"no minHostVersion", edit(`"minHostVersion"`, `"minHost"`), "", "minHostVersion is missing"},
		{"another package", edit(`"name": "@clawmatrix/openclaw-plugin"`, `"name": "other"`), "", "name is other"},
		{"a version that is not one", raw, "1.2", `-version "1.2" is not a version`},
		{"a version with a space", raw, "1.2.3 -X x=y", "is not a version"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := stampedManifest(tt.doc, tt.version)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// copyTree copies the repository's sources to dst: what a clone has, less
// the caches and build output.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	skip := map[string]bool{".git": true, ".cache": true, "dist": true, "bin": true, "node_modules": true}
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() && skip[rel] {
			return filepath.SkipDir
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			return err
		}
		// A later time on every file: the build must not depend on it.
		later := time.Now().Add(time.Hour)
		return os.Chtimes(target, later, later)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestReproducible packs the host's platform twice, from the checkout and
// from a copy of it in another folder with other file times, and wants the
// same bytes; the binary in the package reports the stamped version.
func TestReproducible(t *testing.T) {
	host := slices.IndexFunc(platforms, func(p platform) bool { return p.goos == runtime.GOOS && p.goarch == runtime.GOARCH })
	if host < 0 {
		t.Skipf("no prebuilt platform for %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	root := repoRoot(t)
	copyRoot := filepath.Join(t.TempDir(), "elsewhere", "clawmatrix")
	copyTree(t, root, copyRoot)

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	const commit = "0123456789abcdef0123456789abcdef01234567"
	var runs [][]packed
	for _, src := range []string{root, copyRoot} {
		written, err := pack(ctx, options{
			root: src, out: filepath.Join(t.TempDir(), "npm"), commit: commit,
			goTool: "go", platforms: []platform{platforms[host]},
		})
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, written)
	}
	if len(runs[0]) != 2 || len(runs[1]) != 2 {
		t.Fatalf("wrote %d and %d tarballs, want 2 each (the platform package, then the plugin package)", len(runs[0]), len(runs[1]))
	}
	for i := range runs[0] {
		a, b := runs[0][i], runs[1][i]
		if filepath.Base(a.path) != filepath.Base(b.path) || a.sha256 != b.sha256 {
			t.Errorf("two builds differ: %s (sha256 %s) and %s (sha256 %s)", a.path, a.sha256, b.path, b.sha256)
		}
	}
	sums, err := os.ReadFile(filepath.Join(filepath.Dir(runs[0][0].path), "SHA256SUMS"))
	if err != nil || !strings.Contains(string(sums), runs[0][0].sha256+"  "+filepath.Base(runs[0][0].path)) {
		t.Errorf("SHA256SUMS lacks the platform package (err %v):\n%s", err, sums)
	}

	// The binary as npm will unpack it runs and says what it is.
	data, err := os.ReadFile(runs[0][0].path)
	if err != nil {
		t.Fatal(err)
	}
	_, hdrs, contents := readTarball(t, data)
	if len(hdrs) != 2 {
		t.Errorf("the platform package holds %d files, want package.json and the binary", len(hdrs))
	}
	bin := filepath.Join(t.TempDir(), binName)
	if err := os.WriteFile(bin, contents["package/bin/"+binName], 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bin, "version").CombinedOutput()
	raw, _ := os.ReadFile(filepath.Join(root, "package.json"))
	_, version, _ := stampedManifest(raw, "")
	want := "clawmatrix-plugin " + version + " (commit " + commit + ", " + runtime.Version() + ")\n"
	if err != nil || string(out) != want {
		t.Errorf("the packaged binary's version: %q (err %v), want %q", out, err, want)
	}
}
