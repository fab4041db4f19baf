package remote

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawmatrix/clawmatrix/schema"
)

// Micro benchmarks of the target's executors alone, without any mesh. The
// mesh's cost for a remote tool (the same exec and 1 MB read on the target
// and through a relay) is measured in internal/bench, shared by the `bench`
// command's tools suite and its Go benchmarks (BenchmarkToolExec,
// BenchmarkToolRead1MB).

func BenchmarkExecutorExec(b *testing.B) {
	tg := newTestTarget(b, "c", TargetConfig{ToolProxy: openPolicy()})
	for b.Loop() {
		if r := tg.exec(b.Context(), schema.ExecArgs{Command: "echo hi"}); r.IsError {
			b.Fatal(r.Text)
		}
	}
}

const benchFileBytes = 1 << 20

func BenchmarkExecutorRead1MB(b *testing.B) {
	tg := newTestTarget(b, "c", TargetConfig{ToolProxy: openPolicy()})
	line := strings.Repeat("x", 99) + "\n"
	if err := os.WriteFile(filepath.Join(tg.baseDir, "big.txt"), []byte(strings.Repeat(line, benchFileBytes/len(line))), 0o644); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchFileBytes)
	for b.Loop() {
		if r := tg.read(b.Context(), schema.ReadArgs{Path: "big.txt"}); r.IsError {
			b.Fatal(r.Text)
		}
	}
}
