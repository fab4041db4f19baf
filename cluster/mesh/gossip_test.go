package mesh

import (
	"encoding/json"
	"testing"
	"time"
)

// A peer's full sync echoes this node's own latest entry back; that must not
// look like another process using the id (which bumps the version and
// floods the cluster), while a different entry under the same version must.
func TestOwnEntryEcho(t *testing.T) {
	a, _ := pair(t)
	l := a.linkTo("b")
	own := func() *storedEntry {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.topo.entries["a"]
	}
	sync := func(raw []byte) {
		payload, _ := json.Marshal(peerSyncPayload{Entries: []json.RawMessage{raw}})
		a.handlePeerSync(l, &Frame{Type: typePeerSync, ID: "t", From: "b", Timestamp: time.Now().UnixMilli(), Payload: payload})
	}
	cur := own()
	sync(cur.raw)
	if got := own(); got.Version != cur.Version {
		t.Fatalf("an echo of the own entry moved its version from %d to %d", cur.Version, got.Version)
	}
	forged := cur.nodeEntry
	forged.Caps.Tags = []string{"someone-else"}
	raw, _ := json.Marshal(forged)
	sync(raw)
	if got := own(); got.Version <= cur.Version || len(got.Caps.Tags) != 0 {
		t.Fatalf("a different entry under this node's id and version: own entry now %+v, want a newer version of its own", got.nodeEntry)
	}
}
