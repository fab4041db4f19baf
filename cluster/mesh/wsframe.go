package mesh

import (
	"encoding/binary"
	"math/rand/v2"
)

// The link writer encodes its WebSocket frames itself so that it can write a
// batch of them with one system call; gorilla/websocket writes every message
// separately. Reading, handshakes and control frames stay with gorilla. Only
// what the mesh sends is supported: unfragmented text frames without
// extensions (compression is never negotiated).

const (
	wsFinText = 0x81 // FIN bit and opcode 1 (text)
	wsMaskBit = 0x80
)

// appendTextFrame appends one complete WebSocket text frame carrying
// payload to dst. A client (the side that dialed) must mask its frames
// (RFC 6455 §5.3); a server must not.
func appendTextFrame(dst, payload []byte, client bool) []byte {
	var mb byte
	if client {
		mb = wsMaskBit
	}
	n := len(payload)
	switch {
	case n <= 125:
		dst = append(dst, wsFinText, mb|byte(n))
	case n <= 0xffff:
		dst = append(dst, wsFinText, mb|126, byte(n>>8), byte(n))
	default:
		dst = append(dst, wsFinText, mb|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(n))
	}
	if !client {
		return append(dst, payload...)
	}
	// The key only has to be unpredictable to scripts in a browser sharing
	// the connection's path (cache poisoning of intermediaries); a fast
	// generator is what gorilla/websocket uses too.
	key := rand.Uint32()
	dst = binary.LittleEndian.AppendUint32(dst, key)
	start := len(dst)
	dst = append(dst, payload...)
	maskFrame(dst[start:], key)
	return dst
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
