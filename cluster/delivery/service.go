package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// Mesh methods of the delivery protocol.
const (
	MethodPush   = "delivery.push"   // sender → target: messages to store
	MethodReport = "delivery.report" // target → sender: states reached
	MethodCancel = "delivery.cancel" // sender → target: cancel one message
)

// Defaults for the zero values of Config.
const (
	DefaultTTL       = 24 * time.Hour
	DefaultMaxQueued = 10000
	DefaultMaxInbox  = 10000
)

// Config is what a Service needs.
type Config struct {
	Node *mesh.Node
	// Path is the bbolt file. Empty: a temporary file, removed on Close
	// (tests and the demo: nothing survives a restart then).
	Path string
	// NoSync skips the fsync of each commit. Only for benchmarks that
	// measure what durability costs: a crash then loses messages.
	NoSync bool
	// TTL is the default time a message may wait to start.
	TTL time.Duration
	// MaxQueued bounds the outbox: messages not yet stored by their target.
	MaxQueued int
	// MaxInbox bounds the inbox: messages stored here not yet started.
	MaxInbox int
	// Runner runs inbound messages; nil refuses every inbound message.
	Runner Runner
	// Notifier hands finished tasks to their sessions; nil keeps them in
	// the outbox only.
	Notifier Notifier
	// LocalLoad is this node's own load, for choosing among nodes by load.
	LocalLoad func() mesh.Load
	// OnInboxChange is called (without locks held) when the number of
	// inbound messages waiting or running changes.
	OnInboxChange func()
	Logger        *slog.Logger
	Timing        Timing
}

// Timing tunes retries; zero values take the defaults. Tests shorten them.
type Timing struct {
	RetryMin    time.Duration // first retry of a failed push (250 ms)
	RetryMax    time.Duration // longest wait between retries (30 s)
	CallTimeout time.Duration // one push, report or cancel call (30 s)
	Sweep       time.Duration // how often expiry and clean-up run (30 s)
	// Drain is how long Close lets running inbound runs finish before it
	// stops them (2 s).
	Drain time.Duration
	// Retention keeps finished records this long for cluster_tasks (7 days).
	Retention time.Duration
	// NoticeTimeout bounds one hand-over to a session (10 min).
	NoticeTimeout time.Duration
	// NoticeAttempts is how often a hand-over is tried before it is given
	// up (20).
	NoticeAttempts int
}

func (t *Timing) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.RetryMin, 250*time.Millisecond)
	def(&t.RetryMax, 30*time.Second)
	def(&t.CallTimeout, 30*time.Second)
	def(&t.Sweep, 30*time.Second)
	def(&t.Drain, 2*time.Second)
	def(&t.Retention, 7*24*time.Hour)
	def(&t.NoticeTimeout, 10*time.Minute)
	if t.NoticeAttempts <= 0 {
		t.NoticeAttempts = 20
	}
}

// Service is one node's outbox and inbox. Open starts it; Close stops it.
type Service struct {
	cfg   Config
	t     Timing
	node  *mesh.Node
	self  string
	st    *store
	tmp   string // temporary directory holding the file, removed on Close
	epoch string
	log   *slog.Logger

	ctx        context.Context // ends at Close: couriers, dispatcher, sweeper, notices
	cancel     context.CancelFunc
	runCtx     context.Context // ends after the drain: running inbound runs
	runCancel  context.CancelCauseFunc
	wg         sync.WaitGroup // goroutines and handlers, but the dispatcher
	dispatched chan struct{}  // closed when the dispatcher has returned
	runs       sync.WaitGroup // inbound runs; only the dispatcher adds to it

	mu     sync.Mutex
	closed bool
	// Sender side.
	queued      map[string]int // node → messages in its outbox queue
	totalQueued int
	reserved    int                 // enqueues being committed
	full        map[string]fullNote // node → its inbox said it was full
	dir         map[string]*seenNode
	// Target side.
	in         inboxIndex
	inReserved int
	running    map[string]context.CancelCauseFunc // from 0 id → stops its run
	inWake     chan struct{}
	notifyWake chan struct{}

	out *courier // pushes messages
	rep *courier // pushes reports

	stats struct {
		pushes, pushErrors, accepted, duplicates, refused, full atomic.Uint64
	}
}

// fullNote is what a target said when its inbox refused a message as full.
type fullNote struct {
	at   time.Time
	text string
}

// Open opens the file (creating it), takes up the messages it holds,
// registers the delivery methods on the node and starts delivering. Call it
// before the node starts, so that no push finds the methods missing.
func Open(cfg Config) (*Service, error) {
	if cfg.Node == nil {
		return nil, errors.New("delivery: no mesh node")
	}
	s := &Service{cfg: cfg, t: cfg.Timing, node: cfg.Node, self: cfg.Node.ID(), log: cfg.Logger,
		queued: map[string]int{}, full: map[string]fullNote{}, dir: map[string]*seenNode{},
		running: map[string]context.CancelCauseFunc{}, inWake: make(chan struct{}, 1), notifyWake: make(chan struct{}, 1)}
	s.t.fill()
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.cfg.TTL <= 0 {
		s.cfg.TTL = DefaultTTL
	}
	if s.cfg.MaxQueued <= 0 {
		s.cfg.MaxQueued = DefaultMaxQueued
	}
	if s.cfg.MaxInbox <= 0 {
		s.cfg.MaxInbox = DefaultMaxInbox
	}
	path, noSync := cfg.Path, cfg.NoSync
	if path == "" {
		dir, err := os.MkdirTemp("", "clawmatrix-delivery-")
		if err != nil {
			return nil, err
		}
		// Removed at Close, so there is nothing for a sync to keep.
		s.tmp, path, noSync = dir, filepath.Join(dir, "delivery.db"), true
	}
	st, err := openStore(path, noSync, 10*time.Second)
	if err != nil {
		s.removeTmp()
		return nil, fmt.Errorf("delivery file %s: %w", path, err)
	}
	s.st, s.epoch = st, st.epoch()
	if err := s.load(); err != nil {
		st.close()
		s.removeTmp()
		return nil, fmt.Errorf("delivery file %s: %w", path, err)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.runCtx, s.runCancel = context.WithCancelCause(context.Background())
	s.out = newCourier(s, MethodPush, s.nextPush, s.applyPush)
	s.rep = newCourier(s, MethodReport, s.nextReports, s.applyReports)

	s.node.Handle(MethodPush, mesh.HandlerFunc(s.servePush))
	s.node.Handle(MethodReport, mesh.HandlerFunc(s.serveReport))
	s.node.Handle(MethodCancel, mesh.HandlerFunc(s.serveCancel))

	s.mu.Lock()
	for node := range s.queued {
		s.out.kickLocked(node)
	}
	s.mu.Unlock()
	if err := s.kickReports(); err != nil {
		s.log.Warn("delivery: reading pending reports", "err", err)
	}
	s.dispatched = make(chan struct{})
	go s.dispatch()
	s.wg.Add(3)
	go s.sweepLoop()
	go s.noticeLoop()
	go s.watchPeers()
	return s, nil
}

func (s *Service) removeTmp() {
	if s.tmp != "" {
		os.RemoveAll(s.tmp)
	}
}

// Close stops taking and pushing messages, lets inbound runs finish for
// up to Timing.Drain, stops the rest (they are recorded as failed, and the
// senders are told once this node is back), and closes the file.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	for _, m := range []string{MethodPush, MethodReport, MethodCancel} {
		s.node.Handle(m, nil)
	}
	s.cancel()
	// No run starts after this, so the drain below sees them all.
	<-s.dispatched
	drained := make(chan struct{})
	go func() {
		s.runs.Wait()
		close(drained)
	}()
	select {
	case <-drained:
	case <-time.After(s.t.Drain):
		s.runCancel(errShutdown)
		<-drained
	}
	s.runCancel(errShutdown)
	s.wg.Wait()
	err := s.st.close()
	s.removeTmp()
	return err
}

// enter registers a handler or goroutine; false once closing.
func (s *Service) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// Epoch is this outbox's epoch (tests).
func (s *Service) Epoch() string { return s.epoch }

// Stats returns the service's counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Stats{
		Queued: s.totalQueued, Pushes: s.stats.pushes.Load(), PushErrors: s.stats.pushErrors.Load(),
		Waiting: s.in.waiting, Running: len(s.running),
		Accepted: s.stats.accepted.Load(), Duplicates: s.stats.duplicates.Load(),
		Refused: s.stats.refused.Load(), Full: s.stats.full.Load(),
	}
}

// InboxLoad is how many inbound messages wait to start and how many run.
func (s *Service) InboxLoad() (waiting, running int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.in.waiting, len(s.running)
}

func (s *Service) inboxChanged() {
	if s.cfg.OnInboxChange != nil {
		s.cfg.OnInboxChange()
	}
}

// reachable reports whether the mesh has a route to node now.
func (s *Service) reachable(node string) bool {
	if node == s.self {
		return true
	}
	_, ok := s.node.Peer(node)
	return ok
}

func wake(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// jitter spreads d by ±20 % so that retries from many nodes do not align.
func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d)*2/5+1))
}
