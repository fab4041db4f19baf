package identity

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// writeTemp writes data to a new file with mode 0600 in path's directory,
// synced to disk, and returns its name.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("cannot create a temporary file: %w", unwrapPath(err))
	}
	name := f.Name()
	fail := func(err error) (string, error) {
		f.Close()
		os.Remove(name)
		return "", err
	}
	// CreateTemp already uses 0600; Chmod says so whatever the umask.
	if err := f.Chmod(0o600); err != nil {
		return fail(fmt.Errorf("cannot set the mode of a temporary file: %w", unwrapPath(err)))
	}
	if _, err := f.Write(data); err != nil {
		return fail(fmt.Errorf("cannot write: %w", unwrapPath(err)))
	}
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("cannot sync: %w", unwrapPath(err)))
	}
	if err := f.Close(); err != nil {
		os.Remove(name)
		return "", fmt.Errorf("cannot write: %w", unwrapPath(err))
	}
	return name, nil
}

// writeAtomic replaces path with data (mode 0600): a reader sees the old
// content or the new, never a mix.
func writeAtomic(path string, data []byte) error {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot replace the file: %w", unwrapLink(err))
	}
	syncDir(filepath.Dir(path))
	return nil
}

// writeNew creates path with data (mode 0600) unless it already exists, in
// which case it reports won = false and leaves the file alone.
func writeNew(path string, data []byte) (won bool, err error) {
	tmp, err := writeTemp(path, data)
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		// A file system without hard links: fall back to an exclusive
		// create, which is not atomic for readers but never overwrites.
		f, err2 := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err2 != nil {
			if errors.Is(err2, fs.ErrExist) {
				return false, nil
			}
			return false, fmt.Errorf("cannot create the file: %w", unwrapPath(err2))
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			os.Remove(path)
			return false, fmt.Errorf("cannot write: %w", unwrapPath(err))
		}
		if err := f.Close(); err != nil {
			os.Remove(path)
			return false, fmt.Errorf("cannot write: %w", unwrapPath(err))
		}
	}
	syncDir(filepath.Dir(path))
	return true, nil
}

// syncDir makes a rename or link in dir durable; it is best effort (some
// systems cannot sync a directory).
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

func unwrapLink(err error) error {
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}
