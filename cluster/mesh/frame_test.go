package mesh

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range []Frame{
		{Type: "ping", ID: "1", From: "a", Timestamp: 5, Payload: json.RawMessage(`{"t":1}`)},
		{Type: "req", ID: "zz", From: "node-1", To: "node.2", TTL: 31, Timestamp: 1700000000000, Payload: json.RawMessage(`{"s":1,"d":"aGk="}`)},
		{Type: "x", ID: "", From: "ünïcode", To: "quote\"d", Timestamp: -1},
		{Type: "x", ID: "<&>", From: "tab\there", Timestamp: 0},
	} {
		data := encodeFrame(&f)
		if !json.Valid(data) {
			t.Fatalf("invalid JSON: %s", data)
		}
		g, err := decodeFrame(data)
		if err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		if g.Type != f.Type || g.ID != f.ID || g.From != f.From || g.To != f.To || g.TTL != f.TTL || g.Timestamp != f.Timestamp || !bytes.Equal(g.Payload, f.Payload) {
			t.Fatalf("round trip of %s: %+v", data, g)
		}
		// The hand-written encoder agrees with encoding/json.
		var viaStd, viaOurs map[string]any
		std, _ := json.Marshal(f)
		_ = json.Unmarshal(std, &viaStd)
		_ = json.Unmarshal(data, &viaOurs)
		a, _ := json.Marshal(viaStd)
		b, _ := json.Marshal(viaOurs)
		if !bytes.Equal(a, b) {
			t.Fatalf("encoders disagree:\n std %s\nours %s", a, b)
		}
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	for _, in := range []string{
		``, `null`, `[]`, `"x"`, `{`, `{"type":"ping"}`, `{"from":"a"}`,
		`{"type":"ping","from":"a","ttl":-1}`,
		`{"type":"ping","from":"a","ttl":"x"}`,
		`{"type":"` + strings.Repeat("t", 65) + `","from":"a"}`,
		`{"type":"ping","from":"` + strings.Repeat("a", MaxNodeIDLen+1) + `"}`,
		`{"type":"ping","from":"a","payload":{]}`,
	} {
		if f, err := decodeFrame([]byte(in)); err == nil {
			t.Errorf("decodeFrame(%q) = %+v, want error", in, f)
		}
	}
}

// FuzzDecodeFrame: the decoder never panics, and whatever it accepts
// re-encodes to a frame that decodes to the same thing.
func FuzzDecodeFrame(f *testing.F) {
	f.Add([]byte(`{"type":"ping","id":"1","from":"a","timestamp":1,"payload":{"t":5}}`))
	f.Add([]byte(`{"type":"req","id":"k","from":"a","to":"c","ttl":3,"timestamp":1,"payload":{"s":1,"m":"echo","w":16,"d":"aGk="}}`))
	f.Add([]byte(`{"type":"peer_sync","id":"2","from":"b","timestamp":1,"payload":{"entries":[{"origin":"b","version":9,"links":[{"peer":"a","since":3}],"caps":{"agents":[],"models":[],"tags":["gpu"]}}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeFrame(data)
		if err != nil {
			return
		}
		again, err := decodeFrame(encodeFrame(fr))
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if again.Type != fr.Type || again.ID != fr.ID || again.From != fr.From || again.To != fr.To || again.TTL != fr.TTL || again.Timestamp != fr.Timestamp {
			t.Fatalf("envelope changed: %+v vs %+v", fr, again)
		}
		if len(fr.Payload) > 0 && !bytes.Equal(again.Payload, fr.Payload) {
			t.Fatalf("payload changed: %q vs %q", fr.Payload, again.Payload)
		}
		// Stream and gossip payloads parse without panicking either.
		var m streamMsg
		_ = json.Unmarshal(fr.Payload, &m)
		var ps peerSyncPayload
		_ = json.Unmarshal(fr.Payload, &ps)
	})
}

func TestWalkObject(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{}`, true},
		{` { "a" : 1 , "b":[1,{"c":"}"}], "d":"q\"x", "e":null, "f":true} `, true},
		{`{"a":{"b":[[]]}}`, true},
		{`{"a":1,}`, false},
		{`{"a" 1}`, false},
		{`{"a":[}`, false},
		{`{"a":{]}`, false},
		{`{"a":"x}`, false},
		{`{"a":1} x`, false},
		{`{"a":bogus}`, false},
		{`{"a":` + strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1) + `}`, false},
		{`[1]`, false},
		{``, false},
	} {
		err := walkObject([]byte(tc.in), func(string, []byte) error { return nil })
		if (err == nil) != tc.ok {
			t.Errorf("walkObject(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}

func TestStreamMsgCodec(t *testing.T) {
	for _, m := range []streamMsg{
		{S: 1},
		{S: 1<<64 - 1, Q: 7, M: "model/chat \"x\"", W: 16, D: []byte("hello\x00world"), More: true},
		{S: 2, N: 99, R: true},
		{S: 3, Q: 1, E: &RemoteError{Code: CodeNotFound, Message: "nope <&> ü"}},
	} {
		data := encodeStreamMsg(&m)
		var viaJSON streamMsg
		if err := json.Unmarshal(data, &viaJSON); err != nil {
			t.Fatalf("%s is not valid JSON: %v", data, err)
		}
		var got streamMsg
		if err := decodeStreamMsg(data, &got); err != nil {
			t.Fatalf("decode %s: %v", data, err)
		}
		for _, g := range []streamMsg{got, viaJSON} {
			if g.S != m.S || g.Q != m.Q || g.M != m.M || g.W != m.W || !bytes.Equal(g.D, m.D) || g.More != m.More || g.N != m.N || g.R != m.R || (g.E == nil) != (m.E == nil) || (g.E != nil && *g.E != *m.E) {
				t.Fatalf("round trip of %s: %+v", data, g)
			}
		}
	}
	// Escaped base64 (as another encoder may write it) still decodes.
	var m streamMsg
	if err := decodeStreamMsg([]byte(`{"s":1,"d":"aGk\u003d"}`), &m); err != nil || string(m.D) != "hi" {
		t.Fatalf("escaped data: %q %v", m.D, err)
	}
}

// FuzzStreamMsg: arbitrary payloads never panic the decoder, and every
// message survives an encode/decode round trip.
func FuzzStreamMsg(f *testing.F) {
	f.Add([]byte(`{"s":1,"q":2,"m":"x","w":16,"d":"aGk=","more":true}`), uint64(1), uint64(2), "m", 3, []byte("d"), true)
	f.Add([]byte(`{"s":1,"e":{"code":"x","message":"y"}}`), uint64(0), uint64(0), "", 0, []byte(nil), false)
	f.Fuzz(func(t *testing.T, raw []byte, s, q uint64, method string, w int, d []byte, more bool) {
		var junk streamMsg
		_ = decodeStreamMsg(raw, &junk)
		if w < 0 || w > maxWindow {
			w = 1
		}
		m := streamMsg{S: s, Q: q, M: method, W: w, D: d, More: more}
		var got streamMsg
		if err := decodeStreamMsg(encodeStreamMsg(&m), &got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if utf8.ValidString(method) && got.M != method {
			t.Fatalf("method %q came back as %q", method, got.M)
		}
		if got.S != m.S || got.Q != m.Q || got.W != m.W || !bytes.Equal(got.D, m.D) || got.More != m.More {
			t.Fatalf("round trip: %+v vs %+v", got, m)
		}
	})
}
