package bench

import (
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// renders hands each write of the bar to the test; a write the test has no
// room for is dropped, so the bar never waits for it.
type renders chan string

func (r renders) Write(p []byte) (int, error) {
	select {
	case r <- string(p):
	default:
	}
	return len(p), nil
}

// The bar's rate counts from when the load starts: 1,000 requests done at
// once show at their first tick (100 ms in) as 10,000/s at most, not as
// 1,000 over the microseconds since the bar's first render.
func TestProgressRateCountsFromTheStart(t *testing.T) {
	w := make(renders, 64)
	var done atomic.Int64
	stop := progress(w, EngineEngine, "grabs", 10_000, &done)
	defer stop()
	done.Store(1_000)
	rate := regexp.MustCompile(`(\d+) grabs/s`)
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line := <-w:
			m := rate.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if got, err := strconv.Atoi(m[1]); err != nil || got <= 0 || got > 10_000 {
				t.Fatalf("first tick shows %q; want 1..10000 grabs/s", line)
			}
			return
		case <-timeout:
			t.Fatal("the bar never showed a rate")
		}
	}
}
