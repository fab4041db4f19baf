package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/clawmatrix/clawmatrix/schema"
)

// ToolDetails are the details of a cluster_tool result.
type ToolDetails struct {
	Node string `json:"node"`
	Tool string `json:"tool"`
	// Result holds the tool's own details, when it returned any that fit
	// within the output limit.
	Result    json.RawMessage `json:"result,omitempty"`
	Truncated bool            `json:"truncated,omitempty"`
	CutBytes  int             `json:"cutBytes,omitempty"`
}

// invokeResponse is the gateway's /tools/invoke answer.
type invokeResponse struct {
	OK     *bool `json:"ok"`
	Result *struct {
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		Details json.RawMessage `json:"details"`
	} `json:"result"`
	Error json.RawMessage `json:"error"`
}

// gatewayErrorText pulls a readable message out of an error body, which may
// be {error: {message}}, {error: "..."} or not JSON at all. A body that is
// shown as it is gets scrubbed before it is shortened.
func gatewayErrorText(body []byte, red redactor) string {
	var r struct {
		Error   json.RawMessage `json:"error"`
		Message string          `json:"message"`
	}
	if json.Unmarshal(body, &r) == nil {
		var nested struct {
			Message string `json:"message"`
		}
		var plain string
		switch {
		case json.Unmarshal(r.Error, &nested) == nil && nested.Message != "":
			return nested.Message
		case json.Unmarshal(r.Error, &plain) == nil && plain != "":
			return plain
		case r.Message != "":
			return r.Message
		}
	}
	text := red.text(strings.TrimSpace(string(body)))
	kept, dropped := cut([]byte(text), 300)
	if dropped > 0 {
		return string(kept) + "..."
	}
	return text
}

// invokeTool runs any OpenClaw tool through the local gateway's
// POST /tools/invoke. exec and file writes are refused there by default,
// which is why cluster_exec, cluster_read and cluster_write run natively.
func (t *Target) invokeTool(ctx context.Context, a schema.ToolArgs) Result {
	if err := checkPolicy(t.policy, t.nodeID, a.Tool); err != nil {
		return errorResult(err.Error())
	}
	// The gateway gets the name exactly as the policy checked it.
	a.Tool, _ = schema.NormalizeToolName(a.Tool)
	if t.gateway == nil {
		return errorResult(fmt.Sprintf("node %q has no OpenClaw gateway (it runs as a standalone clawmatrix node), so it cannot run "+
			"OpenClaw tools like %q; only cluster_exec, cluster_read and cluster_write work there.", t.nodeID, a.Tool))
	}
	args := a.Args
	if args == nil {
		args = map[string]any{}
	}
	body, err := json.Marshal(map[string]any{"tool": a.Tool, "args": args})
	if err != nil {
		return errorResult(fmt.Sprintf("the arguments for tool %q cannot be encoded: %v", a.Tool, err))
	}
	ctx, cancel := context.WithTimeout(ctx, t.maxTimeout)
	defer cancel()
	endpoint := t.gatewayURL.JoinPath("tools", "invoke").String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return errorResult(fmt.Sprintf("node %q cannot build the gateway request: %v", t.nodeID, err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+t.gateway.Token)
	resp, err := t.http.Do(req)
	if err != nil {
		switch {
		case errors.Is(ctx.Err(), context.DeadlineExceeded):
			return errorResult(fmt.Sprintf("tool %q on node %q did not finish within %s (toolProxy.maxTimeoutMs) and was abandoned.",
				a.Tool, t.nodeID, t.maxTimeout))
		case ctx.Err() != nil:
			return errorResult(fmt.Sprintf("tool %q on node %q was cancelled.", a.Tool, t.nodeID))
		}
		t.log.Warn("gateway unreachable for cluster_tool", "tool", a.Tool, "gateway", t.gatewayURL.Redacted())
		return errorResult(fmt.Sprintf("node %q could not reach its OpenClaw gateway at %s to run tool %q; the gateway may be "+
			"down or restarting. Try again shortly, or use cluster_exec on that node.", t.nodeID, t.gatewayURL.Redacted(), a.Tool))
	}
	defer resp.Body.Close()
	// The tool's text is cut to maxOutputBytes anyway; the body limit only
	// keeps a runaway answer from filling memory.
	limit := int64(4*t.maxOutput + 1<<20)
	raw, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return errorResult(fmt.Sprintf("node %q lost the answer of its gateway for tool %q: %v", t.nodeID, a.Tool, err))
	}
	if int64(len(raw)) > limit {
		return errorResult(fmt.Sprintf("tool %q on node %q returned more than %d bytes; ask for less (narrower arguments).",
			a.Tool, t.nodeID, limit))
	}

	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		hint := ""
		switch a.Tool {
		case "exec", "read", "write":
			hint = fmt.Sprintf(" Use cluster_%s for that: it runs natively in the clawmatrix sidecar of node %q.", a.Tool, t.nodeID)
		}
		return errorResult(fmt.Sprintf("tool %q is not available on node %q (unknown, or blocked by its gateway policy).%s",
			a.Tool, t.nodeID, hint))
	case http.StatusUnauthorized, http.StatusForbidden:
		return errorResult(fmt.Sprintf("node %q's OpenClaw gateway refused the clawmatrix sidecar's credentials (HTTP %d), so no "+
			"tool can run there through cluster_tool. The gateway token given to the sidecar on that node is wrong or outdated; "+
			"restarting the gateway there fixes it.", t.nodeID, resp.StatusCode))
	default:
		return errorResult(fmt.Sprintf("node %q's OpenClaw gateway failed tool %q (HTTP %d): %s",
			t.nodeID, a.Tool, resp.StatusCode, gatewayErrorText(raw, t.redact)))
	}

	var ir invokeResponse
	if err := json.Unmarshal(raw, &ir); err != nil {
		return errorResult(fmt.Sprintf("node %q's OpenClaw gateway answered tool %q with something that is not JSON: %s",
			t.nodeID, a.Tool, gatewayErrorText(raw, t.redact)))
	}
	if ir.OK != nil && !*ir.OK {
		return errorResult(fmt.Sprintf("tool %q failed on node %q: %s", a.Tool, t.nodeID, gatewayErrorText(raw, t.redact)))
	}
	d := ToolDetails{Node: t.nodeID, Tool: a.Tool}
	var parts []string
	if ir.Result != nil {
		for _, c := range ir.Result.Content {
			if c.Type == "text" || (c.Type == "" && c.Text != "") {
				parts = append(parts, c.Text)
			} else {
				parts = append(parts, fmt.Sprintf("[%s content not shown: cluster_tool passes on text only]", c.Type))
			}
		}
		if len(ir.Result.Details) > 0 && string(ir.Result.Details) != "null" {
			if len(ir.Result.Details) <= t.maxOutput {
				d.Result = ir.Result.Details
			} else {
				parts = append(parts, fmt.Sprintf("[the tool's details (%d bytes) exceed the output limit and were dropped]",
					len(ir.Result.Details)))
			}
		}
	}
	text := strings.Join(parts, "\n")
	if text == "" {
		text = fmt.Sprintf("tool %q on node %q finished with no text output.", a.Tool, t.nodeID)
	}
	text, d.CutBytes = t.redact.capText(text, t.maxOutput)
	d.Truncated = d.CutBytes > 0
	return Result{Text: text, Details: d}
}
