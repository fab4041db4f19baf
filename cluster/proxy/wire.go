package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
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

func encodeHead(status int, h http.Header) []byte {
	out := head{Status: status, Header: make(http.Header, len(h))}
	for k, v := range h {
		if !dropHeaders[http.CanonicalHeaderKey(k)] {
			out.Header[k] = v
		}
	}
	b, _ := json.Marshal(out)
	return b
}

func decodeHead(b []byte) (head, error) {
	var h head
	if err := json.Unmarshal(b, &h); err != nil {
		return h, fmt.Errorf("bad response head from serving node: %v", err)
	}
	if h.Status < 100 || h.Status > 999 {
		return h, fmt.Errorf("bad response head from serving node: status %d", h.Status)
	}
	return h, nil
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
