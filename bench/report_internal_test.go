package bench

import "testing"

// A rate under 10 a second keeps two significant digits: -transfer-rate 0.5
// must not read as calls/s "1 (0.5)", over its own limit. From 10 up, whole
// numbers.
func TestPayoutColumns(t *testing.T) {
	run := func(payouts int, calls int64, windowMs float64, rate *float64) RunReport {
		perSec := float64(payouts) / (windowMs / 1000)
		return RunReport{Payouts: &payouts, TransferCalls: &calls, PayoutWindowMs: &windowMs, PayoutsPerSec: &perSec,
			TransferRate: rate}
	}
	half, none := 0.5, 0.0
	for _, tc := range []struct {
		name string
		run  RunReport
		want string
	}{
		{"tiny rate", run(5, 5, 8000, &half), "0.62\t0.62 (0.5)\t"},
		{"under one", run(1, 3, 4000, &half), "0.25\t0.75 (0.5)\t"},
		{"under ten", run(30, 45, 5000, &none), "6\t9 (none)\t"},
		{"a fraction under ten", run(38, 49, 5000, &none), "7.6\t9.8 (none)\t"},
		{"from ten", run(169, 262, 1000, &none), "169\t262 (none)\t"},
		{"no limiter", run(20, 40, 2000, nil), "10\t20 (none)\t"},
		{"nothing applied", RunReport{}, "-\t-\t"},
	} {
		if got := payoutColumns(tc.run); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
