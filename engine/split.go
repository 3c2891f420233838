package engine

import "fmt"

// Limits bound a packet. The defaults follow the original design: at most
// 100 shares, each 0.01 to 200.00.
type Limits struct {
	MaxShares int
	MinShare  int64 // fen
	MaxShare  int64 // fen
}

// DefaultLimits are the product's limits.
var DefaultLimits = Limits{MaxShares: 100, MinShare: 1, MaxShare: 20000}

func (l Limits) check(total int64, n int) error {
	if n < 1 || n > l.MaxShares {
		return fmt.Errorf("%w: count must be 1..%d", ErrInvalidArgument, l.MaxShares)
	}
	if total < int64(n)*l.MinShare || total > int64(n)*l.MaxShare {
		return fmt.Errorf("%w: each share must be %s..%s", ErrInvalidArgument, FormatAmount(l.MinShare), FormatAmount(l.MaxShare))
	}
	return nil
}

// SplitLucky splits total fen into n shares by the double-mean rule: each
// share is uniform in [1, 2 × mean of what is left − 1] fen, narrowed so the
// rest can still respect the limits, and the last takes what is left. The
// shares are then shuffled so no position is favoured. The sum is exact.
func SplitLucky(r Rand, total int64, n int, l Limits) ([]int64, error) {
	if err := l.check(total, n); err != nil {
		return nil, err
	}
	shares := make([]int64, n)
	remaining := total
	for i := 0; i < n-1; i++ {
		left := int64(n - i) // shares still to draw, this one included
		lo := max(l.MinShare, remaining-(left-1)*l.MaxShare)
		hi := min(l.MaxShare, 2*remaining/left-1, remaining-(left-1)*l.MinShare)
		hi = max(hi, lo)
		shares[i] = lo + r.Int64N(hi-lo+1)
		remaining -= shares[i]
	}
	shares[n-1] = remaining
	r.Shuffle(n, func(i, j int) { shares[i], shares[j] = shares[j], shares[i] })
	return shares, nil
}

// SplitEqual gives n shares of perShare fen each.
func SplitEqual(perShare int64, n int, l Limits) ([]int64, error) {
	if err := l.check(perShare*int64(n), n); err != nil {
		return nil, err
	}
	if perShare < l.MinShare || perShare > l.MaxShare {
		return nil, fmt.Errorf("%w: each share must be %s..%s", ErrInvalidArgument, FormatAmount(l.MinShare), FormatAmount(l.MaxShare))
	}
	shares := make([]int64, n)
	for i := range shares {
		shares[i] = perShare
	}
	return shares, nil
}

// SplitCampaign pre-splits a campaign's budget into count awards, each
// within [awardMin, awardMax] fen, by SplitLucky's double-mean rule: the sum
// is exact to the fen and the order is shuffled. A rule that cannot hold the
// budget (count × min above it, count × max below it) is refused.
func SplitCampaign(r Rand, budget int64, count int, awardMin, awardMax int64) ([]int64, error) {
	switch {
	case count < 1 || count > MaxCampaignAwards:
		return nil, fmt.Errorf("%w: award_count must be 1..%d", ErrInvalidArgument, MaxCampaignAwards)
	case awardMin < 1 || awardMax < awardMin:
		return nil, fmt.Errorf("%w: award_min must be at least 0.01 and award_max at least award_min", ErrInvalidArgument)
	case int64(count)*awardMin > budget:
		return nil, fmt.Errorf("%w: award_count × award_min (%s) is more than the budget %s", ErrInvalidArgument,
			FormatAmount(int64(count)*awardMin), FormatAmount(budget))
	case int64(count)*awardMax < budget:
		return nil, fmt.Errorf("%w: award_count × award_max (%s) is less than the budget %s", ErrInvalidArgument,
			FormatAmount(int64(count)*awardMax), FormatAmount(budget))
	}
	return SplitLucky(r, budget, count, Limits{MaxShares: count, MinShare: awardMin, MaxShare: awardMax})
}
