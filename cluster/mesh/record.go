package mesh

// Link records (docs/PROTOCOL.md, "Records"). After the handshake, every
// message on a link (a WebSocket binary message by default) is one Noise
// transport message: the ciphertext of a one-byte record kind and up to
// maxRecordPlain bytes of a frame. Noise caps a message at 65535 bytes, so a larger frame is cut into
// several records, all but the last of kind recordMore. Nonces are
// implicit and in order, as the transport delivers messages: a record that
// was injected, replayed, reordered or changed fails to decrypt, and the
// link closes with CloseDecrypt.

const (
	recordFinal byte = 0
	recordMore  byte = 1
)

const (
	noiseTagLen    = 16
	maxRecordBytes = 65535
	maxRecordPlain = maxRecordBytes - noiseTagLen - 1
)

// sealRecords appends frame to w.batch, encrypted as one or more records,
// and the offset where each record ends to w.ends; each record travels as
// one message. Only the writer calls it.
func (l *link) sealRecords(w *writerBufs, frame []byte) {
	for {
		k := min(len(frame), maxRecordPlain)
		kind := recordFinal
		if k < len(frame) {
			kind = recordMore
		}
		w.seal = append(append(w.seal[:0], kind), frame[:k]...)
		frame = frame[k:]
		out, err := l.send.Encrypt(w.batch, nil, w.seal)
		if err != nil {
			// Only after 2^64-1 records; the link cannot go on.
			l.close(CloseProtocol, "link nonce exhausted")
			return
		}
		w.batch = out
		w.ends = append(w.ends, len(w.batch))
		if kind == recordFinal {
			return
		}
	}
}

// openRecord decrypts one record. It returns the whole frame once its last
// record has arrived, nil while more are due. Only the reader calls it.
func (l *link) openRecord(rec []byte, maxFrame int) ([]byte, error) {
	pt, err := l.recv.Decrypt(nil, nil, rec)
	if err != nil || len(pt) < 1 || pt[0] > recordMore {
		return nil, authFail(CloseDecrypt, "")
	}
	kind, body := pt[0], pt[1:]
	if len(l.frag)+len(body) > maxFrame {
		return nil, authFail(CloseFrameTooLarge, "frame larger than %d bytes", maxFrame)
	}
	if kind == recordMore {
		l.frag = append(l.frag, body...)
		return nil, nil
	}
	if l.frag == nil {
		return body, nil
	}
	frame := append(l.frag, body...)
	l.frag = nil
	return frame, nil
}
