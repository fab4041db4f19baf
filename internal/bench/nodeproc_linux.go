package bench

import "syscall"

// nodeSysProcAttr makes a node die with the bench process, so that a bench
// that is itself killed leaves no node running.
func nodeSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
