package mesh

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/clawmatrix/clawmatrix/schema"
)

// PeerAddr is a peer this node dials.
type PeerAddr struct {
	// URL is ws://host:port or wss://host:port (any path is accepted).
	URL string
	// NodeID, when set, is the id the peer must prove; a listener that
	// answers with another id is refused (close code CloseWrongNode).
	NodeID string
}

// Config configures a Node. Start from DefaultLANConfig or
// DefaultLocalConfig and set NodeID, Secret, ListenAddr and Peers.
type Config struct {
	NodeID string
	// Secret is the shared cluster secret (at least MinSecretLen bytes): the
	// credential that lets a node join. A pre-shared key derived from it is
	// mixed into every link handshake; the secret itself is never logged,
	// sent or put in an error.
	Secret string
	// Identity is this node's Ed25519 node key, which binds its id once
	// peers have pinned it; nil makes an ephemeral key for this run.
	Identity ed25519.PrivateKey
	// Trust decides which node key may speak for which id; nil pins the
	// first key seen per id for the life of the process.
	Trust Trust
	// ListenAddr is where to accept peers, e.g. "0.0.0.0:19000" or
	// "127.0.0.1:0"; "" means do not listen.
	ListenAddr string
	// ServerTLS, when non-nil, makes the listener serve wss.
	ServerTLS *tls.Config
	// ClientTLS is used for wss:// peers; nil means system roots.
	ClientTLS *tls.Config
	Peers     []PeerAddr

	Capabilities Capabilities

	// PingInterval is the mean time between pings on a link (jittered ±20%).
	PingInterval time.Duration
	// DeadAfter is how long a link may stay silent (no frame of any kind,
	// pongs included) before it is declared dead. A silent peer is found dead
	// within DeadAfter + DeadAfter/64, whether or not writes to it are
	// blocked (WriteTimeout does not delay it).
	DeadAfter time.Duration
	// AuthTimeout bounds the whole handshake; a connection that has not
	// authenticated by then is closed with CloseAuthTimeout.
	AuthTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the dialers' jittered exponential
	// backoff.
	ReconnectMin, ReconnectMax time.Duration
	// WriteTimeout bounds one frame write; a peer that does not take a frame
	// for that long is closed as slow (CloseSlowPeer). Zero means DeadAfter.
	WriteTimeout time.Duration

	// RequestWindow is the number of response messages a handler may have
	// in flight (sent but not yet consumed by the caller's Recv).
	RequestWindow int
	// MaxFrameBytes is the largest WebSocket message accepted or sent; a
	// bigger one closes the link with CloseFrameTooLarge.
	MaxFrameBytes int
	// ChunkBytes is the largest piece of a message carried by one frame.
	// Small chunks interleave streams more finely.
	ChunkBytes int
	// MaxMessageBytes bounds one reassembled message (request or response).
	MaxMessageBytes int
	// MaxPendingRequestBytes bounds the request bytes this node holds
	// while reassembling requests, across all callers: many callers each
	// sending a large request at once must not add up to MaxMessageBytes
	// times the stream limit. A request that would pass it is refused with
	// CodeUnavailable. At least MaxMessageBytes.
	MaxPendingRequestBytes int
	// MaxStreamsPerPeer bounds the requests this node serves at once for
	// one caller; MaxPendingBytesPerPeer the request bytes it holds for one
	// caller while reassembling (see share.go).
	MaxStreamsPerPeer      int
	MaxPendingBytesPerPeer int
	// RequestIdleTimeout gives up a request that has been half-sent (no
	// new chunk) for that long.
	RequestIdleTimeout time.Duration
	// MaxQueueBytes bounds the frames queued for one link. Local senders
	// wait when half of it is used; relayed traffic that would overflow it
	// closes that link with CloseSlowPeer.
	MaxQueueBytes int
	// MaxHops is the TTL given to routed frames.
	MaxHops int
	// DedupSize is how many recent routed frame ids are remembered.
	DedupSize int
	// MaxPendingAuth bounds accepted connections that have not completed
	// the handshake; a newer one evicts the oldest (see listen.go).
	MaxPendingAuth int
	// MaxPendingAuthPerSource bounds them per source address the same way.
	MaxPendingAuthPerSource int
	// MaxConns bounds accepted TCP connections of any state; beyond it
	// unauthenticated ones are evicted, and when every one is authenticated
	// new ones are closed at once.
	MaxConns int
	// MaxEntryBytes bounds one signed topology entry; a bigger one is
	// refused and the link that brought it closed.
	MaxEntryBytes int
	// MaxNodes bounds the topology table (reachable and remembered nodes).
	MaxNodes int

	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
	// TracerProvider, when set, records the mesh's spans (trace.go); nil
	// records none. Trace context is passed on either way.
	TracerProvider trace.TracerProvider
}

// MinSecretLen is the shortest secret accepted.
const MinSecretLen = 16

// DefaultLANConfig returns timings for a real network: a silent peer is
// declared dead within about 4.1 s (DeadAfter 4 s and a little slack),
// inside the 6 s the README promises.
func DefaultLANConfig() Config {
	return Config{
		PingInterval:    time.Second,
		DeadAfter:       4 * time.Second,
		AuthTimeout:     10 * time.Second,
		ReconnectMin:    500 * time.Millisecond,
		ReconnectMax:    30 * time.Second,
		RequestWindow:   16,
		MaxFrameBytes:   1 << 20,
		ChunkBytes:      32 << 10,
		MaxMessageBytes: 64 << 20,
		// Four requests of the largest size at once.
		MaxPendingRequestBytes: 256 << 20,
		// A caller may hold one request of the largest size, and a
		// quarter of the streams a node serves.
		MaxPendingBytesPerPeer:  64 << 20,
		MaxStreamsPerPeer:       2048,
		RequestIdleTimeout:      30 * time.Second,
		MaxQueueBytes:           16 << 20,
		MaxHops:                 32,
		DedupSize:               16384,
		MaxPendingAuth:          64,
		MaxPendingAuthPerSource: 16,
		MaxConns:                1024,
		MaxEntryBytes:           64 << 10,
		MaxNodes:                1024,
	}
}

// DefaultLocalConfig returns fast timings for tests and demos on loopback.
func DefaultLocalConfig() Config {
	c := DefaultLANConfig()
	c.PingInterval = 50 * time.Millisecond
	c.DeadAfter = 300 * time.Millisecond
	c.AuthTimeout = 2 * time.Second
	c.ReconnectMin = 20 * time.Millisecond
	c.ReconnectMax = 200 * time.Millisecond
	return c
}

// frameOverhead is room for the routed header, the seal and the stream
// fields around a chunk's data.
const frameOverhead = 1024

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := checkNodeID(c.NodeID); err != nil {
		bad("NodeID: %v", err)
	}
	if len(c.Secret) < MinSecretLen {
		bad("Secret: must be at least %d characters (got %d); use a long random string shared by all nodes", MinSecretLen, len(c.Secret))
	}
	for i, p := range c.Peers {
		if err := checkPeerURL(p.URL); err != nil {
			bad("Peers[%d].URL: %v", i, err)
		}
		if p.NodeID != "" {
			if err := checkNodeID(p.NodeID); err != nil {
				bad("Peers[%d].NodeID: %v", i, err)
			} else if p.NodeID == c.NodeID {
				bad("Peers[%d].NodeID: %q is this node's own id", i, p.NodeID)
			}
		}
	}
	pos := func(name string, d time.Duration) {
		if d <= 0 {
			bad("%s: must be positive (got %v); start from DefaultLANConfig()", name, d)
		}
	}
	pos("PingInterval", c.PingInterval)
	pos("DeadAfter", c.DeadAfter)
	pos("AuthTimeout", c.AuthTimeout)
	pos("ReconnectMin", c.ReconnectMin)
	pos("ReconnectMax", c.ReconnectMax)
	if c.DeadAfter > 0 && c.PingInterval > 0 && c.DeadAfter < 2*c.PingInterval {
		bad("DeadAfter: %v must be at least twice PingInterval (%v) or healthy links would be declared dead", c.DeadAfter, c.PingInterval)
	}
	if c.ReconnectMax < c.ReconnectMin {
		bad("ReconnectMax: %v is below ReconnectMin %v", c.ReconnectMax, c.ReconnectMin)
	}
	if c.WriteTimeout < 0 {
		bad("WriteTimeout: must not be negative")
	}
	posInt := func(name string, v int) {
		if v <= 0 {
			bad("%s: must be positive (got %d); start from DefaultLANConfig()", name, v)
		}
	}
	posInt("RequestWindow", c.RequestWindow)
	posInt("MaxFrameBytes", c.MaxFrameBytes)
	posInt("ChunkBytes", c.ChunkBytes)
	posInt("MaxMessageBytes", c.MaxMessageBytes)
	posInt("MaxPendingRequestBytes", c.MaxPendingRequestBytes)
	if c.MaxPendingRequestBytes > 0 && c.MaxPendingRequestBytes < c.MaxMessageBytes {
		bad("MaxPendingRequestBytes: must be at least MaxMessageBytes (%d), or no request of the largest size could ever arrive (got %d)", c.MaxMessageBytes, c.MaxPendingRequestBytes)
	}
	posInt("MaxQueueBytes", c.MaxQueueBytes)
	posInt("MaxStreamsPerPeer", c.MaxStreamsPerPeer)
	posInt("MaxPendingBytesPerPeer", c.MaxPendingBytesPerPeer)
	pos("RequestIdleTimeout", c.RequestIdleTimeout)
	posInt("MaxHops", c.MaxHops)
	posInt("DedupSize", c.DedupSize)
	posInt("MaxPendingAuth", c.MaxPendingAuth)
	posInt("MaxPendingAuthPerSource", c.MaxPendingAuthPerSource)
	posInt("MaxEntryBytes", c.MaxEntryBytes)
	if c.Identity != nil && len(c.Identity) != ed25519.PrivateKeySize {
		bad("Identity: must be an Ed25519 private key (%d bytes, got %d)", ed25519.PrivateKeySize, len(c.Identity))
	}
	posInt("MaxConns", c.MaxConns)
	posInt("MaxNodes", c.MaxNodes)
	if c.MaxFrameBytes > 0 && c.MaxFrameBytes < 4096 {
		bad("MaxFrameBytes: %d is too small; use at least 4096", c.MaxFrameBytes)
	}
	if c.ChunkBytes > 0 && c.MaxFrameBytes > 0 && c.ChunkBytes+frameOverhead > c.MaxFrameBytes {
		bad("ChunkBytes: %d does not fit in MaxFrameBytes %d with its header; use at most %d", c.ChunkBytes, c.MaxFrameBytes, c.MaxFrameBytes-frameOverhead)
	}
	if c.MaxQueueBytes > 0 && c.MaxFrameBytes > 0 && c.MaxQueueBytes < 4*c.MaxFrameBytes {
		bad("MaxQueueBytes: %d must be at least 4*MaxFrameBytes (%d)", c.MaxQueueBytes, 4*c.MaxFrameBytes)
	}
	return errors.Join(errs...)
}

func (c *Config) writeTimeout() time.Duration {
	if c.WriteTimeout > 0 {
		return c.WriteTimeout
	}
	return c.DeadAfter
}

// MaxNodeIDLen is the longest node id accepted.
const MaxNodeIDLen = schema.MaxNodeIDLen

func checkNodeID(id string) error {
	if msg := schema.CheckNodeID(id); msg != "" {
		return errors.New(msg)
	}
	return nil
}

func checkPeerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %v", s, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "ws", "wss":
	default:
		return fmt.Errorf("%q must start with ws:// or wss://", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	if u.User != nil {
		return fmt.Errorf("%q must not carry credentials; the cluster secret authenticates peers", redactURL(u))
	}
	return nil
}

func redactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}
