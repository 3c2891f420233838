package packet

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/grab-engine/grab/engine"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Packet kinds.
const (
	KindSingle     = "single"
	KindGroupEqual = "group_equal"
	KindGroupLucky = "group_lucky"
)

// Packet statuses.
const (
	StatusUnpaid             = "unpaid"
	StatusAwaitingSettlement = "awaiting_settlement"
	StatusOpen               = "open"
	StatusFinished           = "finished"
	StatusExpired            = "expired"
	StatusRefunded           = "refunded"
	StatusPayFailed          = "pay_failed"
)

// DefaultGreeting is used when a packet is sent without one.
const DefaultGreeting = "恭喜发财，大吉大利"

const maxGreetingRunes = 64

// NewPacket is a request to send a packet. Amount is the total for
// group_lucky and single, the per-share amount for group_equal.
type NewPacket struct {
	SenderID int64
	Kind     string
	GroupID  int64
	ToUserID int64
	Count    int
	Amount   int64 // fen
	Greeting string
}

// Packet is a packet as its sender or a grabber sees it.
type Packet struct {
	ID              int64
	Kind            string
	SenderID        int64
	GroupID         int64 // 0 for single
	ToUserID        int64 // 0 for group packets
	Count           int
	Total           int64
	Greeting        string
	Status          string
	PayStatus       string
	CreatedAt       time.Time
	ExpiresAt       *time.Time
	FinishedAt      *time.Time
	RemainingCount  int
	RemainingAmount int64
	RefundedAmount  int64
	Grabs           []Grab // in seq order
	MyGrab          *MyGrab
}

// Grab is one accepted grab of a packet.
type Grab struct {
	UserID    int64
	Amount    int64
	Seq       int
	GrabbedAt time.Time
	Best      bool
	Credited  bool
}

// MyGrab is the viewer's own grab.
type MyGrab struct {
	Amount   int64
	Seq      int
	Credited bool
}

// GrabResult is the answer to a grab.
type GrabResult struct {
	PacketID int64
	Amount   int64
	Seq      int
	Repeat   bool // the user had already grabbed this packet; this is that grab
	// Credited: the grab goes into the user's balance (the packet was paid
	// when it was grabbed); the writer makes it durable moments later. False
	// while the payment awaits settlement: reconciliation credits it then.
	Credited bool
}

// CreatePacket splits the amount and stores an unpaid packet.
func (s *Service) CreatePacket(ctx context.Context, req NewPacket) (Packet, error) {
	if req.SenderID <= 0 {
		return Packet{}, fmt.Errorf("%w: bad sender", engine.ErrInvalidArgument)
	}
	if req.Greeting == "" {
		req.Greeting = DefaultGreeting
	}
	if utf8.RuneCountInString(req.Greeting) > maxGreetingRunes {
		return Packet{}, fmt.Errorf("%w: greeting is longer than %d characters", engine.ErrInvalidArgument, maxGreetingRunes)
	}
	row := store.Packet{Kind: req.Kind, SenderID: req.SenderID, Greeting: req.Greeting,
		Status: StatusUnpaid, PayStatus: "unpaid", CreatedAt: s.clock.Now().UTC()}
	var shares []int64
	var err error
	switch req.Kind {
	case KindGroupLucky, KindGroupEqual:
		if req.GroupID <= 0 {
			return Packet{}, fmt.Errorf("%w: group_id is required", engine.ErrInvalidArgument)
		}
		if req.ToUserID != 0 {
			return Packet{}, fmt.Errorf("%w: to_user_id is only for single packets", engine.ErrInvalidArgument)
		}
		if req.Kind == KindGroupLucky {
			shares, err = engine.SplitLucky(s.rand, req.Amount, req.Count, s.cfg.Limits)
		} else {
			shares, err = engine.SplitEqual(req.Amount, req.Count, s.cfg.Limits)
		}
		if err != nil {
			return Packet{}, err
		}
		member, err := s.db.IsGroupMember(ctx, req.GroupID, req.SenderID)
		if err != nil {
			return Packet{}, err
		}
		if !member {
			return Packet{}, fmt.Errorf("%w: the sender is not a member of group %d", engine.ErrForbidden, req.GroupID)
		}
		row.GroupID = sql.NullInt64{Int64: req.GroupID, Valid: true}
	case KindSingle:
		if req.ToUserID <= 0 {
			return Packet{}, fmt.Errorf("%w: to_user_id is required", engine.ErrInvalidArgument)
		}
		if req.ToUserID == req.SenderID {
			return Packet{}, fmt.Errorf("%w: a packet cannot be sent to oneself", engine.ErrInvalidArgument)
		}
		if req.GroupID != 0 || (req.Count != 0 && req.Count != 1) {
			return Packet{}, fmt.Errorf("%w: single packets take neither group_id nor count", engine.ErrInvalidArgument)
		}
		if shares, err = engine.SplitEqual(req.Amount, 1, s.cfg.Limits); err != nil {
			return Packet{}, err
		}
		row.ToUserID = sql.NullInt64{Int64: req.ToUserID, Valid: true}
	default:
		return Packet{}, fmt.Errorf("%w: kind must be group_lucky, group_equal or single", engine.ErrInvalidArgument)
	}
	row.Count = len(shares)
	for _, s := range shares {
		row.Total += store.Fen(s)
	}
	id, err := s.db.CreatePacket(ctx, row, shares)
	if err != nil {
		return Packet{}, err
	}
	row.ID = id
	return s.view(row, nil, lua.HotPacket{}, req.SenderID), nil
}

// PayByBalance debits the sender and opens the packet for grabs.
func (s *Service) PayByBalance(ctx context.Context, packetID, senderID int64) (Packet, error) {
	p, err := s.db.Packet(ctx, packetID)
	if err != nil {
		return Packet{}, engine.FromStore(err)
	}
	if p.SenderID != senderID {
		return Packet{}, fmt.Errorf("%w: only the sender pays", engine.ErrForbidden)
	}
	now := s.clock.Now().UTC()
	paid, err := s.db.PayByBalance(ctx, packetID, now, now.Add(s.cfg.PacketTTL))
	switch {
	case errors.Is(err, store.ErrWrongState):
		// p is the packet as read before the call; the call answers nothing on refusal.
		return Packet{}, fmt.Errorf("%w: it is %s", engine.ErrNotPayable, p.Status)
	case errors.Is(err, store.ErrNoFunds):
		return Packet{}, engine.ErrInsufficientBalance
	case err != nil:
		return Packet{}, engine.FromStore(err)
	}
	p = paid
	// The payment is committed. If Redis fails now, the first grab rebuilds
	// the packet from the store, so this is logged, not returned.
	if _, err := s.load(ctx, p, ""); err != nil {
		s.log.WarnContext(ctx, "packet paid but not loaded into redis; grabs will rebuild it", "packet_id", packetID, "err", err)
	}
	shares, err := s.db.Shares(ctx, packetID)
	if err != nil {
		return Packet{}, err
	}
	return s.view(p, shares, lua.HotPacket{}, senderID), nil
}

// Grab hands the user one share, or the share they already hold.
func (s *Service) Grab(ctx context.Context, packetID, userID int64) (GrabResult, error) {
	if packetID <= 0 {
		return GrabResult{}, engine.ErrNotFound
	}
	if s.core.Lagging() {
		return GrabResult{}, engine.ErrBusy
	}
	keys := s.keys.Packet(packetID)
	request := engine.RequestID()
	for attempt := 0; attempt < 3; attempt++ {
		r, err := s.grabScript(ctx, keys, packetID, userID, request)
		if err != nil {
			return GrabResult{}, err
		}
		switch r.Code {
		case lua.GrabGranted:
			return GrabResult{PacketID: packetID, Amount: r.Amount, Seq: r.Seq, Repeat: r.Repeat, Credited: r.Credited}, nil
		case lua.GrabNotLoaded, lua.GrabVerify:
			if err := s.rebuild(ctx, packetID, userID); err != nil {
				return GrabResult{}, err
			}
		case lua.GrabNotOpen:
			return GrabResult{}, engine.ErrNotOpen
		case lua.GrabExpired:
			return GrabResult{}, engine.ErrExpired
		case lua.GrabNotEligible:
			return GrabResult{}, fmt.Errorf("%w: not eligible for this packet", engine.ErrForbidden)
		case lua.GrabSoldOut:
			return GrabResult{}, engine.ErrSoldOut
		default:
			return GrabResult{}, fmt.Errorf("%w: grab code %d", lua.ErrUnexpectedReply, r.Code)
		}
	}
	return GrabResult{}, fmt.Errorf("%w: packet %d could not be loaded", engine.ErrBusy, packetID)
}

func (s *Service) grabScript(ctx context.Context, keys lua.PacketKeys, packetID, userID int64, request string) (lua.GrabReply, error) {
	if s.pipe != nil {
		return s.pipe.Grab(ctx, keys, packetID, userID, s.nowMs(), request)
	}
	return lua.Grab(ctx, s.rdb, keys, packetID, userID, s.nowMs(), request)
}

// rebuild loads a packet's state from the store after Redis lost it (or
// never had it), and verifies a state loaded under another dataset epoch
// (Redis restarted, or came back older than MySQL): see load.lua. One caller
// does it under the packet's load lock; the others wait and find it done.
func (s *Service) rebuild(ctx context.Context, packetID, userID int64) error {
	unlock, err := s.lockPacket(ctx, packetID)
	if err != nil {
		return err
	}
	defer unlock()
	keys := s.keys.Packet(packetID)
	exists, fresh, err := lua.StateEpoch(ctx, s.rdb, keys.State, keys.Epoch)
	if err != nil || fresh {
		return err // done by whoever held the lock before us
	}
	epoch, err := s.core.AdoptEpoch(ctx, keys.Epoch)
	if err != nil {
		return err
	}
	p, err := s.db.Packet(ctx, packetID)
	if err != nil {
		return engine.FromStore(err)
	}
	if !exists && (p.Status == StatusUnpaid || p.Status == StatusPayFailed) {
		// Only those who could grab it learn that it is not open.
		if err := s.canView(ctx, p, nil, lua.HotPacket{}, userID); err != nil {
			return err
		}
		return engine.ErrNotOpen
	}
	res, err := s.load(ctx, p, epoch)
	if err != nil {
		return err
	}
	s.core.CountLoad(ctx, res, "packet", packetID, p.Status)
	return nil // Moved: Redis changed again; the caller's next try verifies anew
}

// lockPacket takes the packet's load lock, waiting for another holder. Every
// write of a packet's Redis state from the store (rebuild, settlement) holds
// it, so none of them can put back a state another has just moved past.
func (s *Service) lockPacket(ctx context.Context, packetID int64) (unlock func(), err error) {
	return s.core.LockLoad(ctx, s.keys.Packet(packetID).LoadLock, fmt.Sprintf("packet %d", packetID))
}

// load writes a packet's state into Redis from the store: the shares nobody
// owns yet, the grabs already made, and the eligible users. A state already
// there under the shard's epoch is left alone; one loaded under another epoch
// is verified against the store (load.lua).
//
// epoch is the dataset epoch MySQL was read under (adoptEpoch), "" for a
// packet just paid: none of its grabs can be in an older dataset.
func (s *Service) load(ctx context.Context, p store.Packet, epoch string) (lua.LoadResult, error) {
	shares, err := s.db.Shares(ctx, p.ID)
	if err != nil {
		return 0, err
	}
	st := lua.PacketState{Status: p.Status, Credit: p.PayStatus == "paid", Epoch: epoch}
	if p.ExpiresAt.Valid {
		st.ExpiresAtMs = p.ExpiresAt.Time.UnixMilli()
	}
	// Keys live until expiry plus a grace, and at least a minute so a state
	// loaded for a closed packet is not gone before it answers.
	st.KeepUntilMs = max(st.ExpiresAtMs+s.cfg.KeyGrace.Milliseconds(), s.nowMs()+time.Minute.Milliseconds())
	owners := map[int64]bool{}
	for _, s := range shares {
		if !s.UserID.Valid {
			st.Shares = append(st.Shares, lua.Share{Seq: s.Seq, Amount: int64(s.Amount)})
			continue
		}
		owners[s.UserID.Int64] = true
		st.Grabbed = append(st.Grabbed, lua.Grabbed{UserID: s.UserID.Int64, Seq: s.Seq, Amount: int64(s.Amount),
			AtMs: s.GrabbedAt.Time.UnixMilli(), Credited: s.Credited})
	}
	if p.ToUserID.Valid {
		st.Eligible = []int64{p.ToUserID.Int64}
	} else {
		// The eligibility snapshot: the group as it is now. After a rebuild,
		// users who already own a share stay eligible to see it.
		members, err := s.db.GroupMembers(ctx, p.GroupID.Int64)
		if err != nil {
			return 0, err
		}
		st.Eligible = members
		for u := range owners {
			if !slices.Contains(members, u) {
				st.Eligible = append(st.Eligible, u)
			}
		}
	}
	return lua.Load(ctx, s.rdb, s.keys.Packet(p.ID), st)
}

// GetPacket shows a packet to its sender or an eligible user. While the packet
// is hot in Redis, grabs the store has not seen yet are included, so a
// grabber always sees its own grab.
func (s *Service) GetPacket(ctx context.Context, packetID, viewerID int64) (Packet, error) {
	p, err := s.db.Packet(ctx, packetID)
	if err != nil {
		return Packet{}, engine.FromStore(err)
	}
	shares, err := s.db.Shares(ctx, packetID)
	if err != nil {
		return Packet{}, err
	}
	hot, err := lua.ReadPacket(ctx, s.rdb, s.keys.Packet(packetID))
	if err != nil {
		return Packet{}, err
	}
	if err := s.canView(ctx, p, shares, hot, viewerID); err != nil {
		return Packet{}, err
	}
	return s.view(p, shares, hot, viewerID), nil
}

// canView: the sender, the recipient, a member of the group, or anyone who
// holds a share (even after leaving the group).
func (s *Service) canView(ctx context.Context, p store.Packet, shares []store.Share, hot lua.HotPacket, viewerID int64) error {
	if viewerID == p.SenderID || (p.ToUserID.Valid && p.ToUserID.Int64 == viewerID) {
		return nil
	}
	for _, s := range shares {
		if s.UserID.Valid && s.UserID.Int64 == viewerID {
			return nil
		}
	}
	for _, g := range hot.Grabbed {
		if g.UserID == viewerID {
			return nil
		}
	}
	if p.GroupID.Valid {
		member, err := s.db.IsGroupMember(ctx, p.GroupID.Int64, viewerID)
		if err != nil || member {
			return err
		}
	}
	return fmt.Errorf("%w: not the sender or a recipient of this packet", engine.ErrForbidden)
}

// view merges the store's record with the hot Redis state, if any, as
// viewerID sees it.
func (s *Service) view(p store.Packet, shares []store.Share, hot lua.HotPacket, viewerID int64) Packet {
	v := packetOf(p)
	v.Grabs = mergeGrabs(shares, hot)
	if hot.Loaded {
		v.Status, v.FinishedAt = aheadStatus(v, hot)
	}
	// A packet past its expiry takes no grabs, whether or not the refund job
	// has closed it yet.
	if (v.Status == StatusOpen || v.Status == StatusAwaitingSettlement) && v.ExpiresAt != nil && !s.clock.Now().Before(*v.ExpiresAt) {
		v.Status = StatusExpired
	}
	tally(&v, viewerID)
	return v
}

// packetOf is the store's record of a packet, without its grabs.
func packetOf(p store.Packet) Packet {
	v := Packet{ID: p.ID, Kind: p.Kind, SenderID: p.SenderID, GroupID: p.GroupID.Int64, ToUserID: p.ToUserID.Int64,
		Count: p.Count, Total: int64(p.Total), Greeting: p.Greeting, Status: p.Status, PayStatus: p.PayStatus,
		CreatedAt: p.CreatedAt, RefundedAmount: int64(p.RefundedAmount)}
	if p.ExpiresAt.Valid {
		t := p.ExpiresAt.Time
		v.ExpiresAt = &t
	}
	if p.FinishedAt.Valid {
		t := p.FinishedAt.Time
		v.FinishedAt = &t
	}
	return v
}

// mergeGrabs is every grab the store or Redis knows, by seq: the store's
// where both know one. Redis holds grabs the writer has not applied yet.
func mergeGrabs(shares []store.Share, hot lua.HotPacket) []Grab {
	bySeq := map[int]Grab{}
	for _, s := range shares {
		if s.UserID.Valid {
			bySeq[s.Seq] = Grab{UserID: s.UserID.Int64, Amount: int64(s.Amount), Seq: s.Seq,
				GrabbedAt: s.GrabbedAt.Time, Credited: s.Credited}
		}
	}
	for _, g := range hot.Grabbed {
		if _, known := bySeq[g.Seq]; !known {
			bySeq[g.Seq] = Grab{UserID: g.UserID, Amount: g.Amount, Seq: g.Seq, GrabbedAt: time.UnixMilli(g.AtMs).UTC(), Credited: g.Credited}
		}
	}
	var grabs []Grab // nil when none
	for _, g := range bySeq {
		grabs = append(grabs, g)
	}
	slices.SortFunc(grabs, func(a, b Grab) int { return a.Seq - b.Seq })
	return grabs
}

// aheadStatus is v's status and finish time once Redis's is taken where it
// is ahead of the store's: an open packet finished or closed there already.
func aheadStatus(v Packet, hot lua.HotPacket) (string, *time.Time) {
	if v.Status != StatusOpen && v.Status != StatusAwaitingSettlement {
		return v.Status, v.FinishedAt
	}
	switch hot.Status {
	case StatusFinished:
		if hot.FinishedAtMs > 0 {
			t := time.UnixMilli(hot.FinishedAtMs).UTC()
			return StatusFinished, &t
		}
		return StatusFinished, v.FinishedAt
	case StatusExpired:
		return StatusExpired, v.FinishedAt
	}
	return v.Status, v.FinishedAt
}

// tally sets what follows from v's grabs: the remaining count and amount,
// the viewer's own grab, and best luck (the first to draw the largest
// amount, shown once all is grabbed).
func tally(v *Packet, viewerID int64) {
	v.RemainingCount, v.RemainingAmount = v.Count-len(v.Grabs), v.Total
	best := -1
	for i, g := range v.Grabs {
		v.RemainingAmount -= g.Amount
		if best < 0 || g.Amount > v.Grabs[best].Amount {
			best = i
		}
		if g.UserID == viewerID {
			v.MyGrab = &MyGrab{Amount: g.Amount, Seq: g.Seq, Credited: g.Credited}
		}
	}
	if v.Kind == KindGroupLucky && v.Status == StatusFinished && best >= 0 {
		v.Grabs[best].Best = true
	}
}
