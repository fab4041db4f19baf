package mesh

import (
	"encoding/binary"
	"math/rand/v2"
)

// The link writer encodes its WebSocket frames itself so that it can write a
// batch of them with one system call; gorilla/websocket writes every message
// separately. Reading, handshakes and control frames stay with gorilla. Only
// what the mesh sends is supported: unfragmented binary frames without
// extensions (compression is never negotiated).

const (
	wsFinBinary = 0x82 // FIN bit and opcode 2 (binary)
	wsMaskBit   = 0x80
)

// appendBinaryHeader appends the header of a WebSocket binary frame of n
// payload bytes, and returns the masking key to apply to the payload (0 and
// false for a server, which must not mask; RFC 6455 section 5.3).
func appendBinaryHeader(dst []byte, n int, client bool) ([]byte, uint32, bool) {
	var mb byte
	if client {
		mb = wsMaskBit
	}
	switch {
	case n <= 125:
		dst = append(dst, wsFinBinary, mb|byte(n))
	case n <= 0xffff:
		dst = append(dst, wsFinBinary, mb|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, wsFinBinary, mb|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if !client {
		return dst, 0, false
	}
	// The key only has to be unpredictable to scripts in a browser sharing
	// the connection's path (cache poisoning of intermediaries); a fast
	// generator is what gorilla/websocket uses too.
	key := rand.Uint32()
	return binary.LittleEndian.AppendUint32(dst, key), key, true
}

// maskFrame XORs b with the little-endian mask key repeated, eight bytes at
// a time where it can.
func maskFrame(b []byte, key uint32) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^k8)
	}
	for ; i < len(b); i++ {
		b[i] ^= byte(key >> (8 * (i & 3)))
	}
}
