package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// Reasons Admit refuses a node; test them with errors.Is. The error itself
// is a *RefusedError whose message is meant for the operator's log.
var (
	// ErrKeyChanged: the node id is pinned (or listed in trust) with a
	// different key.
	ErrKeyChanged = errors.New("node key changed")
	// ErrRevoked: the node id, or the key presented, was revoked.
	ErrRevoked = errors.New("node revoked")
	// ErrNotTrusted: strict mode, and the node id is not in the trust list.
	ErrNotTrusted = errors.New("node not trusted")
)

// RefusedError is why Admit turned a node away. Its message names the node
// id, the fingerprints involved and the operator command that changes the
// outcome; it never holds a secret.
type RefusedError struct {
	NodeID string
	Reason error // ErrKeyChanged, ErrRevoked or ErrNotTrusted
	msg    string
}

func (e *RefusedError) Error() string { return e.msg }
func (e *RefusedError) Unwrap() error { return e.Reason }

// Trusted is one entry of the strict trust list.
type Trusted struct {
	NodeID    string
	PublicKey ed25519.PublicKey
}

// Options tune a KnownNodes store.
type Options struct {
	// Trusted, when not empty, turns on strict mode: Admit accepts exactly
	// the listed id and key pairs and pins nothing.
	Trusted []Trusted
	// Revoked lists node ids revoked by configuration. They are refused
	// like ids revoked in the file, but the file does not record them:
	// taking an id off this list lets it back.
	Revoked []string
	// CommandFlags is how the clawmatrix-plugin trust and revoke commands
	// find this store, quoted in refusal messages; default "--config FILE".
	CommandFlags string
	// OnPersistError hears of a failure to save the file after Admit pinned
	// a new node. Admit still admits: the pin holds in memory until the
	// process ends, and the next change tries to save again. Nil ignores
	// such failures.
	OnPersistError func(error)
	// Now is the clock for firstSeen; default time.Now.
	Now func() time.Time
}

// Entry is one node in the store, as List returns it.
type Entry struct {
	NodeID string
	// PublicKey is nil for an id revoked before any key was seen for it.
	PublicKey ed25519.PublicKey
	FirstSeen time.Time
	// Revoked is true if the id is revoked in the file or by Options.Revoked.
	Revoked bool
}

// KnownNodes pins the key each node id was first seen with (trust on first
// use, like SSH's known_hosts), refuses a different key for a pinned id,
// and refuses revoked ids and their keys. Strict mode (Options.Trusted)
// accepts only listed pairs instead.
//
// The file is JSON, mode 0600, replaced atomically on each change:
//
//	{"version": 1, "nodes": {"<nodeId>": {"publicKey": "ed25519:...",
//	  "firstSeen": "<RFC 3339 time>", "revoked": false}}}
//
// The in-memory state, read by OpenKnownNodes and again by Reload, is what
// Admit decides by. A change is saved by reading the file again and applying
// only that change to it, so an edit made meanwhile by the trust or revoke
// command is kept on disk, not overwritten; a running node takes such an
// edit up with ReloadIfChanged.
//
// A KnownNodes is safe for concurrent use. It knows nothing of this node's
// own id: callers handle that.
type KnownNodes struct {
	path  string
	opts  Options
	now   func() time.Time
	flags string

	strict      map[string]ed25519.PublicKey
	confRevoked map[string]bool

	mu    sync.Mutex
	nodes map[string]*record
	// seen is the file as last read or written by this store, so that
	// ReloadIfChanged reads it again only after someone else changed it.
	seen fileStamp
}

type record struct {
	pub       ed25519.PublicKey
	firstSeen time.Time
	revoked   bool
	// unsaved: pinned by Admit, but saving the file failed; a reload keeps
	// it, since the file never had the chance to record it.
	unsaved bool
}

// fileStamp tells one version of a file from another: replacing the file
// (as every save does) changes the inode, an edit in place the size or the
// modification time, a chmod the status change time.
type fileStamp struct {
	exists bool
	ino    uint64
	size   int64
	mtime  time.Time
	ctime  int64
}

func stampOf(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	ino, ctime := inode(st)
	return fileStamp{exists: true, ino: ino, size: st.Size(), mtime: st.ModTime(), ctime: ctime}
}

// fileVersion is the version of the known-nodes file format.
const fileVersion = 1

type fileDoc struct {
	Version int                  `json:"version"`
	Nodes   map[string]fileEntry `json:"nodes"`
}

type fileEntry struct {
	PublicKey string    `json:"publicKey,omitempty"`
	FirstSeen time.Time `json:"firstSeen,omitzero"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// OpenKnownNodes reads the store at path; a missing file is an empty store
// (the file is made on the first change). The file must not be writable by
// group or others.
func OpenKnownNodes(path string, opts Options) (*KnownNodes, error) {
	if path == "" {
		return nil, errors.New("no known-nodes file given")
	}
	k := &KnownNodes{
		path:        path,
		opts:        opts,
		now:         opts.Now,
		flags:       opts.CommandFlags,
		strict:      map[string]ed25519.PublicKey{},
		confRevoked: map[string]bool{},
	}
	if k.now == nil {
		k.now = time.Now
	}
	if k.flags == "" {
		k.flags = "--config FILE"
	}
	for i, t := range opts.Trusted {
		if t.NodeID == "" || len(t.PublicKey) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("trust[%d]: needs a node id and a %d-byte Ed25519 public key", i, ed25519.PublicKeySize)
		}
		if prev, dup := k.strict[t.NodeID]; dup && !prev.Equal(t.PublicKey) {
			return nil, fmt.Errorf("trust[%d]: node %q is listed twice with different keys", i, t.NodeID)
		}
		k.strict[t.NodeID] = t.PublicKey
	}
	for _, id := range opts.Revoked {
		k.confRevoked[id] = true
	}
	k.seen = stampOf(path)
	doc, err := readDoc(path)
	if err != nil {
		return nil, err
	}
	k.nodes, err = doc.records(path)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// ReloadIfChanged reads the file again if it changed since this store last
// read or wrote it (the trust or revoke command, or an edit by hand), and
// reports whether it did. From then on the file is what Admit decides by,
// plus the pins that Admit could not save. A file that cannot be read or is
// not valid leaves the store as it was and returns the error; the next call
// tries again only once the file changes again.
func (k *KnownNodes) ReloadIfChanged() (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := stampOf(k.path)
	if now == k.seen {
		return false, nil
	}
	k.seen = now
	doc, err := readDoc(k.path)
	if err != nil {
		return false, err
	}
	nodes, err := doc.records(k.path)
	if err != nil {
		return false, err
	}
	for id, r := range k.nodes {
		if _, there := nodes[id]; !there && r.unsaved {
			nodes[id] = r
		}
	}
	k.nodes = nodes
	return true, nil
}

// Path is the file the store is kept in.
func (k *KnownNodes) Path() string { return k.path }

// Strict reports whether only the Options.Trusted pairs are admitted.
func (k *KnownNodes) Strict() bool { return len(k.strict) > 0 }

// Admit decides whether nodeID may join with pub. In trust-on-first-use
// mode the first key seen for an id is pinned and saved; see Options for
// what happens when saving fails. A refusal is a *RefusedError.
func (k *KnownNodes) Admit(nodeID string, pub ed25519.PublicKey) error {
	if err := checkArgs("admit", nodeID, pub); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	rec := k.nodes[nodeID]
	if k.confRevoked[nodeID] {
		return k.refuse(nodeID, ErrRevoked,
			"node %q (key %s) refused: it is revoked by this node's config (the revoked list); take it off that list to let it back",
			nodeID, Fingerprint(pub))
	}
	if rec != nil && rec.revoked {
		return k.refuse(nodeID, ErrRevoked,
			"node %q (key %s) refused: it was revoked; if it should come back with this key, run: clawmatrix-plugin trust %s %s %s",
			nodeID, Fingerprint(pub), k.flags, nodeID, FormatPublicKey(pub))
	}
	if k.Strict() {
		want, listed := k.strict[nodeID]
		switch {
		case listed && want.Equal(pub):
			return nil
		case listed:
			return k.refuse(nodeID, ErrKeyChanged,
				"node %q refused: it presented key %s but trust lists %s for it; if its key really changed, set its publicKey in trust to %s",
				nodeID, Fingerprint(pub), Fingerprint(want), FormatPublicKey(pub))
		}
		return k.refuse(nodeID, ErrNotTrusted,
			"node %q (key %s) refused: trust is set, and only the nodes it lists may join; to accept this one, add {\"nodeId\": %q, \"publicKey\": %q} to trust",
			nodeID, Fingerprint(pub), nodeID, FormatPublicKey(pub))
	}
	if rec != nil && rec.pub != nil {
		if rec.pub.Equal(pub) {
			return nil
		}
		return k.refuse(nodeID, ErrKeyChanged,
			"node %q refused: it presented key %s but key %s is pinned for it (first seen %s). "+
				"If the node really has a new key (its key file was lost or replaced), re-pin it with: clawmatrix-plugin trust %s %s %s; otherwise another machine is using its id",
			nodeID, Fingerprint(pub), Fingerprint(rec.pub), rec.firstSeen.UTC().Format(time.RFC3339), k.flags, nodeID, FormatPublicKey(pub))
	}
	if owner := k.revokedOwner(pub); owner != "" {
		return k.refuse(nodeID, ErrRevoked,
			"node %q refused: its key %s is the key of revoked node %q; if this is intended, run: clawmatrix-plugin trust %s %s %s",
			nodeID, Fingerprint(pub), owner, k.flags, nodeID, FormatPublicKey(pub))
	}
	rec = k.recordLocked(nodeID)
	rec.pub = slices.Clone(pub)
	rec.firstSeen = k.now().UTC()
	pinned := *rec
	err := k.persist(func(m map[string]fileEntry) {
		// Keep an operator's edit made since the store was opened.
		if _, there := m[nodeID]; !there {
			m[nodeID] = pinned.entry()
		}
	})
	rec.unsaved = err != nil
	if err != nil && k.opts.OnPersistError != nil {
		k.opts.OnPersistError(err)
	}
	return nil
}

// revokedOwner returns the id of a revoked node whose pinned key is pub,
// or "". Called with mu held.
func (k *KnownNodes) revokedOwner(pub ed25519.PublicKey) string {
	owners := []string{}
	for id, r := range k.nodes {
		if (r.revoked || k.confRevoked[id]) && r.pub != nil && r.pub.Equal(pub) {
			owners = append(owners, id)
		}
	}
	if len(owners) == 0 {
		return ""
	}
	slices.Sort(owners)
	return owners[0]
}

// checkArgs refuses what no store operation can take.
func checkArgs(op, nodeID string, pub ed25519.PublicKey) error {
	if nodeID == "" {
		return fmt.Errorf("%s: empty node id", op)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%s %q: public key is %d bytes, want %d", op, nodeID, len(pub), ed25519.PublicKeySize)
	}
	return nil
}

// recordLocked returns nodeID's record, adding an empty one (mu held).
func (k *KnownNodes) recordLocked(nodeID string) *record {
	rec := k.nodes[nodeID]
	if rec == nil {
		rec = &record{}
		k.nodes[nodeID] = rec
	}
	return rec
}

func (k *KnownNodes) refuse(nodeID string, reason error, format string, args ...any) error {
	return &RefusedError{NodeID: nodeID, Reason: reason, msg: fmt.Sprintf(format, args...)}
}

// Pin sets the key of nodeID, replacing any pinned key and clearing a
// revocation recorded in the file: the operator's answer to ErrKeyChanged
// or to a revocation to undo. An id revoked by Options.Revoked stays
// refused until it is taken off that list, and strict mode still admits
// only the trust list. The file is saved before Pin returns.
func (k *KnownNodes) Pin(nodeID string, pub ed25519.PublicKey) error {
	if err := checkArgs("pin", nodeID, pub); err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	rec := k.recordLocked(nodeID)
	if rec.pub == nil || !rec.pub.Equal(pub) {
		rec.pub = slices.Clone(pub)
		rec.firstSeen = k.now().UTC()
	}
	rec.revoked = false
	pinned := *rec
	err := k.persist(func(m map[string]fileEntry) { m[nodeID] = pinned.entry() })
	rec.unsaved = err != nil
	return err
}

// Revoke marks nodeID revoked for good: the id is refused whatever key it
// presents, and its pinned key is refused under any other id. Only Pin
// undoes it. The file is saved before Revoke returns.
func (k *KnownNodes) Revoke(nodeID string) error {
	if nodeID == "" {
		return errors.New("revoke: empty node id")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	rec := k.recordLocked(nodeID)
	rec.revoked = true
	revoked := *rec
	err := k.persist(func(m map[string]fileEntry) {
		e, there := m[nodeID]
		if !there {
			e = revoked.entry()
		}
		e.Revoked = true
		m[nodeID] = e
	})
	rec.unsaved = err != nil
	return err
}

// List returns every node in the store, by id. Ids revoked only by
// Options.Revoked are listed too.
func (k *KnownNodes) List() []Entry {
	k.mu.Lock()
	out := make([]Entry, 0, len(k.nodes)+len(k.confRevoked))
	for id, r := range k.nodes {
		out = append(out, Entry{
			NodeID:    id,
			PublicKey: slices.Clone(r.pub),
			FirstSeen: r.firstSeen,
			Revoked:   r.revoked || k.confRevoked[id],
		})
	}
	k.mu.Unlock()
	for id := range k.confRevoked {
		if !slices.ContainsFunc(out, func(e Entry) bool { return e.NodeID == id }) {
			out = append(out, Entry{NodeID: id, Revoked: true})
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.NodeID, b.NodeID) })
	return out
}

func (r record) entry() fileEntry {
	e := fileEntry{FirstSeen: r.firstSeen, Revoked: r.revoked}
	if r.pub != nil {
		e.PublicKey = FormatPublicKey(r.pub)
	}
	return e
}

// persist applies change to the file as it is now on disk (or, if it cannot
// be read, to the in-memory state) and writes it back. Called with mu held.
func (k *KnownNodes) persist(change func(map[string]fileEntry)) error {
	doc, err := readDoc(k.path)
	if err != nil {
		doc = k.snapshot()
	}
	change(doc.Nodes)
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("known nodes %s: %w", k.path, err)
	}
	data = append(data, '\n')
	// A change made by someone else since this store last read the file
	// is in doc now, but not in memory: leave it for ReloadIfChanged.
	before := stampOf(k.path)
	if err := writeAtomic(k.path, data); err != nil {
		return fmt.Errorf("known nodes %s: cannot save: %w", k.path, err)
	}
	if before == k.seen {
		k.seen = stampOf(k.path)
	}
	return nil
}

func (k *KnownNodes) snapshot() fileDoc {
	doc := fileDoc{Version: fileVersion, Nodes: make(map[string]fileEntry, len(k.nodes))}
	for id, r := range k.nodes {
		doc.Nodes[id] = r.entry()
	}
	return doc
}

// readDoc reads the file; a missing file is an empty document.
func readDoc(path string) (fileDoc, error) {
	empty := fileDoc{Version: fileVersion, Nodes: map[string]fileEntry{}}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return empty, nil
	}
	if err != nil {
		return fileDoc{}, fmt.Errorf("known nodes %s: cannot open: %w", path, unwrapPath(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fileDoc{}, fmt.Errorf("known nodes %s: %w", path, unwrapPath(err))
	}
	if st.IsDir() {
		return fileDoc{}, fmt.Errorf("known nodes %s: is a directory, not a file", path)
	}
	if perm := st.Mode().Perm(); runtime.GOOS != "windows" && perm&0o022 != 0 {
		return fileDoc{}, fmt.Errorf("known nodes %s: mode %04o lets other users change which keys are trusted; run: chmod 600 %s", path, perm, path)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return fileDoc{}, fmt.Errorf("known nodes %s: cannot read: %w", path, unwrapPath(err))
	}
	if len(bytes.TrimSpace(buf.Bytes())) == 0 {
		return empty, nil
	}
	var doc fileDoc
	dec := json.NewDecoder(&buf)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return fileDoc{}, fmt.Errorf("known nodes %s: not a valid known-nodes file: %v (fix it, or delete it to forget every pinned key)", path, err)
	}
	if doc.Version != fileVersion {
		return fileDoc{}, fmt.Errorf("known nodes %s: format version %d, this clawmatrix reads version %d", path, doc.Version, fileVersion)
	}
	if doc.Nodes == nil {
		doc.Nodes = map[string]fileEntry{}
	}
	return doc, nil
}

func (d fileDoc) records(path string) (map[string]*record, error) {
	out := make(map[string]*record, len(d.Nodes))
	for id, e := range d.Nodes {
		if id == "" {
			return nil, fmt.Errorf("known nodes %s: an entry has an empty node id", path)
		}
		r := &record{firstSeen: e.FirstSeen, revoked: e.Revoked}
		if e.PublicKey != "" {
			pub, err := ParsePublicKey(e.PublicKey)
			if err != nil {
				return nil, fmt.Errorf("known nodes %s: node %q: %v", path, id, err)
			}
			r.pub = pub
		} else if !e.Revoked {
			return nil, fmt.Errorf("known nodes %s: node %q has no publicKey (only a revoked entry may lack one)", path, id)
		}
		out[id] = r
	}
	return out, nil
}
