package delivery

import (
	"context"
	"encoding/json"
	"time"
)

// State is where a message stands, as its sender sees it.
type State string

// The states, in the order a message moves through them; Done, Failed,
// Expired and Cancelled are final.
const (
	Queued    State = "queued"    // stored on the sender, not yet on the target
	Delivered State = "delivered" // stored on the target, not started
	Started   State = "started"   // its run began on the target
	Done      State = "done"      // its run finished
	Failed    State = "failed"    // refused by the target, or its run failed
	Expired   State = "expired"   // not started within its time to live
	Cancelled State = "cancelled" // cancelled by the sender before it finished
)

// Final reports whether s is one of the final states.
func (s State) Final() bool { return s.rank() == 3 }

func (s State) rank() int {
	switch s {
	case Queued:
		return 0
	case Delivered:
		return 1
	case Started:
		return 2
	case Done, Failed, Expired, Cancelled:
		return 3
	}
	return -1
}

// Kind is what a message asks of the target's agent.
type Kind string

// The kinds of message.
const (
	KindSend    Kind = "send"    // a one-way message
	KindHandoff Kind = "handoff" // a task whose result goes back to the sender
)

// Record is one outgoing message as the sender keeps it.
type Record struct {
	ID      string    `json:"id"`
	Kind    Kind      `json:"kind"`
	Node    string    `json:"node"`
	Agent   string    `json:"agent"`
	Seq     uint64    `json:"seq"`
	State   State     `json:"state"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Expires time.Time `json:"expires"`
	// Summary is the start of the message, for listings.
	Summary string `json:"summary,omitempty"`
	// Text is the result of a finished task, or why a message failed,
	// expired or was cancelled.
	Text    string          `json:"text,omitempty"`
	IsError bool            `json:"isError,omitempty"`
	Details json.RawMessage `json:"details,omitempty"`
	// Session and SessionAgent name the conversation that sent it (an
	// OpenClaw session key and agent id), if known.
	Session      string `json:"session,omitempty"`
	SessionAgent string `json:"sessionAgent,omitempty"`
	// Notice is the hand-over of a finished task to its session.
	Notice      NoticeState `json:"notice,omitempty"`
	NoticeError string      `json:"noticeError,omitempty"`
	Notices     int         `json:"notices,omitempty"` // attempts so far
}

// NoticeState says whether a finished task reached the session that asked.
type NoticeState string

// The notice states; "" means no notice is due.
const (
	NoticePending NoticeState = "pending"
	NoticeSent    NoticeState = "sent"
	NoticeFailed  NoticeState = "failed" // given up after repeated failures
)

// Outgoing is a message to enqueue.
type Outgoing struct {
	Kind  Kind
	Node  string
	Agent string
	// Payload is what the target's Runner gets, opaque to this package.
	Payload json.RawMessage
	// TTL is how long the message may wait to start; 0 means the
	// service's default.
	TTL          time.Duration
	Summary      string
	Session      string
	SessionAgent string
}

// Inbound is a message as the target's Runner sees it.
type Inbound struct {
	ID       string
	From     string
	Agent    string
	Kind     Kind
	Payload  json.RawMessage
	Received time.Time
}

// Outcome is how a run ended.
type Outcome struct {
	Text    string
	IsError bool
	Details json.RawMessage
}

// Runner runs inbound messages on the target. Admit is called when a
// message arrives, before it is stored; Acquire and Start when it is its
// turn, from one goroutine, so that runs start in the order Start is called.
type Runner interface {
	// Admit refuses, for good, a message this node does not take (an
	// agent it does not offer, a caller it does not admit, a payload it
	// cannot run), with an error that says why and what to do.
	Admit(from string, kind Kind, agent string, payload json.RawMessage) error
	// Acquire waits for a free run slot; release gives it back.
	Acquire(ctx context.Context) (release func(), err error)
	// Start starts the message's run, with a slot held, and returns once
	// it runs (or failed to start); wait waits for its end and says how it
	// ended. When ctx ends the run must stop.
	Start(ctx context.Context, m Inbound) (wait func() Outcome)
}

// Notifier hands a finished task to the session that sent it. An error
// means the hand-over did not happen and is tried again later.
type Notifier interface {
	Notify(ctx context.Context, r Record) error
}

// Stats are counters for diagnostics, tests and benchmarks.
type Stats struct {
	// Sender side.
	Queued     int    // messages waiting in the outbox
	Pushes     uint64 // push calls made
	PushErrors uint64 // push calls that failed (unreachable, timeout)
	// Target side.
	Waiting    int    // inbox messages not started yet
	Running    int    // inbox messages running
	Accepted   uint64 // messages stored in the inbox
	Duplicates uint64 // pushes of messages already stored, dropped
	Refused    uint64 // messages refused for good
	Full       uint64 // messages refused because the inbox was full
}
