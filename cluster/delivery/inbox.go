package delivery

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// inEntry is one inbound message as the target keeps it, from arrival until
// its sender acknowledged its final state.
type inEntry struct {
	ID       string          `json:"id"`
	From     string          `json:"from"`
	Epoch    string          `json:"epoch"`
	Agent    string          `json:"agent"`
	Kind     Kind            `json:"kind"`
	Seq      uint64          `json:"seq"`
	State    State           `json:"state"`
	Received time.Time       `json:"received"`
	Expires  time.Time       `json:"expires"`
	Payload  json.RawMessage `json:"payload,omitempty"` // dropped once started
	Outcome  *Outcome        `json:"outcome,omitempty"`
}

func (e *inEntry) key() []byte    { return key(e.From, e.ID) }
func (e *inEntry) stream() string { return streamKey(e.From, e.Epoch, e.Agent) }

// streamKey names one sender outbox's messages to one agent here.
func streamKey(from, epoch, agent string) string { return from + sep + epoch + sep + agent }

// inboxIndex holds, in memory, the inbound messages waiting to start: per
// stream in sequence order, the streams taken in turn.
type inboxIndex struct {
	streams map[string][]pendingRef
	order   []string // streams with waiting messages, in turn order
	turn    int
	waiting int // entries in state Delivered (popped ones too, until they start)
}

type pendingRef struct {
	stream string
	seq    uint64
	entry  string // key of the inEntry
}

func (x *inboxIndex) add(r pendingRef) {
	if x.streams == nil {
		x.streams = map[string][]pendingRef{}
	}
	q, ok := x.streams[r.stream]
	if !ok {
		x.order = append(x.order, r.stream)
	}
	i, _ := slices.BinarySearchFunc(q, r.seq, func(p pendingRef, seq uint64) int { return cmp.Compare(p.seq, seq) })
	x.streams[r.stream] = slices.Insert(q, i, r)
}

// pop takes the first waiting message of the next stream in turn.
func (x *inboxIndex) pop() (pendingRef, bool) {
	if len(x.order) == 0 {
		return pendingRef{}, false
	}
	x.turn %= len(x.order)
	stream := x.order[x.turn]
	q := x.streams[stream]
	r := q[0]
	if len(q) == 1 {
		delete(x.streams, stream)
		x.order = slices.Delete(x.order, x.turn, x.turn+1)
	} else {
		x.streams[stream] = q[1:]
		x.turn++
	}
	return r, true
}

func (x *inboxIndex) remove(stream string, seq uint64) {
	q := x.streams[stream]
	i := slices.IndexFunc(q, func(p pendingRef) bool { return p.seq == seq })
	if i < 0 {
		return
	}
	q = slices.Delete(q, i, i+1)
	if len(q) > 0 {
		x.streams[stream] = q
		return
	}
	delete(x.streams, stream)
	if j := slices.Index(x.order, stream); j >= 0 {
		x.order = slices.Delete(x.order, j, j+1)
	}
}

// Causes of an inbound run's end other than its own.
var (
	errShutdown  = errors.New("node shutting down")
	errCancelled = errors.New("cancelled by the sender")
)

// servePush stores a sender's messages and answers for each.
func (s *Service) servePush(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request) error {
	if !s.enter() {
		return mesh.Errorf(mesh.CodeUnavailable, "node %q is shutting down; the message stays queued on the sender", s.self)
	}
	defer s.wg.Done()
	var req pushRequest
	if err := json.Unmarshal(r.Payload, &req); err != nil {
		return mesh.Errorf(mesh.CodeBadRequest, "unreadable push: %v", err)
	}
	if !validEpoch(req.Epoch) || len(req.Messages) > maxBatchMessages {
		return mesh.Errorf(mesh.CodeBadRequest, "bad push: epoch or batch size")
	}
	for i := range req.Messages {
		if err := req.Messages[i].check(); err != nil {
			return mesh.Errorf(mesh.CodeBadRequest, "bad push: %v", err)
		}
	}
	now := time.Now()
	results := make([]pushResult, len(req.Messages))
	var accepted []pendingRef
	var reported bool
	reserved := 0
	var dups, refused, full uint64
	err := s.st.update(func(tx *bolt.Tx) error {
		in, inq, streams := tx.Bucket(bucketIn), tx.Bucket(bucketInQ), tx.Bucket(bucketStreams)
		stopped := map[string]bool{}
		for i, m := range req.Messages {
			sk := streamKey(r.From, req.Epoch, m.Agent)
			res := &results[i]
			res.ID = m.ID
			if m.Seq < u64(streams.Get([]byte(sk))) {
				res.Status = statusDuplicate
				dups++
				continue
			}
			if stopped[sk] {
				res.Status = statusLater
				continue
			}
			e := inEntry{ID: m.ID, From: r.From, Epoch: req.Epoch, Agent: m.Agent, Kind: m.Kind, Seq: m.Seq,
				State: Delivered, Received: now, Expires: time.UnixMilli(m.Expires)}
			var reason string
			switch {
			case now.After(e.Expires):
				e.State, reason = Expired, "it arrived after its time to live ran out"
				res.Status = statusExpired
			default:
				if err := s.admit(r.From, &m); err != nil {
					e.State, reason = Failed, err.Error()
					res.Status, res.Error = statusRefused, reason
					refused++
				}
			}
			if e.State == Delivered {
				s.mu.Lock()
				room := s.in.waiting+s.inReserved < s.cfg.MaxInbox
				if room {
					s.inReserved++
				}
				waiting := s.in.waiting + s.inReserved
				s.mu.Unlock()
				if !room {
					res.Status = statusFull
					res.Error = fmt.Sprintf("node %q's inbox is full: %d messages wait there to start (delivery.maxInbox is %d). "+
						"Messages already sent stay queued and are delivered when it has room; new ones are refused until then",
						s.self, waiting, s.cfg.MaxInbox)
					stopped[sk] = true
					full++
					continue
				}
				reserved++
				e.Payload = m.Payload
				res.Status = statusAccepted
				accepted = append(accepted, pendingRef{stream: sk, seq: m.Seq, entry: string(e.key())})
				if err := inq.Put(seqKey([]byte(sk), m.Seq), e.key()); err != nil {
					return err
				}
			} else {
				e.Outcome = &Outcome{Text: reason, IsError: true}
				if err := putReport(tx, &e); err != nil {
					return err
				}
				reported = true
			}
			if err := putJSON(in, e.key(), &e); err != nil {
				return err
			}
			if err := streams.Put([]byte(sk), u64b(m.Seq+1)); err != nil {
				return err
			}
		}
		return nil
	})
	s.mu.Lock()
	s.inReserved -= reserved
	if err == nil {
		for _, a := range accepted {
			s.in.add(a)
		}
		s.in.waiting += len(accepted)
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("delivery: could not store pushed messages", "from", r.From, "err", err)
		return fmt.Errorf("node %q could not store the messages: %v", s.self, err)
	}
	s.stats.accepted.Add(uint64(len(accepted)))
	s.stats.duplicates.Add(dups)
	s.stats.refused.Add(refused)
	s.stats.full.Add(full)
	if len(accepted) > 0 {
		wake(s.inWake)
		s.inboxChanged()
	}
	if reported {
		s.rep.kick(r.From)
	}
	raw, err := json.Marshal(pushResponse{Results: results})
	if err != nil {
		return err
	}
	return w.Write(raw)
}

func (s *Service) admit(from string, m *wireMessage) error {
	if s.cfg.Runner == nil {
		return fmt.Errorf("node %q runs no agents, so it takes no messages", s.self)
	}
	return s.cfg.Runner.Admit(from, m.Kind, m.Agent, m.Payload)
}

// putReport queues e's current state for its sender.
func putReport(tx *bolt.Tx, e *inEntry) error {
	rep := wireReport{ID: e.ID, Epoch: e.Epoch, State: e.State}
	if e.Outcome != nil {
		rep.Text, rep.IsError, rep.Details = e.Outcome.Text, e.Outcome.IsError, e.Outcome.Details
	}
	return putJSON(tx.Bucket(bucketReports), e.key(), &rep)
}

// dispatch starts inbound messages, one at a time in stream order, as run
// slots free up. Being the only goroutine that starts messages is what
// keeps each stream's start order.
func (s *Service) dispatch() {
	defer close(s.dispatched)
	for {
		ref, ok := s.waitPending()
		if !ok {
			return
		}
		if s.cfg.Runner == nil {
			continue
		}
		release, err := s.cfg.Runner.Acquire(s.ctx)
		if err != nil {
			return // closing: the message stays stored and starts after a restart
		}
		if !s.startRun(ref, release) {
			release()
		}
	}
}

func (s *Service) waitPending() (pendingRef, bool) {
	for {
		s.mu.Lock()
		ref, ok := s.in.pop()
		s.mu.Unlock()
		if ok {
			return ref, true
		}
		select {
		case <-s.inWake:
		case <-s.ctx.Done():
			return pendingRef{}, false
		}
	}
}

// startRun records that the message starts, then starts its run; false
// when it is no longer waiting (cancelled or expired meanwhile).
func (s *Service) startRun(ref pendingRef, release func()) bool {
	if s.ctx.Err() != nil {
		return false
	}
	now := time.Now()
	var e inEntry
	started, ended := false, false
	err := s.st.update(func(tx *bolt.Tx) error {
		in := tx.Bucket(bucketIn)
		if !getJSON(in, []byte(ref.entry), &e) || e.State != Delivered {
			return nil
		}
		if err := tx.Bucket(bucketInQ).Delete(seqKey([]byte(ref.stream), ref.seq)); err != nil {
			return err
		}
		if now.After(e.Expires) {
			e.State, e.Outcome, e.Payload = Expired, &Outcome{Text: "it did not start within its time to live: the agent's node was busy", IsError: true}, nil
			ended = true
		} else {
			e.State, started = Started, true
		}
		if err := putReport(tx, &e); err != nil {
			return err
		}
		payload := e.Payload
		e.Payload = nil
		if err := putJSON(in, []byte(ref.entry), &e); err != nil {
			return err
		}
		e.Payload = payload
		return nil
	})
	if err != nil {
		s.log.Error("delivery: could not record a start; the message stays waiting", "id", ref.entry, "err", err)
		s.mu.Lock()
		s.in.add(ref)
		s.mu.Unlock()
		return false
	}
	if !started && !ended {
		return false
	}
	s.mu.Lock()
	s.in.waiting--
	var runCtx context.Context
	var stop context.CancelCauseFunc
	if started {
		runCtx, stop = context.WithCancelCause(s.runCtx)
		s.running[ref.entry] = stop
		s.runs.Add(1)
	}
	s.mu.Unlock()
	s.inboxChanged()
	s.rep.kick(e.From)
	if !started {
		return false
	}
	// Started here, in the dispatcher, so that runs start in order.
	wait := s.cfg.Runner.Start(runCtx, Inbound{ID: e.ID, From: e.From, Agent: e.Agent, Kind: e.Kind, Payload: e.Payload, Received: e.Received})
	go s.finish(e, wait, runCtx, stop, release)
	return true
}

// finish waits for a run's end and records it.
func (s *Service) finish(e inEntry, wait func() Outcome, ctx context.Context, stop context.CancelCauseFunc, release func()) {
	defer s.runs.Done()
	out := wait()
	release()
	state := Done
	if out.IsError {
		state = Failed
	}
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errCancelled):
		state = Cancelled
		out = Outcome{Text: "cancelled by the sender while it ran; the run was stopped", IsError: true}
	case errors.Is(cause, errShutdown):
		state = Failed
		out = Outcome{Text: fmt.Sprintf("node %q shut down while it ran; the run was stopped and is not run again", s.self), IsError: true}
	}
	if len(out.Text) > maxTextBytes {
		out.Text = out.Text[:maxTextBytes]
	}
	stop(nil)
	e.State, e.Outcome, e.Payload = state, &out, nil
	err := s.st.update(func(tx *bolt.Tx) error {
		if err := putReport(tx, &e); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketIn), e.key(), &e)
	})
	if err != nil {
		s.log.Error("delivery: could not record how a run ended", "id", e.ID, "from", e.From, "err", err)
	}
	s.mu.Lock()
	delete(s.running, string(e.key()))
	s.mu.Unlock()
	s.inboxChanged()
	s.rep.kick(e.From)
}

// serveCancel cancels one of the caller's messages here.
func (s *Service) serveCancel(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request) error {
	if !s.enter() {
		return mesh.Errorf(mesh.CodeUnavailable, "node %q is shutting down", s.self)
	}
	defer s.wg.Done()
	var req cancelRequest
	if err := json.Unmarshal(r.Payload, &req); err != nil || !ValidID(req.ID) {
		return mesh.Errorf(mesh.CodeBadRequest, "bad cancel request")
	}
	k := key(r.From, req.ID)
	var e inEntry
	var resp cancelResponse
	dropped := false
	err := s.st.update(func(tx *bolt.Tx) error {
		dropped = false
		if !getJSON(tx.Bucket(bucketIn), k, &e) || e.Epoch != req.Epoch {
			resp = cancelResponse{Text: fmt.Sprintf("node %q does not have it: it finished and was cleaned up, or never arrived", s.self)}
			return nil
		}
		switch e.State {
		case Delivered:
			if err := tx.Bucket(bucketInQ).Delete(seqKey([]byte(e.stream()), e.Seq)); err != nil {
				return err
			}
			e.State, e.Outcome, e.Payload = Cancelled, &Outcome{Text: "cancelled before it started"}, nil
			if err := putReport(tx, &e); err != nil {
				return err
			}
			dropped = true
			resp = cancelResponse{State: Cancelled, Text: e.Outcome.Text}
			return putJSON(tx.Bucket(bucketIn), k, &e)
		case Started:
			resp = cancelResponse{State: Started, Text: "it is running; the run is being stopped"}
		default:
			text := ""
			if e.Outcome != nil {
				text = e.Outcome.Text
			}
			resp = cancelResponse{State: e.State, Text: text}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("node %q could not record the cancel: %v", s.self, err)
	}
	s.mu.Lock()
	if dropped {
		s.in.remove(e.stream(), e.Seq)
		s.in.waiting--
	}
	stop := s.running[string(k)]
	s.mu.Unlock()
	if e.State == Started && stop != nil {
		stop(errCancelled)
	}
	if dropped {
		s.inboxChanged()
		s.rep.kick(r.From)
	}
	raw, err := json.Marshal(resp)
	if err != nil {
		return err
	}
	return w.Write(raw)
}

// nextReports loads the next batch of reports for node.
func (s *Service) nextReports(node string) (*batch, error) {
	var reps []wireReport
	var ids []string
	size := 0
	err := s.st.view(func(tx *bolt.Tx) error {
		prefix := node + sep
		c := tx.Bucket(bucketReports).Cursor()
		for k, v := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, v = c.Next() {
			if len(reps) >= maxBatchMessages || (len(reps) > 0 && size+len(v) > maxBatchBytes) {
				break
			}
			var rep wireReport
			if json.Unmarshal(v, &rep) != nil {
				continue
			}
			size += len(v)
			reps = append(reps, rep)
			ids = append(ids, rep.ID)
		}
		return nil
	})
	if err != nil || len(reps) == 0 {
		return nil, err
	}
	payload, err := json.Marshal(reportRequest{Reports: reps})
	if err != nil {
		return nil, err
	}
	return &batch{payload: payload, ids: ids}, nil
}

// applyReports forgets the reports the sender acknowledged, and the
// entries whose final state it now has.
func (s *Service) applyReports(node string, _ *batch, answer []byte) (bool, error) {
	var resp reportResponse
	if err := json.Unmarshal(answer, &resp); err != nil {
		return false, fmt.Errorf("node %q answered reports with something unreadable: %w", node, err)
	}
	err := s.st.update(func(tx *bolt.Tx) error {
		reps := tx.Bucket(bucketReports)
		for _, a := range resp.Acked {
			k := key(node, a.ID)
			var cur wireReport
			if !getJSON(reps, k, &cur) || cur.State != a.State {
				continue
			}
			if err := reps.Delete(k); err != nil {
				return err
			}
			if cur.State.Final() {
				if err := tx.Bucket(bucketIn).Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	})
	return false, err
}

// kickReports starts carrying the reports stored for every node.
func (s *Service) kickReports() error {
	nodes := map[string]bool{}
	err := s.st.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketReports).ForEach(func(k, _ []byte) error {
			if i := strings.IndexByte(string(k), 0); i > 0 {
				nodes[string(k[:i])] = true
			}
			return nil
		})
	})
	s.mu.Lock()
	for n := range nodes {
		s.rep.kickLocked(n)
	}
	s.mu.Unlock()
	return err
}
