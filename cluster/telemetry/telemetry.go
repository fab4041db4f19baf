// Package telemetry is what a node tells about itself (README.md,
// Observability): OpenTelemetry spans exported over OTLP/HTTP when the
// config's otel is set, Prometheus metrics, and a short journal of recent
// requests and errors for the status page.
//
// The model proxy and the remote tools report to a *Telemetry; a nil one
// records nothing and costs nothing, which is how the cost of telemetry is
// measured against none. Nothing recorded here holds request or response
// bodies, tool arguments or results, or a secret: labels and attributes are
// node ids, model ids, tool names, status codes and reasons from a fixed set.
package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/internal/buildinfo"
	"github.com/clawmatrix/clawmatrix/schema"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Options configure a node's telemetry.
type Options struct {
	NodeID string
	// OTel turns span export on; nil records no spans.
	OTel   *schema.OTel
	Logger *slog.Logger
	// Journal bounds the recent requests and errors kept for the status
	// page (default 50 each).
	Journal int
}

// Telemetry is one node's spans, metrics and journal.
type Telemetry struct {
	nodeID string
	log    *slog.Logger
	tp     *sdktrace.TracerProvider // nil when no spans are exported
	tracer trace.Tracer             // nil when no spans are exported
	reg    *prometheus.Registry
	m      *metrics
	jr     *Journal
	peers  *peerMemory

	mu      sync.Mutex
	stop    context.CancelFunc
	watched chan struct{}
}

// New makes a node's telemetry. With opts.OTel set it starts an OTLP/HTTP
// exporter, which sends nothing until spans are recorded.
func New(opts Options) (*Telemetry, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Telemetry{nodeID: opts.NodeID, log: log, reg: prometheus.NewRegistry(), peers: newPeerMemory(opts.NodeID)}
	size := opts.Journal
	if size <= 0 {
		size = 50
	}
	t.jr = newJournal(size)
	t.m = newMetrics(t.reg)
	t.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "clawmatrix_build_info", Help: "Always 1; the labels say which build runs.",
			ConstLabels: prometheus.Labels{"version": buildinfo.Version(), "node": opts.NodeID}}, func() float64 { return 1 }),
	)
	if opts.OTel != nil {
		tp, err := newTracerProvider(opts.OTel, opts.NodeID)
		if err != nil {
			return nil, err
		}
		t.tp = tp
		t.tracer = tp.Tracer(tracerName)
	}
	return t, nil
}

// TracerProvider is what the mesh records its spans with; nil when spans
// are not exported (an interface holding a nil pointer would not be nil).
func (t *Telemetry) TracerProvider() trace.TracerProvider {
	if t == nil || t.tp == nil {
		return nil
	}
	return t.tp
}

// Tracer records spans of the model proxy and the remote tools; nil when
// spans are not exported.
func (t *Telemetry) Tracer() trace.Tracer {
	if t == nil {
		return nil
	}
	return t.tracer
}

// Registry holds every metric of the node.
func (t *Telemetry) Registry() *prometheus.Registry { return t.reg }

// Journal is the node's recent requests and errors.
func (t *Telemetry) Journal() *Journal { return t.jr }

// NodeID is the node the telemetry describes.
func (t *Telemetry) NodeID() string { return t.nodeID }

// WatchMesh adds the mesh's links and peers to the metrics and keeps track
// of peers that became unreachable, until Close.
func (t *Telemetry) WatchMesh(n *mesh.Node) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stop != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.stop = cancel
	t.watched = make(chan struct{})
	t.reg.MustRegister(&meshCollector{node: n, peers: t.peers})
	go func() {
		defer close(t.watched)
		t.peers.watch(ctx, n, t.jr)
	}()
}

// Peers is every node this one has seen, with when it was last reachable.
func (t *Telemetry) Peers() []KnownPeer { return t.peers.list() }

// RegisterRunQueue adds the agent run slots of this node (handoff and
// send) to the metrics; state returns the runs going and waiting.
func (t *Telemetry) RegisterRunQueue(state func() (running, waiting int)) {
	t.reg.MustRegister(&runQueueCollector{state: state})
}

// RegisterDelivery adds the durable outbox and inbox to the metrics;
// counts reads them at scrape time.
func (t *Telemetry) RegisterDelivery(counts func() DeliveryCounts) {
	t.reg.MustRegister(&deliveryCollector{counts: counts})
}

// Close stops watching the mesh and flushes the spans not yet exported,
// waiting at most until ctx ends.
func (t *Telemetry) Close(ctx context.Context) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	stop, watched := t.stop, t.watched
	t.stop = nil
	t.mu.Unlock()
	if stop != nil {
		stop()
		<-watched
	}
	if t.tp == nil {
		return nil
	}
	err := t.tp.Shutdown(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		t.log.Warn("telemetry: spans not exported at shutdown", "err", err)
	}
	return err
}
