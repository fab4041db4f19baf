package mesh

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"runtime/debug"
	"sync"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/flynn/noise"
	"golang.org/x/crypto/argon2"
)

// Trust decides which node key may speak for which node id. The mesh asks
// it on every link handshake and for every signed topology entry, before it
// believes anything the key signed. Implementations must be safe for
// concurrent use; cluster/identity has the file-backed one (trust on first
// use, strict lists, revocation).
type Trust interface {
	// Admit returns nil when key may speak for nodeID, else an error that
	// says why and what the operator can do about it.
	Admit(nodeID string, key ed25519.PublicKey) error
}

// memoryTrust pins the first key seen per id for the life of the process.
// It is the default when Config.Trust is nil (tests, the demo).
type memoryTrust struct {
	mu   sync.Mutex
	pins map[string]string
}

func (t *memoryTrust) Admit(nodeID string, key ed25519.PublicKey) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pins == nil {
		t.pins = make(map[string]string)
	}
	fp := identity.Fingerprint(key)
	if pinned, ok := t.pins[nodeID]; ok && pinned != fp {
		return fmt.Errorf("node %q presented key %s but key %s is pinned for it", nodeID, fp, pinned)
	}
	t.pins[nodeID] = fp
	return nil
}

// cipherSuite is the one suite protocol v2 uses, for links and end-to-end
// sessions alike.
var cipherSuite = noise.NewCipherSuite(noise.DH25519, noise.CipherChaChaPoly, noise.HashBLAKE2s)

// Domain separation strings for what node keys sign; part of the protocol.
const (
	sigContextStatic = "clawmatrix/2 static key\x00"
	sigContextEntry  = "clawmatrix/2 topology entry\x00"
)

// signStatic binds a Noise static key to the node key.
func signStatic(id ed25519.PrivateKey, static []byte) []byte {
	return ed25519.Sign(id, append([]byte(sigContextStatic), static...))
}

func verifyStatic(key ed25519.PublicKey, static, sig []byte) bool {
	return len(key) == ed25519.PublicKeySize && ed25519.Verify(key, append([]byte(sigContextStatic), static...), sig)
}

// The pre-shared key mixed into every link handshake is derived from the
// secret with Argon2id, so that the one party that can test guesses of the
// secret offline (a listener a node dials, see docs/PROTOCOL.md) pays a
// memory-hard computation per guess (7 MiB and 5 passes: one of the
// settings OWASP gives as equivalent, small enough for a sidecar that must
// stay light). A passive observer cannot test guesses at all: the key is
// mixed only after the ephemeral Diffie-Hellman.
const (
	pskSalt    = "clawmatrix mesh v2 pre-shared key"
	pskTime    = 5
	pskMemKiB  = 7 * 1024
	pskThreads = 1
)

var pskCache sync.Map // secret -> *pskSlot

type pskSlot struct {
	once sync.Once
	key  []byte
}

// derivePSK returns the pre-shared key for secret, computing it once per
// process.
func derivePSK(secret string) []byte {
	v, _ := pskCache.LoadOrStore(secret, &pskSlot{})
	s := v.(*pskSlot)
	s.once.Do(func() {
		s.key = argon2.IDKey([]byte(secret), []byte(pskSalt), pskTime, pskMemKiB, pskThreads, 32)
		// Hand the derivation's memory back at once: an idle sidecar
		// would otherwise keep it resident for minutes.
		debug.FreeOSMemory()
	})
	return s.key
}

// newStatic makes this run's Noise static key pair.
func newStatic() (noise.DHKey, error) {
	return noise.DH25519.GenerateKeypair(rand.Reader)
}
