// Package transport is the seam that mesh links run over: a Transport dials
// and accepts Conns, ordered and reliable message-oriented connections
// (one WebSocket connection each, by default).
//
// Everything a link does above a Conn (the Noise handshake, records,
// frames, heartbeats, close codes; docs/PROTOCOL.md) is the same whatever
// carries the messages, so a node on another Transport is a real node: it
// runs the same handshake and cryptography, and only the bytes travel
// differently. The default, WebSocket over TCP, lives in cluster/mesh;
// cluster/mesh/meshtest has an in-memory network on which tests and
// simulations run many nodes in one process, with chosen delay, loss,
// partitions and freezes. This package holds only the seam, so that either
// side may import it.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Transport dials and accepts the connections links run over. It must be
// safe for concurrent use.
type Transport interface {
	// Dial connects to the peer at addr (a mesh.PeerAddr.URL). It returns
	// once the connection can carry messages, or with ctx's error.
	Dial(ctx context.Context, addr string) (Conn, error)
	// Listen starts accepting connections at addr (mesh.Config.ListenAddr)
	// and returns at once.
	Listen(ctx context.Context, addr string) (Listener, error)
}

// Listener hands out the connections peers open to a node.
type Listener interface {
	// Accept waits for the next connection. After Close it returns an
	// error that wraps net.ErrClosed.
	Accept() (Conn, error)
	// Close stops accepting. Connections already handed out stay open.
	Close() error
	// Addr is the local address listened on.
	Addr() net.Addr
	// URL is the address peers dial (mesh.PeerAddr.URL).
	URL() string
}

// Conn is one connection between two nodes: messages arrive whole, in the
// order they were written, or the connection fails. Reads come from one
// goroutine at a time and so do writes; WriteClose, SetReadDeadline and
// Close may be called from any goroutine at any time.
type Conn interface {
	// ReadMessage reads the next message, reusing buf's memory when it
	// can. A message larger than limit bytes is an error that wraps
	// ErrMessageTooLarge, found without holding more than limit bytes
	// of it. When the peer sent a close notice the error is a
	// *CloseError, and the transport answers with a close notice of its
	// own unless this side sent one already (as WebSocket's closing
	// handshake does). Past the read deadline the error is a net.Error
	// whose Timeout() is true.
	ReadMessage(buf []byte, limit int) ([]byte, error)
	// WriteMessages sends each of msgs as one message, in order; a
	// transport may write them in one go. Past the write deadline the
	// error is a net.Error whose Timeout() is true. It fails once a close
	// notice was sent.
	WriteMessages(msgs ...[]byte) error
	// WriteClose sends a close notice with a code (the mesh's Close*
	// codes) and a reason of at most MaxCloseReason bytes, after any write in progress,
	// waiting at most wait for that one to finish. Nothing is written
	// after it.
	WriteClose(code int, reason string, wait time.Duration) error
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
	// Close drops the connection at once; a blocked read or write
	// returns.
	Close() error
	// RemoteAddr is the peer's address, as far as the transport knows.
	RemoteAddr() net.Addr
}

// CloseError is a close notice received from the peer.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("peer closed the connection: code %d: %s", e.Code, e.Reason)
}

// ErrMessageTooLarge is wrapped by Conn.ReadMessage for a message over its
// limit.
var ErrMessageTooLarge = errors.New("message too large")

// MaxCloseReason is the most a close notice's reason may hold (what a
// WebSocket close frame has room for).
const MaxCloseReason = 123
