package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/clawmatrix/clawmatrix/schema"
)

const (
	identityUsage = "usage: clawmatrix-plugin identity (--config FILE | --state DIR [--plugin-config FILE|-] | --key PATH) [--json]"
	trustUsage    = "usage: clawmatrix-plugin trust (--config FILE | --state DIR [--plugin-config FILE|-] | --known PATH) [--json] NODEID PUBLICKEY"
	revokeUsage   = "usage: clawmatrix-plugin revoke (--config FILE | --state DIR [--plugin-config FILE|-] | --known PATH) [--json] NODEID"
	// A running node watches its known-nodes file (cluster.Runtime).
	takesEffect = "a node running on this file applies it within seconds"
)

// place is where a command finds a node's identity files: from a config
// file (node mode), an OpenClaw state directory (sidecar mode) with the
// gateway's plugin config, or one file named directly.
type place struct {
	config, state, pluginConfig, file string
	fileFlag                          string // "key" or "known"
	stdin                             io.Reader
}

func (p *place) flags(fs *flag.FlagSet) {
	fs.StringVar(&p.config, "config", "", "plugin config file (JSON) of the node")
	fs.StringVar(&p.state, "state", "", "OpenClaw state directory of a gateway running the plugin")
	fs.StringVar(&p.pluginConfig, "plugin-config", "", "with --state: that gateway's plugin config (plugins.entries.clawmatrix.config) as JSON, a file or - for stdin; its identityFile and knownNodesFile are used")
	help := "node key file"
	if p.fileFlag == "known" {
		help = "known-nodes file"
	}
	fs.StringVar(&p.file, p.fileFlag, "", help)
}

// resolve returns the config (nil unless --config or --plugin-config) with
// the name messages give it, the key file and the known-nodes file, and the
// flags that name this place again in messages. It reports problems on
// stderr and returns an exit code other than 0 on failure.
func (p *place) resolve(usage string, stderr io.Writer) (cfg *schema.Config, cfgName, keyFile, knownFile, again string, code int) {
	set := 0
	for _, v := range []string{p.config, p.state, p.file} {
		if v != "" {
			set++
		}
	}
	if set != 1 {
		fmt.Fprintln(stderr, usage)
		fmt.Fprintf(stderr, "give exactly one of --config, --state and --%s\n", p.fileFlag)
		return nil, "", "", "", "", 1
	}
	if p.pluginConfig != "" && p.state == "" {
		fmt.Fprintln(stderr, usage)
		fmt.Fprintln(stderr, "--plugin-config goes with --state: it is the config of the gateway using that state directory")
		return nil, "", "", "", "", 1
	}
	switch {
	case p.config != "":
		c, ok := readConfig(p.config, stderr)
		if !ok {
			return nil, "", "", "", "", 2
		}
		keyFile, knownFile = schema.IdentityPaths(c, "", p.config)
		return c, p.config, keyFile, knownFile, "--config " + p.config, 0
	case p.state != "":
		var c *schema.Config
		if p.pluginConfig != "" {
			var err error
			if c, err = p.readPluginConfig(); err != nil {
				fmt.Fprintln(stderr, err)
				return nil, "", "", "", "", 2
			}
		}
		keyFile, knownFile = schema.IdentityPaths(c, p.state, "")
		again = "--state " + p.state
		if c != nil && (c.IdentityFile != "" || c.KnownNodesFile != "") {
			// The state dir alone would name other files.
			again = "--known " + knownFile
		}
		return c, "the plugin config", keyFile, knownFile, again, 0
	}
	if p.fileFlag == "key" {
		return nil, "", p.file, "", "", 0
	}
	return nil, "", "", p.file, "--known " + p.file, 0
}

// pluginConfigFields are the fields of a gateway's plugin config that say
// where its identity files are and which nodes it lists. The rest of the
// config is not needed, so it is not checked here: the gateway did that.
type pluginConfigFields struct {
	NodeID         string               `json:"nodeId"`
	IdentityFile   string               `json:"identityFile"`
	KnownNodesFile string               `json:"knownNodesFile"`
	Trust          []schema.TrustedNode `json:"trust"`
	Revoked        []string             `json:"revoked"`
}

// readPluginConfig reads --plugin-config (a file, or - for stdin).
func (p *place) readPluginConfig() (*schema.Config, error) {
	const limit = 4 << 20
	var r io.Reader
	name := p.pluginConfig
	if name == "-" {
		r, name = p.stdin, "the plugin config on stdin"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--plugin-config: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("--plugin-config: reading %s: %w", name, err)
	}
	if len(data) > limit {
		return nil, fmt.Errorf("--plugin-config: %s is larger than %d bytes", name, limit)
	}
	var f pluginConfigFields
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("--plugin-config: %s is not a JSON object: %v", name, err)
	}
	return &schema.Config{NodeID: f.NodeID, IdentityFile: f.IdentityFile, KnownNodesFile: f.KnownNodesFile,
		Trust: f.Trust, Revoked: f.Revoked}, nil
}

// parseFlags parses a command's flags; done is true when the command should
// end with code (help asked for, or a bad flag).
func parseFlags(fs *flag.FlagSet, args []string) (done bool, code int) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, 0
		}
		return true, 1
	}
	return false, 0
}

func runIdentity(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs, p := placeCommand("identity", "key", identityUsage, "\nPrints this node's id, public key and key fingerprint; makes the key if there is none yet.", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object: nodeId, publicKey, fingerprint, keyFile, created")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, identityUsage)
		return 1
	}
	cfg, _, keyFile, _, _, code := p.resolve(identityUsage, stderr)
	if code != 0 {
		return code
	}
	key, created, err := identity.LoadOrCreate(keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "clawmatrix-plugin identity:", err)
		return 1
	}
	if created {
		fmt.Fprintf(stderr, "made a new node key in %s (mode 0600)\n", keyFile)
	}
	nodeID := ""
	if cfg != nil {
		nodeID = cfg.NodeID
	}
	pub := identity.Public(key)
	if *asJSON {
		out, _ := json.Marshal(struct {
			NodeID      string `json:"nodeId,omitempty"`
			PublicKey   string `json:"publicKey"`
			Fingerprint string `json:"fingerprint"`
			KeyFile     string `json:"keyFile"`
			Created     bool   `json:"created"`
		}{nodeID, identity.FormatPublicKey(pub), identity.Fingerprint(pub), keyFile, created})
		fmt.Fprintf(stdout, "%s\n", out)
		return 0
	}
	if nodeID != "" {
		fmt.Fprintf(stdout, "node id:     %s\n", nodeID)
	}
	fmt.Fprintf(stdout, "public key:  %s\nfingerprint: %s\nkey file:    %s\n", identity.FormatPublicKey(pub), identity.Fingerprint(pub), keyFile)
	return 0
}

func runTrust(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs, p := placeCommand("trust", "known", trustUsage, "\nPins NODEID to PUBLICKEY in the known-nodes file, replacing the key it was known by and undoing a revoke.", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object: nodeId, fingerprint, revoked, knownNodesFile, notes")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, trustUsage)
		return 1
	}
	nodeID, keyText := fs.Arg(0), fs.Arg(1)
	if msg := schema.CheckNodeID(nodeID); msg != "" {
		fmt.Fprintf(stderr, "clawmatrix-plugin trust: node id %q %s\n", nodeID, msg)
		return 1
	}
	pub, err := identity.ParsePublicKey(keyText)
	if err != nil {
		fmt.Fprintln(stderr, "clawmatrix-plugin trust:", err)
		return 1
	}
	cfg, cfgName, _, knownFile, again, code := p.resolve(trustUsage, stderr)
	if code != 0 {
		return code
	}
	if cfg != nil && nodeID == cfg.NodeID {
		fmt.Fprintf(stderr, "clawmatrix-plugin trust: %q is this node's own id; its key is in its key file, not in the known-nodes file\n", nodeID)
		return 1
	}
	store, err := identity.OpenKnownNodes(knownFile, identity.Options{CommandFlags: again})
	if err == nil {
		err = store.Pin(nodeID, pub)
	}
	if err != nil {
		fmt.Fprintln(stderr, "clawmatrix-plugin trust:", err)
		return 1
	}
	notes := []string{}
	if cfg != nil && slices.Contains(cfg.Revoked, nodeID) {
		notes = append(notes, fmt.Sprintf("%s lists %s under revoked, which still refuses it; take it off that list to let it back", cfgName, nodeID))
	}
	if cfg != nil && len(cfg.Trust) > 0 && !trustLists(cfg.Trust, nodeID, pub) {
		notes = append(notes, fmt.Sprintf("%s sets trust, and then only that list decides: put {\"nodeId\": %q, \"publicKey\": %q} in it", cfgName, nodeID, identity.FormatPublicKey(pub)))
	}
	if *asJSON {
		printChange(stdout, changeResult{NodeID: nodeID, Fingerprint: identity.Fingerprint(pub), KnownNodesFile: knownFile, Notes: notes})
		return 0
	}
	fmt.Fprintf(stdout, "pinned node %s to key %s in %s; %s\n", nodeID, identity.Fingerprint(pub), knownFile, takesEffect)
	for _, n := range notes {
		fmt.Fprintln(stdout, "note: "+n)
	}
	return 0
}

// changeResult is what trust and revoke print with --json.
type changeResult struct {
	NodeID string `json:"nodeId"`
	// Fingerprint is the key now pinned for the node; absent for a node
	// revoked before any key was seen for it.
	Fingerprint    string   `json:"fingerprint,omitempty"`
	Revoked        bool     `json:"revoked"`
	KnownNodesFile string   `json:"knownNodesFile"`
	Notes          []string `json:"notes"`
}

func printChange(stdout io.Writer, r changeResult) {
	out, _ := json.Marshal(r)
	fmt.Fprintf(stdout, "%s\n", out)
}

// trustLists reports whether a trust list holds nodeID with pub.
func trustLists(trust []schema.TrustedNode, nodeID string, pub ed25519.PublicKey) bool {
	for _, t := range trust {
		if k, err := identity.ParsePublicKey(t.PublicKey); err == nil && t.NodeID == nodeID && k.Equal(pub) {
			return true
		}
	}
	return false
}

func runRevoke(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs, p := placeCommand("revoke", "known", revokeUsage, "\nMarks NODEID revoked in the known-nodes file: refused from then on, with any key, and its key refused under any id.", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object: nodeId, fingerprint, revoked, knownNodesFile, notes")
	if done, code := parseFlags(fs, args); done {
		return code
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, revokeUsage)
		return 1
	}
	nodeID := fs.Arg(0)
	if msg := schema.CheckNodeID(nodeID); msg != "" {
		fmt.Fprintf(stderr, "clawmatrix-plugin revoke: node id %q %s\n", nodeID, msg)
		return 1
	}
	cfg, _, _, knownFile, again, code := p.resolve(revokeUsage, stderr)
	if code != 0 {
		return code
	}
	if cfg != nil && nodeID == cfg.NodeID {
		fmt.Fprintf(stderr, "clawmatrix-plugin revoke: %q is this node's own id\n", nodeID)
		return 1
	}
	store, err := identity.OpenKnownNodes(knownFile, identity.Options{CommandFlags: again})
	if err == nil {
		err = store.Revoke(nodeID)
	}
	if err != nil {
		fmt.Fprintln(stderr, "clawmatrix-plugin revoke:", err)
		return 1
	}
	what, fp := "no key known yet", ""
	for _, e := range store.List() {
		if e.NodeID == nodeID && e.PublicKey != nil {
			fp = identity.Fingerprint(e.PublicKey)
			what = "key " + fp
		}
	}
	notes := []string{
		"revoke it on every node; a revoked machine that still knows the cluster secret can rejoin under a new id with a new key until the secret is changed or trust lists the allowed nodes",
	}
	if *asJSON {
		printChange(stdout, changeResult{NodeID: nodeID, Fingerprint: fp, Revoked: true, KnownNodesFile: knownFile, Notes: notes})
		return 0
	}
	fmt.Fprintf(stdout, "revoked node %s (%s) in %s; %s\n", nodeID, what, knownFile, takesEffect)
	fmt.Fprintln(stdout, notes[0])
	fmt.Fprintf(stdout, "undo: clawmatrix-plugin trust %s %s PUBLICKEY\n", again, nodeID)
	return 0
}

// placeCommand makes the flag set of a command that works on a node's key
// or known-nodes file: the flags that name the place, and a usage text of
// the command's usage line, what it does and its flags.
func placeCommand(name, fileFlag, usage, about string, stderr io.Writer) (*flag.FlagSet, *place) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	p := &place{fileFlag: fileFlag, stdin: os.Stdin}
	p.flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, usage)
		fmt.Fprintln(stderr, about)
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	return fs, p
}
