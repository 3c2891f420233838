package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/store"
)

// newCampaign stores a campaign of the given shares and budget (the store
// does not check that they add up: the engine's split does).
func newCampaign(t *testing.T, db *store.DB, budget int64, shares ...int64) int64 {
	t.Helper()
	id, err := db.CreateCampaign(context.Background(), store.Campaign{Name: "c", Budget: store.Fen(budget), StartsAt: now,
		EndsAt: now.Add(time.Hour), Status: "open", CreatedAt: now, AwardMin: 1, AwardMax: 10_000, PerUserLimit: 1}, shares)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func awardEvent(cp int64, seq int, user, amount int64) event.Event {
	return event.Award{CampaignID: cp, Seq: seq, UserID: user, Amount: amount, At: now}
}

func wantUsed(t *testing.T, db *store.DB, cp, used int64, awarded int) {
	t.Helper()
	c, err := db.Campaign(context.Background(), cp)
	if err != nil {
		t.Fatal(err)
	}
	if int64(c.UsedAmount) != used || int64(c.AccAmount) != used || c.AwardedCount != awarded {
		t.Fatalf("used %d, acc %d, awarded %d; want %d, %d, %d", c.UsedAmount, c.AccAmount, c.AwardedCount, used, used, awarded)
	}
}

// Award events: a row per award, counted once however often the event is
// applied; an award that is not the campaign's share, or another user's, or
// past the budget is rejected and leaves nothing behind.
func TestApplyAwards(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		cp := newCampaign(t, db, 150, 60, 50, 60) // the third share contradicts the budget
		rejected, err := db.ApplyEvents(ctx, []event.Event{
			awardEvent(cp, 1, 10, 60),
			awardEvent(cp, 1, 10, 60), // replay in the same batch
			awardEvent(cp, 2, 11, 49), // not the share's amount
			awardEvent(cp, 9, 11, 60), // no such share
		})
		if err != nil || len(rejected) != 2 || rejected[0] != 2 || rejected[1] != 3 {
			t.Fatalf("rejected %v, %v", rejected, err)
		}
		wantUsed(t, db, cp, 60, 1)
		// Replayed in a later batch; another user on a taken award; then the rest.
		rejected, err = db.ApplyEvents(ctx, []event.Event{awardEvent(cp, 1, 10, 60), awardEvent(cp, 1, 12, 60),
			awardEvent(cp, 2, 11, 50), awardEvent(cp, 3, 13, 60)})
		if err != nil || len(rejected) != 2 || rejected[0] != 1 || rejected[1] != 3 {
			t.Fatalf("rejected %v, %v", rejected, err)
		}
		wantUsed(t, db, cp, 110, 2)
		if _, err := db.Award(ctx, cp, 3); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("the award over budget left a row: %v", err)
		}
		a, err := db.Award(ctx, cp, 1)
		if err != nil || a.Status != store.AwardReceived || a.UserID != 10 || a.OutTradeNo != store.OutTradeNo(cp, 1) || a.Attempts != 0 {
			t.Fatalf("award 1 = %+v, %v", a, err)
		}
	})
}

// The receive transaction creates (and counts) the row when the writer has
// not, moves a received row to transferring once, and counts nothing twice
// in either order.
func TestBeginPayout(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		cp := newCampaign(t, db, 100, 30, 70)
		ev1 := event.Award{CampaignID: cp, Seq: 1, UserID: 10, Amount: 30, At: now}
		// Receive first: the row is created transferring and counted.
		row, started, err := db.BeginPayout(ctx, ev1, true, now)
		if err != nil || !started || row.Status != store.AwardTransferring || row.Attempts != 1 || !row.TransferringAt.Valid {
			t.Fatalf("first receive: %+v, %v, %v", row, started, err)
		}
		if rejected, err := db.ApplyEvents(ctx, []event.Event{ev1}); err != nil || len(rejected) != 0 {
			t.Fatalf("writer after receive: %v, %v", rejected, err)
		}
		wantUsed(t, db, cp, 30, 1)
		if row, started, err = db.BeginPayout(ctx, ev1, true, now); err != nil || started || row.Status != store.AwardTransferring {
			t.Fatalf("second receive: %+v, %v, %v", row, started, err)
		}
		// Writer first: received, then the receive moves it.
		ev2 := event.Award{CampaignID: cp, Seq: 2, UserID: 11, Amount: 70, At: now}
		if rejected, err := db.ApplyEvents(ctx, []event.Event{ev2}); err != nil || len(rejected) != 0 {
			t.Fatalf("writer: %v, %v", rejected, err)
		}
		if row, started, err = db.BeginPayout(ctx, event.Award{CampaignID: cp, Seq: 2, UserID: 12, Amount: 70, At: now}, true, now); err != nil || started || row.UserID != 11 {
			t.Fatalf("another user's receive: %+v, %v, %v", row, started, err)
		}
		if row, started, err = db.BeginPayout(ctx, ev2, true, now); err != nil || !started || row.Attempts != 1 {
			t.Fatalf("receive after writer: %+v, %v, %v", row, started, err)
		}
		wantUsed(t, db, cp, 100, 2)
		if ok, err := db.MarkTransferred(ctx, cp, 2, "T2", now); err != nil || !ok {
			t.Fatalf("mark: %v, %v", ok, err)
		}
		if ok, err := db.MarkTransferred(ctx, cp, 2, "T2", now); err != nil || ok {
			t.Fatalf("second mark: %v, %v", ok, err)
		}
		// An award that is not the campaign's share is a conflict, with nothing written.
		if _, _, err := db.BeginPayout(ctx, event.Award{CampaignID: cp, Seq: 3, UserID: 13, Amount: 1, At: now}, true, now); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("unknown share: %v", err)
		}
		wantUsed(t, db, cp, 100, 2)
	})
}

// A claim succeeds once per read of the row: two sweepers holding the same
// read cannot both drive it.
func TestClaimPayout(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		cp := newCampaign(t, db, 10, 10)
		ev := event.Award{CampaignID: cp, Seq: 1, UserID: 10, Amount: 10, At: now}
		if _, _, err := db.BeginPayout(ctx, ev, true, now); err != nil {
			t.Fatal(err)
		}
		due, err := db.DuePayouts(ctx, now.Add(time.Minute), 10)
		if err != nil || len(due) != 1 {
			t.Fatalf("due %v, %v", due, err)
		}
		later := now.Add(2 * time.Minute)
		first, err1 := db.ClaimPayout(ctx, cp, 1, due[0].Status, due[0].Attempts, later)
		second, err2 := db.ClaimPayout(ctx, cp, 1, due[0].Status, due[0].Attempts, later)
		if err1 != nil || err2 != nil || !first || second {
			t.Fatalf("claims %v %v, %v %v", first, second, err1, err2)
		}
		if due, err := db.DuePayouts(ctx, now.Add(time.Minute), 10); err != nil || len(due) != 0 {
			t.Fatalf("a claimed award is still due: %v, %v", due, err)
		}
		if ok, err := db.ParkPayout(ctx, cp, 1, 1, "stale attempts", later); err != nil || ok {
			t.Fatalf("park with stale attempts: %v, %v", ok, err)
		}
		if ok, err := db.ParkPayout(ctx, cp, 1, 2, "too many", later); err != nil || !ok {
			t.Fatalf("park: %v, %v", ok, err)
		}
		if n, err := db.CountAwards(ctx, store.AwardNeedsAttention); err != nil || n != 1 {
			t.Fatalf("needs attention %d, %v", n, err)
		}
	})
}

// Several receives of the same award at once (a user grabbing twice, a
// receive and a grab), the writer's batches and the 7 -> 4 updates, all
// racing: no error reaches the caller (lost lock races are retried), one
// receive starts each payout, and every award is counted once.
func TestBeginPayoutRaces(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n, racers = 40, 4
		shares := make([]int64, n)
		for i := range shares {
			shares[i] = int64(i + 1)
		}
		cp := newCampaign(t, db, n*(n+1)/2, shares...)
		ev := func(seq int) event.Award {
			return event.Award{CampaignID: cp, Seq: seq, UserID: int64(100 + seq), Amount: int64(seq), At: now}
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		starts := map[int]int{}
		for seq := 1; seq <= n; seq++ {
			for range racers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					row, started, err := db.BeginPayout(ctx, ev(seq), true, now)
					if err != nil {
						t.Errorf("award %d: %v", seq, err)
						return
					}
					if started {
						mu.Lock()
						starts[seq]++
						mu.Unlock()
						if ok, err := db.MarkTransferred(ctx, cp, seq, "T", now); err != nil || !ok {
							t.Errorf("mark %d: %v, %v (row %+v)", seq, ok, err, row)
						}
					}
				}()
			}
		}
		for from := 1; from <= n; from += 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var batch []event.Event
				for seq := from; seq < from+10; seq++ {
					batch = append(batch, ev(seq))
				}
				if rejected, err := db.ApplyEvents(ctx, batch); err != nil || len(rejected) != 0 {
					t.Errorf("writer: %v, %v", rejected, err)
				}
			}()
		}
		wg.Wait()
		wantUsed(t, db, cp, n*(n+1)/2, n)
		counts, err := db.PayoutCounts(ctx, cp)
		if err != nil || counts[store.AwardTransferred] != n {
			t.Fatalf("payouts %v, %v", counts, err)
		}
		for seq := 1; seq <= n; seq++ {
			if starts[seq] != 1 {
				t.Fatalf("award %d started %d times", seq, starts[seq])
			}
		}
	})
}

// Payout workers claiming received awards at once (SKIP LOCKED on MySQL)
// each take a different award: every award is claimed exactly once, moved
// to transferring with one attempt.
func TestClaimReceived(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n = 40
		shares := make([]int64, n)
		events := make([]event.Event, n)
		for i := range shares {
			shares[i] = 10
		}
		cp := newCampaign(t, db, 10*n, shares...)
		for i := range events {
			events[i] = awardEvent(cp, i+1, int64(100+i), 10)
		}
		if rejected, err := db.ApplyEvents(ctx, events); err != nil || len(rejected) != 0 {
			t.Fatalf("apply: %v, %v", rejected, err)
		}
		var mu sync.Mutex
		claimed := map[int]int{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					rows, err := db.ClaimReceived(ctx, 3, now)
					if err != nil {
						t.Error(err)
						return
					}
					if len(rows) == 0 {
						return
					}
					mu.Lock()
					for _, r := range rows {
						if r.CampaignID == cp {
							claimed[r.Seq]++
						}
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for seq := 1; seq <= n; seq++ {
			if claimed[seq] != 1 {
				t.Errorf("award %d claimed %d times", seq, claimed[seq])
			}
			if a, err := db.Award(ctx, cp, seq); err != nil || a.Status != store.AwardTransferring || a.Attempts != 1 {
				t.Errorf("award %d after the claims: %+v, %v", seq, a, err)
			}
		}
	})
}
