package lua

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

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
	for f, dst := range map[string]*int64{packetExpiresAt: &p.ExpiresAtMs, packetFinishedAt: &p.FinishedAtMs,
		packetClosedAt: &p.ClosedAtMs} {
		if *dst, err = optionalInt(h, f); err != nil {
			return PacketHash{}, false, fmt.Errorf("%w: packet %s", err, f)
		}
	}
	return p, true, nil
}

// optionalInt is field f of h as an integer; 0 when absent.
func optionalInt(h map[string]string, f string) (int64, error) {
	v, ok := h[f]
	if !ok {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not an integer", ErrUnexpectedReply, v)
	}
	return n, nil
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
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		state = p.HGetAll(ctx, k.State)
		grabbed = p.HGetAll(ctx, k.Grabbed)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
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
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		state = p.HGetAll(ctx, k.State)
		shares = p.LRange(ctx, k.Shares, 0, -1)
		eligible = p.SMembers(ctx, k.Eligible)
		grabbed = p.HGetAll(ctx, k.Grabbed)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
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
