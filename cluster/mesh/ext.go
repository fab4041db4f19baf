package mesh

import (
	"encoding/binary"
	"errors"
	"slices"

	"go.opentelemetry.io/otel/trace"
)

// Header extensions (docs/PROTOCOL.md, "Header extensions").
//
// A req_ext frame is a req whose routed header ends with an extension block:
// a 2-byte length L (at most maxExtBytes) and L bytes of records, each a
// 1-byte tag, a 1-byte length and that many bytes of value. A record with an
// unknown tag is skipped, so later versions can add records without a new
// frame type; a record that overruns the block makes the frame malformed.
// The block is part of the header: relays read it, and the end-to-end seal
// covers it, so they cannot change it.
//
// A v2 node that predates req_ext relays it like any routed type it does
// not know, but drops one addressed to itself; so an origin sends req_ext
// only to a destination that announces the record's feature in its
// capabilities (Capabilities.Features), and a plain req to any other.

const (
	// extHeaderLen is the length field before the records.
	extHeaderLen = 2
	// maxExtBytes bounds the records of one extension block.
	maxExtBytes = 1024

	// extTrace is the W3C trace context of the request: trace id (16),
	// parent span id (8) and trace flags (1). Longer values are accepted
	// and the bytes past these ignored, room for more fields later.
	extTrace      byte = 1
	traceValueLen      = 16 + 8 + 1
)

// FeatureTrace is announced by nodes that take a request's trace context in
// a req_ext frame (docs/PROTOCOL.md, "Header extensions").
const FeatureTrace = "trace"

// ownFeatures are the protocol extensions this version understands.
var ownFeatures = []string{FeatureTrace}

// withOwnFeatures returns c announcing this version's features.
func withOwnFeatures(c Capabilities) Capabilities {
	for _, f := range ownFeatures {
		if !slices.Contains(c.Features, f) {
			c.Features = append(c.Features, f)
		}
	}
	return c
}

var errExtSyntax = errors.New("malformed extension block")

// readExt splits an extension block off the front of b and checks that its
// records fill it exactly.
func readExt(b []byte) (ext, rest []byte, err error) {
	if len(b) < extHeaderLen {
		return nil, nil, errExtSyntax
	}
	l := int(binary.BigEndian.Uint16(b))
	b = b[extHeaderLen:]
	if l > maxExtBytes || l > len(b) {
		return nil, nil, errExtSyntax
	}
	ext = b[:l:l]
	for r := ext; len(r) > 0; {
		if len(r) < 2 || int(r[1]) > len(r)-2 {
			return nil, nil, errExtSyntax
		}
		r = r[2+int(r[1]):]
	}
	return ext, b[l:], nil
}

// appendExt writes an extension block holding the records ext.
func appendExt(b, ext []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(ext)))
	return append(b, ext...)
}

// extRecord returns the value of the first record with the tag.
func extRecord(ext []byte, tag byte) ([]byte, bool) {
	for len(ext) >= 2 {
		l := int(ext[1])
		if l > len(ext)-2 {
			return nil, false
		}
		if ext[0] == tag {
			return ext[2 : 2+l], true
		}
		ext = ext[2+l:]
	}
	return nil, false
}

// traceRecord encodes sc as the records of an extension block.
func traceRecord(sc trace.SpanContext) []byte {
	b := make([]byte, 0, 2+traceValueLen)
	b = append(b, extTrace, traceValueLen)
	tid, sid := sc.TraceID(), sc.SpanID()
	b = append(b, tid[:]...)
	b = append(b, sid[:]...)
	return append(b, byte(sc.TraceFlags()))
}

// extSpanContext returns the trace context an extension block carries, as a
// remote parent; false when there is none or it is not valid (zero ids are
// ignored rather than treated as malformed, as W3C asks of a traceparent).
func extSpanContext(ext []byte) (trace.SpanContext, bool) {
	v, ok := extRecord(ext, extTrace)
	if !ok || len(v) < traceValueLen {
		return trace.SpanContext{}, false
	}
	var tid trace.TraceID
	var sid trace.SpanID
	copy(tid[:], v[:16])
	copy(sid[:], v[16:24])
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     sid,
		TraceFlags: trace.TraceFlags(v[24]) & trace.FlagsSampled,
		Remote:     true,
	})
	return sc, sc.IsValid()
}
