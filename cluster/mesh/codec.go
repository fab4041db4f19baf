package mesh

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
)

// A small JSON object walker for the hot path. encoding/json validates and
// then re-scans every byte, twice per nesting level (the envelope, then the
// payload), which made the reader of a busy link spend most of its time
// scanning base64 data. The walker finds the members of one object in a
// single pass, skipping values with a quote search, so the envelope costs
// one scan, a relay never parses the payload, and the target scans a data
// chunk once before base64-decoding it. Values the hot path does not
// understand are handed to encoding/json.

var (
	errJSONSyntax = errors.New("invalid JSON")
	errJSONDepth  = errors.New("JSON nested too deeply")
)

const maxJSONDepth = 256

func skipWS(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// scanString scans the string starting at d[i] == '"' and returns the index
// after its closing quote and whether it contains escapes.
func scanString(d []byte, i int) (end int, complex bool, err error) {
	j := i + 1
	for {
		q := bytes.IndexByte(d[j:], '"')
		if q < 0 {
			return 0, false, errJSONSyntax
		}
		q += j
		n := 0
		for b := q - 1; b > i && d[b] == '\\'; b-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, bytes.IndexByte(d[i+1:q], '\\') >= 0, nil
		}
		j = q + 1
	}
}

// skipValue returns the index just after the JSON value starting at d[i].
// Strings and nesting are tracked exactly; scalars are checked for their
// character set only (the code that uses a scalar parses it strictly).
func skipValue(d []byte, i int) (int, error) {
	if i >= len(d) {
		return 0, errJSONSyntax
	}
	switch c := d[i]; c {
	case '"':
		end, _, err := scanString(d, i)
		return end, err
	case '{', '[':
		var stack [maxJSONDepth]byte
		depth := 0
		for j := i; j < len(d); {
			switch d[j] {
			case '"':
				end, _, err := scanString(d, j)
				if err != nil {
					return 0, err
				}
				j = end
				continue
			case '{', '[':
				if depth == maxJSONDepth {
					return 0, errJSONDepth
				}
				closer := byte('}')
				if d[j] == '[' {
					closer = ']'
				}
				stack[depth] = closer
				depth++
			case '}', ']':
				if depth == 0 || stack[depth-1] != d[j] {
					return 0, errJSONSyntax
				}
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
			j++
		}
		return 0, errJSONSyntax
	default:
		j := i
		for j < len(d) {
			c := d[j]
			if (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' || c == '.' || c == 'E' {
				j++
				continue
			}
			break
		}
		if j == i {
			return 0, errJSONSyntax
		}
		switch tok := string(d[i:j]); {
		case tok == "true" || tok == "false" || tok == "null":
		case (tok[0] >= '0' && tok[0] <= '9') || tok[0] == '-':
		default:
			return 0, errJSONSyntax
		}
		return j, nil
	}
}

// walkObject calls fn for each member of the JSON object that is the whole
// of d. Keys are unescaped; values are raw sub-slices of d.
func walkObject(d []byte, fn func(key string, val []byte) error) error {
	i := skipWS(d, 0)
	if i >= len(d) || d[i] != '{' {
		return errJSONSyntax
	}
	i = skipWS(d, i+1)
	if i < len(d) && d[i] == '}' {
		i++
	} else {
		for {
			if i >= len(d) || d[i] != '"' {
				return errJSONSyntax
			}
			kEnd, kComplex, err := scanString(d, i)
			if err != nil {
				return err
			}
			var key string
			if kComplex || !printableASCII(d[i+1:kEnd-1]) {
				if err := json.Unmarshal(d[i:kEnd], &key); err != nil {
					return errJSONSyntax
				}
			} else {
				key = string(d[i+1 : kEnd-1])
			}
			i = skipWS(d, kEnd)
			if i >= len(d) || d[i] != ':' {
				return errJSONSyntax
			}
			i = skipWS(d, i+1)
			vEnd, err := skipValue(d, i)
			if err != nil {
				return err
			}
			if err := fn(key, d[i:vEnd]); err != nil {
				return err
			}
			i = skipWS(d, vEnd)
			if i < len(d) && d[i] == ',' {
				i = skipWS(d, i+1)
				continue
			}
			if i < len(d) && d[i] == '}' {
				i++
				break
			}
			return errJSONSyntax
		}
	}
	if skipWS(d, i) != len(d) {
		return errJSONSyntax
	}
	return nil
}

func isNull(v []byte) bool { return len(v) == 4 && string(v) == "null" }

// jsonString decodes a string value (or null, as "").
func jsonString(v []byte) (string, error) {
	if isNull(v) {
		return "", nil
	}
	if len(v) < 2 || v[0] != '"' {
		return "", errJSONSyntax
	}
	end, complex, err := scanString(v, 0)
	if err != nil || end != len(v) {
		return "", errJSONSyntax
	}
	if !complex && printableASCII(v[1:len(v)-1]) {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", errJSONSyntax
	}
	return s, nil
}

func jsonInt(v []byte) (int64, error) {
	if isNull(v) {
		return 0, nil
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, errJSONSyntax
	}
	return n, nil
}

func jsonUint(v []byte) (uint64, error) {
	if isNull(v) {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, errJSONSyntax
	}
	return n, nil
}

func jsonBool(v []byte) (bool, error) {
	switch string(v) {
	case "true":
		return true, nil
	case "false", "null":
		return false, nil
	}
	return false, errJSONSyntax
}

// jsonBytes decodes base64 data the way encoding/json does for []byte.
func jsonBytes(v []byte) ([]byte, error) {
	if isNull(v) {
		return nil, nil
	}
	if len(v) < 2 || v[0] != '"' {
		return nil, errJSONSyntax
	}
	end, complex, err := scanString(v, 0)
	if err != nil || end != len(v) {
		return nil, errJSONSyntax
	}
	if complex {
		var b []byte
		if err := json.Unmarshal(v, &b); err != nil {
			return nil, errJSONSyntax
		}
		return b, nil
	}
	src := v[1 : len(v)-1]
	out := make([]byte, base64.StdEncoding.DecodedLen(len(src)))
	k, err := base64.StdEncoding.Decode(out, src)
	if err != nil {
		return nil, errJSONSyntax
	}
	return out[:k], nil
}

// encodeStreamMsg is the hand-written encoder of stream payloads, the bulk
// of all traffic.
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
	if m.E != nil {
		e, _ := json.Marshal(m.E) // strings only: cannot fail
		b = append(b, `,"e":`...)
		b = append(b, e...)
	}
	return append(b, '}')
}

// decodeStreamMsg parses a stream payload in one pass.
func decodeStreamMsg(p []byte, m *streamMsg) error {
	return walkObject(p, func(key string, v []byte) error {
		var err error
		switch key {
		case "s":
			m.S, err = jsonUint(v)
		case "q":
			m.Q, err = jsonUint(v)
		case "m":
			m.M, err = jsonString(v)
		case "w":
			var w int64
			w, err = jsonInt(v)
			if err == nil && (w < 0 || w > maxWindow*1024) {
				err = errJSONSyntax
			}
			m.W = int(w)
		case "d":
			m.D, err = jsonBytes(v)
		case "more":
			m.More, err = jsonBool(v)
		case "n":
			m.N, err = jsonUint(v)
		case "r":
			m.R, err = jsonBool(v)
		case "e":
			if isNull(v) {
				m.E = nil
				return nil
			}
			m.E = new(RemoteError)
			err = json.Unmarshal(v, m.E)
		}
		return err
	})
}

// printableASCII reports whether b needs no decoding as a JSON string body;
// anything else (control bytes, UTF-8) goes through encoding/json, which
// validates it.
func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}
