package remote

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// pipeGrace bounds how long output is drained after the process group was
// killed. Only a process that left the group (setsid) while holding the
// output pipes can keep them open that long; its output is then dropped.
const pipeGrace = 2 * time.Second

// groupProc is a child process that leads its own process group, so that
// the whole tree it starts can be killed at once.
type groupProc struct {
	cmd        *exec.Cmd
	marker     string // NAME=value in the environment of the whole tree
	outR, errR *os.File
	readers    sync.WaitGroup
}

// startGroup starts cmd in a new process group, copying its stdout and
// stderr to the given writers. The pipes are plain files rather than the
// copying goroutines exec.Cmd makes for io.Writers, so that Wait returns when
// the process exits even if a background child still holds the pipes.
func startGroup(cmd *exec.Cmd, stdout, stderr io.Writer) (*groupProc, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = outW, errW
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	// The marker is inherited by every descendant, also those that leave
	// the process group, so that they can be found and killed with it.
	marker := runMarkerEnv + "=" + strconv.FormatUint(rand.Uint64(), 36)
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, marker)
	err = cmd.Start()
	// The child holds its own copies; ours must close so that EOF arrives
	// when the last process writing to the pipe ends.
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		return nil, err
	}
	p := &groupProc{cmd: cmd, marker: marker, outR: outR, errR: errR}
	p.readers.Add(2)
	go p.drain(outR, stdout)
	go p.drain(errR, stderr)
	return p, nil
}

func (p *groupProc) drain(r *os.File, w io.Writer) {
	defer p.readers.Done()
	_, _ = io.Copy(w, r)
}

// pid is the process id, which is also the process group id.
func (p *groupProc) pid() int { return p.cmd.Process.Pid }

// runMarkerEnv names the variable that marks a command's process tree.
const runMarkerEnv = "CLAWMATRIX_RUN"

// killGroup sends SIGKILL to every process in the group and to every
// other process that came from the command (see killTree).
func (p *groupProc) killGroup() {
	// ESRCH (group already gone) is the expected case after a clean exit.
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	killTree(p.pid(), p.marker)
}

// wait waits for the process to exit, killing the whole group as soon as ctx
// ends. Whatever is left of the group after the process exits (background
// children) is killed too, so nothing outlives the request. The writers are
// complete when wait returns; it returns the exit error of the process.
func (p *groupProc) wait(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		p.killGroup()
		err = <-done
	}
	p.killGroup()

	drained := make(chan struct{})
	go func() {
		p.readers.Wait()
		close(drained)
	}()
	timer := time.NewTimer(pipeGrace)
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		// Closing the read ends unblocks the readers.
		p.outR.Close()
		p.errR.Close()
		<-drained
	}
	p.outR.Close()
	p.errR.Close()
	return err
}

// exitInfo describes how a process ended.
type exitInfo struct {
	Code   int    // -1 when killed by a signal
	Signal string // the signal's name when killed by one
}

func exitOf(p *groupProc, waitErr error) exitInfo {
	st := p.cmd.ProcessState
	if st == nil {
		return exitInfo{Code: -1}
	}
	info := exitInfo{Code: st.ExitCode()}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		info.Signal = ws.Signal().String()
	}
	var ee *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &ee) && info.Code == 0 {
		info.Code = -1
	}
	return info
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max   int
	buf   []byte
	total int64
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.total += int64(len(p))
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-b.max:]...)
	}
	return len(p), nil
}
