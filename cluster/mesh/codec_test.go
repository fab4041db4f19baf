package mesh

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

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

var benchResFrame = func() []byte {
	m := streamMsg{S: 42, Q: 9, D: bytes.Repeat([]byte("chunk of a file "), 1024), More: true}
	return encodeFrame(&Frame{Type: typeRes, ID: "k7", From: "node-a", To: "node-c", TTL: 7, Timestamp: 1700000000000, Payload: encodeStreamMsg(&m)})
}()

// BenchmarkDecodeFrame is the per-frame cost of a reader (envelope only, as
// at a relay) and of the target (envelope, then the 16 KB data chunk).
func BenchmarkDecodeFrame(b *testing.B) {
	b.Run("relay", func(b *testing.B) {
		b.SetBytes(int64(len(benchResFrame)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeFrame(benchResFrame); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("target", func(b *testing.B) {
		b.SetBytes(int64(len(benchResFrame)))
		b.ReportAllocs()
		for b.Loop() {
			f, err := decodeFrame(benchResFrame)
			if err != nil {
				b.Fatal(err)
			}
			var m streamMsg
			if err := decodeStreamMsg(f.Payload, &m); err != nil || len(m.D) != 16384 {
				b.Fatal(err)
			}
		}
	})
}
