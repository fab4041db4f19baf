package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/delivery"
)

// The outbox and inbox show on /metrics: messages wait in the sender's
// outbox while the target is down, and once it is back the target counts
// them stored and the outbox is empty.
func TestDeliveryMetrics(t *testing.T) {
	dir := t.TempDir()
	bin, _ := standInAgent(t, dir)
	var logs syncBuffer
	port := freePortNumber(t)
	target := newRestartable(t, fmt.Sprintf(`{"nodeId":"target","secret":%q,"listen":true,"listenHost":"127.0.0.1","listenPort":%d,
		"proxyPort":0,"agents":[{"id":"worker"}],"openclawBin":%q}`, testSecret, port, bin), &logs)
	sender := newRestartable(t, fmt.Sprintf(`{"nodeId":"s1","secret":%q,"proxyPort":0,
		"peers":[{"url":"ws://127.0.0.1:%d","nodeId":"target"}]}`, testSecret, port), &logs)
	waitReachable(t, sender.rt, "target")
	target.stop()
	var ids []string
	for k := range 2 {
		rec, _ := sendText(t, sender.rt, map[string]any{"agent": "worker", "message": fmt.Sprintf("m%d", k)})
		ids = append(ids, rec.ID)
	}
	fams, _ := scrape(t, sender.rt)
	if got := metricValue(fams, "clawmatrix_delivery_outbox_messages", map[string]string{}); got != 2 {
		t.Errorf("outbox with the target down: %v messages, want 2", got)
	}
	target.start()
	deadline := time.Now().Add(testDeadline)
	for _, id := range ids {
		for {
			rec, err := sender.rt.Delivery().Get(id)
			if err != nil {
				t.Fatal(err)
			}
			if rec.State == delivery.Done {
				break
			}
			if rec.State.Final() || time.Now().After(deadline) {
				t.Fatalf("%s: %s %s", id, rec.State, rec.Text)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	fams, _ = scrape(t, sender.rt)
	for _, want := range []struct {
		name   string
		labels map[string]string
		ok     func(float64) bool
	}{
		{"clawmatrix_delivery_outbox_messages", map[string]string{}, func(v float64) bool { return v == 0 }},
		{"clawmatrix_delivery_pushes_total", map[string]string{"outcome": "ok"}, func(v float64) bool { return v >= 1 }},
	} {
		if got := metricValue(fams, want.name, want.labels); !want.ok(got) {
			t.Errorf("sender: %s%v = %v", want.name, want.labels, got)
		}
	}
	fams, _ = scrape(t, target.rt)
	for _, want := range []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"clawmatrix_delivery_received_total", map[string]string{"outcome": "accepted"}, 2},
		{"clawmatrix_delivery_received_total", map[string]string{"outcome": "full"}, 0},
		{"clawmatrix_delivery_inbox_messages", map[string]string{"state": "running"}, 0},
		{"clawmatrix_delivery_inbox_messages", map[string]string{"state": "waiting"}, 0},
	} {
		if got := metricValue(fams, want.name, want.labels); got != want.value {
			t.Errorf("target: %s%v = %v, want %v", want.name, want.labels, got, want.value)
		}
	}
}
