// Package buildinfo tells which clawmatrix release a binary is and which
// commit it was built from.
//
// A release build (`make npm`, `make build`) stamps both with the linker:
//
//	-ldflags "-X github.com/clawmatrix/clawmatrix/internal/buildinfo.version=0.2.0
//	          -X github.com/clawmatrix/clawmatrix/internal/buildinfo.commit=<hash>"
//
// The version comes from package.json, the one place it is written down.
// A plain `go build` is not stamped: it reports version "dev" and the commit
// Go recorded from the checkout, if any.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Set by the linker (see the package comment); empty in a plain build.
var (
	version string
	commit  string
)

// Version is the release version, or "dev" for an unstamped build.
func Version() string {
	if version != "" {
		return version
	}
	return "dev"
}

// Commit is the commit the binary was built from, "-dirty" appended when
// the checkout had uncommitted changes, or "unknown".
func Commit() string {
	if commit != "" {
		return commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value
			}
		}
		if rev != "" {
			if modified == "true" {
				rev += "-dirty"
			}
			return rev
		}
	}
	return "unknown"
}

// String is the line `clawmatrix-plugin version` prints after the name:
// version, commit and the Go toolchain that built it.
func String() string {
	return Version() + " (commit " + Commit() + ", " + runtime.Version() + ")"
}
