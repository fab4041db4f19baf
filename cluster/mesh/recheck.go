package mesh

import (
	"crypto/ed25519"
	"slices"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
)

// Recheck asks Trust again about every node this node knows, for use after
// the trust store changed while the node runs (a node revoked, a key
// pinned). A direct link whose peer key is no longer admitted is closed with
// CloseUntrusted; the signed topology entry of a node no longer admitted is
// dropped, so that routes to it through other nodes end too, and its end to
// end sessions are forgotten. A refused node stays out: its next handshake,
// entry or session is refused by the same Trust. Recheck returns the ids it
// refused, sorted.
func (n *Node) Recheck() []string {
	type known struct {
		id  string
		key ed25519.PublicKey
		l   *link // nil for a node known only from its topology entry
	}
	n.mu.Lock()
	if n.closing {
		n.mu.Unlock()
		return nil
	}
	var nodes []known
	for _, l := range n.links {
		if !l.isDown() {
			nodes = append(nodes, known{id: l.peer, key: l.key, l: l})
		}
	}
	for id, e := range n.topo.entries {
		if id != n.id {
			nodes = append(nodes, known{id: id, key: ed25519.PublicKey(e.Key)})
		}
	}
	n.mu.Unlock()

	// Trust may read or write its file: ask it without the node's lock.
	refusedKeys := map[string][]ed25519.PublicKey{}
	for _, k := range nodes {
		err := n.trust.Admit(k.id, k.key)
		if err == nil {
			continue
		}
		refusedKeys[k.id] = append(refusedKeys[k.id], k.key)
		if k.l != nil {
			n.log.Warn("mesh: closing the link to a node whose key is no longer trusted", "peer", k.id, "key", identity.Fingerprint(k.key), "err", err)
			k.l.close(CloseUntrusted, "node key "+identity.Fingerprint(k.key)[:19]+" no longer trusted; the refusing node's log says why")
		}
	}
	if len(refusedKeys) == 0 {
		return nil
	}

	n.mu.Lock()
	changed := false
	for id, keys := range refusedKeys {
		// Only the entry that was checked: one signed by another key has
		// been admitted (or refused) on its own arrival.
		if e := n.topo.entries[id]; e != nil && slices.ContainsFunc(keys, func(k ed25519.PublicKey) bool { return k.Equal(ed25519.PublicKey(e.Key)) }) {
			n.topo.remove(id)
			changed = true
		}
	}
	if changed && !n.closing {
		n.recomputeLocked()
	}
	n.mu.Unlock()

	out := make([]string, 0, len(refusedKeys))
	for id := range refusedKeys {
		n.e2e.forget(id)
		out = append(out, id)
	}
	if changed {
		n.checkStreams()
	}
	slices.Sort(out)
	return out
}

// PeerKey returns the node key of a node this node knows: of the direct link
// to it, else of its signed topology entry; nil when it knows none.
func (n *Node) PeerKey(id string) ed25519.PublicKey {
	n.mu.Lock()
	defer n.mu.Unlock()
	if l := n.links[id]; l != nil && !l.isDown() {
		return slices.Clone(l.key)
	}
	if e := n.topo.entries[id]; e != nil && id != n.id {
		return slices.Clone(ed25519.PublicKey(e.Key))
	}
	return nil
}
