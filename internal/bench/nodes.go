package bench

// Helpers shared by the suites: mesh nodes on loopback and waits on what they
// see. Every wait ends with its context.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// waitLimit bounds one wait for the mesh to reach a state.
const waitLimit = 30 * time.Second

func randomSecret() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// lanConfig is DefaultLANConfig listening on a free loopback port.
func lanConfig(id, secret string) mesh.Config {
	c := mesh.DefaultLANConfig()
	c.NodeID, c.Secret, c.ListenAddr = id, secret, "127.0.0.1:0"
	return c
}

// startNodes starts one listening node per id with LAN timings; on error the
// nodes already started are closed.
func startNodes(ctx context.Context, secret string, ids []string, mod func(*mesh.Config)) ([]*mesh.Node, error) {
	ns := make([]*mesh.Node, 0, len(ids))
	for _, id := range ids {
		c := lanConfig(id, secret)
		if mod != nil {
			mod(&c)
		}
		n, err := mesh.New(c)
		if err == nil {
			ns = append(ns, n)
			err = n.Start(ctx)
		}
		if err != nil {
			closeNodes(ns)
			return nil, fmt.Errorf("start node %s: %w", id, err)
		}
	}
	return ns, nil
}

// closeNodes closes the nodes in parallel and waits for them.
func closeNodes(ns []*mesh.Node) {
	var wg sync.WaitGroup
	for _, n := range ns {
		if n != nil {
			wg.Go(func() { _ = n.Close() })
		}
	}
	wg.Wait()
}

// dial makes a dial b.
func dial(a, b *mesh.Node) error {
	return a.AddPeer(mesh.PeerAddr{URL: b.URL(), NodeID: b.ID()})
}

// waitPeers waits until n sees exactly the nodes in want (sorted ids).
func waitPeers(ctx context.Context, n *mesh.Node, want []string) error {
	ctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	for {
		ch := n.Changed()
		if slices.Equal(peerIDs(n), want) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("node %s sees %v, want %v: %w", n.ID(), peerIDs(n), want, ctx.Err())
		}
	}
}

func peerIDs(n *mesh.Node) []string {
	var ids []string
	for _, p := range n.Peers() {
		ids = append(ids, p.NodeID)
	}
	slices.Sort(ids)
	return ids
}

// waitConverged waits until every node sees every other one.
func waitConverged(ctx context.Context, ns []*mesh.Node) error {
	all := make([]string, len(ns))
	for i, n := range ns {
		all[i] = n.ID()
	}
	slices.Sort(all)
	for _, n := range ns {
		others := slices.DeleteFunc(slices.Clone(all), func(id string) bool { return id == n.ID() })
		if err := waitPeers(ctx, n, others); err != nil {
			return err
		}
	}
	return nil
}

// median and worst of a non-empty sample.
func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

func worst(d []time.Duration) time.Duration { return slices.Max(d) }

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
