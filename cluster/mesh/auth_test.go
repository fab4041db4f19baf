package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawPeer is a hand-driven client for protocol tests: it speaks the wire
// format directly so tests can send what a real node never would.
type rawPeer struct {
	t    *testing.T
	id   string
	conn *websocket.Conn
}

func rawDial(t *testing.T, url, id string) *rawPeer {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &rawPeer{t: t, id: id, conn: conn}
}

func (p *rawPeer) read() (*Frame, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := p.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	return decodeFrame(data)
}

func (p *rawPeer) send(typ string, payload any) {
	p.t.Helper()
	raw, err := json.Marshal(payload)
	if err != nil {
		p.t.Fatal(err)
	}
	p.sendFrame(&Frame{Type: typ, ID: newNonce()[:8], From: p.id, Timestamp: time.Now().UnixMilli(), Payload: raw})
}

func (p *rawPeer) sendFrame(f *Frame) {
	p.t.Helper()
	p.sendRaw(encodeFrame(f))
}

func (p *rawPeer) sendRaw(data []byte) {
	p.t.Helper()
	_ = p.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := p.conn.WriteMessage(websocket.TextMessage, data); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// challenge reads the listener's auth_challenge.
func (p *rawPeer) challenge() *challengePayload {
	p.t.Helper()
	f, err := p.read()
	if err != nil {
		p.t.Fatalf("read challenge: %v", err)
	}
	ch, err := parseChallenge(f)
	if err != nil {
		p.t.Fatalf("challenge: %v", err)
	}
	return ch
}

// authPayloadFor builds a valid auth answer to ch.
func (p *rawPeer) authPayloadFor(ch *challengePayload, secret string) authPayload {
	return authPayload{
		Proto:       protoVersion,
		NodeID:      p.id,
		Nonce:       newNonce(),
		Proof:       computeProof(secret, roleDialer, ch.Nonce, p.id, ch.NodeID),
		Incarnation: uint64(time.Now().UnixNano()),
	}
}

// login completes a valid handshake and returns the auth_ok frame.
func (p *rawPeer) login() *Frame {
	p.t.Helper()
	ch := p.challenge()
	ap := p.authPayloadFor(ch, testSecret)
	p.send(typeAuth, ap)
	f, err := p.read()
	if err != nil {
		p.t.Fatalf("read auth_ok: %v", err)
	}
	ok, err := parseAuthOK(f)
	if err != nil {
		p.t.Fatalf("auth_ok: %v", err)
	}
	if !checkProof(testSecret, roleListener, ap.Nonce, ch.NodeID, p.id, ok.Proof) {
		p.t.Fatal("listener's proof does not verify")
	}
	return f
}

// closeCode reads until the connection ends and returns the close code the
// node sent (0 if it closed without one).
func (p *rawPeer) closeCode() int {
	p.t.Helper()
	code, _ := p.closeFrame()
	return code
}

// closeFrame reads until the node closes the connection and returns the
// close code and reason it sent (0 and "" when it closed without a frame).
func (p *rawPeer) closeFrame() (int, string) {
	p.t.Helper()
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := p.conn.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, ce.Text
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			p.t.Fatal("connection still open after 5s")
		}
		return 0, ""
	}
}

// stillServes checks that the node answers its real peers.
func stillServes(t *testing.T, from, to *Node) {
	t.Helper()
	to.Handle("echo", echoHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, err := from.Call(ctx, to.ID(), "echo", []byte("ok")); err != nil || string(got) != from.ID()+":ok" {
		t.Fatalf("%s->%s after the attack: %q %v", from.ID(), to.ID(), got, err)
	}
}

func pair(t *testing.T) (*Node, *Node) {
	ns := startNodes(t, "a", "b")
	dial(t, ns[0], ns[1])
	waitAll(t, ns, 5*time.Second)
	return ns[0], ns[1]
}

func TestHandshakeOK(t *testing.T) {
	_, b := pair(t)
	p := rawDial(t, b.URL(), "raw")
	f := p.login()
	var ok authOKPayload
	_ = json.Unmarshal(f.Payload, &ok)
	if ok.NodeID != "b" || ok.Incarnation == 0 {
		t.Fatalf("auth_ok %+v", ok)
	}
	waitUntil(t, b, 5*time.Second, "raw linked", func() bool { _, ok := b.Peer("raw"); return ok })
	// The secret appears nowhere in what the node sent.
	if strings.Contains(string(f.Payload), testSecret) {
		t.Fatal("secret on the wire")
	}
}

func TestHandshakeRefusals(t *testing.T) {
	cases := []struct {
		name string
		code int
		run  func(p *rawPeer)
	}{
		{"wrong secret", CloseBadProof, func(p *rawPeer) {
			ch := p.challenge()
			p.send(typeAuth, p.authPayloadFor(ch, "another-secret-0123456789"))
		}},
		{"proof for another listener", CloseBadProof, func(p *rawPeer) {
			ch := p.challenge()
			ap := p.authPayloadFor(ch, testSecret)
			ap.Proof = computeProof(testSecret, roleDialer, ch.Nonce, p.id, "someone-else")
			p.send(typeAuth, ap)
		}},
		{"reflected listener role", CloseBadProof, func(p *rawPeer) {
			ch := p.challenge()
			ap := p.authPayloadFor(ch, testSecret)
			ap.Proof = computeProof(testSecret, roleListener, ch.Nonce, p.id, ch.NodeID)
			p.send(typeAuth, ap)
		}},
		{"dialer reuses the challenge nonce", CloseReplayedNonce, func(p *rawPeer) {
			ch := p.challenge()
			ap := p.authPayloadFor(ch, testSecret)
			ap.Nonce = ch.Nonce
			p.send(typeAuth, ap)
		}},
		{"frame before auth", CloseProtocol, func(p *rawPeer) {
			p.challenge()
			p.send(typePing, pingPayload{T: 1})
		}},
		{"garbage before auth", CloseProtocol, func(p *rawPeer) {
			p.challenge()
			p.sendRaw([]byte("\x00\x01 not json {"))
		}},
		{"binary before auth", CloseProtocol, func(p *rawPeer) {
			p.challenge()
			_ = p.conn.WriteMessage(websocket.BinaryMessage, []byte("{}"))
		}},
		{"from does not match node id", CloseProtocol, func(p *rawPeer) {
			ch := p.challenge()
			ap := p.authPayloadFor(ch, testSecret)
			ap.NodeID = "other"
			p.send(typeAuth, ap)
		}},
		{"dials itself", CloseWrongNode, func(p *rawPeer) {
			ch := p.challenge()
			p.id = ch.NodeID
			p.send(typeAuth, p.authPayloadFor(ch, testSecret))
		}},
		{"wrong protocol version", CloseProtocol, func(p *rawPeer) {
			ch := p.challenge()
			ap := p.authPayloadFor(ch, testSecret)
			ap.Proto = 99
			p.send(typeAuth, ap)
		}},
		{"oversized handshake", CloseFrameTooLarge, func(p *rawPeer) {
			p.challenge()
			p.sendRaw(make([]byte, maxHandshakeBytes+10))
		}},
	}
	a, b := pair(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := rawDial(t, b.URL(), "raw")
			tc.run(p)
			got, reason := p.closeFrame()
			if got != tc.code {
				t.Fatalf("close code %d (%q), want %d", got, reason, tc.code)
			}
			if reason == "" {
				t.Fatalf("close %d carries no reason", got)
			}
			if _, ok := b.Peer("raw"); ok {
				t.Fatal("refused peer is in the topology")
			}
		})
	}
	stillServes(t, a, b)
}

func TestReplayedHandshake(t *testing.T) {
	a, b := pair(t)
	// Record a genuine handshake...
	p1 := rawDial(t, b.URL(), "raw")
	ch1 := p1.challenge()
	ap := p1.authPayloadFor(ch1, testSecret)
	p1.send(typeAuth, ap)
	if _, err := p1.read(); err != nil {
		t.Fatal(err)
	}
	// ...and replay the same auth answer on a new connection.
	p2 := rawDial(t, b.URL(), "raw")
	p2.challenge()
	p2.send(typeAuth, ap)
	if got := p2.closeCode(); got != CloseReplayedNonce {
		t.Fatalf("replay: close code %d, want %d", got, CloseReplayedNonce)
	}
	// A fresh, valid proof that reuses the nonce is refused too.
	p3 := rawDial(t, b.URL(), "raw3")
	ch3 := p3.challenge()
	ap3 := p3.authPayloadFor(ch3, testSecret)
	ap3.Nonce = ap.Nonce
	p3.send(typeAuth, ap3)
	if got := p3.closeCode(); got != CloseReplayedNonce {
		t.Fatalf("reused nonce: close code %d, want %d", got, CloseReplayedNonce)
	}
	stillServes(t, a, b)
}

func TestSilenceBeforeAuth(t *testing.T) {
	cfg := testConfig("b")
	cfg.AuthTimeout = 200 * time.Millisecond
	b := startNode(t, cfg)
	p := rawDial(t, b.URL(), "raw")
	p.challenge()
	if got := p.closeCode(); got != CloseAuthTimeout {
		t.Fatalf("close code %d, want %d", got, CloseAuthTimeout)
	}
}

func TestDialerRefusesWrongNodeAndBadListener(t *testing.T) {
	a, b := pair(t)
	// Expecting another id at b's address.
	_, l, err := a.dialOnce(PeerAddr{URL: b.URL(), NodeID: "not-b"})
	if l != nil || closeCodeOf(err) != CloseWrongNode {
		t.Fatalf("dial with wrong expected id: %v", err)
	}
	// A listener that does not know the secret cannot pass as one.
	cfg := testConfig("fake")
	cfg.Secret = "another-secret-0123456789"
	fake := startNode(t, cfg)
	_, l, err = a.dialOnce(PeerAddr{URL: fake.URL()})
	var pc *peerClosedError
	if l != nil || !errors.As(err, &pc) || pc.code != CloseBadProof {
		t.Fatalf("dial to a node with another secret: %v", err)
	}
	if _, ok := a.Peer("fake"); ok {
		t.Fatal("fake node linked")
	}
}

func TestSpoofedFromDropped(t *testing.T) {
	a, b := pair(t)
	gotReq := make(chan string, 4)
	b.Handle("probe", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
		gotReq <- r.From
		return nil
	}))
	p := rawDial(t, b.URL(), "raw")
	p.login()
	waitUntil(t, b, 5*time.Second, "raw linked", func() bool { _, ok := b.Peer("raw"); return ok })
	req := func(from string) {
		payload, _ := json.Marshal(streamMsg{S: 1, M: "probe", W: 1})
		p.sendFrame(&Frame{Type: typeReq, ID: newNonce()[:10], From: from, To: "b", TTL: 4, Timestamp: 1, Payload: payload})
	}
	before := b.Stats().DroppedSpoofed
	req("nobody") // unknown node
	req("b")      // b itself
	req("a")      // a known node: allowed, as if relayed
	req("raw")    // the link's own peer
	var froms []string
	for len(froms) < 2 {
		select {
		case f := <-gotReq:
			froms = append(froms, f)
		case <-time.After(5 * time.Second):
			t.Fatalf("only %v reached the handler", froms)
		}
	}
	if got := b.Stats().DroppedSpoofed - before; got != 2 {
		t.Fatalf("dropped %d spoofed frames, want 2", got)
	}
	select {
	case f := <-gotReq:
		t.Fatalf("a spoofed request from %q reached the handler", f)
	default:
	}
	stillServes(t, a, b)
}

func TestGarbageAfterAuth(t *testing.T) {
	a, b := pair(t)
	for _, tc := range []struct {
		name string
		data []byte
		code int
	}{
		{"not json", []byte("garbage"), CloseProtocol},
		{"no type", []byte(`{"id":"1","from":"raw","timestamp":1}`), CloseProtocol},
		{"handshake again", nil, CloseProtocol},
		{"bad peer_sync", []byte(`{"type":"peer_sync","id":"1","from":"raw","timestamp":1,"payload":{"entries":[{"origin":""}]}}`), CloseProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := rawDial(t, b.URL(), "raw")
			p.login()
			if tc.data == nil {
				p.send(typeAuth, authPayload{})
			} else {
				p.sendRaw(tc.data)
			}
			if got := p.closeCode(); got != tc.code {
				t.Fatalf("close code %d, want %d", got, tc.code)
			}
		})
	}
	stillServes(t, a, b)
}

func TestOversizedFrame(t *testing.T) {
	cfg := testConfig("b")
	cfg.MaxFrameBytes = 64 << 10
	cfg.ChunkBytes = 16 << 10
	cfg.MaxQueueBytes = 1 << 20
	b := startNode(t, cfg)
	a := startNode(t, testConfig("a"))
	dial(t, a, b)
	waitAll(t, []*Node{a, b}, 5*time.Second) // a too, or stillServes may find no route yet
	p := rawDial(t, b.URL(), "raw")
	p.login()
	big := `{"type":"ping","id":"1","from":"raw","timestamp":1,"payload":{"pad":"` + strings.Repeat("x", 70<<10) + `"}}`
	p.sendRaw([]byte(big))
	if got := p.closeCode(); got != CloseFrameTooLarge {
		t.Fatalf("close code %d, want %d", got, CloseFrameTooLarge)
	}
	stillServes(t, a, b)
}

func TestManyIdleConnectionsBounded(t *testing.T) {
	cfg := testConfig("b")
	cfg.MaxPendingAuth = 8
	cfg.AuthTimeout = 500 * time.Millisecond
	b := startNode(t, cfg)
	a := startNode(t, testConfig("a"))
	dial(t, a, b)
	waitPeers(t, b, 5*time.Second, "a")

	// Raw TCP connections that never speak HTTP...
	var tcp []net.Conn
	for i := 0; i < 50; i++ {
		c, err := net.Dial("tcp", b.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		tcp = append(tcp, c)
	}
	defer func() {
		for _, c := range tcp {
			_ = c.Close()
		}
	}()
	// ...and WebSocket connections that never authenticate.
	var wsConns []*rawPeer
	refused := 0
	for i := 0; i < 20; i++ {
		d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		conn, resp, err := d.Dial(b.URL(), nil)
		if err != nil {
			if resp == nil || resp.StatusCode != 503 {
				t.Fatalf("dial %d: %v", i, err)
			}
			refused++
			continue
		}
		p := &rawPeer{t: t, id: "idle", conn: conn}
		t.Cleanup(func() { _ = conn.Close() })
		wsConns = append(wsConns, p)
	}
	if len(wsConns) != cfg.MaxPendingAuth || refused != 20-cfg.MaxPendingAuth {
		t.Fatalf("accepted %d, refused %d unauthenticated connections; want %d accepted", len(wsConns), refused, cfg.MaxPendingAuth)
	}
	stillServes(t, a, b) // the established link is unaffected
	var wg sync.WaitGroup
	codes := make([]int, len(wsConns))
	for i, p := range wsConns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := p.conn.ReadMessage(); err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						codes[i] = ce.Code
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != CloseAuthTimeout {
			t.Fatalf("idle connection %d closed with %d, want %d", i, c, CloseAuthTimeout)
		}
	}
	// The slots are free again: a new node can join.
	c := startNode(t, testConfig("c"))
	dial(t, c, b)
	waitPeers(t, b, 5*time.Second, "a", "c")
}

func TestProofBinding(t *testing.T) {
	base := computeProof(testSecret, roleDialer, "n", "a", "b")
	for name, other := range map[string]string{
		"secret":   computeProof(testSecret+"x", roleDialer, "n", "a", "b"),
		"role":     computeProof(testSecret, roleListener, "n", "a", "b"),
		"nonce":    computeProof(testSecret, roleDialer, "m", "a", "b"),
		"swapped":  computeProof(testSecret, roleDialer, "n", "b", "a"),
		"boundary": computeProof(testSecret, roleDialer, "n", "a|", "b"),
	} {
		if other == base {
			t.Errorf("proof does not depend on %s", name)
		}
	}
	if !checkProof(testSecret, roleDialer, "n", "a", "b", base) || checkProof(testSecret, roleDialer, "n", "a", "b", base[:len(base)-1]) {
		t.Fatal("checkProof")
	}
	if strings.Contains(base, testSecret) {
		t.Fatal("secret in proof")
	}
}

func TestNonceCacheBounded(t *testing.T) {
	c := newNonceCache(3)
	for _, n := range []string{"a", "b", "c"} {
		if !c.add(n) {
			t.Fatalf("fresh %s refused", n)
		}
	}
	if c.add("a") || !c.seen("b") {
		t.Fatal("replay accepted")
	}
	c.add("d") // evicts a
	if c.seen("a") || len(c.set) != 3 {
		t.Fatalf("cache not bounded: %v", c.set)
	}
}

// FuzzHandshake feeds arbitrary frames to both sides of the handshake: it
// never panics, never accepts a frame whose proof is not the HMAC of the
// secret, and never accepts the same nonce twice.
func FuzzHandshake(f *testing.F) {
	const challenge = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	valid, _ := json.Marshal(authPayload{Proto: 1, NodeID: "d", Nonce: "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB", Proof: computeProof(testSecret, roleDialer, challenge, "d", "l")})
	f.Add([]byte(encodeFrame(&Frame{Type: typeAuth, ID: "1", From: "d", Payload: valid})))
	f.Add([]byte(`{"type":"auth","id":"1","from":"d","timestamp":1,"payload":{"proto":1,"nodeId":"d","nonce":"x","proof":"y"}}`))
	f.Add([]byte(`{"type":"auth_challenge","id":"1","from":"l","timestamp":1,"payload":{"proto":1,"nodeId":"l","nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`))
	f.Add([]byte(`{"type":"auth_ok","id":"1","from":"l","timestamp":1,"payload":{"nodeId":"l","proof":"z","caps":{"tags":["a"]}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := testConfig("l")
		cfg.Logger = nil
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		fr, err := decodeFrame(data)
		if err != nil {
			return
		}
		_, _ = parseChallenge(fr)
		if ok, err := n.verifyAuthOK(fr, fr.From, challenge); err == nil {
			if ok.Proof != computeProof(testSecret, roleListener, challenge, fr.From, "l") {
				t.Fatalf("accepted a forged auth_ok proof")
			}
		}
		p, err := n.verifyAuth(fr, challenge)
		if err != nil {
			if closeCodeOf(err) == 0 {
				t.Fatalf("refusal without a close code: %v", err)
			}
			return
		}
		if p.Proof != computeProof(testSecret, roleDialer, challenge, p.NodeID, "l") {
			t.Fatalf("accepted a forged proof")
		}
		if _, err := n.verifyAuth(fr, challenge); closeCodeOf(err) != CloseReplayedNonce {
			t.Fatalf("replay accepted: %v", err)
		}
	})
}
