package status

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testKey = "status-test-key-0123456789"

// statusServer serves a Handler for a node that runs alone.
func statusServer(t *testing.T) (*httptest.Server, *Handler) {
	t.Helper()
	cfg := mesh.DefaultLocalConfig()
	cfg.NodeID, cfg.Secret = "solo", "status-test-secret-0123456789"
	cfg.Capabilities = mesh.Capabilities{Agents: []mesh.AgentInfo{{ID: "main", Description: "the assistant"}}, Models: []mesh.ModelInfo{{ID: "m"}}, Tags: []string{"gpu"}}
	node, err := mesh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	tel, err := telemetry.New(telemetry.Options{NodeID: "solo"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tel.Close(context.Background()) })
	h := NewHandler(Source{Node: node, Telemetry: tel, StartedAt: time.Now()}, testKey)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

func do(t *testing.T, c *http.Client, method, url, key string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHandlerAuthorization(t *testing.T) {
	srv, _ := statusServer(t)
	plain := srv.Client()
	for _, tc := range []struct {
		method, path, key string
		want              int
	}{
		{"GET", "/metrics", "", http.StatusUnauthorized},
		{"GET", "/metrics", "wrong", http.StatusUnauthorized},
		{"GET", "/metrics", testKey, http.StatusOK},
		{"GET", "/status", "", http.StatusUnauthorized},
		{"GET", "/status", testKey, http.StatusOK},
		{"GET", "/status.json", "", http.StatusUnauthorized},
		{"GET", "/status.json", testKey, http.StatusOK},
		{"POST", "/status.json", testKey, http.StatusMethodNotAllowed},
		{"POST", "/status/link", "", http.StatusUnauthorized},
		{"GET", "/status/link", testKey, http.StatusMethodNotAllowed},
		{"POST", "/status/link", testKey, http.StatusOK},
		{"GET", "/status/app.js", "", http.StatusOK},
		{"GET", "/status/style.css", "", http.StatusOK},
		{"GET", "/status/index.html", testKey, http.StatusNotFound},
		{"GET", "/status/../metrics", "", http.StatusNotFound},
		{"GET", "/status?token=made-up", "", http.StatusUnauthorized},
	} {
		resp, body := do(t, plain, tc.method, srv.URL+tc.path, tc.key)
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s (key %q): %d, want %d: %s", tc.method, tc.path, tc.key, resp.StatusCode, tc.want, body)
		}
		if resp.StatusCode == http.StatusUnauthorized && tc.path != "/status?token=made-up" && !strings.Contains(body, "/status/link") {
			t.Errorf("%s %s: the refusal does not say how to get in: %s", tc.method, tc.path, body)
		}
		if strings.Contains(body, testKey) {
			t.Errorf("%s %s shows the key", tc.method, tc.path)
		}
	}
}

// A browser gets in with a one-time link: it becomes a session cookie and
// the address loses the token; the link does not work twice, and the
// session reaches the page and its data but not the metrics or new links.
func TestHandlerOneTimeLink(t *testing.T) {
	srv, h := statusServer(t)
	link := h.Link(srv.URL)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	resp, body := do(t, browser, "GET", link, "")
	if resp.StatusCode != http.StatusOK || resp.Request.URL.RawQuery != "" || !strings.Contains(body, `<script src="/status/app.js">`) {
		t.Fatalf("opening the link: %d at %s: %.200s", resp.StatusCode, resp.Request.URL, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("page policy %q", csp)
	}
	resp, body = do(t, browser, "GET", srv.URL+"/status.json", "")
	var s Snapshot
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &s) != nil || s.Node.NodeID != "solo" || s.Version != SchemaVersion {
		t.Fatalf("status.json in the session: %d %s", resp.StatusCode, body)
	}
	if len(s.Node.Models) != 1 || s.Node.Models[0] != "m" || s.Node.Agents[0].Description != "the assistant" || s.Peers == nil || s.Requests == nil {
		t.Errorf("snapshot %+v", s)
	}
	for _, p := range []string{"/metrics"} {
		if resp, _ := do(t, browser, "GET", srv.URL+p, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("the session reached %s: %d", p, resp.StatusCode)
		}
	}
	if resp, _ := do(t, browser, "POST", srv.URL+"/status/link", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the session made a new link: %d", resp.StatusCode)
	}
	if resp, body := do(t, &http.Client{}, "GET", link, ""); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "used already") {
		t.Errorf("the link opened twice: %d %s", resp.StatusCode, body)
	}
	// A link made over the API works the same way.
	_, body = do(t, srv.Client(), "POST", srv.URL+"/status/link", testKey)
	var made struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal([]byte(body), &made); err != nil || !strings.HasPrefix(made.URL, srv.URL+"/status?token=") {
		t.Fatalf("POST /status/link: %s", body)
	}
	jar2, _ := cookiejar.New(nil)
	if resp, _ := do(t, &http.Client{Jar: jar2}, "GET", made.URL, ""); resp.StatusCode != http.StatusOK {
		t.Errorf("the link from the API: %d", resp.StatusCode)
	}
}

func TestHandlerExpiry(t *testing.T) {
	srv, h := statusServer(t)
	now := time.Now()
	h.now = func() time.Time { return now }
	old := h.Link(srv.URL)
	now = now.Add(tokenTTL + time.Minute)
	if resp, _ := do(t, &http.Client{}, "GET", old, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an expired link opened: %d", resp.StatusCode)
	}
	link := h.Link(srv.URL)
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	if resp, _ := do(t, browser, "GET", link, ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("link: %d", resp.StatusCode)
	}
	now = now.Add(sessionTTL + time.Minute)
	if resp, _ := do(t, browser, "GET", srv.URL+"/status.json", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("an expired session got in: %d", resp.StatusCode)
	}
	// Links and sessions are bounded.
	for range 3 * maxTokens {
		h.Link(srv.URL)
	}
	h.mu.Lock()
	n := len(h.tokens)
	h.mu.Unlock()
	if n > maxTokens {
		t.Errorf("%d links held, at most %d", n, maxTokens)
	}
}
