package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode"
)

// Bounds of the recent errors a node keeps for its status.
const (
	maxRecentErrors     = 20
	maxRecentErrorRunes = 400
)

// StatusError is one warning or error the node logged, as GET /status.json
// shows it.
type StatusError struct {
	Time time.Time `json:"time"`
	// Where is the part of the node that logged it: "mesh", "model proxy",
	// "node", … (the prefix of its message).
	Where   string `json:"where"`
	Message string `json:"message"`
}

// recentErrors keeps the last warnings and errors a node logged. Secrets
// are replaced before a record is kept, whatever a caller logged.
type recentErrors struct {
	mu      sync.Mutex
	ring    []StatusError
	next    int
	full    bool
	secrets []string
}

func newRecentErrors(secrets []string) *recentErrors {
	var keep []string
	for _, s := range secrets {
		if s != "" {
			keep = append(keep, s)
		}
	}
	return &recentErrors{ring: make([]StatusError, maxRecentErrors), secrets: keep}
}

func (e *recentErrors) add(r slog.Record, attrs []slog.Attr) {
	var b strings.Builder
	b.WriteString(r.Message)
	write := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range attrs {
		write(a)
	}
	r.Attrs(write)
	msg := b.String()
	for _, s := range e.secrets {
		msg = strings.ReplaceAll(msg, s, "[redacted]")
	}
	where, rest := splitWhere(msg)
	entry := StatusError{Time: r.Time.UTC(), Where: where, Message: bound(rest)}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ring[e.next] = entry
	e.next = (e.next + 1) % len(e.ring)
	if e.next == 0 {
		e.full = true
	}
}

// list returns the kept records, oldest first.
func (e *recentErrors) list() []StatusError {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.full {
		return append([]StatusError{}, e.ring[:e.next]...)
	}
	return append(append([]StatusError{}, e.ring[e.next:]...), e.ring[:e.next]...)
}

// splitWhere takes the component prefix off a log message ("mesh: link
// refused" is from "mesh"); a message without one is from "node".
func splitWhere(msg string) (where, rest string) {
	prefix, rest, ok := strings.Cut(msg, ": ")
	if ok && prefix != "" && len(prefix) <= 24 && strings.IndexFunc(prefix, func(r rune) bool {
		return !unicode.IsLower(r) && r != ' ' && r != '_'
	}) < 0 {
		return prefix, rest
	}
	return "node", msg
}

// bound makes a message one line of at most maxRecentErrorRunes runes.
func bound(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > maxRecentErrorRunes {
		return string(r[:maxRecentErrorRunes]) + "…"
	}
	return s
}

// errorsHandler passes every record on and keeps those at Warn and above.
type errorsHandler struct {
	next  slog.Handler
	keep  *recentErrors
	attrs []slog.Attr
}

func (h *errorsHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelWarn || h.next.Enabled(ctx, l)
}

func (h *errorsHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.keep.add(r, h.attrs)
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *errorsHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &errorsHandler{next: h.next.WithAttrs(attrs), keep: h.keep, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], attrs...)}
}

// WithGroup keeps the kept line flat; the group still reaches next.
func (h *errorsHandler) WithGroup(name string) slog.Handler {
	return &errorsHandler{next: h.next.WithGroup(name), keep: h.keep, attrs: h.attrs}
}
