package delivery

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// maxFinalRecords bounds the finished records kept for cluster_tasks; the
// oldest go first.
const maxFinalRecords = 20000

// load takes up what the file holds at start: the outbox queue counts, the
// inbox's waiting messages, the nodes seen, and runs that a stop cut off.
func (s *Service) load() error {
	var cut []inEntry
	err := s.st.view(func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		err := tx.Bucket(bucketOutQ).ForEach(func(k, v []byte) error {
			var rec Record
			if getJSON(out, v, &rec) && rec.State == Queued {
				s.queued[rec.Node]++
				s.totalQueued++
			}
			return nil
		})
		if err != nil {
			return err
		}
		in := tx.Bucket(bucketIn)
		err = tx.Bucket(bucketInQ).ForEach(func(k, v []byte) error {
			stream, seq, ok := splitSeqKey(k)
			var e inEntry
			if ok && getJSON(in, v, &e) && e.State == Delivered {
				s.in.add(pendingRef{stream: stream, seq: seq, entry: string(v)})
				s.in.waiting++
			}
			return nil
		})
		if err != nil {
			return err
		}
		// A run recorded as started that never recorded its end was cut
		// off by a crash: it is not run again.
		err = in.ForEach(func(k, v []byte) error {
			var e inEntry
			if json.Unmarshal(v, &e) == nil && e.State == Started {
				cut = append(cut, e)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketDir).ForEach(func(k, v []byte) error {
			var n seenNode
			if json.Unmarshal(v, &n) == nil {
				s.dir[string(k)] = &n
			}
			return nil
		})
	})
	if err != nil || len(cut) == 0 {
		return err
	}
	s.log.Warn("delivery: runs cut off by the last stop are reported as failed", "runs", len(cut))
	return s.st.update(func(tx *bolt.Tx) error {
		for _, e := range cut {
			e.State = Failed
			e.Outcome = &Outcome{Text: fmt.Sprintf("node %q stopped while it ran (a crash or a kill); it may have partly run, "+
				"and it is not run again", s.self), IsError: true}
			if err := putReport(tx, &e); err != nil {
				return err
			}
			if err := putJSON(tx.Bucket(bucketIn), e.key(), &e); err != nil {
				return err
			}
		}
		return nil
	})
}

// sweepLoop expires what waited too long, on both sides, and forgets
// finished records past their retention.
func (s *Service) sweepLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.t.Sweep)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-s.ctx.Done():
			return
		}
		if err := s.sweep(time.Now()); err != nil {
			s.log.Warn("delivery: sweep failed", "err", err)
		}
	}
}

func (s *Service) sweep(now time.Time) error {
	var queued []string
	var waiting []pendingRef
	var old [][]byte
	finals := 0
	err := s.st.view(func(tx *bolt.Tx) error {
		out := tx.Bucket(bucketOut)
		c := tx.Bucket(bucketOutQ).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var rec Record
			if getJSON(out, v, &rec) && now.After(rec.Expires) {
				queued = append(queued, rec.ID)
			}
		}
		in := tx.Bucket(bucketIn)
		c = tx.Bucket(bucketInQ).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var e inEntry
			if stream, seq, ok := splitSeqKey(k); ok && getJSON(in, v, &e) && e.State == Delivered && now.After(e.Expires) {
				waiting = append(waiting, pendingRef{stream: stream, seq: seq, entry: string(v)})
			}
		}
		// Ids sort by creation time: the oldest finished records first.
		c = out.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var rec Record
			if json.Unmarshal(v, &rec) != nil || !rec.State.Final() || rec.Notice == NoticePending {
				continue
			}
			finals++
			if now.Sub(rec.Updated) > s.t.Retention {
				old = append(old, append([]byte(nil), k...))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(queued) > 0 {
		if err := s.expireQueued(queued); err != nil {
			return err
		}
	}
	if len(waiting) > 0 {
		if err := s.expireWaiting(waiting, now); err != nil {
			return err
		}
	}
	if over := finals - len(old) - maxFinalRecords; over > 0 || len(old) > 0 {
		return s.st.update(func(tx *bolt.Tx) error {
			out := tx.Bucket(bucketOut)
			for _, k := range old {
				if err := out.Delete(k); err != nil {
					return err
				}
			}
			c := out.Cursor()
			for k, v := c.First(); k != nil && over > 0; k, v = c.Next() {
				var rec Record
				if json.Unmarshal(v, &rec) == nil && rec.State.Final() && rec.Notice != NoticePending {
					if err := c.Delete(); err != nil {
						return err
					}
					over--
				}
			}
			return nil
		})
	}
	return nil
}

// expireWaiting expires inbound messages that waited past their time to
// live without starting.
func (s *Service) expireWaiting(refs []pendingRef, now time.Time) error {
	var gone []pendingRef
	from := map[string]bool{}
	err := s.st.update(func(tx *bolt.Tx) error {
		gone = gone[:0]
		in := tx.Bucket(bucketIn)
		for _, r := range refs {
			var e inEntry
			if !getJSON(in, []byte(r.entry), &e) || e.State != Delivered || !now.After(e.Expires) {
				continue
			}
			if err := tx.Bucket(bucketInQ).Delete(seqKey([]byte(r.stream), r.seq)); err != nil {
				return err
			}
			e.State, e.Payload = Expired, nil
			e.Outcome = &Outcome{Text: fmt.Sprintf("it did not start within its time to live: agent %q on node %q was busy", e.Agent, s.self), IsError: true}
			if err := putReport(tx, &e); err != nil {
				return err
			}
			if err := putJSON(in, e.key(), &e); err != nil {
				return err
			}
			gone = append(gone, r)
			from[e.From] = true
		}
		return nil
	})
	if err != nil || len(gone) == 0 {
		return err
	}
	s.mu.Lock()
	for _, r := range gone {
		s.in.remove(r.stream, r.seq)
	}
	s.in.waiting -= len(gone)
	for f := range from {
		s.rep.kickLocked(f)
	}
	s.mu.Unlock()
	s.inboxChanged()
	return nil
}
