package mesh

// Streams.
//
// Open sends a request (one message, fragmented into "req" chunks) and
// returns a Stream; the target runs the handler, whose Writes come back as
// "res" chunks, and ends with "end" (carrying the handler's error, if any).
// Every chunk carries a per-direction sequence number, so a stream fails
// instead of being corrupted when frames are lost with a link. Responses
// that arrive early are reordered (see Reordering); request chunks out of
// order end the stream at once.
//
// Flow control is per stream and direction, in frames: a sender may have W
// (RequestWindow) frames unacknowledged. The receiver credits a chunk that
// continues a message as soon as it is reassembled, and a message's last
// chunk when Recv returns the message, with cumulative "ack" frames every
// W/2 frames. So a slow reader makes the handler's Write block with at most
// W complete messages buffered, a big message streams through at W chunks
// per round trip, and no stream can put more than W frames on any relay
// link's queue.
//
// Cancellation: Stream.Close or the caller's ctx sends "cancel"; the target
// cancels the handler's context (with the reason in "e" when the caller gave
// the stream up because its route broke). A side that receives frames for a stream it
// does not know answers "no_stream", which ends the stream on the other side.
// The target also sends "no_stream", with the reason in "e", when it gives
// up a stream (its route back lost a link): unlike "end" it is a control
// frame, acted on whatever the sequence, so the caller learns at once even
// if response frames were lost. "r" marks a no_stream for the caller's side
// of the stream, so that it is never taken for a stream the receiver serves.
//
// Reordering: when a shorter route appears mid-stream, newer response frames
// can overtake older ones still on the old route. The caller stashes frames
// that arrive early (at most a window's worth, as the target cannot send
// more) and fails the stream if a gap stays open for DeadAfter. Each side
// records every link its stream's frames may have used and fails the stream
// when one of them is lost, since frames in flight on it are gone.

// streamMsg is a stream frame's content. S and R travel in the routed
// header (so relays can report a lost frame's stream), the rest in the body
// (codec.go).
type streamMsg struct {
	S    uint64       // stream id, chosen by the caller
	Q    uint64       // sequence number within the direction
	M    string       // method (first request chunk)
	W    int          // window (first request chunk)
	D    []byte       // message bytes
	More bool         // the message continues in the next chunk
	N    uint64       // ack: frames consumed so far
	R    bool         // sent by the target's side (acks for request frames, no_stream and lost to the caller)
	E    *RemoteError // end: the handler's error
	P    string       // lost: the other end of the stream
	// X is the header extension block of a first request chunk (sent as
	// req_ext when not empty; ext.go). It travels in the header, not the body.
	X []byte
	// written is called when the frame leaves this node (see Frame.written).
	written func(error)
}

// maxWindow bounds the window a caller may ask for.
const maxWindow = 1024

// deliver handles a stream frame addressed to this node. l is the link it
// arrived on, nil for this node's own requests.
func (n *Node) deliver(l *link, f *Frame) {
	var m streamMsg
	if err := decodeStreamMsg(f.Payload, &m); err != nil {
		n.log.Debug("mesh: malformed stream frame", "from", f.From, "type", typeName(f.Type), "err", err)
		return
	}
	m.S, m.R, m.X = f.Stream, f.R, f.Ext
	switch f.Type {
	case typeReq, typeReqExt:
		n.onReq(l, f.From, &m)
	case typeAck:
		if m.R {
			n.smu.Lock()
			s := n.clients[m.S]
			n.smu.Unlock()
			if s != nil && s.to == f.From {
				s.mu.Lock()
				if m.N > s.reqAcked {
					s.reqAcked = m.N
				}
				s.mu.Unlock()
				select {
				case s.credit <- struct{}{}:
				default:
				}
			}
			return
		}
		ss := n.server(f.From, m.S)
		if ss == nil {
			n.answerProbe(f.From, m.S)
			return
		}
		ss.mu.Lock()
		if m.N > ss.acked {
			ss.acked = m.N
		}
		ss.mu.Unlock()
		select {
		case ss.credit <- struct{}{}:
		default:
		}
	case typeCancel:
		if ss := n.server(f.From, m.S); ss != nil {
			var cause error = errCancelled
			if m.E != nil && m.E.Message != "" {
				cause = unreachable(f.From, m.E.Message)
			}
			ss.cancel(cause)
			n.removeServer(ss)
		}
	case typeRes, typeEnd:
		n.onRes(l, f, &m)
	case typeLost:
		n.onLost(f.From, &m)
	case typeNoStream:
		if !m.R {
			if ss := n.server(f.From, m.S); ss != nil {
				ss.cancel(errCancelled)
				n.removeServer(ss)
			}
			return
		}
		n.smu.Lock()
		s := n.clients[m.S]
		n.smu.Unlock()
		if s != nil && s.to == f.From {
			why := "the node lost the stream"
			if m.E != nil && m.E.Message != "" {
				why = m.E.Message
			}
			s.finish(unreachable(f.From, why))
			n.removeClient(s)
			s.stopWatch()
		}
	}
}
