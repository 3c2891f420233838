package campaign_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/campaign"
)

// The lucky split hands out exactly the total, in exactly n shares, each
// within the limits, for any total and count the limits allow.
func TestSplit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	check := func(budget int64, count int, lo, hi int64) {
		t.Helper()
		awards, err := campaign.Split(r, budget, count, lo, hi)
		if err != nil || len(awards) != count {
			t.Fatalf("Split(%d, %d, %d, %d): %d awards, %v", budget, count, lo, hi, len(awards), err)
		}
		var sum int64
		for _, a := range awards {
			if a < lo || a > hi {
				t.Fatalf("Split(%d, %d, %d, %d): award %d", budget, count, lo, hi, a)
			}
			sum += a
		}
		if sum != budget {
			t.Fatalf("Split(%d, %d, %d, %d): sum %d", budget, count, lo, hi, sum)
		}
	}
	check(100_000, 2_000, 1, 100)          // the must-show campaign
	check(2_000, 2_000, 1, 100)            // every award the minimum
	check(200_000, 2_000, 1, 100)          // every award the maximum
	check(10_000_000, 100_000, 50, 10_000) // the largest campaign
	check(7, 1, 7, 7)
	for i := 0; i < 500; i++ {
		count := 1 + r.IntN(300)
		lo := 1 + r.Int64N(50)
		hi := lo + r.Int64N(500)
		check(int64(count)*lo+r.Int64N(int64(count)*(hi-lo)+1), count, lo, hi)
	}
	for _, c := range []struct {
		budget  int64
		count   int
		lo, hi  int64
		message string
	}{
		{100, 101, 1, 10, "more than the budget"}, // 101 × 0.01 > 1.00
		{100, 9, 1, 11, "less than the budget"},   // 9 × 0.11 < 1.00
		{100, 0, 1, 100, "award_count"},
		{100, campaign.MaxAwards + 1, 1, 100, "award_count"},
		{100, 10, 0, 100, "award_min"},
		{100, 10, 20, 10, "award_max"},
	} {
		if _, err := campaign.Split(r, c.budget, c.count, c.lo, c.hi); !errors.Is(err, engine.ErrInvalidArgument) ||
			!strings.Contains(err.Error(), c.message) {
			t.Errorf("Split(%d, %d, %d, %d) = %v, want %q", c.budget, c.count, c.lo, c.hi, err, c.message)
		}
	}
}
