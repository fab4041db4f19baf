package mesh

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
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
