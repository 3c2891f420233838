package lua

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// ReadPacketState reads back every field load.lua wrote, then what grab.lua
// and close.lua changed.
func TestReadPacketStateRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, c, k := setup(t, func(s *PacketState) {
		s.Grabbed = []Grabbed{{UserID: 12, Seq: 9, Amount: 50, AtMs: testNow - 3, Credited: true}}
	})
	epoch, err := c.Get(ctx, k.Epoch).Result()
	if err != nil || epoch == "" {
		t.Fatalf("epoch %q, %v", epoch, err)
	}
	st, hash, ok, err := ReadPacketState(ctx, c, k)
	if err != nil || !ok {
		t.Fatalf("ReadPacketState = %v, %v", ok, err)
	}
	slices.Sort(st.Eligible)
	want := PacketState{Status: "open", ExpiresAtMs: testExpires, Credit: true, Epoch: epoch,
		Shares: []Share{{1, 500}, {2, 300}}, Eligible: []int64{10, 11, 12},
		Grabbed: []Grabbed{{UserID: 12, Seq: 9, Amount: 50, AtMs: testNow - 3, Credited: true}}}
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("loaded state = %+v\nwant %+v", st, want)
	}
	if w := (PacketHash{Status: "open", ExpiresAtMs: testExpires, Credit: true, Epoch: epoch}); hash != w {
		t.Fatalf("hash = %+v, want %+v", hash, w)
	}

	grabRaw(t, c, k, 10, testNow, "r1")
	if _, err := Close(ctx, c, k, testPacket, testExpires); err != nil {
		t.Fatal(err)
	}
	st, hash, ok, err = ReadPacketState(ctx, c, k)
	if err != nil || !ok {
		t.Fatalf("ReadPacketState after close = %v, %v", ok, err)
	}
	if w := (PacketHash{Status: "expired", ExpiresAtMs: testExpires, Credit: true, ClosedAtMs: testExpires, Epoch: epoch}); hash != w {
		t.Fatalf("hash after close = %+v, want %+v", hash, w)
	}
	if len(st.Shares) != 0 || len(st.Grabbed) != 2 {
		t.Fatalf("after close: shares %+v, grabbed %+v", st.Shares, st.Grabbed)
	}
	if _, _, ok, err := ReadPacketState(ctx, c, NewKeys("grab", 16).Packet(999)); ok || err != nil {
		t.Fatalf("absent packet: %v, %v", ok, err)
	}
}

func TestDecodeShare(t *testing.T) {
	for v, want := range map[string]Share{"1:500": {1, 500}, "2:300:last": {2, 300}} {
		s, final, err := DecodeShare(v)
		if err != nil || s != want || final != (v == "2:300:last") {
			t.Errorf("DecodeShare(%q) = %+v, %v, %v", v, s, final, err)
		}
		if EncodeShare(s, final) != v {
			t.Errorf("EncodeShare(%+v, %v) = %q, want %q", s, final, EncodeShare(s, final), v)
		}
	}
	for _, v := range []string{"", "1", "1:x", "1:2:first", "1:2:3:4"} {
		if _, _, err := DecodeShare(v); !errors.Is(err, ErrUnexpectedReply) {
			t.Errorf("DecodeShare(%q): err = %v", v, err)
		}
	}
}

// ReadCampaign reads back campaign_load.lua's state hash, and the awards
// left as campaign_grab.lua takes them.
func TestReadCampaignRoundTrip(t *testing.T) {
	ctx := context.Background()
	_, c, k := setupCampaign(t, func(s *CampaignState) { s.PerUserLimit = 2 })
	epoch, err := c.Get(ctx, k.Epoch).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := HotCampaign{Loaded: true, Remaining: 3, CampaignHash: CampaignHash{Status: "open",
		StartsAtMs: testStarts, EndsAtMs: testEnds, PerUserLimit: 2, Epoch: epoch}}
	if got, err := ReadCampaign(ctx, c, k); err != nil || got != want {
		t.Fatalf("ReadCampaign = %+v, %v\nwant %+v", got, err, want)
	}
	campaignGrab(t, c, k, 10, testNow, "r1")
	campaignGrab(t, c, k, 10, testNow+1, "r2")
	want.Remaining = 1
	if got, err := ReadCampaign(ctx, c, k); err != nil || got != want {
		t.Fatalf("after two grabs = %+v, %v\nwant %+v", got, err, want)
	}
	u, ok, err := CampaignUserOf(ctx, c, k, 10)
	if w := (CampaignUser{Count: 2, Award: Award{UserID: 10, Seq: 2, Amount: 300, AtMs: testNow + 1}}); err != nil || !ok || u != w {
		t.Fatalf("user 10 = %+v, %v, %v; want %+v", u, ok, err, w)
	}
	if got, err := ReadCampaign(ctx, c, NewKeys("grab", 16).Campaign(999)); err != nil || got != (HotCampaign{}) {
		t.Fatalf("absent campaign = %+v, %v", got, err)
	}
}
