package campaign_test

import (
	"context"
	"errors"
	"fmt"
	nethttp "net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
	"github.com/grab-engine/grab/store"
)

// startSim serves a transfer service simulator on loopback and returns it
// with the production client of it, as grabd wires them.
func startSim(tb testing.TB, f transfersim.Faults) (*transfersim.Sim, transfer.Service) {
	tb.Helper()
	secret := []byte("transfer-test-secret")
	sim := transfersim.New(secret, f, 1)
	srv := httptest.NewServer(sim)
	tb.Cleanup(srv.Close)
	hc := &nethttp.Client{Transport: &nethttp.Transport{MaxIdleConnsPerHost: 64}}
	tb.Cleanup(hc.CloseIdleConnections)
	return sim, transfer.NewClient(srv.URL, secret, 5*time.Second, hc)
}

// grabOutcomes grabs campaign cp once for each user, all at once, and
// returns the awards won (paid or pending) by user and the error codes.
func grabOutcomes(e *enginetest.Env, t *testing.T, cp int64, users []int64) (won map[int64]campaign.Award, pending int, other map[string]int) {
	t.Helper()
	var mu sync.Mutex
	won, other = map[int64]campaign.Award{}, map[string]int{}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := e.Campaigns.GrabCampaign(context.Background(), cp, u)
			mu.Lock()
			defer mu.Unlock()
			var pe *campaign.PayoutPendingError
			switch {
			case err == nil:
				won[u] = a
			case errors.As(err, &pe):
				won[u] = pe.Award
				pending++
			case errors.Is(err, engine.ErrSoldOut):
				other["SOLD_OUT"]++
			default:
				other[err.Error()]++
			}
		}()
	}
	wg.Wait()
	return won, pending, other
}

// settlePayouts advances the clock past the retry threshold and sweeps
// until no award of cp is received or transferring; it returns the sweeps run.
func settlePayouts(e *enginetest.Env, t *testing.T, cp int64) int {
	t.Helper()
	ctx := context.Background()
	for sweeps := 1; sweeps <= 200; sweeps++ {
		e.Clock.Add(e.Cfg.PayoutRetryAfter + time.Second)
		if _, err := e.Campaigns.SweepPayouts(ctx); err != nil {
			t.Fatal(err)
		}
		counts, err := e.DB.PayoutCounts(ctx, cp)
		if err != nil {
			t.Fatal(err)
		}
		if counts[campaign.PayoutReceived]+counts[campaign.PayoutTransferring] == 0 {
			return sweeps
		}
	}
	t.Fatal("payouts did not settle in 200 sweeps")
	return 0
}

// auditPayouts checks campaign cp after its payouts settled: want awards,
// every one transferred, each out-trade-no applied exactly once by the
// service with the award's user and amount (the simulator's ledger), and
// MySQL's used and accumulated amounts both the sum of the awards. It
// returns that sum.
func auditPayouts(e *enginetest.Env, t *testing.T, sim *transfersim.Sim, cp int64, want int) int64 {
	t.Helper()
	ctx := context.Background()
	e.RunWriter()() // the writer counts the awards against the budget
	rows, err := e.DB.CampaignAwards(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != want {
		t.Fatalf("%d awards, want %d", len(rows), want)
	}
	held := sim.Transfers()
	prefix := fmt.Sprintf("cp%d-", cp)
	var sum, paid int64
	numbers := 0
	for no, rec := range held {
		if strings.HasPrefix(no, prefix) {
			numbers++
			paid += rec.Amount
			if rec.Applied != 1 {
				t.Errorf("%s applied %d times", no, rec.Applied)
			}
		}
	}
	for _, r := range rows {
		sum += int64(r.Amount)
		rec, ok := held[r.OutTradeNo]
		switch {
		case r.Status != campaign.PayoutTransferred:
			t.Errorf("award %d is %s (attempts %d, %q)", r.Seq, r.Status, r.Attempts, r.LastError)
		case !ok:
			t.Errorf("award %d is transferred but the service never applied %s", r.Seq, r.OutTradeNo)
		case rec.UserID != r.UserID || rec.Amount != int64(r.Amount) || rec.TransferID != r.TransferID:
			t.Errorf("award %d: service holds %+v, row %+v", r.Seq, rec, r)
		}
	}
	if numbers != want || paid != sum || sim.MaxApplications() != 1 {
		t.Errorf("service applied %d numbers, %d fen, at most %d times each; want %d numbers, %d fen, once each",
			numbers, paid, sim.MaxApplications(), want, sum)
	}
	c, err := e.DB.Campaign(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	if int64(c.UsedAmount) != sum || int64(c.AccAmount) != sum || c.AwardedCount != want || sum > int64(c.Budget) {
		t.Errorf("used %d, acc %d, awarded %d, budget %d; Σ awards %d over %d", c.UsedAmount, c.AccAmount, c.AwardedCount, c.Budget, sum, want)
	}
	return sum
}

// Must-show 1: 10,000 users grab a 2,000-award campaign at once while the
// transfer service fails half its calls, loses a tenth of the replies of
// requests it handled and handles some transfers twice at once. After the
// sweeper settles, every award is transferred, the service applied each
// out-trade-no exactly once, and Σ transferred = Σ awarded = the budget =
// MySQL's used and accumulated amounts.
func TestCampaignPayoutUnderFaults(t *testing.T) { inModes(t, testCampaignPayoutUnderFaults) }

func testCampaignPayoutUnderFaults(t *testing.T, async bool, mode func(*engine.Config)) {
	sim, x := startSim(t, transfersim.Faults{ErrorRate: 0.5, LoseReplyRate: 0.1, DuplicateRate: 0.05})
	base := enginetest.Real(t)
	// Attempts are unbounded here (a 1-in-2^1000 chance of parking): this
	// test is about settling, TestPayoutParksAfterMaxAttempts about parking.
	e, _ := base.WithTransfer(x, mode, func(c *engine.Config) { c.PayoutMaxAttempts = 1000; c.PayoutWorkers = 16 })
	const budget, awards, users = 100_000, 2_000, 10_000 // 1000.00 in 2,000 awards of 0.01..1.00
	c := e.NewCampaign(t, budget, awards, 1, 100, 1)
	stop := e.RunWriter()

	won, pending, other := grabOutcomes(e, t, c.ID, enginetest.Users(1, users))
	if len(won) != awards || other["SOLD_OUT"] != users-awards || len(other) != 1 {
		t.Fatalf("%d won (%d pending), others %v", len(won), pending, other)
	}
	if async {
		// Every answer came from Redis; the payout pool's calls meet the faults.
		if pending != 0 {
			t.Fatalf("%d async grabs answered pending", pending)
		}
		payRecorded(e, t, c.ID, awards)
		counts, _ := e.DB.PayoutCounts(context.Background(), c.ID)
		pending = counts[campaign.PayoutTransferring]
	}
	if pending == 0 || pending == awards {
		t.Fatalf("%d of %d payouts pending: the faults did not bite, or nothing got through", pending, awards)
	}
	var won64 int64
	seqs := map[int]bool{}
	for u, a := range won {
		won64 += a.Amount
		if a.UserID != u || seqs[a.Seq] || a.Repeat {
			t.Fatalf("award %+v for user %d", a, u)
		}
		seqs[a.Seq] = true
	}
	stop() // the writer drains every award event: none may count twice
	if n := e.Redis.XLen(context.Background(), e.Keys.DeadLetters(e.Keys.Shard(c.ID))).Val(); n != 0 {
		t.Fatalf("the writer parked %d award events", n)
	}
	sweeps := settlePayouts(e, t, c.ID)
	sum := auditPayouts(e, t, sim, c.ID, awards)
	if n, fen := sim.TotalApplied(); sum != budget || won64 != budget || n != awards || fen != budget {
		t.Fatalf("Σ transferred %d, Σ won %d, service moved %d fen in %d transfers; budget %d", sum, won64, fen, n, budget)
	}
	t.Logf("%d awards, %d pending after the grab, settled in %d sweeps; %d applied once each, Σ = %s",
		awards, pending, sweeps, awards, money.Format(sum))

	// A winner's second grab is their award again, paid, in either mode.
	// (A fresh engine: the stopped writer's last lag measurement is stale.)
	e = e.Another(func(d *grab.Deps) { d.Campaigns.Transfer = x }, mode)
	for u := range won {
		a, err := e.Campaigns.GrabCampaign(context.Background(), c.ID, u)
		if err != nil || !a.Repeat || a.Payout != campaign.PayoutTransferred || a.TransferredAt == nil || a.Seq != won[u].Seq {
			t.Fatalf("repeat grab: %+v, %v", a, err)
		}
		break
	}
}

var errCrash = errors.New("crash injected")

// Must-show 2: a crash between "7 committed" and the transfer call, and one
// between the service's success and the 7 -> 4 update, are both settled by
// the sweeper, without a second transfer.
func TestCampaignPayoutCrashPoints(t *testing.T) { inModes(t, testCampaignPayoutCrashPoints) }

func testCampaignPayoutCrashPoints(t *testing.T, async bool, mode func(*engine.Config)) {
	sim, x := startSim(t, transfersim.Faults{})
	e, _ := enginetest.Real(t).WithTransfer(x, mode)
	c := e.NewCampaign(t, 300, 3, 100, 100, 1)
	ctx := context.Background()
	campaign.SetPayoutHooks(e.Campaigns,
		func(_ context.Context, a store.Award) error { // user 1: dies before the call
			if a.UserID == 1 {
				return errCrash
			}
			return nil
		},
		func(_ context.Context, a store.Award) error { // user 2: dies after the service applied it
			if a.UserID == 2 {
				return errCrash
			}
			return nil
		})
	awards := map[int64]campaign.Award{}
	var stop func()
	if async {
		stop = e.RunWriter()
	}
	for u := int64(1); u <= 3; u++ {
		a, err := e.Campaigns.GrabCampaign(ctx, c.ID, u)
		var pe *campaign.PayoutPendingError
		switch {
		case async && err == nil && a.Payout == campaign.PayoutReceived:
		case u == 3 && err == nil && a.Payout == campaign.PayoutTransferred:
		case u < 3 && errors.As(err, &pe) && pe.Award.Payout == campaign.PayoutTransferring:
			a = pe.Award
		default:
			t.Fatalf("user %d: %+v, %v", u, a, err)
		}
		awards[u] = a
	}
	if async {
		// The pool's worker dies where the grab's call would have.
		payRecorded(e, t, c.ID, 3)
		stop()
		for u, want := range map[int64]string{1: campaign.PayoutTransferring, 2: campaign.PayoutTransferring, 3: campaign.PayoutTransferred} {
			if row, err := e.DB.Award(ctx, c.ID, awards[u].Seq); err != nil || row.Status != want {
				t.Fatalf("user %d's award after the pool: %+v, %v; want %s", u, row, err, want)
			}
		}
	}
	no := func(u int64) string { return store.OutTradeNo(c.ID, awards[u].Seq) }
	if sim.Applied(no(1)) != 0 || sim.Attempts(no(1)) != 0 {
		t.Fatal("user 1's transfer was made before the crash point")
	}
	if sim.Applied(no(2)) != 1 {
		t.Fatal("user 2's transfer was not applied before the crash point")
	}
	campaign.SetPayoutHooks(e.Campaigns, nil, nil) // the process restarted

	// Both stay 7 until the threshold; the user is told the payout is under way.
	if s, err := e.Campaigns.SweepPayouts(ctx); err != nil || s.Claimed != 0 {
		t.Fatalf("sweep before the threshold: %+v, %v", s, err)
	}
	if _, err := e.Campaigns.Receive(ctx, c.ID, awards[2].Seq, 2); !errors.Is(err, engine.ErrPayoutInProgress) {
		t.Fatalf("receive of an award in 7: %v", err)
	}
	e.Clock.Add(e.Cfg.PayoutRetryAfter + time.Second)
	if s, err := e.Campaigns.SweepPayouts(ctx); err != nil || s != (campaign.PayoutSweep{Claimed: 2, Transferred: 2}) {
		t.Fatalf("sweep: %+v, %v", s, err)
	}
	auditPayouts(e, t, sim, c.ID, 3)
	// User 1's number: one transfer, the sweeper's. User 2's: only the first;
	// the sweeper's query found it applied.
	if n1, n2 := sim.Attempts(no(1)), sim.Attempts(no(2)); n1 != 1 || n2 != 1 {
		t.Fatalf("transfer calls: user 1 %d, user 2 %d; want 1 and 1", n1, n2)
	}
	if _, err := e.Campaigns.Receive(ctx, c.ID, awards[1].Seq, 1); !errors.Is(err, engine.ErrAwardReceived) {
		t.Fatalf("receive of a transferred award: %v", err)
	}
}

// Must-show 3: two sweepers over the same 300 stuck awards: each award is
// driven by one of them, the service applies no number twice, all end 4.
func TestTwoPayoutSweepers(t *testing.T) { inModes(t, testTwoPayoutSweepers) }

func testTwoPayoutSweepers(t *testing.T, async bool, mode func(*engine.Config)) {
	sim, x := startSim(t, transfersim.Faults{ErrorRate: 1}) // down: every payout is left in 7
	e, _ := enginetest.Real(t).WithTransfer(x, mode)
	const n = 300
	c := e.NewCampaign(t, 3_000, n, 1, 100, 1)
	var stop func()
	if async {
		stop = e.RunWriter()
	}
	won, pending, other := grabOutcomes(e, t, c.ID, enginetest.Users(1, n))
	if async {
		if pending != 0 {
			t.Fatalf("%d async grabs answered pending", pending)
		}
		payRecorded(e, t, c.ID, n)
		stop()
		pending = n
	}
	if len(won) != n || pending != n || len(other) != 0 {
		t.Fatalf("%d won, %d pending, %v", len(won), pending, other)
	}
	sim.SetFaults(transfersim.Faults{Latency: 2 * time.Millisecond}) // up, slow enough for the sweepers to overlap
	e2 := e.Another(func(d *grab.Deps) { d.Campaigns.Transfer = x }, mode)
	e.Clock.Add(e.Cfg.PayoutRetryAfter + time.Second)
	var wg sync.WaitGroup
	sweeps := make([]campaign.PayoutSweep, 2)
	for i, svc := range []*campaign.Service{e.Campaigns, e2.Campaigns} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := svc.SweepPayouts(context.Background())
			if err != nil {
				t.Error(err)
			}
			sweeps[i] = s
		}()
	}
	wg.Wait()
	if sweeps[0].Claimed+sweeps[1].Claimed != n || sweeps[0].Transferred+sweeps[1].Transferred != n {
		t.Fatalf("sweeps %+v", sweeps)
	}
	auditPayouts(e, t, sim, c.ID, n)
	for _, a := range won {
		// The failed call never reached the ledger: one sweeper's call did.
		if calls := sim.Attempts(store.OutTradeNo(c.ID, a.Seq)); calls != 1 {
			t.Fatalf("award %d: %d transfer requests reached the service", a.Seq, calls)
		}
	}
	t.Logf("sweeper 1 drove %d, sweeper 2 drove %d", sweeps[0].Claimed, sweeps[1].Claimed)
}

// Must-show 4: budget exhaustion under concurrent load never overspends:
// exactly award_count winners (some users grab twice at once), Σ awards =
// used = accumulated = the budget to the fen, and a forged award past it is
// parked by the writer without counting.
func TestCampaignBudgetExhaustion(t *testing.T) { inModes(t, testCampaignBudgetExhaustion) }

func testCampaignBudgetExhaustion(t *testing.T, _ bool, mode func(*engine.Config)) {
	sim, x := startSim(t, transfersim.Faults{})
	e, _ := enginetest.Real(t).WithTransfer(x, mode)
	const budget, awards = 12_345, 500
	c := e.NewCampaign(t, budget, awards, 1, 100, 1)
	stop := e.RunWriter()
	users := append(enginetest.Users(1, 3_000), enginetest.Users(1, 200)...) // users 1..200 grab twice at once
	won, _, other := grabOutcomes(e, t, c.ID, users)
	// A user who grabs twice and wins gets the same award on both calls (the
	// second a repeat, or PAYOUT_IN_PROGRESS while the first call transfers).
	twice := 0
	for u := range won {
		if u <= 200 {
			twice++
		}
	}
	if len(won) != awards || other["SOLD_OUT"] != len(users)-awards-twice || len(other) != 1 {
		t.Fatalf("%d won, %v", len(won), other)
	}
	var sum int64
	for _, a := range won {
		sum += a.Amount
	}
	if sum != budget {
		t.Fatalf("Σ won %d, budget %d", sum, budget)
	}
	if _, err := e.Campaigns.GrabCampaign(context.Background(), c.ID, 99_999); !errors.Is(err, engine.ErrSoldOut) {
		t.Fatalf("grab after the last award: %v", err)
	}
	// A forged award: a real share, another user. The writer parks it.
	ctx := context.Background()
	keys := e.Keys.Campaign(c.ID)
	if err := e.Redis.XAdd(ctx, &redis.XAddArgs{Stream: keys.Events, Values: map[string]any{"t": "award", "cp": c.ID, "u": 77_777,
		"seq": 1, "amt": 1, "at": e.Clock.Now().UnixMilli()}}).Err(); err != nil {
		t.Fatal(err)
	}
	stop()
	if n := e.Redis.XLen(ctx, e.Keys.DeadLetters(e.Keys.Shard(c.ID))).Val(); n != 1 {
		t.Fatalf("%d dead letters, want the forged award", n)
	}
	// Nearly every payout completes inline; under a loaded machine a call can
	// outlast its timeout, and the sweeper finishes those, as in production.
	settlePayouts(e, t, c.ID)
	if got := auditPayouts(e, t, sim, c.ID, awards); got != budget {
		t.Fatalf("Σ %d", got)
	}
	v, err := e.Campaigns.GetCampaign(ctx, c.ID)
	if err != nil || v.Status != campaign.SoldOut || v.Remaining != 0 || v.UsedAmount != budget || v.Payouts[campaign.PayoutTransferred] != awards {
		t.Fatalf("campaign %+v, %v", v, err)
	}
}
