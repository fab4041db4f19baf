package delivery

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
)

// noticeLoop hands finished tasks to the sessions that sent them, one at a
// time, retrying failures with backoff (from Timing.RetryMin up to five
// minutes) until Timing.NoticeAttempts have failed. Pending notices are on
// disk, so a restart picks them up; a hand-over cut off by a crash is made
// again, so a session may see a notice twice, never none while attempts
// remain.
func (s *Service) noticeLoop() {
	defer s.wg.Done()
	if s.cfg.Notifier == nil {
		<-s.ctx.Done()
		return
	}
	retryAt := map[string]time.Time{}
	for {
		var ids []string
		err := s.st.view(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketNotify).ForEach(func(k, _ []byte) error {
				ids = append(ids, string(k))
				return nil
			})
		})
		if err != nil {
			s.log.Warn("delivery: reading notices", "err", err)
		}
		var soonest time.Time
		for _, id := range ids {
			if s.ctx.Err() != nil {
				return
			}
			if at, ok := retryAt[id]; ok && time.Now().Before(at) {
				if soonest.IsZero() || at.Before(soonest) {
					soonest = at
				}
				continue
			}
			if at, ok := s.notifyOne(id); ok {
				retryAt[id] = at
				if soonest.IsZero() || at.Before(soonest) {
					soonest = at
				}
			} else {
				delete(retryAt, id)
			}
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !soonest.IsZero() {
			t = time.NewTimer(time.Until(soonest))
			timer = t.C
		}
		select {
		case <-s.notifyWake:
		case <-timer:
		case <-s.ctx.Done():
		}
		if t != nil {
			t.Stop()
		}
		if s.ctx.Err() != nil {
			return
		}
	}
}

// notifyOne makes one hand-over; retry is set when it is to be tried again
// at that time.
func (s *Service) notifyOne(id string) (retry time.Time, again bool) {
	rec, err := s.Get(id)
	if err != nil || rec.Notice != NoticePending {
		s.st.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketNotify).Delete([]byte(id)) })
		return time.Time{}, false
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.t.NoticeTimeout)
	nerr := s.cfg.Notifier.Notify(ctx, rec)
	cancel()
	if nerr != nil && s.ctx.Err() != nil {
		return time.Time{}, false // stopping: tried again after the restart
	}
	err = s.st.update(func(tx *bolt.Tx) error {
		if !getJSON(tx.Bucket(bucketOut), []byte(id), &rec) || rec.Notice != NoticePending {
			return tx.Bucket(bucketNotify).Delete([]byte(id))
		}
		rec.Notices++
		switch {
		case nerr == nil:
			rec.Notice, rec.NoticeError = NoticeSent, ""
		case rec.Notices >= s.t.NoticeAttempts:
			rec.Notice, rec.NoticeError = NoticeFailed, nerr.Error()
		default:
			rec.NoticeError = nerr.Error()
		}
		if rec.Notice != NoticePending {
			if err := tx.Bucket(bucketNotify).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return putJSON(tx.Bucket(bucketOut), []byte(id), &rec)
	})
	if err != nil {
		s.log.Warn("delivery: recording a notice", "id", id, "err", err)
	}
	if nerr == nil || rec.Notice != NoticePending {
		if nerr != nil {
			s.log.Warn("delivery: gave up handing a finished task to its session", "id", id, "session", rec.Session, "err", nerr)
		}
		return time.Time{}, false
	}
	s.log.Info("delivery: could not hand a finished task to its session; will retry", "id", id, "err", nerr)
	backoff := s.t.RetryMin << min(rec.Notices, 20)
	return time.Now().Add(jitter(min(backoff, 5*time.Minute))), true
}
