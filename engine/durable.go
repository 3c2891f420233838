package engine

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// WaitDurable waits until every event the scripts wrote before the call has
// been taken by a writer (this process's or another's): applied to the
// store, or parked in a dead-letter stream for a person. An embedder reads
// the store after it; a grab's answer comes from Redis before that. It
// polls every 10 ms and returns ctx's error if ctx ends first, or Redis's.
func (e *Engine) WaitDurable(ctx context.Context) error {
	marks := map[string]string{} // stream → its last event when called
	for shard := range e.keys.Shards {
		stream := e.keys.Events(shard)
		last, err := e.rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
		if err != nil {
			return err
		}
		if len(last) > 0 {
			marks[stream] = last[0].ID
		}
	}
	for {
		for stream, mark := range marks {
			oldest, err := e.writer.oldestUnacked(ctx, stream)
			if err != nil {
				return err
			}
			if oldest == "" || idBefore(mark, oldest) {
				delete(marks, stream)
			}
		}
		if len(marks) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// idBefore reports whether stream id a comes before b ("ms-seq" each).
func idBefore(a, b string) bool {
	am, as := splitID(a)
	bm, bs := splitID(b)
	return am < bm || am == bm && as < bs
}

func splitID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}
