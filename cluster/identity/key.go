// Package identity holds a node's own Ed25519 key and the store of the keys
// other nodes are known by.
//
// A node's key lives in one file, made on first start: a PEM block of type
// "PRIVATE KEY" holding the PKCS#8 encoding of the Ed25519 key (the format
// `openssl genpkey -algorithm ed25519` writes), mode 0600, in a directory
// made with mode 0700 when it does not exist yet. A key file that group or
// others may read is refused rather than used.
//
// Public keys are shown and configured as "ed25519:" followed by the 32 key
// bytes in base64, and summarised as a fingerprint "SHA256:" followed by the
// unpadded base64 SHA-256 of those 32 bytes.
//
// KnownNodes (known.go) pins the key each node id was first seen with, the
// way SSH's known_hosts does, with an optional strict list and revocation.
//
// The package sits below the mesh: of this module it imports only schema.
package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// PublicKeyPrefix starts the text form of a public key.
const PublicKeyPrefix = "ed25519:"

// pemType is the PEM block type of a PKCS#8 private key.
const pemType = "PRIVATE KEY"

// LoadOrCreate returns the node key kept at path, making a new one (and the
// directory it lives in) when the file does not exist; created says which
// happened. A new key is written to a temporary file and linked into place,
// so a reader never sees half a key and two processes starting at once end
// up with the same key. Every error names path.
func LoadOrCreate(path string) (key ed25519.PrivateKey, created bool, err error) {
	if path == "" {
		return nil, false, errors.New("no node key file given")
	}
	key, err = load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("node key %s: cannot create its directory: %w", path, unwrapPath(err))
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("node key %s: generating a key: %w", path, err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, false, fmt.Errorf("node key %s: encoding the key: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
	won, err := writeNew(path, data)
	if err != nil {
		return nil, false, fmt.Errorf("node key %s: %w", path, err)
	}
	if !won {
		// Another process made the key first: use that one.
		key, err = load(path)
		return key, false, err
	}
	return priv, true, nil
}

// load reads and checks a key file. A missing file is reported as an error
// wrapping fs.ErrNotExist.
func load(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("node key %s: cannot open: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("node key %s: %w", path, unwrapPath(err))
	}
	if st.IsDir() {
		return nil, fmt.Errorf("node key %s: is a directory, not a key file", path)
	}
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o077 != 0 {
		return nil, fmt.Errorf("node key %s: mode %04o lets other users read the private key; run: chmod 600 %s", path, perm, path)
	}
	const maxKeyFile = 64 << 10
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("node key %s: cannot read: %w", path, unwrapPath(err))
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("node key %s: larger than 64 KiB; this is not a node key file", path)
	}
	return parsePrivateKey(path, data)
}

func parsePrivateKey(path string, data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("node key %s: no PEM block found; expected a %q block (delete the file to make a new key, which changes this node's identity)", path, pemType)
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("node key %s: PEM block is %q, expected %q (PKCS#8)", path, block.Type, pemType)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("node key %s: not a valid PKCS#8 private key: %v", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("node key %s: holds a %s key, expected Ed25519", path, keyKind(k))
	}
	return priv, nil
}

func keyKind(k any) string {
	name := fmt.Sprintf("%T", k) // like *rsa.PrivateKey
	name = strings.TrimPrefix(name, "*")
	if i := strings.IndexByte(name, '.'); i >= 0 {
		name = name[:i]
	}
	return strings.ToUpper(name)
}

// FormatPublicKey returns the text form of a public key:
// "ed25519:" and the 32 bytes in padded standard base64.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return PublicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads the text form of a public key. The base64 may be
// standard or URL-safe, with or without its one "=" of padding.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	rest, ok := strings.CutPrefix(s, PublicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("public key must start with %q, as `clawmatrix-plugin identity` prints it", PublicKeyPrefix)
	}
	rest = strings.TrimSuffix(rest, "=")
	enc := base64.RawStdEncoding
	if strings.ContainsAny(rest, "-_") {
		enc = base64.RawURLEncoding
	}
	b, err := enc.DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("public key is not valid base64 after %q", PublicKeyPrefix)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key is %d bytes, an Ed25519 key is %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Fingerprint returns "SHA256:" and the unpadded standard base64 of the
// SHA-256 of the 32 key bytes: short enough to compare by eye, in the style
// OpenSSH prints (not the same value: OpenSSH hashes its own key encoding).
func Fingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// Public returns the public half of a node key.
func Public(key ed25519.PrivateKey) ed25519.PublicKey {
	return key.Public().(ed25519.PublicKey)
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
