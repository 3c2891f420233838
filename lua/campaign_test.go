package lua

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

const (
	testCampaign = 77
	testStarts   = testNow - 60_000
	testEnds     = testNow + 3_600_000
)

// setupCampaign loads campaign 77 with awards seq 1 (500 fen), 2 (300), 3
// (200), open from a minute before testNow to an hour after, one award a user.
func setupCampaign(t *testing.T, mutate func(*CampaignState)) (*miniredis.Miniredis, *redis.Client, CampaignKeys) {
	t.Helper()
	m := miniredis.RunT(t)
	m.SetTime(time.UnixMilli(testNow))
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	k := NewKeys("grab", 16).Campaign(testCampaign)
	st := CampaignState{Status: "open", StartsAtMs: testStarts, EndsAtMs: testEnds, PerUserLimit: 1,
		KeepUntilMs: testEnds + 3_600_000, Awards: []Share{{1, 500}, {2, 300}, {3, 200}}}
	if mutate != nil {
		mutate(&st)
	}
	if ok, err := LoadCampaign(context.Background(), c, k, st); err != nil || ok != Loaded {
		t.Fatalf("load = %v, %v", ok, err)
	}
	return m, c, k
}

func campaignGrab(t *testing.T, c *redis.Client, k CampaignKeys, user, now int64, request string) CampaignGrabReply {
	t.Helper()
	r, err := CampaignGrab(context.Background(), Direct(c), k, testCampaign, user, now, request)
	if err != nil {
		t.Fatalf("campaign_grab.lua: %v", err)
	}
	return r
}

func TestCampaignGrabOutcomes(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*CampaignState)
		before func(t *testing.T, c *redis.Client, k CampaignKeys)
		user   int64
		now    int64
		want   CampaignGrabReply
	}{
		{name: "granted", user: 10, now: testNow, want: CampaignGrabReply{Code: GrabGranted, Seq: 1, Amount: 500, AtMs: testNow}},
		{name: "not started", user: 10, now: testStarts - 1, want: CampaignGrabReply{Code: GrabNotOpen}},
		{name: "starts now", user: 10, now: testStarts, want: CampaignGrabReply{Code: GrabGranted, Seq: 1, Amount: 500, AtMs: testStarts}},
		{name: "ended", user: 10, now: testEnds, want: CampaignGrabReply{Code: GrabExpired}},
		{name: "not open", mutate: func(s *CampaignState) { s.Status = "closed" }, user: 10, now: testNow,
			want: CampaignGrabReply{Code: GrabNotOpen}},
		{name: "sold out", mutate: func(s *CampaignState) { s.Awards = nil }, user: 10, now: testNow,
			want: CampaignGrabReply{Code: GrabSoldOut}},
		{name: "second grab is a repeat", user: 10, now: testNow + 5,
			before: func(t *testing.T, c *redis.Client, k CampaignKeys) { campaignGrab(t, c, k, 10, testNow, "r1") },
			want:   CampaignGrabReply{Code: GrabGranted, Seq: 1, Amount: 500, AtMs: testNow, Repeat: true}},
		{name: "a repeat after the end", user: 10, now: testEnds + 5,
			before: func(t *testing.T, c *redis.Client, k CampaignKeys) { campaignGrab(t, c, k, 10, testNow, "r1") },
			want:   CampaignGrabReply{Code: GrabGranted, Seq: 1, Amount: 500, AtMs: testNow, Repeat: true}},
		{name: "limit two: a second award", mutate: func(s *CampaignState) { s.PerUserLimit = 2 }, user: 10, now: testNow + 5,
			before: func(t *testing.T, c *redis.Client, k CampaignKeys) { campaignGrab(t, c, k, 10, testNow, "r1") },
			want:   CampaignGrabReply{Code: GrabGranted, Seq: 2, Amount: 300, AtMs: testNow + 5}},
		{name: "limit two: the latest back", mutate: func(s *CampaignState) { s.PerUserLimit = 2 }, user: 10, now: testNow + 9,
			before: func(t *testing.T, c *redis.Client, k CampaignKeys) {
				campaignGrab(t, c, k, 10, testNow, "r1")
				campaignGrab(t, c, k, 10, testNow+5, "r2")
			},
			want: CampaignGrabReply{Code: GrabGranted, Seq: 2, Amount: 300, AtMs: testNow + 5, Repeat: true}},
		{name: "a rebuilt holder gets a repeat", user: 11, now: testNow,
			mutate: func(s *CampaignState) {
				s.Awards = s.Awards[1:]
				s.Granted = []Award{{UserID: 11, Seq: 1, Amount: 500, AtMs: testNow - 10}}
			},
			want: CampaignGrabReply{Code: GrabGranted, Seq: 1, Amount: 500, AtMs: testNow - 10, Repeat: true}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, c, k := setupCampaign(t, tc.mutate)
			if tc.before != nil {
				tc.before(t, c, k)
			}
			if got := campaignGrab(t, c, k, tc.user, tc.now, "this"); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// A re-send of the call that granted an award (go-redis after a lost reply)
// gets that award as new, not as a repeat, and takes nothing more.
func TestCampaignGrabResend(t *testing.T) {
	_, c, k := setupCampaign(t, func(s *CampaignState) { s.PerUserLimit = 2 })
	first := campaignGrab(t, c, k, 10, testNow, "req")
	again := campaignGrab(t, c, k, 10, testNow+1, "req")
	if first != again || first.Repeat {
		t.Fatalf("first %+v, re-send %+v", first, again)
	}
	if n, _ := c.LLen(context.Background(), k.Awards).Result(); n != 2 {
		t.Fatalf("%d awards left, want 2", n)
	}
}

// Every grant records the user, the award by seq, and one event for the writer.
func TestCampaignGrabRecords(t *testing.T) {
	_, c, k := setupCampaign(t, nil)
	ctx := context.Background()
	for u := int64(10); u <= 13; u++ {
		campaignGrab(t, c, k, u, testNow+u, "r")
	}
	events, err := c.XRange(ctx, k.Events, "-", "+").Result()
	if err != nil || len(events) != 3 {
		t.Fatalf("events %v, %v", events, err)
	}
	want := map[string]any{"t": "award", "cp": "77", "u": "12", "seq": "3", "amt": "200", "at": "1700000000012"}
	for f, v := range want {
		if events[2].Values[f] != v {
			t.Fatalf("event %v: %s = %v, want %v", events[2].Values, f, events[2].Values[f], v)
		}
	}
	a, ok, err := CampaignAward(ctx, c, k, 2)
	if err != nil || !ok || a != (Award{UserID: 11, Seq: 2, Amount: 300, AtMs: testNow + 11}) {
		t.Fatalf("award 2 = %+v, %v, %v", a, ok, err)
	}
	if _, ok, err := CampaignAward(ctx, c, k, 4); ok || err != nil {
		t.Fatalf("award 4 found: %v, %v", ok, err)
	}
	if got := campaignGrab(t, c, k, 13, testNow+20, "r2"); got.Code != GrabSoldOut {
		t.Fatalf("user 13: %+v", got)
	}
}

func TestCampaignNotLoaded(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer c.Close()
	r, err := CampaignGrab(context.Background(), Direct(c), NewKeys("grab", 16).Campaign(5), 5, 10, testNow, "r")
	if err != nil || r.Code != GrabNotLoaded {
		t.Fatalf("%+v, %v", r, err)
	}
}

// A load never replaces a state that is there, and a large campaign loads in
// chunks (Lua's unpack is bounded).
func TestCampaignLoad(t *testing.T) {
	_, c, k := setupCampaign(t, func(s *CampaignState) {
		s.Awards = nil
		for i := 1; i <= 25_000; i++ {
			s.Awards = append(s.Awards, Share{Seq: i, Amount: 1})
		}
		for i := 0; i < 2_500; i++ {
			s.Granted = append(s.Granted, Award{UserID: int64(1000 + i), Seq: 25_001 + i, Amount: 1, AtMs: testNow})
		}
	})
	ctx := context.Background()
	if n, _ := c.LLen(ctx, k.Awards).Result(); n != 25_000 {
		t.Fatalf("%d awards", n)
	}
	if n, _ := c.HLen(ctx, k.Users).Result(); n != 2_501 { // and the placeholder
		t.Fatalf("%d users", n)
	}
	ok, err := LoadCampaign(ctx, c, k, CampaignState{Status: "open", Awards: []Share{{1, 1}}})
	if err != nil || ok != Fresh {
		t.Fatalf("second load = %v, %v", ok, err)
	}
	if n, _ := c.LLen(ctx, k.Awards).Result(); n != 25_000 {
		t.Fatalf("%d awards after a second load", n)
	}
}
