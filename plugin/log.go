package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// hostHandler writes records to the sidecar's own log and forwards those at
// Info and above to the host as log notifications, so they reach OpenClaw's
// log. Attributes are rendered key=value on the same line.
type hostHandler struct {
	next   slog.Handler
	stream *lineStream
	attrs  []slog.Attr
}

func (h *hostHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *hostHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.next.Enabled(ctx, r.Level) {
		h.next.Handle(ctx, r)
	}
	if r.Level < slog.LevelInfo {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	return h.stream.WriteObject(map[string]any{
		"jsonrpc": "2.0",
		"method":  NotificationLog,
		"params":  LogParams{Level: levelName(r.Level), Message: b.String()},
	})
}

func levelName(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "error"
	case l >= slog.LevelWarn:
		return "warn"
	case l >= slog.LevelInfo:
		return "info"
	default:
		return "debug"
	}
}

func (h *hostHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &hostHandler{next: h.next.WithAttrs(attrs), stream: h.stream, attrs: append(h.attrs[:len(h.attrs):len(h.attrs)], attrs...)}
}

// WithGroup keeps the host line flat; the group still reaches the local log.
func (h *hostHandler) WithGroup(name string) slog.Handler {
	return &hostHandler{next: h.next.WithGroup(name), stream: h.stream, attrs: h.attrs}
}
