package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"

	"github.com/clawmatrix/clawmatrix/internal/jsonscan"
)

// MethodChat is the mesh method that carries a chat completion request to
// the node serving the model.
const MethodChat = "model.chat"

// head is the first message of a model.chat response: the upstream's HTTP
// status and the headers worth passing to the client.
type head struct {
	Status int         `json:"status"`
	Header http.Header `json:"header,omitempty"`
}

// dropHeaders are not passed from the upstream to the client: hop-by-hop
// headers, ones the front's own HTTP server sets, and cookies that belong to
// the upstream's origin.
var dropHeaders = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Proxy-Connection":    true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Content-Length":      true,
	"Date":                true,
	"Server":              true,
	"Set-Cookie":          true,
	"Alt-Svc":             true,
}

// encodeHead writes the head by hand, as {"status":N,"header":{...}} with the
// keys sorted like encoding/json would. It and decodeHead run for every
// request; through encoding/json's reflection they were a visible part of
// the proxy's CPU time.
func encodeHead(status int, h http.Header) []byte {
	keys := make([]string, 0, len(h))
	size := 32
	for k, v := range h {
		if !dropHeaders[http.CanonicalHeaderKey(k)] {
			keys = append(keys, k)
			size += len(k) + 8
			for _, s := range v {
				size += len(s) + 3
			}
		}
	}
	slices.Sort(keys)
	b := make([]byte, 0, size)
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	if len(keys) > 0 {
		b = append(b, `,"header":{`...)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonscan.AppendString(b, k)
			b = append(b, ':')
			v := h[k]
			if v == nil {
				b = append(b, "null"...)
				continue
			}
			b = append(b, '[')
			for j, s := range v {
				if j > 0 {
					b = append(b, ',')
				}
				b = jsonscan.AppendString(b, s)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func decodeHead(b []byte) (head, error) {
	h, ok := scanHead(b)
	if !ok {
		// Anything the scanner does not take as it is (other keys,
		// duplicates, other types) gets encoding/json's exact semantics.
		h = head{}
		if err := json.Unmarshal(b, &h); err != nil {
			return h, fmt.Errorf("bad response head from serving node: %v", err)
		}
	}
	if h.Status < 100 || h.Status > 999 {
		return h, fmt.Errorf("bad response head from serving node: status %d", h.Status)
	}
	return h, nil
}

var errScan = errors.New("not the usual head")

// scanHead decodes a head in the shape encodeHead writes, in one pass; it
// reports false for anything else.
func scanHead(b []byte) (head, bool) {
	var h head
	var haveStatus, haveHeader bool
	err := jsonscan.WalkObject(b, func(key, v []byte, _ int) error {
		switch string(key) {
		case "status":
			n, err := jsonscan.Int(v)
			if err != nil || haveStatus || jsonscan.IsNull(v) || n < math.MinInt32 || n > math.MaxInt32 {
				return errScan
			}
			h.Status, haveStatus = int(n), true
		case "header":
			if haveHeader || jsonscan.IsNull(v) {
				return errScan
			}
			haveHeader = true
			h.Header = http.Header{}
			return jsonscan.WalkObject(v, func(k, vals []byte, _ int) error {
				if _, dup := h.Header[string(k)]; dup {
					return errScan
				}
				ss, ok := scanStrings(vals)
				if !ok {
					return errScan
				}
				h.Header[string(k)] = ss
				return nil
			})
		default:
			return errScan
		}
		return nil
	})
	return h, err == nil
}

// scanStrings decodes a JSON array of strings, or null.
func scanStrings(v []byte) ([]string, bool) {
	if jsonscan.IsNull(v) {
		return nil, true
	}
	if len(v) == 0 || v[0] != '[' {
		return nil, false
	}
	out := []string{}
	i := jsonscan.SkipSpace(v, 1)
	if i < len(v) && v[i] == ']' {
		return out, i+1 == len(v)
	}
	for {
		end, _, err := jsonscan.ScanString(v, i)
		if err != nil {
			return nil, false
		}
		s, err := jsonscan.String(v[i:end])
		if err != nil {
			return nil, false
		}
		out = append(out, s)
		i = jsonscan.SkipSpace(v, end)
		if i >= len(v) {
			return nil, false
		}
		if v[i] == ']' {
			return out, i+1 == len(v)
		}
		if v[i] != ',' {
			return nil, false
		}
		i = jsonscan.SkipSpace(v, i+1)
	}
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "text/event-stream"
}

// eventsEnd returns the length of the longest prefix of b made of complete
// SSE events (each ended by a blank line), 0 if there is none. Sending only
// whole events lets the front end a broken stream with a clean error event.
func eventsEnd(b []byte) int {
	end := 0
	if i := bytes.LastIndex(b, []byte("\n\n")); i >= 0 {
		end = i + 2
	}
	if i := bytes.LastIndex(b, []byte("\n\r\n")); i >= 0 && i+3 > end {
		end = i + 3
	}
	if i := bytes.LastIndex(b, []byte("\r\r")); i >= 0 && i+2 > end {
		end = i + 2
	}
	return end
}
