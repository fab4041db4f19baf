package plugin

import (
	"fmt"
	"strings"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
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
		fmt.Fprintf(&b, "Your role: %s\n", cfg.Agents[0].Description)
	}
	b.WriteString("Other nodes:\n")
	for _, p := range peers {
		fmt.Fprintf(&b, "- %s", p.NodeID)
		if p.Status == mesh.StatusRelay {
			fmt.Fprintf(&b, " (via %s)", p.Via)
		}
		if len(p.Tags) > 0 {
			fmt.Fprintf(&b, " [%s]", strings.Join(p.Tags, ", "))
		}
		b.WriteString("\n")
		for _, a := range p.Agents {
			fmt.Fprintf(&b, "  agent %s", a.ID)
			if a.Description != "" {
				fmt.Fprintf(&b, ": %s", a.Description)
			}
			b.WriteString("\n")
		}
		if len(p.Models) > 0 {
			ids := make([]string, len(p.Models))
			for i, m := range p.Models {
				ids[i] = "clawmatrix/" + m.ID
			}
			fmt.Fprintf(&b, "  models: %s\n", strings.Join(ids, ", "))
		}
	}
	b.WriteString("For files, commands or services on another node use cluster_exec, cluster_read or cluster_write; " +
		"cluster_tool runs any other tool there. Hand multi-step work to that node's agent with cluster_handoff " +
		"(cluster_send if no answer is needed). cluster_peers shows the current topology.")
	return b.String()
}
