package schema

import (
	"path/filepath"
	"testing"
)

func TestDeliveryPath(t *testing.T) {
	tests := []struct {
		name             string
		cfg              *Config
		stateDir, config string
		want             string
	}{
		{"sidecar", &Config{}, "/home/u/.openclaw", "", "/home/u/.openclaw/clawmatrix/node.delivery.db"},
		{"node mode", &Config{}, "", "/etc/clawmatrix/relay.json", "/etc/clawmatrix/relay.delivery.db"},
		{"beside identityFile", &Config{IdentityFile: "/k/me.pem"}, "/s", "", "/k/me.delivery.db"},
		{"delivery.file set", &Config{Delivery: Delivery{File: "/var/lib/cm/box.db"}}, "/s", "/etc/a.json", "/var/lib/cm/box.db"},
		{"nothing", nil, "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DeliveryPath(tc.cfg, tc.stateDir, tc.config); got != filepath.FromSlash(tc.want) {
				t.Errorf("DeliveryPath = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestIdentityPaths(t *testing.T) {
	tests := []struct {
		name               string
		cfg                *Config
		stateDir, config   string
		wantKey, wantKnown string
	}{
		{"sidecar", &Config{}, "/home/u/.openclaw", "", "/home/u/.openclaw/clawmatrix/node.key", "/home/u/.openclaw/clawmatrix/node.known_nodes.json"},
		{"node mode", &Config{}, "", "/etc/clawmatrix/relay.json", "/etc/clawmatrix/relay.key", "/etc/clawmatrix/relay.known_nodes.json"},
		{"node mode, relative config", nil, "", "relay.json", "relay.key", "relay.known_nodes.json"},
		{"config without extension", nil, "", "/etc/relay", "/etc/relay.key", "/etc/relay.known_nodes.json"},
		{"dot file config", nil, "", "/etc/.clawmatrix", "/etc/.clawmatrix.key", "/etc/.clawmatrix.known_nodes.json"},
		{"config named .key", nil, "", "/etc/a.key", "/etc/a.key.key", "/etc/a.key.known_nodes.json"},
		{"config path wins over state dir", nil, "/s", "/etc/a.json", "/etc/a.key", "/etc/a.known_nodes.json"},
		{"identityFile set", &Config{IdentityFile: "/k/me.pem"}, "/s", "/etc/a.json", "/k/me.pem", "/k/me.known_nodes.json"},
		{"both set", &Config{IdentityFile: "/k/me.pem", KnownNodesFile: "/k/peers.json"}, "/s", "", "/k/me.pem", "/k/peers.json"},
		{"known only", &Config{KnownNodesFile: "/k/peers.json"}, "/s", "", "/s/clawmatrix/node.key", "/k/peers.json"},
		{"nothing", nil, "", "", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key, known := IdentityPaths(tc.cfg, tc.stateDir, tc.config)
			if key != filepath.FromSlash(tc.wantKey) || known != filepath.FromSlash(tc.wantKnown) {
				t.Errorf("IdentityPaths = %q, %q; want %q, %q", key, known, tc.wantKey, tc.wantKnown)
			}
		})
	}
}
