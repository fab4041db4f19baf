package mesh

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
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

// newCluster starts n listening nodes; the caller closes them.
func newCluster(b *testing.B, n int, mod func(*Config)) []*Node {
	b.Helper()
	ns := make([]*Node, n)
	for i := range ns {
		c := testConfig(fmt.Sprintf("n%03d", i))
		if mod != nil {
			mod(&c)
		}
		node, err := New(c)
		if err != nil {
			b.Fatal(err)
		}
		if err := node.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		ns[i] = node
	}
	return ns
}

func closeAll(ns []*Node) {
	var wg sync.WaitGroup
	for _, n := range ns {
		wg.Add(1)
		go func() { defer wg.Done(); _ = n.Close() }()
	}
	wg.Wait()
}

// sparseEdges is a random spanning tree plus n/4 extra edges.
func sparseEdges(n int, rng *rand.Rand) [][2]int {
	var e [][2]int
	for i := 1; i < n; i++ {
		e = append(e, [2]int{i, rng.IntN(i)})
	}
	for k := 0; k < n/4; k++ {
		i, j := rng.IntN(n), rng.IntN(n)
		if i != j {
			e = append(e, [2]int{i, j})
		}
	}
	return e
}

// BenchmarkConvergence measures, for a random sparse graph of N nodes:
// cold-ms, from all dials starting until every node sees every other; and
// join-ms, from one new node dialing a converged cluster until every node,
// the new one included, sees all.
func BenchmarkConvergence(b *testing.B) {
	for _, size := range []int{16, 64} {
		b.Run(fmt.Sprintf("nodes=%d", size), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, uint64(size)))
			var cold, join time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns := newCluster(b, size+1, nil)
				members, joiner := ns[:size], ns[size]
				edges := sparseEdges(size, rng)
				b.StartTimer()
				t0 := time.Now()
				for _, e := range edges {
					dial(b, members[e[0]], members[e[1]])
				}
				waitAll(b, members, 30*time.Second)
				cold += time.Since(t0)
				t1 := time.Now()
				dial(b, joiner, members[rng.IntN(size)])
				waitAll(b, ns, 30*time.Second)
				join += time.Since(t1)
				b.StopTimer()
				closeAll(ns)
				b.StartTimer()
			}
			b.ReportMetric(float64(cold.Microseconds())/1e3/float64(b.N), "cold-ms")
			b.ReportMetric(float64(join.Microseconds())/1e3/float64(b.N), "join-ms")
		})
	}
}

// BenchmarkRelayHop is the latency of a small Call over 1, 2 and 3 hops;
// the difference between neighbours is the cost of one relay.
func BenchmarkRelayHop(b *testing.B) {
	for _, hops := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("hops=%d", hops), func(b *testing.B) {
			ns := benchLine(b, hops)
			last := ns[len(ns)-1]
			last.Handle("echo", echoHandler())
			ctx := context.Background()
			payload := []byte(`{"q":"small request"}`)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := ns[0].Call(ctx, last.ID(), "echo", payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDetection measures how long a node takes to withdraw a peer that
// was closed (Close: WebSocket close frame), killed (its TCP connections
// dropped without a close frame, as when a process dies) or silenced (the
// network stops delivering; nothing is closed). silent-lan uses the
// DefaultLANConfig timings and takes about 5 s per iteration: run it with
// -benchtime=3x.
func BenchmarkDetection(b *testing.B) {
	for _, mode := range []string{"closed", "killed", "silent-local", "silent-lan"} {
		b.Run(mode, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ns := newCluster(b, 2, func(c *Config) {
					if mode == "silent-lan" {
						lan := DefaultLANConfig()
						c.PingInterval, c.DeadAfter = lan.PingInterval, lan.DeadAfter
					}
				})
				a, peer := ns[0], ns[1]
				px := newTCPProxy(b, peer.Addr().String())
				if err := a.AddPeer(PeerAddr{URL: px.url(), NodeID: peer.ID()}); err != nil {
					b.Fatal(err)
				}
				waitAll(b, ns, 10*time.Second)
				b.StartTimer()
				t0 := time.Now()
				switch mode {
				case "closed":
					_ = peer.Close()
				case "killed":
					px.cut()
				default:
					px.freeze()
				}
				waitPeers(b, a, 30*time.Second)
				total += time.Since(t0)
				b.StopTimer()
				px.close()
				closeAll(ns)
				b.StartTimer()
			}
			b.ReportMetric(float64(total.Microseconds())/1e3/float64(b.N), "detect-ms")
		})
	}
}

// BenchmarkIdleLinkMemory reports the memory (heap plus goroutine stacks)
// and goroutines one idle authenticated link costs, both ends included.
func BenchmarkIdleLinkMemory(b *testing.B) {
	const pairs = 50
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ns := newCluster(b, 2*pairs, nil)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		b.StartTimer()
		for p := 0; p < pairs; p++ {
			dial(b, ns[2*p], ns[2*p+1])
		}
		for p := 0; p < pairs; p++ {
			waitAll(b, ns[2*p:2*p+2], 10*time.Second)
		}
		b.StopTimer()
		time.Sleep(200 * time.Millisecond) // let the handshake buffers go
		runtime.GC()
		runtime.ReadMemStats(&after)
		g1 := runtime.NumGoroutine()
		mem := float64(after.HeapInuse+after.StackInuse) - float64(before.HeapInuse+before.StackInuse)
		b.ReportMetric(mem/pairs, "bytes/link")
		b.ReportMetric(float64(g1-g0)/pairs, "goroutines/link")
		closeAll(ns)
		b.StartTimer()
	}
}
