package campaign

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/store"
)

// poolIdle is how long the payout pool waits before it looks for received
// awards again after finding none: the writer records awards in batches,
// so a shorter wait mostly finds nothing.
const poolIdle = 100 * time.Millisecond

// newLimiter is the bound of one process's transfer calls: rate per second,
// 0 for none. Its burst of one call (or the rate, if higher) spreads the
// calls rather than sending a second's worth at once.
func newLimiter(perSecond float64) *rate.Limiter {
	if perSecond <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(1, int(math.Ceil(perSecond/10))))
}

// async reports whether grabs answer from Redis and the pool pays.
func (s *Service) async() bool { return s.cfg.PayoutMode != engine.PayoutSync }

// RunPayoutPool is the payout pool of PayoutAsync mode: one claimer takes
// up to PayoutWorkers received awards at a time from MySQL (ClaimReceived,
// so the pools of every process share them without overlap) and hands them
// to PayoutWorkers workers, which drive each 7 -> 4 as the sweeper does. An
// award whose call fails, or that a stop leaves claimed, stays transferring
// for the sweeper. Idle, the pool asks MySQL once per poolIdle, not once per
// worker. It returns when ctx ends, at once without a transfer service or in
// PayoutSync mode.
func (s *Service) RunPayoutPool(ctx context.Context) error {
	if s.xfer == nil || !s.async() {
		return nil
	}
	claimed := make(chan store.Award)
	var wg sync.WaitGroup
	for range s.cfg.PayoutWorkers {
		wg.Go(func() {
			for row := range claimed {
				s.payClaimed(ctx, row)
			}
		})
	}
	defer wg.Wait()
	defer close(claimed)
	failures := 0 // claims failed in a row: an outage is logged as it starts, then every 50th try (5 s)
	for ctx.Err() == nil {
		rows, err := s.db.ClaimReceived(ctx, s.cfg.PayoutWorkers, s.clock.Now().UTC())
		switch {
		case err == nil:
			failures = 0
		case ctx.Err() == nil:
			if failures++; failures%50 == 1 {
				s.log.WarnContext(ctx, "payout pool: claim failed", "failures", failures, "err", err)
			}
		}
		for _, row := range rows {
			select {
			case claimed <- row:
			case <-ctx.Done():
				return nil
			}
		}
		if len(rows) == 0 || err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(poolIdle):
			}
		}
	}
	return nil
}

// PayReceived claims up to limit received awards and pays each out; it
// answers how many it claimed. A failed transfer leaves its award
// transferring for the sweeper, and is not an error here.
func (s *Service) PayReceived(ctx context.Context, limit int) (int, error) {
	rows, err := s.db.ClaimReceived(ctx, limit, s.clock.Now().UTC())
	if err != nil {
		return 0, err
	}
	for _, row := range rows {
		s.payClaimed(ctx, row)
	}
	return len(rows), nil
}

// payClaimed drives one award this worker moved to transferring.
func (s *Service) payClaimed(ctx context.Context, row store.Award) {
	if h := s.hooks.afterTransferring; h != nil {
		if err := h(ctx, row); err != nil {
			return
		}
	}
	if _, err := s.transferAward(ctx, row); err != nil && !errors.Is(err, engine.ErrPayoutInProgress) {
		s.log.WarnContext(ctx, "payout pool: award left transferring", "out_trade_no", row.OutTradeNo, "err", err)
	}
}
