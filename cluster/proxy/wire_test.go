package proxy

import (
	"encoding/json"
	"net/http"
	"reflect"
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

// The hand-written head codec agrees with encoding/json: what encodeHead
// writes is what json.Marshal would write, and decodeHead decodes every
// input, usual or not, as json.Unmarshal does.
func TestHeadCodecMatchesEncodingJSON(t *testing.T) {
	hdr := http.Header{
		"Content-Type": {"application/json"},
		"X-Multi":      {"a", "b, c"},
		"X-Quote":      {`say "hi" \ <b>&`},
		"X-Unicode":    {"héllo\x01"},
		"X-Empty":      {},
		"X-Nil":        nil,
		"Connection":   {"close"}, // dropped
	}
	want := head{Status: 200, Header: http.Header{}}
	for k, v := range hdr {
		if k != "Connection" {
			want.Header[k] = v
		}
	}
	wantJSON, _ := json.Marshal(want)
	if got := encodeHead(200, hdr); string(got) != string(wantJSON) {
		t.Fatalf("encodeHead = %s\nwant        %s", got, wantJSON)
	}
	if _, ok := scanHead(wantJSON); !ok {
		t.Fatal("the one-pass decoder does not take what encodeHead writes")
	}
	if got := encodeHead(204, nil); string(got) != `{"status":204}` {
		t.Fatalf("encodeHead without headers = %s", got)
	}
	for _, in := range []string{
		string(wantJSON),
		`{"status":200}`,
		`{"status":200,"header":{}}`,
		`{"status":200,"header":null}`,
		` { "status" : 201 , "header" : { "A" : [ "x" , "y" ] , "B" : [ ] , "C" : null } } `,
		`{"header":{"A":["1"]},"status":202}`,
		`{"Status":203}`,                                           // encoding/json matches keys case-insensitively
		`{"status":200,"status":204}`,                              // last wins
		`{"status":200,"header":{"A":["1"]},"header":{"B":["2"]}}`, // merged
		`{"status":200,"header":{"A":["1"],"A":["2"]}}`,
		`{"status":200,"extra":[1,2,{"x":null}]}`,
		`{"status":200,"header":{"A":["\u0041\n"]}}`,
		`{"status":200,"header":{"A":[null,"x"]}}`,
		`{"status":200,"header":{"A":"x"}}`,
		`{"status":200,"header":{"A":[1]}}`,
		`{"status":200.5}`,
		`{"status":null}`,
		`{"status":99999999999}`,
		`{"status":"200"}`,
		`{"status":200,}`,
		`{"status":200} x`,
		`[]`,
		``,
	} {
		var ref head
		refErr := json.Unmarshal([]byte(in), &ref)
		if refErr == nil && (ref.Status < 100 || ref.Status > 999) {
			refErr = errScan
		}
		got, err := decodeHead([]byte(in))
		if (err != nil) != (refErr != nil) {
			t.Errorf("decodeHead(%s): err %v, encoding/json: %v", in, err, refErr)
			continue
		}
		if err == nil && !reflect.DeepEqual(got, ref) {
			t.Errorf("decodeHead(%s) = %#v, encoding/json: %#v", in, got, ref)
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
