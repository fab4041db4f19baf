package plugin

import (
	"fmt"
	"strings"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Bounds of the prompt context: it goes into every turn, so a large cluster
// or a long description must not crowd out the conversation. What is left
// out is one cluster_peers call away, and the block says so.
const (
	promptMaxNodes       = 12
	promptMaxAgents      = 4 // per node
	promptMaxModels      = 6 // per node
	promptMaxDescription = 120
)

// promptContext is the block put before every prompt while peers exist
// (SPEC §8). It goes into every turn, so every line must earn its place.
func promptContext(cfg *schema.Config, peers []mesh.PeerInfo) string {
	if len(peers) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("[clawmatrix cluster]\n")
	fmt.Fprintf(&b, "You run on node %q", cfg.NodeID)
	if len(cfg.Tags) > 0 {
		fmt.Fprintf(&b, " (tags: %s)", strings.Join(cfg.Tags, ", "))
	}
	b.WriteString(".\n")
	if len(cfg.Agents) > 0 && cfg.Agents[0].Description != "" {
		fmt.Fprintf(&b, "Your role: %s\n", shorten(cfg.Agents[0].Description))
	}
	b.WriteString("Other nodes:\n")
	omitted := false
	for i, p := range peers {
		if i == promptMaxNodes {
			fmt.Fprintf(&b, "- … and %d more nodes\n", len(peers)-i)
			omitted = true
			break
		}
		fmt.Fprintf(&b, "- %s", p.NodeID)
		if p.Status == mesh.StatusRelay {
			fmt.Fprintf(&b, " (via %s)", p.Via)
		} else {
			b.WriteString(" (direct)")
		}
		if len(p.Tags) > 0 {
			fmt.Fprintf(&b, " [%s]", strings.Join(p.Tags, ", "))
		}
		b.WriteString("\n")
		for j, a := range p.Agents {
			if j == promptMaxAgents {
				fmt.Fprintf(&b, "  … and %d more agents\n", len(p.Agents)-j)
				omitted = true
				break
			}
			fmt.Fprintf(&b, "  agent %s", a.ID)
			if a.Description != "" {
				fmt.Fprintf(&b, ": %s", shorten(a.Description))
			}
			b.WriteString("\n")
		}
		if len(p.Models) > 0 {
			shown := p.Models[:min(len(p.Models), promptMaxModels)]
			ids := make([]string, 0, len(shown))
			for _, m := range shown {
				ids = append(ids, "clawmatrix/"+m.ID)
			}
			more := ""
			if n := len(p.Models) - len(ids); n > 0 {
				more = fmt.Sprintf(" and %d more", n)
				omitted = true
			}
			fmt.Fprintf(&b, "  models: %s%s\n", strings.Join(ids, ", "), more)
		}
	}
	b.WriteString("For files, commands or services on another node use cluster_exec, cluster_read or cluster_write; " +
		"cluster_tool runs any other tool there. Hand multi-step work to that node's agent with cluster_handoff " +
		"(cluster_send if no answer is needed). ")
	if omitted {
		b.WriteString("Not everything is listed here: cluster_peers shows the whole topology.")
	} else {
		b.WriteString("cluster_peers shows the current topology.")
	}
	return b.String()
}

// shorten cuts a description to promptMaxDescription runes on a word
// boundary where one is near, marking the cut.
func shorten(s string) string {
	s = strings.Join(strings.Fields(s), " ") // one line, whatever the config held
	r := []rune(s)
	if len(r) <= promptMaxDescription {
		return s
	}
	cut := string(r[:promptMaxDescription])
	if i := strings.LastIndexByte(cut, ' '); i > promptMaxDescription/2 {
		cut = cut[:i]
	}
	return cut + "…"
}
