package status

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed page
var pageFiles embed.FS

// Who may see what. Every path but the page's static files needs the
// proxy key as a bearer token, or, for a browser, which cannot send one,
// a session cookie. A browser gets the cookie by opening a one-time link
// (/status?token=...) that `clawmatrix-plugin node` prints, or that
// POST /status/link hands to a holder of the key. The link works once and
// for a limited time; the session it opens lasts sessionTTL.
const (
	// tokenTTL is how long a one-time link can be opened.
	tokenTTL = 24 * time.Hour
	// sessionTTL is how long a browser session lasts.
	sessionTTL = 12 * time.Hour
	// maxTokens and maxSessions bound what is held; the oldest go first.
	maxTokens   = 32
	maxSessions = 64
	// cookieName holds the session.
	cookieName = "clawmatrix_status"
)

// Handler serves /metrics, /status, /status.json, /status/link and the
// page's files under /status/.
type Handler struct {
	src     Source
	key     []byte
	metrics http.Handler

	mu       sync.Mutex
	tokens   map[string]time.Time // one-time link token -> expiry
	sessions map[string]time.Time // session cookie -> expiry
	now      func() time.Time
}

// NewHandler serves src's status and metrics to holders of key.
func NewHandler(src Source, key string) *Handler {
	return &Handler{
		src:      src,
		key:      []byte(key),
		metrics:  promhttp.HandlerFor(src.Telemetry.Registry(), promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
		tokens:   map[string]time.Time{},
		sessions: map[string]time.Time{},
		now:      time.Now,
	}
}

// MetricsHandler serves only /metrics, with the same key (for
// metrics.listen).
func (h *Handler) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.Error(w, "not found: this address serves only GET /metrics", http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Link makes a one-time link to the page, for base (http://127.0.0.1:PORT).
func (h *Handler) Link(base string) string {
	tok := randomToken()
	h.mu.Lock()
	h.pruneLocked()
	evictOldest(h.tokens, maxTokens-1)
	h.tokens[tok] = h.now().Add(tokenTTL)
	h.mu.Unlock()
	return strings.TrimRight(base, "/") + "/status?token=" + tok
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Referrer-Policy", "no-referrer")
	p := r.URL.Path
	if p == "/status/app.js" || p == "/status/style.css" {
		h.static(w, r, strings.TrimPrefix(p, "/status/"))
		return
	}
	if p == "/status" && r.URL.Query().Has("token") {
		h.redeem(w, r)
		return
	}
	switch p {
	case "/metrics", "/status", "/status.json", "/status/link":
	default:
		http.Error(w, "not found: the status paths are /status, /status.json, /metrics and POST /status/link", http.StatusNotFound)
		return
	}
	bearer := h.bearer(r)
	if !bearer && !(p != "/metrics" && p != "/status/link" && h.session(r)) {
		h.unauthorized(w, p)
		return
	}
	switch p {
	case "/metrics":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			methodNotAllowed(w, "GET")
			return
		}
		h.metrics.ServeHTTP(w, r)
	case "/status":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		h.static(w, r, "index.html")
	case "/status.json":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		b, _ := json.Marshal(h.src.Take())
		hdr.Set("Content-Type", "application/json")
		hdr.Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	case "/status/link":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return
		}
		b, _ := json.Marshal(map[string]any{"url": h.Link("http://" + r.Host), "expiresInSeconds": int(tokenTTL.Seconds())})
		hdr.Set("Content-Type", "application/json")
		w.Write(b)
	}
}

func (h *Handler) bearer(r *http.Request) bool {
	auth := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(auth) < len(prefix) || !strings.EqualFold(auth[:len(prefix)], prefix) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(strings.TrimSpace(auth[len(prefix):])), h.key) == 1
}

func (h *Handler) session(r *http.Request) bool {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	exp, ok := h.sessions[c.Value]
	if ok && h.now().After(exp) {
		delete(h.sessions, c.Value)
		ok = false
	}
	return ok
}

// redeem turns a one-time link into a session and sends the browser to the
// page without the token in its address.
func (h *Handler) redeem(w http.ResponseWriter, r *http.Request) {
	tok := r.URL.Query().Get("token")
	h.mu.Lock()
	h.pruneLocked()
	_, ok := h.tokens[tok]
	delete(h.tokens, tok)
	var sess string
	if ok {
		sess = randomToken()
		evictOldest(h.sessions, maxSessions-1)
		h.sessions[sess] = h.now().Add(sessionTTL)
	}
	h.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte("This status link was used already or has expired: each link opens the page once.\n" + howToGetIn))
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: sess, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		MaxAge: int(sessionTTL.Seconds())})
	http.Redirect(w, r, "/status", http.StatusSeeOther)
}

const howToGetIn = "Get a new link: `clawmatrix-plugin node` prints one at start, or ask the node for one with its proxy key:\n" +
	"  curl -X POST -H \"Authorization: Bearer $KEY\" http://127.0.0.1:PORT/status/link\n" +
	"(in a gateway the key is in <OpenClaw state dir>/clawmatrix/proxy-key). /status.json and /metrics take the key as a bearer token.\n"

func (h *Handler) unauthorized(w http.ResponseWriter, path string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="clawmatrix"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte(path + " needs the proxy key (Authorization: Bearer <key>) or a status page session.\n" + howToGetIn))
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "method not allowed; use "+allow, http.StatusMethodNotAllowed)
}

// static serves a file of the page with a policy that runs only the page's
// own script and style.
func (h *Handler) static(w http.ResponseWriter, r *http.Request, name string) {
	b, err := fs.ReadFile(pageFiles, "page/"+name)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	hdr := w.Header()
	switch {
	case strings.HasSuffix(name, ".html"):
		hdr.Set("Content-Type", "text/html; charset=utf-8")
	case strings.HasSuffix(name, ".js"):
		hdr.Set("Content-Type", "text/javascript; charset=utf-8")
	case strings.HasSuffix(name, ".css"):
		hdr.Set("Content-Type", "text/css; charset=utf-8")
	}
	hdr.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	hdr.Set("X-Frame-Options", "DENY")
	w.Write(b)
}

// pruneLocked drops expired tokens and sessions.
func (h *Handler) pruneLocked() {
	now := h.now()
	for _, m := range []map[string]time.Time{h.tokens, h.sessions} {
		for k, exp := range m {
			if now.After(exp) {
				delete(m, k)
			}
		}
	}
}

// evictOldest removes the entries that expire first until m holds at most n.
func evictOldest(m map[string]time.Time, n int) {
	for len(m) > n {
		var oldest string
		var at time.Time
		for k, exp := range m {
			if oldest == "" || exp.Before(at) {
				oldest, at = k, exp
			}
		}
		delete(m, oldest)
	}
}

func randomToken() string {
	b := make([]byte, 24)
	rand.Read(b)
	return hex.EncodeToString(b)
}
