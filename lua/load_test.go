package lua

import (
	"context"
	"reflect"
	"testing"
)

// A state loaded under another dataset epoch (Redis came back older than
// MySQL) is brought in line with MySQL before it serves: the share MySQL
// gave user 20 leaves the list and is answered to 20 as a repeat, never
// handed to anyone else; what Redis alone knows stays.
func TestLoadVerifiesAStateOfAnotherEpoch(t *testing.T) {
	ctx := context.Background()
	_, c, k := setup(t, func(s *PacketState) { s.Shares = append(s.Shares, Share{3, 200}) })
	// Redis alone knows user 10's grab of seq 1 (its event is still in the
	// stream); MySQL knows user 20's grab of seq 2, which Redis forgot.
	if r := grabRaw(t, c, k, 10, testNow, "r1"); r[1] != int64(1) {
		t.Fatalf("first grab = %v", r)
	}
	c.Set(ctx, k.Epoch, "another-run", 0)
	if r := grabRaw(t, c, k, 11, testNow, "r2"); !reflect.DeepEqual(r, []any{int64(-2)}) {
		t.Fatalf("grab before verification = %v, want verify", r)
	}
	mysql := PacketState{Status: "open", ExpiresAtMs: testExpires, Credit: true, KeepUntilMs: testExpires,
		Shares: []Share{{1, 500}, {3, 200}}, Eligible: []int64{10, 11, 12, 20},
		Grabbed: []Grabbed{{UserID: 20, Seq: 2, Amount: 300, AtMs: testNow - 5, Credited: true}}}
	if res, err := Load(ctx, c, k, mysql); err != nil || res != Verified {
		t.Fatalf("load = %v, %v; want Verified", res, err)
	}
	if got := c.LRange(ctx, k.Shares, 0, -1).Val(); !reflect.DeepEqual(got, []string{"3:200:last"}) {
		t.Fatalf("shares = %v", got)
	}
	if res, err := Load(ctx, c, k, mysql); err != nil || res != Fresh {
		t.Fatalf("second load = %v, %v; want Fresh", res, err)
	}
	want := map[int64][]any{
		10: {int64(0), int64(1), "500", "1700000000000", int64(1), int64(0)}, // the re-send of r1
		20: {int64(0), int64(2), "300", "1699999999995", int64(1), int64(1)},
		11: {int64(0), int64(3), "200", "1700000000000", int64(1), int64(0)},
		12: {int64(5)},
	}
	for _, u := range []int64{10, 20, 11, 12} {
		req := "r1"
		if u != 10 {
			req = "r-other"
		}
		if got := grabRaw(t, c, k, u, testNow, req); !reflect.DeepEqual(got, want[u]) {
			t.Fatalf("grab by %d = %#v, want %#v", u, got, want[u])
		}
	}
	if st := c.HGet(ctx, k.State, "status").Val(); st != "finished" {
		t.Fatalf("status %q after the last share", st)
	}
}

// MySQL's terminal statuses win over an older Redis: a closed packet keeps
// no share (its remainder was refunded), a finished one none either, a
// failed payment takes no grabs, a settled one credits them.
func TestLoadVerifyTakesTheStatusMySQLMovedTo(t *testing.T) {
	cases := []struct {
		mysql, redisBefore, want string
		credit                   bool
		shares                   int
	}{
		{mysql: "expired", redisBefore: "open", want: "expired", shares: 0},
		{mysql: "refunded", redisBefore: "open", want: "refunded", shares: 0},
		{mysql: "pay_failed", redisBefore: "awaiting_settlement", want: "pay_failed", shares: 2},
		{mysql: "open", redisBefore: "awaiting_settlement", want: "open", credit: true, shares: 2},
		{mysql: "open", redisBefore: "finished", want: "finished", credit: true, shares: 2}, // Redis is ahead
	}
	for _, tc := range cases {
		t.Run(tc.mysql+" over "+tc.redisBefore, func(t *testing.T) {
			ctx := context.Background()
			_, c, k := setup(t, func(s *PacketState) { s.Status, s.Credit = tc.redisBefore, false })
			c.Set(ctx, k.Epoch, "another-run", 0)
			res, err := Load(ctx, c, k, PacketState{Status: tc.mysql, ExpiresAtMs: testExpires, Credit: tc.credit,
				KeepUntilMs: testExpires, Shares: []Share{{1, 500}, {2, 300}}, Eligible: []int64{10}})
			if err != nil || res != Verified {
				t.Fatalf("load = %v, %v", res, err)
			}
			if st := c.HGet(ctx, k.State, "status").Val(); st != tc.want {
				t.Fatalf("status %q, want %q", st, tc.want)
			}
			if n := c.LLen(ctx, k.Shares).Val(); n != int64(tc.shares) {
				t.Fatalf("%d shares left, want %d", n, tc.shares)
			}
			if cr := c.HGet(ctx, k.State, "credit").Val(); (cr == "1") != tc.credit {
				t.Fatalf("credit %q", cr)
			}
		})
	}
}

// A campaign loaded under another epoch gets back the awards MySQL holds:
// they leave the list, the per-user limit counts them, and their owners
// are answered them as repeats.
func TestLoadCampaignVerifiesAStateOfAnotherEpoch(t *testing.T) {
	ctx := context.Background()
	_, c, k := setupCampaign(t, nil)
	c.Set(ctx, k.Epoch, "another-run", 0)
	r, err := CampaignGrab(ctx, Direct(c), k, testCampaign, 5, testNow, "r1")
	if err != nil || r.Code != GrabVerify {
		t.Fatalf("grab before verification = %+v, %v", r, err)
	}
	mysql := CampaignState{Status: "open", StartsAtMs: testStarts, EndsAtMs: testEnds, PerUserLimit: 1, KeepUntilMs: testEnds,
		Awards: []Share{{2, 300}, {3, 200}}, Granted: []Award{{UserID: 2, Seq: 1, Amount: 500, AtMs: testNow - 9}}}
	if res, err := LoadCampaign(ctx, c, k, mysql); err != nil || res != Verified {
		t.Fatalf("load = %v, %v; want Verified", res, err)
	}
	if got := c.LRange(ctx, k.Awards, 0, -1).Val(); !reflect.DeepEqual(got, []string{"2:300", "3:200"}) {
		t.Fatalf("awards = %v", got)
	}
	r2, err := CampaignGrab(ctx, Direct(c), k, testCampaign, 2, testNow, "r2")
	if err != nil || r2.Code != GrabGranted || r2.Seq != 1 || !r2.Repeat {
		t.Fatalf("user 2 = %+v, %v; want seq 1 as a repeat", r2, err)
	}
	r3, err := CampaignGrab(ctx, Direct(c), k, testCampaign, 3, testNow, "r3")
	if err != nil || r3.Code != GrabGranted || r3.Seq != 2 || r3.Repeat {
		t.Fatalf("user 3 = %+v, %v; want seq 2", r3, err)
	}
	if a, ok, err := CampaignAward(ctx, c, k, 1); err != nil || !ok || a.UserID != 2 {
		t.Fatalf("award 1 = %+v %v %v", a, ok, err)
	}
	if u, ok, err := CampaignUserOf(ctx, c, k, 2); err != nil || !ok || u.Count != 1 || u.Award.Seq != 1 {
		t.Fatalf("user 2 holds %+v %v %v", u, ok, err)
	}
}

// ReadPacket reads back what load.lua and grab.lua wrote: the grabs in the
// grabbed hash and the finish of the last share.
func TestReadPacketRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, c, k := setup(t, func(s *PacketState) {
		s.Grabbed = []Grabbed{{UserID: 12, Seq: 9, Amount: 50, AtMs: testNow - 3, Credited: false}}
	})
	grabRaw(t, c, k, 10, testNow, "r1")
	grabRaw(t, c, k, 11, testNow+1, "r2")
	h, err := ReadPacket(ctx, c, k)
	if err != nil {
		t.Fatal(err)
	}
	epoch, _ := c.Get(ctx, k.Epoch).Result()
	wantHash := PacketHash{Status: "finished", ExpiresAtMs: testExpires, Credit: true, FinishedAtMs: testNow + 1, Epoch: epoch}
	if !h.Loaded || h.PacketHash != wantHash {
		t.Fatalf("hot packet = %+v, want %+v", h.PacketHash, wantHash)
	}
	got := map[int64]Grabbed{}
	for _, g := range h.Grabbed {
		got[g.UserID] = g
	}
	want := map[int64]Grabbed{
		10: {UserID: 10, Seq: 1, Amount: 500, AtMs: testNow, Credited: true},
		11: {UserID: 11, Seq: 2, Amount: 300, AtMs: testNow + 1, Credited: true},
		12: {UserID: 12, Seq: 9, Amount: 50, AtMs: testNow - 3},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("grabbed = %+v\nwant %+v", got, want)
	}
	if h, err := ReadPacket(ctx, c, NewKeys("grab", 16).Packet(999)); err != nil || h.Loaded {
		t.Fatalf("absent packet = %+v, %v", h, err)
	}
}
