package delivery

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// Selector names where a message goes: an agent, a node (its first agent
// unless an agent is named), or tags a node must have.
type Selector struct {
	Agent string
	Node  string
	Tags  []string
}

// Target is a resolved destination.
type Target struct {
	Node  string
	Agent string
	// Online is false for a node remembered from before that is not
	// reachable now.
	Online bool
	// Load is the node's running and queued turns as used for the choice
	// (tags only).
	Load int
}

// ErrNoTarget wraps every resolution failure; its text says what is known.
var ErrNoTarget = errors.New("no target")

// candidate is one (node, agent) pair on offer.
type candidate struct {
	node, agent string
	agentTags   []string
	nodeTags    []string
	online      bool
	load        int
	rtt         time.Duration
	lastSeen    time.Time
}

// candidates lists every agent this node can address: its own, those of
// reachable nodes, and (offline) those remembered of nodes not reachable.
func (s *Service) candidates() []candidate {
	var out []candidate
	self := s.node.Capabilities()
	selfLoad := self.Load
	if s.cfg.LocalLoad != nil {
		l := s.cfg.LocalLoad()
		selfLoad = &l
	}
	addNode := func(id string, caps mesh.Capabilities, load *mesh.Load, rtt time.Duration) {
		n := 0
		if load != nil {
			n = load.Running + load.Queued
		}
		for _, a := range caps.Agents {
			out = append(out, candidate{node: id, agent: a.ID, agentTags: a.Tags, nodeTags: caps.Tags, online: true, load: n, rtt: rtt})
		}
	}
	addNode(s.self, self, selfLoad, 0)
	live := map[string]bool{s.self: true}
	peers := s.node.Peers()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range peers {
		live[p.NodeID] = true
		rtt := p.RTT
		if rtt <= 0 {
			rtt = time.Duration(math.MaxInt64) // not measured yet: after every measured one
		}
		load := mesh.Load{}
		if p.Load != nil {
			load = *p.Load
		}
		// What this node has queued for it is not in its announced load yet.
		load.Queued += s.queued[p.NodeID]
		addNode(p.NodeID, p.Capabilities, &load, rtt)
	}
	for id, n := range s.dir {
		if live[id] {
			continue
		}
		for _, a := range n.Agents {
			out = append(out, candidate{node: id, agent: a.ID, agentTags: a.Tags, nodeTags: n.Tags, lastSeen: n.LastSeen})
		}
	}
	return out
}

// Resolve picks the target of a message. With offline false only
// reachable nodes count (a handoff that waits for its answer); otherwise a
// node remembered from before that is down now is a valid target too, and
// the message waits for it.
func (s *Service) Resolve(sel Selector, offline bool) (Target, error) {
	cands := s.candidates()
	usable := func(c candidate) bool { return c.online || offline }
	if len(sel.Tags) > 0 {
		return s.byTags(sel, cands, offline)
	}
	if sel.Node != "" {
		var agents []candidate
		known := false
		for _, c := range cands {
			if c.node == sel.Node {
				known = true
				agents = append(agents, c)
			}
		}
		online := sel.Node == s.self || s.reachable(sel.Node)
		if !known && !online {
			return Target{}, fmt.Errorf("%w: no node named %q has been seen in the cluster; known nodes: %s. "+
				"Use cluster_peers to see them with their agents and tags", ErrNoTarget, sel.Node, s.knownNodes(cands))
		}
		if !online && !offline {
			return Target{}, fmt.Errorf("%w: node %q is not reachable now (last seen %s). Use wait: false to queue the task "+
				"for when it is back, or pick another node", ErrNoTarget, sel.Node, lastSeen(agents))
		}
		if len(agents) == 0 {
			return Target{}, fmt.Errorf("%w: node %q offers no agents, so it cannot take handoffs or messages. "+
				"Use cluster_peers to find a node with agents", ErrNoTarget, sel.Node)
		}
		if sel.Agent == "" {
			return Target{Node: sel.Node, Agent: agents[0].agent, Online: online}, nil
		}
		for _, c := range agents {
			if c.agent == sel.Agent {
				return Target{Node: sel.Node, Agent: c.agent, Online: online}, nil
			}
		}
		ids := make([]string, len(agents))
		for i, c := range agents {
			ids[i] = c.agent
		}
		return Target{}, fmt.Errorf("%w: node %q has no agent %q; its agents: %s", ErrNoTarget, sel.Node, sel.Agent, strings.Join(ids, ", "))
	}
	var matches []candidate
	for _, c := range cands {
		if c.agent == sel.Agent {
			matches = append(matches, c)
		}
	}
	var onlineMatches []candidate
	for _, c := range matches {
		if c.online {
			onlineMatches = append(onlineMatches, c)
		}
	}
	switch {
	case len(onlineMatches) == 1:
		c := onlineMatches[0]
		return Target{Node: c.node, Agent: c.agent, Online: true}, nil
	case len(onlineMatches) > 1:
		return Target{}, fmt.Errorf("%w: agent %q is offered by several nodes: %s; pass node as well to choose one",
			ErrNoTarget, sel.Agent, nodeList(onlineMatches))
	case len(matches) == 1 && usable(matches[0]):
		c := matches[0]
		return Target{Node: c.node, Agent: c.agent}, nil
	case len(matches) == 1:
		return Target{}, fmt.Errorf("%w: agent %q is on node %q, which is not reachable now (last seen %s). Use wait: false "+
			"to queue the task for when it is back", ErrNoTarget, sel.Agent, matches[0].node, lastSeen(matches))
	case len(matches) > 1:
		return Target{}, fmt.Errorf("%w: agent %q was offered by several nodes, none reachable now: %s; pass node as well to choose one",
			ErrNoTarget, sel.Agent, nodeList(matches))
	}
	var all []string
	for _, c := range cands {
		state := ""
		if !c.online {
			state = ", not reachable now"
		}
		all = append(all, fmt.Sprintf("%s (node %s%s)", c.agent, c.node, state))
	}
	if len(all) == 0 {
		return Target{}, fmt.Errorf("%w: no node in the cluster offers agent %q, now or before; no node offers any agent "+
			"(known nodes: %s)", ErrNoTarget, sel.Agent, s.knownNodes(cands))
	}
	slices.Sort(all)
	return Target{}, fmt.Errorf("%w: no node in the cluster offers agent %q, now or before; the agents on offer: %s",
		ErrNoTarget, sel.Agent, strings.Join(all, ", "))
}

// byTags picks, among the reachable nodes having every tag (on the node or
// on the agent), the one with the fewest running and queued turns, then the
// lowest round-trip time, then the lowest id; its first agent that
// qualifies (or the named agent) takes the message.
func (s *Service) byTags(sel Selector, cands []candidate, offline bool) (Target, error) {
	has := func(c candidate, tag string) bool {
		return slices.Contains(c.nodeTags, tag) || slices.Contains(c.agentTags, tag)
	}
	var fit, fitOffline []candidate
	seenNode := map[string]bool{}
	for _, c := range cands {
		if sel.Agent != "" && c.agent != sel.Agent {
			continue
		}
		if !slices.ContainsFunc(sel.Tags, func(t string) bool { return !has(c, t) }) {
			if seenNode[c.node] {
				continue // a node's first qualifying agent
			}
			seenNode[c.node] = true
			if c.online {
				fit = append(fit, c)
			} else {
				fitOffline = append(fitOffline, c)
			}
		}
	}
	if len(fit) > 0 {
		best := slices.MinFunc(fit, func(a, b candidate) int {
			switch {
			case a.load != b.load:
				return a.load - b.load
			case a.rtt != b.rtt:
				if a.rtt < b.rtt {
					return -1
				}
				return 1
			}
			return strings.Compare(a.node, b.node)
		})
		return Target{Node: best.node, Agent: best.agent, Online: true, Load: best.load}, nil
	}
	what := "tags [" + strings.Join(sel.Tags, ", ") + "]"
	if sel.Agent != "" {
		what = fmt.Sprintf("agent %q with %s", sel.Agent, what)
	}
	msg := fmt.Sprintf("no reachable node has %s (a tag counts when the node or the agent has it). Tags on offer: %s",
		what, s.tagList(cands))
	if len(fitOffline) > 0 {
		msg += fmt.Sprintf(". Matching but not reachable now: %s; name one with node to queue for it", nodeList(fitOffline))
	}
	return Target{}, fmt.Errorf("%w: %s", ErrNoTarget, msg)
}

// maxListedNodes bounds the nodes an error lists, so that a large cluster
// does not flood the agent's context.
const maxListedNodes = 20

// tagList says which node has which tags (and which agent has which).
func (s *Service) tagList(cands []candidate) string {
	type nodeTags struct {
		tags   []string
		agents []string
		online bool
	}
	nodes := map[string]*nodeTags{}
	for _, c := range cands {
		n := nodes[c.node]
		if n == nil {
			n = &nodeTags{tags: c.nodeTags, online: c.online}
			nodes[c.node] = n
		}
		if len(c.agentTags) > 0 {
			n.agents = append(n.agents, fmt.Sprintf("agent %s: %s", c.agent, strings.Join(c.agentTags, ", ")))
		}
	}
	ids := make([]string, 0, len(nodes))
	for id := range nodes {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var parts []string
	for i, id := range ids {
		if i == maxListedNodes {
			parts = append(parts, fmt.Sprintf("and %d more nodes (cluster_peers lists them)", len(ids)-i))
			break
		}
		n := nodes[id]
		tags := "no tags"
		if len(n.tags) > 0 {
			tags = strings.Join(n.tags, ", ")
		}
		p := id + ": " + tags
		if len(n.agents) > 0 {
			p += " (" + strings.Join(n.agents, "; ") + ")"
		}
		if !n.online {
			p += " [not reachable now]"
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return "none (no node offers agents)"
	}
	return strings.Join(parts, "; ")
}

func (s *Service) knownNodes(cands []candidate) string {
	ids := []string{s.self}
	for _, p := range s.node.Peers() {
		ids = append(ids, p.NodeID)
	}
	for _, c := range cands {
		ids = append(ids, c.node)
	}
	slices.Sort(ids)
	return strings.Join(slices.Compact(ids), ", ")
}

func nodeList(cs []candidate) string {
	ids := make([]string, len(cs))
	for i, c := range cs {
		ids[i] = c.node
	}
	slices.Sort(ids)
	return strings.Join(slices.Compact(ids), ", ")
}

func lastSeen(cs []candidate) string {
	var t time.Time
	for _, c := range cs {
		if c.lastSeen.After(t) {
			t = c.lastSeen
		}
	}
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}
