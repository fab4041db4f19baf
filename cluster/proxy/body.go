package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
func parseChatRequest(body []byte) (chatRequest, error) {
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
