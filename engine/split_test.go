package engine_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/grab-engine/grab/engine"
)

// The lucky split hands out exactly the total, in exactly n shares, each
// within the limits, for any total and count the limits allow.
func TestSplitLuckyProperties(t *testing.T) {
	l := engine.DefaultLimits
	r := rand.New(rand.NewPCG(1, 2))
	check := func(total int64, n int) {
		t.Helper()
		shares, err := engine.SplitLucky(r, total, n, l)
		if err != nil {
			t.Fatalf("SplitLucky(%d, %d): %v", total, n, err)
		}
		if len(shares) != n {
			t.Fatalf("SplitLucky(%d, %d): %d shares", total, n, len(shares))
		}
		var sum int64
		for _, s := range shares {
			if s < l.MinShare || s > l.MaxShare {
				t.Fatalf("SplitLucky(%d, %d): share %d outside [%d, %d]", total, n, s, l.MinShare, l.MaxShare)
			}
			sum += s
		}
		if sum != total {
			t.Fatalf("SplitLucky(%d, %d): sum %d", total, n, sum)
		}
	}
	// The edges: one fen each, the cap each, one share, the most shares.
	for _, n := range []int{1, 2, 3, 99, 100} {
		check(int64(n)*l.MinShare, n)
		check(int64(n)*l.MaxShare, n)
		check(int64(n)*l.MaxShare-1, n)
		check(int64(n)*l.MinShare+1, n)
	}
	for range 20000 {
		n := 1 + r.IntN(l.MaxShares)
		lo, hi := int64(n)*l.MinShare, int64(n)*l.MaxShare
		check(lo+r.Int64N(hi-lo+1), n)
	}
}

// No position is favoured: over many splits of 100.00 into 10 shares, every
// position has the same mean (10.00) and the same spread. The unshuffled
// double-mean rule has equal means too, but its first share never exceeds
// 19.99 while its last varies the most, so the spread is what catches it.
func TestSplitLuckyPositionsUnbiased(t *testing.T) {
	const runs, total, n = 20000, 10000, 10
	r := rand.New(rand.NewPCG(42, 7))
	var sums, sqs [n]float64
	for range runs {
		shares, err := engine.SplitLucky(r, total, n, engine.DefaultLimits)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range shares {
			sums[i] += float64(s)
			sqs[i] += float64(s) * float64(s)
		}
	}
	const mean = total / n
	var sds [n]float64
	var sdAll float64
	for i := range n {
		m := sums[i] / runs
		sds[i] = math.Sqrt(sqs[i]/runs - m*m)
		sdAll += sds[i] / n
		// 4 standard errors: about 2% of the mean here.
		if tol := 4 * sds[i] / math.Sqrt(runs); math.Abs(m-mean) > tol {
			t.Errorf("position %d: mean %.2f fen, want %d ± %.2f", i, m, mean, tol)
		}
	}
	for i, sd := range sds {
		// The standard error of a standard deviation is about sd/√(2·runs),
		// 0.5% here; 5% leaves room and still catches a positional pattern.
		if math.Abs(sd-sdAll) > 0.05*sdAll {
			t.Errorf("position %d: spread %.1f fen, the positions average %.1f", i, sd, sdAll)
		}
	}
}

func TestSplitEqual(t *testing.T) {
	for _, c := range []struct {
		per int64
		n   int
	}{{1, 1}, {1, 100}, {20000, 100}, {888, 8}, {20000, 1}} {
		shares, err := engine.SplitEqual(c.per, c.n, engine.DefaultLimits)
		if err != nil {
			t.Fatalf("SplitEqual(%d, %d): %v", c.per, c.n, err)
		}
		if len(shares) != c.n {
			t.Fatalf("SplitEqual(%d, %d): %d shares", c.per, c.n, len(shares))
		}
		for _, s := range shares {
			if s != c.per {
				t.Fatalf("SplitEqual(%d, %d) = %v", c.per, c.n, shares)
			}
		}
	}
}

func TestSplitRejectsOutOfLimits(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	lucky := []struct {
		name  string
		total int64
		n     int
	}{
		{"no shares", 100, 0},
		{"negative count", 100, -1},
		{"101 shares", 10100, 101},
		{"less than a fen each", 9, 10},
		{"zero total", 0, 1},
		{"negative total", -100, 1},
		{"share over 200.00", 20001, 1},
		{"shares over 200.00 on average", 100*20000 + 1, 100},
	}
	for _, c := range lucky {
		if _, err := engine.SplitLucky(r, c.total, c.n, engine.DefaultLimits); !errors.Is(err, engine.ErrInvalidArgument) {
			t.Errorf("SplitLucky %s (%d, %d): err = %v, want ErrInvalidArgument", c.name, c.total, c.n, err)
		}
	}
	equal := []struct {
		name string
		per  int64
		n    int
	}{
		{"no shares", 100, 0},
		{"101 shares", 100, 101},
		{"zero per share", 0, 5},
		{"share over 200.00", 20001, 2},
		// perShare × n wraps to 100 in int64; the per-share bound must still reject it.
		{"overflowing product", 1<<62 + 25, 4},
	}
	for _, c := range equal {
		if _, err := engine.SplitEqual(c.per, c.n, engine.DefaultLimits); !errors.Is(err, engine.ErrInvalidArgument) {
			t.Errorf("SplitEqual %s (%d, %d): err = %v, want ErrInvalidArgument", c.name, c.per, c.n, err)
		}
	}
}

// A campaign's split: exactly the budget in exactly count awards, each within
// the rule's [min, max], at the edges and at random; rules that cannot hold
// the budget are refused.
