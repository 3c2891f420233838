package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

// setupAOF builds an engine on a private redis-server with an append-only
// file (so the test can roll it back) and the real MariaDB; the writer is
// not started.
func setupAOF(t *testing.T) (*enginetest.Env, *redistest.Server) {
	t.Helper()
	srv := redistest.StartAOFServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	t.Cleanup(func() { rdb.Close() })
	return enginetest.NewEnv(t, rdb, lua.NewKeys("grab", 4), storetest.MySQL(t)), srv
}

// answer is one grab's answer: a packet share or a campaign award.
type answer struct {
	seq    int
	amount int64
	repeat bool
}

// grabBoth has each user grab packet pk and campaign cp, all at once, and
// returns the 200 answers by user.
func grabBoth(t *testing.T, e *enginetest.Env, pk, cp int64, users []int64) (shares, awards map[int64]answer) {
	t.Helper()
	var mu sync.Mutex
	shares, awards = map[int64]answer{}, map[int64]answer{}
	var wg sync.WaitGroup
	for _, u := range users {
		wg.Add(2)
		go func() {
			defer wg.Done()
			r, err := e.Packets.Grab(context.Background(), pk, u)
			if errors.Is(err, engine.ErrSoldOut) {
				return
			}
			if err != nil {
				t.Errorf("grab by %d: %v", u, err)
				return
			}
			mu.Lock()
			shares[u] = answer{r.Seq, r.Amount, r.Repeat}
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			a, err := e.Campaigns.GrabCampaign(context.Background(), cp, u)
			if errors.Is(err, engine.ErrSoldOut) {
				return
			}
			if err != nil {
				t.Errorf("campaign grab by %d: %v", u, err)
				return
			}
			mu.Lock()
			awards[u] = answer{a.Seq, a.Amount, a.Repeat}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return shares, awards
}

// oneOwnerEach fails the test when two users were answered the same seq.
func oneOwnerEach(t *testing.T, what string, answers map[int64]answer) {
	t.Helper()
	owner := map[int]int64{}
	for u, a := range answers {
		if o, ok := owner[a.seq]; ok {
			t.Fatalf("%s seq %d answered to users %d and %d", what, a.seq, o, u)
		}
		owner[a.seq] = u
	}
}

// Redis comes back older than MySQL (its AOF cut back, as after an OS crash
// with appendfsync everysec, a failover to a lagging replica or a restore):
// no share or award is answered to two users, no user gets a second one,
// every grab answered before the rollback and already in MySQL is answered
// again as a repeat, and the writer parks nothing.
func TestRedisRollbackGrantsNothingTwice(t *testing.T) {
	e, srv := setupAOF(t)
	ctx := context.Background()
	p := e.GroupPacket(t, packet.KindGroupLucky, 40, 20, 2_000)
	c := e.NewCampaign(t, 2_000, 20, 50, 150, 1)
	cut := srv.AOFSize()

	// Users 2..9 grab both; the writer (and for awards, the grab itself)
	// puts them in MySQL. Then, the writer stopped, users 10..12 grab: their
	// events are only in Redis's stream (their award rows, written by the
	// grab itself, are in MySQL uncounted), and the rollback loses them.
	stop := e.RunWriter()
	durableShares, durableAwards := grabBoth(t, e, p.ID, c.ID, enginetest.Users(2, 8))
	e.Drain(t, p.ID, len(durableShares))
	enginetest.WaitFor(t, "the awards in MySQL", func() bool {
		rows, err := e.DB.CampaignAwards(ctx, c.ID)
		return err == nil && len(rows) >= len(durableAwards)
	})
	stop()
	grabBoth(t, e, p.ID, c.ID, enginetest.Users(10, 3))

	srv.RollBack(cut)
	e.StartWriter(t)

	shares, awards := grabBoth(t, e, p.ID, c.ID, enginetest.Users(2, 39))
	oneOwnerEach(t, "share", shares)
	oneOwnerEach(t, "award", awards)
	for u, before := range durableShares {
		if got := shares[u]; got.seq != before.seq || got.amount != before.amount || !got.repeat {
			t.Fatalf("user %d: share %+v after the rollback, %+v before", u, got, before)
		}
	}
	for u, before := range durableAwards {
		if got := awards[u]; got.seq != before.seq || got.amount != before.amount || !got.repeat {
			t.Fatalf("user %d: award %+v after the rollback, %+v before", u, got, before)
		}
	}
	if len(shares) != 20 || len(awards) != 20 {
		t.Fatalf("%d shares and %d awards answered, want every one of 20 each", len(shares), len(awards))
	}

	// MySQL ends with exactly what was answered, and nothing was parked.
	e.Drain(t, p.ID, 20)
	stored, err := e.DB.Shares(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stored {
		if a := shares[s.UserID.Int64]; a.seq != s.Seq {
			t.Fatalf("MySQL gives share %d to user %d, who was answered %+v", s.Seq, s.UserID.Int64, a)
		}
	}
	enginetest.WaitFor(t, "every award in MySQL", func() bool {
		rows, err := e.DB.CampaignAwards(ctx, c.ID)
		return err == nil && len(rows) == 20
	})
	rows, _ := e.DB.CampaignAwards(ctx, c.ID)
	var sum int64
	for _, r := range rows {
		if a := awards[r.UserID]; a.seq != r.Seq {
			t.Fatalf("MySQL gives award %d to user %d, who was answered %+v", r.Seq, r.UserID, a)
		}
		sum += int64(r.Amount)
	}
	// Every award is counted against the budget once, including one whose
	// award event Redis lost with the rollback.
	enginetest.WaitFor(t, "every award counted", func() bool {
		got, err := e.Campaigns.GetCampaign(ctx, c.ID)
		return err == nil && got.Awarded == 20 && got.UsedAmount == sum && got.AccAmount == sum
	})
	for shard := 0; shard < e.Keys.Shards; shard++ {
		if n := e.Redis.XLen(ctx, e.Keys.DeadLetters(shard)).Val(); n != 0 {
			t.Fatalf("%d events parked in shard %d", n, shard)
		}
	}
}
