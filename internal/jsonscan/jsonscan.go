// Package jsonscan finds the members of a JSON object in one pass, for hot
// paths that read a few top-level keys of a large document, and writes JSON
// strings (AppendString) for hot paths that build a small document by hand.
//
// encoding/json validates and then re-scans every byte, once more per
// nesting level that is decoded on its own (a frame envelope, then its
// payload). WalkObject instead yields each member's key and raw value
// without decoding the value: strings are skipped with a quote search and
// nesting is tracked exactly, so a caller pays one scan for the keys it
// wants and nothing for the rest. The value helpers (String, Int, Uint,
// Bool, Bytes) then decode only what the caller reads, taking a fast path
// for plain ASCII and handing anything else to encoding/json.
//
// The walker checks structure (strings, brackets, commas, colons) but only
// the character set of numbers and literals: a value such as 1e is skipped
// as a scalar. Callers parse the scalars they use strictly (Int, Uint, Bool
// do), and a caller that needs full validation runs json.Valid first.
package jsonscan

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strconv"
)

var (
	// ErrSyntax reports input that is not a JSON object (or value) of the
	// expected shape.
	ErrSyntax = errors.New("invalid JSON")
	// ErrDepth reports arrays and objects nested deeper than MaxDepth.
	ErrDepth = errors.New("JSON nested too deeply")
)

// MaxDepth bounds nesting inside a skipped value, so the walker needs no
// heap and hostile input cannot make it work harder than its length.
const MaxDepth = 256

// SkipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func SkipSpace(d []byte, i int) int {
	for i < len(d) && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r') {
		i++
	}
	return i
}

// ScanString scans the string whose opening quote is d[i] and returns the
// index just after its closing quote, and whether it contains escapes.
func ScanString(d []byte, i int) (end int, escaped bool, err error) {
	if i >= len(d) || d[i] != '"' {
		return 0, false, ErrSyntax
	}
	j := i + 1
	for {
		q := bytes.IndexByte(d[j:], '"')
		if q < 0 {
			return 0, false, ErrSyntax
		}
		q += j
		n := 0 // backslashes before the quote: an odd count escapes it
		for b := q - 1; b > i && d[b] == '\\'; b-- {
			n++
		}
		if n%2 == 0 {
			return q + 1, bytes.IndexByte(d[i+1:q], '\\') >= 0, nil
		}
		j = q + 1
	}
}

// SkipValue returns the index just after the JSON value starting at d[i]
// (no leading whitespace). Strings and nesting are tracked exactly; scalars
// are checked for their character set only.
func SkipValue(d []byte, i int) (int, error) {
	if i >= len(d) {
		return 0, ErrSyntax
	}
	switch d[i] {
	case '"':
		end, _, err := ScanString(d, i)
		return end, err
	case '{', '[':
		var stack [MaxDepth]byte
		depth := 0
		for j := i; j < len(d); {
			switch d[j] {
			case '"':
				end, _, err := ScanString(d, j)
				if err != nil {
					return 0, err
				}
				j = end
				continue
			case '{', '[':
				if depth == MaxDepth {
					return 0, ErrDepth
				}
				closer := byte('}')
				if d[j] == '[' {
					closer = ']'
				}
				stack[depth] = closer
				depth++
			case '}', ']':
				if depth == 0 || stack[depth-1] != d[j] {
					return 0, ErrSyntax
				}
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
			j++
		}
		return 0, ErrSyntax
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
			return 0, ErrSyntax
		}
		switch tok := d[i:j]; {
		case string(tok) == "true" || string(tok) == "false" || string(tok) == "null":
		case (tok[0] >= '0' && tok[0] <= '9') || tok[0] == '-':
		default:
			return 0, ErrSyntax
		}
		return j, nil
	}
}

// WalkObject calls fn for each member of the JSON object that is the whole
// of d (surrounding whitespace allowed), in order. key is unescaped and
// valid only during the call (switch on string(key) costs no allocation);
// val is the raw value, the sub-slice d[off:off+len(val)]. Duplicate keys
// are passed on as they come. An error from fn stops the walk and is
// returned as is; a malformed object returns ErrSyntax or ErrDepth.
func WalkObject(d []byte, fn func(key, val []byte, off int) error) error {
	i := SkipSpace(d, 0)
	if i >= len(d) || d[i] != '{' {
		return ErrSyntax
	}
	i = SkipSpace(d, i+1)
	if i < len(d) && d[i] == '}' {
		i++
	} else {
		for {
			if i >= len(d) || d[i] != '"' {
				return ErrSyntax
			}
			kEnd, kEscaped, err := ScanString(d, i)
			if err != nil {
				return err
			}
			key := d[i+1 : kEnd-1]
			if kEscaped || !printableASCII(key) {
				var k string
				if err := json.Unmarshal(d[i:kEnd], &k); err != nil {
					return ErrSyntax
				}
				key = []byte(k)
			}
			i = SkipSpace(d, kEnd)
			if i >= len(d) || d[i] != ':' {
				return ErrSyntax
			}
			i = SkipSpace(d, i+1)
			vEnd, err := SkipValue(d, i)
			if err != nil {
				return err
			}
			if err := fn(key, d[i:vEnd], i); err != nil {
				return err
			}
			i = SkipSpace(d, vEnd)
			if i < len(d) && d[i] == ',' {
				i = SkipSpace(d, i+1)
				continue
			}
			if i < len(d) && d[i] == '}' {
				i++
				break
			}
			return ErrSyntax
		}
	}
	if SkipSpace(d, i) != len(d) {
		return ErrSyntax
	}
	return nil
}

// IsNull reports whether the raw value v is the literal null.
func IsNull(v []byte) bool { return string(v) == "null" }

// String decodes a raw string value; null gives "". Invalid UTF-8 becomes
// U+FFFD, as with encoding/json.
func String(v []byte) (string, error) {
	if IsNull(v) {
		return "", nil
	}
	end, escaped, err := ScanString(v, 0)
	if err != nil || end != len(v) {
		return "", ErrSyntax
	}
	if !escaped && printableASCII(v[1:len(v)-1]) {
		return string(v[1 : len(v)-1]), nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", ErrSyntax
	}
	return s, nil
}

// Int decodes a raw integer value; null gives 0. Only JSON integers are
// accepted: no fraction, exponent, plus sign or leading zero.
func Int(v []byte) (int64, error) {
	if IsNull(v) {
		return 0, nil
	}
	if !jsonInteger(v) {
		return 0, ErrSyntax
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, ErrSyntax
	}
	return n, nil
}

// Uint decodes a raw non-negative integer value; null gives 0.
func Uint(v []byte) (uint64, error) {
	if IsNull(v) {
		return 0, nil
	}
	if !jsonInteger(v) || v[0] == '-' {
		return 0, ErrSyntax
	}
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil {
		return 0, ErrSyntax
	}
	return n, nil
}

// jsonInteger reports whether v is -?(0|[1-9][0-9]*). strconv alone would
// also take "+1" and "007".
func jsonInteger(v []byte) bool {
	if len(v) > 0 && v[0] == '-' {
		v = v[1:]
	}
	if len(v) == 0 || (v[0] == '0' && len(v) > 1) {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Bool decodes a raw boolean value; null gives false.
func Bool(v []byte) (bool, error) {
	switch string(v) {
	case "true":
		return true, nil
	case "false", "null":
		return false, nil
	}
	return false, ErrSyntax
}

// Bytes decodes a raw base64 string value the way encoding/json decodes a
// []byte; null gives nil.
func Bytes(v []byte) ([]byte, error) {
	if IsNull(v) {
		return nil, nil
	}
	end, escaped, err := ScanString(v, 0)
	if err != nil || end != len(v) {
		return nil, ErrSyntax
	}
	if escaped {
		var b []byte
		if err := json.Unmarshal(v, &b); err != nil {
			return nil, ErrSyntax
		}
		return b, nil
	}
	src := v[1 : len(v)-1]
	out := make([]byte, base64.StdEncoding.DecodedLen(len(src)))
	k, err := base64.StdEncoding.Decode(out, src)
	if err != nil {
		return nil, ErrSyntax
	}
	return out[:k], nil
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

// AppendString appends s to b as a JSON string, exactly as encoding/json
// writes it: as it is when it is plain printable ASCII with nothing to
// escape, else through encoding/json.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string: cannot fail
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
