package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/clawmatrix/clawmatrix/cluster/mesh"
)

// Errors of Enqueue and Cancel. The texts of the wrapping errors say what
// to do.
var (
	ErrClosed      = errors.New("delivery: closed")
	ErrOutboxFull  = errors.New("outbox full")
	ErrInboxFull   = errors.New("target inbox full")
	ErrNotFound    = errors.New("no such message")
	ErrUnreachable = errors.New("target unreachable")
)

// fullHold is how long a target's "inbox full" refuses new messages for it
// here without a new answer from the target.
const fullHold = time.Minute

// Enqueue stores a message for its target and returns once it is on disk.
// It refuses when the outbox holds MaxQueued messages, or when the target
// said lately that its inbox is full.
func (s *Service) Enqueue(o Outgoing) (Record, error) {
	switch {
	case !mesh.ValidCapID(o.Node) || !mesh.ValidCapID(o.Agent):
		return Record{}, fmt.Errorf("delivery: bad target %q/%q", o.Node, o.Agent)
	case o.Kind != KindSend && o.Kind != KindHandoff:
		return Record{}, fmt.Errorf("delivery: unknown kind %q", o.Kind)
	case len(o.Payload) > maxPayloadBytes:
		return Record{}, fmt.Errorf("the message is %d bytes; at most %d can be sent", len(o.Payload), maxPayloadBytes)
	}
	now := time.Now()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Record{}, ErrClosed
	}
	if n, ok := s.full[o.Node]; ok && now.Sub(n.at) < fullHold {
		s.mu.Unlock()
		return Record{}, fmt.Errorf("%w: %s", ErrInboxFull, n.text)
	}
	if s.totalQueued+s.reserved >= s.cfg.MaxQueued {
		queued := s.totalQueued
		s.mu.Unlock()
		return Record{}, fmt.Errorf("%w: this node already holds %d messages that have not reached their nodes "+
			"(delivery.maxQueued is %d); the message was not stored. Check cluster_tasks and cluster_peers for "+
			"unreachable nodes, cancel what is no longer needed, or try again later", ErrOutboxFull, queued, s.cfg.MaxQueued)
	}
	s.reserved++
	s.mu.Unlock()

	ttl := o.TTL
	if ttl <= 0 {
		ttl = s.cfg.TTL
	}
	prefix := "m-"
	if o.Kind == KindHandoff {
		prefix = "t-"
	}
	rec := Record{ID: newID(prefix, now), Kind: o.Kind, Node: o.Node, Agent: o.Agent, State: Queued,
		Created: now, Updated: now, Expires: now.Add(ttl), Summary: o.Summary,
		Session: o.Session, SessionAgent: o.SessionAgent}
	payload := []byte(o.Payload)
	if len(payload) == 0 {
		payload = []byte("{}")
	}
	err := s.st.update(func(tx *bolt.Tx) error {
		stream := key(o.Node, o.Agent)
		seqs := tx.Bucket(bucketSeq)
		rec.Seq = u64(seqs.Get(stream)) + 1
		if err := seqs.Put(stream, u64b(rec.Seq)); err != nil {
			return err
		}
		if err := putJSON(tx.Bucket(bucketOut), []byte(rec.ID), rec); err != nil {
			return err
		}
		if err := tx.Bucket(bucketOutBody).Put([]byte(rec.ID), payload); err != nil {
			return err
		}
		return tx.Bucket(bucketOutQ).Put(seqKey(stream, rec.Seq), []byte(rec.ID))
	})
	s.mu.Lock()
	s.reserved--
	if err == nil {
		s.queued[o.Node]++
		s.totalQueued++
		s.out.kickLocked(o.Node)
	}
	s.mu.Unlock()
	if err != nil {
		return Record{}, fmt.Errorf("the message could not be stored: %w", err)
	}
	return rec, nil
}

// change is what one transaction did to the outbox, applied to the
// in-memory counts once it committed.
type change struct {
	dequeued map[string]int // node → messages taken off its queue
	notices  bool
}

func (c *change) dequeue(tx *bolt.Tx, rec *Record) error {
	if err := tx.Bucket(bucketOutQ).Delete(seqKey(key(rec.Node, rec.Agent), rec.Seq)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketOutBody).Delete([]byte(rec.ID)); err != nil {
		return err
	}
	if c.dequeued == nil {
		c.dequeued = map[string]int{}
	}
	c.dequeued[rec.Node]++
	return nil
}

// advance moves rec to state (never back), taking it off the queue when it
// leaves Queued and marking a notice due when a task with a session ends.
// It reports whether rec changed.
func (c *change) advance(tx *bolt.Tx, rec *Record, state State, text string, isError bool, details json.RawMessage) (bool, error) {
	if state.rank() <= rec.State.rank() {
		return false, nil
	}
	if rec.State == Queued {
		if err := c.dequeue(tx, rec); err != nil {
			return false, err
		}
	}
	rec.State, rec.Updated = state, time.Now()
	if text != "" || state.Final() {
		rec.Text, rec.IsError, rec.Details = text, isError, details
	}
	if state.Final() && rec.Kind == KindHandoff && rec.Session != "" && state != Cancelled {
		rec.Notice = NoticePending
		if err := tx.Bucket(bucketNotify).Put([]byte(rec.ID), nil); err != nil {
			return false, err
		}
		c.notices = true
	}
	return true, putJSON(tx.Bucket(bucketOut), []byte(rec.ID), rec)
}

// commit applies a committed change to the counts.
func (s *Service) commit(c *change) {
	s.mu.Lock()
	for node, n := range c.dequeued {
		s.queued[node] -= n
		s.totalQueued -= n
		if s.queued[node] <= 0 {
			delete(s.queued, node)
		}
	}
	s.mu.Unlock()
	if c.notices {
		wake(s.notifyWake)
	}
}

// nextPush loads the next batch of node's queued messages: each stream in
// order, at most maxBatchMessages and about maxBatchBytes. Messages past
// their time to live are expired instead.
func (s *Service) nextPush(node string) (*batch, error) {
	now := time.Now()
	var msgs []wireMessage
	var expired []string
	size := 0
	err := s.st.view(func(tx *bolt.Tx) error {
		out, bodies := tx.Bucket(bucketOut), tx.Bucket(bucketOutBody)
		prefix := []byte(node + sep)
		c := tx.Bucket(bucketOutQ).Cursor()
		for k, v := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
			var rec Record
			if !getJSON(out, v, &rec) || rec.State != Queued {
				continue
			}
			if now.After(rec.Expires) {
				expired = append(expired, rec.ID)
				continue
			}
			body := bodies.Get(v)
			if len(msgs) >= maxBatchMessages || (len(msgs) > 0 && size+len(body) > maxBatchBytes) {
				break
			}
			size += len(body) + 200
			msgs = append(msgs, wireMessage{ID: rec.ID, Seq: rec.Seq, Kind: rec.Kind, Agent: rec.Agent,
				Payload: append(json.RawMessage(nil), body...), Expires: rec.Expires.UnixMilli()})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(expired) > 0 {
		if err := s.expireQueued(expired); err != nil {
			return nil, err
		}
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	payload, err := json.Marshal(pushRequest{Epoch: s.epoch, Messages: msgs})
	if err != nil {
		return nil, err
	}
	b := &batch{payload: payload}
	for _, m := range msgs {
		b.ids = append(b.ids, m.ID)
	}
	return b, nil
}

// applyPush takes the target's answer to a push.
func (s *Service) applyPush(node string, b *batch, answer []byte) (hold bool, err error) {
	var resp pushResponse
	if err := json.Unmarshal(answer, &resp); err != nil {
		return false, fmt.Errorf("node %q answered a push with something unreadable: %w", node, err)
	}
	results := make(map[string]pushResult, len(resp.Results))
	for _, r := range resp.Results {
		results[r.ID] = r
	}
	var c change
	fullText := ""
	err = s.st.update(func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		for _, id := range b.ids {
			r, ok := results[id]
			var rec Record
			if !ok || !getJSON(out, []byte(id), &rec) || rec.State != Queued {
				continue
			}
			var err error
			switch r.Status {
			case statusAccepted, statusDuplicate:
				_, err = c.advance(tx, &rec, Delivered, "", false, nil)
			case statusRefused:
				_, err = c.advance(tx, &rec, Failed, fmt.Sprintf("node %q refused it: %s", node, r.Error), true, nil)
			case statusExpired:
				_, err = c.advance(tx, &rec, Expired, fmt.Sprintf("it reached node %q after its time to live ran out, so it was not started", node), true, nil)
			case statusFull:
				hold, fullText = true, r.Error
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	s.commit(&c)
	s.mu.Lock()
	if hold {
		s.full[node] = fullNote{at: time.Now(), text: fullText}
	} else {
		delete(s.full, node)
	}
	s.mu.Unlock()
	return hold, nil
}

// expireQueued expires queued messages past their time to live.
func (s *Service) expireQueued(ids []string) error {
	now := time.Now()
	var c change
	err := s.st.update(func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		for _, id := range ids {
			var rec Record
			if !getJSON(out, []byte(id), &rec) || rec.State != Queued || !now.After(rec.Expires) {
				continue
			}
			text := fmt.Sprintf("it could not be delivered within its time to live (%s): node %q was not reachable, or did not take it",
				rec.Expires.Sub(rec.Created).Round(time.Second), rec.Node)
			if _, err := c.advance(tx, &rec, Expired, text, true, nil); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		s.commit(&c)
	}
	return err
}

// serveReport takes states a target reports for this node's messages.
func (s *Service) serveReport(ctx context.Context, w mesh.ResponseWriter, r *mesh.Request) error {
	if !s.enter() {
		return mesh.Errorf(mesh.CodeUnavailable, "node %q is shutting down", s.self)
	}
	defer s.wg.Done()
	var req reportRequest
	if err := json.Unmarshal(r.Payload, &req); err != nil || len(req.Reports) > maxBatchMessages {
		return mesh.Errorf(mesh.CodeBadRequest, "unreadable report")
	}
	var acks []reportAck
	var c change
	err := s.st.update(func(tx *bolt.Tx) error {
		acks = acks[:0]
		out := tx.Bucket(bucketOut)
		for _, rep := range req.Reports {
			if !ValidID(rep.ID) || rep.State.rank() < 0 {
				continue
			}
			acks = append(acks, reportAck{ID: rep.ID, State: rep.State})
			var rec Record
			// Only the node a message went to may report on it.
			if rep.Epoch != s.epoch || !getJSON(out, []byte(rep.ID), &rec) || rec.Node != r.From {
				continue
			}
			text := rep.Text
			if len(text) > maxTextBytes {
				text = text[:maxTextBytes]
			}
			if _, err := c.advance(tx, &rec, rep.State, text, rep.IsError, rep.Details); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing reports: %w", err)
	}
	s.commit(&c)
	raw, err := json.Marshal(reportResponse{Acked: acks})
	if err != nil {
		return err
	}
	return w.Write(raw)
}

// Get returns one record.
func (s *Service) Get(id string) (Record, error) {
	var rec Record
	found := false
	err := s.st.view(func(tx *bolt.Tx) error {
		found = getJSON(tx.Bucket(bucketOut), []byte(id), &rec)
		return nil
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return rec, err
}

// Filter selects records for List.
type Filter struct {
	// Session keeps only the records of this session, unless All is set.
	Session string
	All     bool
	// Limit is the most records returned (newest first); 0 means 20.
	Limit int
}

// List returns records, newest first.
func (s *Service) List(f Filter) ([]Record, error) {
	if f.Limit <= 0 {
		f.Limit = 20
	}
	var recs []Record
	err := s.st.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketOut).Cursor()
		for k, v := c.Last(); k != nil && len(recs) < f.Limit; k, v = c.Prev() {
			var rec Record
			if json.Unmarshal(v, &rec) != nil {
				continue
			}
			if !f.All && rec.Session != f.Session {
				continue
			}
			recs = append(recs, rec)
		}
		return nil
	})
	return recs, err
}

// Cancel cancels a message: one still queued here never leaves; for one
// on its target the target is asked to drop it (not started yet) or stop
// its run. The record returned is the message as it stands after.
func (s *Service) Cancel(ctx context.Context, id string) (Record, error) {
	rec, err := s.Get(id)
	if err != nil || rec.State.Final() {
		return rec, err
	}
	// No push of this node's messages may be out while the state is
	// decided: a message pushed meanwhile would reach the target
	// uncancelled.
	release := s.out.settle(rec.Node)
	defer release()
	if rec, err = s.Get(id); err != nil || rec.State.Final() {
		return rec, err
	}
	if rec.State == Queued {
		var c change
		err := s.st.update(func(tx *bolt.Tx) error {
			if !getJSON(tx.Bucket(bucketOut), []byte(id), &rec) {
				return nil
			}
			_, err := c.advance(tx, &rec, Cancelled, fmt.Sprintf("cancelled before it reached node %q", rec.Node), false, nil)
			return err
		})
		if err != nil {
			return rec, err
		}
		s.commit(&c)
		return rec, nil
	}
	raw, _ := json.Marshal(cancelRequest{Epoch: s.epoch, ID: id})
	callCtx, cancel := context.WithTimeout(ctx, s.t.CallTimeout)
	defer cancel()
	answer, err := s.node.Call(callCtx, rec.Node, MethodCancel, raw)
	if err != nil {
		return rec, fmt.Errorf("%w: node %q could not be reached (%v), so the cancel was not sent; the message stays %s there. "+
			"Try again when cluster_peers lists the node", ErrUnreachable, rec.Node, err, rec.State)
	}
	var resp cancelResponse
	if err := json.Unmarshal(answer, &resp); err != nil {
		return rec, fmt.Errorf("node %q answered the cancel with something unreadable: %w", rec.Node, err)
	}
	if resp.State.rank() >= 0 {
		var c change
		err := s.st.update(func(tx *bolt.Tx) error {
			if !getJSON(tx.Bucket(bucketOut), []byte(id), &rec) {
				return nil
			}
			text := ""
			if resp.State.Final() {
				text = resp.Text
			}
			_, err := c.advance(tx, &rec, resp.State, text, false, nil)
			return err
		})
		if err != nil {
			return rec, err
		}
		s.commit(&c)
	}
	if !rec.State.Final() && resp.Text != "" {
		rec.Text = resp.Text
	}
	return rec, nil
}
