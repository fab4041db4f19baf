package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/clawmatrix/clawmatrix/schema"
)

// ReadDetails are the details of a cluster_read result.
type ReadDetails struct {
	Node      string `json:"node"`
	Path      string `json:"path"`
	SizeBytes int64  `json:"sizeBytes"`
	Binary    bool   `json:"binary,omitempty"`
	// Offset is the first line returned (1-based); Lines how many follow.
	Offset int `json:"offset,omitempty"`
	Lines  int `json:"lines"`
	// NextOffset is where to continue reading; 0 at the end of the file.
	NextOffset int   `json:"nextOffset,omitempty"`
	Truncated  bool  `json:"truncated,omitempty"`
	CutBytes   int64 `json:"cutBytes,omitempty"`
}

// sniffLen is how much of a file decides whether it is text.
const sniffLen = 8 << 10

// fileTimeout bounds one read on the target (or toolProxy.maxTimeoutMs when
// lower); the caller waits fileDeadline, a little longer, for its answer.
const fileTimeout = 2 * time.Minute

// read returns lines of a text file: offset is the 1-based first line
// (default 1) and limit the number of lines (default: to the end), like
// OpenClaw's own read tool. The text stops at maxOutputBytes with a note.
// Reading stops when ctx ends or after toolProxy.maxTimeoutMs.
func (t *Target) read(ctx context.Context, a schema.ReadArgs) Result {
	if err := checkPolicy(t.policy, t.nodeID, "read"); err != nil {
		return errorResult(err.Error())
	}
	root, rel, path, err := t.locate(a.Path)
	if err != nil {
		return errorResult(t.pathError("read", path, err))
	}
	// Stat before opening: opening a FIFO would block, and a device may
	// never end.
	fi, err := root.root.Stat(rel)
	if err != nil {
		return errorResult(t.pathError("read", path, err))
	}
	if fi.IsDir() {
		return errorResult(fmt.Sprintf("%q on node %q is a directory, not a file; list it with cluster_exec (e.g. ls -la %s)",
			path, t.nodeID, shellQuote(path)))
	}
	if !fi.Mode().IsRegular() {
		return errorResult(fmt.Sprintf("%q on node %q is not a regular file (%s); cluster_read reads files only. "+
			"Use cluster_exec with a bounded command (e.g. head -c 4096 %s) instead.", path, t.nodeID, fi.Mode().Type(), shellQuote(path)))
	}
	f, err := root.root.Open(rel)
	if err != nil {
		return errorResult(t.pathError("read", path, err))
	}
	defer f.Close()
	d := ReadDetails{Node: t.nodeID, Path: path, SizeBytes: fi.Size()}
	ctx, cancel := context.WithTimeout(ctx, min(t.maxTimeout, fileTimeout))
	defer cancel()

	br := bufio.NewReaderSize(f, 64<<10)
	head, _ := br.Peek(sniffLen)
	if kind, binary := sniffBinary(head); binary {
		d.Binary = true
		return Result{
			Text: fmt.Sprintf("%q on node %q is a binary file (%d bytes, %s); cluster_read returns text only. "+
				"To look inside, use cluster_exec with e.g. `xxd %s | head -50` or `base64 %s`.",
				path, t.nodeID, fi.Size(), kind, shellQuote(path), shellQuote(path)),
			Details: d, IsError: true,
		}
	}

	offset := max(a.Offset, 1)
	// out holds a little more than can be shown, so that the cut can be
	// placed where it splits no secret; rest counts the requested bytes
	// past it.
	capacity := t.maxOutput + t.redact.lookahead()
	var out bytes.Buffer
	out.Grow(int(min(fi.Size(), int64(capacity))) + 1)
	line := 0 // lines read so far
	var rest int64
	more := false // lines follow the requested range
	done := ctx.Done()
	for {
		select {
		case <-done:
			return t.readStopped(ctx, path, line)
		default:
		}
		if a.Limit > 0 && line == offset-1+a.Limit {
			_, err := br.Peek(1)
			more = err == nil
			break
		}
		if rest > 0 && a.Limit == 0 {
			// Everything up to the end of the file is cut; count it
			// without reading it.
			rest += fi.Size() - consumed(fi.Size(), br, f)
			break
		}
		inRange := line+1 >= offset
		n, err := nextLine(ctx, br, func(chunk []byte) {
			if !inRange {
				return
			}
			k := min(max(capacity-out.Len(), 0), len(chunk))
			out.Write(chunk[:k])
			rest += int64(len(chunk) - k)
		})
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return t.readStopped(ctx, path, line)
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return errorResult(t.fileError("read", path, err))
		}
		if n == 0 {
			break
		}
		line++
		if err != nil {
			break
		}
	}
	if line < offset {
		if fi.Size() == 0 {
			return Result{Text: fmt.Sprintf("%q on node %q is empty.", path, t.nodeID), Details: d}
		}
		return errorResult(fmt.Sprintf("%q on node %q has only %d lines; offset %d is past the end. "+
			"Read from offset 1, or a smaller offset.", path, t.nodeID, line, offset))
	}
	d.Offset = offset
	// Cut where no secret is split, then scrub; the counts are the file's
	// own bytes and lines.
	c := t.redact.cutPoint(out.Bytes(), t.maxOutput)
	if cutBytes := int64(out.Len()-c) + rest; cutBytes > 0 {
		shown := out.Bytes()[:c]
		lastFull := offset - 1 + bytes.Count(shown, []byte("\n")) // last line shown in full
		text := string(t.redact.bytes(shown))
		d.Truncated, d.CutBytes = true, cutBytes
		d.Lines = max(lastFull-offset+1, 0)
		text += cutNote(cutBytes, t.maxOutput)
		if lastFull >= offset {
			d.NextOffset = lastFull + 1
			text += fmt.Sprintf("\n[lines %d-%d are shown in full; to continue, read with offset %d]", offset, lastFull, d.NextOffset)
		} else {
			text += fmt.Sprintf("\n[line %d alone is longer than the output limit; use cluster_exec (e.g. cut or fold) to see it]", offset)
		}
		return Result{Text: text, Details: d}
	}
	text := out.String()
	d.Lines = line - offset + 1
	if more {
		d.NextOffset = line + 1
		text += fmt.Sprintf("\n[more lines follow; to continue, read with offset %d]", d.NextOffset)
	}
	return Result{Text: text, Details: d}
}

// readStopped is the result of a read that ctx ended after lines lines.
func (t *Target) readStopped(ctx context.Context, path string, lines int) Result {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errorResult(fmt.Sprintf("reading %q on node %q was stopped after %d lines: it did not finish within its time limit "+
			"(at most %s, toolProxy.maxTimeoutMs). Read a smaller part with offset and limit, or use cluster_exec "+
			"(e.g. grep, head or tail) to pick out what you need.", path, t.nodeID, lines, t.maxTimeout))
	}
	return errorResult(fmt.Sprintf("reading %q on node %q was cancelled after %d lines; nothing was returned.", path, t.nodeID, lines))
}

// consumed is how many bytes of the file have been read past (the file
// position minus what the buffered reader still holds).
func consumed(size int64, br *bufio.Reader, f *os.File) int64 {
	pos, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return size
	}
	return pos - int64(br.Buffered())
}

// nextLine reads one line including its '\n', handing it to emit in pieces
// so that a huge line never sits in memory whole. It returns the line's
// length and io.EOF when the file ended (n > 0 for a last line without '\n'),
// or ctx's error when ctx ended in the middle of a long line.
func nextLine(ctx context.Context, br *bufio.Reader, emit func([]byte)) (int, error) {
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		if len(chunk) > 0 {
			emit(chunk)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			continue
		}
		return n, err
	}
}

// sniffBinary reports whether the start of a file looks binary: a NUL byte
// or invalid UTF-8 (ignoring a rune cut at the end of the sample).
func sniffBinary(head []byte) (string, bool) {
	if len(head) == 0 {
		return "", false
	}
	sample := head
	if len(sample) == sniffLen {
		for i := 0; i < utf8.UTFMax && len(sample) > 0 && !utf8.Valid(sample); i++ {
			sample = sample[:len(sample)-1]
		}
	}
	if bytes.IndexByte(head, 0) < 0 && utf8.Valid(sample) {
		return "", false
	}
	return http.DetectContentType(head), true
}

// WriteDetails are the details of a cluster_write result.
type WriteDetails struct {
	Node     string `json:"node"`
	Path     string `json:"path"`
	Bytes    int    `json:"bytes"`
	Appended bool   `json:"appended,omitempty"`
	Created  bool   `json:"created,omitempty"`
}

// newFileMode is the mode of files cluster_write creates: what another
// node writes is private to the user the node runs as until that user
// decides otherwise (the process umask can only narrow it further).
const newFileMode fs.FileMode = 0o600

// write replaces the file atomically (a temp file in the same directory,
// then rename), or appends to it; missing parent directories are created.
// Writing through a symlink writes the file it points to, which must lie in
// the same root. An existing file keeps its mode.
func (t *Target) write(a schema.WriteArgs) Result {
	if err := checkPolicy(t.policy, t.nodeID, "write"); err != nil {
		return errorResult(err.Error())
	}
	root, rel, path, err := t.locate(a.Path)
	if err != nil {
		return errorResult(t.pathError("write", path, err))
	}
	r := root.root
	mode := newFileMode
	fi, statErr := r.Stat(rel)
	created := isNotExist(statErr)
	switch {
	case statErr != nil && !created:
		return errorResult(t.pathError("write", path, statErr))
	case statErr == nil && fi.IsDir():
		return errorResult(fmt.Sprintf("%q on node %q is a directory; give a file path inside it", path, t.nodeID))
	case statErr == nil && !fi.Mode().IsRegular():
		return errorResult(fmt.Sprintf("%q on node %q is not a regular file (%s); cluster_write writes files only",
			path, t.nodeID, fi.Mode().Type()))
	case statErr == nil:
		mode = fi.Mode().Perm()
	}
	if dir := filepath.Dir(rel); dir != "." {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return errorResult(t.pathError("write", path, err))
		}
	}
	d := WriteDetails{Node: t.nodeID, Path: path, Bytes: len(a.Content), Appended: a.Append, Created: created}
	if a.Append {
		f, err := r.OpenFile(rel, os.O_WRONLY|os.O_APPEND|os.O_CREATE, newFileMode)
		if err == nil {
			_, err = f.WriteString(a.Content)
			err = errors.Join(err, f.Close())
		}
		if err != nil {
			return errorResult(t.pathError("write", path, err))
		}
		return Result{Text: fmt.Sprintf("appended %d bytes to %q on node %q", len(a.Content), path, t.nodeID), Details: d}
	}
	if lfi, err := r.Lstat(rel); err == nil && lfi.Mode()&fs.ModeSymlink != 0 {
		// A rename would replace the link itself; the root has checked
		// that the file it leads to is inside.
		err = writeInPlace(r, rel, []byte(a.Content))
		if err != nil {
			return errorResult(t.pathError("write", path, err))
		}
	} else if err := writeAtomic(r, rel, []byte(a.Content), mode, !created); err != nil {
		return errorResult(t.pathError("write", path, err))
	}
	verb := "replaced"
	if created {
		verb = "created"
	}
	return Result{Text: fmt.Sprintf("%s %q on node %q (%d bytes)", verb, path, t.nodeID, len(a.Content)), Details: d}
}

func writeInPlace(r *os.Root, rel string, data []byte) error {
	f, err := r.OpenFile(rel, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

// writeAtomic writes data to a temp file beside rel and renames it over
// rel. keepMode applies mode to the temp file (an existing file's mode);
// otherwise the file keeps the mode it was created with.
func writeAtomic(r *os.Root, rel string, data []byte, mode fs.FileMode, keepMode bool) error {
	tmp := filepath.Join(filepath.Dir(rel), "."+filepath.Base(rel)+".tmp-"+strconv.FormatUint(rand.Uint64(), 36))
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, newFileMode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if err == nil && keepMode {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, rel)
	}
	if err != nil {
		r.Remove(tmp)
	}
	return err
}

// fileError explains a file-system failure in terms the agent can act on.
func (t *Target) fileError(op, path string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("cannot %s %q on node %q: no such file or directory. Check the path (relative paths start at %q); "+
			"list the directory with cluster_exec to find the file.", op, path, t.nodeID, t.baseDir)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("cannot %s %q on node %q: permission denied for the clawmatrix process there.", op, path, t.nodeID)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Sprintf("cannot %s %q on node %q: %v", op, path, t.nodeID, err)
}

// shellQuote quotes s for sh, for commands suggested to the agent.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
