package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/clawmatrix/clawmatrix/internal/jsonscan"
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
// json.Valid, then one walk over the top-level members that decodes only
// "model" and "stream". Anything the walk cannot settle (not an object,
// nesting beyond jsonscan.MaxDepth) goes to the decoder, whose errors are
// more precise.
func parseChatRequest(body []byte) (chatRequest, error) {
	if json.Valid(body) {
		cr, err := scanChatRequest(body)
		if !errors.Is(err, jsonscan.ErrSyntax) && !errors.Is(err, jsonscan.ErrDepth) {
			return cr, err
		}
	}
	return decodeChatRequest(body)
}

var (
	errModel   = errors.New(`"model" must be a non-empty string naming the model`)
	errStream  = errors.New(`"stream" must be true or false`)
	errNoModel = errors.New(`request body has no "model"; name the model to use`)
)

// scanChatRequest is parseChatRequest for a body known to be valid JSON.
// Like the decoder, it lets the last of duplicate keys win.
func scanChatRequest(body []byte) (chatRequest, error) {
	var cr chatRequest
	haveModel := false
	err := jsonscan.WalkObject(body, func(key, v []byte, off int) error {
		switch string(key) {
		case "model":
			m, err := jsonscan.String(v)
			if err != nil || m == "" {
				return errModel
			}
			cr.Model, haveModel = m, true
			cr.modelStart, cr.modelEnd = off, off+len(v)
		case "stream":
			b, err := jsonscan.Bool(v)
			if err != nil {
				return errStream
			}
			cr.Stream = b
		}
		return nil
	})
	if err != nil {
		return cr, err
	}
	if !haveModel {
		return cr, errNoModel
	}
	return cr, nil
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
			cr.Model = "" // null leaves a string as it was
			if err := json.Unmarshal(raw, &cr.Model); err != nil || cr.Model == "" {
				return cr, errModel
			}
			haveModel = true
			cr.modelEnd = int(dec.InputOffset())
			cr.modelStart = cr.modelEnd - len(raw)
		case "stream":
			cr.Stream = false // null means the default, even after an earlier true
			if err := json.Unmarshal(raw, &cr.Stream); err != nil {
				return cr, errStream
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
		return cr, errNoModel
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
