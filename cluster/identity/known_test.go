package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newPub(t testing.TB) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func open(t *testing.T, path string, opts Options) *KnownNodes {
	t.Helper()
	k, err := OpenKnownNodes(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// step is one call on a store and what it must answer.
type step struct {
	op     string // admit, pin, revoke, reopen
	node   string
	key    int // index into keys
	reason error
	want   []string // parts of the error message; "fp:N" stands for keys[N]'s fingerprint, "pk:N" for its text form
}

func TestKnownNodes(t *testing.T) {
	tests := []struct {
		name  string
		opts  func(keys []ed25519.PublicKey) Options
		steps []step
	}{
		{
			name: "first key is pinned and survives a restart",
			steps: []step{
				{op: "admit", node: "b", key: 0},
				{op: "admit", node: "b", key: 0},
				{op: "reopen"},
				{op: "admit", node: "b", key: 0},
				{op: "admit", node: "b", key: 1, reason: ErrKeyChanged,
					want: []string{`"b"`, "fp:0", "fp:1", "clawmatrix-plugin trust --config /etc/a.json b pk:1"}},
			},
		},
		{
			name: "a changed key is refused until re-pinned",
			steps: []step{
				{op: "admit", node: "b", key: 0},
				{op: "admit", node: "b", key: 1, reason: ErrKeyChanged, want: []string{"fp:0", "fp:1", "re-pin"}},
				{op: "pin", node: "b", key: 1},
				{op: "admit", node: "b", key: 1},
				{op: "admit", node: "b", key: 0, reason: ErrKeyChanged},
				{op: "reopen"},
				{op: "admit", node: "b", key: 1},
			},
		},
		{
			name: "one key may serve two ids",
			steps: []step{
				{op: "admit", node: "b", key: 0},
				{op: "admit", node: "c", key: 0},
			},
		},
		{
			name: "revoke refuses the id and its key for good",
			steps: []step{
				{op: "admit", node: "b", key: 0},
				{op: "revoke", node: "b"},
				{op: "admit", node: "b", key: 0, reason: ErrRevoked, want: []string{`"b"`, "revoked", "clawmatrix-plugin trust --config /etc/a.json b pk:0"}},
				{op: "admit", node: "b", key: 1, reason: ErrRevoked},
				{op: "admit", node: "b2", key: 0, reason: ErrRevoked, want: []string{`"b2"`, `revoked node "b"`, "fp:0"}},
				{op: "admit", node: "b3", key: 1},
				{op: "reopen"},
				{op: "admit", node: "b", key: 0, reason: ErrRevoked},
				{op: "admit", node: "b2", key: 0, reason: ErrRevoked},
				{op: "pin", node: "b", key: 2},
				{op: "admit", node: "b", key: 2},
				{op: "admit", node: "b", key: 0, reason: ErrKeyChanged},
			},
		},
		{
			name: "revoke an id never seen",
			steps: []step{
				{op: "revoke", node: "x"},
				{op: "reopen"},
				{op: "admit", node: "x", key: 0, reason: ErrRevoked},
			},
		},
		{
			name: "revoked by config",
			opts: func([]ed25519.PublicKey) Options { return Options{Revoked: []string{"b"}} },
			steps: []step{
				{op: "admit", node: "b", key: 0, reason: ErrRevoked, want: []string{"revoked list"}},
				{op: "pin", node: "b", key: 0},
				{op: "admit", node: "b", key: 0, reason: ErrRevoked},
				{op: "admit", node: "c", key: 0, reason: ErrRevoked, want: []string{`revoked node "b"`}},
			},
		},
		{
			name: "strict mode admits only the listed pairs",
			opts: func(keys []ed25519.PublicKey) Options {
				return Options{Trusted: []Trusted{{"b", keys[0]}, {"c", keys[1]}}}
			},
			steps: []step{
				{op: "admit", node: "b", key: 0},
				{op: "admit", node: "c", key: 1},
				{op: "admit", node: "b", key: 1, reason: ErrKeyChanged, want: []string{"fp:0", "fp:1", "trust", "pk:1"}},
				{op: "admit", node: "d", key: 2, reason: ErrNotTrusted, want: []string{`"d"`, "fp:2", `add {"nodeId": "d", "publicKey": "pk:2"} to trust`}},
				{op: "pin", node: "d", key: 2},
				{op: "admit", node: "d", key: 2, reason: ErrNotTrusted},
				{op: "revoke", node: "b"},
				{op: "admit", node: "b", key: 0, reason: ErrRevoked},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			keys := []ed25519.PublicKey{newPub(t), newPub(t), newPub(t)}
			opts := Options{}
			if tc.opts != nil {
				opts = tc.opts(keys)
			}
			opts.CommandFlags = "--config /etc/a.json"
			opts.OnPersistError = func(err error) { t.Errorf("persist: %v", err) }
			path := filepath.Join(t.TempDir(), "known_nodes.json")
			k := open(t, path, opts)
			for i, s := range tc.steps {
				var err error
				switch s.op {
				case "admit":
					err = k.Admit(s.node, keys[s.key])
				case "pin":
					err = k.Pin(s.node, keys[s.key])
				case "revoke":
					err = k.Revoke(s.node)
				case "reopen":
					k = open(t, path, opts)
					continue
				}
				where := fmt.Sprintf("step %d (%s %s key %d)", i, s.op, s.node, s.key)
				if s.reason == nil {
					if err != nil {
						t.Fatalf("%s: %v", where, err)
					}
					continue
				}
				var re *RefusedError
				if !errors.Is(err, s.reason) || !errors.As(err, &re) || re.NodeID != s.node {
					t.Fatalf("%s: err = %v, want %v", where, err, s.reason)
				}
				for _, w := range s.want {
					for j, key := range keys {
						w = strings.ReplaceAll(w, fmt.Sprintf("fp:%d", j), Fingerprint(key))
						w = strings.ReplaceAll(w, fmt.Sprintf("pk:%d", j), FormatPublicKey(key))
					}
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: error %q lacks %q", where, err, w)
					}
				}
			}
		})
	}
}

func TestKnownNodesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "known_nodes.json")
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	k := open(t, path, Options{Now: func() time.Time { return at }})
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("opening made the file: %v", err)
	}
	b := newPub(t)
	if err := k.Admit("b", b); err != nil {
		t.Fatal(err)
	}
	if err := k.Revoke("c"); err != nil {
		t.Fatal(err)
	}
	assertMode(t, path, 0o600)
	var doc map[string]any
	raw, _ := os.ReadFile(path)
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"version": 1.0,
		"nodes": map[string]any{
			"b": map[string]any{"publicKey": FormatPublicKey(b), "firstSeen": "2026-03-01T12:00:00Z"},
			"c": map[string]any{"revoked": true},
		},
	}
	if fmt.Sprint(doc) != fmt.Sprint(want) {
		t.Errorf("file:\n%s\nwant %v", raw, want)
	}
	list := open(t, path, Options{Revoked: []string{"z"}}).List()
	if len(list) != 3 || list[0].NodeID != "b" || !list[0].PublicKey.Equal(b) || !list[0].FirstSeen.Equal(at) || list[0].Revoked ||
		list[1].NodeID != "c" || !list[1].Revoked || list[1].PublicKey != nil || list[2].NodeID != "z" || !list[2].Revoked {
		t.Errorf("List = %+v", list)
	}
}

// A node running with the store open must not undo what the trust or revoke
// command wrote meanwhile when it pins a new node.
func TestKnownNodesKeepsConcurrentEdits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_nodes.json")
	running := open(t, path, Options{})
	b, c := newPub(t), newPub(t)
	if err := running.Admit("b", b); err != nil {
		t.Fatal(err)
	}
	if err := open(t, path, Options{}).Revoke("b"); err != nil { // the CLI
		t.Fatal(err)
	}
	if err := running.Admit("c", c); err != nil {
		t.Fatal(err)
	}
	if err := open(t, path, Options{}).Admit("b", b); !errors.Is(err, ErrRevoked) {
		t.Fatalf("the revocation was lost: %v", err)
	}
}

func TestKnownNodesRefusesBadFiles(t *testing.T) {
	pk := FormatPublicKey(newPub(t))
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"not JSON", "{", 0o600, "not a valid known-nodes file"},
		{"unknown field", `{"version":1,"nodes":{},"extra":1}`, 0o600, "unknown field"},
		{"future version", `{"version":2,"nodes":{}}`, 0o600, "version 2"},
		{"bad key", `{"version":1,"nodes":{"b":{"publicKey":"rsa:xyz"}}}`, 0o600, `node "b"`},
		{"no key", `{"version":1,"nodes":{"b":{}}}`, 0o600, `node "b" has no publicKey`},
		{"world writable", `{"version":1,"nodes":{"b":{"publicKey":"` + pk + `"}}}`, 0o602, "chmod 600"},
		{"group writable", `{"version":1,"nodes":{}}`, 0o620, "chmod 600"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "known_nodes.json")
			os.WriteFile(path, []byte(tc.content), tc.mode)
			os.Chmod(path, tc.mode)
			_, err := OpenKnownNodes(path, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want one naming %s and containing %q", err, path, tc.want)
			}
		})
	}
	t.Run("readable by others is fine", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "known_nodes.json")
		os.WriteFile(path, []byte(`{"version":1,"nodes":{"b":{"publicKey":"`+pk+`"}}}`), 0o644)
		os.Chmod(path, 0o644)
		if _, err := OpenKnownNodes(path, Options{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("empty file is an empty store", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "known_nodes.json")
		os.WriteFile(path, nil, 0o600)
		if _, err := OpenKnownNodes(path, Options{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("conflicting trust entries", func(t *testing.T) {
		_, err := OpenKnownNodes(filepath.Join(t.TempDir(), "k.json"), Options{Trusted: []Trusted{{"b", newPub(t)}, {"b", newPub(t)}}})
		if err == nil || !strings.Contains(err.Error(), "trust[1]") {
			t.Fatalf("err = %v", err)
		}
	})
}

// A save that fails does not refuse the node; the failure reaches the
// callback.
func TestKnownNodesPersistFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "gone")
	var got []error
	var mu sync.Mutex
	k := open(t, filepath.Join(dir, "known_nodes.json"), Options{OnPersistError: func(err error) {
		mu.Lock()
		got = append(got, err)
		mu.Unlock()
	}})
	b := newPub(t)
	if err := k.Admit("b", b); err != nil {
		t.Fatalf("Admit refused over a save failure: %v", err)
	}
	if len(got) != 1 || !strings.Contains(got[0].Error(), "cannot save") {
		t.Fatalf("persist errors = %v", got)
	}
	if err := k.Admit("b", newPub(t)); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("the pin did not hold in memory: %v", err)
	}
	if err := k.Revoke("b"); err == nil {
		t.Fatal("Revoke hid a save failure")
	}
}

func TestKnownNodesConcurrentAdmit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_nodes.json")
	k := open(t, path, Options{OnPersistError: func(err error) { t.Error(err) }})
	const nodes, callers = 16, 8
	keys := make([]ed25519.PublicKey, nodes)
	for i := range keys {
		keys[i] = newPub(t)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	admitted := map[string]int{}
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range nodes {
				id := fmt.Sprintf("n%d", i)
				// Half the callers bring a rival key for every id: exactly
				// one key per id may win, whichever came first.
				key := keys[i]
				if c%2 == 1 {
					key = keys[(i+1)%nodes]
				}
				err := k.Admit(id, key)
				if err != nil && !errors.Is(err, ErrKeyChanged) {
					t.Error(err)
				}
				if err == nil {
					mu.Lock()
					admitted[id+FormatPublicKey(key)]++
					mu.Unlock()
				}
				k.List()
			}
		}()
	}
	wg.Wait()
	if len(admitted) != nodes {
		t.Errorf("%d (id, key) pairs admitted, want exactly one per id (%d)", len(admitted), nodes)
	}
	reloaded := open(t, path, Options{}).List()
	if len(reloaded) != nodes {
		t.Fatalf("file holds %d nodes, want %d", len(reloaded), nodes)
	}
	for _, e := range reloaded {
		if _, ok := admitted[e.NodeID+FormatPublicKey(e.PublicKey)]; !ok {
			t.Errorf("file pins %s to a key that was not the one admitted", e.NodeID)
		}
	}
}

// A running node's store takes up what the trust and revoke commands (a
// second store on the same file) change, and only when the file changed.
func TestKnownNodesReloadIfChanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "known_nodes.json")
	running := open(t, path, Options{OnPersistError: func(err error) { t.Error(err) }})
	x, y, y2 := newPub(t), newPub(t), newPub(t)
	for id, key := range map[string]ed25519.PublicKey{"x": x, "y": y} {
		if err := running.Admit(id, key); err != nil {
			t.Fatal(err)
		}
	}
	reload := func(want bool) {
		t.Helper()
		got, err := running.ReloadIfChanged()
		if err != nil || got != want {
			t.Fatalf("ReloadIfChanged() = %v, %v; want %v, nil", got, err, want)
		}
	}
	reload(false) // its own saves are not news

	command := open(t, path, Options{})
	if err := command.Revoke("x"); err != nil {
		t.Fatal(err)
	}
	if err := command.Pin("y", y2); err != nil {
		t.Fatal(err)
	}
	if err := running.Admit("x", x); err != nil {
		t.Fatalf("before the reload the change is not seen yet: %v", err)
	}
	reload(true)
	reload(false)
	if err := running.Admit("x", x); !errors.Is(err, ErrRevoked) {
		t.Fatalf("revoked x after the reload: %v", err)
	}
	if err := running.Admit("y", y2); err != nil {
		t.Fatalf("y with its newly pinned key: %v", err)
	}
	if err := running.Admit("y", y); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("y with its old key: %v", err)
	}

	// A broken file changes nothing and is reported once; fixing it is
	// taken up.
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(`{"version": 1, "nodes": {`), 0o600); err != nil {
		t.Fatal(err)
	}
	if changed, err := running.ReloadIfChanged(); changed || err == nil || !strings.Contains(err.Error(), "not a valid known-nodes file") {
		t.Fatalf("broken file: ReloadIfChanged() = %v, %v", changed, err)
	}
	reload(false)
	if err := running.Admit("x", x); !errors.Is(err, ErrRevoked) {
		t.Fatalf("a broken file undid the revoke: %v", err)
	}
	if err := os.WriteFile(path+".new", good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	reload(true)

	// A file others may write is refused, as at open.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if _, err := running.ReloadIfChanged(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-writable file: %v", err)
	}
}

// A pin that could not be saved survives a reload: the file never had the
// chance to record it.
func TestKnownNodesReloadKeepsUnsavedPins(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "later")
	path := filepath.Join(dir, "known_nodes.json")
	running := open(t, path, Options{})
	b := newPub(t)
	if err := running.Admit("b", b); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := open(t, path, Options{}).Revoke("x"); err != nil {
		t.Fatal(err)
	}
	if changed, err := running.ReloadIfChanged(); !changed || err != nil {
		t.Fatalf("ReloadIfChanged() = %v, %v", changed, err)
	}
	if err := running.Admit("b", newPub(t)); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("the unsaved pin of b was lost in the reload: %v", err)
	}
	if err := running.Admit("x", newPub(t)); !errors.Is(err, ErrRevoked) {
		t.Fatalf("x: %v", err)
	}
}
