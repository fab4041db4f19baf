package mesh

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range []Frame{
		{Type: typePing, Payload: []byte{0, 0, 0, 0, 0, 0, 0, 5}},
		{Type: typePeerSync},
		{Type: typeReq, ID: 1 << 60, From: "node-1", To: "node.2", TTL: 31, Stream: 9, Payload: []byte{0, 0, 0, 0}},
		{Type: typeAck, ID: 1, From: "a", To: "b", TTL: 1, R: true, Sealed: true, Payload: []byte("box")},
		{Type: 200, ID: 2, From: "A_b-c.d", To: strings.Repeat("z", MaxNodeIDLen)},
	} {
		data := encodeFrame(&f)
		g, err := decodeFrame(data)
		if err != nil {
			t.Fatalf("%x: %v", data, err)
		}
		if g.Type != f.Type || g.ID != f.ID || g.From != f.From || g.To != f.To || g.TTL != f.TTL || g.Stream != f.Stream || g.R != f.R || g.Sealed != f.Sealed || !bytes.Equal(g.Payload, f.Payload) {
			t.Fatalf("round trip of %+v: %+v", f, g)
		}
		if want := 3 + 1 + len(f.From) + 1 + len(f.To) + 16; isRouted(f.Type) && want != len(data)-len(f.Payload) {
			t.Fatalf("routed header of %d bytes, want %d", len(data)-len(f.Payload), want)
		}
	}
}

func TestDecodeFrameRejects(t *testing.T) {
	long := strings.Repeat("a", MaxNodeIDLen+1)
	for name, in := range map[string][]byte{
		"empty":          {},
		"short header":   {typeReq, 1, 0, 1, 'a'},
		"unknown flags":  encodeFrame(&Frame{Type: typeReq, From: "a", To: "b"})[:0:0],
		"empty from":     append([]byte{typeReq, 1, 0, 0, 1, 'b'}, make([]byte, 16)...),
		"long from":      append(append([]byte{typeReq, 1, 0, byte(len(long))}, long...), append([]byte{1, 'b'}, make([]byte, 16)...)...),
		"newline in id":  append([]byte{typeReq, 1, 0, 2, 'a', '\n', 1, 'b'}, make([]byte, 16)...),
		"id past end":    {typeReq, 1, 0, 40, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r', 's', 't', 'u', 'v', 'w'},
		"truncated tail": {typeReq, 1, 0, 1, 'a', 1, 'b', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	} {
		if name == "unknown flags" {
			in = encodeFrame(&Frame{Type: typeReq, From: "a", To: "b"})
			in[2] = 0x80
		}
		if f, err := decodeFrame(in); err == nil {
			t.Errorf("%s: decodeFrame(%x) = %+v, want error", name, in, f)
		}
	}
}

// FuzzDecodeFrame: the decoder never panics, and whatever it accepts
// re-encodes to the same bytes.
func FuzzDecodeFrame(f *testing.F) {
	f.Add(encodeFrame(&Frame{Type: typePing, Payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}}))
	f.Add(encodeFrame(&Frame{Type: typeReq, ID: 3, From: "a", To: "c", TTL: 3, Stream: 1, Payload: appendStreamMsg(nil, &streamMsg{M: "echo", W: 16, D: []byte("hi")})}))
	f.Add(appendPeerSync(nil, [][]byte{[]byte("x")}))
	tid, sid := [16]byte{1, 2, 3}, [8]byte{4, 5}
	traced := append(append(append([]byte{extTrace, traceValueLen}, tid[:]...), sid[:]...), 1)
	f.Add(encodeFrame(&Frame{Type: typeReqExt, ID: 4, From: "a", To: "c", TTL: 3, Stream: 2, Ext: traced, Payload: appendStreamMsg(nil, &streamMsg{M: "echo", W: 16})}))
	f.Add(encodeFrame(&Frame{Type: typeReqExt, ID: 5, From: "a", To: "c", TTL: 3, Sealed: true, Stream: 2, Ext: []byte{9, 0}, Payload: []byte("box")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := decodeFrame(data)
		if err != nil {
			return
		}
		if again := encodeFrame(fr); !bytes.Equal(again, data) {
			t.Fatalf("re-encoded %x as %x", data, again)
		}
		// Stream and gossip payloads parse without panicking either.
		var m streamMsg
		_ = decodeStreamMsg(fr.Payload, &m)
		_, _ = extSpanContext(fr.Ext)
		if entries, err := splitPeerSync(fr.Payload, 64<<10); err == nil {
			for _, e := range entries {
				_, _, _, _ = openEntry(e)
			}
		}
	})
}

func TestReqExtFrame(t *testing.T) {
	_, sc := incomingTrace(t, true)
	unknown := []byte{200, 3, 'x', 'y', 'z'}
	for name, ext := range map[string][]byte{
		"trace":                 traceRecord(sc),
		"unknown record first":  append(append([]byte{}, unknown...), traceRecord(sc)...),
		"longer trace value":    append([]byte{extTrace, traceValueLen + 2}, append(traceRecord(sc)[2:], 9, 9)...),
		"no records":            {},
		"only an unknown":       unknown,
		"zero trace id ignored": append([]byte{extTrace, traceValueLen}, make([]byte, traceValueLen)...),
	} {
		f := Frame{Type: typeReqExt, ID: 7, From: "a", To: "c", TTL: 9, Stream: 3, Ext: ext, Payload: []byte{0, 1, 2}}
		data := encodeFrame(&f)
		g, err := decodeFrame(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(g.Ext, ext) || !bytes.Equal(g.Payload, f.Payload) || g.Type != typeReqExt {
			t.Fatalf("%s: round trip gave ext %x payload %x type %d", name, g.Ext, g.Payload, g.Type)
		}
		got, ok := extSpanContext(g.Ext)
		want := name == "trace" || name == "unknown record first" || name == "longer trace value"
		if ok != want || (ok && (got.TraceID() != sc.TraceID() || got.SpanID() != sc.SpanID() || !got.IsSampled() || !got.IsRemote())) {
			t.Fatalf("%s: trace context %+v, %v", name, got, ok)
		}
		// The seal covers the extensions: changing them breaks the AD.
		if len(ext) > 0 {
			ad := sealedAD(nil, g)
			g.Ext = append([]byte{}, g.Ext...)
			g.Ext[len(g.Ext)-1] ^= 1
			if bytes.Equal(ad, sealedAD(nil, g)) {
				t.Fatalf("%s: the sealed header does not cover the extensions", name)
			}
		}
	}
}

func TestReqExtRejects(t *testing.T) {
	head := encodeFrame(&Frame{Type: typeReqExt, From: "a", To: "b", Ext: []byte{}})
	head = head[:len(head)-extHeaderLen] // up to the stream id
	for name, tail := range map[string][]byte{
		"no length":          {},
		"half a length":      {0},
		"length past end":    {0, 5, 1, 1},
		"record past block":  {0, 3, 1, 5, 0},
		"record header only": {0, 1, 1},
		"over the limit":     append(binary.BigEndian.AppendUint16(nil, maxExtBytes+2), make([]byte, maxExtBytes+2)...),
	} {
		in := append(append([]byte{}, head...), tail...)
		if f, err := decodeFrame(in); err == nil {
			t.Errorf("%s: decodeFrame(%x) = %+v, want error", name, in, f)
		}
	}
}
