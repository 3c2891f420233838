package engine_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/transfersim"
)

// Every invalid campaign is INVALID_ARGUMENT and creates nothing.
func TestCreateCampaignRejects(t *testing.T) {
	e := setupUnit(t)
	ctx := context.Background()
	now := e.clock.Now()
	valid := engine.NewCampaign{Name: "spring", Budget: 10_000, AwardCount: 100, AwardMin: 1, AwardMax: 200,
		StartsAt: now, EndsAt: now.Add(time.Hour)}
	for name, mutate := range map[string]func(*engine.NewCampaign){
		"no name":                  func(c *engine.NewCampaign) { c.Name = " " },
		"long name":                func(c *engine.NewCampaign) { c.Name = strings.Repeat("活", 65) },
		"zero budget":              func(c *engine.NewCampaign) { c.Budget = 0 },
		"budget over the maximum":  func(c *engine.NewCampaign) { c.Budget = engine.MaxCampaignBudget + 1 },
		"no awards":                func(c *engine.NewCampaign) { c.AwardCount = 0 },
		"too many awards":          func(c *engine.NewCampaign) { c.AwardCount = engine.MaxCampaignAwards + 1 },
		"zero min":                 func(c *engine.NewCampaign) { c.AwardMin = 0 },
		"max below min":            func(c *engine.NewCampaign) { c.AwardMax = 0 },
		"count × min over budget":  func(c *engine.NewCampaign) { c.AwardMin = 101 },
		"count × max under budget": func(c *engine.NewCampaign) { c.AwardMax = 99 },
		"negative per-user limit":  func(c *engine.NewCampaign) { c.PerUserLimit = -1 },
		"per-user limit too high":  func(c *engine.NewCampaign) { c.PerUserLimit = engine.MaxPerUserLimit + 1 },
		"no start":                 func(c *engine.NewCampaign) { c.StartsAt = time.Time{} },
		"ends before it starts":    func(c *engine.NewCampaign) { c.EndsAt = c.StartsAt.Add(-time.Second) },
		"ends in the past":         func(c *engine.NewCampaign) { c.StartsAt, c.EndsAt = now.Add(-2*time.Hour), now.Add(-time.Hour) },
		"runs over a year":         func(c *engine.NewCampaign) { c.EndsAt = c.StartsAt.Add(367 * 24 * time.Hour) },
		"bad ref":                  func(c *engine.NewCampaign) { c.Ref = "a b" },
	} {
		c := valid
		mutate(&c)
		if _, _, err := e.eng.CreateCampaign(ctx, c); !errors.Is(err, engine.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := e.eng.GetCampaign(ctx, 1); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("a rejected campaign was created: %v", err)
	}
}

// A ref makes creation idempotent: the same request returns the first
// campaign, the same ref for another campaign is a conflict.
func TestCreateCampaignRef(t *testing.T) {
	e := setupUnit(t)
	ctx := context.Background()
	now := e.clock.Now()
	req := engine.NewCampaign{Ref: "spring-2026", Name: "spring", Budget: 10_000, AwardCount: 100, AwardMin: 1, AwardMax: 200,
		StartsAt: now, EndsAt: now.Add(time.Hour)}
	first, created, err := e.eng.CreateCampaign(ctx, req)
	if err != nil || !created || first.Ref != "spring-2026" || first.Status != engine.CampaignOpen || first.Remaining != 100 {
		t.Fatalf("first: %+v, %v, %v", first, created, err)
	}
	again, created, err := e.eng.CreateCampaign(ctx, req)
	if err != nil || created || again.ID != first.ID {
		t.Fatalf("again: %+v, %v, %v", again, created, err)
	}
	req.Budget++
	if _, _, err := e.eng.CreateCampaign(ctx, req); !errors.Is(err, engine.ErrIdempotencyConflict) {
		t.Fatalf("ref reused: %v", err)
	}
}

// The time window and the per-user limit, on the Redis side.
func TestCampaignWindowAndLimit(t *testing.T) {
	_, x := startSim(t, transfersim.Faults{})
	e, _ := setupUnit(t).withTransfer(x)
	ctx := context.Background()
	now := e.clock.Now()
	c, _, err := e.eng.CreateCampaign(ctx, engine.NewCampaign{Name: "later", Budget: 1_000, AwardCount: 10, AwardMin: 100,
		AwardMax: 100, PerUserLimit: 3, StartsAt: now.Add(time.Minute), EndsAt: now.Add(time.Hour)})
	if err != nil || c.Status != engine.CampaignScheduled {
		t.Fatalf("create: %+v, %v", c, err)
	}
	if _, err := e.eng.GrabCampaign(ctx, c.ID, 1); !errors.Is(err, engine.ErrNotOpen) {
		t.Fatalf("grab before the start: %v", err)
	}
	if _, err := e.eng.GrabCampaign(ctx, c.ID+1, 1); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("grab of an unknown campaign: %v", err)
	}
	e.clock.Add(time.Minute)
	var seqs []int
	for i := 0; i < 3; i++ {
		a, err := e.eng.GrabCampaign(ctx, c.ID, 1)
		if err != nil || a.Repeat || a.Payout != engine.PayoutTransferred {
			t.Fatalf("grab %d: %+v, %v", i+1, a, err)
		}
		seqs = append(seqs, a.Seq)
	}
	a, err := e.eng.GrabCampaign(ctx, c.ID, 1)
	if err != nil || !a.Repeat || a.Seq != seqs[2] {
		t.Fatalf("grab at the limit: %+v, %v (awards %v)", a, err, seqs)
	}
	mine, err := e.eng.MyAwards(ctx, c.ID, 1)
	if err != nil || len(mine) != 3 || mine[0].Seq != seqs[0] || mine[2].Payout != engine.PayoutTransferred {
		t.Fatalf("my awards: %+v, %v", mine, err)
	}
	if mine, err := e.eng.MyAwards(ctx, c.ID, 2); err != nil || len(mine) != 0 {
		t.Fatalf("another user's awards: %+v, %v", mine, err)
	}
	e.clock.Add(time.Hour)
	if _, err := e.eng.GrabCampaign(ctx, c.ID, 2); !errors.Is(err, engine.ErrExpired) {
		t.Fatalf("grab after the end: %v", err)
	}
	if a, err := e.eng.GrabCampaign(ctx, c.ID, 1); err != nil || !a.Repeat {
		t.Fatalf("a holder after the end: %+v, %v", a, err)
	}
	e.runWriter()()
	if v, err := e.eng.GetCampaign(ctx, c.ID); err != nil || v.Status != engine.CampaignEnded || v.Remaining != 7 || v.UsedAmount != 300 {
		t.Fatalf("campaign: %+v, %v", v, err)
	}
}

// A campaign whose Redis state is lost is rebuilt from MySQL: holders get
// their award back, the rest of the awards are still handed out once each.
func TestCampaignRebuild(t *testing.T) {
	_, x := startSim(t, transfersim.Faults{})
	e, _ := setupUnit(t).withTransfer(x)
	ctx := context.Background()
	c := e.newCampaign(t, 500, 5, 100, 100, 1)
	first, err := e.eng.GrabCampaign(ctx, c.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	k := e.keys.Campaign(c.ID)
	if err := e.rdb.Del(ctx, k.State, k.Awards, k.Users, k.Awarded).Err(); err != nil {
		t.Fatal(err)
	}
	if a, err := e.eng.GrabCampaign(ctx, c.ID, 1); err != nil || !a.Repeat || a.Seq != first.Seq {
		t.Fatalf("holder after the rebuild: %+v, %v", a, err)
	}
	seen := map[int]bool{first.Seq: true}
	for u := int64(2); u <= 5; u++ {
		a, err := e.eng.GrabCampaign(ctx, c.ID, u)
		if err != nil || seen[a.Seq] {
			t.Fatalf("user %d: %+v, %v", u, a, err)
		}
		seen[a.Seq] = true
	}
	if _, err := e.eng.GrabCampaign(ctx, c.ID, 6); !errors.Is(err, engine.ErrSoldOut) {
		t.Fatalf("grab past the last award: %v", err)
	}
	e.runWriter()()
	if v, err := e.eng.GetCampaign(ctx, c.ID); err != nil || v.UsedAmount != 500 || v.Status != engine.CampaignSoldOut {
		t.Fatalf("campaign: %+v, %v", v, err)
	}
}
