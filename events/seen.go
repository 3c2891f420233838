package events

import (
	"context"
	"sync"
)

// Seen remembers which event ids a consumer has handled, so that an event
// delivered again is dropped. Seen answers whether id was marked; Mark
// records it after the handler succeeded. Errors from either leave the event
// unacked (it is delivered again later).
//
// A consumer whose effect must happen once keeps its ids in its own database,
// marked in the same transaction as the effect (see the package doc); its
// Mark may then do nothing.
type Seen interface {
	Seen(ctx context.Context, id string) (bool, error)
	Mark(ctx context.Context, id string) error
}

// DefaultSeenSize is how many ids NewMemorySeen keeps when told 0.
const DefaultSeenSize = 100_000

// MemorySeen is a bounded in-memory Seen: it keeps the newest size ids marked
// and forgets the oldest first. It forgets everything on restart, so it only
// suits effects that may repeat then (printing, best-effort notices); it is
// safe for concurrent use.
type MemorySeen struct {
	mu   sync.Mutex
	ids  map[string]struct{}
	ring []string // the ids in the order marked; next overwrites the oldest
	next int
}

// NewMemorySeen returns a MemorySeen that keeps size ids (DefaultSeenSize
// when size <= 0).
func NewMemorySeen(size int) *MemorySeen {
	if size <= 0 {
		size = DefaultSeenSize
	}
	return &MemorySeen{ids: make(map[string]struct{}, size), ring: make([]string, 0, size)}
}

// Seen reports whether id is among the ids kept; it never fails.
func (s *MemorySeen) Seen(_ context.Context, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[id]
	return ok, nil
}

// Mark keeps id, forgetting the oldest id when full; it never fails.
func (s *MemorySeen) Mark(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[id]; ok {
		return nil
	}
	if len(s.ring) < cap(s.ring) {
		s.ring = append(s.ring, id)
	} else {
		delete(s.ids, s.ring[s.next])
		s.ring[s.next] = id
		s.next = (s.next + 1) % len(s.ring)
	}
	s.ids[id] = struct{}{}
	return nil
}

// Len is how many ids are kept.
func (s *MemorySeen) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}
