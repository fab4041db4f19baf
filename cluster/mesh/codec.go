package mesh

import (
	"encoding/binary"
	"errors"
)

// Stream messages are the bulk of all traffic, so their body is binary
// (docs/PROTOCOL.md, "Stream frames"): a flags byte, three varints, the
// optional strings, and the data bytes as they are, to the end of the body.
// The stream id and the R bit live in the routed header, where relays can
// read them without opening a sealed body.

// Body flag bits.
const (
	bodyMore = 1 << 0
	bodyM    = 1 << 1
	bodyE    = 1 << 2
	bodyP    = 1 << 3
)

// maxBodyString bounds the method, node id and error strings of a body.
const maxBodyString = 4096

var errBodySyntax = errors.New("malformed stream message")

// appendStreamMsg encodes m's body (everything but S and R).
func appendStreamMsg(b []byte, m *streamMsg) []byte {
	var flags byte
	if m.More {
		flags |= bodyMore
	}
	if m.M != "" {
		flags |= bodyM
	}
	if m.E != nil {
		flags |= bodyE
	}
	if m.P != "" {
		flags |= bodyP
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, m.Q)
	b = binary.AppendUvarint(b, uint64(m.W))
	b = binary.AppendUvarint(b, m.N)
	if m.M != "" {
		b = appendBodyString(b, m.M)
	}
	if m.E != nil {
		b = appendBodyString(b, m.E.Code)
		b = appendBodyString(b, m.E.Message)
	}
	if m.P != "" {
		b = appendBodyString(b, m.P)
	}
	return append(b, m.D...)
}

func appendBodyString(b []byte, s string) []byte {
	if len(s) > maxBodyString {
		s = s[:maxBodyString]
	}
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// streamMsgSize is an upper bound of m's encoded body.
func streamMsgSize(m *streamMsg) int {
	n := 1 + 3*binary.MaxVarintLen64 + len(m.D) + len(m.M) + len(m.P) + 3*binary.MaxVarintLen64
	if m.E != nil {
		n += len(m.E.Code) + len(m.E.Message)
	}
	return n
}

// decodeStreamMsg parses a body into m (S and R are set by the caller from
// the header). m.D aliases p.
func decodeStreamMsg(p []byte, m *streamMsg) error {
	if len(p) < 1 {
		return errBodySyntax
	}
	flags := p[0]
	if flags&^(bodyMore|bodyM|bodyE|bodyP) != 0 {
		return errBodySyntax
	}
	p = p[1:]
	var w uint64
	var ok bool
	if m.Q, p, ok = uvarint(p); !ok {
		return errBodySyntax
	}
	if w, p, ok = uvarint(p); !ok || w > maxWindow {
		return errBodySyntax
	}
	m.W = int(w)
	if m.N, p, ok = uvarint(p); !ok {
		return errBodySyntax
	}
	m.More = flags&bodyMore != 0
	if flags&bodyM != 0 {
		if m.M, p, ok = bodyString(p); !ok || m.M == "" {
			return errBodySyntax
		}
	}
	if flags&bodyE != 0 {
		e := &RemoteError{}
		if e.Code, p, ok = bodyString(p); !ok {
			return errBodySyntax
		}
		if e.Message, p, ok = bodyString(p); !ok {
			return errBodySyntax
		}
		m.E = e
	}
	if flags&bodyP != 0 {
		if m.P, p, ok = bodyString(p); !ok || checkNodeID(m.P) != nil {
			return errBodySyntax
		}
	}
	m.D = p
	return nil
}

func uvarint(p []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, nil, false
	}
	return v, p[n:], true
}

func bodyString(p []byte) (string, []byte, bool) {
	l, p, ok := uvarint(p)
	if !ok || l > maxBodyString || l > uint64(len(p)) {
		return "", nil, false
	}
	return string(p[:l]), p[l:], true
}
