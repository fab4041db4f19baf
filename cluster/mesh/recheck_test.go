package mesh

import (
	"context"
	"crypto/ed25519"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// switchTrust pins on first use and refuses the ids revoked so far; ids can
// be revoked while the node runs, as the known-nodes store is by the revoke
// command.
type switchTrust struct {
	memoryTrust
	mu      sync.Mutex
	revoked map[string]bool
}

func (s *switchTrust) revoke(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.revoked == nil {
		s.revoked = map[string]bool{}
	}
	s.revoked[id] = true
}

func (s *switchTrust) Admit(id string, key ed25519.PublicKey) error {
	s.mu.Lock()
	revoked := s.revoked[id]
	s.mu.Unlock()
	if revoked {
		return errors.New("node " + id + " is revoked")
	}
	return s.memoryTrust.Admit(id, key)
}

// A node revoked while linked is cut off at once: its direct link closes
// with 4012, the route to it through a relay that still links it ends, and
// it cannot come back by dialing again.
func TestRecheckCutsOffARevokedNode(t *testing.T) {
	trust := &switchTrust{}
	acfg := testConfig("a")
	acfg.Trust = trust
	a := startNode(t, acfg)
	b := startNode(t, testConfig("b"))
	c := startNode(t, testConfig("c"))
	dial(t, b, a)
	dial(t, c, b)
	dial(t, c, a)
	waitAll(t, []*Node{a, b, c}, 5*time.Second)
	waitPoll(t, 5*time.Second, "a direct link a-c", func() bool { return a.linkTo("c") != nil && c.linkTo("a") != nil })
	aToC, cToA := a.linkTo("c"), c.linkTo("a")
	if got := a.PeerKey("c"); !got.Equal(testKey("c").Public().(ed25519.PublicKey)) {
		t.Fatalf("a.PeerKey(c) = %x, want c's node key", got)
	}
	s, ended := openHanging(t, a, c)
	defer s.Close()

	if got := a.Recheck(); got != nil {
		t.Fatalf("Recheck with nothing revoked refused %v", got)
	}
	var cEntry *storedEntry
	waitPoll(t, 5*time.Second, "c's entry on a", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		cEntry = a.topo.entries["c"]
		return cEntry != nil
	})
	trust.revoke("c")
	if got := a.Recheck(); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("Recheck refused %v, want [c]", got)
	}
	// c's entry left the table whole: a copy of it gossiped again by b
	// must be news, checked (and refused) again, not looked up as held.
	a.mu.Lock()
	_, held := a.topo.holds(cEntry.raw)
	tableOK := len(a.topo.held) == len(a.topo.entries)
	a.mu.Unlock()
	if held || !tableOK {
		t.Fatalf("after the revoke a still holds c's entry (%v), or its table is torn (%v)", held, !tableOK)
	}
	waitClosedWith(t, aToC, 5*time.Second, CloseUntrusted, "a's link to revoked c")
	waitPoll(t, 5*time.Second, "c to hear 4012", func() bool {
		cToA.closeMu.Lock()
		defer cToA.closeMu.Unlock()
		return cToA.peerCode == CloseUntrusted
	})
	// b still links c and gossips about it, but a no longer reaches it.
	waitPeers(t, a, 5*time.Second, "b")
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the request a had open on c was not ended")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := a.Open(ctx, "c", "hang", nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("a.Open(c) after the revoke: %v, want ErrUnknownNode", err)
	}
	// c keeps dialing a (its peer list has a) and is refused each time.
	before := a.Stats().AuthFailed
	waitPoll(t, 10*time.Second, "c's redial refused", func() bool { return a.Stats().AuthFailed > before })
	if _, ok := a.Peer("c"); ok || a.linkTo("c") != nil {
		t.Fatal("revoked c is back on a")
	}
	if a.PeerKey("c") != nil {
		t.Fatal("a still holds c's key after dropping it")
	}
	// The rest of the cluster is untouched.
	waitPeers(t, b, 5*time.Second, "a", "c")
	if got := a.Recheck(); got != nil {
		t.Fatalf("a second Recheck refused %v: nothing of c should be left", got)
	}
}

// Recheck on a closed node does nothing.
func TestRecheckAfterClose(t *testing.T) {
	n, err := New(testConfig("solo"))
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	if got := n.Recheck(); got != nil {
		t.Fatalf("Recheck on a closed node = %v", got)
	}
}
