//go:build linux

package identity

import (
	"io/fs"
	"syscall"
)

// inode returns the file's inode number and status change time
// (nanoseconds), zeros where the system does not say.
func inode(fi fs.FileInfo) (ino uint64, ctime int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino), st.Ctim.Nano()
	}
	return 0, 0
}
