package mesh

import (
	"testing"

	"github.com/clawmatrix/clawmatrix/internal/faultnet"
)

// tcpProxy adapts faultnet.Proxy to the tests: freeze makes a silent peer (a
// stopped process, a dead network), cut drops every connection without a
// close frame and refuses new ones until heal (a killed process, a
// partition).
type tcpProxy struct{ p *faultnet.Proxy }

// newTCPProxy forwards to target; it is closed when the test ends.
func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	p, err := faultnet.Listen(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return &tcpProxy{p}
}

func (x *tcpProxy) url() string { return x.p.URL() }
func (x *tcpProxy) freeze()     { x.p.Freeze() }
func (x *tcpProxy) cut()        { x.p.Cut() }
func (x *tcpProxy) heal()       { x.p.Heal() }
