package plugin

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sourcegraph/jsonrpc2"

	"github.com/clawmatrix/clawmatrix/cluster"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Bounds of an approval prompt: OpenClaw refuses a title over 80 characters
// or a description over 512 (and then blocks the call), so both stay under.
const (
	approvalTitleMax       = 80
	approvalDescriptionMax = 480
	approvalQuoteMax       = 300 // a command, task or message within the description
	approvalPathMax        = 160
	approvalIDMax          = 64
)

// Decisions offered: allow-always is left out, since nothing here would
// remember it; every call asks again.
var approvalDecisions = []string{"allow-once", "deny"}

// toolApproval answers hooks/beforeToolCall: whether the call waits for the
// user's approval (approvals in the config), and the prompt the user sees.
func (s *Server) toolApproval(req *jsonrpc2.Request) (any, error) {
	rt, err := s.ready()
	if err != nil {
		return nil, err
	}
	var p ToolApprovalParams
	if err := decodeParams(req, &p); err != nil {
		return nil, err
	}
	args := []byte(p.Params)
	if len(args) == 0 || string(args) == "null" {
		args = []byte("{}")
	}
	return approvalFor(rt, p.ToolName, args), nil
}

// approvalFor decides on one call; {} lets it run without asking.
func approvalFor(rt *cluster.Runtime, tool string, args []byte) ToolApprovalResult {
	cfg := rt.Config().Approvals
	if !slices.Contains(schema.ToolNames(), tool) || len(cfg.Tools) == 0 {
		return ToolApprovalResult{}
	}
	// Arguments the tool refuses run nothing: its own error says why,
	// without a prompt first.
	if _, problems := schema.DecodeToolCall(tool, args); len(problems) > 0 {
		return ToolApprovalResult{}
	}
	var a struct {
		Node, Command, Cwd, Path, Content, Tool, Agent, Task, Context, Message string
		Append                                                                 bool
		Offset, Limit, TimeoutMs                                               int
		Args                                                                   map[string]json.RawMessage
		Tags                                                                   []string
	}
	if err := json.Unmarshal(args, &a); err != nil {
		return ToolApprovalResult{}
	}
	node := a.Node
	if tool == schema.ToolHandoff || tool == schema.ToolSend {
		// Where the call would go now; when no node would take it, the
		// call fails, but it is asked for anyway (the cluster may change
		// before it runs).
		node, _ = rt.AgentNode(a.Agent, a.Node, a.Tags)
	}
	if !cfg.Gates(tool, node) {
		return ToolApprovalResult{}
	}
	txt := approvalWriter{secrets: rt.Secrets()}
	on := "an unknown node"
	if node != "" {
		on = "node " + txt.id(node)
	}
	var title, desc, severity string
	severity = "warning"
	switch tool {
	case schema.ToolExec:
		title = "Run a command on " + on
		desc = fmt.Sprintf("%s wants to run a shell command on %s", tool, on)
		if a.Cwd != "" {
			desc += " in " + txt.path(a.Cwd)
		}
		desc += ": " + txt.quote(a.Command)
	case schema.ToolRead:
		severity = "info"
		title = "Read a file on " + on
		desc = fmt.Sprintf("%s wants to read %s on %s", tool, txt.path(a.Path), on)
		if a.Offset > 0 || a.Limit > 0 {
			desc += fmt.Sprintf(" (from line %d, up to %d lines)", max(a.Offset, 1), a.Limit)
		}
	case schema.ToolWrite:
		verb := "replace"
		if a.Append {
			verb = "append to"
		}
		title = "Write a file on " + on
		desc = fmt.Sprintf("%s wants to %s %s on %s with %d bytes (the content is not shown here)", tool, verb, txt.path(a.Path), on, len(a.Content))
	case schema.ToolTool:
		title = "Run tool " + txt.id(a.Tool) + " on " + on
		names := make([]string, 0, len(a.Args))
		for k := range a.Args {
			names = append(names, txt.id(k))
		}
		sort.Strings(names)
		desc = fmt.Sprintf("%s wants to run the OpenClaw tool %s on %s", tool, txt.id(a.Tool), on)
		if len(names) > 0 {
			desc += " with arguments " + txt.bound(strings.Join(names, ", "), approvalQuoteMax) + " (their values are not shown here)"
		} else {
			desc += " without arguments"
		}
	case schema.ToolHandoff:
		to := "the first agent of " + on
		if a.Agent != "" {
			to = "agent " + txt.id(a.Agent) + " on " + on
		}
		title = "Hand a task to " + to
		desc = fmt.Sprintf("%s wants to give %s this task: %s", tool, to, txt.quote(a.Task))
		if a.Context != "" {
			desc += " (with background not shown here)"
		}
	case schema.ToolSend:
		to := "the first agent of " + on
		if a.Agent != "" {
			to = "agent " + txt.id(a.Agent) + " on " + on
		}
		title = "Send a message to " + to
		desc = fmt.Sprintf("%s wants to send %s this message: %s", tool, to, txt.quote(a.Message))
	case schema.ToolTasks:
		severity = "info"
		title = "List or cancel delegated work"
		desc = tool + " wants to list the messages and tasks this conversation sent"
		var t struct {
			ID     string `json:"id"`
			Cancel bool   `json:"cancel"`
		}
		json.Unmarshal(args, &t)
		if t.Cancel {
			severity = "warning"
			title = "Cancel " + txt.id(t.ID)
			desc = fmt.Sprintf("%s wants to cancel %s: one not started yet never starts, a running one is stopped", tool, txt.id(t.ID))
		}
	default: // cluster_peers
		severity = "info"
		title = "Show the cluster's nodes"
		desc = tool + " wants to list the nodes of the cluster, with their agents and models"
	}
	timeout := cfg.TimeoutMs
	if timeout <= 0 {
		timeout = schema.DefaultApprovalTimeoutMs
	}
	return ToolApprovalResult{RequireApproval: &ApprovalRequest{
		Title:            txt.bound(title, approvalTitleMax),
		Description:      txt.bound(desc, approvalDescriptionMax),
		Severity:         severity,
		AllowedDecisions: approvalDecisions,
		TimeoutMs:        timeout,
		TimeoutReason: fmt.Sprintf("The user did not approve %s on %s within %d s, so it did not run. "+
			"Do not call it again unless the user asks for it.", tool, on, timeout/1000),
	}}
}

// Secret-looking values, removed from prompt text whatever their source:
// key=value pairs and command-line flags whose name says credential, bearer
// tokens, well-known token prefixes, and long opaque strings mixing cases
// and digits.
var (
	secretAssignRE = regexp.MustCompile(`(?i)([A-Za-z0-9_.-]*(?:key|token|secret|passw(?:or)?d|pwd|auth|credential)[A-Za-z0-9_.-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|[^\s"';&|]+)`)
	secretFlagRE   = regexp.MustCompile(`(?i)(\s--?[A-Za-z0-9_-]*(?:key|token|secret|passw(?:or)?d|pwd|credential)[A-Za-z0-9_-]*)(\s+)("[^"]*"|'[^']*'|[^\s"';&|-][^\s"';&|]*)`)
	bearerRE       = regexp.MustCompile(`(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+`)
	tokenPrefixRE  = regexp.MustCompile(`\b(?:sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abposr]-[A-Za-z0-9-]{10,}|glpat-[A-Za-z0-9_-]{16,}|AKIA[A-Z0-9]{16})`)
	opaqueRE       = regexp.MustCompile(`[A-Za-z0-9+/_=-]{40,}`)
)

// approvalWriter makes text from a tool call fit an approval prompt: one
// line, no control or formatting characters, no secret, bounded.
type approvalWriter struct{ secrets []string }

func (w approvalWriter) clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	for _, secret := range w.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	s = bearerRE.ReplaceAllString(s, "$1 [redacted]")
	s = secretAssignRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := secretAssignRE.FindStringSubmatch(m)
		if v := strings.ToLower(sub[3]); v == "bearer" || v == "basic" {
			return m // "Authorization: Bearer [redacted]" is done already
		}
		return sub[1] + sub[2] + "[redacted]"
	})
	s = secretFlagRE.ReplaceAllString(s, "$1$2[redacted]")
	s = tokenPrefixRE.ReplaceAllString(s, "[redacted]")
	return opaqueRE.ReplaceAllStringFunc(s, func(m string) string {
		if mixed(m) {
			return "[redacted]"
		}
		return m
	})
}

// mixed reports whether s has upper and lower case letters and digits, as
// keys and tokens do and words, paths and hex digests do not.
func mixed(s string) bool {
	var up, low, digit bool
	for _, r := range s {
		up = up || unicode.IsUpper(r)
		low = low || unicode.IsLower(r)
		digit = digit || unicode.IsDigit(r)
	}
	return up && low && digit
}

// bound cleans s and cuts it to n runes, marking the cut.
func (w approvalWriter) bound(s string, n int) string {
	s = w.clean(s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return strings.TrimSpace(string(r[:n-1])) + "…"
}

func (w approvalWriter) id(s string) string    { return w.bound(s, approvalIDMax) }
func (w approvalWriter) path(s string) string  { return `"` + w.bound(s, approvalPathMax) + `"` }
func (w approvalWriter) quote(s string) string { return `"` + w.bound(s, approvalQuoteMax) + `"` }
