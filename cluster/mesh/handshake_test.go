package mesh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/flynn/noise"
	"github.com/gorilla/websocket"
)

// rawPeer speaks protocol v2 by hand, so tests can play a misbehaving or
// hostile node: wrong secret, forged frames, garbage after the handshake.
type rawPeer struct {
	t          *testing.T
	id         string
	priv       ed25519.PrivateKey
	static     noise.DHKey
	inc        uint64
	conn       *websocket.Conn
	send, recv *noise.CipherState
	peerStatic []byte
}

func rawDial(t *testing.T, url, id string) *rawPeer {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, Subprotocols: []string{subprotocol}}
	conn, _, err := d.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	static, _ := newStatic()
	return &rawPeer{t: t, id: id, priv: testKey(id), static: static, conn: conn, inc: 1}
}

// handshake runs the dialer side with secret; it returns the listener's
// hello, or the error that ended the handshake.
func (p *rawPeer) handshake(secret string) (*hello, error) {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite: cipherSuite, Pattern: noise.HandshakeXX, Initiator: true,
		Prologue: []byte(noisePrologue), StaticKeypair: p.static,
		PresharedKey: derivePSK(secret), PresharedKeyPlacement: 3,
	})
	if err != nil {
		return nil, err
	}
	msg1, _, _, _ := hs.WriteMessage(nil, nil)
	if err := p.conn.WriteMessage(websocket.BinaryMessage, msg1); err != nil {
		return nil, err
	}
	_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg2, err := p.conn.ReadMessage()
	if err != nil {
		return nil, err
	}
	payload, _, _, err := hs.ReadMessage(nil, msg2)
	if err != nil {
		return nil, err
	}
	var h hello
	if err := json.Unmarshal(payload, &h); err != nil {
		return nil, err
	}
	caps := Capabilities{}
	mine, _ := json.Marshal(hello{Version: ProtocolVersion, NodeID: p.id, Key: p.priv.Public().(ed25519.PublicKey), Sig: signStatic(p.priv, p.static.Public), Incarnation: p.inc, Caps: &caps})
	msg3, send, recv, err := hs.WriteMessage(nil, mine)
	if err != nil {
		return nil, err
	}
	p.send, p.recv, p.peerStatic = send, recv, hs.PeerStatic()
	if err := p.conn.WriteMessage(websocket.BinaryMessage, msg3); err != nil {
		return nil, err
	}
	f, err := p.read()
	if err != nil {
		return nil, err
	}
	if f.Type != typeWelcome {
		return nil, errors.New("first frame is not a welcome")
	}
	return &h, nil
}

// login completes the handshake with the cluster secret or fails the test.
func (p *rawPeer) login() {
	p.t.Helper()
	if _, err := p.handshake(testSecret); err != nil {
		p.t.Fatalf("handshake: %v", err)
	}
}

// read returns the next frame the node sent.
func (p *rawPeer) read() (*Frame, error) {
	for {
		_ = p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, rec, err := p.conn.ReadMessage()
		if err != nil {
			return nil, err
		}
		pt, err := p.recv.Decrypt(nil, nil, rec)
		if err != nil {
			return nil, err
		}
		if pt[0] != recordFinal {
			return nil, errors.New("fragmented frame")
		}
		return decodeFrame(pt[1:])
	}
}

// readUntil reads frames until one of type typ for stream s arrives, and
// returns its message.
func (p *rawPeer) readUntil(typ byte, s uint64) streamMsg {
	p.t.Helper()
	for {
		f, err := p.read()
		if err != nil {
			p.t.Fatalf("waiting for %s of stream %d: %v", typeName(typ), s, err)
		}
		var m streamMsg
		if f.Type == typ && f.Stream == s && decodeStreamMsg(f.Payload, &m) == nil {
			return m
		}
	}
}

// sendFrame sends f as one record.
func (p *rawPeer) sendFrame(f *Frame) {
	p.t.Helper()
	p.sendPlain(encodeFrame(f))
}

// sendPlain encrypts frame bytes as they are, in as many records as needed.
func (p *rawPeer) sendPlain(frame []byte) {
	p.t.Helper()
	for {
		k := min(len(frame), maxRecordPlain)
		kind := recordFinal
		if k < len(frame) {
			kind = recordMore
		}
		rec, err := p.send.Encrypt(nil, nil, append([]byte{kind}, frame[:k]...))
		if err != nil {
			p.t.Fatal(err)
		}
		p.sendRaw(rec)
		frame = frame[k:]
		if kind == recordFinal {
			return
		}
	}
}

// sendRaw writes one WebSocket binary message as it is.
func (p *rawPeer) sendRaw(data []byte) {
	p.t.Helper()
	if err := p.conn.WriteMessage(websocket.BinaryMessage, data); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

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

// reqFrame is a plain request frame from `from`, as a direct peer sends it.
func reqFrame(from, to, method string, stream uint64) *Frame {
	return &Frame{Type: typeReq, ID: stream, From: from, To: to, TTL: 4, Stream: stream,
		Payload: appendStreamMsg(nil, &streamMsg{M: method, W: 16})}
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
	h, err := p.handshake(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if h.NodeID != "b" || !ed25519.PublicKey(h.Key).Equal(b.PublicKey()) {
		t.Fatalf("listener hello %+v, want node b with its key", h)
	}
	waitUntil(t, b, 5*time.Second, "raw linked", func() bool { _, ok := b.Peer("raw"); return ok })
}

// An outsider without the secret gets no link, and learns why only as
// "check the secret".
func TestHandshakeWrongSecret(t *testing.T) {
	a, b := pair(t)
	p := rawDial(t, b.URL(), "raw")
	if _, err := p.handshake("another-secret-0123456789"); err == nil {
		t.Fatal("a handshake with the wrong secret succeeded")
	}
	if code := p.closeCode(); code != CloseBadProof {
		t.Fatalf("close code %d, want %d", code, CloseBadProof)
	}
	if _, ok := b.Peer("raw"); ok {
		t.Fatal("b lists the outsider as a peer")
	}
	stillServes(t, a, b)
}

// A node that presents another key for a pinned id is refused with
// CloseUntrusted and a reason naming both fingerprints.
func TestHandshakePinnedKeyMismatch(t *testing.T) {
	a, b := pair(t)
	p := rawDial(t, b.URL(), "a") // claims to be a, with another key
	_, p.priv, _ = ed25519.GenerateKey(rand.Reader)
	if _, err := p.handshake(testSecret); err == nil {
		t.Fatal("a second key for a pinned id was accepted")
	}
	code, reason := p.closeFrame()
	if code != CloseUntrusted || !strings.Contains(reason, identity.Fingerprint(p.priv.Public().(ed25519.PublicKey))[:19]) {
		t.Fatalf("closed with %d %q; want %d naming the offered key", code, reason, CloseUntrusted)
	}
	stillServes(t, a, b)
}

// A v1 dialer (no subprotocol, JSON text frames) is told to upgrade.
func TestHandshakeV1PeerRefused(t *testing.T) {
	_, b := pair(t)
	conn, _, err := websocket.DefaultDialer.Dial(b.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = conn.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != CloseVersion || !strings.Contains(ce.Text, "protocol v2") {
		t.Fatalf("v1 dialer got %v; want close %d naming protocol v2", err, CloseVersion)
	}
}

// Silence before the handshake ends in CloseAuthTimeout.
func TestSilenceBeforeAuth(t *testing.T) {
	cfg := testConfig("b")
	cfg.AuthTimeout = 300 * time.Millisecond
	b := startNode(t, cfg)
	p := rawDial(t, b.URL(), "raw")
	if code := p.closeCode(); code != CloseAuthTimeout {
		t.Fatalf("close code %d, want %d", code, CloseAuthTimeout)
	}
}

func TestGarbageAfterAuth(t *testing.T) {
	a, b := pair(t)
	for _, tc := range []struct {
		name string
		send func(p *rawPeer)
		code int
	}{
		{"not a record", func(p *rawPeer) { p.sendRaw([]byte("garbage that does not decrypt")) }, CloseDecrypt},
		{"empty frame", func(p *rawPeer) { p.sendPlain(nil) }, CloseProtocol},
		{"bad routed header", func(p *rawPeer) { p.sendPlain([]byte{typeReq, 1, 0, 0}) }, CloseProtocol},
		{"welcome again", func(p *rawPeer) { p.sendFrame(&Frame{Type: typeWelcome, Payload: []byte("{}")}) }, CloseProtocol},
		{"bad peer_sync", func(p *rawPeer) { p.sendFrame(&Frame{Type: typePeerSync, Payload: []byte{5, 1, 2}}) }, CloseProtocol},
		{"text message", func(p *rawPeer) { _ = p.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) }, CloseProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := rawDial(t, b.URL(), "raw")
			p.login()
			tc.send(p)
			if got := p.closeCode(); got != tc.code {
				t.Fatalf("close code %d, want %d", got, tc.code)
			}
		})
	}
	stillServes(t, a, b)
}

// A record or frame over the limits closes the link.
func TestOversizedFrame(t *testing.T) {
	cfg := testConfig("b")
	cfg.MaxFrameBytes = 64 << 10
	cfg.ChunkBytes = 16 << 10
	cfg.MaxQueueBytes = 1 << 20
	b := startNode(t, cfg)
	a := startNode(t, testConfig("a"))
	dial(t, a, b)
	waitAll(t, []*Node{a, b}, 5*time.Second)
	p := rawDial(t, b.URL(), "raw")
	p.login()
	// Two records of kind "more" and a final one: 3 x 60 KB > 64 KB.
	chunk := make([]byte, 60<<10)
	for i, kind := range []byte{recordMore, recordMore, recordFinal} {
		pt := append([]byte{kind}, chunk...)
		if i == 0 {
			pt[1] = typePing
		}
		rec, _ := p.send.Encrypt(nil, nil, pt)
		p.sendRaw(rec)
	}
	if got := p.closeCode(); got != CloseFrameTooLarge {
		t.Fatalf("close code %d, want %d", got, CloseFrameTooLarge)
	}
	stillServes(t, a, b)
}

// FuzzHandshake: whatever a dialer sends as its first two handshake
// messages, the listener refuses it cleanly (no panic, no link).
func FuzzHandshake(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add(make([]byte, 32), make([]byte, 96))
	f.Add([]byte("garbage"), []byte(`{"v":2}`))
	n, err := New(testConfig("b"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { n.Close() })
	f.Fuzz(func(t *testing.T, msg1, msg3 []byte) {
		hs, err := n.newHandshake(false)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := hs.ReadMessage(nil, msg1); err != nil {
			return
		}
		if _, _, _, err := hs.WriteMessage(nil, n.myHello(false)); err != nil {
			t.Fatal(err)
		}
		payload, _, _, err := hs.ReadMessage(nil, msg3)
		if err != nil {
			return
		}
		if _, err := n.checkHello(payload, hs.PeerStatic()); err == nil {
			t.Fatalf("a fuzzed dialer hello was accepted: %q", payload)
		}
	})
}

// A v2 dialer that reaches a v1 listener (no subprotocol, a JSON challenge
// in a text frame) is told to upgrade, with CloseVersion.
func TestHandshakeV1ListenerRefused(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.WriteMessage(websocket.TextMessage, []byte(`{"type":"auth_challenge","id":"1","from":"old","timestamp":1,"payload":{"proto":1,"nodeId":"old","nonce":"x"}}`))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, _ = c.ReadMessage()
	}))
	defer srv.Close()
	a := startNode(t, testConfig("a"))
	_, l, err := a.dialOnce(PeerAddr{URL: "ws" + strings.TrimPrefix(srv.URL, "http")})
	if l != nil || closeCodeOf(err) != CloseVersion || !strings.Contains(err.Error(), "protocol v2") {
		t.Fatalf("dial to a v1 listener: link=%v err=%v; want close %d naming protocol v2", l != nil, err, CloseVersion)
	}
}

// A welcome larger than one record (a listener offering many agents) spans
// several records and still brings the link up.
func TestLargeWelcomeSpansRecords(t *testing.T) {
	cfg := testConfig("b")
	for i := range 40 {
		cfg.Capabilities.Agents = append(cfg.Capabilities.Agents, AgentInfo{ID: fmt.Sprintf("agent-%d", i), Description: strings.Repeat("d", 2000)})
	}
	b := startNode(t, cfg)
	a := startNode(t, testConfig("a"))
	dial(t, a, b)
	waitUntil(t, a, 5*time.Second, "b's 40 agents", func() bool { p, ok := a.Peer("b"); return ok && len(p.Agents) == 40 })
}
