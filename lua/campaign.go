package lua

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

var (
	campaignGrabScript = register("campaign_grab.lua")
	campaignLoadScript = register("campaign_load.lua")
)

// CampaignGrabReply is what campaign_grab.lua answered. Seq, Amount, AtMs
// and Repeat are set only when Code is GrabGranted. The codes are grab.lua's
// (GrabGranted, GrabNotLoaded, GrabNotOpen, GrabExpired, GrabSoldOut).
type CampaignGrabReply struct {
	Code   GrabCode
	Seq    int
	Amount int64 // fen
	AtMs   int64
	Repeat bool
}

// CampaignGrab runs campaign_grab.lua for one user through run (Direct, or a
// ScriptPipeline sharing round trips with concurrent grabs). requestID must
// be the same for every re-send of one logical call: a pipeline lost on the
// wire is sent again whole.
func CampaignGrab(ctx context.Context, run Runner, k CampaignKeys, campaignID, userID, nowMs int64, requestID string) (CampaignGrabReply, error) {
	v, err := run.Run(ctx, campaignGrabScript, campaignGrabKeys(k), userID, nowMs, campaignID, requestID).Slice()
	if err != nil {
		return CampaignGrabReply{}, err
	}
	code, err := replyCode(v, "campaign grab")
	if err != nil {
		return CampaignGrabReply{}, err
	}
	r := CampaignGrabReply{Code: GrabCode(code)}
	switch r.Code {
	case GrabGranted:
		if len(v) != 5 {
			return CampaignGrabReply{}, fmt.Errorf("%w: campaign grab reply of %d items", ErrUnexpectedReply, len(v))
		}
		seq, ok1 := v[1].(int64)
		amount, err1 := intString(v[2])
		at, err2 := intString(v[3])
		rep, ok2 := v[4].(int64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return CampaignGrabReply{}, fmt.Errorf("%w: campaign grab reply %v", ErrUnexpectedReply, v)
		}
		r.Seq, r.Amount, r.AtMs, r.Repeat = int(seq), amount, at, rep == 1
	case GrabNotLoaded, GrabVerify, GrabNotOpen, GrabExpired, GrabSoldOut:
		if len(v) != 1 {
			return CampaignGrabReply{}, fmt.Errorf("%w: campaign grab reply %v", ErrUnexpectedReply, v)
		}
	default:
		return CampaignGrabReply{}, fmt.Errorf("%w: campaign grab code %d", ErrUnexpectedReply, code)
	}
	return r, nil
}

func campaignGrabKeys(k CampaignKeys) []string {
	return []string{k.State, k.Awards, k.Users, k.Awarded, k.Events, k.Epoch}
}

// CampaignState is everything campaign_load.lua writes for one campaign.
type CampaignState struct {
	Status       string
	StartsAtMs   int64
	EndsAtMs     int64
	PerUserLimit int
	KeepUntilMs  int64
	Awards       []Share // not yet granted, in hand-out order
	Granted      []Award // already granted
	// Epoch is the dataset epoch MySQL was read under (EnsureEpoch); ""
	// loads under whatever epoch the shard has.
	Epoch string
}

// Award is a campaign award granted to a user.
type Award struct {
	UserID int64
	Seq    int
	Amount int64 // fen
	AtMs   int64
}

// LoadCampaign runs campaign_load.lua: it writes the state if absent, and
// verifies one loaded under another dataset epoch against st, MySQL's view
// (see the script's header). The users hash gets, per user, the number of
// awards granted and the latest (highest seq) of them.
func LoadCampaign(ctx context.Context, c redis.Cmdable, k CampaignKeys, st CampaignState) (LoadResult, error) {
	type held struct {
		n      int
		latest Award
	}
	users := map[int64]*held{}
	var order []int64
	for _, g := range st.Granted {
		h := users[g.UserID]
		if h == nil {
			h = &held{}
			users[g.UserID] = h
			order = append(order, g.UserID)
		}
		h.n++
		if g.Seq > h.latest.Seq {
			h.latest = g
		}
	}
	args := make([]any, 0, 9+len(st.Awards)+2*len(order)+2*len(st.Granted))
	args = append(args, st.Status, st.StartsAtMs, st.EndsAtMs, st.PerUserLimit, st.KeepUntilMs,
		len(st.Awards), len(order), len(st.Granted), st.Epoch)
	for _, a := range st.Awards {
		args = append(args, EncodeShare(a, false))
	}
	for _, u := range order {
		h := users[u]
		// No request id: a rebuilt award is never a re-send of a call.
		args = append(args, u, encodeCampaignUser(CampaignUser{Count: h.n, Award: h.latest}))
	}
	for _, g := range st.Granted {
		args = append(args, g.Seq, encodeAward(g))
	}
	return runLoad(ctx, c, campaignLoadScript, campaignLoadKeys(k), k.Epoch, args)
}

func campaignLoadKeys(k CampaignKeys) []string {
	return []string{k.State, k.Awards, k.Users, k.Awarded, k.Epoch}
}
