package mesh

import (
	"bytes"
	"testing"
)

func TestStreamMsgCodec(t *testing.T) {
	for _, m := range []streamMsg{
		{},
		{Q: 7, M: "model/chat \"x\"", W: 16, D: []byte("hello\x00world"), More: true},
		{N: 99},
		{Q: 1, E: &RemoteError{Code: CodeNotFound, Message: "nope <&> ü"}},
		{P: "node-c", E: &RemoteError{Code: CodeUnavailable, Message: "dropped"}},
	} {
		data := appendStreamMsg(nil, &m)
		if len(data) > streamMsgSize(&m) {
			t.Fatalf("body of %d bytes is over its size bound %d", len(data), streamMsgSize(&m))
		}
		var got streamMsg
		if err := decodeStreamMsg(data, &got); err != nil {
			t.Fatalf("decode %x: %v", data, err)
		}
		if got.Q != m.Q || got.M != m.M || got.W != m.W || !bytes.Equal(got.D, m.D) || got.More != m.More || got.N != m.N || got.P != m.P || (got.E == nil) != (m.E == nil) || (got.E != nil && *got.E != *m.E) {
			t.Fatalf("round trip of %+v: %+v", m, got)
		}
	}
}

func TestDecodeStreamMsgRejects(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":            {},
		"unknown flag":     {0x80, 0, 0, 0},
		"truncated varint": {0, 0x80},
		"window too big":   append([]byte{0, 0}, appendUvarint(maxWindow+1)...),
		"method missing":   {bodyM, 0, 0, 0},
		"string too long":  append([]byte{bodyM, 0, 0, 0}, appendUvarint(maxBodyString+1)...),
		"bad lost node":    {bodyP, 0, 0, 0, 3, 'a', '\n', 'b'},
	} {
		var m streamMsg
		if err := decodeStreamMsg(in, &m); err == nil {
			t.Errorf("%s: decodeStreamMsg(%x) = %+v, want error", name, in, m)
		}
	}
}

func appendUvarint(v uint64) []byte {
	var m streamMsg
	m.Q = v
	b := appendStreamMsg(nil, &m)
	return b[1 : len(b)-2] // the Q varint
}

// FuzzStreamMsg: arbitrary bodies never panic the decoder, and every
// message survives an encode/decode round trip.
func FuzzStreamMsg(f *testing.F) {
	f.Add(appendStreamMsg(nil, &streamMsg{Q: 2, M: "x", W: 16, D: []byte("hi"), More: true}), uint64(2), "m", 3, []byte("d"), true)
	f.Add(appendStreamMsg(nil, &streamMsg{E: &RemoteError{Code: "x", Message: "y"}}), uint64(0), "", 0, []byte(nil), false)
	f.Fuzz(func(t *testing.T, raw []byte, q uint64, method string, w int, d []byte, more bool) {
		var junk streamMsg
		_ = decodeStreamMsg(raw, &junk)
		if w < 0 || w > maxWindow {
			w = 1
		}
		if len(method) > maxBodyString {
			method = method[:maxBodyString]
		}
		m := streamMsg{Q: q, M: method, W: w, D: d, More: more}
		var got streamMsg
		if err := decodeStreamMsg(appendStreamMsg(nil, &m), &got); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if got.M != method || got.Q != m.Q || got.W != m.W || !bytes.Equal(got.D, m.D) || got.More != m.More {
			t.Fatalf("round trip: %+v vs %+v", got, m)
		}
	})
}

var benchResFrame = func() []byte {
	m := streamMsg{S: 42, Q: 9, D: bytes.Repeat([]byte("chunk of a file "), 1024), More: true}
	return encodeFrame(&Frame{Type: typeRes, ID: 77, From: "node-a", To: "node-c", TTL: 7, Stream: m.S, Payload: appendStreamMsg(nil, &m)})
}()

// BenchmarkDecodeFrame is the per-frame cost of a reader (header only, as
// at a relay) and of the target (header, then the 16 KB data chunk).
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
