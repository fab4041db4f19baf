package mesh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh/transport"
)

// The attacks of the threat model in docs/PROTOCOL.md, each played against
// real nodes on loopback: an outsider on the wire, a relay, a secret holder
// and a revoked node.

// interposer is a TCP man in the middle between a dialer and a listener:
// it records what passes (a passive capture) and, when armed, flips one
// byte on the way to the listener; tests inject bytes on toListn.
type interposer struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	capture bytes.Buffer
	flip    bool // flip a byte in the next chunk to the listener
	conns   []net.Conn
	wg      sync.WaitGroup
	toListn net.Conn
}

func newInterposer(t *testing.T, target string) *interposer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x := &interposer{ln: ln, target: target}
	x.wg.Add(1)
	go x.accept()
	t.Cleanup(func() {
		_ = ln.Close()
		x.mu.Lock()
		for _, c := range x.conns {
			_ = c.Close()
		}
		x.mu.Unlock()
		x.wg.Wait()
	})
	return x
}

func (x *interposer) url() string { return "ws://" + x.ln.Addr().String() }

func (x *interposer) accept() {
	defer x.wg.Done()
	for {
		c, err := x.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", x.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		x.mu.Lock()
		x.conns = append(x.conns, c, u)
		x.toListn = u
		x.mu.Unlock()
		x.wg.Add(2)
		go x.pipe(c, u, true)
		go x.pipe(u, c, false)
	}
}

func (x *interposer) pipe(from, to net.Conn, toListener bool) {
	defer x.wg.Done()
	defer to.Close()
	buf := make([]byte, 32<<10)
	for {
		k, err := from.Read(buf)
		if k > 0 {
			x.mu.Lock()
			x.capture.Write(buf[:k])
			if toListener && x.flip {
				buf[k-1] ^= 0x40
				x.flip = false
			}
			x.mu.Unlock()
			if _, werr := to.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (x *interposer) captured() []byte {
	x.mu.Lock()
	defer x.mu.Unlock()
	return bytes.Clone(x.capture.Bytes())
}

// ranHandler counts runs of a "run" handler that stands for exec.
func ranHandler(n *Node) *atomic.Int32 {
	var ran atomic.Int32
	n.Handle("run", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		ran.Add(1)
		return w.Write([]byte("ran " + string(r.Payload)))
	}))
	return &ran
}

// An outsider on the wire of a plain ws:// link: flipping one byte of a
// record, or injecting a frame of its own, is detected; the link closes and
// nothing runs.
func TestAttackInterposerTampering(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(x *interposer)
	}{
		{"flipped byte", func(x *interposer) { x.mu.Lock(); x.flip = true; x.mu.Unlock() }},
		{"injected frame", func(x *interposer) {
			// A well-formed WebSocket binary message from the client side
			// (masked), carrying a request as v1 would have sent it.
			payload := encodeFrame(reqFrame("a", "b", "run", 99))
			frame, key, _ := appendBinaryHeader(nil, len(payload), true)
			start := len(frame)
			frame = append(frame, payload...)
			maskFrame(frame[start:], key)
			x.mu.Lock()
			_, _ = x.toListn.Write(frame)
			x.mu.Unlock()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startNode(t, testConfig("a"))
			b := startNode(t, testConfig("b"))
			ran := ranHandler(b)
			x := newInterposer(t, b.Addr().String())
			if err := a.AddPeer(PeerAddr{URL: x.url(), NodeID: "b"}); err != nil {
				t.Fatal(err)
			}
			waitAll(t, []*Node{a, b}, 5*time.Second)
			l := b.linkTo("a")
			tc.tamper(x)
			// Any frame a sends next carries the flip; a ping does soon.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = a.Call(ctx, "b", "run", []byte("x"))
			waitClosedWith(t, l, 5*time.Second, CloseDecrypt, "b closing the tampered link")
			if tc.name == "injected frame" && ran.Load() != 0 {
				t.Fatal("the injected request ran")
			}
		})
	}
}

// A passive capture of a default link shows neither a tool call's nor a
// completion's text, nor the secret or anything derived from it in clear.
func TestAttackPassiveCapture(t *testing.T) {
	a := startNode(t, testConfig("a"))
	b := startNode(t, testConfig("b"))
	b.Handle("exec", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		return w.Write([]byte("completion-canary-7c1e " + string(r.Payload)))
	}))
	x := newInterposer(t, b.Addr().String())
	if err := a.AddPeer(PeerAddr{URL: x.url(), NodeID: "b"}); err != nil {
		t.Fatal(err)
	}
	waitAll(t, []*Node{a, b}, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := a.Call(ctx, "b", "exec", []byte(`{"command":"echo tool-canary-51f0"}`))
	if err != nil || !bytes.Contains(got, []byte("completion-canary-7c1e")) {
		t.Fatalf("call: %q %v", got, err)
	}
	capture := x.captured()
	for _, canary := range [][]byte{[]byte("tool-canary-51f0"), []byte("completion-canary-7c1e"), []byte(testSecret), derivePSK(testSecret), []byte(`"exec"`), []byte("exec")} {
		if bytes.Contains(capture, canary) {
			t.Errorf("the capture holds %q in clear", canary)
		}
	}
}

// A secret holder with a link of its own cannot act as another node: a
// request, a response or an end "from" a, sent plainly or in a box that is
// not a's, is dropped; nothing runs and no stream of a's is touched.
func TestAttackSecretHolderForgesFrom(t *testing.T) {
	a, b := pair(t)
	ran := ranHandler(b)
	m := rawDial(t, b.URL(), "mallory")
	m.login()
	waitUntil(t, b, 5*time.Second, "mallory linked", func() bool { _, ok := b.Peer("mallory"); return ok })
	// A stream of a's to b that a forged end or response could cut short.
	s, _ := openHanging(t, a, b)
	before := b.Stats().DroppedSpoofed
	m.sendFrame(reqFrame("a", "b", "run", 1))                                           // plain, from another node
	sealed := reqFrame("a", "b", "run", 2)                                              // "sealed", with a box that is not a's
	sealed.Sealed, sealed.Payload = true, append(make([]byte, 12), make([]byte, 40)...) // unknown session
	m.sendFrame(sealed)
	m.sendFrame(streamFrame(typeCancel, "a", "b", streamMsg{S: s.id}))                              // cancel a's stream
	m.sendFrame(streamFrame(typeNoStream, "b", "a", streamMsg{S: s.id, R: true}))                   // relay a forged ending to a
	m.sendFrame(&Frame{Type: typeE2EInit, ID: 5, From: "a", To: "b", TTL: 4, Payload: []byte("x")}) // a forged handshake
	waitPoll(t, 5*time.Second, "b dropped the forged frames", func() bool { return b.Stats().DroppedSpoofed-before >= 3 })
	stillServes(t, a, b)
	if n := ran.Load(); n != 0 {
		t.Fatalf("a forged request ran %d times", n)
	}
	s.mu.Lock()
	finished := s.finished
	s.mu.Unlock()
	if finished {
		t.Fatal("a's stream was ended by forged frames")
	}
}

// A secret holder cannot forge or bend another node's topology: an entry
// for a signed with its own key, a's real entry with its version pushed up,
// and a's entry replayed are all without effect at b.
func TestAttackSecretHolderForgesGossip(t *testing.T) {
	a, b := pair(t)
	a.SetCapabilities(Capabilities{Tags: []string{"honest"}})
	waitUntil(t, b, 5*time.Second, "a's tag at b", func() bool {
		p, _ := b.Peer("a")
		return len(p.Tags) == 1 && p.Tags[0] == "honest"
	})
	m := rawDial(t, b.URL(), "mallory")
	m.login()
	// b's full sync hands mallory a's signed entry.
	var real []byte
	deadline := time.Now().Add(5 * time.Second)
	for real == nil && time.Now().Before(deadline) {
		f, err := m.read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != typePeerSync {
			continue
		}
		entries, _ := splitPeerSync(f.Payload, 64<<10)
		for _, raw := range entries {
			if e, _, _, err := openEntry(raw); err == nil && e.Origin == "a" && len(e.Caps.Tags) == 1 {
				real = raw
			}
		}
	}
	if real == nil {
		t.Fatal("mallory never saw a's entry")
	}
	e, js, sig, _ := openEntry(real)
	forgedByMallory := func() []byte {
		f := *e
		f.Version += 10
		f.Caps.Tags = []string{"evil"}
		f.Key = m.priv.Public().(ed25519.PublicKey)
		raw, _ := (&Node{priv: m.priv}).signEntry(&f)
		return raw
	}()
	bumped := func() []byte {
		f := *e
		f.Version = f.Inc + maxVersionSteps // as far as a version may go, under a's signature
		js2, _ := json.Marshal(&f)
		_ = js
		out := appendUvarintBytes(nil, uint64(len(js2)))
		out = append(out, js2...)
		return append(out, sig...)
	}()
	before := b.Stats().DroppedSpoofed
	for _, raw := range [][]byte{forgedByMallory, bumped, real} {
		m.sendFrame(&Frame{Type: typePeerSync, Payload: appendPeerSync(nil, [][]byte{raw})[1:]})
	}
	waitPoll(t, 5*time.Second, "b dropped the forged entries", func() bool { return b.Stats().DroppedSpoofed-before >= 2 })
	p, _ := b.Peer("a")
	if len(p.Tags) != 1 || p.Tags[0] != "honest" {
		t.Fatalf("a's tags at b are now %v", p.Tags)
	}
	stillServes(t, a, b)
}

func appendUvarintBytes(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// A relay cannot read or change what it forwards between two other nodes:
// a sealed frame from a to c whose body, header or box was changed on the
// way does not open at c, and one replayed is dropped; the TTL, which
// relays must lower, is not covered.
func TestAttackRelayCannotForge(t *testing.T) {
	a, b, c := line(t, nil)
	ran := ranHandler(c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.Call(ctx, "c", "run", []byte("x")); err != nil { // sets up the a-c session
		t.Fatal(err)
	}
	ss := a.e2e.current("c")
	if ss == nil {
		t.Fatal("no a-c session after a relayed call")
	}
	inLink := c.linkTo("b")
	seal := func() *Frame {
		f := reqFrame("a", "c", "run", 1000+a.nextID())
		ss.seal(f)
		return f
	}
	deliver := func(f *Frame) { c.route(inLink, f, encodeFrame(f)) }
	before := c.Stats().DroppedSpoofed
	for _, tamper := range []func(f *Frame){
		func(f *Frame) { f.Payload[len(f.Payload)-1] ^= 1 }, // body
		func(f *Frame) { f.Stream++ },                       // header: another stream
		func(f *Frame) { f.Type = typeCancel },              // header: another type
		func(f *Frame) { f.Payload[5] ^= 1 },                // counter
	} {
		f := seal()
		tamper(f)
		deliver(f)
	}
	if got := c.Stats().DroppedSpoofed - before; got != 4 {
		t.Fatalf("c dropped %d tampered frames, want 4", got)
	}
	ok := seal()
	ok.TTL = 1 // relays lower it: not covered by the seal
	raw := encodeFrame(ok)
	replay := append([]byte(nil), raw...)
	deliver(ok)
	f2, _ := decodeFrame(replay)
	f2.ID++ // past the relay dedup: only the replay window can stop it
	deliver(f2)
	waitPoll(t, 5*time.Second, "the untampered frame ran", func() bool { return ran.Load() == 2 })
	time.Sleep(100 * time.Millisecond)
	if ran.Load() != 2 {
		t.Fatalf("ran %d times; the replayed frame must not run", ran.Load())
	}
	stillServes(t, a, c)
	_ = b
}

// A revoked node cannot come back: not by dialing, not through a relay
// that still links it, not under its id with a new key.
func TestAttackRevokedNodeComesBack(t *testing.T) {
	trust := &revokingTrust{revoked: map[string]bool{"x": true}}
	acfg := testConfig("a")
	acfg.Trust = trust
	a := startNode(t, acfg)
	b := startNode(t, testConfig("b"))
	dial(t, b, a)
	waitAll(t, []*Node{a, b}, 5*time.Second)
	x := startNode(t, testConfig("x"))
	// Through a relay that did not revoke it.
	dial(t, x, b)
	waitPeers(t, b, 5*time.Second, "a", "x")
	// Directly, with its key and with a new one.
	_, l, err := x.dialOnce(PeerAddr{URL: a.URL()})
	var pc *transport.CloseError
	if l != nil || !errors.As(err, &pc) || pc.Code != CloseUntrusted {
		t.Fatalf("revoked x dialing a: link=%v err=%v", l != nil, err)
	}
	cfg := testConfig("x")
	_, cfg.Identity, _ = ed25519.GenerateKey(rand.Reader)
	x2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer x2.Close()
	if _, l, err := x2.dialOnce(PeerAddr{URL: a.URL()}); l != nil || !errors.As(err, &pc) || pc.Code != CloseUntrusted {
		t.Fatalf("revoked id with a new key: link=%v err=%v", l != nil, err)
	}
	// A gossip round from b: its entry, announced after it stored x's,
	// reaches a behind x's, so once a has it, a has judged x's.
	b.SetCapabilities(Capabilities{Tags: []string{"round"}})
	waitUntil(t, a, 5*time.Second, "b's entry after x's", func() bool {
		p, ok := a.Peer("b")
		return ok && slices.Contains(p.Tags, "round")
	})
	if _, ok := a.Peer("x"); ok {
		t.Fatal("a lists the revoked node")
	}
	x.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := a.Call(ctx, "x", "echo", nil); err == nil {
		t.Fatal("a reached the revoked node")
	}
	stillServes(t, b, a)
}

// revokingTrust pins on first use and refuses revoked ids, as the
// known-nodes store does.
type revokingTrust struct {
	memoryTrust
	revoked map[string]bool
}

func (r *revokingTrust) Admit(id string, key ed25519.PublicKey) error {
	if r.revoked[id] {
		return errors.New("node " + id + " is revoked")
	}
	return r.memoryTrust.Admit(id, key)
}

// A node off a stream's route cannot end it by claiming to have dropped
// one of its frames.
func TestAttackLostNoticeFromOffRoute(t *testing.T) {
	a, b, c := line(t, nil)
	s, _ := openHanging(t, a, c)
	m := rawDial(t, a.URL(), "mallory")
	m.login()
	waitUntil(t, a, 5*time.Second, "mallory linked", func() bool { _, ok := a.Peer("mallory"); return ok })
	m.sendFrame(streamFrame(typeLost, "mallory", "a", streamMsg{S: s.id, P: "c", E: &RemoteError{Code: CodeUnavailable, Message: "dropped"}}))
	// a's reader handles mallory's frames in order: once the pong is back,
	// the notice has been handled.
	marker := []byte{0, 0, 0, 0, 0, 0, 0, 42}
	m.sendFrame(&Frame{Type: typePing, Payload: marker})
	for {
		f, err := m.read()
		if err != nil {
			t.Fatal(err)
		}
		if f.Type == typePong && bytes.Equal(f.Payload, marker) {
			break
		}
	}
	s.mu.Lock()
	finished := s.finished
	s.mu.Unlock()
	if finished {
		t.Fatal("a lost notice from a node off the route ended the stream")
	}
	stillServes(t, b, a)
	stillServes(t, a, c)
}

// A topology entry over the size budget closes the link that brought it.
func TestAttackEntryOverBudget(t *testing.T) {
	a, b := pair(t)
	m := rawDial(t, b.URL(), "mallory")
	m.login()
	big := make([]byte, 70<<10)
	m.sendFrame(&Frame{Type: typePeerSync, Payload: appendPeerSync(nil, [][]byte{big})[1:]})
	if code, reason := m.closeFrame(); code != CloseProtocol || !strings.Contains(reason, "budget") {
		t.Fatalf("closed with %d %q, want %d naming the budget", code, reason, CloseProtocol)
	}
	stillServes(t, a, b)
}
