//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// runCLI runs one openclaw command and returns its stdout, stderr and exit
// code (an error only when it could not run at all).
func (g *gateway) runCLI(ctx context.Context, args ...string) (stdout, stderr string, code int, err error) {
	cmd := g.command(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode(), nil
	}
	return out.String(), errb.String(), 0, err
}

// nodeStatus is the part of /status.json (docs/STATUS.md) these tests read.
type nodeStatus struct {
	Node struct {
		NodeID      string `json:"nodeId"`
		PublicKey   string `json:"publicKey"`
		Fingerprint string `json:"fingerprint"`
	} `json:"node"`
	Peers []struct {
		NodeID      string `json:"nodeId"`
		Status      string `json:"status"`
		Fingerprint string `json:"fingerprint"`
		Revoked     bool   `json:"revoked"`
	} `json:"peers"`
	Errors []struct {
		Kind    string `json:"kind"`
		Node    string `json:"node"`
		Message string `json:"message"`
	} `json:"errors"`
}

func (s nodeStatus) peer(id string) (status string, fingerprint string, revoked bool) {
	for _, p := range s.Peers {
		if p.NodeID == id {
			return p.Status, p.Fingerprint, p.Revoked
		}
	}
	return "", "", false
}

// liveStatus reads a running gateway's /status.json straight from its
// proxy, with its state dir's key, as the commands do: for polling, where
// a CLI call (10-25 s) would be too slow.
func (c *cluster) liveStatus(ctx context.Context, g *gateway) (nodeStatus, error) {
	key, err := os.ReadFile(filepath.Join(g.stateDir(), "clawmatrix", "proxy-key"))
	if err != nil {
		return nodeStatus{}, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://127.0.0.1:"+strconv.Itoa(c.proxyPort[g])+"/status.json", nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return nodeStatus{}, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nodeStatus{}, fmt.Errorf("GET /status.json on %s: HTTP %d %s", g.name, resp.StatusCode, raw)
	}
	var s nodeStatus
	return s, json.Unmarshal(raw, &s)
}

// binaryIdentity is what `clawmatrix-plugin identity --state` prints for a
// gateway's state dir: the key file its sidecar uses.
func binaryIdentity(ctx context.Context, t *testing.T, g *gateway) (id struct{ PublicKey, Fingerprint string }) {
	t.Helper()
	out, err := exec.CommandContext(ctx, g.bin, "identity", "--state", g.stateDir(), "--json").Output()
	if err != nil {
		t.Fatalf("clawmatrix-plugin identity --state %s: %v", g.stateDir(), err)
	}
	if err := json.Unmarshal(out, &id); err != nil {
		t.Fatal(err)
	}
	return id
}

// testCLI: `openclaw clawmatrix …` in a CLI process shows the running
// gateway's node, and trust and revoke act on it at once.
func testCLI(ctx context.Context, t *testing.T, c *cluster) {
	cctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	idA, idB := binaryIdentity(cctx, t, c.a), binaryIdentity(cctx, t, c.b)

	out, errOut, code, err := c.a.runCLI(cctx, "clawmatrix", "status", "--json")
	if err != nil || code != 0 {
		t.Fatalf("openclaw clawmatrix status --json: exit %d %v\n%s", code, err, tailString(errOut, 20))
	}
	var st nodeStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: stdout is not the JSON document alone: %v\n%s", err, tailString(out, 20))
	}
	if st.Node.NodeID != nodeA || st.Node.Fingerprint != idA.Fingerprint {
		t.Errorf("status node = %+v, want %s with the key of A's state dir %s", st.Node, nodeA, idA.Fingerprint)
	}
	if s, fp, _ := st.peer(nodeB); s != "connected" || fp != idB.Fingerprint {
		t.Errorf("status shows %s as %q with key %q, want connected with %s", nodeB, s, fp, idB.Fingerprint)
	}

	out, _, code, err = c.b.runCLI(cctx, "clawmatrix", "identity", "--json")
	var id struct{ NodeID, PublicKey, Fingerprint string }
	if err != nil || code != 0 || json.Unmarshal([]byte(out), &id) != nil || id.NodeID != nodeB || id.PublicKey != idB.PublicKey || id.Fingerprint != idB.Fingerprint {
		t.Errorf("identity --json on B: exit %d %v: %s", code, err, out)
	}

	out, _, code, _ = c.a.runCLI(cctx, "clawmatrix", "status")
	if code != 0 || !strings.Contains(out, "node "+nodeA+" (clawmatrix ") || !strings.Contains(out, "\n  "+nodeB+"  connected") {
		t.Errorf("status text (exit %d):\n%s", code, out)
	}

	// The same config with another state dir: its key is not the one of
	// the gateway on that port.
	_, errOut, code, _ = c.insp.runCLI(cctx, "clawmatrix", "status")
	if want := "refused the proxy key of the state dir " + c.insp.stateDir(); code != 1 || !strings.Contains(errOut, want) {
		t.Errorf("status from another state dir: exit %d, stderr lacks %q:\n%s", code, want, tailString(errOut, 10))
	}

	// revoke: B's links are cut at once (4012) and it stays out.
	out, errOut, code, _ = c.a.runCLI(cctx, "clawmatrix", "revoke", nodeB)
	if code != 0 || !strings.Contains(out, "revoked node "+nodeB+" (key "+idB.Fingerprint+")") ||
		!strings.Contains(out, "the running gateway applied it: node "+nodeB+" is cut off (its links closed with 4012) and cannot rejoin") {
		t.Fatalf("revoke: exit %d\nstdout: %s\nstderr: %s", code, out, tailString(errOut, 10))
	}
	bLog := filepath.Join(c.b.stateDir(), "clawmatrix", "sidecar.log")
	err = waitFor(cctx, 500*time.Millisecond, func() error {
		if b, _ := os.ReadFile(bLog); !bytes.Contains(b, []byte("4012")) {
			return errors.New("B's sidecar log does not show close code 4012")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	time.Sleep(5 * time.Second) // B redials meanwhile
	for _, g := range []*gateway{c.a, c.b} {
		s, err := c.liveStatus(cctx, g)
		if err != nil {
			t.Fatal(err)
		}
		other := map[*gateway]string{c.a: nodeB, c.b: nodeA}[g]
		if state, _, revoked := s.peer(other); state != "down" || revoked != (g == c.a) {
			t.Errorf("after the revoke %s sees %s as %q (revoked %v), want down", g.name, other, state, revoked)
		}
	}

	// trust undoes it, live as well.
	out, errOut, code, _ = c.a.runCLI(cctx, "clawmatrix", "trust", nodeB, idB.PublicKey, "--json")
	var res struct {
		Fingerprint string
		Gateway     struct{ Running, Applied bool }
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Fingerprint != idB.Fingerprint || !res.Gateway.Running || !res.Gateway.Applied {
		t.Fatalf("trust --json: exit %d\nstdout: %s\nstderr: %s", code, out, tailString(errOut, 10))
	}
	err = waitFor(cctx, time.Second, func() error {
		s, err := c.liveStatus(cctx, c.a)
		if err != nil {
			return err
		}
		if state, _, revoked := s.peer(nodeB); state != "connected" || revoked {
			return fmt.Errorf("A sees %s as %q (revoked %v)", nodeB, state, revoked)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("B did not come back after trust: %v", err)
	}
}

// testCLIWithoutGateway: once the gateways have stopped, the commands say
// that no gateway runs, and exit 1.
func testCLIWithoutGateway(ctx context.Context, t *testing.T, c *cluster) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	want := fmt.Sprintf("no gateway is running clawmatrix with the state dir %s: nothing answers on 127.0.0.1:%d", c.a.stateDir(), c.proxyPort[c.a])
	for _, cmd := range []string{"status", "identity"} {
		out, errOut, code, err := c.a.runCLI(cctx, "clawmatrix", cmd)
		if err != nil || code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("%s with no gateway: exit %d %v\nstdout: %s\nstderr: %s", cmd, code, err, out, tailString(errOut, 10))
		}
	}
}
