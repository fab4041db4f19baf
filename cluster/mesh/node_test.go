package mesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/meshtest"
	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

func echoHandler() Handler {
	return HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return w.Write(append([]byte(r.From+":"), r.Payload...))
	})
}

func TestTwoNodesCall(t *testing.T) {
	ns := startNodes(t, "a", "b")
	a, b := ns[0], ns[1]
	dial(t, a, b)
	waitAll(t, ns, 5*time.Second)
	b.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "b", "echo", []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "a:hi" {
		t.Fatalf("got %q", got)
	}
	p, ok := a.Peer("b")
	if !ok || p.Status != StatusConnected || p.Hops != 1 {
		t.Fatalf("peer b = %+v %v", p, ok)
	}
}

func TestLineRelay(t *testing.T) {
	ns := startNodes(t, "a", "b", "c")
	a, b, c := ns[0], ns[1], ns[2]
	dial(t, a, b)
	dial(t, c, b)
	waitAll(t, ns, 5*time.Second)
	c.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "c", "echo", []byte("via b"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "a:via b" {
		t.Fatalf("got %q", got)
	}
	p, _ := a.Peer("c")
	if p.Status != StatusRelay || p.Via != "b" || p.Hops != 2 {
		t.Fatalf("a sees c as %+v", p)
	}
	if b.Stats().FramesRelayed == 0 {
		t.Fatal("b relayed nothing")
	}
}

func TestSelfCall(t *testing.T) {
	a := startNode(t, testConfig("a"))
	a.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "a", "echo", []byte("me"))
	if err != nil || string(got) != "a:me" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestStar(t *testing.T) {
	ns := startNodes(t, "hub", "s1", "s2", "s3", "s4")
	for _, s := range ns[1:] {
		dial(t, s, ns[0])
	}
	waitAll(t, ns, 5*time.Second)
	for _, s := range ns[1:] {
		for _, p := range s.Peers() {
			want := StatusRelay
			if p.NodeID == "hub" {
				want = StatusConnected
			}
			if p.Status != want || (want == StatusRelay && p.Via != "hub") {
				t.Fatalf("%s sees %+v", s.ID(), p)
			}
		}
	}
	ns[4].Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := ns[1].Call(ctx, "s4", "echo", []byte("x")); err != nil || string(got) != "s1:x" {
		t.Fatalf("call s1->s4: %q %v", got, err)
	}
}

func TestRing(t *testing.T) {
	ids := []string{"r0", "r1", "r2", "r3", "r4", "r5"}
	ns := startNodes(t, ids...)
	for i := range ns {
		dial(t, ns[i], ns[(i+1)%len(ns)])
	}
	waitAll(t, ns, 5*time.Second)
	// r0 reaches r3 in three hops either way round.
	p, _ := ns[0].Peer("r3")
	if p.Hops != 3 || p.Status != StatusRelay {
		t.Fatalf("r0 sees r3 as %+v", p)
	}
	for _, n := range ns {
		n.Handle("echo", echoHandler())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, from := range ns {
		for _, to := range ns {
			got, err := from.Call(ctx, to.ID(), "echo", []byte("r"))
			if err != nil || string(got) != from.ID()+":r" {
				t.Fatalf("%s->%s: %q %v", from.ID(), to.ID(), got, err)
			}
		}
	}
	// Break one ring link: everyone stays reachable the other way round.
	ns[1].Close()
	waitAll(t, append(ns[:1:1], ns[2:]...), 5*time.Second)
	p, _ = ns[0].Peer("r2")
	if p.Hops != 4 || p.Via != "r5" {
		t.Fatalf("after r1 left, r0 sees r2 as %+v", p)
	}
}

func TestRandomSparse16(t *testing.T) {
	const N = 16
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, N)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%02d", i)
	}
	ns := startNodes(t, ids...)
	// A random spanning tree plus a few extra edges.
	for i := 1; i < N; i++ {
		dial(t, ns[i], ns[rng.IntN(i)])
	}
	for k := 0; k < N/4; k++ {
		i, j := rng.IntN(N), rng.IntN(N)
		if i != j {
			dial(t, ns[i], ns[j])
		}
	}
	waitAll(t, ns, 10*time.Second)
	for _, n := range ns {
		n.Handle("echo", echoHandler())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for k := 0; k < 20; k++ {
		a, b := ns[rng.IntN(N)], ns[rng.IntN(N)]
		got, err := a.Call(ctx, b.ID(), "echo", []byte("q"))
		if err != nil || string(got) != a.ID()+":q" {
			t.Fatalf("%s->%s: %q %v", a.ID(), b.ID(), got, err)
		}
	}
}

func TestKilledNodeWithdrawnAndStreamsFail(t *testing.T) {
	ns := startNodes(t, "a", "b", "c")
	a, b, c := ns[0], ns[1], ns[2]
	dial(t, a, b)
	dial(t, c, b)
	waitAll(t, ns, 5*time.Second)
	s, _ := openHanging(t, a, c)
	c.Close()
	_, err := s.Recv() // no ctx deadline: it must fail because c is gone
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `"c"`) {
		t.Fatalf("Recv after c closed: %v", err)
	}
	waitPeers(t, a, 5*time.Second, "b")
	waitPeers(t, b, 5*time.Second, "a")
	if _, err := a.Open(context.Background(), "c", "hang", nil); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("Open to withdrawn node: %v", err)
	}
}

// A link cut at the transport, with no close frame (a machine that lost
// power or network): streams across it fail at once on the caller's side,
// and the handler on the far side, still running, sees its context end.
func TestCutLinkFailsStreamsBothWays(t *testing.T) {
	nw := meshtest.NewNetwork(1)
	ns := startMemNodes(t, nw, "a", "b", "c")
	a, b, c := ns[0], ns[1], ns[2]
	dial(t, a, b)
	dial(t, c, b)
	waitAll(t, ns, 5*time.Second)
	s, ended := openHanging(t, a, c)
	nw.Cut("b", "c")
	_, err := s.Recv() // no ctx deadline: it must fail because the route is gone
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), `"c"`) {
		t.Fatalf("Recv after the b-c link was cut: %v", err)
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("c's handler still runs after c lost its only link")
	}
	waitPeers(t, a, 5*time.Second, "b")
	if got := nw.Notices("b", "c"); len(got) != 0 {
		t.Fatalf("close notices crossed a cut link: %+v", got)
	}
}

func TestKilledRelayFailsStreams(t *testing.T) {
	ns := startNodes(t, "a", "b", "c")
	a, b, c := ns[0], ns[1], ns[2]
	dial(t, a, b)
	dial(t, c, b)
	waitAll(t, ns, 5*time.Second)
	s, cancelled := openHanging(t, a, c)
	b.Close()
	if _, err := s.Recv(); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Recv after relay closed: %v", err)
	}
	select { // the handler on c learns too: its caller is unreachable
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("handler on c was not cancelled after the relay died")
	}
}

// A peer that falls silent (a network split: nothing arrives, nothing is
// refused) is declared dead by both sides, with CloseDead; once the network
// heals, the dialer links again.
func TestSilentPeerDeclaredDead(t *testing.T) {
	nw := meshtest.NewNetwork(1)
	ns := startMemNodes(t, nw, "a", "b")
	a, b := ns[0], ns[1]
	dial(t, a, b)
	waitAll(t, ns, 5*time.Second)
	nw.Partition([]string{"a"}, []string{"b"})
	// Both sides find the silent link dead (DeadAfter 2 s in testConfig);
	// the generous bound only keeps a broken build from hanging.
	waitPeers(t, a, 5*time.Second)
	waitPeers(t, b, 5*time.Second)
	for _, from := range []string{"a", "b"} {
		if got := nw.Notices(from, ""); len(got) != 1 || got[0].Code != CloseDead {
			t.Fatalf("%s's close notices: %+v, want one %d", from, got, CloseDead)
		}
	}
	nw.Heal() // a's dialer, waiting on the split, gets through
	waitAll(t, ns, 5*time.Second)
}

func TestRestartUnderSameID(t *testing.T) {
	a := startNode(t, testConfig("a"))
	b1 := startNode(t, testConfig("b"))
	dial(t, b1, a)
	waitPeers(t, a, 5*time.Second, "b")
	b1.Handle("who", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error { return w.Write([]byte("b1")) }))
	b1.Close()
	waitPeers(t, a, 5*time.Second)

	b2 := startNode(t, testConfig("b"))
	b2.Handle("who", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error { return w.Write([]byte("b2")) }))
	dial(t, b2, a)
	waitPeers(t, a, 5*time.Second, "b")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := a.Call(ctx, "b", "who", nil); err != nil || string(got) != "b2" {
		t.Fatalf("call to restarted b: %q %v", got, err)
	}
}

func TestRestartReplacesSilentOldLink(t *testing.T) {
	// The old b vanished without closing its connection (its machine
	// hangs): the new b's link must replace it without waiting for the
	// dead-link timeout (the probe of the old link fails).
	nw := meshtest.NewNetwork(1)
	cfg := memConfig(nw, "a")
	cfg.DeadAfter = 30 * time.Second // the old link would linger this long otherwise
	a := startNode(t, cfg)
	old := testConfig("b")
	old.Transport = nw.Transport("b-old")
	b1 := startNode(t, old)
	dial(t, b1, a)
	waitPeers(t, a, 5*time.Second, "b")
	nw.Freeze("b-old")
	b2 := startNode(t, memConfig(nw, "b"))
	b2.Handle("who", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error { return w.Write([]byte("b2")) }))
	dial(t, b2, a)
	waitPoll(t, 5*time.Second, "b2 linked", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		got, err := a.Call(ctx, "b", "who", nil)
		return err == nil && string(got) == "b2"
	})
	if !slices.ContainsFunc(nw.Notices("a", "b-old"), func(n meshtest.Notice) bool { return n.Code == CloseReplaced }) {
		t.Fatalf("a's close notices to the old b: %+v, want %d", nw.Notices("a", "b-old"), CloseReplaced)
	}
}

func TestDuplicateLiveNodeRefused(t *testing.T) {
	a := startNode(t, testConfig("a"))
	b1 := startNode(t, testConfig("b"))
	dial(t, b1, a)
	waitPeers(t, a, 5*time.Second, "b")
	b1.Handle("who", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error { return w.Write([]byte("b1")) }))

	impostor, err := New(testConfig("b"))
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Close()
	_, l, err := impostor.dialOnce(PeerAddr{URL: a.URL()})
	var pc *transport.CloseError
	if l != nil || !errors.As(err, &pc) || pc.Code != CloseDuplicateNode {
		t.Fatalf("impostor dial: link=%v err=%v", l != nil, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := a.Call(ctx, "b", "who", nil); err != nil || string(got) != "b1" {
		t.Fatalf("after impostor: %q %v", got, err)
	}
}

func TestSimultaneousDialSettlesOnOneLink(t *testing.T) {
	ns := startNodes(t, "a", "b")
	a, b := ns[0], ns[1]
	dial(t, a, b)
	dial(t, b, a)
	waitAll(t, ns, 5*time.Second)
	// Whatever the interleaving, both sides end with the link a dialed.
	waitPoll(t, 5*time.Second, "one link dialed by a", func() bool {
		la, lb := a.linkTo("b"), b.linkTo("a")
		return la != nil && lb != nil && la.outbound && !lb.outbound
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	b.Handle("echo", echoHandler())
	if _, err := a.Call(ctx, "b", "echo", nil); err != nil {
		t.Fatal(err)
	}
}

// A network split between a-b and c-d: each half sees only itself once
// the silent b-c link is found dead; after the split heals, b redials c and
// the cluster is whole again.
func TestPartitionAndHeal(t *testing.T) {
	nw := meshtest.NewNetwork(1)
	ns := startMemNodes(t, nw, "a", "b", "c", "d")
	a, b, c, d := ns[0], ns[1], ns[2], ns[3]
	dial(t, a, b)
	dial(t, c, d)
	dial(t, b, c)
	waitAll(t, ns, 5*time.Second)
	nw.Partition([]string{"a", "b"}, []string{"c", "d"})
	waitPeers(t, a, 5*time.Second, "b")
	waitPeers(t, b, 5*time.Second, "a")
	waitPeers(t, c, 5*time.Second, "d")
	waitPeers(t, d, 5*time.Second, "c")
	nw.Heal()
	waitAll(t, ns, 5*time.Second)
	d.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := a.Call(ctx, "d", "echo", []byte("healed")); err != nil || string(got) != "a:healed" {
		t.Fatalf("a->d after heal: %q %v", got, err)
	}
}

func TestCapabilitiesGossiped(t *testing.T) {
	ns := startNodes(t, "a", "b", "c")
	dial(t, ns[0], ns[1])
	dial(t, ns[2], ns[1])
	waitAll(t, ns, 5*time.Second)
	ns[2].SetCapabilities(Capabilities{Tags: []string{"gpu"}, Models: []ModelInfo{{ID: "m1", Provider: "p"}}, Agents: []AgentInfo{{ID: "coder", Description: "writes code"}}})
	waitUntil(t, ns[0], 5*time.Second, "c's caps", func() bool {
		p, ok := ns[0].Peer("c")
		return ok && len(p.Tags) == 1 && p.Tags[0] == "gpu" && len(p.Models) == 1 && len(p.Agents) == 1 && p.Agents[0].Description == "writes code"
	})
}

// RTT follows the pings: it shows up for direct and relayed peers alike,
// and a relayed peer's counts every hop. The links' delays are set, so the
// RTTs have known floors: twice the delay of each hop.
func TestRTTMeasuredOnEveryHop(t *testing.T) {
	nw := meshtest.NewNetwork(1)
	nw.SetLink("a", "b", meshtest.Link{Delay: 3 * time.Millisecond})
	nw.SetLink("b", "c", meshtest.Link{Delay: 7 * time.Millisecond})
	ns := startMemNodes(t, nw, "a", "b", "c")
	a, b := ns[0], ns[1]
	dial(t, a, b)
	dial(t, b, ns[2])
	waitAll(t, ns, 5*time.Second)
	waitPoll(t, 5*time.Second, "a measures the RTT to b (direct) and c (relayed, as b announces the b-c hop)", func() bool {
		pb, okb := a.Peer("b")
		pc, okc := a.Peer("c")
		return okb && okc && pb.RTT > 0 && pc.RTT > pb.RTT
	})
	pb, _ := a.Peer("b")
	pc, _ := a.Peer("c")
	if pb.RTT < 6*time.Millisecond || pc.RTT < 20*time.Millisecond {
		t.Fatalf("RTT to b %v (at least 6 ms), to c %v (at least 6 + 14 ms)", pb.RTT, pc.RTT)
	}
}

// The dialers' schedule with the LAN defaults: about 0.5 s, doubling, capped
// at 30 s, jittered at every step.
func TestBackoffSchedule(t *testing.T) {
	c := DefaultLANConfig()
	if c.ReconnectMin != 500*time.Millisecond || c.ReconnectMax != 30*time.Second {
		t.Fatalf("defaults %v..%v, want 500ms..30s", c.ReconnectMin, c.ReconnectMax)
	}
	b := c.ReconnectMin
	for step := 0; step < 12; step++ {
		seen := map[time.Duration]bool{}
		for range 50 {
			d := backoffDelay(b, c.ReconnectMax)
			if d < b*8/10 || d > min(b*12/10, c.ReconnectMax) {
				t.Fatalf("step %d: delay %v outside %v±20%% capped at %v", step, d, b, c.ReconnectMax)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Fatalf("step %d: delay %v is not jittered", step, b)
		}
		b = nextBackoff(b, c.ReconnectMax)
	}
	if b != c.ReconnectMax {
		t.Fatalf("backoff ends at %v, want the cap %v", b, c.ReconnectMax)
	}
}

// A second login under the same node id replaces the first link when that
// one is stale (same process redialing, or a silent old process), and the
// old link is told so with CloseReplaced.
func TestReplacedLinkCloseCode(t *testing.T) {
	tests := []struct {
		name    string
		sameInc bool
	}{
		{"same incarnation redials", true},
		{"restarted, old link silent", false},
	}
	a, b := pair(t)
	_, key, _ := ed25519.GenerateKey(crand.Reader) // one node key: the same node
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			login := func(inc uint64) *rawPeer {
				p := rawDial(t, b.URL(), "raw")
				p.priv, p.inc = key, inc
				p.login()
				return p
			}
			inc := uint64(time.Now().UnixNano())
			old := login(inc)
			waitUntil(t, b, 5*time.Second, "raw linked", func() bool { _, ok := b.Peer("raw"); return ok })
			first := b.linkTo("raw")
			if !tt.sameInc {
				inc++
			}
			_ = login(inc) // the old raw never answers the probe's ping
			if got := old.closeCode(); got != CloseReplaced {
				t.Fatalf("old link closed with %d, want %d", got, CloseReplaced)
			}
			waitPoll(t, 5*time.Second, "the new link in place", func() bool {
				l := b.linkTo("raw")
				return l != nil && l != first
			})
			stillServes(t, a, b)
		})
	}
}

// selfSignedTLS makes a server config for 127.0.0.1 and a client config
// that trusts it (as tls.caFile would).
func selfSignedTLS(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mesh test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12},
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// wss peering: a dialer that trusts the listener's CA links and relays as
// over ws; one with only the system roots is refused by TLS.
func TestTLSPeering(t *testing.T) {
	serverTLS, clientTLS := selfSignedTLS(t)
	cb := testConfig("b")
	cb.ServerTLS = serverTLS
	b := startNode(t, cb)
	if !strings.HasPrefix(b.URL(), "wss://") {
		t.Fatalf("URL %q, want wss://", b.URL())
	}
	ca := testConfig("a")
	ca.ClientTLS = clientTLS
	a := startNode(t, ca)
	dial(t, a, b)
	waitAll(t, []*Node{a, b}, 5*time.Second)
	b.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := a.Call(ctx, "b", "echo", []byte("over tls")); err != nil || string(got) != "a:over tls" {
		t.Fatalf("call over wss: %q %v", got, err)
	}

	c := startNode(t, testConfig("c")) // system roots only
	_, l, err := c.dialOnce(PeerAddr{URL: b.URL(), NodeID: "b"})
	if err == nil || l != nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("dial with untrusted certificate: link %v, err %v; want a certificate error", l, err)
	}
	stillServes(t, a, b)
}

// A process under a pinned id with another node key is refused outright,
// whatever the state of the link it would replace.
func TestImpostorWithOtherKeyRefused(t *testing.T) {
	a := startNode(t, testConfig("a"))
	b := startNode(t, testConfig("b"))
	dial(t, b, a)
	waitPeers(t, a, 5*time.Second, "b")
	cfg := testConfig("b")
	_, cfg.Identity, _ = ed25519.GenerateKey(crand.Reader)
	impostor, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer impostor.Close()
	_, l, err := impostor.dialOnce(PeerAddr{URL: a.URL()})
	var pc *transport.CloseError
	if l != nil || !errors.As(err, &pc) || pc.Code != CloseUntrusted {
		t.Fatalf("impostor dial: link=%v err=%v; want close %d", l != nil, err, CloseUntrusted)
	}
	stillServes(t, b, a)
}
