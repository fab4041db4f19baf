package delivery

import (
	"encoding/json"
	"fmt"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// The delivery protocol's payloads, JSON over mesh requests. Each call
// answers with one message.

// pushRequest carries messages of one outbox (epoch) to a target, each
// stream's messages in order.
type pushRequest struct {
	Epoch    string        `json:"epoch"`
	Messages []wireMessage `json:"messages"`
}

type wireMessage struct {
	ID      string          `json:"id"`
	Seq     uint64          `json:"seq"`
	Kind    Kind            `json:"kind"`
	Agent   string          `json:"agent"`
	Payload json.RawMessage `json:"payload"`
	Expires int64           `json:"expires"` // Unix milliseconds, the sender's clock
}

type pushResponse struct {
	Results []pushResult `json:"results"`
}

// pushResult is the target's answer for one message.
type pushResult struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// Push statuses.
const (
	statusAccepted  = "accepted"  // stored now
	statusDuplicate = "duplicate" // stored before: an earlier push got through
	statusRefused   = "refused"   // not taken, for good (Error says why)
	statusExpired   = "expired"   // arrived after its time to live
	statusFull      = "full"      // the inbox is full: send again later
	statusLater     = "later"     // not looked at (an earlier one of its stream was full)
)

// reportRequest carries states a target's messages reached to their sender.
type reportRequest struct {
	Reports []wireReport `json:"reports"`
}

type wireReport struct {
	ID      string          `json:"id"`
	Epoch   string          `json:"epoch"`
	State   State           `json:"state"`
	Text    string          `json:"text,omitempty"`
	IsError bool            `json:"isError,omitempty"`
	Details json.RawMessage `json:"details,omitempty"`
}

type reportResponse struct {
	Acked []reportAck `json:"acked"`
}

// reportAck acknowledges one report; the target forgets a report only when
// the state acknowledged is the one it still holds.
type reportAck struct {
	ID    string `json:"id"`
	State State  `json:"state"`
}

type cancelRequest struct {
	Epoch string `json:"epoch"`
	ID    string `json:"id"`
}

type cancelResponse struct {
	// State is the message's state on the target after the cancel; ""
	// when the target does not have it.
	State State  `json:"state,omitempty"`
	Text  string `json:"text"`
}

// Bounds on what a peer may send.
const (
	maxBatchMessages = 256
	maxBatchBytes    = 1 << 20
	maxPayloadBytes  = 1 << 20
	maxTextBytes     = 4 << 20
)

func validEpoch(e string) bool {
	if len(e) == 0 || len(e) > 64 {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (m *wireMessage) check() error {
	switch {
	case !ValidID(m.ID):
		return fmt.Errorf("bad message id %q", m.ID)
	case m.Seq == 0:
		return fmt.Errorf("message %s: no sequence number", m.ID)
	case m.Kind != KindSend && m.Kind != KindHandoff:
		return fmt.Errorf("message %s: unknown kind %q", m.ID, m.Kind)
	case !mesh.ValidCapID(m.Agent):
		return fmt.Errorf("message %s: bad agent id", m.ID)
	case len(m.Payload) > maxPayloadBytes:
		return fmt.Errorf("message %s: payload over %d bytes", m.ID, maxPayloadBytes)
	}
	return nil
}
