package mesh

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/clawmatrix/clawmatrix/internal/jsonscan"
)

// Frame is one message on a link: a WebSocket text message holding
// {type, id, from, to?, ttl?, timestamp, payload} (SPEC §5).
//
// Hop-local frames (handshake, ping, pong, peer_sync) have no To and their
// From is the sending peer. Routed frames (requests and their streams) carry
// the origin in From and the destination in To, and are relayed hop by hop
// with TTL decremented at each relay.
type Frame struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	From      string          `json:"from"`
	To        string          `json:"to,omitempty"`
	TTL       int             `json:"ttl,omitempty"`
	Timestamp int64           `json:"timestamp"`
	Payload   json.RawMessage `json:"payload,omitempty"`
}

// Frame types.
const (
	typeAuthChallenge = "auth_challenge"
	typeAuth          = "auth"
	typeAuthOK        = "auth_ok"
	typePing          = "ping"
	typePong          = "pong"
	typePeerSync      = "peer_sync"

	// Routed stream frames; see request.go.
	typeReq      = "req"       // caller -> target: a request message chunk
	typeRes      = "res"       // target -> caller: a response message chunk
	typeEnd      = "end"       // target -> caller: the handler returned
	typeCancel   = "cancel"    // caller -> target: stop the handler
	typeAck      = "ack"       // caller -> target: messages consumed (credit)
	typeNoStream = "no_stream" // either way: that stream is unknown or given up here ("r": to the caller)
	typeLost     = "lost"      // relay -> origin: a frame of that stream was dropped on the way ("p": its destination)
)

// isRouted reports whether frames of type t travel end to end (and may be
// relayed) rather than over one link only.
func isRouted(t string) bool {
	switch t {
	case typeReq, typeRes, typeEnd, typeCancel, typeAck, typeNoStream, typeLost:
		return true
	}
	return false
}

// isControl reports whether frames of type t jump ahead of stream data in a
// link's write queue: they are small and keep the link alive or let streams
// progress.
func isControl(t string) bool {
	switch t {
	case typePing, typePong, typePeerSync, typeAck, typeCancel, typeNoStream, typeLost:
		return true
	}
	return false
}

var errFrameSyntax = errors.New("frame is not a JSON object with type, id and from")

// decodeFrame parses one wire frame in a single pass. It never panics, and
// it rejects frames missing the envelope fields the mesh relies on. The
// payload is copied but not parsed: relays pass it on as it came, and the
// node it is for parses it.
func decodeFrame(data []byte) (*Frame, error) {
	var f Frame
	err := jsonscan.WalkObject(data, func(key, v []byte, _ int) error {
		var err error
		switch string(key) {
		case "type":
			f.Type, err = jsonscan.String(v)
		case "id":
			f.ID, err = jsonscan.String(v)
		case "from":
			f.From, err = jsonscan.String(v)
		case "to":
			f.To, err = jsonscan.String(v)
		case "ttl":
			var ttl int64
			ttl, err = jsonscan.Int(v)
			if err == nil && (ttl < 0 || ttl > 1<<16) {
				err = errors.New("ttl out of range")
			}
			f.TTL = int(ttl)
		case "timestamp":
			f.Timestamp, err = jsonscan.Int(v)
		case "payload":
			if jsonscan.IsNull(v) {
				f.Payload = nil
			} else {
				f.Payload = append(json.RawMessage(nil), v...)
			}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errFrameSyntax, err)
	}
	if f.Type == "" || f.From == "" {
		return nil, fmt.Errorf("%w: type or from is empty", errFrameSyntax)
	}
	if len(f.Type) > 64 || len(f.ID) > 128 || len(f.From) > MaxNodeIDLen || len(f.To) > MaxNodeIDLen {
		return nil, fmt.Errorf("%w: an envelope field is too long", errFrameSyntax)
	}
	return &f, nil
}

// appendFrame encodes f by hand: the envelope is a handful of short strings,
// and the payload is copied as is, so relays never re-marshal payloads.
// f.Payload must be valid JSON or empty.
func appendFrame(b []byte, f *Frame) []byte {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, f.Type)
	b = append(b, `,"id":`...)
	b = appendJSONString(b, f.ID)
	b = append(b, `,"from":`...)
	b = appendJSONString(b, f.From)
	if f.To != "" {
		b = append(b, `,"to":`...)
		b = appendJSONString(b, f.To)
	}
	if f.TTL != 0 {
		b = append(b, `,"ttl":`...)
		b = strconv.AppendInt(b, int64(f.TTL), 10)
	}
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, f.Timestamp, 10)
	if len(f.Payload) > 0 {
		b = append(b, `,"payload":`...)
		b = append(b, f.Payload...)
	}
	return append(b, '}')
}

func encodeFrame(f *Frame) []byte {
	return appendFrame(make([]byte, 0, 96+len(f.Payload)), f)
}

// appendJSONString appends s as a JSON string. The fast path covers the
// printable ASCII that node ids, types and ids consist of.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return appendJSONSlow(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendJSONSlow(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // replaces invalid bytes with U+FFFD, as json.Marshal does
	}
	enc, err := json.Marshal(s)
	if err != nil { // cannot happen for a string; keep the output valid JSON anyway
		return append(b, `""`...)
	}
	return append(b, enc...)
}
