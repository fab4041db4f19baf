package remote

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawmatrix/clawmatrix/schema"
)

// The mesh's cost for a remote tool: the same exec and read run directly on
// the target (baseline) and from a node two hops away through a relay.

func BenchmarkExecDirect(b *testing.B) {
	tg := newTestTarget(b, "c", TargetConfig{ToolProxy: openPolicy()})
	for b.Loop() {
		if r := tg.exec(b.Context(), schema.ExecArgs{Command: "echo hi"}); r.IsError {
			b.Fatal(r.Text)
		}
	}
}

func BenchmarkExecRelay(b *testing.B) {
	a, _, _ := line(b, nodeSpec{id: "a"}, nodeSpec{id: "b"}, nodeSpec{id: "c"})
	args := mustJSON(b, schema.ExecArgs{Node: "c", Command: "echo hi"})
	for b.Loop() {
		if r := a.client.Call(b.Context(), ToolExec, args); r.IsError {
			b.Fatal(r.Text)
		}
	}
}

const benchFileBytes = 1 << 20

func benchFile(b *testing.B, dir string) {
	line := strings.Repeat("x", 99) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "big.txt"), []byte(strings.Repeat(line, benchFileBytes/len(line))), 0o644); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkRead1MBDirect(b *testing.B) {
	tg := newTestTarget(b, "c", TargetConfig{ToolProxy: openPolicy()})
	benchFile(b, tg.baseDir)
	b.SetBytes(benchFileBytes)
	for b.Loop() {
		if r := tg.read(schema.ReadArgs{Path: "big.txt"}); r.IsError {
			b.Fatal(r.Text)
		}
	}
}

func BenchmarkRead1MBRelay(b *testing.B) {
	a, _, c := line(b, nodeSpec{id: "a"}, nodeSpec{id: "b"}, nodeSpec{id: "c"})
	benchFile(b, c.dir)
	args := mustJSON(b, schema.ReadArgs{Node: "c", Path: "big.txt"})
	b.SetBytes(benchFileBytes)
	for b.Loop() {
		if r := a.client.Call(b.Context(), ToolRead, args); r.IsError {
			b.Fatal(r.Text)
		}
	}
}
