package remote

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/clawmatrix/clawmatrix/schema"
)

const testGatewayToken = "gw-token-0123456789"

// fakeGateway stands in for OpenClaw's POST /tools/invoke. It checks the
// bearer token, knows a few tools, and records the requests it served.
type fakeGateway struct {
	*httptest.Server
	requests chan map[string]any
}

func newFakeGateway(t *testing.T) *fakeGateway {
	t.Helper()
	g := &fakeGateway{requests: make(chan map[string]any, 16)}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/tools/invoke" {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+testGatewayToken {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"ok":false,"error":{"type":"unauthorized","message":"Unauthorized"}}`)
			return
		}
		var req map[string]any
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad json", http.StatusBadRequest)
			return
		}
		g.requests <- req
		args, _ := req["args"].(map[string]any)
		w.Header().Set("Content-Type", "application/json")
		switch req["tool"] {
		case "web_fetch":
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": "fetched " + args["url"].(string)}},
				"details": map[string]any{"status": 200},
			}})
		case "images":
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": "one picture"}, map[string]any{"type": "image", "data": "AAAA"}},
			}})
		case "big":
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": strings.Repeat("z", 3000)}},
			}})
		case "leaky":
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": "the token is " + testGatewayToken}},
				"details": map[string]any{"auth": "Bearer " + testGatewayToken},
			}})
		case "cutleak":
			// The token straddles byte 1000 of the text.
			json.NewEncoder(w).Encode(map[string]any{"ok": true, "result": map[string]any{
				"content": []any{map[string]any{"type": "text", "text": strings.Repeat("z", 995) + testGatewayToken + strings.Repeat("z", 100)}},
			}})
		case "crash":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"ok":false,"error":{"type":"tool_error","message":"tool crashed: ENOENT"}}`)
		case "notjson":
			io.WriteString(w, "<html>proxy page</html>")
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"ok":false,"error":{"type":"not_found","message":"Tool not available"}}`)
		}
	}))
	t.Cleanup(g.Close)
	return g
}

func TestInvokeTool(t *testing.T) {
	gw := newFakeGateway(t)
	p := openPolicy()
	p.MaxOutputBytes = 1000
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, Gateway: &schema.Gateway{URL: gw.URL + "/", Token: testGatewayToken}})
	cases := []struct {
		name    string
		args    schema.ToolArgs
		isError bool
		text    string
	}{
		{"ok", schema.ToolArgs{Tool: "web_fetch", Args: map[string]any{"url": "http://example.test"}}, false, "fetched http://example.test"},
		{"non-text content", schema.ToolArgs{Tool: "images"}, false, "one picture\n[image content not shown"},
		{"output cap", schema.ToolArgs{Tool: "big"}, false, "[... 2000 bytes cut"},
		{"unknown tool", schema.ToolArgs{Tool: "teleport"}, true, `tool "teleport" is not available on node "n1" (unknown, or blocked by its gateway policy)`},
		{"exec over http", schema.ToolArgs{Tool: "exec"}, true, "Use cluster_exec for that"},
		{"gateway error", schema.ToolArgs{Tool: "crash"}, true, `failed tool "crash" (HTTP 500): tool crashed: ENOENT`},
		{"not json", schema.ToolArgs{Tool: "notjson"}, true, "not JSON: <html>proxy page</html>"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tg.invokeTool(t.Context(), tc.args)
			if r.IsError != tc.isError || !strings.Contains(r.Text, tc.text) {
				t.Errorf("got isError=%v %q; want isError=%v containing %q", r.IsError, r.Text, tc.isError, tc.text)
			}
		})
	}
	req := <-gw.requests
	if req["tool"] != "web_fetch" || req["args"].(map[string]any)["url"] != "http://example.test" {
		t.Errorf("gateway got %v", req)
	}
	if req := <-gw.requests; req["tool"] != "images" || req["args"] == nil {
		t.Errorf("a tool without args must send args {}: %v", req)
	}
	if d := detailsMap(t, tg.invokeTool(t.Context(), schema.ToolArgs{Tool: "web_fetch", Args: map[string]any{"url": "u"}})); d["result"].(map[string]any)["status"] != 200.0 {
		t.Errorf("the tool's details are not passed on: %v", d)
	}
}

// The handler scrubs the gateway token from whatever leaves the node.
func TestInvokeToolRedactsToken(t *testing.T) {
	gw := newFakeGateway(t)
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), Gateway: &schema.Gateway{URL: gw.URL, Token: testGatewayToken}})
	w := &recorder{}
	if err := tg.handler(schema.ToolTool).ServeMesh(t.Context(), w, meshRequest("a", []byte(`{"node":"n1","tool":"leaky"}`))); err != nil {
		t.Fatal(err)
	}
	if raw := string(w.msgs[0]); strings.Contains(raw, testGatewayToken) || !strings.Contains(raw, "[redacted]") {
		t.Errorf("the response holds the token: %s", raw)
	}
}

// A tool's text is scrubbed before it is cut to maxOutputBytes, so a token
// straddling the limit leaves no prefix, and the note counts the bytes of
// the scrubbed text.
func TestInvokeToolCapSplitsNoToken(t *testing.T) {
	gw := newFakeGateway(t)
	p := openPolicy()
	p.MaxOutputBytes = 1000
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, Gateway: &schema.Gateway{URL: gw.URL, Token: testGatewayToken}})
	r := serve(t, tg, schema.ToolTool, schema.ToolArgs{Node: "n1", Tool: "cutleak"})
	if strings.Contains(r.Text, testGatewayToken[:5]) {
		t.Fatalf("a prefix of the token survived the cut: ...%q", r.Text[900:])
	}
	// Scrubbed: 995 z, "[redacted]", 100 z = 1105 bytes; 1000 are kept.
	if !strings.HasPrefix(r.Text, strings.Repeat("z", 995)+"[reda\n[... 105 bytes cut") {
		t.Errorf("text ...%q", r.Text[900:])
	}
	if d := detailsMap(t, r); d["cutBytes"] != 105.0 {
		t.Errorf("details %v", d)
	}
}

func TestInvokeToolGatewayProblems(t *testing.T) {
	gw := newFakeGateway(t)
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	cases := []struct {
		name string
		gw   *schema.Gateway
		text string
	}{
		{"no gateway", nil, `node "n1" has no OpenClaw gateway`},
		{"wrong token", &schema.Gateway{URL: gw.URL, Token: "wrong-token-value"}, "refused the clawmatrix sidecar's credentials (HTTP 401)"},
		{"gateway down", &schema.Gateway{URL: downURL, Token: testGatewayToken}, "could not reach its OpenClaw gateway at " + downURL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: openPolicy(), Gateway: tc.gw})
			r := tg.invokeTool(t.Context(), schema.ToolArgs{Tool: "web_fetch", Args: map[string]any{"url": "x"}})
			if !r.IsError || !strings.Contains(r.Text, tc.text) {
				t.Errorf("got %+v, want an error containing %q", r, tc.text)
			}
			if strings.Contains(r.Text, testGatewayToken) || strings.Contains(r.Text, "wrong-token-value") {
				t.Errorf("a token leaked: %q", r.Text)
			}
		})
	}
}

func TestBadGatewayURL(t *testing.T) {
	for _, u := range []string{"ftp://x", "::bad", "127.0.0.1:18789"} {
		if _, err := newTarget("n1", TargetConfig{WorkspaceDir: t.TempDir(), Gateway: &schema.Gateway{URL: u, Token: testGatewayToken}}); err == nil {
			t.Errorf("gateway URL %q accepted", u)
		} else if strings.Contains(err.Error(), testGatewayToken) {
			t.Errorf("error holds the token: %v", err)
		}
	}
}

// cluster_tool's policy name is the tool it runs: a denied tool is refused
// on the target before the gateway hears of it, others still run.
func TestInvokeToolPolicyByToolName(t *testing.T) {
	gw := newFakeGateway(t)
	p := openPolicy()
	p.Deny = []string{"web_fetch"}
	tg := newTestTarget(t, "n1", TargetConfig{ToolProxy: p, Gateway: &schema.Gateway{URL: gw.URL, Token: testGatewayToken}})
	r := tg.invokeTool(t.Context(), schema.ToolArgs{Tool: "web_fetch", Args: map[string]any{"url": "x"}})
	if !r.IsError || !strings.Contains(r.Text, `node "n1" refuses tool "web_fetch": it is in the node's toolProxy.deny list`) {
		t.Fatalf("denied tool: %+v", r)
	}
	if r := tg.invokeTool(t.Context(), schema.ToolArgs{Tool: "images"}); r.IsError {
		t.Fatalf("a tool not denied was refused: %+v", r)
	}
	if req := <-gw.requests; req["tool"] != "images" {
		t.Fatalf("the gateway got %v; the denied tool must not reach it", req)
	}
}
