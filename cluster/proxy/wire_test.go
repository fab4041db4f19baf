package proxy

import (
	"net/http"
	"testing"
)

func TestEventsEnd(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{"", 0},
		{"data: x\n", 0},
		{"data: x\n\n", 9},
		{"data: x\n\ndata: y", 9},
		{"data: x\n\ndata: y\n\n", 18},
		{"data: x\r\n\r\ndata", 11},
		{"data: x\r\rdata", 9},
	}
	for _, tt := range tests {
		if got := eventsEnd([]byte(tt.in)); got != tt.want {
			t.Errorf("eventsEnd(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestHeadRoundTrip(t *testing.T) {
	h := http.Header{}
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("X-Request-Id", "r1")
	h.Set("Content-Length", "12")
	h.Set("Connection", "keep-alive")
	h.Set("Set-Cookie", "a=b")
	got, err := decodeHead(encodeHead(201, h))
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != 201 || got.Header.Get("X-Request-Id") != "r1" || !isEventStream(got.Header.Get("Content-Type")) {
		t.Fatalf("head = %+v", got)
	}
	for _, k := range []string{"Content-Length", "Connection", "Set-Cookie"} {
		if got.Header.Get(k) != "" {
			t.Errorf("header %s was passed on", k)
		}
	}
	for _, bad := range []string{`nope`, `{"status":0}`, `{"status":"x"}`} {
		if _, err := decodeHead([]byte(bad)); err == nil {
			t.Errorf("decodeHead(%s) accepted", bad)
		}
	}
}

func TestIsEventStream(t *testing.T) {
	for in, want := range map[string]bool{
		"text/event-stream":                true,
		"Text/Event-Stream; charset=utf-8": true,
		"application/json":                 false,
		"":                                 false,
	} {
		if got := isEventStream(in); got != want {
			t.Errorf("isEventStream(%q) = %v", in, got)
		}
	}
}
