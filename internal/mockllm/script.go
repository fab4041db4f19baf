package mockllm

import (
	"strings"
	"sync"
)

// Script answers by token: a test registers a token with On and puts the
// token into a prompt, and the latest user message that holds a registered
// token picks the answer. That survives what an agent host does to a
// conversation: a system prompt, context prepended to the user's message,
// an internal user message appended after each tool result, earlier turns
// kept in the session. Its Reply method is the server's Reply.
type Script struct {
	mu      sync.Mutex
	entries []scriptEntry
}

type scriptEntry struct {
	token  string
	answer func(Turn) Answer
}

// Turn is what a script sees of one request.
type Turn struct {
	// Prompt is the text of the latest user message holding the token.
	Prompt string
	// ToolResults are the texts of the role "tool" messages after that
	// user message: a non-empty list means the scripted tool was called.
	ToolResults []string
	// Tools are the names of the tools the request offered.
	Tools []string
}

// Unscripted is the answer to a prompt that holds no registered token.
const Unscripted = "mock: no script matches this prompt"

// On registers the answer for prompts holding token.
func (s *Script) On(token string, answer func(Turn) Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = append(s.entries, scriptEntry{token: token, answer: answer})
}

// Reply picks the script for a request and asks it for the answer, which
// is labelled with the script's token.
func (s *Script) Reply(r *Request) Answer {
	s.mu.Lock()
	entries := append([]scriptEntry(nil), s.entries...)
	s.mu.Unlock()
	for i := len(r.Messages) - 1; i >= 0; i-- {
		msg := r.Messages[i]
		if msg.Role != "user" {
			continue
		}
		text := msg.Text()
		for _, e := range entries {
			if !strings.Contains(text, e.token) {
				continue
			}
			t := Turn{Prompt: text, Tools: r.Tools}
			for _, later := range r.Messages[i+1:] {
				if later.Role == "tool" {
					t.ToolResults = append(t.ToolResults, later.Text())
				}
			}
			a := e.answer(t)
			a.Label = e.token
			return a
		}
	}
	return Answer{Text: Unscripted}
}
