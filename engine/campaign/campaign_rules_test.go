package campaign_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/transfersim"
)

// Every invalid campaign is INVALID_ARGUMENT and creates nothing.
func TestCreateCampaignRejects(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	now := e.Clock.Now()
	valid := campaign.NewCampaign{Name: "spring", Budget: 10_000, AwardCount: 100, AwardMin: 1, AwardMax: 200,
		StartsAt: now, EndsAt: now.Add(time.Hour)}
	for name, mutate := range map[string]func(*campaign.NewCampaign){
		"no name":                  func(c *campaign.NewCampaign) { c.Name = " " },
		"long name":                func(c *campaign.NewCampaign) { c.Name = strings.Repeat("活", 65) },
		"zero budget":              func(c *campaign.NewCampaign) { c.Budget = 0 },
		"budget over the maximum":  func(c *campaign.NewCampaign) { c.Budget = campaign.MaxBudget + 1 },
		"no awards":                func(c *campaign.NewCampaign) { c.AwardCount = 0 },
		"too many awards":          func(c *campaign.NewCampaign) { c.AwardCount = campaign.MaxAwards + 1 },
		"zero min":                 func(c *campaign.NewCampaign) { c.AwardMin = 0 },
		"max below min":            func(c *campaign.NewCampaign) { c.AwardMax = 0 },
		"count × min over budget":  func(c *campaign.NewCampaign) { c.AwardMin = 101 },
		"count × max under budget": func(c *campaign.NewCampaign) { c.AwardMax = 99 },
		"negative per-user limit":  func(c *campaign.NewCampaign) { c.PerUserLimit = -1 },
		"per-user limit too high":  func(c *campaign.NewCampaign) { c.PerUserLimit = campaign.MaxPerUserLimit + 1 },
		"no start":                 func(c *campaign.NewCampaign) { c.StartsAt = time.Time{} },
		"ends before it starts":    func(c *campaign.NewCampaign) { c.EndsAt = c.StartsAt.Add(-time.Second) },
		"ends in the past":         func(c *campaign.NewCampaign) { c.StartsAt, c.EndsAt = now.Add(-2*time.Hour), now.Add(-time.Hour) },
		"runs over a year":         func(c *campaign.NewCampaign) { c.EndsAt = c.StartsAt.Add(367 * 24 * time.Hour) },
		"bad ref":                  func(c *campaign.NewCampaign) { c.Ref = "a b" },
	} {
		c := valid
		mutate(&c)
		if _, _, err := e.Campaigns.CreateCampaign(ctx, c); !errors.Is(err, engine.ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := e.Campaigns.GetCampaign(ctx, 1); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("a rejected campaign was created: %v", err)
	}
}

// A ref makes creation idempotent: the same request returns the first
// campaign, the same ref for another campaign is a conflict.
func TestCreateCampaignRef(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	now := e.Clock.Now()
	req := campaign.NewCampaign{Ref: "spring-2026", Name: "spring", Budget: 10_000, AwardCount: 100, AwardMin: 1, AwardMax: 200,
		StartsAt: now, EndsAt: now.Add(time.Hour)}
	first, created, err := e.Campaigns.CreateCampaign(ctx, req)
	if err != nil || !created || first.Ref != "spring-2026" || first.Status != campaign.Open || first.Remaining != 100 {
		t.Fatalf("first: %+v, %v, %v", first, created, err)
	}
	again, created, err := e.Campaigns.CreateCampaign(ctx, req)
	if err != nil || created || again.ID != first.ID {
		t.Fatalf("again: %+v, %v, %v", again, created, err)
	}
	req.Budget++
	if _, _, err := e.Campaigns.CreateCampaign(ctx, req); !errors.Is(err, engine.ErrIdempotencyConflict) {
		t.Fatalf("ref reused: %v", err)
	}
}

// The time window and the per-user limit, on the Redis side.
func TestCampaignWindowAndLimit(t *testing.T) {
	_, x := startSim(t, transfersim.Faults{})
	e, _ := enginetest.Unit(t).WithTransfer(x)
	ctx := context.Background()
	now := e.Clock.Now()
	c, _, err := e.Campaigns.CreateCampaign(ctx, campaign.NewCampaign{Name: "later", Budget: 1_000, AwardCount: 10, AwardMin: 100,
		AwardMax: 100, PerUserLimit: 3, StartsAt: now.Add(time.Minute), EndsAt: now.Add(time.Hour)})
	if err != nil || c.Status != campaign.Scheduled {
		t.Fatalf("create: %+v, %v", c, err)
	}
	if _, err := e.Campaigns.GrabCampaign(ctx, c.ID, 1); !errors.Is(err, engine.ErrNotOpen) {
		t.Fatalf("grab before the start: %v", err)
	}
	if _, err := e.Campaigns.GrabCampaign(ctx, c.ID+1, 1); !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("grab of an unknown campaign: %v", err)
	}
	e.Clock.Add(time.Minute)
	var seqs []int
	for i := 0; i < 3; i++ {
		a, err := e.Campaigns.GrabCampaign(ctx, c.ID, 1)
		if err != nil || a.Repeat || a.Payout != campaign.PayoutTransferred {
			t.Fatalf("grab %d: %+v, %v", i+1, a, err)
		}
		seqs = append(seqs, a.Seq)
	}
	a, err := e.Campaigns.GrabCampaign(ctx, c.ID, 1)
	if err != nil || !a.Repeat || a.Seq != seqs[2] {
		t.Fatalf("grab at the limit: %+v, %v (awards %v)", a, err, seqs)
	}
	mine, err := e.Campaigns.MyAwards(ctx, c.ID, 1)
	if err != nil || len(mine) != 3 || mine[0].Seq != seqs[0] || mine[2].Payout != campaign.PayoutTransferred {
		t.Fatalf("my awards: %+v, %v", mine, err)
	}
	if mine, err := e.Campaigns.MyAwards(ctx, c.ID, 2); err != nil || len(mine) != 0 {
		t.Fatalf("another user's awards: %+v, %v", mine, err)
	}
	e.Clock.Add(time.Hour)
	if _, err := e.Campaigns.GrabCampaign(ctx, c.ID, 2); !errors.Is(err, engine.ErrExpired) {
		t.Fatalf("grab after the end: %v", err)
	}
	if a, err := e.Campaigns.GrabCampaign(ctx, c.ID, 1); err != nil || !a.Repeat {
		t.Fatalf("a holder after the end: %+v, %v", a, err)
	}
	e.RunWriter()()
	if v, err := e.Campaigns.GetCampaign(ctx, c.ID); err != nil || v.Status != campaign.Ended || v.Remaining != 7 || v.UsedAmount != 300 {
		t.Fatalf("campaign: %+v, %v", v, err)
	}
}

// A campaign whose Redis state is lost is rebuilt from MySQL: holders get
// their award back, the rest of the awards are still handed out once each.
func TestCampaignRebuild(t *testing.T) {
	_, x := startSim(t, transfersim.Faults{})
	e, _ := enginetest.Unit(t).WithTransfer(x)
	ctx := context.Background()
	c := e.NewCampaign(t, 500, 5, 100, 100, 1)
	first, err := e.Campaigns.GrabCampaign(ctx, c.ID, 1)
	if err != nil {
		t.Fatal(err)
	}
	k := e.Keys.Campaign(c.ID)
	if err := e.Redis.Del(ctx, k.State, k.Awards, k.Users, k.Awarded).Err(); err != nil {
		t.Fatal(err)
	}
	if a, err := e.Campaigns.GrabCampaign(ctx, c.ID, 1); err != nil || !a.Repeat || a.Seq != first.Seq {
		t.Fatalf("holder after the rebuild: %+v, %v", a, err)
	}
	seen := map[int]bool{first.Seq: true}
	for u := int64(2); u <= 5; u++ {
		a, err := e.Campaigns.GrabCampaign(ctx, c.ID, u)
		if err != nil || seen[a.Seq] {
			t.Fatalf("user %d: %+v, %v", u, a, err)
		}
		seen[a.Seq] = true
	}
	if _, err := e.Campaigns.GrabCampaign(ctx, c.ID, 6); !errors.Is(err, engine.ErrSoldOut) {
		t.Fatalf("grab past the last award: %v", err)
	}
	e.RunWriter()()
	if v, err := e.Campaigns.GetCampaign(ctx, c.ID); err != nil || v.UsedAmount != 500 || v.Status != campaign.SoldOut {
		t.Fatalf("campaign: %+v, %v", v, err)
	}
}
