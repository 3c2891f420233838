package outbox

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/grab-engine/grab/event"
)

// fakeStore is an in-memory outbox with the store's contract: a pass
// claims unpublished rows no other pass holds, in seq order, and marks
// the leading ones publish answers.
type fakeStore struct {
	mu   sync.Mutex
	rows []*fakeRow // in seq order
	// crash, when it answers true, makes a pass end as a process killed
	// after its publish and before its mark would: nothing marked.
	crash func() bool
}

type fakeRow struct {
	msg         event.Message
	held        bool
	publishedAt time.Time // zero: unpublished
}

var errCrash = errors.New("killed between the publish and the mark")

// add appends msgs to the outbox, as committed changes would.
func (s *fakeStore) add(msgs ...event.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		s.rows = append(s.rows, &fakeRow{msg: m})
	}
}

func (s *fakeStore) RelayOutbox(ctx context.Context, limit int, publish func(context.Context, []event.Message) (int, error)) (int, error) {
	claimed := s.claim(limit)
	if len(claimed) == 0 {
		return 0, nil
	}
	msgs := make([]event.Message, len(claimed))
	for i, r := range claimed {
		msgs[i] = r.msg
	}
	done, err := publish(ctx, msgs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.crash != nil && s.crash() {
		done, err = 0, errCrash
	}
	for i, r := range claimed {
		r.held = false
		if i < done {
			r.publishedAt = time.Now()
		}
	}
	return done, err
}

func (s *fakeStore) claim(limit int) []*fakeRow {
	s.mu.Lock()
	defer s.mu.Unlock()
	var claimed []*fakeRow
	for _, r := range s.rows {
		if len(claimed) == limit {
			break
		}
		if r.publishedAt.IsZero() && !r.held {
			r.held = true
			claimed = append(claimed, r)
		}
	}
	return claimed
}

func (s *fakeStore) PurgeOutbox(ctx context.Context, before time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var kept []*fakeRow
	for _, r := range s.rows {
		if r.publishedAt.IsZero() || !r.publishedAt.Before(before) {
			kept = append(kept, r)
		}
	}
	n := int64(len(s.rows) - len(kept))
	s.rows = kept
	return n, nil
}

func (s *fakeStore) OutboxStats(ctx context.Context) (int64, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	var oldest time.Time
	for _, r := range s.rows {
		if r.publishedAt.IsZero() {
			if n == 0 {
				oldest = r.msg.At
			}
			n++
		}
	}
	return n, oldest, nil
}

// published answers the ids of the published rows, in seq order.
func (s *fakeStore) published() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, r := range s.rows {
		if !r.publishedAt.IsZero() {
			ids = append(ids, r.msg.ID)
		}
	}
	return ids
}
