package remote

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/schema"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "five.txt"), "l1\nl2\nl3\nl4\nl5\n")
	writeFile(t, filepath.Join(dir, "nonl.txt"), "a\nb")
	writeFile(t, filepath.Join(dir, "empty.txt"), "")
	writeFile(t, filepath.Join(dir, "bin.dat"), "PK\x03\x04\x00\x00binary")
	writeFile(t, filepath.Join(dir, "latin1.txt"), "caf\xe9\n")
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})

	cases := []struct {
		name    string
		args    schema.ReadArgs
		isError bool
		text    string // exact, or a part when prefixed with "~"
		next    any
	}{
		{"whole file", schema.ReadArgs{Path: "five.txt"}, false, "l1\nl2\nl3\nl4\nl5\n", nil},
		{"absolute path", schema.ReadArgs{Path: filepath.Join(dir, "five.txt"), Offset: 5}, false, "l5\n", nil},
		{"offset", schema.ReadArgs{Path: "five.txt", Offset: 4}, false, "l4\nl5\n", nil},
		{"limit", schema.ReadArgs{Path: "five.txt", Limit: 2}, false, "l1\nl2\n\n[more lines follow; to continue, read with offset 3]", 3.0},
		{"offset and limit", schema.ReadArgs{Path: "five.txt", Offset: 2, Limit: 2}, false, "~l2\nl3\n\n[more lines follow", 4.0},
		{"limit reaching the end", schema.ReadArgs{Path: "five.txt", Offset: 4, Limit: 2}, false, "l4\nl5\n", nil},
		{"last line without newline", schema.ReadArgs{Path: "nonl.txt", Offset: 2}, false, "b", nil},
		{"offset past the end", schema.ReadArgs{Path: "five.txt", Offset: 9}, true, "~has only 5 lines; offset 9 is past the end", nil},
		{"empty file", schema.ReadArgs{Path: "empty.txt"}, false, "~is empty", nil},
		{"binary", schema.ReadArgs{Path: "bin.dat"}, true, "~is a binary file (12 bytes, application/zip)", nil},
		{"not utf-8", schema.ReadArgs{Path: "latin1.txt"}, true, "~is a binary file", nil},
		{"missing", schema.ReadArgs{Path: "nope.txt"}, true, fmt.Sprintf("~cannot read %q on node \"n1\": no such file", filepath.Join(dir, "nope.txt")), nil},
		{"directory", schema.ReadArgs{Path: "."}, true, "~is a directory", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tg.read(t.Context(), tc.args)
			if r.IsError != tc.isError {
				t.Fatalf("isError = %v, want %v: %s", r.IsError, tc.isError, r.Text)
			}
			if part, ok := strings.CutPrefix(tc.text, "~"); ok {
				if !strings.Contains(r.Text, part) {
					t.Errorf("text %q lacks %q", r.Text, part)
				}
			} else if r.Text != tc.text {
				t.Errorf("text %q, want %q", r.Text, tc.text)
			}
			if r.Details != nil {
				if next := detailsMap(t, r)["nextOffset"]; next != tc.next {
					t.Errorf("nextOffset = %v, want %v", next, tc.next)
				}
			}
		})
	}
}

func TestReadOutputCap(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&b, "line %03d\n", i) // 9 bytes a line
	}
	writeFile(t, filepath.Join(dir, "big.txt"), b.String())
	writeFile(t, filepath.Join(dir, "long.txt"), strings.Repeat("x", 500)+"\nshort\n")
	p := openPolicy()
	p.MaxOutputBytes = 50
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, WorkspaceDir: dir})

	r := tg.read(t.Context(), schema.ReadArgs{Path: "big.txt"})
	d := detailsMap(t, r)
	// 50 bytes = 5 whole lines and 5 bytes of the sixth; 900-50 are cut.
	if !strings.HasPrefix(r.Text, "line 001\nline 002\nline 003\nline 004\nline 005\nline \n[... 850 bytes cut") ||
		d["cutBytes"] != 850.0 || d["nextOffset"] != 6.0 || d["lines"] != 5.0 {
		t.Fatalf("text %q, details %v", r.Text, d)
	}
	if !strings.Contains(r.Text, "read with offset 6") {
		t.Errorf("no hint how to continue: %q", r.Text)
	}

	// With a limit, only the requested range counts as cut.
	r = tg.read(t.Context(), schema.ReadArgs{Path: "big.txt", Offset: 11, Limit: 10})
	if d := detailsMap(t, r); d["cutBytes"] != 40.0 || d["nextOffset"] != 16.0 {
		t.Errorf("text %q, details %v", r.Text, d)
	}

	r = tg.read(t.Context(), schema.ReadArgs{Path: "long.txt"})
	if !strings.Contains(r.Text, "line 1 alone is longer than the output limit") || detailsMap(t, r)["cutBytes"] != 457.0 {
		t.Errorf("text %q, details %v", r.Text, r.Details)
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})

	r := tg.write(schema.WriteArgs{Path: "a/b/c.txt", Content: "first\n"})
	path := filepath.Join(dir, "a", "b", "c.txt")
	if r.IsError || !strings.Contains(r.Text, "created") || readString(t, path) != "first\n" {
		t.Fatalf("create with parents: %+v", r)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	r = tg.write(schema.WriteArgs{Path: "a/b/c.txt", Content: "second\n"})
	if r.IsError || !strings.Contains(r.Text, "replaced") || readString(t, path) != "second\n" {
		t.Fatalf("replace: %+v", r)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("replacing changed the mode to %v", fi.Mode().Perm())
	}
	r = tg.write(schema.WriteArgs{Path: "a/b/c.txt", Content: "third\n", Append: true})
	if r.IsError || !strings.Contains(r.Text, "appended 6 bytes") || readString(t, path) != "second\nthird\n" {
		t.Fatalf("append: %+v", r)
	}
	r = tg.write(schema.WriteArgs{Path: "new/log.txt", Content: "x", Append: true})
	if r.IsError || readString(t, filepath.Join(dir, "new", "log.txt")) != "x" {
		t.Fatalf("append to a new file: %+v", r)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "a", "b"))
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}

	// Through a (relative) symlink, the file it points to is written.
	if err := os.Symlink(filepath.Join("a", "b", "c.txt"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if r := tg.write(schema.WriteArgs{Path: "link", Content: "via link"}); r.IsError || readString(t, path) != "via link" {
		t.Fatalf("write through symlink: %+v", r)
	}

	if r := tg.write(schema.WriteArgs{Path: "a", Content: "x"}); !r.IsError || !strings.Contains(r.Text, "is a directory") {
		t.Errorf("writing over a directory: %+v", r)
	}
	writeFile(t, filepath.Join(dir, "file"), "x")
	if r := tg.write(schema.WriteArgs{Path: "file/sub.txt", Content: "x"}); !r.IsError || !strings.Contains(r.Text, "cannot write") {
		t.Errorf("a file in the way of the parent dirs: %+v", r)
	}
}

// A reader never sees a half-written file: the new content appears at once.
func TestWriteIsAtomic(t *testing.T) {
	dir := t.TempDir()
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	path := filepath.Join(dir, "f")
	a, b := strings.Repeat("a", 256<<10), strings.Repeat("b", 256<<10)
	writeFile(t, path, a)
	stop := make(chan struct{})
	bad := make(chan string, 1)
	go func() {
		defer close(bad)
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := os.ReadFile(path)
			if err != nil || (string(got) != a && string(got) != b) {
				bad <- fmt.Sprintf("read %d bytes, err %v", len(got), err)
				return
			}
		}
	}()
	for i := range 10 {
		content := a
		if i%2 == 0 {
			content = b
		}
		if r := tg.write(schema.WriteArgs{Path: "f", Content: content}); r.IsError {
			t.Fatal(r.Text)
		}
	}
	close(stop)
	if msg := <-bad; msg != "" {
		t.Fatalf("a reader saw a partial file: %s", msg)
	}
}

func readString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A FIFO would block an open for ever; it is refused before opening.
func TestReadWriteRefuseSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("no mkfifo here:", err)
	}
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	if r := tg.read(t.Context(), schema.ReadArgs{Path: "fifo"}); !r.IsError || !strings.Contains(r.Text, "is not a regular file") {
		t.Errorf("read: %+v", r)
	}
	if r := tg.write(schema.WriteArgs{Path: "fifo", Content: "x", Append: true}); !r.IsError || !strings.Contains(r.Text, "is not a regular file") {
		t.Errorf("write: %+v", r)
	}
}

// A secret spanning the output limit of a read is not cut in two: the cut
// moves before it, and lines and bytes are still counted in the file's own
// terms.
func TestReadCutSplitsNoSecret(t *testing.T) {
	const secret = "s3cr3t-0123456789abcdefghijklmn" // 31 bytes
	lines := strings.Repeat("abc\n", 10)             // 40 bytes, lines 1-10
	cases := []struct {
		name      string
		content   string
		args      schema.ReadArgs
		shown     string
		cutBytes  int
		nextLine  int // 0: a single line was too long
		textAfter string
	}{
		// The secret takes bytes 42-72; the limit is 50.
		{"inside a line", lines + "xx" + secret + "\nmore\n", schema.ReadArgs{}, lines + "xx", len(secret) + 6, 11, "read with offset 11"},
		{"with a limit", lines + "xx" + secret + "\nmore\n", schema.ReadArgs{Limit: 11}, lines + "xx", len(secret) + 1, 11, "read with offset 11"},
		{"first line", strings.Repeat("x", 20) + secret + "yy\n", schema.ReadArgs{}, strings.Repeat("x", 20), len(secret) + 3, 0, "line 1 alone is longer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "f.txt"), tc.content)
			p := openPolicy()
			p.MaxOutputBytes = 50
			tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, WorkspaceDir: dir, Secrets: []string{secret}})
			args := tc.args
			args.Node, args.Path = "n1", "f.txt"
			r := serve(t, tg, schema.ToolRead, args)
			if strings.Contains(r.Text, secret[:6]) {
				t.Fatalf("a piece of the secret survived the cut: %q", r.Text)
			}
			if want := fmt.Sprintf("%s\n[... %d bytes cut", tc.shown, tc.cutBytes); !strings.HasPrefix(r.Text, want) || !strings.Contains(r.Text, tc.textAfter) {
				t.Errorf("text %q, want it to start with %q and hold %q", r.Text, want, tc.textAfter)
			}
			d := detailsMap(t, r)
			if d["cutBytes"] != float64(tc.cutBytes) || (tc.nextLine != 0 && d["nextOffset"] != float64(tc.nextLine)) {
				t.Errorf("details %v", d)
			}
		})
	}
}

// A cancelled or timed-out read stops and says so instead of returning
// the file.
func TestReadStopsWhenContextEnds(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f.txt"), strings.Repeat("line\n", 1000))
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), WorkspaceDir: dir})
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	expired, cancel2 := context.WithDeadline(t.Context(), time.Unix(1, 0))
	defer cancel2()
	cases := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"cancelled", cancelled, `reading "` + filepath.Join(dir, "f.txt") + `" on node "n1" was cancelled`},
		{"timed out", expired, "did not finish within its time limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tg.read(tc.ctx, schema.ReadArgs{Path: "f.txt"})
			if !r.IsError || !strings.Contains(r.Text, tc.want) || strings.Contains(r.Text, "line\nline") {
				t.Errorf("got %+v, want an error saying %q", r, tc.want)
			}
		})
	}
	// Through the handler, the request's context reaches the read.
	w := &recorder{}
	req := meshRequest("caller", mustJSON(t, schema.ReadArgs{Node: "n1", Path: "f.txt"}))
	if err := tg.handler(schema.ToolRead).ServeMesh(cancelled, w, req); err != nil {
		t.Fatal(err)
	}
	if r := w.result(t); !r.IsError || !strings.Contains(r.Text, "was cancelled") {
		t.Errorf("through the handler: %+v", r)
	}
}

// A single huge line is read in pieces, and the read stops between pieces
// once the context ends.
func TestNextLineStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	br := bufio.NewReaderSize(strings.NewReader(strings.Repeat("x", 1<<20)), 4096)
	n, err := nextLine(ctx, br, func([]byte) {})
	if !errors.Is(err, context.Canceled) || n >= 1<<20 {
		t.Errorf("nextLine read %d bytes and returned %v; want it to stop early with context.Canceled", n, err)
	}
}
