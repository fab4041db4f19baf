package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/identity"
	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/status"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
	"github.com/clawmatrix/clawmatrix/schema"
)

// startGatewayNode starts a node the way the sidecar does under OpenClaw:
// its node key and known-nodes file in stateDir.
func startGatewayNode(t *testing.T, raw, stateDir string, logs io.Writer) *Runtime {
	t.Helper()
	cfg, problems := schema.Parse([]byte(raw))
	if len(problems) > 0 {
		t.Fatalf("config %s: %v", raw, problems)
	}
	local := mesh.DefaultLocalConfig()
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	rt, err := Start(ctx, Options{
		Config: cfg, WorkspaceDir: t.TempDir(), Mesh: &local, StateDir: stateDir,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func snapshotPeer(s status.Snapshot, id string) (status.Peer, bool) {
	for _, p := range s.Peers {
		if p.NodeID == id {
			return p, true
		}
	}
	return status.Peer{}, false
}

// waitSnapshot polls rt's /status.json until cond holds.
func waitSnapshot(t *testing.T, rt *Runtime, what string, cond func(status.Snapshot) bool) status.Snapshot {
	t.Helper()
	deadline := time.Now().Add(testDeadline)
	for {
		body := get(t, rt, "/status.json")
		var s status.Snapshot
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("/status.json is not JSON: %v\n%s", err, body)
		}
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status: %s", what, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// /status.json carries the node's own key and each peer's, as the
// `openclaw clawmatrix status` and `identity` commands show them.
func TestStatusKeys(t *testing.T) {
	var logs syncBuffer
	aState := t.TempDir()
	a := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"a","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0}`, testSecret), aState, &logs)
	b := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"b","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0,"peers":[{"url":%q}]}`,
		testSecret, a.Mesh().URL()), t.TempDir(), &logs)
	c := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"c","secret":%q,"proxyPort":0,"peers":[{"url":%q}]}`, testSecret, b.Mesh().URL()), t.TempDir(), &logs)

	s := waitSnapshot(t, a, "b connected, c relayed", func(s status.Snapshot) bool {
		pb, okb := snapshotPeer(s, "b")
		pc, okc := snapshotPeer(s, "c")
		return okb && pb.Status == string(mesh.StatusConnected) && okc && pc.Status == string(mesh.StatusRelay)
	})
	keyFile, _ := schema.IdentityPaths(nil, aState, "")
	key, created, err := identity.LoadOrCreate(keyFile)
	if err != nil || created {
		t.Fatalf("a's key file %s: created %v, %v", keyFile, created, err)
	}
	pub := identity.Public(key)
	if s.Node.PublicKey != identity.FormatPublicKey(pub) || s.Node.Fingerprint != identity.Fingerprint(pub) {
		t.Errorf("node keys = %q %q, want a's key file's", s.Node.PublicKey, s.Node.Fingerprint)
	}
	for _, rt := range []*Runtime{b, c} {
		p, _ := snapshotPeer(s, rt.NodeID())
		if p.Fingerprint != identity.Fingerprint(rt.Mesh().PublicKey()) || p.Revoked {
			t.Errorf("peer %s = %+v, want its key %s", rt.NodeID(), p, identity.Fingerprint(rt.Mesh().PublicKey()))
		}
	}
	// A node that left keeps the key pinned for it.
	c.Close()
	s = waitSnapshot(t, a, "c down", func(s status.Snapshot) bool {
		p, ok := snapshotPeer(s, "c")
		return ok && p.Status == telemetry.StateDown
	})
	if p, _ := snapshotPeer(s, "c"); p.Fingerprint != identity.Fingerprint(c.Mesh().PublicKey()) {
		t.Errorf("down c = %+v, want its pinned key", p)
	}
}

// The revoke command, run while the node runs, takes effect at once: the
// link to the revoked node closes with 4012, it cannot come back, and the
// status and its errors say so; trust lets it back.
func TestRevokeWhileRunning(t *testing.T) {
	var aLogs, bLogs syncBuffer
	aState := t.TempDir()
	a := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"a","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0}`, testSecret), aState, &aLogs)
	b := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"b","secret":%q,"proxyPort":0,"peers":[{"url":%q,"nodeId":"a"}]}`, testSecret, a.Mesh().URL()), t.TempDir(), &bLogs)
	waitSnapshot(t, a, "b linked", func(s status.Snapshot) bool {
		p, ok := snapshotPeer(s, "b")
		return ok && p.Status == string(mesh.StatusConnected)
	})

	// What `clawmatrix-plugin revoke --state DIR b` does: its own store on
	// the same file.
	_, knownFile := schema.IdentityPaths(nil, aState, "")
	command, err := identity.OpenKnownNodes(knownFile, identity.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := command.Revoke("b"); err != nil {
		t.Fatal(err)
	}
	s := waitSnapshot(t, a, "b down and revoked", func(s status.Snapshot) bool {
		p, ok := snapshotPeer(s, "b")
		return ok && p.Status == telemetry.StateDown && p.Revoked
	})
	if p, _ := snapshotPeer(s, "b"); p.Fingerprint != identity.Fingerprint(b.Mesh().PublicKey()) {
		t.Errorf("revoked b = %+v", p)
	}
	if !strings.Contains(get(t, a, "/status.json"), `"node b was cut off: its key is no longer trusted here`) {
		t.Errorf("the status errors do not say b was cut off")
	}
	// b heard 4012, on the cut and on its redials.
	deadline := time.Now().Add(testDeadline)
	for !strings.Contains(bLogs.String(), "code 4012") {
		if time.Now().After(deadline) {
			t.Fatalf("b never heard close code 4012; b's log:\n%s", bLogs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	refused := a.Mesh().Stats().AuthFailed
	for a.Mesh().Stats().AuthFailed < refused+2 {
		if time.Now().After(deadline) {
			t.Fatal("b stopped redialing, so its refusal was not tested")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, ok := a.Mesh().Peer("b"); ok {
		t.Fatal("revoked b is back on a")
	}
	if !strings.Contains(aLogs.String(), "cut off the nodes it no longer admits") {
		t.Errorf("a's log does not say it cut b off:\n%s", aLogs.String())
	}

	// trust undoes it.
	if err := command.Pin("b", b.Mesh().PublicKey()); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, a, "b back", func(s status.Snapshot) bool {
		p, ok := snapshotPeer(s, "b")
		return ok && p.Status == string(mesh.StatusConnected) && !p.Revoked
	})
}

// A known-nodes file broken while the node runs changes nothing and is
// reported once; the node keeps its links.
func TestBrokenKnownNodesFileWhileRunning(t *testing.T) {
	var logs syncBuffer
	aState := t.TempDir()
	a := startGatewayNode(t, fmt.Sprintf(`{"nodeId":"a","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":0,"proxyPort":0}`, testSecret), aState, &logs)
	startGatewayNode(t, fmt.Sprintf(`{"nodeId":"b","secret":%q,"proxyPort":0,"peers":[{"url":%q}]}`, testSecret, a.Mesh().URL()), t.TempDir(), &logs)
	waitSnapshot(t, a, "b linked", func(s status.Snapshot) bool { _, ok := snapshotPeer(s, "b"); return ok })
	_, knownFile := schema.IdentityPaths(nil, aState, "")
	if err := writeFileAtomic(knownFile, `{"version": 1, "nodes": {"b": {"revoked": tru`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(testDeadline)
	for !strings.Contains(logs.String(), "known nodes file changed but cannot be used") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning about the broken file:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(2 * knownNodesPoll) // more polls: still one warning, b still linked
	if n := strings.Count(logs.String(), "known nodes file changed but cannot be used"); n != 1 {
		t.Errorf("the broken file was reported %d times, want once", n)
	}
	if p, ok := a.Mesh().Peer("b"); !ok || p.Status != mesh.StatusConnected {
		t.Errorf("b after the broken file: %+v %v", p, ok)
	}
}

// writeFileAtomic replaces path with content, mode 0600, as an editor that
// saves through a new file does.
func writeFileAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
