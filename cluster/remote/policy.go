package remote

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/clawmatrix/clawmatrix/schema"
)

// checkPolicy decides whether the target's toolProxy lets a caller run tool
// (an OpenClaw tool name: exec, read, write, or the tool of cluster_tool).
// It returns nil when allowed, else the refusal the agent sees.
func checkPolicy(p schema.ToolProxy, nodeID, tool string) error {
	if !p.Enabled {
		return fmt.Errorf("node %q does not accept remote tools: its tool proxy is disabled. "+
			"To allow it, set toolProxy.enabled: true in node %q's clawmatrix config "+
			"with toolProxy.allow listing the tools to offer (or [\"*\"] for all)", nodeID, nodeID)
	}
	name, err := schema.NormalizeToolName(tool)
	if err != nil {
		return fmt.Errorf("node %q refuses the tool: %v", nodeID, err)
	}
	if p.Allows(name) {
		return nil
	}
	if p.Denies(name) {
		return fmt.Errorf("node %q refuses tool %q: it is in the node's toolProxy.deny list", nodeID, name)
	}
	allowed := "none"
	if len(p.Allow) > 0 {
		allowed = strings.Join(p.Allow, ", ")
	}
	return fmt.Errorf("node %q refuses tool %q: it is not in the node's toolProxy.allow list (allowed: %s). "+
		"To offer it, add %q to toolProxy.allow in node %q's clawmatrix config", nodeID, name, allowed, name, nodeID)
}

// limitedBuffer keeps the first max bytes written to it and counts the rest,
// so a command that prints gigabytes costs only max bytes of memory.
type limitedBuffer struct {
	max   int
	buf   []byte
	total int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.total += int64(len(p))
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// cut returns at most n bytes of s, ending on a UTF-8 boundary, and how many
// bytes it dropped.
func cut(s []byte, n int) ([]byte, int) {
	if n < 0 {
		n = 0
	}
	if len(s) <= n {
		return s, 0
	}
	end := n
	// Back up over a partial rune so the text stays valid UTF-8.
	for end > 0 && end > n-utf8.UTFMax && !utf8.RuneStart(s[end]) {
		end--
	}
	return s[:end], len(s) - end
}

// cutNote is appended where output was cut.
func cutNote(cutBytes int64, maxOutputBytes int) string {
	return fmt.Sprintf("\n[... %d bytes cut: output is limited to %d bytes (toolProxy.maxOutputBytes on the target). "+
		"Narrow the request (e.g. pipe through head/tail/grep, or read with offset/limit) to see the rest.]",
		cutBytes, maxOutputBytes)
}
