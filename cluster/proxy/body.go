package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// chatRequest is what the proxy reads from a chat completion body. Everything
// else in the body is passed on untouched.
type chatRequest struct {
	Model  string
	Stream bool
	// modelStart and modelEnd delimit the JSON value of the top-level
	// "model" key in the body, so it can be replaced without re-encoding.
	modelStart, modelEnd int
}

// parseChatRequest validates body as one JSON object and finds its top-level
// "model" and "stream". The error text is meant for the client.
//
// It sits in front of every request, so valid bodies take a fast path:
// json.Valid, then a scan over the top-level keys only.
func parseChatRequest(body []byte) (chatRequest, error) {
	if json.Valid(body) {
		return scanChatRequest(body)
	}
	return decodeChatRequest(body)
}

// scanChatRequest is parseChatRequest for a body known to be valid JSON.
func scanChatRequest(body []byte) (chatRequest, error) {
	var cr chatRequest
	i := skipSpace(body, 0)
	if body[i] != '{' {
		return cr, errors.New("request body must be a JSON object like {\"model\": \"...\", \"messages\": [...]}")
	}
	haveModel := false
	i = skipSpace(body, i+1)
	for body[i] != '}' {
		keyEnd := skipValue(body, i)
		key := body[i+1 : keyEnd-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			json.Unmarshal(body[i:keyEnd], &k)
			key = []byte(k)
		}
		i = skipSpace(body, keyEnd)
		i = skipSpace(body, i+1) // the colon
		end := skipValue(body, i)
		switch string(key) {
		case "model":
			cr.Model = ""
			if body[i] == '"' {
				if v := body[i+1 : end-1]; bytes.IndexByte(v, '\\') < 0 && utf8.Valid(v) {
					cr.Model = string(v)
				} else {
					json.Unmarshal(body[i:end], &cr.Model)
				}
			}
			if cr.Model == "" {
				return cr, errors.New(`"model" must be a non-empty string naming the model`)
			}
			haveModel = true
			cr.modelStart, cr.modelEnd = i, end
		case "stream":
			switch string(body[i:end]) {
			case "true":
				cr.Stream = true
			case "false", "null":
				cr.Stream = false
			default:
				return cr, errors.New(`"stream" must be true or false`)
			}
		}
		i = skipSpace(body, end)
		if body[i] == ',' {
			i = skipSpace(body, i+1)
		}
	}
	if !haveModel {
		return cr, errors.New(`request body has no "model"; name the model to use`)
	}
	return cr, nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the JSON value starting at b[i]; b is valid.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = skipString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return i
	default:
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// skipString returns the index just past the string starting at b[i].
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// decodeChatRequest is the slow path, for the precise error of an invalid body.
func decodeChatRequest(body []byte) (chatRequest, error) {
	var cr chatRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return cr, fmt.Errorf("request body is not valid JSON: %v", jsonErr(err))
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return cr, errors.New("request body must be a JSON object like {\"model\": \"...\", \"messages\": [...]}")
	}
	haveModel := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return cr, fmt.Errorf("request body is not valid JSON: %v", jsonErr(err))
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return cr, fmt.Errorf("request body is not valid JSON: %v", jsonErr(err))
		}
		switch key {
		case "model":
			if err := json.Unmarshal(raw, &cr.Model); err != nil || cr.Model == "" {
				return cr, errors.New(`"model" must be a non-empty string naming the model`)
			}
			haveModel = true
			cr.modelEnd = int(dec.InputOffset())
			cr.modelStart = cr.modelEnd - len(raw)
		case "stream":
			if string(raw) == "null" {
				continue
			}
			if err := json.Unmarshal(raw, &cr.Stream); err != nil {
				return cr, errors.New(`"stream" must be true or false`)
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return cr, fmt.Errorf("request body is not valid JSON: %v", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return cr, errors.New("request body has data after the JSON object")
	}
	if !haveModel {
		return cr, errors.New(`request body has no "model"; name the model to use`)
	}
	return cr, nil
}

func jsonErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errors.New("unexpected end of input")
	}
	return err
}

// withModel returns body with its top-level "model" set to model, leaving
// every other byte as it was. body is not modified.
func withModel(body []byte, cr chatRequest, model string) []byte {
	if model == cr.Model {
		return body
	}
	q, _ := json.Marshal(model)
	out := make([]byte, 0, len(body)-(cr.modelEnd-cr.modelStart)+len(q))
	out = append(out, body[:cr.modelStart]...)
	out = append(out, q...)
	return append(out, body[cr.modelEnd:]...)
}
