package mesh

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// Close codes sent in the WebSocket close frame when a link is refused or
// ended. The reason text never contains the secret.
const (
	// CloseShutdown: the node is shutting down.
	CloseShutdown = 4000
	// CloseBadProof: the HMAC proof of the secret did not verify.
	CloseBadProof = 4001
	// CloseDuplicateNode: a different, live node already holds this node id
	// (its link answered a liveness probe). A restarted node is not refused:
	// its old link fails the probe and is replaced (CloseReplaced).
	CloseDuplicateNode = 4002
	// CloseAuthTimeout: the handshake did not complete within AuthTimeout.
	CloseAuthTimeout = 4003
	// CloseProtocol: a malformed frame, or a frame that is not allowed now
	// (anything but the handshake before auth, a handshake frame after it).
	CloseProtocol = 4004
	// CloseReplayedNonce: the handshake reused a nonce seen before.
	CloseReplayedNonce = 4005
	// CloseFrameTooLarge: a frame exceeded MaxFrameBytes.
	CloseFrameTooLarge = 4006
	// CloseSlowPeer: the peer did not take frames fast enough (write
	// timeout or queue overflow).
	CloseSlowPeer = 4007
	// CloseReplaced: a newer link from the same node id replaced this one
	// (the node reconnected or restarted).
	CloseReplaced = 4008
	// CloseDead: nothing was received for DeadAfter (missed pongs).
	CloseDead = 4009
	// CloseWrongNode: the peer is not the node expected (PeerAddr.NodeID
	// mismatch, or a node dialing itself).
	CloseWrongNode = 4010
	// CloseDuplicateLink: both nodes dialed each other at once; the link
	// dialed by the node with the smaller id is kept, the other is closed.
	CloseDuplicateLink = 4011
)

// closeReasons gives the default reason text per code.
var closeReasons = map[int]string{
	CloseShutdown:      "node shutting down",
	CloseBadProof:      "authentication failed: bad proof (check that both nodes use the same secret)",
	CloseDuplicateNode: "duplicate node id: a live node with this id is already connected",
	CloseAuthTimeout:   "authentication timed out",
	CloseProtocol:      "protocol violation",
	CloseReplayedNonce: "replayed handshake nonce",
	CloseFrameTooLarge: "frame too large",
	CloseSlowPeer:      "slow peer: write queue overflow or write timeout",
	CloseReplaced:      "replaced by a newer link from the same node",
	CloseDead:          "no traffic within the dead-after interval",
	CloseWrongNode:     "unexpected node id",
	CloseDuplicateLink: "duplicate link: keeping the one dialed by the smaller node id",
}

// protoVersion is the handshake protocol version; a peer speaking another one
// is refused with CloseProtocol.
const protoVersion = 1

const nonceLen = 32

// challengePayload is the listener's auth_challenge.
type challengePayload struct {
	Proto  int    `json:"proto"`
	NodeID string `json:"nodeId"`
	Nonce  string `json:"nonce"`
}

// authPayload is the dialer's auth answer.
type authPayload struct {
	Proto  int    `json:"proto"`
	NodeID string `json:"nodeId"`
	// Nonce is the dialer's own fresh nonce, which the listener proves over.
	Nonce string `json:"nonce"`
	Proof string `json:"proof"`
	// Incarnation identifies this run of the node (its start time); a
	// restarted node has a new one.
	Incarnation uint64       `json:"incarnation"`
	Caps        Capabilities `json:"caps"`
}

// authOKPayload is the listener's answer to a valid auth.
type authOKPayload struct {
	NodeID      string       `json:"nodeId"`
	Proof       string       `json:"proof"`
	Incarnation uint64       `json:"incarnation"`
	Caps        Capabilities `json:"caps"`
}

const (
	roleDialer   = "dialer"
	roleListener = "listener"
)

func newNonce() string {
	var b [nonceLen]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func validNonce(s string) bool {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return err == nil && len(b) == nonceLen
}

// computeProof binds the nonce to the role of the prover and to both node ids
// in order (prover, verifier), so a proof cannot be reflected back, reused
// for another pair of nodes, or replayed against another nonce.
func computeProof(secret, role, nonce, prover, verifier string) string {
	m := hmac.New(sha256.New, []byte(secret))
	// Length-prefix each field so no two different tuples hash alike.
	for _, s := range []string{"clawmatrix-mesh-v1", role, nonce, prover, verifier} {
		fmt.Fprintf(m, "%d:%s|", len(s), s)
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func checkProof(secret, role, nonce, prover, verifier, proof string) bool {
	want := computeProof(secret, role, nonce, prover, verifier)
	return hmac.Equal([]byte(want), []byte(proof))
}

// authError is a handshake failure with the close code to send.
type authError struct {
	code   int
	reason string
}

func (e *authError) Error() string { return fmt.Sprintf("%s (close %d)", e.reason, e.code) }

// authFail builds a handshake failure; an empty format takes the code's
// default reason, so no refusal ever closes without saying why.
func authFail(code int, format string, args ...any) error {
	if format == "" {
		return &authError{code: code, reason: closeReasons[code]}
	}
	return &authError{code: code, reason: fmt.Sprintf(format, args...)}
}

func closeCodeOf(err error) int {
	var ae *authError
	if errors.As(err, &ae) {
		return ae.code
	}
	return CloseProtocol
}

// parseChallenge checks an auth_challenge frame from a listener.
func parseChallenge(f *Frame) (*challengePayload, error) {
	if f.Type != typeAuthChallenge {
		return nil, authFail(CloseProtocol, "expected %s, got %q", typeAuthChallenge, f.Type)
	}
	var p challengePayload
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		return nil, authFail(CloseProtocol, "bad %s payload: %v", typeAuthChallenge, err)
	}
	if p.Proto != protoVersion {
		return nil, authFail(CloseProtocol, "peer speaks handshake version %d, this node speaks %d", p.Proto, protoVersion)
	}
	if err := checkNodeID(p.NodeID); err != nil {
		return nil, authFail(CloseProtocol, "bad node id in %s: %v", typeAuthChallenge, err)
	}
	if p.NodeID != f.From {
		return nil, authFail(CloseProtocol, "%s from %q names node %q", typeAuthChallenge, f.From, p.NodeID)
	}
	if !validNonce(p.Nonce) {
		return nil, authFail(CloseProtocol, "bad nonce in %s", typeAuthChallenge)
	}
	return &p, nil
}

// parseAuth checks the shape of a dialer's auth frame; the proof is checked
// by the caller, which knows the secret and its nonce.
func parseAuth(f *Frame) (*authPayload, error) {
	if f.Type != typeAuth {
		return nil, authFail(CloseProtocol, "expected %s, got %q", typeAuth, f.Type)
	}
	var p authPayload
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		return nil, authFail(CloseProtocol, "bad %s payload: %v", typeAuth, err)
	}
	if p.Proto != protoVersion {
		return nil, authFail(CloseProtocol, "peer speaks handshake version %d, this node speaks %d", p.Proto, protoVersion)
	}
	if err := checkNodeID(p.NodeID); err != nil {
		return nil, authFail(CloseProtocol, "bad node id in %s: %v", typeAuth, err)
	}
	if p.NodeID != f.From {
		return nil, authFail(CloseProtocol, "%s from %q names node %q", typeAuth, f.From, p.NodeID)
	}
	if !validNonce(p.Nonce) {
		return nil, authFail(CloseProtocol, "bad nonce in %s", typeAuth)
	}
	if p.Proof == "" {
		return nil, authFail(CloseProtocol, "missing proof in %s", typeAuth)
	}
	return &p, nil
}

// parseAuthOK checks the shape of a listener's auth_ok frame.
func parseAuthOK(f *Frame) (*authOKPayload, error) {
	if f.Type != typeAuthOK {
		return nil, authFail(CloseProtocol, "expected %s, got %q", typeAuthOK, f.Type)
	}
	var p authOKPayload
	if err := json.Unmarshal(f.Payload, &p); err != nil {
		return nil, authFail(CloseProtocol, "bad %s payload: %v", typeAuthOK, err)
	}
	if p.NodeID != f.From {
		return nil, authFail(CloseProtocol, "%s from %q names node %q", typeAuthOK, f.From, p.NodeID)
	}
	if p.Proof == "" {
		return nil, authFail(CloseProtocol, "missing proof in %s", typeAuthOK)
	}
	return &p, nil
}

// nonceCache remembers recently seen nonces in bounded memory (a ring with
// a set), so a recorded handshake cannot be replayed.
type nonceCache struct {
	mu   sync.Mutex
	set  map[string]struct{}
	ring []string
	next int
}

func newNonceCache(size int) *nonceCache {
	return &nonceCache{set: make(map[string]struct{}, size), ring: make([]string, size)}
}

// seen reports whether nonce was recorded before.
func (c *nonceCache) seen(nonce string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.set[nonce]
	return ok
}

// add records nonce and reports false if it was already there.
func (c *nonceCache) add(nonce string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.set[nonce]; ok {
		return false
	}
	if old := c.ring[c.next]; old != "" {
		delete(c.set, old)
	}
	c.ring[c.next] = nonce
	c.next = (c.next + 1) % len(c.ring)
	c.set[nonce] = struct{}{}
	return true
}
