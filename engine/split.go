package engine

import (
	"fmt"

	"github.com/grab-engine/grab/engine/money"
)

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
		return fmt.Errorf("%w: each share must be %s..%s", ErrInvalidArgument, money.Format(l.MinShare), money.Format(l.MaxShare))
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
		return nil, fmt.Errorf("%w: each share must be %s..%s", ErrInvalidArgument, money.Format(l.MinShare), money.Format(l.MaxShare))
	}
	shares := make([]int64, n)
	for i := range shares {
		shares[i] = perShare
	}
	return shares, nil
}
