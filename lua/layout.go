package lua

// The layout of every hash and record the scripts write: field names as
// constants, each next to the typed reader that decodes it.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fields of a packet's state hash (PacketKeys.State), as load.lua, grab.lua,
// close.lua and settle.lua write them; times are unix ms. stateStatus and
// stateEpoch are a campaign's state hash's too.
const (
	stateStatus      = "status"
	packetExpiresAt  = "expires_at"
	packetCredit     = "credit" // "1": grabs are credited at once; "0" while awaiting settlement
	packetFinishedAt = "finished_at"
	packetClosedAt   = "closed_at"
	stateEpoch       = "ep" // the dataset epoch the state was loaded or verified under
)

// PacketHash is a packet's state hash. FinishedAtMs (grab.lua, on the last
// share) and ClosedAtMs (close.lua) are 0 until set.
type PacketHash struct {
	Status       string
	ExpiresAtMs  int64
	Credit       bool
	FinishedAtMs int64
	ClosedAtMs   int64
	Epoch        string
}

// parsePacketHash reads a state hash as HGETALL answers it; ok is false when
// it is empty (not in Redis).
func parsePacketHash(h map[string]string) (p PacketHash, ok bool, err error) {
	if h[stateStatus] == "" {
		return PacketHash{}, false, nil
	}
	p = PacketHash{Status: h[stateStatus], Credit: h[packetCredit] == "1", Epoch: h[stateEpoch]}
	err = intFields(h, map[string]*int64{packetExpiresAt: &p.ExpiresAtMs, packetFinishedAt: &p.FinishedAtMs,
		packetClosedAt: &p.ClosedAtMs})
	if err != nil {
		return PacketHash{}, false, fmt.Errorf("%w: packet state", err)
	}
	return p, true, nil
}

// intFields sets each *dst to its field of h as an integer; 0 when absent.
func intFields(h map[string]string, dst map[string]*int64) error {
	for f, d := range dst {
		v, ok := h[f]
		if !ok {
			*d = 0
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%w: %s %q is not an integer", ErrUnexpectedReply, f, v)
		}
		*d = n
	}
	return nil
}

// EncodeShare is the list entry of a share; the final share of a list is
// marked, so grab.lua knows the packet is finished when it takes it.
func EncodeShare(s Share, final bool) string {
	if final {
		return fmt.Sprintf("%d:%d:last", s.Seq, s.Amount)
	}
	return fmt.Sprintf("%d:%d", s.Seq, s.Amount)
}

func encodeGrabbed(g Grabbed) string {
	return fmt.Sprintf("%d:%d:%d:%d:", g.Seq, g.Amount, g.AtMs, boolInt(g.Credited))
}

// DecodeShare parses an entry of a share or award list, "seq:amount" or,
// for a packet's final share, "seq:amount:last" (EncodeShare).
func DecodeShare(v string) (s Share, final bool, err error) {
	f := strings.Split(v, ":")
	if len(f) == 3 && f[2] == "last" {
		final, f = true, f[:2]
	}
	if len(f) != 2 {
		return Share{}, false, fmt.Errorf("%w: share %q", ErrUnexpectedReply, v)
	}
	seq, err1 := strconv.Atoi(f[0])
	amount, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return Share{}, false, fmt.Errorf("%w: share %q", ErrUnexpectedReply, v)
	}
	return Share{Seq: seq, Amount: amount}, final, nil
}

// DecodeGrabbed parses a value of the grabbed hash,
// "seq:amount:at_ms:credited:request" (grab.lua; load.lua leaves request
// empty).
func DecodeGrabbed(userID int64, v string) (Grabbed, error) {
	f := strings.SplitN(v, ":", 5)
	if len(f) != 5 || f[3] != "0" && f[3] != "1" {
		return Grabbed{}, fmt.Errorf("%w: grabbed value %q", ErrUnexpectedReply, v)
	}
	seq, err1 := strconv.Atoi(f[0])
	amount, err2 := strconv.ParseInt(f[1], 10, 64)
	at, err3 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return Grabbed{}, fmt.Errorf("%w: grabbed value %q", ErrUnexpectedReply, v)
	}
	return Grabbed{UserID: userID, Seq: seq, Amount: amount, AtMs: at, Credited: f[3] == "1"}, nil
}

// decodeGrabbedHash reads the grabbed hash (user id -> value), skipping
// GrabbedPlaceholder, in no particular order.
func decodeGrabbedHash(h map[string]string) ([]Grabbed, error) {
	var out []Grabbed
	for user, val := range h {
		if user == GrabbedPlaceholder {
			continue
		}
		uid, err := strconv.ParseInt(user, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: grabbed user %q", ErrUnexpectedReply, user)
		}
		g, err := DecodeGrabbed(uid, val)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// HotPacket is what Redis holds of a packet, which may be ahead of MySQL:
// grabs the writer has not applied yet, a finish or a close.
type HotPacket struct {
	Loaded bool // Redis has the packet's state
	PacketHash
	Grabbed []Grabbed // in no particular order
}

// ReadPacket reads a packet's hot state: the state hash written by
// load.lua, grab.lua and close.lua, and the grabbed hash.
func ReadPacket(ctx context.Context, c redis.Cmdable, k PacketKeys) (HotPacket, error) {
	var state, grabbed *redis.MapStringStringCmd
	if err := pipelined(ctx, c, func(p redis.Pipeliner) {
		state = p.HGetAll(ctx, k.State)
		grabbed = p.HGetAll(ctx, k.Grabbed)
	}); err != nil {
		return HotPacket{}, err
	}
	hash, ok, err := parsePacketHash(state.Val())
	if err != nil || !ok {
		return HotPacket{}, err
	}
	g, err := decodeGrabbedHash(grabbed.Val())
	if err != nil {
		return HotPacket{}, err
	}
	return HotPacket{Loaded: true, PacketHash: hash, Grabbed: g}, nil
}

// ReadPacketState reads everything load.lua wrote for a packet, as grabs and
// closes left it: the state hash, the shares not yet grabbed, the eligible
// users and the grabbed hash. KeepUntilMs is not read (it is the keys'
// expiry). ok is false when Redis has no state for the packet.
func ReadPacketState(ctx context.Context, c redis.Cmdable, k PacketKeys) (st PacketState, hash PacketHash, ok bool, err error) {
	var state, grabbed *redis.MapStringStringCmd
	var shares, eligible *redis.StringSliceCmd
	if err := pipelined(ctx, c, func(p redis.Pipeliner) {
		state = p.HGetAll(ctx, k.State)
		shares = p.LRange(ctx, k.Shares, 0, -1)
		eligible = p.SMembers(ctx, k.Eligible)
		grabbed = p.HGetAll(ctx, k.Grabbed)
	}); err != nil {
		return PacketState{}, PacketHash{}, false, err
	}
	if hash, ok, err = parsePacketHash(state.Val()); err != nil || !ok {
		return PacketState{}, PacketHash{}, false, err
	}
	st = PacketState{Status: hash.Status, ExpiresAtMs: hash.ExpiresAtMs, Credit: hash.Credit, Epoch: hash.Epoch}
	for _, v := range shares.Val() {
		s, _, err := DecodeShare(v)
		if err != nil {
			return PacketState{}, PacketHash{}, false, err
		}
		st.Shares = append(st.Shares, s)
	}
	for _, v := range eligible.Val() {
		u, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return PacketState{}, PacketHash{}, false, fmt.Errorf("%w: eligible user %q", ErrUnexpectedReply, v)
		}
		st.Eligible = append(st.Eligible, u)
	}
	if st.Grabbed, err = decodeGrabbedHash(grabbed.Val()); err != nil {
		return PacketState{}, PacketHash{}, false, err
	}
	return st, hash, true, nil
}

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
	if err := pipelined(ctx, c, func(p redis.Pipeliner) {
		state = p.HGetAll(ctx, k.State)
		left = p.LLen(ctx, k.Awards)
	}); err != nil {
		return HotCampaign{}, err
	}
	h := state.Val()
	if h[stateStatus] == "" {
		return HotCampaign{}, nil
	}
	hot := HotCampaign{Loaded: true, Remaining: int(left.Val()),
		CampaignHash: CampaignHash{Status: h[stateStatus], Epoch: h[stateEpoch]}}
	var limit int64
	err := intFields(h, map[string]*int64{campaignStartsAt: &hot.StartsAtMs, campaignEndsAt: &hot.EndsAtMs, campaignLimit: &limit})
	if err != nil {
		return HotCampaign{}, fmt.Errorf("%w: campaign state", err)
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

// Fields of a SKU's hash (StockKeys.SKU), as the stock scripts and
// stock_load.lua write them: its status (on, off, rev), its version, and
// per scope ("high_seas", "pool:<id>") four counters, "<scope>:t" total,
// ":a" available, ":r" reserved, ":s" sold.
const (
	skuStatus  = "st"
	skuVersion = "ver"
)

// skuCounters are the suffixes of a scope's counters, in StockCounters order.
var skuCounters = [4]string{"t", "a", "r", "s"}

// parseStockSKU reads a SKU hash written by the stock scripts or stock_load.lua.
func parseStockSKU(h map[string]string) (StockSKUState, error) {
	st := StockSKUState{Status: h[skuStatus], Scopes: map[string]StockCounters{}}
	if v, ok := h[skuVersion]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return StockSKUState{}, fmt.Errorf("%w: SKU version %q", ErrUnexpectedReply, v)
		}
		st.Version = n
	}
	for f := range h {
		scope, ok := strings.CutSuffix(f, ":"+skuCounters[0])
		if !ok {
			continue
		}
		var c [4]int64
		for i, x := range skuCounters {
			n, err := strconv.ParseInt(h[scope+":"+x], 10, 64)
			if err != nil {
				return StockSKUState{}, fmt.Errorf("%w: SKU counter %s:%s = %q", ErrUnexpectedReply, scope, x, h[scope+":"+x])
			}
			c[i] = n
		}
		st.Scopes[scope] = StockCounters{Total: c[0], Available: c[1], Reserved: c[2], Sold: c[3]}
	}
	return st, nil
}

// Record states: what a record's value (StockKeys.Record, field op id)
// starts with, before its first "#". A voucher's record starts with its op
// (submit, edit, revoke, salvage, release, rollback) instead.
const (
	StockMarkDeducted  = "d" // an order's items were deducted: "d#<items>"
	StockMarkReturned  = "r" // returned (perhaps before any deduct): "r#<items>"
	StockMarkRefused   = "x" // the deduct was refused: "x#<code>#"
	StockMarkTried     = "t" // a TCC branch reserved: "t#<items>"
	StockMarkConfirmed = "f" // confirmed: "f#<items>"
	StockMarkCancelled = "c" // cancelled: "c#<items>"
)

// Fields of an order's hash across products (Keys.StockOrder), as
// stock_order.lua writes them.
const (
	orderState      = "s" // pending, failed or returned
	orderCode       = "code"
	orderProducts   = "products"
	orderProductSep = ";"
)

// JoinStockProducts is an order's products as stock_order.lua keeps them
// (begin's argument; StockOrderState.ProductList splits them).
func JoinStockProducts(products []string) string { return strings.Join(products, orderProductSep) }

// ReadStockOrder reads an order's hash across products without changing
// it; State is "" when Redis does not know the order.
func ReadStockOrder(ctx context.Context, c redis.Cmdable, orderKey string) (StockOrderState, error) {
	v, err := c.HMGet(ctx, orderKey, orderState, orderCode, orderProducts).Result()
	if err != nil {
		return StockOrderState{}, err
	}
	var st StockOrderState
	for i, dst := range []*string{&st.State, &st.Code, &st.Products} {
		if v[i] == nil {
			continue
		}
		s, ok := v[i].(string)
		if !ok {
			return StockOrderState{}, fmt.Errorf("%w: stock order %v", ErrUnexpectedReply, v)
		}
		*dst = s
	}
	return st, nil
}

// StockProduct is an activity product's form in the order index, an
// order's products and a voucher's set: "<activity id>:<product id>".
func StockProduct(activityID, productID int64) string {
	return strconv.FormatInt(activityID, 10) + ":" + strconv.FormatInt(productID, 10)
}

// ParseStockProduct reads StockProduct's form.
func ParseStockProduct(s string) (activityID, productID int64, err error) {
	a, p, ok := strings.Cut(s, ":")
	ai, err1 := strconv.ParseInt(a, 10, 64)
	pi, err2 := strconv.ParseInt(p, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w: stock product %q", ErrUnexpectedReply, s)
	}
	return ai, pi, nil
}

// OpenProbe queues on p a probe's list of shares (probe.lua pops them), the
// last one marked final when lastFinal; the list expires after ttl, so an
// interrupted run leaves nothing for long. The caller runs p.Exec.
func OpenProbe(ctx context.Context, p redis.Pipeliner, k ProbeKeys, shares []Share, lastFinal bool, ttl time.Duration) {
	entries := make([]any, len(shares))
	for i, s := range shares {
		entries[i] = EncodeShare(s, lastFinal && i == len(shares)-1)
	}
	p.RPush(ctx, k.Shares, entries...)
	p.Expire(ctx, k.Shares, ttl)
}

// ProbeState is what probe.lua has handed out and what is left.
type ProbeState struct {
	Held map[int64]Share // by user
	Left int             // shares still on the list
}

// ReadProbe reads a probe's record of grants (its grabbed hash, as probe.lua
// writes it: user → share entry) and the length of its list.
func ReadProbe(ctx context.Context, c redis.Cmdable, k ProbeKeys) (ProbeState, error) {
	held, err := c.HGetAll(ctx, k.Grabbed).Result()
	if err != nil {
		return ProbeState{}, err
	}
	left, err := c.LLen(ctx, k.Shares).Result()
	if err != nil {
		return ProbeState{}, err
	}
	st := ProbeState{Held: make(map[int64]Share, len(held)), Left: int(left)}
	for u, v := range held {
		user, err := strconv.ParseInt(u, 10, 64)
		if err != nil {
			return ProbeState{}, fmt.Errorf("%w: probe grant of user %q", ErrUnexpectedReply, u)
		}
		s, _, err := DecodeShare(v)
		if err != nil {
			return ProbeState{}, err
		}
		st.Held[user] = s
	}
	return st, nil
}
