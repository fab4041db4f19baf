package mesh

// Micro benchmarks that need the mesh's test helpers. The cluster-level
// measurements (relay cost per hop, convergence, failure detection, memory
// per idle link) live in internal/bench, shared by the `bench` command and
// its Go benchmarks.

import (
	"context"
	"fmt"
	"io"
	"testing"
)

func benchLine(b *testing.B, hops int) []*Node {
	b.Helper()
	ids := make([]string, hops+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("n%d", i)
	}
	ns := startNodes(b, ids...)
	for i := 1; i < len(ns); i++ {
		dial(b, ns[i], ns[i-1])
	}
	waitAll(b, ns, 10e9)
	return ns
}

// BenchmarkStreamThroughput streams 4 MiB messages over one and two hops.
func BenchmarkStreamThroughput(b *testing.B) {
	for _, hops := range []int{1, 2} {
		b.Run(fmt.Sprintf("hops=%d", hops), func(b *testing.B) {
			ns := benchLine(b, hops)
			msg := make([]byte, 4<<20)
			last := ns[len(ns)-1]
			last.Handle("bulk", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
				return w.Write(msg)
			}))
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				s, err := ns[0].Open(context.Background(), last.ID(), "bulk", nil)
				if err != nil {
					b.Fatal(err)
				}
				if m, err := s.Recv(); err != nil || len(m) != len(msg) {
					b.Fatal(err)
				}
				if _, err := s.Recv(); err != io.EOF {
					b.Fatal(err)
				}
				s.Close()
			}
		})
	}
}

func BenchmarkStreamWindow(b *testing.B) {
	for _, w := range []int{4, 16, 64} {
		for _, chunk := range []int{8 << 10, 32 << 10, 128 << 10} {
			b.Run(fmt.Sprintf("w=%d/chunk=%dk", w, chunk>>10), func(b *testing.B) {
				var ns []*Node
				for _, id := range []string{"x", "y"} {
					c := testConfig(id)
					c.RequestWindow = w
					c.ChunkBytes = chunk
					ns = append(ns, startNode(b, c))
				}
				dial(b, ns[0], ns[1])
				waitAll(b, ns, 10e9)
				msg := make([]byte, 4<<20)
				ns[1].Handle("bulk", HandlerFunc(func(ctx context.Context, w ResponseWriter, r *Request) error {
					return w.Write(msg)
				}))
				b.SetBytes(int64(len(msg)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := ns[0].Call(context.Background(), "y", "bulk", nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
