package identity

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawmatrix/clawmatrix/schema"
)

// The config schema's publicKey pattern and ParsePublicKey accept the same
// strings: a key the config takes always loads.
func TestSchemaAgreesWithParsePublicKey(t *testing.T) {
	pub := newPub(t)
	std := base64.StdEncoding.EncodeToString(pub)
	url := base64.URLEncoding.EncodeToString(pub)
	// Keys whose base64 holds both a URL-safe and a standard character.
	for !strings.ContainsAny(url, "-_") || !strings.ContainsAny(std, "+/") {
		pub = newPub(t)
		std = base64.StdEncoding.EncodeToString(pub)
		url = base64.URLEncoding.EncodeToString(pub)
	}
	mixed := strings.Replace(std, "+", "-", 1)
	if !strings.ContainsRune(std, '+') {
		mixed = strings.Replace(std, "/", "_", 1)
	}
	for _, key := range []string{
		"ed25519:" + std,
		"ed25519:" + strings.TrimSuffix(std, "="),
		"ed25519:" + url,
		"ed25519:" + strings.TrimSuffix(url, "="),
		"ed25519:" + mixed,
		"ed25519:" + std + "=",
		"ed25519:" + std[:40],
		"ed25519:" + std + "AAAA",
		"ed25519:" + strings.Repeat("A", 42) + "==",
		"ed25519:" + strings.Repeat("A", 42) + "!",
		"ed25519:",
		std,
		"ED25519:" + std,
	} {
		raw, _ := json.Marshal(map[string]any{
			"nodeId": "a", "secret": "0123456789abcdef",
			"trust": []map[string]string{{"nodeId": "b", "publicKey": key}},
		})
		cfg, problems := schema.Parse(raw)
		_, err := ParsePublicKey(key)
		if (len(problems) == 0) != (err == nil) {
			t.Errorf("%q: schema problems %v, ParsePublicKey error %v", key, problems, err)
			continue
		}
		if cfg == nil {
			continue
		}
		opts, err := ConfigOptions(cfg)
		if err != nil || len(opts.Trusted) != 1 || !opts.Trusted[0].PublicKey.Equal(ed25519.PublicKey(mustParse(t, key))) {
			t.Errorf("%q: ConfigOptions = %+v, %v", key, opts, err)
		}
	}
}

func mustParse(t *testing.T, s string) ed25519.PublicKey {
	k, err := ParsePublicKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// What wiring does at start, from a parsed config to an admitting store.
func TestConfigToStore(t *testing.T) {
	b, c := newPub(t), newPub(t)
	raw, _ := json.Marshal(map[string]any{
		"nodeId": "a", "secret": "0123456789abcdef",
		"trust":   []map[string]string{{"nodeId": "b", "publicKey": FormatPublicKey(b)}},
		"revoked": []string{"c"},
	})
	cfg, problems := schema.Parse(raw)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	configPath := filepath.Join(t.TempDir(), "a.json")
	keyFile, knownFile := schema.IdentityPaths(cfg, "", configPath)
	if _, created, err := LoadOrCreate(keyFile); err != nil || !created {
		t.Fatal(created, err)
	}
	opts, err := ConfigOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := OpenKnownNodes(knownFile, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !store.Strict() || store.Admit("b", b) != nil || !errors.Is(store.Admit("c", c), ErrRevoked) || !errors.Is(store.Admit("d", c), ErrNotTrusted) {
		t.Error("the store does not follow the config's trust and revoked")
	}
}
