package proxy

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// apiError is an error in OpenAI's shape: {"error": {message, type, code}}.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"` // always null; OpenAI's shape has it
	Code    string  `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

// Error types and codes the proxy answers with. Types follow OpenAI's.
const (
	typeInvalidRequest = "invalid_request_error"
	typeAuth           = "authentication_error"
	typeServer         = "server_error"

	codeInvalidAPIKey    = "invalid_api_key"
	codeModelNotFound    = "model_not_found"
	codeModelUnavailable = "model_unavailable"
	codeBadRequest       = "invalid_request"
	codeNotFound         = "not_found"
	codeMethod           = "method_not_allowed"
	codeUpstream         = "upstream_error"
	codeTooLarge         = "request_too_large"
)

func errorBody(e *apiError) []byte {
	b, _ := json.Marshal(struct {
		Error *apiError `json:"error"`
	}{e})
	return b
}

// writeError answers the request with e as OpenAI error JSON.
func writeError(w http.ResponseWriter, e *apiError) {
	b := errorBody(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(e.Status)
	w.Write(b)
}

// sseError is the event that ends an SSE response that broke after it began;
// OpenAI clients surface an event with an "error" key as a stream error.
func sseError(e *apiError) []byte {
	b := errorBody(e)
	out := make([]byte, 0, len(b)+8)
	out = append(out, "data: "...)
	out = append(out, b...)
	return append(out, "\n\n"...)
}
