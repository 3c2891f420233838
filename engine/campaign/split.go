package campaign

import (
	"fmt"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/money"
)

// Split pre-splits a campaign's budget into count awards, each
// within [awardMin, awardMax] fen, by engine.SplitLucky's double-mean rule: the sum
// is exact to the fen and the order is shuffled. A rule that cannot hold the
// budget (count × min above it, count × max below it) is refused.
func Split(r engine.Rand, budget int64, count int, awardMin, awardMax int64) ([]int64, error) {
	switch {
	case count < 1 || count > MaxAwards:
		return nil, fmt.Errorf("%w: award_count must be 1..%d", engine.ErrInvalidArgument, MaxAwards)
	case awardMin < 1 || awardMax < awardMin:
		return nil, fmt.Errorf("%w: award_min must be at least 0.01 and award_max at least award_min", engine.ErrInvalidArgument)
	case int64(count)*awardMin > budget:
		return nil, fmt.Errorf("%w: award_count × award_min (%s) is more than the budget %s", engine.ErrInvalidArgument,
			money.Format(int64(count)*awardMin), money.Format(budget))
	case int64(count)*awardMax < budget:
		return nil, fmt.Errorf("%w: award_count × award_max (%s) is less than the budget %s", engine.ErrInvalidArgument,
			money.Format(int64(count)*awardMax), money.Format(budget))
	}
	return engine.SplitLucky(r, budget, count, engine.Limits{MaxShares: count, MinShare: awardMin, MaxShare: awardMax})
}
