package bench

import (
	"bytes"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"
)

// syncBuffer is a bytes.Buffer the bar's ticker writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The bar's rate counts from when the load starts: 1,000 requests done at
// once show at their first tick (100 ms in) as 10,000/s at most, not as
// 1,000 over the microseconds since the bar's first render.
func TestProgressRateCountsFromTheStart(t *testing.T) {
	var w syncBuffer
	var done atomic.Int64
	stop := progress(&w, EngineEngine, "grabs", 10_000, &done)
	done.Store(1_000)
	rate := regexp.MustCompile(`(\d+) grabs/s`)
	enginetest.WaitFor(t, "the first tick", func() bool { return rate.MatchString(w.String()) })
	stop()
	got, err := strconv.Atoi(rate.FindStringSubmatch(w.String())[1])
	if err != nil || got <= 0 || got > 10_000 {
		t.Fatalf("first tick shows %d grabs/s (%v); want 1..10000:\n%q", got, err, w.String())
	}
}
