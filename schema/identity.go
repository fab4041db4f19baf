package schema

import (
	"path/filepath"
	"strings"
)

// IdentityPaths returns where a node keeps its private key and the keys of
// the nodes it has seen. cfg's identityFile and knownNodesFile win (cfg may
// be nil). Otherwise the key is, for a node run from a config file
// (configPath not empty), that file's path with ".key" in place of its
// extension ("/etc/clawmatrix/relay.json": "/etc/clawmatrix/relay.key"),
// else, in sidecar mode, "<stateDir>/clawmatrix/node.key". The known-nodes
// file sits beside the key, named after it ("relay.known_nodes.json",
// "node.known_nodes.json"), so that several nodes configured in one
// directory never share one. Relative paths stay relative: like tls files,
// they are resolved from the working directory. Both results are "" when
// nothing names a place.
func IdentityPaths(cfg *Config, stateDir, configPath string) (keyFile, knownFile string) {
	if cfg != nil {
		keyFile, knownFile = cfg.IdentityFile, cfg.KnownNodesFile
	}
	if keyFile == "" {
		switch {
		case configPath != "":
			keyFile = withExt(configPath, ".key")
		case stateDir != "":
			keyFile = filepath.Join(stateDir, PluginID, "node.key")
		}
	}
	if knownFile == "" && keyFile != "" {
		knownFile = withExt(keyFile, ".known_nodes.json")
	}
	return keyFile, knownFile
}

// DeliveryPath is where a node keeps its durable outbox and inbox:
// delivery.file, else beside the node key, named after it
// ("node.delivery.db", "relay.delivery.db"). It is "" when nothing names a
// place (tests, the demo), and the node then keeps them in a temporary file.
func DeliveryPath(cfg *Config, stateDir, configPath string) string {
	if cfg != nil && cfg.Delivery.File != "" {
		return cfg.Delivery.File
	}
	keyFile, _ := IdentityPaths(cfg, stateDir, configPath)
	if keyFile == "" {
		return ""
	}
	return withExt(keyFile, ".delivery.db")
}

// withExt replaces path's extension with ext, or appends ext when path has
// no extension, has only one (".clawmatrix") or already ends in ext.
func withExt(path, ext string) string {
	old := filepath.Ext(path)
	base := strings.TrimSuffix(filepath.Base(path), old)
	if old == "" || base == "" || old == ext {
		return path + ext
	}
	return strings.TrimSuffix(path, old) + ext
}

// MaxNodeIDLen is the longest node id accepted, in bytes.
const MaxNodeIDLen = 64

// CheckNodeID returns what is wrong with a node id, in the words config
// validation uses, or "". It is the one rule for node ids: config, the
// identity commands and the mesh's frame decoder all use it, so it must stay
// cheap (no allocation) and match nodeIDPattern. Ids are this narrow because
// they appear in logs, prompts and close reasons: an id from a peer can carry
// no line break or instruction.
func CheckNodeID(id string) string {
	switch {
	case id == "":
		return "must not be empty"
	case len(id) > MaxNodeIDLen:
		return "must be at most 64 characters long"
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return `may contain only letters, digits, ".", "_" and "-"`
		}
	}
	return ""
}
