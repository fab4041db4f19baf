package schema

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// check runs the validations a JSON Schema cannot express: uniqueness across
// list entries, URL shapes, references to this node, and files on disk.
func (c *Config) check() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}

	peerURL := map[string]int{}
	peerNode := map[string]int{}
	for i, p := range c.Peers {
		at := "peers[" + strconv.Itoa(i) + "]"
		if msg := checkURL(p.URL, "ws", "wss"); msg != "" {
			add(at+".url", "%s", msg)
		} else if j, dup := peerURL[p.URL]; dup {
			add(at+".url", "same URL as peers[%d]; list each peer once", j)
		} else {
			peerURL[p.URL] = i
		}
		if p.NodeID == "" {
			continue
		}
		if p.NodeID == c.NodeID {
			add(at+".nodeId", "is this node's own nodeId %q; a node does not dial itself", c.NodeID)
		} else if j, dup := peerNode[p.NodeID]; dup {
			add(at+".nodeId", "node %q is already listed as peers[%d]; node ids are unique in a cluster", p.NodeID, j)
		} else {
			peerNode[p.NodeID] = i
		}
	}

	trusted := map[string]int{}
	for i, t := range c.Trust {
		if j, dup := trusted[t.NodeID]; dup && t.NodeID != "" {
			add(fmt.Sprintf("trust[%d].nodeId", i), "node %q is already listed as trust[%d]; a node has one key", t.NodeID, j)
		} else {
			trusted[t.NodeID] = i
		}
	}
	for i, id := range c.Revoked {
		at := fmt.Sprintf("revoked[%d]", i)
		if id != "" && id == c.NodeID {
			add(at, "is this node's own nodeId %q", c.NodeID)
		} else if j, both := trusted[id]; both && id != "" {
			add(at, "node %q is also listed in trust[%d]; remove it from one of the two", id, j)
		}
	}
	if c.IdentityFile != "" && c.KnownNodesFile != "" && c.IdentityFile == c.KnownNodesFile {
		add("knownNodesFile", "is the same file as identityFile; give each its own file")
	}

	agents := map[string]int{}
	for i, a := range c.Agents {
		if j, dup := agents[a.ID]; dup && a.ID != "" {
			add(fmt.Sprintf("agents[%d].id", i), "agent %q is already listed as agents[%d]", a.ID, j)
		} else {
			agents[a.ID] = i
		}
	}

	models := map[string]int{}
	for i, m := range c.Models {
		at := "models[" + strconv.Itoa(i) + "]"
		if j, dup := models[m.ID]; dup && m.ID != "" {
			add(at+".id", "model %q is already listed as models[%d]", m.ID, j)
		} else {
			models[m.ID] = i
		}
		if u := m.Upstream; u != nil {
			if msg := checkURL(u.BaseURL, "http", "https"); msg != "" {
				add(at+".upstream.baseUrl", "%s", msg)
			}
			if u.APIKey != "" && u.APIKeyEnv != "" {
				add(at+".upstream", "set apiKey or apiKeyEnv, not both")
			}
		}
	}

	proxyModels := map[string]int{}
	for i, m := range c.ProxyModels {
		at := "proxyModels[" + strconv.Itoa(i) + "]"
		if j, dup := proxyModels[m.ID]; dup && m.ID != "" {
			add(at+".id", "model %q is already listed as proxyModels[%d]", m.ID, j)
		} else {
			proxyModels[m.ID] = i
		}
		if m.NodeID != "" && m.NodeID == c.NodeID {
			add(at+".nodeId", "is this node's own nodeId %q; a model this node serves belongs under models", c.NodeID)
		}
	}

	if t := c.TLS; t != nil {
		switch {
		case t.CertFile != "" && t.KeyFile == "":
			add("tls.keyFile", "missing: certFile and keyFile are set together")
		case t.KeyFile != "" && t.CertFile == "":
			add("tls.certFile", "missing: certFile and keyFile are set together")
		}
		for _, f := range []struct{ path, file string }{
			{"tls.certFile", t.CertFile}, {"tls.keyFile", t.KeyFile}, {"tls.caFile", t.CAFile},
		} {
			if f.file == "" {
				continue
			}
			if msg := checkReadable(f.file); msg != "" {
				add(f.path, "%s", msg)
			}
		}
	}

	ps = append(ps, c.checkToolProxy()...)

	ps = append(ps, c.checkObservability()...)

	if c.Mesh.PingIntervalMs > 0 && c.Mesh.DeadAfterMs > 0 && c.Mesh.DeadAfterMs <= c.Mesh.PingIntervalMs {
		add("mesh.deadAfterMs", "must be greater than mesh.pingIntervalMs (%d), or every link is declared dead between two pings", c.Mesh.PingIntervalMs)
	}
	return ps
}

// checkURL returns what is wrong with a URL that must use one of schemes, or
// "". It never quotes the URL, which may carry credentials.
func checkURL(raw string, schemes ...string) string {
	if raw == "" {
		return "" // the schema reports the empty string
	}
	want := schemes[0] + ":// or " + schemes[1] + "://"
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Sprintf("is not a valid URL (%v); expected %shost:port", err, schemes[0]+"://")
	}
	if u.Scheme != schemes[0] && u.Scheme != schemes[1] {
		return "must start with " + want
	}
	if u.Hostname() == "" {
		return "has no host; expected " + u.Scheme + "://host:port"
	}
	if _, err := strconv.Atoi(u.Port()); u.Port() != "" && err != nil {
		return "has an invalid port"
	}
	return ""
}

// checkReadable returns why a file cannot be read, or "".
func checkReadable(path string) string {
	f, err := os.Open(path)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return fmt.Sprintf("file %q does not exist (relative paths are resolved from the working directory)", path)
		case errors.Is(err, os.ErrPermission):
			return fmt.Sprintf("file %q is not readable: permission denied", path)
		}
		return fmt.Sprintf("file %q cannot be opened: %v", path, unwrapPathError(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("file %q cannot be read: %v", path, unwrapPathError(err))
	}
	if st.IsDir() {
		return fmt.Sprintf("%q is a directory, not a file", path)
	}
	return ""
}

func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// checkToolProxy covers what the policy's lists mean together, and the
// configs written when an empty allow list still meant every tool: such a
// config is refused with what to write, rather than quietly running nothing
// (or everything).
func (c *Config) checkToolProxy() []Problem {
	var ps []Problem
	tp := c.ToolProxy
	if tp.Enabled && len(tp.Allow) == 0 {
		ps = append(ps, Problem{Path: "toolProxy.allow", Message: `is empty, so no remote tool would run on this node: ` +
			`an empty allow list now means nothing (it used to mean every tool). List the tools to offer, ` +
			`for example ["read", "exec"], or ["*"] for every tool; or set toolProxy.enabled to false`})
	}
	seen := map[string]bool{}
	for i, p := range tp.AllowPaths {
		at := fmt.Sprintf("toolProxy.allowPaths[%d]", i)
		switch {
		case p == "":
			// the schema reports it
		case !filepath.IsAbs(p):
			ps = append(ps, Problem{Path: at, Message: "must be an absolute directory path (like /srv/data)"})
		case seen[filepath.Clean(p)]:
			ps = append(ps, Problem{Path: at, Message: "is listed twice"})
		default:
			seen[filepath.Clean(p)] = true
			if msg := checkDir(p); msg != "" {
				ps = append(ps, Problem{Path: at, Message: msg})
			}
		}
	}
	return ps
}

// checkDir returns why path is not a directory this process can open, or "".
func checkDir(path string) string {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("directory %q does not exist", path)
	case err != nil:
		return fmt.Sprintf("directory %q cannot be opened: %v", path, unwrapPathError(err))
	case !st.IsDir():
		return fmt.Sprintf("%q is not a directory", path)
	}
	return ""
}

// checkObservability covers otel and metrics. Messages never quote a header
// value or an endpoint, which may carry credentials.
func (c *Config) checkObservability() []Problem {
	var ps []Problem
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
	}
	if o := c.OTel; o != nil {
		if msg := checkURL(o.Endpoint, "http", "https"); msg != "" {
			add("otel.endpoint", "%s", msg)
		} else if u, err := url.Parse(o.Endpoint); err == nil && o.Endpoint != "" {
			switch {
			case u.User != nil:
				add("otel.endpoint", "must not carry credentials; put them in otel.headers (for example {\"authorization\": \"Bearer ...\"})")
			case u.RawQuery != "" || u.Fragment != "":
				add("otel.endpoint", "must be a base URL without query or fragment, like http://127.0.0.1:4318 (spans go to <endpoint>/v1/traces)")
			}
		}
		names := make([]string, 0, len(o.Headers))
		for k := range o.Headers {
			names = append(names, k)
		}
		slices.Sort(names)
		for _, k := range names {
			at := "otel.headers." + k
			if !validHeaderName(k) {
				add("otel.headers", "%q is not an HTTP header name (letters, digits and !#$%%&'*+-.^_`|~ only)", k)
			} else if strings.ContainsAny(o.Headers[k], "\r\n\x00") {
				add(at, "the value holds a line break or NUL, which an HTTP header cannot carry")
			}
		}
	}
	if l := c.Metrics.Listen; l != "" {
		host, port, err := net.SplitHostPort(l)
		n, perr := strconv.Atoi(port)
		switch {
		case err != nil:
			add("metrics.listen", "is not host:port (%v); for example 127.0.0.1:9464", err)
		case perr != nil || n < 0 || n > 65535:
			add("metrics.listen", "has an invalid port %q; use 1-65535 (0 picks a free one)", port)
		case host != "" && net.ParseIP(host) == nil && host != "localhost":
			add("metrics.listen", "host %q is not an IP address or localhost", host)
		case n == c.ProxyPort && n != 0 && isLoopback(host):
			add("metrics.listen", "uses the proxy's port %d, where /metrics is served already", n)
		}
	}
	return ps
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validHeaderName reports whether s is an HTTP header field name (RFC 9110
// token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
