package campaign_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/transfer"

	"github.com/grab-engine/grab/engine/campaign"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/transfersim"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// metric reads a counter or gauge without labels from reg.

func wantUsed(e *enginetest.Env, t *testing.T, cp, used int64) {
	t.Helper()
	c, err := e.Campaigns.GetCampaign(context.Background(), cp)
	if err != nil {
		t.Fatal(err)
	}
	if c.UsedAmount != used || c.AccAmount != used {
		t.Fatalf("used %d, acc %d; want %d", c.UsedAmount, c.AccAmount, used)
	}
}

// rawGrab grabs through the script alone, as a grab whose request died
// before its payout began: the award is in Redis and the stream, nowhere else.
func rawGrab(e *enginetest.Env, t *testing.T, cp, user int64) lua.CampaignGrabReply {
	t.Helper()
	r, err := lua.CampaignGrab(context.Background(), lua.Direct(e.Redis), e.Keys.Campaign(cp), cp, user, e.Clock.Now().UnixMilli(), fmt.Sprint("raw-", user))
	if err != nil || r.Code != lua.GrabGranted {
		t.Fatalf("grab: %+v, %v", r, err)
	}
	return r
}

// The writer and the receive path each create an award's row if it is
// absent, and whichever does counts it: in either order, and with the
// writer's event replayed, the budget is counted once.
func TestAwardWriterAndReceiveInEitherOrder(t *testing.T) {
	sim, x := startSim(t, transfersim.Faults{})
	e, _ := enginetest.Real(t).WithTransfer(x)
	ctx := context.Background()
	c := e.NewCampaign(t, 300, 3, 100, 100, 1)
	events := e.Keys.Campaign(c.ID).Events

	// Writer first, its event delivered twice.
	first := rawGrab(e, t, c.ID, 1)
	msgs, err := e.Redis.XRange(ctx, events, "-", "+").Result()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("stream: %v, %v", msgs, err)
	}
	if err := e.Redis.XAdd(ctx, &redis.XAddArgs{Stream: events, Values: msgs[0].Values}).Err(); err != nil {
		t.Fatal(err)
	}
	e.RunWriter()()
	if a, err := e.DB.Award(ctx, c.ID, first.Seq); err != nil || a.Status != campaign.PayoutReceived || a.Attempts != 0 {
		t.Fatalf("after the writer: %+v, %v", a, err)
	}
	wantUsed(e, t, c.ID, 100)
	if a, err := e.Campaigns.Receive(ctx, c.ID, first.Seq, 1); err != nil || a.Payout != campaign.PayoutTransferred {
		t.Fatalf("receive: %+v, %v", a, err)
	}
	wantUsed(e, t, c.ID, 100)

	// Receive first: MySQL has no row yet, Redis has the award.
	second := rawGrab(e, t, c.ID, 2)
	if _, err := e.DB.Award(ctx, c.ID, second.Seq); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("row before the receive: %v", err)
	}
	if _, err := e.Campaigns.Receive(ctx, c.ID, second.Seq, 1); !errors.Is(err, engine.ErrForbidden) {
		t.Fatalf("receive of another user's award: %v", err)
	}
	if a, err := e.Campaigns.Receive(ctx, c.ID, second.Seq, 2); err != nil || a.Payout != campaign.PayoutTransferred {
		t.Fatalf("receive: %+v, %v", a, err)
	}
	wantUsed(e, t, c.ID, 100) // the receive created the row; the writer counts it
	e.RunWriter()()
	wantUsed(e, t, c.ID, 200)
	e.RunWriter()()
	wantUsed(e, t, c.ID, 200)
	if n := e.Redis.XLen(ctx, e.Keys.DeadLetters(e.Keys.Shard(c.ID))).Val(); n != 0 {
		t.Fatalf("%d dead letters", n)
	}
	if _, err := e.Campaigns.Receive(ctx, c.ID, second.Seq, 2); !errors.Is(err, engine.ErrAwardReceived) {
		t.Fatalf("second receive: %v", err)
	}
	if _, err := e.Campaigns.Receive(ctx, c.ID, 3, 2); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("receive of an award never granted: %v", err)
	}
	if sim.MaxApplications() != 1 {
		t.Fatal("a number was applied twice")
	}
}

// An award whose transfers keep failing is parked after PayoutMaxAttempts
// as needs_attention, with an alert (counter and gauge), and kept: the
// sweeper leaves it to a person, the user is told the payout is under way.
func TestPayoutParksAfterMaxAttempts(t *testing.T) { inModes(t, testPayoutParksAfterMaxAttempts) }

func testPayoutParksAfterMaxAttempts(t *testing.T, async bool, mode func(*engine.Config)) {
	sim, x := startSim(t, transfersim.Faults{ErrorRate: 1})
	e, reg := enginetest.Real(t).WithTransfer(x, mode, func(c *engine.Config) { c.PayoutMaxAttempts = 3 })
	ctx := context.Background()
	c := e.NewCampaign(t, 100, 1, 100, 100, 1)
	_, err := paidGrab(e, t, async, c.ID, 9)
	var pe *campaign.PayoutPendingError
	if !errors.As(err, &pe) || pe.Award.Amount != 100 || pe.Award.Payout != campaign.PayoutTransferring {
		t.Fatalf("grab: %v", err)
	}
	for i, want := range []campaign.PayoutSweep{{Claimed: 1, Pending: 1}, {Claimed: 1, Parked: 1}, {}} {
		e.Clock.Add(e.Cfg.PayoutRetryAfter + time.Second)
		if s, err := e.Campaigns.SweepPayouts(ctx); err != nil || s != want {
			t.Fatalf("sweep %d: %+v, %v; want %+v", i+1, s, err, want)
		}
	}
	a, err := e.DB.Award(ctx, c.ID, pe.Award.Seq)
	if err != nil || a.Status != campaign.PayoutNeedsAttention || a.Attempts != 3 || a.LastError == "" {
		t.Fatalf("award %+v, %v", a, err)
	}
	if n := enginetest.Metric(t, reg, "grab_payout_needs_attention_total"); n != 1 {
		t.Fatalf("needs-attention counter %v", n)
	}
	if n := enginetest.Metric(t, reg, "grab_payout_needs_attention_awards"); n != 1 {
		t.Fatalf("needs-attention gauge %v", n)
	}
	if n := enginetest.Metric(t, reg, "grab_payout_transfers_failed_total"); n != 3 {
		t.Fatalf("failed counter %v", n)
	}
	if _, err := e.Campaigns.Receive(ctx, c.ID, a.Seq, 9); !errors.As(err, &pe) || pe.Award.Payout != campaign.PayoutNeedsAttention {
		t.Fatalf("receive of a parked award: %v", err)
	}
	e.RunWriter()()
	v, err := e.Campaigns.GetCampaign(ctx, c.ID)
	if err != nil || v.Payouts[campaign.PayoutNeedsAttention] != 1 || v.UsedAmount != 100 {
		t.Fatalf("campaign %+v, %v", v, err)
	}
	if sim.Applied(a.OutTradeNo) != 0 {
		t.Fatal("a failed transfer moved money")
	}
}

// A service that holds the out-trade-no with other details (a conflict) is
// never retried: the award is parked at once.
func TestPayoutConflictParks(t *testing.T) { inModes(t, testPayoutConflictParks) }

func testPayoutConflictParks(t *testing.T, async bool, mode func(*engine.Config)) {
	_, x := startSim(t, transfersim.Faults{})
	e, reg := enginetest.Real(t).WithTransfer(x, mode)
	ctx := context.Background()
	c := e.NewCampaign(t, 300, 3, 50, 150, 1)
	shares, err := e.DB.CampaignShares(ctx, c.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Someone else's payout under award 1's number (seq 1 goes first).
	if _, err := x.Transfer(ctx, transfer.Transfer{OutTradeNo: store.OutTradeNo(c.ID, 1), UserID: 4242, Amount: int64(shares[0].Amount)}); err != nil {
		t.Fatal(err)
	}
	_, err = paidGrab(e, t, async, c.ID, 1)
	var pe *campaign.PayoutPendingError
	if !errors.As(err, &pe) || pe.Award.Seq != 1 || pe.Award.Payout != campaign.PayoutNeedsAttention {
		t.Fatalf("grab: %v", err)
	}
	if n := enginetest.Metric(t, reg, "grab_payout_needs_attention_total"); n != 1 {
		t.Fatalf("needs-attention counter %v", n)
	}
	e.Clock.Add(e.Cfg.PayoutRetryAfter + time.Second)
	if s, err := e.Campaigns.SweepPayouts(ctx); err != nil || s.Claimed != 0 {
		t.Fatalf("sweep touched a parked award: %+v, %v", s, err)
	}
}

// Without a transfer service grabs still work and awards stay received; an
// engine with a service later pays them in its sweep.
func TestCampaignWithoutTransferService(t *testing.T) { inModes(t, testCampaignWithoutTransferService) }

func testCampaignWithoutTransferService(t *testing.T, async bool, mode func(*engine.Config)) {
	sim, x := startSim(t, transfersim.Faults{})
	e := enginetest.Real(t, mode)
	ctx := context.Background()
	c := e.NewCampaign(t, 1_000, 10, 100, 100, 1)
	for u := int64(1); u <= 3; u++ {
		a, err := e.Campaigns.GrabCampaign(ctx, c.ID, u)
		if err != nil || a.Payout != campaign.PayoutReceived {
			t.Fatalf("grab: %+v, %v", a, err)
		}
	}
	if async {
		e.RunWriter()() // the writer records the awards the grabs answered from Redis
	}
	if a, err := e.Campaigns.Receive(ctx, c.ID, 1, 1); err != nil || a.Payout != campaign.PayoutReceived {
		t.Fatalf("receive without a service: %+v, %v", a, err)
	}
	if s, err := e.Campaigns.SweepPayouts(ctx); err != nil || s.Claimed != 0 {
		t.Fatalf("sweep without a service: %+v, %v", s, err)
	}
	paying, _ := e.WithTransfer(x, mode)
	if s, err := paying.Campaigns.SweepPayouts(ctx); err != nil || s.Claimed != 0 {
		t.Fatalf("sweep before the threshold: %+v, %v", s, err) // their grabs may still be paying them
	}
	e.Clock.Add(e.Cfg.PayoutRetryAfter + time.Second)
	if s, err := paying.Campaigns.SweepPayouts(ctx); err != nil || s != (campaign.PayoutSweep{Claimed: 3, Transferred: 3}) {
		t.Fatalf("sweep: %+v, %v", s, err)
	}
	if n, fen := sim.TotalApplied(); n != 3 || fen != 300 {
		t.Fatalf("service moved %d fen in %d transfers", fen, n)
	}
}

// A person retries a parked award: one attempt, as the sweeper makes it; a
// failure parks it again, a success pays it once.
func TestRetryOfAParkedPayout(t *testing.T) { inModes(t, testRetryOfAParkedPayout) }

func testRetryOfAParkedPayout(t *testing.T, async bool, mode func(*engine.Config)) {
	sim, x := startSim(t, transfersim.Faults{ErrorRate: 1})
	e, _ := enginetest.Real(t).WithTransfer(x, mode, func(c *engine.Config) { c.PayoutMaxAttempts = 1 })
	ctx := context.Background()
	c := e.NewCampaign(t, 200, 2, 100, 100, 1)
	_, err := paidGrab(e, t, async, c.ID, 9)
	var pe *campaign.PayoutPendingError
	if !errors.As(err, &pe) || pe.Award.Payout != campaign.PayoutNeedsAttention {
		t.Fatalf("grab with one attempt allowed: %v", err)
	}
	seq := pe.Award.Seq

	if a, err := e.Campaigns.RetryPayout(ctx, c.ID, seq); err != nil || a.Payout != campaign.PayoutNeedsAttention {
		t.Fatalf("retry while the service still fails: %+v, %v", a, err)
	}
	sim.SetFaults(transfersim.Faults{})
	if a, err := e.Campaigns.RetryPayout(ctx, c.ID, seq); err != nil || a.Payout != campaign.PayoutTransferred {
		t.Fatalf("retry once the service works: %+v, %v", a, err)
	}
	if _, err := e.Campaigns.RetryPayout(ctx, c.ID, seq); !errors.Is(err, engine.ErrAwardReceived) {
		t.Fatalf("retry of a transferred award: %v", err)
	}
	if n := sim.Applied(store.OutTradeNo(c.ID, seq)); n != 1 {
		t.Fatalf("applied %d times", n)
	}

	// Only parked awards: one the sweeper owns is left to it.
	sim.SetFaults(transfersim.Faults{ErrorRate: 1})
	e2, _ := e.WithTransfer(x, mode, func(c *engine.Config) { c.PayoutMaxAttempts = 10 })
	_, err = paidGrab(e2, t, async, c.ID, 10)
	if !errors.As(err, &pe) || pe.Award.Payout != campaign.PayoutTransferring {
		t.Fatalf("second grab: %v", err)
	}
	if _, err := e2.Campaigns.RetryPayout(ctx, c.ID, pe.Award.Seq); !errors.Is(err, engine.ErrPayoutInProgress) {
		t.Fatalf("retry of an award the sweeper owns: %v", err)
	}
	if _, err := e2.Campaigns.RetryPayout(ctx, c.ID, 99); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("retry of no award: %v", err)
	}
}
