package mesh

import (
	"encoding/base64"
	"encoding/json"
	"strconv"

	"github.com/clawmatrix/clawmatrix/internal/jsonscan"
)

// Stream payloads are the bulk of all traffic. encoding/json would validate
// and re-scan each one twice (envelope, then payload), which made the reader
// of a busy link spend most of its time scanning base64 data. So they are
// encoded by hand and decoded in one pass with jsonscan, like the envelope
// (decodeFrame): a relay never parses a payload, and the target scans a data
// chunk once before base64-decoding it.

// encodeStreamMsg is the hand-written encoder of stream payloads.
func encodeStreamMsg(m *streamMsg) []byte {
	b := make([]byte, 0, 64+base64.StdEncoding.EncodedLen(len(m.D))+len(m.M))
	b = append(b, `{"s":`...)
	b = strconv.AppendUint(b, m.S, 10)
	if m.Q != 0 {
		b = append(b, `,"q":`...)
		b = strconv.AppendUint(b, m.Q, 10)
	}
	if m.M != "" {
		b = append(b, `,"m":`...)
		b = appendJSONString(b, m.M)
	}
	if m.W != 0 {
		b = append(b, `,"w":`...)
		b = strconv.AppendInt(b, int64(m.W), 10)
	}
	if len(m.D) > 0 {
		b = append(b, `,"d":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.D)
		b = append(b, '"')
	}
	if m.More {
		b = append(b, `,"more":true`...)
	}
	if m.N != 0 {
		b = append(b, `,"n":`...)
		b = strconv.AppendUint(b, m.N, 10)
	}
	if m.R {
		b = append(b, `,"r":true`...)
	}
	if m.P != "" {
		b = append(b, `,"p":`...)
		b = appendJSONString(b, m.P)
	}
	if m.E != nil {
		e, _ := json.Marshal(m.E) // strings only: cannot fail
		b = append(b, `,"e":`...)
		b = append(b, e...)
	}
	return append(b, '}')
}

// decodeStreamMsg parses a stream payload in one pass.
func decodeStreamMsg(p []byte, m *streamMsg) error {
	return jsonscan.WalkObject(p, func(key, v []byte, _ int) error {
		var err error
		switch string(key) {
		case "s":
			m.S, err = jsonscan.Uint(v)
		case "q":
			m.Q, err = jsonscan.Uint(v)
		case "m":
			m.M, err = jsonscan.String(v)
		case "w":
			var w int64
			w, err = jsonscan.Int(v)
			if err == nil && (w < 0 || w > maxWindow*1024) {
				err = jsonscan.ErrSyntax
			}
			m.W = int(w)
		case "d":
			m.D, err = jsonscan.Bytes(v)
		case "more":
			m.More, err = jsonscan.Bool(v)
		case "n":
			m.N, err = jsonscan.Uint(v)
		case "r":
			m.R, err = jsonscan.Bool(v)
		case "p":
			m.P, err = jsonscan.String(v)
		case "e":
			if jsonscan.IsNull(v) {
				m.E = nil
				return nil
			}
			m.E = new(RemoteError)
			err = json.Unmarshal(v, m.E)
		}
		return err
	})
}
