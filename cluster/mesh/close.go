package mesh

import (
	"errors"
	"fmt"
)

// Close codes sent in the WebSocket close frame when a link is refused or
// ended. The reason text never contains the secret. Codes are part of the
// wire protocol (docs/PROTOCOL.md, "Close codes"): append, never reuse.
const (
	// CloseShutdown: the node is shutting down.
	CloseShutdown = 4000
	// CloseBadProof: the handshake failed its pre-shared key check: the
	// two nodes do not share the secret.
	CloseBadProof = 4001
	// CloseDuplicateNode: a different, live node already holds this node id
	// (its link answered a liveness probe). A restarted node is not refused:
	// its old link fails the probe and is replaced (CloseReplaced).
	CloseDuplicateNode = 4002
	// CloseAuthTimeout: the handshake did not complete within AuthTimeout.
	CloseAuthTimeout = 4003
	// CloseProtocol: a malformed frame, or a frame that is not allowed now.
	CloseProtocol = 4004
	// 4005 was "replayed handshake nonce" in protocol v1; not reused.

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
	// CloseUntrusted: the peer's node key is not accepted for its id: a
	// different key is pinned, the id or key is revoked, or strict trust
	// does not list it.
	CloseUntrusted = 4012
	// CloseVersion: the peer speaks another mesh protocol version.
	CloseVersion = 4013
	// CloseDecrypt: a record failed authentication (a flipped or injected
	// byte on the wire).
	CloseDecrypt = 4014
	// CloseFlood: the peer kept opening requests past its share after as
	// many refusals as the share allows.
	CloseFlood = 4015
)

// closeReasons gives the default reason text per code.
var closeReasons = map[int]string{
	CloseShutdown:      "node shutting down",
	CloseBadProof:      "authentication failed: check that both nodes use the same secret",
	CloseDuplicateNode: "duplicate node id: a live node with this id is already connected",
	CloseAuthTimeout:   "authentication timed out",
	CloseProtocol:      "protocol violation",
	CloseFrameTooLarge: "frame too large",
	CloseSlowPeer:      "slow peer: write queue overflow or write timeout",
	CloseReplaced:      "replaced by a newer link from the same node",
	CloseDead:          "no traffic within the dead-after interval",
	CloseWrongNode:     "unexpected node id",
	CloseDuplicateLink: "duplicate link: keeping the one dialed by the smaller node id",
	CloseUntrusted:     "node key not trusted for this node id",
	CloseVersion:       "mesh protocol version mismatch",
	CloseDecrypt:       "record failed authentication",
	CloseFlood:         "too many requests past this peer's share",
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

func reasonOf(err error) string {
	var ae *authError
	if errors.As(err, &ae) {
		return ae.reason
	}
	return err.Error()
}
