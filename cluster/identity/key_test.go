package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "clawmatrix", "node.key")

	key, created, err := LoadOrCreate(path)
	if err != nil || !created || len(key) != ed25519.PrivateKeySize {
		t.Fatalf("first LoadOrCreate = %d bytes, created %v, %v", len(key), created, err)
	}
	assertMode(t, path, 0o600)
	assertMode(t, filepath.Dir(path), 0o700)
	raw, _ := os.ReadFile(path)
	if !bytes.HasPrefix(raw, []byte("-----BEGIN PRIVATE KEY-----\n")) {
		t.Errorf("key file is not a PEM PRIVATE KEY block:\n%s", raw)
	}

	again, created, err := LoadOrCreate(path)
	if err != nil || created || !again.Equal(key) {
		t.Fatalf("second LoadOrCreate: created %v, same key %v, %v", created, again.Equal(key), err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(leftovers) > 0 {
		t.Errorf("temporary files left behind: %v", leftovers)
	}
}

func TestLoadOrCreateConcurrentAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	const n = 8
	keys := make([]ed25519.PrivateKey, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := LoadOrCreate(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for i := 1; i < n; i++ {
		if !keys[i].Equal(keys[0]) {
			t.Fatalf("callers %d and 0 got different keys", i)
		}
	}
}

func TestLoadOrCreateRefuses(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	good := func() []byte {
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		der, _ := x509.MarshalPKCS8PrivateKey(priv)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}

	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    []string
	}{
		{"group readable", good(), 0o640, []string{"chmod 600 ", "other users"}},
		{"world readable", good(), 0o604, []string{"chmod 600 "}},
		{"empty", nil, 0o600, []string{"no PEM block"}},
		{"garbage", []byte("hello"), 0o600, []string{"no PEM block"}},
		{"wrong block", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o600, []string{`"CERTIFICATE"`, `"PRIVATE KEY"`}},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0o600, []string{"not a valid PKCS#8"}},
		{"ECDSA key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), 0o600, []string{"ECDSA", "expected Ed25519"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "node.key")
			if err := os.WriteFile(path, tc.content, tc.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tc.mode) // whatever the umask
			before, _ := os.ReadFile(path)
			_, _, err := LoadOrCreate(path)
			if err == nil {
				t.Fatal("LoadOrCreate accepted the file")
			}
			for _, w := range append(tc.want, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("a refused key file was changed")
			}
		})
	}

	t.Run("directory", func(t *testing.T) {
		path := t.TempDir()
		if _, _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "directory") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("empty path", func(t *testing.T) {
		if _, _, err := LoadOrCreate(""); err == nil {
			t.Fatal("accepted an empty path")
		}
	})
}

func TestPublicKeyText(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub := Public(priv)
	text := FormatPublicKey(pub)
	if !strings.HasPrefix(text, "ed25519:") || len(text) != len("ed25519:")+44 {
		t.Fatalf("FormatPublicKey = %q", text)
	}
	raw := base64.RawStdEncoding.EncodeToString(pub)
	url := base64.RawURLEncoding.EncodeToString(pub)
	tests := []struct {
		in   string
		ok   bool
		want string // part of the error
	}{
		{text, true, ""},
		{"ed25519:" + raw, true, ""},
		{"ed25519:" + url, true, ""},
		{"ed25519:" + url + "=", true, ""},
		{raw, false, `start with "ed25519:"`},
		{"ssh-ed25519 " + raw, false, `start with "ed25519:"`},
		{"ed25519:", false, "0 bytes"},
		{"ed25519:" + raw[:40], false, "bytes"},
		{"ed25519:" + raw + "AAAA", false, "bytes"},
		{"ed25519:" + raw[:42] + "!", false, "not valid base64"},
		{"ed25519:+" + url[1:42] + "_", false, "not valid base64"},
	}
	for _, tc := range tests {
		got, err := ParsePublicKey(tc.in)
		if tc.ok {
			if err != nil || !got.Equal(pub) {
				t.Errorf("ParsePublicKey(%q) = %v, %v", tc.in, got, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePublicKey(%q) error = %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	pub := make(ed25519.PublicKey, ed25519.PublicKeySize)
	fp := Fingerprint(pub)
	// SHA-256 of 32 zero bytes.
	if fp != "SHA256:Zmh6rfhivXdsj8GLjp+OIAiXFIVu4jOzkCpZHQ1fKSU" {
		t.Fatalf("Fingerprint = %q", fp)
	}
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}
