package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame is one message on a link, in the binary layout of docs/PROTOCOL.md
// ("Frames"). It is the plaintext of one link record: the link's Noise
// session encrypts it hop by hop.
//
// Hop-local frames (ping, pong, peer_sync, welcome) carry only a type and a
// payload, and come from the link's peer. Routed frames (requests and their
// streams, and the end-to-end handshake) carry a header with the origin in
// From, the destination in To, a hop budget and the stream they belong to,
// and are relayed hop by hop. A routed frame whose destination is not the
// next hop is sealed end to end (see e2e.go): relays read its header, never
// its body, and cannot change either without the destination noticing.
type Frame struct {
	Type byte
	// TTL is decremented by each relay; it is not covered by the seal.
	TTL uint8
	// Sealed says Body is an end-to-end sealed box, not the stream body.
	Sealed bool
	// R marks a frame sent by the target of its stream (see streamMsg.R).
	R      bool
	From   string
	To     string
	ID     uint64 // unique per origin run; relays drop repeats
	Stream uint64 // the stream this frame belongs to
	// Ext is the header extension block of a req_ext frame (its records,
	// without the length; see ext.go): part of the header, so relays read
	// it and the seal covers it. It aliases the decoded data.
	Ext []byte
	// written, when set, is called once the frame leaves this node (its
	// link's writer took it, or it was delivered here) with nil, or is
	// dropped, with why: the end of a traced hop. It is not on the wire.
	written func(error)
	// Payload is the frame's body: for a routed frame the encoded stream
	// message (or sealed box while Sealed), for a hop-local one its payload.
	Payload []byte
}

// Frame types. Values are part of the wire protocol: append, never reuse.
const (
	typePing     byte = 1 // payload: 8-byte sender clock
	typePong     byte = 2 // payload: the ping's payload
	typePeerSync byte = 3 // payload: signed topology entries (gossip.go)
	typeWelcome  byte = 4 // listener's first frame: incarnation and capabilities

	// Routed types start at firstRouted, so a relay can forward a routed
	// type it does not know yet.
	firstRouted byte = 16

	typeReq      byte = 16 // caller -> target: a request message chunk
	typeRes      byte = 17 // target -> caller: a response message chunk
	typeEnd      byte = 18 // target -> caller: the handler returned
	typeCancel   byte = 19 // caller -> target: stop the handler
	typeAck      byte = 20 // either way: messages consumed (credit)
	typeNoStream byte = 21 // either way: that stream is unknown or given up here
	typeLost     byte = 22 // relay -> origin: a frame of that stream was dropped
	typeE2EInit  byte = 23 // end-to-end handshake, first message (e2e.go)
	typeE2EResp  byte = 24 // end-to-end handshake, answer
	typeReqExt   byte = 25 // a req whose header carries extensions (ext.go)
)

var typeNames = map[byte]string{
	typePing: "ping", typePong: "pong", typePeerSync: "peer_sync", typeWelcome: "welcome",
	typeReq: "req", typeRes: "res", typeEnd: "end", typeCancel: "cancel", typeAck: "ack",
	typeNoStream: "no_stream", typeLost: "lost", typeE2EInit: "e2e_init", typeE2EResp: "e2e_resp",
	typeReqExt: "req_ext",
}

func typeName(t byte) string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type_%d", t)
}

// isRouted reports whether frames of type t travel end to end (and may be
// relayed) rather than over one link only.
func isRouted(t byte) bool { return t >= firstRouted }

// isControl reports whether frames of type t jump ahead of stream data in a
// link's write queue: they are small and keep the link alive or let streams
// progress.
func isControl(t byte) bool {
	switch t {
	case typeReq, typeReqExt, typeRes, typeEnd:
		return false
	}
	return true
}

// isReq reports whether frames of type t are request chunks.
func isReq(t byte) bool { return t == typeReq || t == typeReqExt }

// Header flag bits of routed frames.
const (
	flagSealed = 1 << 0
	flagR      = 1 << 1
)

// routedHeaderMin is a routed header with one-byte node ids.
const routedHeaderMin = 3 + 2 + 2 + 16

var errFrameSyntax = errors.New("malformed frame")

// decodeFrame parses one frame. It never panics, and the payload aliases
// data (callers that keep it copy it).
func decodeFrame(data []byte) (*Frame, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: empty", errFrameSyntax)
	}
	f := &Frame{Type: data[0]}
	if !isRouted(f.Type) {
		f.Payload = data[1:]
		return f, nil
	}
	if len(data) < routedHeaderMin {
		return nil, fmt.Errorf("%w: routed header too short", errFrameSyntax)
	}
	f.TTL = data[1]
	flags := data[2]
	if flags&^(flagSealed|flagR) != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", errFrameSyntax, flags)
	}
	f.Sealed, f.R = flags&flagSealed != 0, flags&flagR != 0
	rest := data[3:]
	var err error
	if f.From, rest, err = readID(rest); err != nil {
		return nil, fmt.Errorf("%w: from: %v", errFrameSyntax, err)
	}
	if f.To, rest, err = readID(rest); err != nil {
		return nil, fmt.Errorf("%w: to: %v", errFrameSyntax, err)
	}
	if len(rest) < 16 {
		return nil, fmt.Errorf("%w: routed header too short", errFrameSyntax)
	}
	f.ID = binary.BigEndian.Uint64(rest)
	f.Stream = binary.BigEndian.Uint64(rest[8:])
	rest = rest[16:]
	if f.Type == typeReqExt {
		if f.Ext, rest, err = readExt(rest); err != nil {
			return nil, fmt.Errorf("%w: extensions: %v", errFrameSyntax, err)
		}
	}
	f.Payload = rest
	return f, nil
}

// readID reads a one-byte length and a node id.
func readID(b []byte) (string, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, errors.New("truncated")
	}
	n := int(b[0])
	id := string(b[1 : 1+n])
	if err := checkNodeID(id); err != nil {
		return "", nil, err
	}
	return id, b[1+n:], nil
}

// appendFrame encodes f. A routed frame's header comes first, so that the
// seal can cover exactly the bytes before the body (sealedAD).
func appendFrame(b []byte, f *Frame) []byte {
	b = append(b, f.Type)
	if !isRouted(f.Type) {
		return append(b, f.Payload...)
	}
	var flags byte
	if f.Sealed {
		flags |= flagSealed
	}
	if f.R {
		flags |= flagR
	}
	b = append(b, f.TTL, flags, byte(len(f.From)))
	b = append(b, f.From...)
	b = append(b, byte(len(f.To)))
	b = append(b, f.To...)
	b = binary.BigEndian.AppendUint64(b, f.ID)
	b = binary.BigEndian.AppendUint64(b, f.Stream)
	if f.Type == typeReqExt {
		b = appendExt(b, f.Ext)
	}
	return append(b, f.Payload...)
}

func encodeFrame(f *Frame) []byte {
	return appendFrame(make([]byte, 0, routedHeaderMin+len(f.From)+len(f.To)+extHeaderLen+len(f.Ext)+len(f.Payload)), f)
}
