package mesh

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidation(t *testing.T) {
	ok := testConfig("a")
	if err := ok.validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no id", func(c *Config) { c.NodeID = "" }, "NodeID: must not be empty"},
		{"space in id", func(c *Config) { c.NodeID = "a b" }, "NodeID:"},
		{"short secret", func(c *Config) { c.Secret = "short" }, "Secret: must be at least 16"},
		{"bad scheme", func(c *Config) { c.Peers = []PeerAddr{{URL: "http://x:1"}} }, "Peers[0].URL"},
		{"credentials in url", func(c *Config) { c.Peers = []PeerAddr{{URL: "ws://u:pw@x:1"}} }, "must not carry credentials"},
		{"self as peer", func(c *Config) { c.Peers = []PeerAddr{{URL: "ws://x:1", NodeID: "a"}} }, "own id"},
		{"zero ping", func(c *Config) { c.PingInterval = 0 }, "PingInterval"},
		{"dead too soon", func(c *Config) { c.DeadAfter = c.PingInterval }, "DeadAfter"},
		{"backoff inverted", func(c *Config) { c.ReconnectMax = time.Millisecond }, "ReconnectMax"},
		{"chunk too big", func(c *Config) { c.ChunkBytes = c.MaxFrameBytes }, "ChunkBytes"},
		{"zero window", func(c *Config) { c.RequestWindow = 0 }, "RequestWindow"},
		{"pending budget below one message", func(c *Config) { c.MaxPendingRequestBytes = c.MaxMessageBytes - 1 }, "MaxPendingRequestBytes: must be at least MaxMessageBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig("a")
			tc.mod(&c)
			_, err := New(c)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "pw@") || strings.Contains(err.Error(), testSecret) {
				t.Fatalf("error leaks a secret: %v", err)
			}
		})
	}
}

func TestDefaultsDetectSilentPeerInTime(t *testing.T) {
	// The LAN profile must find a silent peer dead within 6 s: DeadAfter
	// and the reader's deadline slack, plus the grace for the close frame.
	c := DefaultLANConfig()
	if worst := c.DeadAfter + c.DeadAfter/64 + closeGrace; worst > 6*time.Second {
		t.Fatalf("worst-case silent detection %v exceeds 6s", worst)
	}
	if c.AuthTimeout != 10*time.Second {
		t.Fatalf("AuthTimeout %v", c.AuthTimeout)
	}
}
