package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/clawmatrix/clawmatrix/cluster/proxy"
)

// chatReply is what a proxy answered to one chat completion.
type chatReply struct {
	Node string // the X-Clawmatrix-Node header: the node that served it
	Text string // the assistant's text (streamed deltas joined)
}

// errTimeout marks a request that got no answer within its deadline.
var errTimeout = errors.New("no answer within the deadline")

// chat sends one chat completion with msg as the user message to a model
// proxy and reads the whole answer. A stream must end with [DONE]; an error
// event or a missing [DONE] is an error.
func chat(ctx context.Context, hc *http.Client, baseURL, key, model, msg string, stream bool) (chatReply, error) {
	body, _ := json.Marshal(map[string]any{
		"model": model, "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": msg}},
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return chatReply{}, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return chatReply{}, errTimeout
		}
		return chatReply{}, err
	}
	defer resp.Body.Close()
	rep := chatReply{Node: resp.Header.Get(proxy.NodeHeader)}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return rep, fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	if !stream {
		var out struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			if ctx.Err() != nil {
				return rep, errTimeout
			}
			return rep, fmt.Errorf("reading the completion: %w", err)
		}
		if len(out.Choices) == 0 {
			return rep, errors.New("the completion has no choices")
		}
		rep.Text = out.Choices[0].Message.Content
		return rep, nil
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			rep.Text = text.String()
			return rep, nil
		}
		var chunk struct {
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return rep, fmt.Errorf("stream event is not JSON: %q", data)
		}
		if chunk.Error != nil {
			return rep, fmt.Errorf("stream broke off: %s", chunk.Error.Message)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if ctx.Err() != nil {
		return rep, errTimeout
	}
	if err := sc.Err(); err != nil {
		return rep, fmt.Errorf("stream broke off: %w", err)
	}
	return rep, errors.New("stream ended without [DONE]")
}
