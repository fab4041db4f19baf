package delivery

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The file's buckets. Keys join ids with a 0 byte, which no node, agent or
// message id contains; sequence numbers are 8 bytes big-endian so that keys
// sort in sending order.
var (
	bucketMeta    = []byte("meta")    // "epoch" → this outbox's epoch
	bucketOut     = []byte("out")     // id → Record
	bucketOutBody = []byte("outbody") // id → payload, while queued
	bucketOutQ    = []byte("outq")    // node 0 agent 0 seq → id, while queued
	bucketSeq     = []byte("seq")     // node 0 agent → last seq given
	bucketNotify  = []byte("notify")  // id → "", notices due
	bucketDir     = []byte("dir")     // node → seenNode
	bucketIn      = []byte("in")      // from 0 id → inEntry
	bucketInQ     = []byte("inq")     // stream 0 seq → from 0 id, not started
	bucketStreams = []byte("streams") // stream → next expected seq
	bucketReports = []byte("reports") // from 0 id → report not yet acknowledged
)

var allBuckets = [][]byte{bucketMeta, bucketOut, bucketOutBody, bucketOutQ, bucketSeq, bucketNotify, bucketDir,
	bucketIn, bucketInQ, bucketStreams, bucketReports}

const sep = "\x00"

func key(parts ...string) []byte { return []byte(strings.Join(parts, sep)) }

func seqKey(prefix []byte, seq uint64) []byte {
	k := make([]byte, 0, len(prefix)+1+8)
	k = append(k, prefix...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

func splitSeqKey(k []byte) (prefix string, seq uint64, ok bool) {
	if len(k) < 9 || k[len(k)-9] != 0 {
		return "", 0, false
	}
	return string(k[:len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:]), true
}

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func u64b(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// store is the bbolt file with group commit: one goroutine commits, and
// writers that arrive while it commits go together into the next
// transaction, so under load many writes share one fsync while a lone
// writer waits for no timer.
type store struct {
	db    *bolt.DB
	reqs  chan *commitReq
	quit  chan struct{}
	ended chan struct{}
}

type commitReq struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// errStoreClosed is returned by update once the store is closing.
var errStoreClosed = errors.New("delivery: store closed")

// maxGroup bounds the writers that share one transaction.
const maxGroup = 256

// openStore opens (creating) the file at path with mode 0600 in a
// directory made with mode 0700. A second process holding the file makes
// the open fail after lockWait.
func openStore(path string, noSync bool, lockWait time.Duration) (*store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: lockWait, NoSync: noSync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			return nil, fmt.Errorf("%s is held by another process (is another clawmatrix node running with this state?)", path)
		}
		return nil, err
	}
	st := &store{db: db, reqs: make(chan *commitReq), quit: make(chan struct{}), ended: make(chan struct{})}
	if err := st.prepare(); err != nil {
		db.Close()
		return nil, err
	}
	go st.commitLoop()
	return st, nil
}

// prepare makes the buckets and the outbox's epoch on first use. A file
// that has them costs no write, so a start makes no fsync.
func (st *store) prepare() error {
	ready := true
	st.db.View(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			ready = ready && tx.Bucket(b) != nil
		}
		ready = ready && tx.Bucket(bucketMeta).Get([]byte("epoch")) != nil
		return nil
	})
	if ready {
		return nil
	}
	return st.db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		// The epoch names this outbox's streams, so that an outbox started
		// afresh (a deleted file) never has its new messages taken for
		// repeats of the old ones.
		meta := tx.Bucket(bucketMeta)
		if meta.Get([]byte("epoch")) != nil {
			return nil
		}
		return meta.Put([]byte("epoch"), []byte(randomHex(8)))
	})
}

func (st *store) commitLoop() {
	defer close(st.ended)
	for {
		var first *commitReq
		select {
		case first = <-st.reqs:
		case <-st.quit:
			return
		}
		// Writers just answered are runnable but not yet back: let them
		// queue up, so that they share this transaction.
		runtime.Gosched()
		batch := []*commitReq{first}
	more:
		for len(batch) < maxGroup {
			select {
			case r := <-st.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		err := st.db.Update(func(tx *bolt.Tx) error {
			for _, r := range batch {
				if err := r.fn(tx); err != nil {
					return err
				}
			}
			return nil
		})
		for _, r := range batch {
			r.done <- err
		}
	}
}

// update runs fn in a write transaction, committed (and synced, unless the
// store runs without sync) before it returns. fn may share its transaction
// with other writers: it must return an error only when the storage fails,
// since any error fails every writer of that transaction. fn must not take
// locks that a caller of update may hold.
func (st *store) update(fn func(*bolt.Tx) error) error {
	req := &commitReq{fn: fn, done: make(chan error, 1)}
	select {
	case st.reqs <- req:
		return <-req.done
	case <-st.quit:
		return errStoreClosed
	}
}

func (st *store) view(fn func(*bolt.Tx) error) error { return st.db.View(fn) }

// close stops the committer and closes the file; writers still calling
// update get errStoreClosed.
func (st *store) close() error {
	close(st.quit)
	<-st.ended
	return st.db.Close()
}

func getJSON(b *bolt.Bucket, k []byte, v any) bool {
	raw := b.Get(k)
	if raw == nil {
		return false
	}
	return json.Unmarshal(raw, v) == nil
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, raw)
}

// epoch returns the outbox's epoch (see prepare).
func (st *store) epoch() string {
	var e string
	st.db.View(func(tx *bolt.Tx) error {
		e = string(tx.Bucket(bucketMeta).Get([]byte("epoch")))
		return nil
	})
	return e
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// base32hex in lower case keeps the order of the numbers it encodes.
const idDigits = "0123456789abcdefghijklmnopqrstuv"

// newID makes a message id that sorts by creation time (to the
// millisecond): prefix, 9 digits of the time, 4 random digits.
func newID(prefix string, now time.Time) string {
	ms := uint64(now.UnixMilli())
	b := make([]byte, 0, len(prefix)+13)
	b = append(b, prefix...)
	for i := 8; i >= 0; i-- {
		b = append(b, idDigits[(ms>>(5*uint(i)))&31])
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	for _, x := range r {
		b = append(b, idDigits[x&31])
	}
	return string(b)
}

// ValidID reports whether s has the shape of a message id, so that ids
// from the network or from an agent can be used as keys safely.
func ValidID(s string) bool {
	if len(s) != 15 || (s[:2] != "m-" && s[:2] != "t-") {
		return false
	}
	for i := 2; i < len(s); i++ {
		if !strings.ContainsRune(idDigits, rune(s[i])) {
			return false
		}
	}
	return true
}
