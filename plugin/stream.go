package plugin

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/sourcegraph/jsonrpc2"
)

// MaxLineBytes bounds one protocol line. A host never needs more (the largest
// message is a cluster_write with its content); a longer line is discarded as
// it streams in, so a runaway writer cannot make the sidecar grow to match it.
const MaxLineBytes = 8 << 20

// JSON-RPC 2.0 error codes used on the host protocol.
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
)

// lineStream is a jsonrpc2.ObjectStream of newline-delimited JSON.
//
// Unlike the library's codecs it survives bad input: a line that is not JSON,
// not a JSON-RPC message, or too long is answered with a JSON-RPC error
// (id null) and reading goes on with the next line.
type lineStream struct {
	r      *bufio.Reader
	closer io.Closer
	// beforeEnd, when set, runs once when input ends, before ReadObject
	// reports it: the connection stays open while it runs, so answers to
	// requests already read still reach the host.
	beforeEnd func()

	mu sync.Mutex // serialises writes: replies, notifications, error answers
	w  *bufio.Writer
}

func newLineStream(r io.Reader, w io.Writer, closer io.Closer) *lineStream {
	return &lineStream{r: bufio.NewReaderSize(r, 64<<10), w: bufio.NewWriter(w), closer: closer}
}

// WriteObject writes obj as one line.
func (s *lineStream) WriteObject(obj any) error {
	data, err := json.Marshal(obj)
	if err != nil {
		return err
	}
	return s.writeLine(data)
}

func (s *lineStream) writeLine(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w.Write(data)
	s.w.WriteByte('\n')
	return s.w.Flush()
}

// ReadObject decodes the next well-formed message into v, answering and
// skipping malformed lines on the way. It returns io.EOF at end of input.
func (s *lineStream) ReadObject(v any) error {
	for {
		line, err := s.readLine()
		if errors.Is(err, errLineTooLong) {
			s.replyError(CodeParseError, fmt.Sprintf("line longer than %d bytes refused; split the request or send less data", MaxLineBytes))
			continue
		}
		if err != nil && len(line) == 0 {
			return s.end(err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			if err != nil {
				return s.end(err)
			}
			continue
		}
		if !json.Valid(line) {
			s.replyError(CodeParseError, "parse error: line is not valid JSON; send one JSON-RPC 2.0 object per line")
			continue
		}
		if uerr := json.Unmarshal(line, v); uerr != nil {
			s.replyError(CodeInvalidRequest, "invalid request: expected a JSON-RPC 2.0 request object with \"jsonrpc\", \"method\" and optional \"id\" and \"params\"")
			continue
		}
		return nil
	}
}

func (s *lineStream) end(err error) error {
	if f := s.beforeEnd; f != nil {
		s.beforeEnd = nil
		f()
	}
	return err
}

var errLineTooLong = errors.New("line too long")

// readLine returns the next line without its newline. A line over
// MaxLineBytes is consumed up to its newline and reported as errLineTooLong.
func (s *lineStream) readLine() ([]byte, error) {
	var buf []byte
	tooLong := false
	for {
		chunk, err := s.r.ReadSlice('\n')
		if !tooLong {
			if len(buf)+len(chunk) > MaxLineBytes+1 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			if tooLong {
				return nil, errLineTooLong
			}
			return buf, err
		case tooLong:
			return nil, errLineTooLong
		default:
			return buf[:len(buf)-1], nil
		}
	}
}

// replyError answers a line that could not be read as a request; such an
// answer has id null because the request's id is unknown.
func (s *lineStream) replyError(code int64, msg string) {
	data, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": nil, "error": &jsonrpc2.Error{Code: code, Message: msg}})
	s.writeLine(data)
}

// Close closes the underlying input.
func (s *lineStream) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}
