package telemetry

import (
	"strconv"
	"sync"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/prometheus/client_golang/prometheus"
)

// latencyBuckets suit model calls: from a cached answer in milliseconds to
// a long generation in minutes.
var latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// proxySeries are the series of one (model, node) that every successful
// request updates, looked up once: finding a series by its label values
// hashes them, four times a request.
type proxySeries struct {
	ok             prometheus.Counter // requests_total with code 200
	duration, ttfb prometheus.Observer
	bytes          prometheus.Counter
}

type seriesKey struct{ model, node string }

// maxCachedSeries bounds the cache; past it, series are looked up each time.
const maxCachedSeries = 4096

// series returns the cached series of (model, node).
func (m *metrics) series(model, node string) *proxySeries {
	k := seriesKey{model, node}
	m.seriesMu.RLock()
	s := m.cached[k]
	m.seriesMu.RUnlock()
	if s != nil {
		return s
	}
	s = &proxySeries{
		ok:       m.proxyRequests.WithLabelValues(model, node, "200"),
		duration: m.proxyDuration.WithLabelValues(model, node),
		ttfb:     m.proxyTTFB.WithLabelValues(model, node),
		bytes:    m.proxyBytes.WithLabelValues(model, node),
	}
	m.seriesMu.Lock()
	if len(m.cached) < maxCachedSeries {
		m.cached[k] = s
	}
	m.seriesMu.Unlock()
	return s
}

type metrics struct {
	seriesMu sync.RWMutex
	cached   map[seriesKey]*proxySeries

	proxyRequests  *prometheus.CounterVec
	proxyErrors    *prometheus.CounterVec
	proxyFailovers *prometheus.CounterVec
	proxyDuration  *prometheus.HistogramVec
	proxyTTFB      *prometheus.HistogramVec
	proxyInFlight  *prometheus.GaugeVec
	proxyBytes     *prometheus.CounterVec

	servingRequests *prometheus.CounterVec
	servingTTFB     *prometheus.HistogramVec

	remoteCalls    *prometheus.CounterVec
	remoteDuration *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		cached: map[seriesKey]*proxySeries{},
		proxyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clawmatrix_proxy_requests_total",
			Help: "Chat completions answered by this node's model proxy, by model, serving node (empty when none answered) and HTTP status sent to the client."},
			[]string{"model", "node", "code"}),
		proxyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clawmatrix_proxy_errors_total",
			Help: "Chat completions that ended in an error, by model and reason (see README.md, Observability)."},
			[]string{"model", "reason"}),
		proxyFailovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clawmatrix_proxy_failovers_total",
			Help: "Attempts given up for the next node serving the model, by model, the node given up and why."},
			[]string{"model", "node", "reason"}),
		proxyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "clawmatrix_proxy_request_duration_seconds",
			Help: "Time from a chat completion's arrival to the end of its answer, by model and serving node.", Buckets: latencyBuckets},
			[]string{"model", "node"}),
		proxyTTFB: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "clawmatrix_proxy_time_to_first_byte_seconds",
			Help: "Time from a chat completion's arrival to the first byte of its answer sent to the client, by model and serving node.", Buckets: latencyBuckets},
			[]string{"model", "node"}),
		proxyInFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "clawmatrix_proxy_requests_in_flight",
			Help: "Chat completions (streamed or not) the model proxy is answering now, by model."},
			[]string{"model"}),
		proxyBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clawmatrix_proxy_response_bytes_total",
			Help: "Response body bytes the model proxy relayed to clients, by model and serving node."},
			[]string{"model", "node"}),
		servingRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clawmatrix_serving_requests_total",
			Help: "Model requests this node served for the cluster, by model and outcome (the upstream's HTTP status, or an error code)."},
			[]string{"model", "outcome"}),
		servingTTFB: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "clawmatrix_serving_upstream_time_to_first_byte_seconds",
			Help: "Time for this node's upstream to answer with response headers, by model.", Buckets: latencyBuckets},
			[]string{"model"}),
		remoteCalls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "clawmatrix_remote_calls_total",
			Help: "Remote cluster tool calls made from this node, by tool and outcome."},
			[]string{"tool", "outcome"}),
		remoteDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "clawmatrix_remote_call_duration_seconds",
			Help: "Time for a remote cluster tool call to be answered, by tool.", Buckets: latencyBuckets},
			[]string{"tool"}),
	}
	reg.MustRegister(m.proxyRequests, m.proxyErrors, m.proxyFailovers, m.proxyDuration, m.proxyTTFB, m.proxyInFlight,
		m.proxyBytes, m.servingRequests, m.servingTTFB, m.remoteCalls, m.remoteDuration)
	return m
}

// ProxyRecord is one chat completion the model proxy answered.
type ProxyRecord struct {
	Start time.Time
	// Model is the requested model when the cluster knows it, else "".
	Model string
	// Node served the answer the client got; "" when none did.
	Node string
	// Path is the nodes the answer's request passed, this node first.
	Path []string
	// Attempts counts the nodes tried.
	Attempts int
	Status   int
	Stream   bool
	Duration time.Duration
	// TTFB is the time to the first byte sent to the client (zero: none).
	TTFB  time.Duration
	Bytes int64
	// Reason is why the request failed (see the README's list), "" on
	// success; Error says it for people, without request content.
	Reason, Error string
}

// ProxyStarted counts a chat completion for model in flight until
// ProxyEnded with the same model.
func (t *Telemetry) ProxyStarted(model string) {
	t.m.proxyInFlight.WithLabelValues(model).Inc()
}

// ProxyEnded ends what ProxyStarted counted.
func (t *Telemetry) ProxyEnded(model string) {
	t.m.proxyInFlight.WithLabelValues(model).Dec()
}

// Unauthorized counts a request to the model proxy without the right key.
func (t *Telemetry) Unauthorized() {
	t.m.proxyErrors.WithLabelValues("", "unauthorized").Inc()
}

// ProxyFailover records that node was given up for the next one.
func (t *Telemetry) ProxyFailover(model, node, reason, message string) {
	t.m.proxyFailovers.WithLabelValues(model, node, reason).Inc()
	t.jr.addError(ErrorEntry{At: time.Now(), Kind: "failover", Node: node, Message: message})
}

// ProxyDone records a finished chat completion; the record's Path is the
// journal's from then on.
func (t *Telemetry) ProxyDone(r ProxyRecord) {
	if r.Status == 200 && r.Node != "" {
		s := t.m.series(r.Model, r.Node)
		s.ok.Inc()
		s.duration.Observe(r.Duration.Seconds())
		if r.TTFB > 0 {
			s.ttfb.Observe(r.TTFB.Seconds())
		}
		if r.Bytes > 0 {
			s.bytes.Add(float64(r.Bytes))
		}
	} else {
		t.m.proxyRequests.WithLabelValues(r.Model, r.Node, strconv.Itoa(r.Status)).Inc()
		if r.Node != "" {
			t.m.proxyDuration.WithLabelValues(r.Model, r.Node).Observe(r.Duration.Seconds())
			if r.TTFB > 0 {
				t.m.proxyTTFB.WithLabelValues(r.Model, r.Node).Observe(r.TTFB.Seconds())
			}
			if r.Bytes > 0 {
				t.m.proxyBytes.WithLabelValues(r.Model, r.Node).Add(float64(r.Bytes))
			}
		}
	}
	if r.Reason != "" {
		t.m.proxyErrors.WithLabelValues(r.Model, r.Reason).Inc()
		t.jr.addError(ErrorEntry{At: r.Start.Add(r.Duration), Kind: "proxy", Node: r.Node, Message: r.Error})
	}
	t.jr.addRequest(r)
}

// Served records a model request this node served: outcome is the
// upstream's status code, or a mesh error code when there was no answer.
func (t *Telemetry) Served(model, outcome string, ttfb time.Duration) {
	t.m.servingRequests.WithLabelValues(model, outcome).Inc()
	if ttfb > 0 {
		t.m.servingTTFB.WithLabelValues(model).Observe(ttfb.Seconds())
	}
}

// Remote call outcomes.
const (
	OutcomeOK          = "ok"          // answered, and the tool succeeded
	OutcomeToolError   = "tool_error"  // answered with an error result (the command failed, a file was missing, ...)
	OutcomeRefused     = "refused"     // the target's policy refused it
	OutcomeUnreachable = "unreachable" // no route, or the node was lost before it answered
	OutcomeTimeout     = "timeout"     // no answer in time
	OutcomeCancelled   = "cancelled"   // the caller gave up
	OutcomeFailed      = "failed"      // anything else (bad arguments, unknown node, no handler, ...)
)

// RemoteCall records a remote cluster tool call made from this node.
func (t *Telemetry) RemoteCall(tool, node, outcome string, took time.Duration) {
	t.m.remoteCalls.WithLabelValues(tool, outcome).Inc()
	t.m.remoteDuration.WithLabelValues(tool).Observe(took.Seconds())
	if outcome != OutcomeOK && outcome != OutcomeToolError {
		msg := tool + " " + outcome
		if node != "" {
			msg = tool + " on " + node + ": " + outcome
		}
		t.jr.addError(ErrorEntry{At: time.Now(), Kind: "remote", Node: node, Message: msg})
	}
}

// meshCollector reads the mesh's links and peers at scrape time.
type meshCollector struct {
	node  *mesh.Node
	peers *peerMemory
}

var (
	descPeerState = prometheus.NewDesc("clawmatrix_mesh_peer_state",
		"1 for the state each known node is in as this node sees it: connected (a direct link), relay, or down (seen before, unreachable now).",
		[]string{"peer", "state"}, nil)
	descPeerRTT = prometheus.NewDesc("clawmatrix_mesh_peer_rtt_seconds",
		"Round trip to each reachable node (its link, plus the announced links beyond for a relayed one), once measured.",
		[]string{"peer"}, nil)
	descPeerHops = prometheus.NewDesc("clawmatrix_mesh_peer_hops",
		"Links on the route to each reachable node (1: direct).", []string{"peer"}, nil)
	descLinkQueue = prometheus.NewDesc("clawmatrix_mesh_link_queue_bytes",
		"Frames waiting in each direct link's send queue.", []string{"peer"}, nil)
	descRelayedFrames = prometheus.NewDesc("clawmatrix_mesh_relayed_frames_total",
		"Frames this node relayed for other nodes.", nil, nil)
	descRelayedBytes = prometheus.NewDesc("clawmatrix_mesh_relayed_bytes_total",
		"Bytes of the frames this node relayed for other nodes.", nil, nil)
	descDropped = prometheus.NewDesc("clawmatrix_mesh_dropped_frames_total",
		"Routed frames dropped, by reason.", []string{"reason"}, nil)
	descAuthFailed = prometheus.NewDesc("clawmatrix_mesh_auth_failures_total",
		"Inbound link handshakes refused.", nil, nil)
)

func (c *meshCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeerState, descPeerRTT, descPeerHops, descLinkQueue, descRelayedFrames, descRelayedBytes, descDropped, descAuthFailed} {
		ch <- d
	}
}

func (c *meshCollector) Collect(ch chan<- prometheus.Metric) {
	reachable := map[string]bool{}
	for _, p := range c.node.Peers() {
		reachable[p.NodeID] = true
		ch <- prometheus.MustNewConstMetric(descPeerState, prometheus.GaugeValue, 1, p.NodeID, string(p.Status))
		ch <- prometheus.MustNewConstMetric(descPeerHops, prometheus.GaugeValue, float64(p.Hops), p.NodeID)
		if p.RTT > 0 {
			ch <- prometheus.MustNewConstMetric(descPeerRTT, prometheus.GaugeValue, p.RTT.Seconds(), p.NodeID)
		}
	}
	for _, k := range c.peers.list() {
		if !reachable[k.NodeID] {
			ch <- prometheus.MustNewConstMetric(descPeerState, prometheus.GaugeValue, 1, k.NodeID, StateDown)
		}
	}
	for _, l := range c.node.LinkStats() {
		ch <- prometheus.MustNewConstMetric(descLinkQueue, prometheus.GaugeValue, float64(l.QueuedBytes), l.Peer)
	}
	st := c.node.Stats()
	ch <- prometheus.MustNewConstMetric(descRelayedFrames, prometheus.CounterValue, float64(st.FramesRelayed))
	ch <- prometheus.MustNewConstMetric(descRelayedBytes, prometheus.CounterValue, float64(st.BytesRelayed))
	for reason, v := range map[string]uint64{"spoofed": st.DroppedSpoofed, "duplicate": st.DroppedDuplicate, "ttl": st.DroppedTTL, "no_route": st.DroppedNoRoute} {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(v), reason)
	}
	ch <- prometheus.MustNewConstMetric(descAuthFailed, prometheus.CounterValue, float64(st.AuthFailed))
}

// runQueueCollector reads the agent run slots at scrape time.
type runQueueCollector struct {
	state func() (running, waiting int)
}

var descRuns = prometheus.NewDesc("clawmatrix_agent_runs",
	"Handoff and send runs on this node: running, or queued waiting for a run slot (maxConcurrentRuns).",
	[]string{"state"}, nil)

func (c *runQueueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descRuns }

func (c *runQueueCollector) Collect(ch chan<- prometheus.Metric) {
	running, waiting := c.state()
	ch <- prometheus.MustNewConstMetric(descRuns, prometheus.GaugeValue, float64(running), "running")
	ch <- prometheus.MustNewConstMetric(descRuns, prometheus.GaugeValue, float64(waiting), "queued")
}

// DeliveryCounts is what the durable outbox and inbox (cluster/delivery)
// report; telemetry keeps its own type so it does not depend on them.
type DeliveryCounts struct {
	Queued               int    // messages in the outbox not yet delivered
	Pushes, PushErrors   uint64 // delivery calls (a batch each), and those that failed
	Waiting, Running     int    // inbox messages not started, and running
	Accepted             uint64 // messages stored in the inbox
	Duplicates           uint64 // deliveries of a message already stored, suppressed
	Refused, RefusedFull uint64 // messages refused for good, and refused because the inbox was full
}

// deliveryCollector reads the delivery counters at scrape time.
type deliveryCollector struct {
	counts func() DeliveryCounts
}

var (
	descOutbox = prometheus.NewDesc("clawmatrix_delivery_outbox_messages",
		"Messages and background tasks this node sent that the target has not stored yet.", nil, nil)
	descPushes = prometheus.NewDesc("clawmatrix_delivery_pushes_total",
		"Calls handing outbox messages to their target (one call carries a batch), by outcome: ok, or failed and retried later.",
		[]string{"outcome"}, nil)
	descInbox = prometheus.NewDesc("clawmatrix_delivery_inbox_messages",
		"Messages in this node's inbox, by state: waiting to start, or running.", []string{"state"}, nil)
	descReceived = prometheus.NewDesc("clawmatrix_delivery_received_total",
		"Messages pushed to this node's inbox, by outcome: accepted, duplicate (already stored, suppressed), refused, full.",
		[]string{"outcome"}, nil)
)

func (c *deliveryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOutbox, descPushes, descInbox, descReceived} {
		ch <- d
	}
}

func (c *deliveryCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.counts()
	ch <- prometheus.MustNewConstMetric(descOutbox, prometheus.GaugeValue, float64(d.Queued))
	ch <- prometheus.MustNewConstMetric(descPushes, prometheus.CounterValue, float64(d.Pushes-min(d.PushErrors, d.Pushes)), "ok")
	ch <- prometheus.MustNewConstMetric(descPushes, prometheus.CounterValue, float64(d.PushErrors), "failed")
	ch <- prometheus.MustNewConstMetric(descInbox, prometheus.GaugeValue, float64(d.Waiting), "waiting")
	ch <- prometheus.MustNewConstMetric(descInbox, prometheus.GaugeValue, float64(d.Running), "running")
	for outcome, v := range map[string]uint64{"accepted": d.Accepted, "duplicate": d.Duplicates, "refused": d.Refused, "full": d.RefusedFull} {
		ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(v), outcome)
	}
}
