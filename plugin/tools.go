package plugin

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/schema"
)

func toolInfos() []ToolInfo {
	tools := schema.Tools()
	infos := make([]ToolInfo, len(tools))
	for i, t := range tools {
		infos[i] = ToolInfo{Name: t.Name, Label: t.Label, Description: t.Description, Parameters: schema.ToolParameters(t.Name)}
	}
	return infos
}

// localTools answer, on this node, the tools of schema's catalogue that
// need only this node's view (cluster_peers). The runtime answers the rest:
// cluster_send and cluster_tasks through its durable outbox, handoffs that
// do not wait too, and every other call on the node its arguments name.
var localTools = map[string]func(rt *cluster.Runtime, call schema.ToolCall) ToolCallResult{
	schema.ToolPeers: func(rt *cluster.Runtime, _ schema.ToolCall) ToolCallResult {
		st := status(rt)
		return ToolCallResult{Content: []TextContent{{Type: "text", Text: peersText(rt.NodeID(), st.Peers)}}, Details: st}
	},
}

func (s *Server) toolsCall(ctx context.Context, req *jsonrpc2.Request) (any, error) {
	rt, err := s.ready()
	if err != nil {
		return nil, err
	}
	var p ToolCallParams
	if err := decodeParams(req, &p); err != nil {
		return nil, err
	}
	if _, ok := schema.LookupTool(p.Name); !ok {
		return nil, invalidParams("unknown tool %q; the sidecar serves %s", p.Name, strings.Join(schema.ToolNames(), ", "))
	}
	call, problems := schema.DecodeToolCall(p.Name, p.Arguments)
	if len(problems) > 0 {
		lines := make([]string, len(problems))
		for i, pr := range problems {
			lines[i] = pr.String()
		}
		return errorResult(fmt.Sprintf("%s was not run: invalid arguments: %s. Fix the arguments and call it again.",
			p.Name, strings.Join(lines, "; "))), nil
	}
	if local, ok := localTools[call.Tool.Name]; ok {
		return local(rt, call), nil
	}
	info := cluster.CallInfo{HostTimeout: time.Duration(max(p.TimeoutMs, 0)) * time.Millisecond}
	if p.Session != nil && validSessionKey(p.Session.Key) {
		info.SessionKey = p.Session.Key
		if mesh.ValidCapID(p.Session.AgentID) {
			info.AgentID = p.Session.AgentID
		}
	}
	res := rt.CallTool(ctx, call, info)
	return ToolCallResult{Content: []TextContent{{Type: "text", Text: res.Text}}, Details: res.Details, IsError: res.IsError}, nil
}

// validSessionKey bounds a session key from the host before it is stored
// and handed back to the OpenClaw CLI as one argument.
func validSessionKey(k string) bool {
	if k == "" || len(k) > 512 || strings.HasPrefix(k, "-") {
		return false
	}
	for _, r := range k {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

func errorResult(text string) ToolCallResult {
	return ToolCallResult{Content: []TextContent{{Type: "text", Text: text}}, IsError: true}
}

// status is the cluster as rt sees it, shaped for hosts and agents.
func status(rt *cluster.Runtime) StatusResult {
	peers := rt.Peers()
	out := StatusResult{NodeID: rt.NodeID(), Peers: make([]PeerView, 0, len(peers))}
	for _, p := range peers {
		out.Peers = append(out.Peers, peerView(p))
	}
	return out
}

func peerView(p mesh.PeerInfo) PeerView {
	ps := PeerView{NodeID: p.NodeID, Status: string(p.Status), Via: p.Via,
		Agents: []AgentView{}, Models: []string{}, Tags: p.Tags}
	if ps.Tags == nil {
		ps.Tags = []string{}
	}
	if p.RTT > 0 {
		ms := float64(p.RTT.Round(10*time.Microsecond)) / float64(time.Millisecond)
		ps.RTTMs = &ms
	}
	for _, a := range p.Agents {
		ps.Agents = append(ps.Agents, AgentView{ID: a.ID, Description: a.Description})
	}
	for _, m := range p.Models {
		ps.Models = append(ps.Models, m.ID)
	}
	if p.Load != nil {
		l := *p.Load
		ps.Load = &l
	}
	return ps
}

// peersText is cluster_peers' answer for the agent.
func peersText(self string, peers []PeerView) string {
	if len(peers) == 0 {
		return fmt.Sprintf("This node is %q. No other node is reachable: check the peers and listen settings of the clawmatrix config on both sides.", self)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "This node is %q. %d other node(s) reachable:\n", self, len(peers))
	for _, p := range peers {
		how := "direct link"
		if p.Status == string(mesh.StatusRelay) {
			how = "via " + p.Via
		}
		fmt.Fprintf(&b, "- %s (%s", p.NodeID, how)
		if p.RTTMs != nil {
			fmt.Fprintf(&b, ", rtt %.2f ms", *p.RTTMs)
		}
		if p.Load != nil {
			fmt.Fprintf(&b, ", %d turns running, %d queued", p.Load.Running, p.Load.Queued)
		}
		b.WriteString(")")
		if len(p.Tags) > 0 {
			fmt.Fprintf(&b, " tags: %s", strings.Join(p.Tags, ", "))
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
			fmt.Fprintf(&b, "  models: %s\n", strings.Join(p.Models, ", "))
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
