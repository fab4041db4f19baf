package delivery

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testSecret = "delivery-test-secret-0123456789"

// fastTiming retries quickly, as on loopback.
var fastTiming = Timing{RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond, CallTimeout: 5 * time.Second,
	Sweep: 50 * time.Millisecond, Drain: 200 * time.Millisecond, NoticeTimeout: 5 * time.Second}

// testNode is one mesh node with a delivery service, restartable on the
// same port and file.
type testNode struct {
	t      testing.TB
	id     string
	addr   string // listen address, kept across restarts
	path   string
	peers  []mesh.PeerAddr
	agents []mesh.AgentInfo
	tags   []string
	key    ed25519.PrivateKey // kept across restarts, as a node's key file is
	cfg    Config             // template for the service
	mesh   *mesh.Node
	svc    *Service
}

func newTestNode(t testing.TB, id string, agents ...string) *testNode {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	n := &testNode{t: t, id: id, addr: "127.0.0.1:0", path: filepath.Join(t.TempDir(), id+".db"), key: priv, cfg: Config{Timing: fastTiming}}
	for _, a := range agents {
		n.agents = append(n.agents, mesh.AgentInfo{ID: a})
	}
	return n
}

func (n *testNode) start() *testNode {
	n.t.Helper()
	mc := mesh.DefaultLocalConfig()
	mc.NodeID, mc.Secret, mc.ListenAddr, mc.Peers, mc.Identity = n.id, testSecret, n.addr, n.peers, n.key
	mc.Capabilities = mesh.Capabilities{Agents: n.agents, Tags: n.tags}
	m, err := mesh.New(mc)
	if err != nil {
		n.t.Fatal(err)
	}
	cfg := n.cfg
	cfg.Node, cfg.Path = m, n.path
	svc, err := Open(cfg)
	if err != nil {
		m.Close()
		n.t.Fatal(err)
	}
	// A restart may find the port still held for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err = m.Start(context.Background())
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		svc.Close()
		m.Close()
		n.t.Fatal(err)
	}
	n.addr = m.Addr().String()
	n.mesh, n.svc = m, svc
	return n
}

func (n *testNode) stop() {
	if n.svc == nil {
		return
	}
	n.svc.Close()
	n.mesh.Close()
	n.svc, n.mesh = nil, nil
}

func (n *testNode) url() string { return "ws://" + n.addr }

// linkTo makes n dial peer (at url, a faultnet proxy or the peer itself).
func (n *testNode) linkTo(peer *testNode, url string) {
	n.peers = append(n.peers, mesh.PeerAddr{URL: url, NodeID: peer.id})
	if n.mesh != nil {
		if err := n.mesh.AddPeer(mesh.PeerAddr{URL: url, NodeID: peer.id}); err != nil {
			n.t.Fatal(err)
		}
	}
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (n *testNode) sees(id string) bool {
	_, ok := n.mesh.Peer(id)
	return ok
}

func (n *testNode) waitSees(id string) {
	n.t.Helper()
	waitFor(n.t, 10*time.Second, n.id+" sees "+id, func() bool { return n.sees(id) })
}

// record returns one record or fails.
func (n *testNode) record(id string) Record {
	n.t.Helper()
	r, err := n.svc.Get(id)
	if err != nil {
		n.t.Fatalf("%s: record %s: %v", n.id, id, err)
	}
	return r
}

func (n *testNode) waitState(id string, want State) Record {
	n.t.Helper()
	var r Record
	waitFor(n.t, 15*time.Second, fmt.Sprintf("%s reaches %s", id, want), func() bool {
		r = n.record(id)
		return r.State == want
	})
	return r
}

func (n *testNode) send(node, agent, text string) Record {
	n.t.Helper()
	rec, err := n.svc.Enqueue(Outgoing{Kind: KindSend, Node: node, Agent: agent, Payload: textPayload(text), Summary: text})
	if err != nil {
		n.t.Fatal(err)
	}
	return rec
}

func textPayload(text string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"message": text})
	return b
}

func payloadText(p json.RawMessage) string {
	var v struct {
		Message string `json:"message"`
	}
	json.Unmarshal(p, &v)
	return v.Message
}

// testRunner is the agent side of these tests: it records what starts, in
// order, and can hold runs or slots.
type testRunner struct {
	slots chan struct{}
	hold  chan struct{} // Run waits for it (or its ctx) when not nil
	admit func(from string, agent string, payload json.RawMessage) error

	mu     sync.Mutex
	starts []string // message texts in start order
	froms  []string
}

func newTestRunner(slots int) *testRunner {
	return &testRunner{slots: make(chan struct{}, slots)}
}

func (r *testRunner) Admit(from string, kind Kind, agent string, payload json.RawMessage) error {
	if r.admit != nil {
		return r.admit(from, agent, payload)
	}
	return nil
}

func (r *testRunner) Acquire(ctx context.Context) (func(), error) {
	select {
	case r.slots <- struct{}{}:
		return func() { <-r.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (r *testRunner) Start(ctx context.Context, m Inbound) func() Outcome {
	r.mu.Lock()
	r.starts = append(r.starts, payloadText(m.Payload))
	r.froms = append(r.froms, m.From)
	hold := r.hold
	r.mu.Unlock()
	return func() Outcome {
		if hold != nil {
			select {
			case <-hold:
			case <-ctx.Done():
				return Outcome{Text: "stopped", IsError: true}
			}
		}
		return Outcome{Text: "did " + payloadText(m.Payload)}
	}
}

func (r *testRunner) started() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.starts)
}

// freeAddr reserves a loopback port and frees it, for a node that must
// listen on a port known before it starts.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
