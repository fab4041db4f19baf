package meshtest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// startNode starts a mesh node on host id of nw; it is closed when the test
// ends.
func startNode(t *testing.T, nw *Network, id string, peers ...string) *mesh.Node {
	t.Helper()
	c := mesh.DefaultLocalConfig()
	c.NodeID, c.Secret = id, "meshtest-secret-0123456789"
	c.Transport, c.ListenAddr = nw.Transport(id), id
	for _, p := range peers {
		c.Peers = append(c.Peers, mesh.PeerAddr{URL: URL(p), NodeID: p})
	}
	n, err := mesh.New(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// waitPeers waits until n sees exactly ids.
func waitPeers(t *testing.T, n *mesh.Node, ids ...string) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		ch := n.Changed()
		var got []string
		for _, p := range n.Peers() {
			got = append(got, p.NodeID)
		}
		if slices.Equal(got, ids) {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s sees %v, want %v", n.ID(), got, ids)
		}
	}
}

// Real nodes run over the network: the handshake with the secret, gossip,
// a relayed call; a crashed relay is withdrawn at once (its connections
// reset); a node that shuts down says so with its close code.
func TestNodesOverTheNetwork(t *testing.T) {
	nw := NewNetwork(1)
	nw.SetDefault(LAN())
	a := startNode(t, nw, "a")
	b := startNode(t, nw, "b", "a")
	c := startNode(t, nw, "c", "b")
	waitPeers(t, a, "b", "c")
	waitPeers(t, c, "a", "b")
	c.Handle("echo", mesh.HandlerFunc(func(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request) error {
		return w.Write(append([]byte(r.From+":"), r.Payload...))
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := a.Call(ctx, "c", "echo", []byte("hi")); err != nil || string(got) != "a:hi" {
		t.Fatalf("a->c through b: %q %v", got, err)
	}
	if p, _ := a.Peer("c"); p.Via != "b" || p.RTT < 4*LAN().Delay {
		t.Fatalf("a sees c as %+v; want it via b, with an RTT of at least two round trips of %v", p, LAN().Delay)
	}

	nw.Crash("b")
	waitPeers(t, a)
	waitPeers(t, c)
	b.Close()
	nw.Heal()

	d := startNode(t, nw, "d", "a")
	waitPeers(t, a, "d")
	waitPeers(t, d, "a") // the link is up on both sides
	d.Close()
	waitPeers(t, a)
	if !slices.ContainsFunc(nw.Notices("d", "a"), func(n Notice) bool { return n.Code == mesh.CloseShutdown && !n.Echo }) {
		t.Fatalf("d's close notices to a: %+v, want %d", nw.Notices("d", "a"), mesh.CloseShutdown)
	}
}
