package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
	"github.com/clawmatrix/clawmatrix/cluster/telemetry/telemetrytest"
	"github.com/clawmatrix/clawmatrix/internal/mockllm"
	"github.com/clawmatrix/clawmatrix/schema"
)

// Strings that must never leave a node in a span, a metric, the status
// page or a log line.
const (
	canaryPrompt   = "CANARY-PROMPT-4f1d what is the launch code"
	canarySecret   = "CANARY-SECRET-0b9e7c1d2a3f"
	canaryHeader   = "CANARY-HEADER-77aa91"
	canaryUpKey    = "CANARY-UPKEY-5c2e"
	canaryProxyKey = "CANARY-PROXYKEY-d00d"
)

var canaries = []string{canaryPrompt, canarySecret, canaryHeader, canaryUpKey, canaryProxyKey}

// Incoming trace context, as OpenClaw sends it on a model call.
const (
	inTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	inSpanID  = "00f067aa0ba902b7"
)

// streamChat sends a streamed chat completion and returns the status, the
// serving node and the text of its deltas.
func streamChat(ctx context.Context, rt *Runtime, model, prompt string, header http.Header) (int, string, string, error) {
	body := fmt.Sprintf(`{"model":%q,"stream":true,"messages":[{"role":"user","content":%q}]}`, model, prompt)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rt.ProxyURL()+"/chat/completions", strings.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	req.Header.Set("Authorization", "Bearer "+rt.ProxyKey())
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		if i := strings.Index(line, `"content":"`); i >= 0 {
			rest := line[i+len(`"content":"`):]
			text.WriteString(rest[:strings.IndexByte(rest, '"')])
		}
	}
	return resp.StatusCode, resp.Header.Get("X-Clawmatrix-Node"), text.String(), sc.Err()
}

// startMock starts a mock model server stopped at the end of the test.
func startMock(t *testing.T, o mockllm.Options) *mockllm.Server {
	t.Helper()
	up, err := mockllm.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return up
}

// get fetches a path of a node's proxy port with its key.
func get(t *testing.T, rt *Runtime, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+rt.proxy.Addr().String()+path, nil)
	req.Header.Set("Authorization", "Bearer "+rt.ProxyKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s on %s: %d %s", path, rt.NodeID(), resp.StatusCode, b)
	}
	return string(b)
}

// scrape parses a node's /metrics with Prometheus' own text parser.
func scrape(t *testing.T, rt *Runtime) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	text := get(t, rt, "/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("%s's /metrics does not parse: %v\n%s", rt.NodeID(), err, text)
	}
	return fams, text
}

// metricValue is the value of the sample of family name with exactly these
// labels (a histogram's sample count); -1 when there is none.
func metricValue(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return -1
	}
	for _, m := range f.Metric {
		got := map[string]string{}
		for _, lp := range m.Label {
			got[lp.GetName()] = lp.GetValue()
		}
		match := len(got) == len(labels)
		for k, v := range labels {
			match = match && got[k] == v
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// observedNode starts a node exporting its spans to rcv.
func observedNode(t *testing.T, rcv *telemetrytest.Receiver, fields string, logs io.Writer) *Runtime {
	t.Helper()
	return startNode(t, fmt.Sprintf(`{"secret":%q,"proxyPort":0,
		"otel":{"endpoint":%q,"sampleRatio":1,"headers":{"x-canary-key":%q}},%s}`, canarySecret, rcv.URL, canaryHeader, fields), logs)
}

// waitModelOn waits until rt sees node id serving model.
func waitModelOn(t *testing.T, rt *Runtime, id, model string) {
	t.Helper()
	deadline := time.After(testDeadline)
	for {
		changed := rt.Mesh().Changed()
		if p, ok := rt.Mesh().Peer(id); ok && slices.ContainsFunc(p.Models, func(m mesh.ModelInfo) bool { return m.ID == model }) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s never saw %s serving %s", rt.NodeID(), id, model)
		}
	}
}

// waitPeerOn waits until rt reaches node id.
func waitPeerOn(t *testing.T, rt *Runtime, id string) {
	t.Helper()
	deadline := time.After(testDeadline)
	for {
		changed := rt.Mesh().Changed()
		if _, ok := rt.Mesh().Peer(id); ok {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s never reached %s", rt.NodeID(), id)
		}
	}
}

// One streamed request through a — b — c, with c dying before it answers:
// one trace holds the incoming parent, both attempts on a, the relay hop on
// b, c's serve and upstream spans and, after the failover, b's, and each
// upstream got a traceparent naming its node's upstream span. The metrics
// count what was done, and no canary leaves any node.
func TestTraceAcrossRelayAndFailover(t *testing.T) {
	rcv := telemetrytest.Start()
	defer rcv.Close()
	var logs syncBuffer
	// b's model holds its first request until released; c's never
	// answers (its wait ends when its client goes).
	upB := startMock(t, mockllm.Options{Name: "b", Reply: mockllm.Pieces("hello ", "from ", "b")})
	release := make(chan struct{})
	var held atomic.Bool
	upB.SetBefore(func(w http.ResponseWriter, r *http.Request) bool {
		if held.CompareAndSwap(false, true) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	upC := startMock(t, mockllm.Options{Name: "c", Latency: time.Hour})
	c := observedNode(t, rcv, fmt.Sprintf(`"nodeId":"c","listen":true,"listenHost":"127.0.0.1","listenPort":0,
		"models":[{"id":"m","provider":"vllm","upstream":{"baseUrl":%q,"apiKey":%q}}]`, upC.URL(), canaryUpKey), &logs)
	b := observedNode(t, rcv, fmt.Sprintf(`"nodeId":"b","listen":true,"listenHost":"127.0.0.1","listenPort":0,
		"peers":[{"url":%q,"nodeId":"c"}],"toolProxy":{"enabled":true,"allow":["exec"]},
		"models":[{"id":"m","provider":"vllm","upstream":{"baseUrl":%q,"apiKey":%q}}]`, c.Mesh().URL(), upB.URL(), canaryUpKey), &logs)
	traceparent := func(up *mockllm.Server) string {
		t.Helper()
		select {
		case call := <-up.Arrived():
			return call.Header.Get("Traceparent")
		case <-time.After(testDeadline):
			t.Fatalf("no request reached %s's model", up.Name())
			return ""
		}
	}
	a := observedNode(t, rcv, fmt.Sprintf(`"nodeId":"a","proxyKey":%q,"peers":[{"url":%q,"nodeId":"b"}],"proxyModels":[{"id":"m"}]`,
		canaryProxyKey, b.Mesh().URL()), &logs)
	waitModelOn(t, a, "c", "m")
	waitModelOn(t, a, "b", "m")

	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	defer cancel()
	// A request held on b makes c, with none in flight, a's first choice.
	type result struct {
		status     int
		node, text string
		err        error
	}
	holder := make(chan result, 1)
	go func() {
		st, node, text, err := streamChat(ctx, a, "m", "hold me", nil)
		holder <- result{st, node, text, err}
	}()
	traceparent(upB)

	done := make(chan result, 1)
	go func() {
		h := http.Header{"Traceparent": {"00-" + inTraceID + "-" + inSpanID + "-01"}}
		st, node, text, err := streamChat(ctx, a, "m", canaryPrompt, h)
		done <- result{st, node, text, err}
	}()
	cTrace := traceparent(upC)
	// c has the request; scrape it, then it dies before answering.
	_, cMetrics := scrape(t, c)
	cStatus := get(t, c, "/status.json")
	c.Close()
	r := <-done
	if r.err != nil || r.status != http.StatusOK || r.node != "b" || r.text != "hello from b" {
		t.Fatalf("the failed-over request: %+v", r)
	}
	bTrace := traceparent(upB)
	close(release)
	if h := <-holder; h.err != nil || h.status != http.StatusOK || h.node != "b" {
		t.Fatalf("the held request: %+v", h)
	}

	// A remote tool call, and one to a node that is gone.
	exec := func(node string) bool {
		call, problems := schema.DecodeToolCall("cluster_exec", []byte(`{"node":"`+node+`","command":"echo hi"}`))
		if problems != nil {
			t.Fatal(problems)
		}
		return !a.CallTool(ctx, call, CallInfo{}).IsError
	}
	if !exec("b") {
		t.Fatal("exec on b failed")
	}
	if exec("c") {
		t.Fatal("exec on the dead c succeeded")
	}
	// An unknown model and a wrong key.
	if st, _, _, _ := streamChat(ctx, a, "nope", "x", nil); st != http.StatusNotFound {
		t.Fatalf("unknown model: %d", st)
	}
	req, _ := http.NewRequest(http.MethodGet, a.ProxyURL()+"/models", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong key: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	checkMetrics(t, a, b)
	aStatus, bStatus := get(t, a, "/status.json"), get(t, b, "/status.json")
	if !strings.Contains(aStatus, `"nodeId":"c","status":"down"`) || !strings.Contains(aStatus, `"path":["a","b"]`) {
		t.Errorf("a's status.json does not show c down and the request's path:\n%s", aStatus)
	}
	_, aMetrics := scrape(t, a)
	_, bMetrics := scrape(t, b)
	aPage := get(t, a, "/status")

	// Closing the nodes exports the spans they still hold.
	a.Close()
	b.Close()
	spans := rcv.Spans()
	checkTrace(t, spans, cTrace, bTrace)
	for _, h := range rcv.Headers() {
		if h.Get("X-Canary-Key") != canaryHeader {
			t.Errorf("an export came without the configured header: %v", h)
			break
		}
	}
	if bad := rcv.Refused(); len(bad) > 0 {
		t.Errorf("the collector refused exports: %v", bad)
	}
	for what, text := range map[string]string{"spans": rcv.Dump(), "c's metrics": cMetrics, "a's metrics": aMetrics,
		"b's metrics": bMetrics, "a's status.json": aStatus, "b's status.json": bStatus, "c's status.json": cStatus,
		"the status page": aPage, "the logs": logs.String()} {
		for _, canary := range canaries {
			if strings.Contains(text, canary) {
				t.Errorf("%s hold %q", what, canary)
			}
		}
	}
}

func checkMetrics(t *testing.T, a, b *Runtime) {
	t.Helper()
	fams, _ := scrape(t, a)
	for _, want := range []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"clawmatrix_proxy_requests_total", map[string]string{"model": "m", "node": "b", "code": "200"}, 2},
		{"clawmatrix_proxy_requests_total", map[string]string{"model": "", "node": "", "code": "404"}, 1},
		{"clawmatrix_proxy_failovers_total", map[string]string{"model": "m", "node": "c", "reason": "unreachable"}, 1},
		{"clawmatrix_proxy_errors_total", map[string]string{"model": "", "reason": "unknown_model"}, 1},
		{"clawmatrix_proxy_errors_total", map[string]string{"model": "", "reason": "unauthorized"}, 1},
		{"clawmatrix_proxy_request_duration_seconds", map[string]string{"model": "m", "node": "b"}, 2},
		{"clawmatrix_proxy_time_to_first_byte_seconds", map[string]string{"model": "m", "node": "b"}, 2},
		{"clawmatrix_proxy_requests_in_flight", map[string]string{"model": "m"}, 0},
		{"clawmatrix_remote_calls_total", map[string]string{"tool": "cluster_exec", "outcome": "ok"}, 1},
		{"clawmatrix_remote_calls_total", map[string]string{"tool": "cluster_exec", "outcome": "failed"}, 1},
		{"clawmatrix_mesh_peer_state", map[string]string{"peer": "b", "state": "connected"}, 1},
		{"clawmatrix_mesh_peer_state", map[string]string{"peer": "c", "state": "down"}, 1},
	} {
		if got := metricValue(fams, want.name, want.labels); got != want.value {
			t.Errorf("a: %s%v = %v, want %v", want.name, want.labels, got, want.value)
		}
	}
	if got := metricValue(fams, "clawmatrix_proxy_errors_total", map[string]string{"model": "m", "reason": "unavailable"}); got != -1 {
		t.Errorf("a counted a failed-over request as an error: %v", got)
	}
	fams, _ = scrape(t, b)
	if got := metricValue(fams, "clawmatrix_serving_requests_total", map[string]string{"model": "m", "outcome": "200"}); got != 2 {
		t.Errorf("b served %v requests for m, want 2", got)
	}
	if got := metricValue(fams, "clawmatrix_mesh_relayed_frames_total", map[string]string{}); got < 1 {
		t.Errorf("b relayed %v frames", got)
	}
	if got := metricValue(fams, "clawmatrix_agent_runs", map[string]string{"state": "queued"}); got != 0 {
		t.Errorf("b's queued runs: %v", got)
	}
}

// checkTrace finds the spans of the request's trace and checks that they
// chain from the incoming parent through every node to both upstreams.
func checkTrace(t *testing.T, all []telemetrytest.Span, cTrace, bTrace string) {
	t.Helper()
	byID := map[string]telemetrytest.Span{}
	var spans []telemetrytest.Span
	for _, s := range all {
		if s.TraceID() == inTraceID {
			spans = append(spans, s)
			byID[s.SpanID()] = s
		}
		if s.Resource["service.name"] != "clawmatrix" || !slices.Contains([]string{"a", "b", "c"}, s.Node()) {
			t.Errorf("span %s has resource %v", s.Name, s.Resource)
		}
	}
	find := func(node, name string, ok func(telemetrytest.Span) bool) telemetrytest.Span {
		t.Helper()
		var found []telemetrytest.Span
		for _, s := range spans {
			if s.Node() == node && s.Name == name && (ok == nil || ok(s)) {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			var names []string
			for _, s := range spans {
				names = append(names, s.Node()+":"+s.Name+"("+s.ParentID()+")")
			}
			t.Fatalf("%d spans %s on %s in the trace, want 1; the trace: %v", len(found), name, node, names)
		}
		return found[0]
	}
	parentIs := func(child, parent telemetrytest.Span) {
		t.Helper()
		if child.ParentID() != parent.SpanID() {
			t.Errorf("%s on %s: parent %s, want %s on %s (%s)", child.Name, child.Node(), child.ParentID(), parent.Name, parent.Node(), parent.SpanID())
		}
	}
	chat := find("a", "clawmatrix.proxy.chat", nil)
	if chat.ParentID() != inSpanID {
		t.Errorf("a's request span has parent %s, want the incoming %s", chat.ParentID(), inSpanID)
	}
	if chat.Attr("clawmatrix.proxy.attempts") != "2" || chat.Attr("clawmatrix.proxy.node") != "b" ||
		chat.Attr("http.response.status_code") != "200" || chat.Attr("gen_ai.request.model") != "m" || chat.Attr("clawmatrix.proxy.stream") != "true" {
		t.Errorf("a's request span attributes: %v", chat.Attributes)
	}
	if chat.Attr("clawmatrix.proxy.ttfb_ms") == "" || chat.Attr("clawmatrix.proxy.response_bytes") == "0" {
		t.Errorf("a's request span lacks time to first byte or bytes: %v", chat.Attributes)
	}
	// The attempts, the failover and each hop's leaving a are its events.
	var events []string
	for _, e := range chat.EventList() {
		desc := e.Name
		for _, k := range []string{"clawmatrix.proxy.attempt", "clawmatrix.proxy.node", "clawmatrix.proxy.failover_reason", "clawmatrix.mesh.peer", "clawmatrix.mesh.hops"} {
			if v, ok := e.Attrs[k]; ok {
				desc += " " + k[strings.LastIndexByte(k, '.')+1:] + "=" + v
			}
		}
		events = append(events, desc)
	}
	want := []string{
		"clawmatrix.proxy.attempt attempt=1 node=c",
		"clawmatrix.mesh.sent peer=c hops=2",
		"clawmatrix.proxy.failover attempt=1 node=c failover_reason=unreachable",
		"clawmatrix.proxy.attempt attempt=2 node=b",
		"clawmatrix.mesh.sent peer=b hops=1",
	}
	if !slices.Equal(events, want) {
		t.Errorf("a's request span events:\n got %q\nwant %q", events, want)
	}
	relay := find("b", "clawmatrix.mesh.relay", nil)
	parentIs(relay, chat)
	serveC := find("c", "clawmatrix.mesh.serve", nil)
	parentIs(serveC, chat)
	serveB := find("b", "clawmatrix.mesh.serve", func(s telemetrytest.Span) bool { return s.Attr("clawmatrix.mesh.method") == "model.chat" })
	parentIs(serveB, chat)
	if serveB.Attr("http.response.status_code") != "200" || serveB.Attr("gen_ai.request.model") != "m" || serveB.Attr("clawmatrix.serving.upstream") != "upstream" ||
		serveB.Attr("server.address") == "" || serveB.Attr("clawmatrix.serving.ttfb_ms") == "" {
		t.Errorf("b's serving span: %v", serveB.Attributes)
	}
	if serveC.Attr("clawmatrix.serving.upstream") != "upstream" || serveC.Attr("gen_ai.request.model") != "m" {
		t.Errorf("c's serving span: %v", serveC.Attributes)
	}
	// Each upstream was told the trace, with its node's serving span as
	// the parent.
	for node, got := range map[string]string{"c": cTrace, "b": bTrace} {
		up := serveC
		if node == "b" {
			up = serveB
		}
		if want := "00-" + inTraceID + "-" + up.SpanID() + "-01"; got != want {
			t.Errorf("%s's upstream got traceparent %q, want %q", node, got, want)
		}
	}
	for _, s := range spans {
		if _, ok := byID[s.ParentID()]; !ok && s.SpanID() != chat.SpanID() {
			t.Errorf("%s on %s hangs off %s, which is not in the trace", s.Name, s.Node(), s.ParentID())
		}
	}
}
