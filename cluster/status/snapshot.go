// Package status serves a node's live status page (/status), its data
// (/status.json, a documented and stable shape) and its Prometheus metrics
// (/metrics) on the model proxy's port (README.md, Observability).
package status

import (
	"slices"
	"strings"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"github.com/clawmatrix/clawmatrix/internal/buildinfo"
)

// SchemaVersion is the version of the /status.json shape. Fields are only
// ever added; a change that would break a reader bumps it.
const SchemaVersion = 1

// Snapshot is /status.json: the cluster as one node sees it.
type Snapshot struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"`
	Node    Self      `json:"node"`
	// Peers are every node this one has seen: reachable ones, and ones
	// that were and are not now (status "down"), sorted by id.
	Peers []Peer `json:"peers"`
	// Links are the direct links among the nodes this one reaches, itself
	// included, one per pair (from < to).
	Links []Link `json:"links"`
	// Requests are the model proxy's latest requests, newest first.
	Requests []Request `json:"requests"`
	// Errors are the latest errors this node met, newest first.
	Errors []Error `json:"errors"`
}

// Self is the node serving the page.
type Self struct {
	NodeID  string   `json:"nodeId"`
	Version string   `json:"version"`
	Agents  []Agent  `json:"agents"`
	Models  []string `json:"models"`
	Tags    []string `json:"tags"`
	// Tracing says spans are exported (otel is configured).
	Tracing bool `json:"tracing"`
	// StartedAt is when the node started.
	StartedAt time.Time `json:"startedAt"`
	// PublicKey is the node key (ed25519:…), Fingerprint its SHA256:…
	// form, as the identity command prints them.
	PublicKey   string `json:"publicKey"`
	Fingerprint string `json:"fingerprint"`
}

// Peer is another node.
type Peer struct {
	NodeID string `json:"nodeId"`
	// Status is connected (a direct link), relay, or down.
	Status string `json:"status"`
	// Via is the next hop toward a relayed node.
	Via string `json:"via,omitempty"`
	// Hops is the number of links on the route (1: direct); 0 when down.
	Hops int `json:"hops"`
	// RTTMs is the round trip in milliseconds, when measured.
	RTTMs  *float64 `json:"rttMs,omitempty"`
	Agents []Agent  `json:"agents"`
	Models []string `json:"models"`
	Tags   []string `json:"tags"`
	// Since is when the node entered its status (reachable or down);
	// LastSeen when it was last reachable.
	Since    time.Time `json:"since"`
	LastSeen time.Time `json:"lastSeen"`
	// LastErrors are the latest errors that concern the node, newest first.
	LastErrors []Error `json:"lastErrors"`
	// Fingerprint is the key the node is reached with; for a down node the
	// key pinned for it in the known-nodes file; absent when none is known.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Revoked says the node is refused for good (the revoke command, or
	// revoked in the config).
	Revoked bool `json:"revoked,omitempty"`
}

// Agent is an agent a node offers.
type Agent struct {
	ID          string `json:"id"`
	Description string `json:"description,omitempty"`
}

// Link is a direct link between two nodes.
type Link struct {
	From  string   `json:"from"`
	To    string   `json:"to"`
	RTTMs *float64 `json:"rttMs,omitempty"`
}

// Request is one chat completion through this node's model proxy.
type Request struct {
	At    time.Time `json:"at"`
	Model string    `json:"model"`
	// Node is the node that answered ("" when none did); Path the nodes
	// its request passed, this node first.
	Node       string   `json:"node"`
	Path       []string `json:"path"`
	Attempts   int      `json:"attempts"`
	Status     int      `json:"status"`
	Stream     bool     `json:"stream"`
	DurationMs float64  `json:"durationMs"`
	TTFBMs     *float64 `json:"ttfbMs,omitempty"`
	Bytes      int64    `json:"bytes"`
	// Error is the reason the request failed (see README.md,
	// Observability), absent on success.
	Error string `json:"error,omitempty"`
}

// Error is an error this node met.
type Error struct {
	At time.Time `json:"at"`
	// Kind is proxy, failover, remote or peer.
	Kind    string `json:"kind"`
	Node    string `json:"node,omitempty"`
	Message string `json:"message"`
}

// maxPeerErrors bounds each peer's lastErrors.
const maxPeerErrors = 5

// Source is what a snapshot is made from.
type Source struct {
	Node      *mesh.Node
	Telemetry *telemetry.Telemetry
	StartedAt time.Time
	// Known is the node's known-nodes store, for pinned keys and
	// revocations; nil when it has none (tests, the demo).
	Known *identity.KnownNodes
}

// Take makes a snapshot now.
func (src Source) Take() Snapshot {
	now := time.Now()
	tel := src.Telemetry
	s := Snapshot{Version: SchemaVersion, Time: now.UTC(), Peers: []Peer{}, Links: []Link{}, Requests: []Request{}, Errors: []Error{}}
	caps := src.Node.Capabilities()
	pub := src.Node.PublicKey()
	s.Node = Self{NodeID: src.Node.ID(), Version: buildinfo.Version(), Agents: agents(caps.Agents), Models: models(caps.Models),
		Tags: nonNil(caps.Tags), Tracing: tel.TracerProvider() != nil, StartedAt: src.StartedAt.UTC(),
		PublicKey: identity.FormatPublicKey(pub), Fingerprint: identity.Fingerprint(pub)}

	for _, e := range tel.Journal().Errors() {
		s.Errors = append(s.Errors, Error{At: e.At.UTC(), Kind: e.Kind, Node: e.Node, Message: e.Message})
	}
	for _, r := range tel.Journal().Requests() {
		q := Request{At: r.Start.UTC(), Model: r.Model, Node: r.Node, Path: nonNil(r.Path), Attempts: r.Attempts, Status: r.Status,
			Stream: r.Stream, DurationMs: ms(r.Duration), Bytes: r.Bytes, Error: r.Reason}
		if r.TTFB > 0 {
			v := ms(r.TTFB)
			q.TTFBMs = &v
		}
		s.Requests = append(s.Requests, q)
	}

	for _, p := range src.Node.Peers() {
		s.Peers = append(s.Peers, peer(p, string(p.Status)))
	}
	at := make(map[string]int, len(s.Peers))
	for i, p := range s.Peers {
		at[p.NodeID] = i
	}
	for _, k := range tel.Peers() {
		if i, ok := at[k.NodeID]; ok {
			if k.Reachable {
				s.Peers[i].Since = k.Since.UTC()
			}
			s.Peers[i].LastSeen = now.UTC()
			continue
		}
		if k.Reachable {
			continue // gone since the memory's last update; shown once it notices
		}
		p := peer(k.Last, telemetry.StateDown)
		p.Via, p.Hops, p.RTTMs = "", 0, nil
		p.Since, p.LastSeen = k.Since.UTC(), k.LastSeen.UTC()
		s.Peers = append(s.Peers, p)
	}
	slices.SortFunc(s.Peers, func(a, b Peer) int { return strings.Compare(a.NodeID, b.NodeID) })
	src.addKeys(s.Peers)
	for i := range s.Peers {
		for _, e := range s.Errors {
			if e.Node == s.Peers[i].NodeID && len(s.Peers[i].LastErrors) < maxPeerErrors {
				s.Peers[i].LastErrors = append(s.Peers[i].LastErrors, e)
			}
		}
	}
	for _, e := range src.Node.Edges() {
		l := Link{From: e.From, To: e.To}
		if e.RTT > 0 {
			v := ms(e.RTT)
			l.RTTMs = &v
		}
		s.Links = append(s.Links, l)
	}
	return s
}

// addKeys fills each peer's key fingerprint and revocation: the key the
// mesh reaches it with, else the one pinned for it.
func (src Source) addKeys(peers []Peer) {
	store := map[string]identity.Entry{}
	if src.Known != nil {
		for _, e := range src.Known.List() {
			store[e.NodeID] = e
		}
	}
	for i := range peers {
		p := &peers[i]
		e := store[p.NodeID]
		p.Revoked = e.Revoked
		if p.Status != telemetry.StateDown {
			if k := src.Node.PeerKey(p.NodeID); k != nil {
				p.Fingerprint = identity.Fingerprint(k)
				continue
			}
		}
		if e.PublicKey != nil {
			p.Fingerprint = identity.Fingerprint(e.PublicKey)
		}
	}
}

func peer(p mesh.PeerInfo, status string) Peer {
	out := Peer{NodeID: p.NodeID, Status: status, Via: p.Via, Hops: p.Hops, Agents: agents(p.Agents), Models: models(p.Models),
		Tags: nonNil(p.Tags), LastErrors: []Error{}}
	if p.RTT > 0 {
		v := ms(p.RTT)
		out.RTTMs = &v
	}
	return out
}

func agents(in []mesh.AgentInfo) []Agent {
	out := make([]Agent, 0, len(in))
	for _, a := range in {
		out = append(out, Agent{ID: a.ID, Description: a.Description})
	}
	return out
}

func models(in []mesh.ModelInfo) []string {
	out := make([]string, 0, len(in))
	for _, m := range in {
		out = append(out, m.ID)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
