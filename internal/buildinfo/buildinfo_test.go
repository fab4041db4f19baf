package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestStampedAndUnstamped(t *testing.T) {
	tests := []struct {
		name             string
		version, commit  string
		wantVersion      string
		wantCommitPrefix string
	}{
		{"stamped", "1.2.3", "0123456789ab", "1.2.3", "0123456789ab"},
		{"unstamped", "", "", "dev", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			oldV, oldC := version, commit
			version, commit = tt.version, tt.commit
			t.Cleanup(func() { version, commit = oldV, oldC })

			if got := Version(); got != tt.wantVersion {
				t.Errorf("Version() = %q, want %q", got, tt.wantVersion)
			}
			c := Commit()
			if c == "" || !strings.HasPrefix(c, tt.wantCommitPrefix) {
				t.Errorf("Commit() = %q, want a non-empty value starting %q", c, tt.wantCommitPrefix)
			}
			want := tt.wantVersion + " (commit " + c + ", " + runtime.Version() + ")"
			if got := String(); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		})
	}
}
