package lua

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Fields of a campaign's state hash (CampaignKeys.State), as
// campaign_load.lua writes them (and stateStatus, stateEpoch); times are
// unix ms.
const (
	campaignStartsAt = "starts_at"
	campaignEndsAt   = "ends_at"
	campaignLimit    = "limit" // awards per user
)

// CampaignHash is a campaign's state hash.
type CampaignHash struct {
	Status       string
	StartsAtMs   int64
	EndsAtMs     int64
	PerUserLimit int
	Epoch        string
}

// HotCampaign is what Redis holds of a campaign, which may be ahead of
// MySQL on what is left.
type HotCampaign struct {
	Loaded bool // Redis has the campaign's state
	CampaignHash
	Remaining int // awards not yet granted
}

// ReadCampaign reads a campaign's state hash and how many awards its list
// still holds.
func ReadCampaign(ctx context.Context, c redis.Cmdable, k CampaignKeys) (HotCampaign, error) {
	var state *redis.MapStringStringCmd
	var left *redis.IntCmd
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		state = p.HGetAll(ctx, k.State)
		left = p.LLen(ctx, k.Awards)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return HotCampaign{}, err
	}
	h := state.Val()
	if h[stateStatus] == "" {
		return HotCampaign{}, nil
	}
	hot := HotCampaign{Loaded: true, Remaining: int(left.Val()),
		CampaignHash: CampaignHash{Status: h[stateStatus], Epoch: h[stateEpoch]}}
	var limit int64
	for f, dst := range map[string]*int64{campaignStartsAt: &hot.StartsAtMs, campaignEndsAt: &hot.EndsAtMs, campaignLimit: &limit} {
		var err error
		if *dst, err = optionalInt(h, f); err != nil {
			return HotCampaign{}, fmt.Errorf("%w: campaign %s", err, f)
		}
	}
	hot.PerUserLimit = int(limit)
	return hot, nil
}

// CampaignUser is a value of a campaign's users hash: how many awards the
// user holds and the latest of them.
type CampaignUser struct {
	Count int
	Award Award
}

// No request id: a loaded award is never a re-send of a call.
func encodeCampaignUser(u CampaignUser) string {
	return fmt.Sprintf("%d:%d:%d:%d:", u.Count, u.Award.Seq, u.Award.Amount, u.Award.AtMs)
}

// CampaignUserOf reads what the users hash holds for a user; ok is false
// when Redis holds nothing for them (no award, or the state is gone).
func CampaignUserOf(ctx context.Context, c redis.Cmdable, k CampaignKeys, userID int64) (u CampaignUser, ok bool, err error) {
	v, err := c.HGet(ctx, k.Users, strconv.FormatInt(userID, 10)).Result()
	if err == redis.Nil {
		return CampaignUser{}, false, nil
	}
	if err != nil {
		return CampaignUser{}, false, err
	}
	u, err = decodeCampaignUser(userID, v)
	return u, err == nil, err
}

// decodeCampaignUser parses "count:seq:amount:at_ms:request" (campaign_grab.lua).
func decodeCampaignUser(userID int64, v string) (CampaignUser, error) {
	f := strings.SplitN(v, ":", 5)
	if len(f) != 5 {
		return CampaignUser{}, fmt.Errorf("%w: users value %q", ErrUnexpectedReply, v)
	}
	var n [4]int64
	for i := range n {
		x, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return CampaignUser{}, fmt.Errorf("%w: users value %q", ErrUnexpectedReply, v)
		}
		n[i] = x
	}
	return CampaignUser{Count: int(n[0]), Award: Award{UserID: userID, Seq: int(n[1]), Amount: n[2], AtMs: n[3]}}, nil
}

// CampaignAward looks an award up by its seq in the awarded hash; ok is
// false when Redis has no such award (never granted, or the state is gone).
func CampaignAward(ctx context.Context, c redis.Cmdable, k CampaignKeys, seq int) (Award, bool, error) {
	v, err := c.HGet(ctx, k.Awarded, strconv.Itoa(seq)).Result()
	if err == redis.Nil {
		return Award{}, false, nil
	}
	if err != nil {
		return Award{}, false, err
	}
	a, err := decodeAward(seq, v)
	return a, err == nil, err
}

// encodeAward is a value of the awarded hash: "user:amount:at_ms".
func encodeAward(a Award) string { return fmt.Sprintf("%d:%d:%d", a.UserID, a.Amount, a.AtMs) }

// decodeAward parses a value of the awarded hash (encodeAward) of seq.
func decodeAward(seq int, v string) (Award, error) {
	f := strings.Split(v, ":")
	if len(f) != 3 {
		return Award{}, fmt.Errorf("%w: awarded value %q", ErrUnexpectedReply, v)
	}
	a := Award{Seq: seq}
	var e1, e2, e3 error
	a.UserID, e1 = strconv.ParseInt(f[0], 10, 64)
	a.Amount, e2 = strconv.ParseInt(f[1], 10, 64)
	a.AtMs, e3 = strconv.ParseInt(f[2], 10, 64)
	if e1 != nil || e2 != nil || e3 != nil {
		return Award{}, fmt.Errorf("%w: awarded value %q", ErrUnexpectedReply, v)
	}
	return a, nil
}
