package campaign_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/transfersim"
	"github.com/grab-engine/grab/lua"
)

// soakGrabs is how many grabs TestAsyncPayoutSoak makes (about 18 s on
// two shared cores).
const soakGrabs = 10_000

// Must-show: n users each win one of n awards in PayoutAsync mode while the
// transfer service fails half its calls. Every answer is an award Redis
// already holds for that user (the script's answer, not MySQL's), received
// with no error; the writer records the awards, the payout pool pays them,
// the sweeper finishes what the faults left transferring, and each award is
// transferred exactly once (the service's records against MySQL).
func TestAsyncPayoutSoak(t *testing.T) {
	sim, x := startSim(t, transfersim.Faults{ErrorRate: 0.5})
	e, _ := enginetest.Real(t).WithTransfer(x, func(c *engine.Config) {
		c.PayoutMode, c.PayoutMaxAttempts, c.PayoutWorkers = engine.PayoutAsync, 1000, 16
	})
	n := soakGrabs
	budget := int64(n) * 50 // fen: awards of 0.01..1.00
	c := e.NewCampaign(t, budget, n, 1, 100, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopWriter := e.RunWriter()
	pool := make(chan error, 1)
	go func() { pool <- e.Campaigns.RunPayoutPool(ctx) }()

	start := time.Now()
	won := grabAsync(e, t, c.ID, enginetest.Users(1, n))
	took := time.Since(start)
	var sum int64
	for _, a := range won {
		sum += a.Amount
	}
	if len(won) != n || sum != budget {
		t.Fatalf("%d awards won, Σ %d; want %d, Σ %d", len(won), sum, n, budget)
	}
	enginetest.WaitFor(t, "the writer records and the pool claims every award", func() bool {
		counts, err := e.DB.PayoutCounts(ctx, c.ID)
		return err == nil && counts[campaign.PayoutReceived] == 0 &&
			counts[campaign.PayoutTransferring]+counts[campaign.PayoutTransferred]+counts[campaign.PayoutNeedsAttention] == n
	})
	cancel()
	if err := <-pool; err != nil {
		t.Fatal(err)
	}
	stopWriter()
	counts, _ := e.DB.PayoutCounts(context.Background(), c.ID)
	sweeps := settlePayouts(e, t, c.ID)
	auditPayouts(e, t, sim, c.ID, n)
	t.Logf("%d async grabs in %v (%.0f/s); the pool left %d transferring, settled in %d sweeps",
		n, took, float64(n)/took.Seconds(), counts[campaign.PayoutTransferring], sweeps)
}

// grabAsync grabs campaign cp once for each user, 64 at a time, and checks
// each answer at once against Redis: a received award, no error, that the
// campaign's awarded hash already gives to that user with that amount.
func grabAsync(e *enginetest.Env, t *testing.T, cp int64, users []int64) map[int64]campaign.Award {
	t.Helper()
	keys := e.Keys.Campaign(cp)
	var mu sync.Mutex
	won := map[int64]campaign.Award{}
	work := make(chan int64)
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for u := range work {
				ctx := context.Background()
				a, err := e.Campaigns.GrabCampaign(ctx, cp, u)
				if err != nil || a.Payout != campaign.PayoutReceived || a.UserID != u || a.Repeat {
					t.Errorf("user %d: %+v, %v", u, a, err)
					continue
				}
				held, ok, err := lua.CampaignAward(ctx, e.Redis, keys, a.Seq)
				if err != nil || !ok || held.UserID != u || held.Amount != a.Amount {
					t.Errorf("user %d answered award %d (%d fen) that Redis holds as %+v, %v, %v", u, a.Seq, a.Amount, held, ok, err)
				}
				mu.Lock()
				won[u] = a
				mu.Unlock()
			}
		})
	}
	for _, u := range users {
		work <- u
	}
	close(work)
	wg.Wait()
	return won
}

// inModes runs f once in each payout mode, as subtests named after it;
// mode sets it in an engine's configuration.
func inModes(t *testing.T, f func(t *testing.T, async bool, mode func(*engine.Config))) {
	for _, m := range []string{engine.PayoutSync, engine.PayoutAsync} {
		t.Run(m, func(t *testing.T) {
			f(t, m == engine.PayoutAsync, func(c *engine.Config) { c.PayoutMode = m })
		})
	}
}

// payRecorded waits until MySQL holds want awards of campaign cp (a writer
// must be running, or have drained them), then pays every received award as
// the payout pool would, until none is left to claim.
func payRecorded(e *enginetest.Env, t *testing.T, cp int64, want int) {
	t.Helper()
	ctx := context.Background()
	enginetest.WaitFor(t, "the writer records the awards", func() bool {
		rows, err := e.DB.CampaignAwards(ctx, cp)
		return err == nil && len(rows) == want
	})
	for {
		n, err := e.Campaigns.PayReceived(ctx, 50)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// paidGrab is a grab as the sync mode answers it: in async mode, the grab's
// answer, then the writer's record and the pool's payout of it, answered as
// the award's row then reads (a *PayoutPendingError unless transferred).
func paidGrab(e *enginetest.Env, t *testing.T, async bool, cp, user int64) (campaign.Award, error) {
	t.Helper()
	ctx := context.Background()
	a, err := e.Campaigns.GrabCampaign(ctx, cp, user)
	if !async || err != nil {
		return a, err
	}
	if a.Payout != campaign.PayoutReceived {
		t.Fatalf("async grab answered %+v", a)
	}
	stop := e.RunWriter()
	enginetest.WaitFor(t, "the writer records the award", func() bool {
		_, err := e.DB.Award(ctx, cp, a.Seq)
		return err == nil
	})
	stop()
	for {
		n, err := e.Campaigns.PayReceived(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	row, err := e.DB.Award(ctx, cp, a.Seq)
	if err != nil {
		t.Fatal(err)
	}
	a.Payout = row.Status
	if row.Status != campaign.PayoutTransferred {
		return a, &campaign.PayoutPendingError{Award: a}
	}
	return a, nil
}
