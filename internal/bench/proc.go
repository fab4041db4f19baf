package bench

// Child processes of the bench (nodes, relays): started with a deadline on
// their readiness, read to the end of their output, killed or stopped with a
// deadline, and tied to the bench's own life where the system allows.

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Deadlines for child processes.
const (
	procStartTimeout = 20 * time.Second
	procStopTimeout  = 5 * time.Second
)

// proc is one child process.
type proc struct {
	// name says what the process is in errors ("node a", "relay 1").
	name   string
	cmd    *exec.Cmd
	stderr *tailWriter
	done   chan struct{} // closed once the process has been waited for
	state  *os.ProcessState
}

// startProc runs bin with args and returns once the child has printed a
// line starting with the last of keys (such as "proxy key: "); values holds,
// for each key, the rest of the last line it started, or "" for a key not
// printed by then. On error nothing is left running.
func startProc(ctx context.Context, name, bin string, args []string, keys ...string) (p *proc, values []string, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	p = &proc{name: name, stderr: &tailWriter{max: 8 << 10}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = nodeSysProcAttr()
	// A child that still holds the stderr pipe must not stall Wait.
	p.cmd.WaitDelay = 2 * time.Second
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	up := make(chan struct{})
	found := make([]string, len(keys))
	go func() {
		// Reads stdout to its end (so the child never blocks on it), then
		// reaps the process.
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		signalled := len(keys) == 0
		if signalled {
			close(up)
		}
		for sc.Scan() {
			if signalled {
				continue
			}
			line := sc.Text()
			for i, k := range keys {
				if v, ok := strings.CutPrefix(line, k); ok {
					found[i] = v
					if i == len(keys)-1 {
						signalled = true
						close(up)
					}
					break
				}
			}
		}
		p.cmd.Wait()
		p.state = p.cmd.ProcessState
	}()
	timer := time.NewTimer(procStartTimeout)
	defer timer.Stop()
	select {
	case <-up:
		return p, found, nil
	case <-p.done:
		return nil, nil, fmt.Errorf("%s exited before it was up (%s); its stderr ends:\n%s", name, p.state, p.stderr)
	case <-timer.C:
		p.Kill()
		return nil, nil, fmt.Errorf("%s was not up within %s; its stderr ends:\n%s", name, procStartTimeout, p.stderr)
	case <-ctx.Done():
		p.Kill()
		return nil, nil, ctx.Err()
	}
}

// Pid is the process id.
func (p *proc) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended and been reaped.
func (p *proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// State is the exit state, nil while the process runs.
func (p *proc) State() *os.ProcessState {
	if !p.Exited() {
		return nil
	}
	return p.state
}

// Kill sends SIGKILL (a crash) and waits until the process is reaped.
func (p *proc) Kill() error {
	if p.Exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	return p.wait(procStopTimeout)
}

// Stop asks the process to shut down (SIGTERM) and kills it if it has not
// exited within procStopTimeout.
func (p *proc) Stop() error {
	if p.Exited() {
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(procStopTimeout); err == nil {
		if !p.state.Success() {
			return fmt.Errorf("%s shut down with %s; its stderr ends:\n%s", p.name, p.state, p.stderr)
		}
		return nil
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(procStopTimeout)
	return fmt.Errorf("%s did not exit within %s of SIGTERM and was killed", p.name, procStopTimeout)
}

func (p *proc) wait(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s (pid %d) was not reaped within %s", p.name, p.Pid(), d)
	}
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
