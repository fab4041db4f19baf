package delivery

import (
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// seenNode is what this node remembers of another node, so that a message
// for it can be queued while it is down, also after this node restarted.
type seenNode struct {
	Tags     []string    `json:"tags"`
	Agents   []seenAgent `json:"agents"`
	LastSeen time.Time   `json:"lastSeen"`
}

type seenAgent struct {
	ID   string   `json:"id"`
	Tags []string `json:"tags,omitempty"`
}

// maxSeenNodes bounds the directory; the longest unseen go first.
const maxSeenNodes = 4096

func seenFrom(p mesh.PeerInfo, now time.Time) *seenNode {
	n := &seenNode{Tags: slices.Clone(p.Tags), LastSeen: now}
	for _, a := range p.Agents {
		n.Agents = append(n.Agents, seenAgent{ID: a.ID, Tags: slices.Clone(a.Tags)})
	}
	return n
}

func (n *seenNode) sameAs(o *seenNode) bool {
	return slices.Equal(n.Tags, o.Tags) && slices.EqualFunc(n.Agents, o.Agents, func(a, b seenAgent) bool {
		return a.ID == b.ID && slices.Equal(a.Tags, b.Tags)
	})
}

// watchPeers records the nodes the mesh shows, whenever its view changes.
func (s *Service) watchPeers() {
	defer s.wg.Done()
	online := map[string]bool{}
	for {
		changed := s.node.Changed()
		if err := s.recordPeers(online); err != nil {
			s.log.Warn("delivery: recording seen nodes", "err", err)
		}
		select {
		case <-changed:
		case <-s.ctx.Done():
			return
		}
	}
}

// recordPeers stores nodes that are new or changed, and when each node
// that left was last seen. online is the set seen at the last call.
func (s *Service) recordPeers(online map[string]bool) error {
	now := time.Now()
	writes := map[string]*seenNode{}
	var evict []string
	s.mu.Lock()
	seen := map[string]bool{}
	for _, p := range s.node.Peers() {
		if !mesh.ValidCapID(p.NodeID) {
			continue
		}
		seen[p.NodeID] = true
		n := seenFrom(p, now)
		if old := s.dir[p.NodeID]; old == nil || !old.sameAs(n) || !online[p.NodeID] {
			s.dir[p.NodeID] = n
			writes[p.NodeID] = n
		}
	}
	for id := range online {
		if n := s.dir[id]; !seen[id] && n != nil {
			c := *n
			c.LastSeen = now
			s.dir[id] = &c
			writes[id] = &c
		}
	}
	for len(s.dir) > maxSeenNodes {
		oldest := ""
		for id, n := range s.dir {
			if !seen[id] && (oldest == "" || n.LastSeen.Before(s.dir[oldest].LastSeen)) {
				oldest = id
			}
		}
		if oldest == "" {
			break
		}
		delete(s.dir, oldest)
		delete(writes, oldest)
		evict = append(evict, oldest)
	}
	s.mu.Unlock()
	clear(online)
	for id := range seen {
		online[id] = true
	}
	if len(writes) == 0 && len(evict) == 0 {
		return nil
	}
	return s.st.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDir)
		for id, n := range writes {
			if err := putJSON(b, []byte(id), n); err != nil {
				return err
			}
		}
		for _, id := range evict {
			if err := b.Delete([]byte(id)); err != nil {
				return err
			}
		}
		return nil
	})
}
