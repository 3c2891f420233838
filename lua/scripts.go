package lua

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	grabScript   = register("grab.lua")
	loadScript   = register("load.lua")
	probeScript  = register("probe.lua")
	unlockScript = register("unlock.lua")
	closeScript  = register("close.lua")
)

// GrabCode is the outcome code of grab.lua.
type GrabCode int

const (
	GrabGranted   GrabCode = 0
	GrabNotLoaded GrabCode = -1
	// GrabVerify: the state was loaded under another dataset epoch; verify it
	// against MySQL (Load does, under the load lock) and run again.
	GrabVerify      GrabCode = -2
	GrabNotOpen     GrabCode = 2
	GrabExpired     GrabCode = 3
	GrabNotEligible GrabCode = 4
	GrabSoldOut     GrabCode = 5
)

// GrabReply is what grab.lua answered. Seq, Amount, AtMs, Credited and Repeat
// are set only when Code is GrabGranted.
type GrabReply struct {
	Code     GrabCode
	Seq      int
	Amount   int64 // fen
	AtMs     int64
	Credited bool
	Repeat   bool
}

// Grab runs grab.lua for one user. requestID must be the same for every
// re-send of one logical call.
func Grab(ctx context.Context, c redis.Scripter, k PacketKeys, packetID, userID, nowMs int64, requestID string) (GrabReply, error) {
	v, err := grabScript.Run(ctx, c, grabKeys(k), userID, nowMs, packetID, requestID).Slice()
	if err != nil {
		return GrabReply{}, err
	}
	return parseGrabReply(v)
}

func grabKeys(k PacketKeys) []string {
	return []string{k.State, k.Shares, k.Grabbed, k.Eligible, k.Events, k.Epoch}
}

func parseGrabReply(v []any) (GrabReply, error) {
	code, err := replyCode(v, "grab")
	if err != nil {
		return GrabReply{}, err
	}
	r := GrabReply{Code: GrabCode(code)}
	switch r.Code {
	case GrabGranted:
		if len(v) != 6 {
			return GrabReply{}, fmt.Errorf("%w: grab reply of %d items", ErrUnexpectedReply, len(v))
		}
		seq, ok1 := v[1].(int64)
		amount, err1 := intString(v[2])
		at, err2 := intString(v[3])
		credit, ok2 := v[4].(int64)
		rep, ok3 := v[5].(int64)
		if !ok1 || !ok2 || !ok3 || err1 != nil || err2 != nil {
			return GrabReply{}, fmt.Errorf("%w: grab reply %v", ErrUnexpectedReply, v)
		}
		r.Seq, r.Amount, r.AtMs, r.Credited, r.Repeat = int(seq), amount, at, credit == 1, rep == 1
	case GrabNotLoaded, GrabVerify, GrabNotOpen, GrabExpired, GrabNotEligible, GrabSoldOut:
	default:
		return GrabReply{}, fmt.Errorf("%w: grab code %d", ErrUnexpectedReply, code)
	}
	return r, nil
}

// CloseCode is the outcome code of close.lua.
type CloseCode int

const (
	CloseClosed     CloseCode = 0  // closed now; the remainder was taken back
	CloseNotLoaded  CloseCode = -1 // no state in Redis: rebuild it and close again
	CloseVerify     CloseCode = -2 // loaded under another dataset epoch: verify it and close again
	CloseAlready    CloseCode = 1  // expired or refunded before this call
	CloseFinished   CloseCode = 2  // every share was grabbed; nothing to take back
	CloseNotOpen    CloseCode = 3  // unpaid or payment failed
	CloseNotExpired CloseCode = 4
)

// CloseReply is what close.lua answered. Remainder and Count are set only
// when Code is CloseClosed.
type CloseReply struct {
	Code      CloseCode
	Remainder int64 // fen taken back
	Count     int   // shares taken back
}

// Close runs close.lua: if the packet is open (or awaiting settlement) and
// nowMs is at or past its expiry, it is marked expired, its remaining shares
// are taken back and a close event is appended to the shard's stream.
func Close(ctx context.Context, c redis.Scripter, k PacketKeys, packetID, nowMs int64) (CloseReply, error) {
	v, err := closeScript.Run(ctx, c, closeKeys(k), packetID, nowMs).Slice()
	if err != nil {
		return CloseReply{}, err
	}
	return parseCloseReply(v)
}

func closeKeys(k PacketKeys) []string { return []string{k.State, k.Shares, k.Events, k.Epoch} }

func parseCloseReply(v []any) (CloseReply, error) {
	code, err := replyCode(v, "close")
	if err != nil {
		return CloseReply{}, err
	}
	r := CloseReply{Code: CloseCode(code)}
	switch r.Code {
	case CloseClosed:
		if len(v) != 3 {
			return CloseReply{}, fmt.Errorf("%w: close reply of %d items", ErrUnexpectedReply, len(v))
		}
		rem, err := intString(v[1])
		n, ok := v[2].(int64)
		if err != nil || !ok || rem < 0 || n < 0 {
			return CloseReply{}, fmt.Errorf("%w: close reply %v", ErrUnexpectedReply, v)
		}
		r.Remainder, r.Count = rem, int(n)
	case CloseNotLoaded, CloseVerify, CloseAlready, CloseFinished, CloseNotOpen, CloseNotExpired:
		if len(v) != 1 {
			return CloseReply{}, fmt.Errorf("%w: close reply %v", ErrUnexpectedReply, v)
		}
	default:
		return CloseReply{}, fmt.Errorf("%w: close code %d", ErrUnexpectedReply, code)
	}
	return r, nil
}

// PacketState is everything load.lua writes for one packet.
type PacketState struct {
	Status      string
	ExpiresAtMs int64
	Credit      bool
	KeepUntilMs int64
	Shares      []Share // not yet grabbed, in the order they will be handed out
	Eligible    []int64
	Grabbed     []Grabbed
	// Epoch is the dataset epoch MySQL was read under (EnsureEpoch); ""
	// loads under whatever epoch the shard has.
	Epoch string
}

// GrabbedPlaceholder is the field load.lua keeps in every grabbed hash so the
// hash exists, with its expiry, before the first grab. It is not a user.
const GrabbedPlaceholder = "-"

// Share is one pre-split share.
type Share struct {
	Seq    int
	Amount int64
}

// Grabbed is a share already owned by a user.
type Grabbed struct {
	UserID   int64
	Seq      int
	Amount   int64
	AtMs     int64
	Credited bool
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// LoadResult is what load.lua did.
type LoadResult int

const (
	Loaded   LoadResult = 1 // the state was absent and is now written
	Fresh    LoadResult = 0 // the state was there under the shard's epoch: nothing changed
	Verified LoadResult = 2 // the state was there under another epoch and now agrees with MySQL
	// Moved: the shard's epoch is no longer the one MySQL was read under
	// (Redis changed again meanwhile); nothing was written: read again.
	Moved LoadResult = -3
)

// Load runs load.lua: it writes the state if absent, and verifies one
// loaded under another dataset epoch against st, MySQL's view (see the
// script's header). A missing epoch key is stamped first.
func Load(ctx context.Context, c redis.Cmdable, k PacketKeys, st PacketState) (LoadResult, error) {
	args := make([]any, 0, 8+len(st.Shares)+len(st.Eligible)+2*len(st.Grabbed))
	args = append(args, st.Status, st.ExpiresAtMs, boolInt(st.Credit), st.KeepUntilMs,
		len(st.Shares), len(st.Eligible), len(st.Grabbed), st.Epoch)
	for i, s := range st.Shares {
		args = append(args, EncodeShare(s, i == len(st.Shares)-1))
	}
	for _, u := range st.Eligible {
		args = append(args, u)
	}
	for _, g := range st.Grabbed {
		args = append(args, g.UserID, encodeGrabbed(g))
	}
	return runLoad(ctx, c, loadScript, loadKeys(k), k.Epoch, args)
}

func loadKeys(k PacketKeys) []string {
	return []string{k.State, k.Shares, k.Grabbed, k.Eligible, k.Epoch}
}

// runLoad runs a load script, stamping the epoch key once if it is missing.
func runLoad(ctx context.Context, c redis.Cmdable, s *redis.Script, keys []string, epochKey string, args []any) (LoadResult, error) {
	for attempt := 0; ; attempt++ {
		v, err := s.Run(ctx, c, keys, args...).Slice()
		if err != nil {
			return 0, err
		}
		n, err := onlyCode(v, "load", int64(Loaded), int64(Fresh), int64(Verified), int64(Moved), -2)
		if err != nil {
			return 0, err
		}
		if n != -2 {
			return LoadResult(n), nil
		}
		if attempt > 0 {
			return 0, fmt.Errorf("%w: load: epoch key still missing after stamping", ErrUnexpectedReply)
		}
		if err := stampKey(ctx, c, epochKey); err != nil {
			return 0, err
		}
	}
}

// ProbeKeys are the keys of the raw probe script.
type ProbeKeys struct {
	Shares, Grabbed, Events string
}

// Probe runs probe.lua; it reports whether a share was handed out.
func Probe(ctx context.Context, c redis.Scripter, k ProbeKeys, userID, nowMs int64) (bool, error) {
	v, err := probeScript.Run(ctx, c, probeKeys(k), userID, nowMs).Slice()
	if err != nil {
		return false, err
	}
	if len(v) == 0 {
		return false, fmt.Errorf("%w: empty probe reply", ErrUnexpectedReply)
	}
	code, ok := v[0].(int64)
	if !ok {
		return false, fmt.Errorf("%w: probe code %T", ErrUnexpectedReply, v[0])
	}
	return code == 0, nil
}

func probeKeys(k ProbeKeys) []string { return []string{k.Shares, k.Grabbed, k.Events} }

// Lock takes key for ttl with a token; it reports whether it was obtained.
func Lock(ctx context.Context, c redis.Cmdable, key, token string, ttl time.Duration) (bool, error) {
	return c.SetNX(ctx, key, token, ttl).Result()
}

// Unlock releases key if it is still held with token.
func Unlock(ctx context.Context, c redis.Scripter, key, token string) error {
	v, err := unlockScript.Run(ctx, c, []string{key}, token).Slice()
	if err != nil {
		return err
	}
	_, err = onlyCode(v, "unlock", 0, 1) // 1: expired or taken over; nothing to release
	return err
}
