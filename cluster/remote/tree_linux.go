package remote

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// killTree kills every process that came from the command with process id
// pid: its descendants as the process table shows them now, and every
// process carrying the command's marker in its environment, which finds
// descendants that left the process group (setsid) and were reparented
// after their parent exited. It repeats until a scan finds none, so that a
// process forking while it is being killed is caught on the next round.
//
// A process that both cleared its environment and lost its parent is not
// found; cgroups would catch it but need a delegated cgroup v2 tree.
func killTree(pid int, marker string) {
	self := os.Getpid()
	want := []byte(marker + "\x00")
	for range 8 {
		found := false
		for _, p := range scanProcs(want) {
			if p.pid == self {
				continue
			}
			if p.marked || p.descends(pid) {
				_ = syscall.Kill(p.pid, syscall.SIGKILL)
				found = true
			}
		}
		if !found {
			return
		}
	}
}

type procEntry struct {
	pid, ppid int
	marked    bool
	table     map[int]int // pid → ppid of the whole scan
}

func (p procEntry) descends(root int) bool {
	for cur, hops := p.ppid, 0; cur > 1 && hops < 4096; hops++ {
		if cur == root {
			return true
		}
		cur = p.table[cur]
	}
	return false
}

// scanProcs reads every process's parent and whether its environment holds
// marker; processes that vanish or cannot be read are skipped.
func scanProcs(marker []byte) []procEntry {
	dir, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := dir.Readdirnames(-1)
	dir.Close()
	table := make(map[int]int, len(names))
	var out []procEntry
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		ppid, state, ok := procStat(pid)
		if !ok || state == 'Z' {
			continue
		}
		table[pid] = ppid
		env, _ := os.ReadFile("/proc/" + name + "/environ")
		out = append(out, procEntry{pid: pid, ppid: ppid, marked: bytes.Contains(append([]byte{0}, env...), append([]byte{0}, marker...)), table: table})
	}
	return out
}

// procStat returns a process's parent and state from /proc/<pid>/stat.
func procStat(pid int) (ppid int, state byte, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name may hold spaces and parentheses: the fields that
	// follow start after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 || len(f[0]) != 1 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, f[0][0], err == nil
}
