//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/gorilla/websocket"
)

// approvalTimeout is A's approvals.timeoutMs: long enough for a CLI call
// (10-25 s on a loaded machine) to resolve an approval in time.
const approvalTimeout = 90 * time.Second

// approvalClient is an operator client of a gateway's WebSocket protocol
// that offers the plugin-approvals capability, as the Control UI does: the
// gateway delivers plugin approval prompts to it, and it can resolve them.
// Without such a client (or a chat channel that handles approvals), OpenClaw
// has no route for a prompt and refuses the call at once.
type approvalClient struct {
	conn *websocket.Conn
	done chan struct{} // closed when the reader has ended

	challenged chan struct{}
	requested  chan approvalEvent

	mu      sync.Mutex
	nextID  int
	pending map[string]chan wsResponse
	err     error
}

type approvalEvent struct {
	ID      string `json:"id"`
	Request struct {
		PluginID         string   `json:"pluginId"`
		Title            string   `json:"title"`
		Description      string   `json:"description"`
		Severity         string   `json:"severity"`
		ToolName         string   `json:"toolName"`
		AllowedDecisions []string `json:"allowedDecisions"`
	} `json:"request"`
}

type wsResponse struct {
	OK      bool            `json:"ok"`
	Payload json.RawMessage `json:"payload"`
	Error   json.RawMessage `json:"error"`
}

// dialApprovals connects to g as an approval client, authenticated with the
// gateway token.
func dialApprovals(ctx context.Context, t *testing.T, g *gateway) *approvalClient {
	t.Helper()
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, resp, err := websocket.DefaultDialer.DialContext(dctx, "ws://127.0.0.1:"+strconv.Itoa(g.port), nil)
	if resp != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("dial the gateway's WebSocket: %v", err)
	}
	c := &approvalClient{conn: conn, done: make(chan struct{}), challenged: make(chan struct{}, 1),
		requested: make(chan approvalEvent, 8), pending: map[string]chan wsResponse{}}
	go c.read()
	t.Cleanup(c.close)
	select {
	case <-c.challenged:
	case <-c.done:
		t.Fatalf("the gateway closed the WebSocket before its challenge: %v", c.readErr())
	case <-dctx.Done():
		t.Fatal("no connect.challenge from the gateway")
	}
	_, err = c.call(dctx, "connect", map[string]any{
		"minProtocol": 4, "maxProtocol": 4,
		"client": map[string]any{"id": "cli", "version": "1.0.0", "platform": "linux", "mode": "cli"},
		"role":   "operator",
		// operator.admin: the approval of an agent run's tool call is not
		// visible to a client with operator.approvals alone.
		"scopes": []string{"operator.read", "operator.approvals", "operator.admin"},
		"caps":   []string{"plugin-approvals"},
		"auth":   map[string]any{"token": g.token},
	})
	if err != nil {
		t.Fatalf("connect as an approval client: %v", err)
	}
	return c
}

func (c *approvalClient) read() {
	defer close(c.done)
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.err = err
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
		var f struct {
			Type    string          `json:"type"`
			ID      string          `json:"id"`
			Event   string          `json:"event"`
			Payload json.RawMessage `json:"payload"`
			wsResponse
		}
		if json.Unmarshal(data, &f) != nil {
			continue
		}
		switch {
		case f.Type == "event" && f.Event == "connect.challenge":
			select {
			case c.challenged <- struct{}{}:
			default:
			}
		case f.Type == "event" && f.Event == "plugin.approval.requested":
			var ev approvalEvent
			if json.Unmarshal(f.Payload, &ev) == nil {
				select {
				case c.requested <- ev:
				default: // the test asks for one at a time
				}
			}
		case f.Type == "res":
			c.mu.Lock()
			ch := c.pending[f.ID]
			delete(c.pending, f.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- wsResponse{OK: f.OK, Payload: f.Payload, Error: f.Error}
			}
		}
	}
}

func (c *approvalClient) readErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// call sends one request and waits for its answer.
func (c *approvalClient) call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	c.mu.Lock()
	c.nextID++
	id := strconv.Itoa(c.nextID)
	ch := make(chan wsResponse, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"type": "req", "id": id, "method": method, "params": params})
	c.mu.Lock()
	err := c.conn.WriteMessage(websocket.TextMessage, msg)
	c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: the WebSocket closed: %v", method, c.readErr())
		}
		if !r.OK {
			return nil, fmt.Errorf("%s refused: %s", method, r.Error)
		}
		return r.Payload, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// next waits for the next approval prompt.
func (c *approvalClient) next(ctx context.Context) (approvalEvent, error) {
	select {
	case ev := <-c.requested:
		return ev, nil
	case <-c.done:
		return approvalEvent{}, fmt.Errorf("the WebSocket closed: %v", c.readErr())
	case <-ctx.Done():
		return approvalEvent{}, fmt.Errorf("no approval prompt: %w", ctx.Err())
	}
}

func (c *approvalClient) close() {
	c.conn.Close()
	<-c.done
}

// chatTurn runs one agent turn through the gateway's /v1/chat/completions
// (a turn from an operator surface, unlike `openclaw agent` from a script)
// and returns the reply.
func (g *gateway) chatTurn(ctx context.Context, agent, message string) (string, error) {
	body, _ := json.Marshal(map[string]any{"model": "openclaw/" + agent, "messages": []any{map[string]any{"role": "user", "content": message}}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.baseURL()+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+g.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("POST /v1/chat/completions: HTTP %d: %s", resp.StatusCode, raw)
	}
	var res struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(raw, &res); err != nil || len(res.Choices) == 0 {
		return "", fmt.Errorf("POST /v1/chat/completions: unexpected answer %s (%v)", raw, err)
	}
	return res.Choices[0].Message.Content, nil
}

// testApprovals: A's config makes cluster_exec on B wait for the user. The
// model on A asks for a command that leaves a file in B's workspace and
// prints a value only B's processes have: it runs only once the user
// allowed it through the gateway's approval API, and not at all when the
// user denied it (resolved with `openclaw approvals resolve`) or when the
// turn has no approval surface.
func testApprovals(ctx context.Context, t *testing.T, c *cluster) {
	script := func(token, file string) {
		c.llm.on(token, func(tr mockllm.Turn) mockllm.Answer {
			if len(tr.ToolResults) > 0 {
				return mockllm.Answer{Text: "exec said: " + strings.Join(tr.ToolResults, " | ")}
			}
			return clusterCall(tr, "cluster_exec", map[string]any{
				"node": nodeB, "command": fmt.Sprintf(`printf ran > %s && printf 'marker:%%s' "$E2E_ONLY_ON_B"`, file),
			})
		})
	}
	ran := func(file string) bool {
		_, err := os.Stat(filepath.Join(c.b.workspace(), file))
		return err == nil
	}

	t.Run("no approval surface: refused", func(t *testing.T) {
		token, file := "tok-exec-cli-"+nonce(t), "cli-"+nonce(t)
		script(token, file)
		cctx, cancel := context.WithTimeout(ctx, turnLimit)
		defer cancel()
		got, err := c.a.agentTurn(cctx, "main", "exec-"+token, "Run the check on node B. "+token)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "Plugin approval unavailable") || strings.Contains(got, "marker:") || ran(file) {
			t.Errorf("a turn from `openclaw agent` (no approval surface) ran or was not refused: reply %q, file made %v", got, ran(file))
		}
	})

	approvals := dialApprovals(ctx, t, c.a)

	t.Run("allowed once: runs", func(t *testing.T) {
		token, file := "tok-exec-ok-"+nonce(t), "ok-"+nonce(t)
		script(token, file)
		cctx, cancel := context.WithTimeout(ctx, turnLimit)
		defer cancel()
		reply := make(chan error, 1)
		var got string
		go func() {
			var err error
			got, err = c.a.chatTurn(cctx, "main", "Run the check on node B. "+token)
			reply <- err
		}()
		ev, err := approvals.next(cctx)
		if err != nil {
			t.Fatal(err)
		}
		r := ev.Request
		if r.PluginID != "clawmatrix" || r.ToolName != "cluster_exec" || r.Title != "Run a command on node "+nodeB ||
			!strings.Contains(r.Description, `printf ran > `+file) || strings.Join(r.AllowedDecisions, ",") != "allow-once,deny" {
			t.Errorf("approval prompt = %+v", r)
		}
		if ran(file) {
			t.Fatal("the command ran before the user decided")
		}
		if _, err := approvals.call(cctx, "plugin.approval.resolve", map[string]any{"id": ev.ID, "decision": "allow-once"}); err != nil {
			t.Fatal(err)
		}
		if err := <-reply; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "marker:"+c.bOnly) || !ran(file) {
			t.Errorf("after allow-once: reply %q, file made %v; want B's marker and the file", got, ran(file))
		}
		if n := len(c.llm.answered(token)); n != 2 {
			t.Errorf("the turn took %d model requests, want 2 (the call in the prompt's form, then the answer)", n)
		}
	})

	t.Run("denied: does not run, the agent is told", func(t *testing.T) {
		token, file := "tok-exec-no-"+nonce(t), "no-"+nonce(t)
		script(token, file)
		cctx, cancel := context.WithTimeout(ctx, turnLimit)
		defer cancel()
		reply := make(chan error, 1)
		var got string
		go func() {
			var err error
			got, err = c.a.chatTurn(cctx, "main", "Run the check on node B. "+token)
			reply <- err
		}()
		ev, err := approvals.next(cctx)
		if err != nil {
			t.Fatal(err)
		}
		// The operator CLI, headless, with the approval's id.
		if out, err := c.a.cli(cctx, "approvals", "resolve", ev.ID, "deny"); err != nil {
			t.Fatalf("openclaw approvals resolve %s deny: %v\n%s", ev.ID, err, out)
		}
		if err := <-reply; err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got, "Denied by user") || strings.Contains(got, "marker:") || ran(file) {
			t.Errorf("after deny: reply %q, file made %v; want the refusal and nothing run", got, ran(file))
		}
	})
}
