package identity

import (
	"fmt"

	"github.com/clawmatrix/clawmatrix/schema"
)

// ConfigOptions returns the Options a node's config asks for: strict mode
// from trust, revocations from revoked. The caller adds CommandFlags,
// OnPersistError and the like. A config that schema.Parse accepted never
// fails here.
func ConfigOptions(cfg *schema.Config) (Options, error) {
	var o Options
	for i, t := range cfg.Trust {
		pub, err := ParsePublicKey(t.PublicKey)
		if err != nil {
			return Options{}, fmt.Errorf("trust[%d].publicKey: %v", i, err)
		}
		o.Trusted = append(o.Trusted, Trusted{NodeID: t.NodeID, PublicKey: pub})
	}
	o.Revoked = append([]string(nil), cfg.Revoked...)
	return o, nil
}
