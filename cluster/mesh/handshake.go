package mesh

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/flynn/noise"
	"github.com/gorilla/websocket"
)

// The link handshake (docs/PROTOCOL.md, "Link handshake") is
// Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s inside WebSocket binary messages:
//
//	dialer   -> e
//	listener <- e, ee, s, es        payload: listener hello
//	dialer   -> s, se, psk          payload: dialer hello
//	listener <- welcome (first transport record)
//
// Each hello names the node id and its Ed25519 node key, with the node
// key's signature over the Noise static key, so the link is bound to the
// node identity; the pre-shared key (from the secret) is mixed in the third
// message, so only a secret holder completes it. The dialer takes the link
// as up when the welcome decrypts: proof that the listener holds the
// pre-shared key too.

// ProtocolVersion is the mesh protocol this node speaks.
const ProtocolVersion = 2

// subprotocol is offered in the WebSocket upgrade; a listener that does not
// select it speaks another version.
const subprotocol = "clawmatrix.v2"

// noisePrologue binds the handshake to the protocol version.
const noisePrologue = "clawmatrix/2 link"

// maxHandshakeBytes bounds handshake messages and the welcome (which
// carries capabilities).
const maxHandshakeBytes = 256 << 10

// hello is a side's identity in the handshake.
type hello struct {
	Version int    `json:"v"`
	NodeID  string `json:"id"`
	Key     []byte `json:"key"` // Ed25519 node key
	Sig     []byte `json:"sig"` // node key's signature over the Noise static key
	// The dialer's incarnation and capabilities ride in its hello (the
	// listener's in the welcome, once the dialer has proved the secret).
	Incarnation uint64        `json:"inc,omitempty"`
	Caps        *Capabilities `json:"caps,omitempty"`
}

// welcome is the listener's first transport frame.
type welcome struct {
	Incarnation uint64       `json:"inc"`
	Caps        Capabilities `json:"caps"`
}

// linkKeys is the outcome of a handshake: the peer's identity and the two
// cipher states of the link.
type linkKeys struct {
	peer       string
	key        ed25519.PublicKey
	static     []byte
	send, recv *noise.CipherState
	inc        uint64
	caps       Capabilities
}

func (n *Node) newHandshake(initiator bool) (*noise.HandshakeState, error) {
	return noise.NewHandshakeState(noise.Config{
		CipherSuite:           cipherSuite,
		Pattern:               noise.HandshakeXX,
		Initiator:             initiator,
		Prologue:              []byte(noisePrologue),
		StaticKeypair:         n.static,
		PresharedKey:          n.psk(),
		PresharedKeyPlacement: 3,
	})
}

func (n *Node) myHello(withCaps bool) []byte {
	h := hello{Version: ProtocolVersion, NodeID: n.id, Key: n.pub, Sig: n.staticSig}
	if withCaps {
		n.mu.Lock()
		caps := cloneCaps(n.caps)
		n.mu.Unlock()
		h.Incarnation, h.Caps = n.inc, &caps
	}
	b, _ := json.Marshal(h)
	return b
}

// checkHello verifies a peer's hello against the Noise static key it used
// and asks Trust whether its node key may speak for its id.
func (n *Node) checkHello(raw, static []byte) (*hello, error) {
	var h hello
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, authFail(CloseProtocol, "malformed hello: %v", err)
	}
	if h.Version != ProtocolVersion {
		return nil, authFail(CloseVersion, "peer speaks mesh protocol %d, this node speaks %d: run the same clawmatrix version on every node", h.Version, ProtocolVersion)
	}
	if err := checkNodeID(h.NodeID); err != nil {
		return nil, authFail(CloseProtocol, "bad node id in hello: %v", err)
	}
	if !verifyStatic(h.Key, static, h.Sig) {
		return nil, authFail(CloseUntrusted, "node %q did not prove its node key", h.NodeID)
	}
	if h.NodeID == n.id {
		return &h, authFail(CloseWrongNode, "node %q dialed itself", n.id)
	}
	if err := n.trust.Admit(h.NodeID, ed25519.PublicKey(h.Key)); err != nil {
		// The full story (both fingerprints, the command to re-pin) goes to
		// this node's log; the close reason has room for 123 bytes only.
		n.log.Error("mesh: refused a node key", "peer", h.NodeID, "key", identity.Fingerprint(h.Key), "err", err)
		return &h, authFail(CloseUntrusted, "node key %s refused for %q; the refusing node's log says why", identity.Fingerprint(h.Key)[:19], h.NodeID)
	}
	if h.Caps != nil {
		if err := checkCaps(h.Caps); err != nil {
			return &h, authFail(CloseProtocol, "capabilities of %q: %v", h.NodeID, err)
		}
		sanitizeCaps(h.Caps)
	}
	return &h, nil
}

// readHandshakeMsg reads one binary message during the handshake.
func (n *Node) readHandshakeMsg(conn *websocket.Conn) ([]byte, error) {
	mt, r, err := conn.NextReader()
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, authFail(CloseAuthTimeout, "no handshake within %v", n.cfg.AuthTimeout)
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return nil, &peerClosedError{code: ce.Code, reason: ce.Text}
		}
		return nil, fmt.Errorf("mesh: handshake read: %w", err)
	}
	data, err := readLimited(r, nil, maxHandshakeBytes)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			return nil, authFail(CloseFrameTooLarge, "handshake message larger than %d bytes", maxHandshakeBytes)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, authFail(CloseAuthTimeout, "no handshake within %v", n.cfg.AuthTimeout)
		}
		return nil, fmt.Errorf("mesh: handshake read: %w", err)
	}
	if mt != websocket.BinaryMessage {
		return nil, authFail(CloseVersion, "peer sent a text frame during the handshake: it speaks mesh protocol v1; upgrade clawmatrix on every node to protocol v%d", ProtocolVersion)
	}
	return data, nil
}

func (n *Node) writeHandshakeMsg(conn *websocket.Conn, msg []byte) error {
	_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.AuthTimeout))
	return conn.WriteMessage(websocket.BinaryMessage, msg)
}

// acceptHandshake runs the listener side and returns the registered link,
// with the welcome queued as its first frame.
func (n *Node) acceptHandshake(conn *websocket.Conn) (*link, error) {
	deadline := time.Now().Add(n.cfg.AuthTimeout)
	_ = conn.SetReadDeadline(deadline)
	if conn.Subprotocol() != subprotocol {
		return nil, authFail(CloseVersion, "this node speaks mesh protocol v%d and the peer did not offer it (an older clawmatrix?): run the same clawmatrix version on every node", ProtocolVersion)
	}
	hs, err := n.newHandshake(false)
	if err != nil {
		return nil, fmt.Errorf("mesh: handshake: %w", err)
	}
	msg1, err := n.readHandshakeMsg(conn)
	if err != nil {
		return nil, err
	}
	if _, _, _, err := hs.ReadMessage(nil, msg1); err != nil {
		return nil, authFail(CloseProtocol, "malformed handshake message")
	}
	msg2, _, _, err := hs.WriteMessage(nil, n.myHello(false))
	if err != nil {
		return nil, fmt.Errorf("mesh: handshake: %w", err)
	}
	if err := n.writeHandshakeMsg(conn, msg2); err != nil {
		return nil, fmt.Errorf("mesh: handshake write: %w", err)
	}
	msg3, err := n.readHandshakeMsg(conn)
	if err != nil {
		return nil, err
	}
	payload, recv, send, err := hs.ReadMessage(nil, msg3)
	if err != nil {
		// Decryption fails when the dialer mixed another pre-shared key.
		return nil, authFail(CloseBadProof, "")
	}
	h, err := n.checkHello(payload, hs.PeerStatic())
	if err != nil {
		return nil, err
	}
	if h.Caps == nil {
		return nil, authFail(CloseProtocol, "the dialer's hello has no capabilities")
	}
	keys := &linkKeys{peer: h.NodeID, key: h.Key, static: hs.PeerStatic(), send: send, recv: recv, inc: h.Incarnation, caps: *h.Caps}
	l := n.newLink(conn, false, keys)
	n.mu.Lock()
	w := welcome{Incarnation: n.inc, Caps: cloneCaps(n.caps)}
	n.mu.Unlock()
	wb, _ := json.Marshal(w)
	// The welcome goes first in the queue, ahead of the gossip that
	// registering queues; the writer sends it once the link starts.
	if err := l.q.pushCtrl(encodeFrame(&Frame{Type: typeWelcome, Payload: wb})); err != nil {
		return nil, err
	}
	if time.Now().After(deadline) {
		return nil, authFail(CloseAuthTimeout, "")
	}
	if err := n.register(l); err != nil {
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	return l, nil
}

// dialHandshake runs the dialer side. It returns the peer's id when it
// learned it, and the registered link on success.
func (n *Node) dialHandshake(conn *websocket.Conn, pa PeerAddr) (string, *link, error) {
	deadline := time.Now().Add(n.cfg.AuthTimeout)
	_ = conn.SetReadDeadline(deadline)
	if conn.Subprotocol() != subprotocol {
		// A v1 listener ignores the offer and sends its JSON challenge.
		return "", nil, authFail(CloseVersion, "%s does not speak mesh protocol v%d (an older clawmatrix?): run the same clawmatrix version on every node", pa.URL, ProtocolVersion)
	}
	hs, err := n.newHandshake(true)
	if err != nil {
		return "", nil, fmt.Errorf("mesh: handshake: %w", err)
	}
	msg1, _, _, err := hs.WriteMessage(nil, nil)
	if err != nil {
		return "", nil, fmt.Errorf("mesh: handshake: %w", err)
	}
	if err := n.writeHandshakeMsg(conn, msg1); err != nil {
		return "", nil, fmt.Errorf("mesh: handshake write: %w", err)
	}
	msg2, err := n.readHandshakeMsg(conn)
	if err != nil {
		return "", nil, err
	}
	payload, _, _, err := hs.ReadMessage(nil, msg2)
	if err != nil {
		return "", nil, authFail(CloseProtocol, "malformed handshake message")
	}
	h, err := n.checkHello(payload, hs.PeerStatic())
	if h != nil && h.NodeID == n.id {
		return h.NodeID, nil, authFail(CloseWrongNode, "%s is this node itself", pa.URL)
	}
	if err != nil {
		if h != nil {
			return h.NodeID, nil, err
		}
		return "", nil, err
	}
	peer := h.NodeID
	if pa.NodeID != "" && pa.NodeID != peer {
		return peer, nil, authFail(CloseWrongNode, "expected node %q at %s, found %q", pa.NodeID, pa.URL, peer)
	}
	msg3, send, recv, err := hs.WriteMessage(nil, n.myHello(true))
	if err != nil {
		return peer, nil, fmt.Errorf("mesh: handshake: %w", err)
	}
	if err := n.writeHandshakeMsg(conn, msg3); err != nil {
		return peer, nil, fmt.Errorf("mesh: handshake write: %w", err)
	}
	// The welcome may span several records (large capabilities).
	var welcomeFrame []byte
	for {
		rec, err := n.readHandshakeMsg(conn)
		if err != nil {
			return peer, nil, err
		}
		pt, err := recv.Decrypt(nil, nil, rec)
		if err != nil || len(pt) < 1 || pt[0] > recordMore {
			return peer, nil, authFail(CloseProtocol, "the listener's first record did not decrypt")
		}
		if len(welcomeFrame)+len(pt)-1 > maxHandshakeBytes {
			return peer, nil, authFail(CloseFrameTooLarge, "welcome larger than %d bytes", maxHandshakeBytes)
		}
		welcomeFrame = append(welcomeFrame, pt[1:]...)
		if pt[0] == recordFinal {
			break
		}
	}
	f, err := decodeFrame(welcomeFrame)
	if err != nil || f.Type != typeWelcome {
		return peer, nil, authFail(CloseProtocol, "expected a welcome from the listener")
	}
	var w welcome
	if err := json.Unmarshal(f.Payload, &w); err != nil {
		return peer, nil, authFail(CloseProtocol, "malformed welcome: %v", err)
	}
	if err := checkCaps(&w.Caps); err != nil {
		return peer, nil, authFail(CloseProtocol, "capabilities of %q: %v", peer, err)
	}
	sanitizeCaps(&w.Caps)
	keys := &linkKeys{peer: peer, key: h.Key, static: hs.PeerStatic(), send: send, recv: recv, inc: w.Incarnation, caps: w.Caps}
	l := n.newLink(conn, true, keys)
	if err := n.register(l); err != nil {
		return peer, nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	return peer, l, nil
}
