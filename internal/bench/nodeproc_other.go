//go:build !linux

package bench

import "syscall"

// nodeSysProcAttr: only Linux can tie a child's life to its parent's; on
// other systems the bench's own cleanup stops the nodes.
func nodeSysProcAttr() *syscall.SysProcAttr { return nil }
