package remote

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// fsRoot is one directory that remote paths may resolve into. Every file
// operation goes through root, so neither ".." nor a symlink can lead out
// of it, whatever the file system looks like when the operation runs.
type fsRoot struct {
	dir  string // absolute and clean, as configured
	root *os.Root
}

// openRoots opens the workspace and each allowPaths directory as a root.
// The workspace is created if missing: it is where relative paths start.
func openRoots(workspace string, allowPaths []string) ([]fsRoot, error) {
	if err := os.MkdirAll(workspace, 0o700); err != nil {
		return nil, fmt.Errorf("remote: workspace %q: %w", workspace, err)
	}
	var roots []fsRoot
	for i, dir := range append([]string{workspace}, allowPaths...) {
		dir = filepath.Clean(dir)
		r, err := os.OpenRoot(dir)
		if err != nil {
			closeRoots(roots)
			what := "workspace"
			if i > 0 {
				what = "toolProxy.allowPaths entry"
			}
			return nil, fmt.Errorf("remote: %s %q: %w", what, dir, err)
		}
		roots = append(roots, fsRoot{dir: dir, root: r})
	}
	return roots, nil
}

func closeRoots(roots []fsRoot) {
	for _, r := range roots {
		r.root.Close()
	}
}

// errOutside marks a path that resolves outside every root.
var errOutside = errors.New("outside the directories this node grants")

// locate resolves p ("~/" is the home directory, relative paths start at
// the workspace) to the root it lies in, lexically: the most specific root
// whose directory holds it. It returns the root, the path relative to it
// and the absolute path for messages. Symlinks are left to the root, which
// refuses those that lead out of it.
func (t *Target) locate(p string) (fsRoot, string, string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, strings.TrimPrefix(p, "~"))
		}
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(t.baseDir, p)
	}
	abs := filepath.Clean(p)
	best := -1
	for i, r := range t.roots {
		if within(r.dir, abs) && (best < 0 || len(r.dir) > len(t.roots[best].dir)) {
			best = i
		}
	}
	if best < 0 {
		return fsRoot{}, "", abs, errOutside
	}
	rel, err := filepath.Rel(t.roots[best].dir, abs)
	if err != nil {
		return fsRoot{}, "", abs, errOutside
	}
	return t.roots[best], rel, abs, nil
}

func within(dir, path string) bool {
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator)) || dir == string(filepath.Separator)
}

// escapes reports whether err is a root refusing a path that leads out of
// it (through ".." or a symlink).
func escapes(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

// confinementError explains a refused path and how the node's owner can
// grant it.
func (t *Target) confinementError(op, path string) string {
	granted := fmt.Sprintf("its workspace %q", t.baseDir)
	if n := len(t.roots) - 1; n > 0 {
		dirs := make([]string, n)
		for i, r := range t.roots[1:] {
			dirs[i] = r.dir
		}
		granted += " and toolProxy.allowPaths " + strings.Join(dirs, ", ")
	}
	return fmt.Sprintf("node %q refuses to %s %q: the path (or a symlink on it) leads outside %s. "+
		"Use a path inside those directories; to grant another directory, the node's owner adds its absolute path "+
		"to toolProxy.allowPaths in node %q's clawmatrix config", t.nodeID, op, path, granted, t.nodeID)
}

// pathError is the agent's message for a failed file operation at path.
func (t *Target) pathError(op, path string, err error) string {
	if errors.Is(err, errOutside) || escapes(err) {
		return t.confinementError(op, path)
	}
	return t.fileError(op, path, err)
}

// isNotExist is errors.Is(err, fs.ErrNotExist) for a root's errors.
func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
