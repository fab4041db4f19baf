package mesh

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
)

// Topology gossip (peer_sync).
//
// Every node owns one entry: its direct links and its capabilities, with a
// version that only grows. The version starts at the node's start time in
// nanoseconds, so a restarted node's entries supersede its old ones. An entry
// is re-announced on every change of the node's links or capabilities and
// flooded: a node that receives a newer entry than it holds stores it and
// passes it to all its other links; an older or equal one stops there, which
// is what ends the flood. A new link starts with a full exchange of entries.
// Pending entries are coalesced per origin in each link's queue, so a burst
// of changes costs one frame per link.
//
// Each entry also carries its origin's incarnation (the run's start time).
// A newer entry under this node's own id from another incarnation is either
// a previous run of this node (restarted with a clock behind it) or another
// live process using the same id somewhere this node is not linked to (the
// handshake refuses a duplicate only between neighbours). This node moves
// its version past such an entry once per incarnation, which settles the
// first case. When the same incarnation shows a newer entry again, it is
// alive and moving its own version past this node's: the ids clash. This
// node then logs an error (at most once per idClashLogEvery) and no longer
// moves its version for it, so the two do not outbid each other forever
// (a gossip storm with routes recomputed on every round).

// nodeEntry is one origin's gossiped state.
type nodeEntry struct {
	Origin  string `json:"origin"`
	Version uint64 `json:"version"`
	// Inc is the origin's incarnation (see Node.inc).
	Inc uint64 `json:"inc,omitempty"`
	// Key is the origin's Ed25519 node key, which signs the entry; Static
	// its Noise static key for this run (for end-to-end sessions).
	Key    []byte       `json:"key"`
	Static []byte       `json:"dh"`
	Links  []linkEntry  `json:"links"`
	Caps   Capabilities `json:"caps"`
}

// linkEntry is one direct link of an origin.
type linkEntry struct {
	Peer string `json:"peer"`
	// Since identifies the link (it changes when the link is replaced).
	Since uint64 `json:"since"`
	// RTTMicros is the link's smoothed round-trip time when measured.
	RTTMicros int64 `json:"rttUs,omitempty"`
}

type storedEntry struct {
	nodeEntry
	raw     []byte // the signed entry as it travels
	updated time.Time
}

type topology struct {
	entries map[string]*storedEntry
	// held maps the signature of every stored entry to its origin: an
	// entry that arrives again, byte for byte, is known without parsing
	// it. Floods and full syncs bring each entry once per link, so in a
	// large cluster most entries a node receives are copies of ones it
	// holds, and decoding their JSON was a good part of the cost of
	// gossip.
	held    map[string]string
	version uint64 // this node's own entry version
	// clashes holds the incarnations whose entries under this node's id
	// this node has moved past once, with when it last logged the clash.
	clashes map[uint64]time.Time
}

// put stores origin's entry.
func (t *topology) put(origin string, e *storedEntry) {
	if old := t.entries[origin]; old != nil {
		delete(t.held, string(entrySig(old.raw)))
	}
	t.entries[origin] = e
	t.held[string(entrySig(e.raw))] = origin
}

// remove forgets origin's entry.
func (t *topology) remove(origin string) {
	if old := t.entries[origin]; old != nil {
		delete(t.held, string(entrySig(old.raw)))
		delete(t.entries, origin)
	}
}

// holds reports whether raw is a stored entry, byte for byte, and whose.
func (t *topology) holds(raw []byte) (origin string, ok bool) {
	origin, ok = t.held[string(entrySig(raw))]
	if !ok {
		return "", false
	}
	if e := t.entries[origin]; e == nil || !bytes.Equal(e.raw, raw) {
		return "", false
	}
	return origin, true
}

// entrySig returns the signature at the end of a signed entry (or what
// stands there in a malformed one).
func entrySig(raw []byte) []byte {
	return raw[max(len(raw)-ed25519.SignatureSize, 0):]
}

// idClashLogEvery is how often a clash of node ids is logged again while it
// lasts.
const idClashLogEvery = 30 * time.Second

// maxIDClashes bounds the incarnations remembered in topology.clashes.
const maxIDClashes = 64

// A peer_sync payload is a sequence of signed entries, each a uvarint length
// and the entry. A signed entry is a uvarint length, the entry's JSON, and
// the origin's Ed25519 signature over sigContextEntry and that JSON. Relays
// pass entries on byte for byte.

// appendPeerSync encodes a peer_sync frame carrying signed entries.
func appendPeerSync(b []byte, entries [][]byte) []byte {
	b = append(b, typePeerSync)
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return b
}

// splitPeerSync cuts a peer_sync payload into its signed entries.
func splitPeerSync(p []byte, maxEntry int) ([][]byte, error) {
	var out [][]byte
	for len(p) > 0 {
		l, rest, ok := uvarint(p)
		if !ok || l > uint64(len(rest)) {
			return nil, errors.New("truncated entry")
		}
		if l > uint64(maxEntry) {
			return nil, fmt.Errorf("an entry of %d bytes is over the %d-byte budget", l, maxEntry)
		}
		out = append(out, rest[:l:l])
		p = rest[l:]
	}
	return out, nil
}

// signEntry encodes and signs this node's entry.
func (n *Node) signEntry(e *nodeEntry) ([]byte, error) {
	js, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(n.priv, append([]byte(sigContextEntry), js...))
	b := binary.AppendUvarint(make([]byte, 0, len(js)+80), uint64(len(js)))
	b = append(b, js...)
	return append(b, sig...), nil
}

// openEntry parses a signed entry without checking the signature (that
// waits until the entry turns out to be news).
func openEntry(raw []byte) (e *nodeEntry, js, sig []byte, err error) {
	l, rest, ok := uvarint(raw)
	if !ok || l > uint64(len(rest)) || uint64(len(rest))-l != ed25519.SignatureSize {
		return nil, nil, nil, fmt.Errorf("%w: bad signed entry layout", errBadEntry)
	}
	js, sig = rest[:l], rest[l:]
	e = new(nodeEntry)
	if err := json.Unmarshal(js, e); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", errBadEntry, err)
	}
	return e, js, sig, nil
}

// announceSoonLocked announces this node's entry after announceDelay,
// with every other change made meanwhile: links that come up or go down
// together (a node joining with several links, a relay whose neighbours
// come and go, a link's first RTT that follows it) cost the cluster one
// flood, not one each.
func (n *Node) announceSoonLocked() {
	if n.closing || n.announcing != nil {
		return
	}
	n.wg.Add(1)
	var t *time.Timer
	t = time.AfterFunc(n.announceDelay(), func() {
		defer n.wg.Done()
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.announcing == t && !n.closing {
			n.announceSelfLocked()
		}
	})
	n.announcing = t
}

// announceDelay is how long link changes wait to be announced together:
// a twentieth of the ping interval (at most 50 ms) per 8 links, at most
// the ping interval. An entry lists every link, and every flood of it
// reaches every link of the cluster, so a relay whose neighbours come and
// go (or all redial it at once after its restart) gathers more changes
// into each of its larger, costlier announcements.
func (n *Node) announceDelay() time.Duration {
	return min(min(n.cfg.PingInterval/20, 50*time.Millisecond)*time.Duration(max(1, len(n.links)/8)), n.cfg.PingInterval)
}

// stopAnnouncingLocked cancels a pending announcement.
func (n *Node) stopAnnouncingLocked() {
	if n.announcing != nil {
		if n.announcing.Stop() {
			n.wg.Done() // its function will not run
		}
		n.announcing = nil
	}
}

// announceSelfLocked publishes a new version of this node's entry to every
// link.
func (n *Node) announceSelfLocked() {
	n.stopAnnouncingLocked()
	n.topo.version++
	e := nodeEntry{Origin: n.id, Version: n.topo.version, Inc: n.inc, Key: n.pub, Static: n.static.Public, Caps: n.caps}
	for _, l := range n.sortedLinksLocked() {
		le := linkEntry{Peer: l.peer, Since: l.epoch}
		r := l.pathRTT.Load() // once: what is announced is what annRTT remembers
		if r > 0 {
			le.RTTMicros = max(r/1e3, 1)
		}
		l.annRTT.Store(r)
		e.Links = append(e.Links, le)
	}
	if e.Links == nil {
		e.Links = []linkEntry{}
	}
	raw, err := n.signEntry(&e)
	if err != nil {
		n.log.Error("mesh: encode own topology entry", "err", err)
		return
	}
	n.topo.put(n.id, &storedEntry{nodeEntry: e, raw: raw, updated: time.Now()})
	for _, l := range n.links {
		l.q.pushGossip(n.id, raw)
	}
}

// announceRTT re-announces this node's entry because the RTT of link l
// changed (see rttChanged), so that nodes beyond l learn it: the entry made
// at link up usually predates the first pong (first is true for the link's
// first measurement). RTT-driven announcements are rate-limited per node
// (rttAnnounceEvery); a change held back is taken up by a later pong.
func (n *Node) announceRTT(l *link, first bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closing || n.links[l.peer] != l || n.announcing != nil {
		return // a pending announcement carries the new RTT
	}
	now := n.mono()
	if n.rttAnnAt != 0 && time.Duration(now-n.rttAnnAt) < n.rttAnnounceEvery(first) {
		return
	}
	n.rttAnnAt = now
	n.announceSelfLocked()
}

// rttChangeBudget is how many ping intervals the cluster as a whole takes
// for one announcement of an RTT change, whatever its size.
const rttChangeBudget = 5

// rttAnnounceEvery is the least time between two RTT-driven announcements
// of this node: 2 ping intervals after a link's first measurement, and for
// a change also rttChangeBudget ping intervals per node in the topology.
// Every announcement floods every link of the cluster, so a bound per node
// that did not grow with the cluster would let RTT noise cost each node
// traffic in proportion to the cluster's size; this one keeps the cluster's
// RTT announcements to about one per rttChangeBudget ping intervals.
// First measurements come with new links, which are announced anyway.
func (n *Node) rttAnnounceEvery(first bool) time.Duration {
	every := 2 * n.cfg.PingInterval
	if !first {
		every = max(every, time.Duration(len(n.topo.entries))*rttChangeBudget*n.cfg.PingInterval)
	}
	return every
}

var errBadEntry = errors.New("bad topology entry")

func (n *Node) checkEntry(e *nodeEntry) error {
	if err := checkNodeID(e.Origin); err != nil {
		return fmt.Errorf("%w: origin: %v", errBadEntry, err)
	}
	// Versions count up from the incarnation (a start time); an entry far
	// past it, or from a start far in the future, is refused rather than
	// allowed to shadow later entries.
	if e.Version == 0 || e.Version < e.Inc || e.Version-e.Inc > maxVersionSteps {
		return fmt.Errorf("%w: %q has version %d outside its run's range", errBadEntry, e.Origin, e.Version)
	}
	if e.Inc > uint64(time.Now().Add(maxClockAhead).UnixNano()) {
		return fmt.Errorf("%w: %q claims to have started in the future", errBadEntry, e.Origin)
	}
	if len(e.Key) != ed25519.PublicKeySize || len(e.Static) != 32 {
		return fmt.Errorf("%w: %q has no valid keys", errBadEntry, e.Origin)
	}
	if len(e.Links) > n.cfg.MaxNodes {
		return fmt.Errorf("%w: %q lists %d links", errBadEntry, e.Origin, len(e.Links))
	}
	for _, le := range e.Links {
		if err := checkNodeID(le.Peer); err != nil {
			return fmt.Errorf("%w: %q link: %v", errBadEntry, e.Origin, err)
		}
	}
	if err := checkCaps(&e.Caps); err != nil {
		return fmt.Errorf("%w: %q: %v", errBadEntry, e.Origin, err)
	}
	return nil
}

// maxVersionSteps bounds how far an entry's version may be past its
// incarnation: far more changes than one run makes.
const maxVersionSteps = 1 << 40

// maxClockAhead is how far ahead of this node's clock an origin's start
// time may be.
const maxClockAhead = 24 * time.Hour

// handlePeerSync merges entries from a direct peer and floods the news on.
// An entry is believed only when its origin's node key signed it and Trust
// admits that key for the origin; a forged or untrusted entry is dropped
// (the peer may only be passing it on), one over the size budget closes
// the link.
func (n *Node) handlePeerSync(l *link, f *Frame) {
	raws, err := splitPeerSync(f.Payload, n.cfg.MaxEntryBytes)
	if err != nil {
		n.log.Warn("mesh: bad peer_sync", "peer", l.peer, "err", err)
		l.close(CloseProtocol, "bad peer_sync: "+err.Error())
		return
	}
	// Copies of stored entries are no news, and passed every check when
	// they were stored. The peer holds that entry, so this node's own
	// copy, if still queued for it, need not go back.
	n.mu.Lock()
	fresh := raws[:0]
	for _, raw := range raws {
		if origin, ok := n.topo.holds(raw); ok {
			l.q.dropGossip(origin)
			continue
		}
		fresh = append(fresh, raw)
	}
	n.mu.Unlock()
	raws = fresh
	type parsed struct {
		e       *nodeEntry
		js, sig []byte
		raw     []byte
	}
	entries := make([]parsed, 0, len(raws))
	for _, raw := range raws {
		e, js, sig, err := openEntry(raw)
		if err == nil {
			err = n.checkEntry(e)
		}
		if err != nil {
			n.log.Warn("mesh: invalid peer_sync entry", "peer", l.peer, "err", err)
			l.close(CloseProtocol, "invalid peer_sync entry")
			return
		}
		entries = append(entries, parsed{e, js, sig, append([]byte(nil), raw...)})
	}
	// Only news is checked, and the checks (a signature each, and a first
	// pin that the trust store may save to disk) run without the node's
	// lock; what was news is checked again when it is stored.
	n.mu.Lock()
	news := entries[:0]
	for _, p := range entries {
		if cur := n.topo.entries[p.e.Origin]; p.e.Origin == n.id || cur == nil || supersedes(p.e, &cur.nodeEntry) {
			news = append(news, p)
		}
	}
	n.mu.Unlock()
	type refusal struct {
		e   *nodeEntry
		err error
	}
	var refused []refusal
	trusted := news[:0]
	for _, p := range news {
		e := p.e
		switch {
		case !ed25519.Verify(ed25519.PublicKey(e.Key), append([]byte(sigContextEntry), p.js...), p.sig):
			n.stats.spoofed.Add(1)
			n.log.Warn("mesh: dropped a topology entry with a bad signature", "origin", e.Origin, "via", l.peer)
		case e.Origin == n.id && !bytes.Equal(e.Key, n.pub):
			// This node's id with another node key: someone else claims it.
			refused = append(refused, refusal{e, errors.New("another key signed an entry under this node's own id")})
		case e.Origin == n.id:
			trusted = append(trusted, p)
		default:
			if err := n.trust.Admit(e.Origin, ed25519.PublicKey(e.Key)); err != nil {
				refused = append(refused, refusal{e, err})
				continue
			}
			trusted = append(trusted, p)
		}
	}
	n.mu.Lock()
	if n.closing {
		n.mu.Unlock()
		return
	}
	for _, r := range refused {
		n.stats.spoofed.Add(1)
		n.logUntrusted(r.e.Origin, r.e.Key, l.peer, r.err)
	}
	changed := false
	var restarted []string
	for _, p := range trusted {
		e := p.e
		if e.Origin == n.id {
			n.ownEntrySeenLocked(l, e, p.raw)
			continue
		}
		cur := n.topo.entries[e.Origin]
		if cur != nil && !supersedes(e, &cur.nodeEntry) {
			continue // a newer one came in meanwhile
		}
		if cur == nil && len(n.topo.entries) >= n.cfg.MaxNodes && !n.evictLocked() {
			n.log.Warn("mesh: topology table full, ignoring node", "origin", e.Origin, "max_nodes", n.cfg.MaxNodes)
			continue
		}
		sanitizeCaps(&e.Caps)
		if cur != nil && !bytes.Equal(cur.Static, e.Static) {
			restarted = append(restarted, e.Origin)
		}
		n.topo.put(e.Origin, &storedEntry{nodeEntry: *e, raw: p.raw, updated: time.Now()})
		l.q.dropGossip(e.Origin) // an older one queued for the peer that sent it
		for _, other := range n.links {
			if other != l {
				other.q.pushGossip(e.Origin, p.raw)
			}
		}
		changed = true
	}
	if changed {
		n.recomputeSoonLocked()
	}
	n.mu.Unlock()
	// The origins that restarted: their end-to-end sessions are void.
	// (Outside the node's lock: the sessions' lock is taken before it.)
	for _, id := range restarted {
		n.e2e.forget(id)
	}
}

// logUntrusted reports a refused node key, at most once a minute per id, so
// a peer repeating the entry cannot flood the log.
func (n *Node) logUntrusted(origin string, key []byte, via string, err error) {
	now := time.Now()
	if last, ok := n.untrustedLog[origin]; ok && now.Sub(last) < time.Minute {
		return
	}
	if n.untrustedLog == nil || len(n.untrustedLog) > 1024 {
		n.untrustedLog = make(map[string]time.Time)
	}
	n.untrustedLog[origin] = now
	n.log.Error("mesh: refused a topology entry: its node key is not trusted for its id", "id", origin, "key", identity.Fingerprint(key), "via", via, "err", err)
}

// supersedes reports whether entry e replaces cur, both of one origin id:
// a higher version, or at an equal version a later incarnation. Two live
// processes under one id can land on the same version (one moves past the
// other while the other announces); without the tie-break each half of the
// cluster would keep its own and the clash would go unnoticed.
func supersedes(e, cur *nodeEntry) bool {
	return e.Version > cur.Version || (e.Version == cur.Version && e.Inc > cur.Inc)
}

// ownEntrySeenLocked handles an entry under this node's own id that came
// from peer l; such entries are never stored or passed on.
func (n *Node) ownEntrySeenLocked(l *link, e *nodeEntry, raw []byte) {
	own := n.topo.entries[n.id]
	if own != nil && e.Version == own.Version && bytes.Equal(raw, own.raw) {
		return // a peer's full sync echoes this node's latest entry: no news
	}
	if e.Version < n.topo.version {
		return // older than this node's entry, which wins wherever it goes
	}
	// Someone announced a version of this node's entry that this run did
	// not make.
	if n.topo.clashes == nil {
		n.topo.clashes = make(map[uint64]time.Time)
	}
	last, seen := n.topo.clashes[e.Inc]
	if !seen {
		// A previous run of this node, or another process with this id:
		// move past it once so this node's entry wins.
		if len(n.topo.clashes) >= maxIDClashes {
			clear(n.topo.clashes)
		}
		n.topo.clashes[e.Inc] = time.Time{}
		n.log.Warn("mesh: saw a newer entry for this node's own id; another node may be using it", "id", n.id, "via", l.peer)
		n.topo.version = e.Version
		n.announceSelfLocked()
		return
	}
	// That incarnation moved past this node's entry again: it is alive. Do
	// not outbid it (it would outbid this node in turn, forever); say so.
	if now := time.Now(); last.IsZero() || now.Sub(last) >= idClashLogEvery {
		n.topo.clashes[e.Inc] = now
		n.log.Error("mesh: another live node uses this node's id; give every node a unique id (nodes elsewhere in the cluster see one or the other)",
			"id", n.id, "other_incarnation", e.Inc, "incarnation", n.inc, "via", l.peer)
	}
}

// evictLocked drops the least recently updated unreachable entry.
func (n *Node) evictLocked() bool {
	rt := n.routes.Load()
	var victim string
	var oldest time.Time
	for id, e := range n.topo.entries {
		if id == n.id {
			continue
		}
		if _, ok := rt.index[id]; ok {
			continue
		}
		if victim == "" || e.updated.Before(oldest) {
			victim, oldest = id, e.updated
		}
	}
	if victim == "" {
		return false
	}
	n.topo.remove(victim)
	return true
}

// debugTopology renders the table for logs and test failures.
func (n *Node) debugTopology() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.id + ":"
	for id, e := range n.topo.entries {
		s += " " + id + "@" + strconv.FormatUint(e.Version%100000, 10) + "["
		for _, le := range e.Links {
			s += le.Peer + ","
		}
		s += "]"
	}
	return s
}
