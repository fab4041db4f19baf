package schema

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestTLSFileChecks(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	key := filepath.Join(dir, "key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "nope.pem")
	tests := []struct {
		name string
		tls  string
		want []string
	}{
		{"cert and key", `{"certFile": "` + cert + `", "keyFile": "` + key + `"}`, nil},
		{"ca only", `{"caFile": "` + cert + `"}`, nil},
		{"empty object", `{}`, nil},
		{"cert without key", `{"certFile": "` + cert + `"}`, []string{"tls.keyFile: missing: certFile and keyFile are set together"}},
		{"key without cert", `{"keyFile": "` + key + `"}`, []string{"tls.certFile: missing: certFile and keyFile are set together"}},
		{"missing ca", `{"caFile": "` + missing + `"}`, []string{`tls.caFile: file "` + missing + `" does not exist (relative paths are resolved from the working directory)`}},
		{"directory as key", `{"certFile": "` + cert + `", "keyFile": "` + dir + `"}`, []string{`tls.keyFile: "` + dir + `" is a directory, not a file`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := Parse(withFields(`"tls": ` + tt.tls))
			got := make([]string, len(problems))
			for i, p := range problems {
				got[i] = p.String()
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct{ url, want string }{
		{"ws://host:1", ""},
		{"wss://host", ""},
		{"WSS://HOST:443/path", ""},
		{"http://host", "must start with ws:// or wss://"},
		{"host:19000", "must start with ws:// or wss://"},
		{"ws://:19000", "has no host; expected ws://host:port"},
		{"ws://[::1]:19000", ""},
		{"ws://host:99x", `is not a valid URL (invalid port ":99x" after host); expected ws://host:port`},
	}
	for _, tt := range tests {
		if got := checkURL(tt.url, "ws", "wss"); got != tt.want {
			t.Errorf("checkURL(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}
