package telemetry

import (
	"sync"
	"time"
)

// Journal keeps the latest requests and errors of a node in bounded memory,
// for the status page. Entries hold no request content.
type Journal struct {
	mu       sync.Mutex
	size     int
	requests ring[ProxyRecord]
	errors   ring[ErrorEntry]
}

// ErrorEntry is one error the node met.
type ErrorEntry struct {
	At time.Time
	// Kind is proxy (a request that failed), failover (a node given up
	// for the next), remote (a remote tool call) or peer (a node lost).
	Kind string
	// Node is the node the error concerns, "" when none.
	Node    string
	Message string
}

func newJournal(size int) *Journal {
	return &Journal{size: size, requests: ring[ProxyRecord]{max: size}, errors: ring[ErrorEntry]{max: size}}
}

// addRequest keeps r, which it owns from now on (its Path too).
func (j *Journal) addRequest(r ProxyRecord) {
	j.mu.Lock()
	j.requests.add(r)
	j.mu.Unlock()
}

func (j *Journal) addError(e ErrorEntry) {
	j.mu.Lock()
	j.errors.add(e)
	j.mu.Unlock()
}

// Requests returns the recent requests, newest first.
func (j *Journal) Requests() []ProxyRecord {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.requests.newestFirst()
}

// Errors returns the recent errors, newest first.
func (j *Journal) Errors() []ErrorEntry {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.errors.newestFirst()
}

// ring holds the last max values added.
type ring[T any] struct {
	max  int
	vals []T
	next int
}

func (r *ring[T]) add(v T) {
	if len(r.vals) < r.max {
		r.vals = append(r.vals, v)
		return
	}
	r.vals[r.next] = v
	r.next = (r.next + 1) % r.max
}

func (r *ring[T]) newestFirst() []T {
	out := make([]T, 0, len(r.vals))
	for i := len(r.vals) - 1; i >= 0; i-- {
		out = append(out, r.vals[(r.next+i)%len(r.vals)])
	}
	return out
}
