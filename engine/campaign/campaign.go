package campaign

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Campaign bounds. A campaign's awards sit in one Redis list, so their
// number is bounded; the window bounds how long its keys are kept.
const (
	MaxAwards          = 100_000
	MaxBudget          = 1_000_000_000 // fen: 10,000,000.00
	MaxPerUserLimit    = 100
	MaxWindow          = 366 * 24 * time.Hour
	maxCampaignNameLen = 64
)

// Campaign statuses as the API shows them; MySQL keeps "open" and the rest
// follows from the clock and what is left.
const (
	Scheduled = "scheduled" // before starts_at
	Open      = "open"
	SoldOut   = "sold_out" // every award granted
	Ended     = "ended"    // at or past ends_at
)

// Payout statuses of an award (store's names; the API shows them as they are).
const (
	PayoutReceived       = store.AwardReceived
	PayoutTransferring   = store.AwardTransferring
	PayoutTransferred    = store.AwardTransferred
	PayoutNeedsAttention = store.AwardNeedsAttention
)

// NewCampaign is an admin's request to create a campaign.
type NewCampaign struct {
	Ref          string // optional idempotency key: the same ref and content again returns the first campaign
	Name         string
	Budget       int64 // fen
	AwardCount   int
	AwardMin     int64 // fen
	AwardMax     int64 // fen
	PerUserLimit int   // awards one user may win; 0 means 1
	StartsAt     time.Time
	EndsAt       time.Time
}

// Campaign is a campaign as the admin sees it.
type Campaign struct {
	ID           int64
	Ref          string
	Name         string
	Budget       int64
	UsedAmount   int64 // Σ awards granted and counted (the activity detail; docs/glossary.md)
	AccAmount    int64 // the rule's accumulated amount (acc_amount in docs/glossary.md)
	AwardCount   int
	AwardMin     int64
	AwardMax     int64
	PerUserLimit int
	StartsAt     time.Time
	EndsAt       time.Time
	CreatedAt    time.Time
	Status       string
	Awarded      int            // awards MySQL has counted
	Remaining    int            // awards not yet granted
	Payouts      map[string]int // awards by payout status
}

// Award is one user's award and where its payout stands.
type Award struct {
	CampaignID    int64
	Seq           int
	UserID        int64
	Amount        int64 // fen
	Repeat        bool  // the user was at their limit: this is their latest award again
	Payout        string
	AwardedAt     time.Time
	TransferredAt *time.Time
}

// PayoutPendingError is engine.ErrPayoutInProgress with the award it is about, so
// the app can still show what was won.
type PayoutPendingError struct {
	Award Award
}

func (pe *PayoutPendingError) Error() string {
	return fmt.Sprintf("%v: award %d of campaign %d", engine.ErrPayoutInProgress, pe.Award.Seq, pe.Award.CampaignID)
}

// Unwrap makes errors.Is(err, engine.ErrPayoutInProgress) hold.
func (pe *PayoutPendingError) Unwrap() error { return engine.ErrPayoutInProgress }

// refRe is the alphabet of idempotency refs, which become Redis keys.
var refRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)

func (r NewCampaign) check(now time.Time) error {
	name := strings.TrimSpace(r.Name)
	switch {
	case r.Ref != "" && !refRe.MatchString(r.Ref): // as vouchers and order ids
		return fmt.Errorf("%w: ref must be 1-64 characters of A-Z a-z 0-9 _ . : -", engine.ErrInvalidArgument)
	case name == "" || utf8.RuneCountInString(r.Name) > maxCampaignNameLen || !utf8.ValidString(r.Name):
		return fmt.Errorf("%w: name must be 1-%d characters", engine.ErrInvalidArgument, maxCampaignNameLen)
	case r.Budget < 1 || r.Budget > MaxBudget:
		return fmt.Errorf("%w: budget must be 0.01..%s", engine.ErrInvalidArgument, money.Format(MaxBudget))
	case r.PerUserLimit < 0 || r.PerUserLimit > MaxPerUserLimit:
		return fmt.Errorf("%w: per_user_limit must be 1..%d", engine.ErrInvalidArgument, MaxPerUserLimit)
	case r.StartsAt.IsZero() || r.EndsAt.IsZero():
		return fmt.Errorf("%w: starts_at and ends_at are required", engine.ErrInvalidArgument)
	case !r.EndsAt.After(r.StartsAt):
		return fmt.Errorf("%w: ends_at must be after starts_at", engine.ErrInvalidArgument)
	case !r.EndsAt.After(now):
		return fmt.Errorf("%w: ends_at must be in the future", engine.ErrInvalidArgument)
	case r.EndsAt.Sub(r.StartsAt) > MaxWindow:
		return fmt.Errorf("%w: a campaign runs at most %d days", engine.ErrInvalidArgument, MaxWindow/(24*time.Hour))
	}
	return nil
}

// CreateCampaign splits the budget into awards within the rule, stores the
// campaign and loads it into Redis. With a ref, a repeat of the same request
// returns the first campaign (created false); the same ref with other content
// is engine.ErrIdempotencyConflict.
func (s *Service) CreateCampaign(ctx context.Context, req NewCampaign) (Campaign, bool, error) {
	now := s.clock.Now().UTC()
	if req.PerUserLimit == 0 {
		req.PerUserLimit = 1
	}
	// Stored at the store's precision, so a replay compares equal.
	req.StartsAt, req.EndsAt = req.StartsAt.UTC().Truncate(time.Millisecond), req.EndsAt.UTC().Truncate(time.Millisecond)
	if err := req.check(now); err != nil {
		return Campaign{}, false, err
	}
	if req.Ref != "" {
		if c, err := s.campaignByRef(ctx, req); !errors.Is(err, engine.ErrNotFound) {
			return c, false, err
		}
	}
	amounts, err := Split(s.rand, req.Budget, req.AwardCount, req.AwardMin, req.AwardMax)
	if err != nil {
		return Campaign{}, false, err
	}
	row := store.Campaign{Name: req.Name, Budget: store.Fen(req.Budget), AwardCount: len(amounts),
		StartsAt: req.StartsAt, EndsAt: req.EndsAt, Status: Open, CreatedAt: now,
		AwardMin: store.Fen(req.AwardMin), AwardMax: store.Fen(req.AwardMax), PerUserLimit: req.PerUserLimit}
	if req.Ref != "" {
		row.Ref = sql.NullString{String: req.Ref, Valid: true}
	}
	id, err := s.db.CreateCampaign(ctx, row, amounts)
	if errors.Is(err, store.ErrDuplicate) {
		// Another request with this ref won the race.
		c, err := s.campaignByRef(ctx, req)
		return c, false, err
	}
	if err != nil {
		return Campaign{}, false, err
	}
	row.ID = id
	shares := make([]lua.Share, len(amounts))
	for i, a := range amounts {
		shares[i] = lua.Share{Seq: i + 1, Amount: a}
	}
	// Committed. If Redis fails now, the first grab rebuilds it from MySQL.
	if _, err := s.loadCampaign(ctx, row, shares, nil, ""); err != nil {
		s.log.WarnContext(ctx, "campaign created but not loaded into redis; grabs will rebuild it", "campaign_id", id, "err", err)
	}
	c, err := s.GetCampaign(ctx, id)
	return c, true, err
}

// campaignByRef returns the campaign created under req.Ref if it was
// created with the same content.
func (s *Service) campaignByRef(ctx context.Context, req NewCampaign) (Campaign, error) {
	c, err := s.db.CampaignByRef(ctx, req.Ref)
	if err != nil {
		return Campaign{}, engine.FromStore(err)
	}
	if c.Name != req.Name || int64(c.Budget) != req.Budget || c.AwardCount != req.AwardCount ||
		int64(c.AwardMin) != req.AwardMin || int64(c.AwardMax) != req.AwardMax || c.PerUserLimit != req.PerUserLimit ||
		!c.StartsAt.Equal(req.StartsAt) || !c.EndsAt.Equal(req.EndsAt) {
		return Campaign{}, fmt.Errorf("%w: ref %q was used for another campaign", engine.ErrIdempotencyConflict, req.Ref)
	}
	return s.GetCampaign(ctx, c.ID)
}

// loadCampaign writes a campaign's state into Redis: the awards not yet
// granted, and who holds which. A state there under the shard's epoch is
// left alone; one loaded under another epoch is verified (campaign_load.lua).
// epoch is the dataset epoch MySQL was read under (adoptEpoch), "" for a
// campaign just created.
func (s *Service) loadCampaign(ctx context.Context, c store.Campaign, awards []lua.Share, granted []lua.Award, epoch string) (lua.LoadResult, error) {
	st := lua.CampaignState{Status: c.Status, StartsAtMs: c.StartsAt.UnixMilli(), EndsAtMs: c.EndsAt.UnixMilli(),
		PerUserLimit: c.PerUserLimit, Awards: awards, Granted: granted, Epoch: epoch}
	// Kept past the end so holders still see their award; at least a minute,
	// so a state rebuilt for an ended campaign answers before it goes.
	st.KeepUntilMs = max(st.EndsAtMs+s.cfg.KeyGrace.Milliseconds(), s.nowMs()+time.Minute.Milliseconds())
	return lua.LoadCampaign(ctx, s.rdb, s.keys.Campaign(c.ID), st)
}

// rebuildCampaign loads a campaign's state from MySQL after Redis lost it
// (or never had it), or verifies a state loaded under another dataset epoch,
// under its load lock.
func (s *Service) rebuildCampaign(ctx context.Context, campaignID int64) error {
	keys := s.keys.Campaign(campaignID)
	unlock, err := s.core.LockLoad(ctx, keys.LoadLock, fmt.Sprintf("campaign %d", campaignID))
	if err != nil {
		return err
	}
	defer unlock()
	if _, fresh, err := lua.StateEpoch(ctx, s.rdb, keys.State, keys.Epoch); err != nil || fresh {
		return err // done by whoever held the lock before us
	}
	epoch, err := s.core.AdoptEpoch(ctx, keys.Epoch)
	if err != nil {
		return err
	}
	c, err := s.db.Campaign(ctx, campaignID)
	if err != nil {
		return engine.FromStore(err)
	}
	shares, err := s.db.CampaignShares(ctx, campaignID)
	if err != nil {
		return err
	}
	rows, err := s.db.CampaignAwards(ctx, campaignID)
	if err != nil {
		return err
	}
	taken := make(map[int]bool, len(rows))
	granted := make([]lua.Award, len(rows))
	for i, r := range rows {
		taken[r.Seq] = true
		granted[i] = lua.Award{UserID: r.UserID, Seq: r.Seq, Amount: int64(r.Amount), AtMs: r.AwardedAt.UnixMilli()}
	}
	var left []lua.Share
	for _, s := range shares {
		if !taken[s.Seq] {
			left = append(left, lua.Share{Seq: s.Seq, Amount: int64(s.Amount)})
		}
	}
	res, err := s.loadCampaign(ctx, c, left, granted, epoch)
	if err != nil {
		return err
	}
	s.core.CountLoad(ctx, res, "campaign", campaignID, c.Status)
	if res == lua.Loaded || res == lua.Verified {
		return s.countOrphanAwards(ctx, campaignID)
	}
	return nil
}

// countOrphanAwards counts the awards the receive path recorded whose award
// event Redis may have lost with the dataset it just replaced: only the
// writer's event counts an award against the budget, and such an event will
// never come. Counting one whose event is still in the stream is harmless:
// the award is counted once, by whichever comes first.
func (s *Service) countOrphanAwards(ctx context.Context, campaignID int64) error {
	awards, err := s.db.UncountedAwards(ctx, campaignID)
	if err != nil || len(awards) == 0 {
		return err
	}
	events := make([]event.Event, len(awards))
	for i, a := range awards {
		events[i] = a
	}
	rejected, err := s.db.ApplyEvents(ctx, events)
	if err != nil {
		return err
	}
	for _, i := range rejected {
		s.log.ErrorContext(ctx, "campaign award recorded but cannot be counted (over the budget?); needs attention",
			"campaign_id", campaignID, "seq", awards[i].Seq, "user_id", awards[i].UserID)
	}
	s.log.InfoContext(ctx, "campaign awards counted after a Redis dataset change", "campaign_id", campaignID,
		"counted", len(awards)-len(rejected))
	return nil
}

// GetCampaign shows a campaign to an admin: budget, what is used, and its
// awards by payout status.
func (s *Service) GetCampaign(ctx context.Context, campaignID int64) (Campaign, error) {
	c, err := s.db.Campaign(ctx, campaignID)
	if err != nil {
		return Campaign{}, engine.FromStore(err)
	}
	payouts, err := s.db.PayoutCounts(ctx, campaignID)
	if err != nil {
		return Campaign{}, err
	}
	v := Campaign{ID: c.ID, Ref: c.Ref.String, Name: c.Name, Budget: int64(c.Budget), UsedAmount: int64(c.UsedAmount),
		AccAmount: int64(c.AccAmount), AwardCount: c.AwardCount, AwardMin: int64(c.AwardMin), AwardMax: int64(c.AwardMax),
		PerUserLimit: c.PerUserLimit, StartsAt: c.StartsAt, EndsAt: c.EndsAt, CreatedAt: c.CreatedAt,
		Awarded: c.AwardedCount, Remaining: c.AwardCount - c.AwardedCount, Payouts: payouts}
	// Redis is ahead of MySQL on what is left.
	if hot, err := lua.ReadCampaign(ctx, s.rdb, s.keys.Campaign(campaignID)); err == nil && hot.Loaded {
		v.Remaining = hot.Remaining
	}
	now := s.clock.Now()
	switch {
	case now.Before(c.StartsAt):
		v.Status = Scheduled
	case !now.Before(c.EndsAt):
		v.Status = Ended
	case v.Remaining == 0:
		v.Status = SoldOut
	default:
		v.Status = Open
	}
	return v, nil
}

// GrabCampaign hands the user one award (or, at their limit, their latest
// again). In PayoutAsync mode it answers from Redis at once, the award
// received (its payout pending): the writer records it from its event and
// the payout pool pays it; a repeat answers the award's payout as MySQL
// has it. In PayoutSync mode it pays the award out before
// it answers: the award is 7 in MySQL before the
// transfer service is called, and 4 when it answers success. When the
// transfer fails or its outcome is unknown, the answer is a
// *PayoutPendingError: the award is the user's and the sweeper finishes it.
func (s *Service) GrabCampaign(ctx context.Context, campaignID, userID int64) (Award, error) {
	if campaignID <= 0 {
		return Award{}, engine.ErrNotFound
	}
	if s.core.Lagging() {
		return Award{}, engine.ErrBusy
	}
	keys := s.keys.Campaign(campaignID)
	request := engine.RequestID()
	for attempt := 0; attempt < 3; attempt++ {
		r, err := lua.CampaignGrab(ctx, s.run, keys, campaignID, userID, s.nowMs(), request)
		if err != nil {
			return Award{}, err
		}
		switch r.Code {
		case lua.GrabGranted:
			ev := event.Award{CampaignID: campaignID, Seq: r.Seq, UserID: userID, Amount: r.Amount, At: time.UnixMilli(r.AtMs).UTC()}
			if s.async() {
				a := Award{CampaignID: campaignID, Seq: r.Seq, UserID: userID, Amount: r.Amount, Repeat: r.Repeat,
					Payout: PayoutReceived, AwardedAt: ev.At}
				if r.Repeat {
					a = s.recorded(ctx, a)
				}
				return a, nil
			}
			return s.payGrab(ctx, ev, r.Repeat)
		case lua.GrabNotLoaded, lua.GrabVerify:
			if err := s.rebuildCampaign(ctx, campaignID); err != nil {
				return Award{}, err
			}
		case lua.GrabNotOpen:
			return Award{}, fmt.Errorf("%w: the campaign has not started", engine.ErrNotOpen)
		case lua.GrabExpired:
			return Award{}, fmt.Errorf("%w: the campaign has ended", engine.ErrExpired)
		case lua.GrabSoldOut:
			return Award{}, engine.ErrSoldOut
		default:
			return Award{}, fmt.Errorf("%w: campaign grab code %d", lua.ErrUnexpectedReply, r.Code)
		}
	}
	return Award{}, fmt.Errorf("%w: campaign %d could not be loaded", engine.ErrBusy, campaignID)
}

// recorded is a, an award granted before, as MySQL has it now (its payout
// may be under way or done) once the writer has recorded it. A new award
// answers from Redis alone; a repeat costs one read, and when MySQL cannot
// answer it the award is still the user's: a is answered as it is.
func (s *Service) recorded(ctx context.Context, a Award) Award {
	row, err := s.db.Award(ctx, a.CampaignID, a.Seq)
	if err != nil || row.UserID != a.UserID {
		return a
	}
	v := awardView(row)
	v.Repeat = a.Repeat
	return v
}

// payGrab pays out an award just granted (or granted before, for a repeat):
// an award already paid is a success here, one whose payout is under way is
// a *PayoutPendingError, and so is any failure once Redis has granted it —
// the award is the user's, and the writer and the sweeper carry it on.
func (s *Service) payGrab(ctx context.Context, ev event.Award, repeat bool) (Award, error) {
	a, err := s.receive(ctx, ev)
	a.Repeat = repeat
	switch {
	case err == nil:
		return a, nil
	case errors.Is(err, engine.ErrAwardReceived):
		return a, nil
	case errors.Is(err, engine.ErrPayoutInProgress):
		return a, &PayoutPendingError{Award: a}
	case s.xfer == nil && store.Transient(err):
		// No transfer service: nothing would be paid now anyway, and the
		// writer records the award from the stream once the store is back.
		s.log.WarnContext(ctx, "campaign award granted while the store is unavailable; the writer records it",
			"campaign_id", ev.CampaignID, "seq", ev.Seq, "user_id", ev.UserID, "err", err)
		return a, nil
	case errors.Is(err, engine.ErrForbidden):
		// Redis granted this user an award MySQL gives another: a contradiction,
		// not the user's doing (so INTERNAL, not FORBIDDEN).
		s.log.ErrorContext(ctx, "campaign award contradicts the store; needs attention", "campaign_id", ev.CampaignID,
			"seq", ev.Seq, "user_id", ev.UserID)
		return Award{}, fmt.Errorf("campaign %d award %d: redis and the store disagree on its owner", ev.CampaignID, ev.Seq)
	}
	level := s.log.WarnContext
	if errors.Is(err, store.ErrConflict) {
		level = s.log.ErrorContext // the writer parks the event too: a person must look
	}
	level(ctx, "campaign award granted but its payout could not begin; the sweeper retries", "campaign_id", ev.CampaignID,
		"seq", ev.Seq, "user_id", ev.UserID, "err", err)
	return a, &PayoutPendingError{Award: a}
}

// Receive drives the payout of one of the user's awards (docs/glossary.md):
// a received award is paid now; engine.ErrAwardReceived when it was paid already,
// a *PayoutPendingError when its transfer is under way or the transfer
// fails; engine.ErrForbidden for another user's award.
func (s *Service) Receive(ctx context.Context, campaignID int64, seq int, userID int64) (Award, error) {
	if campaignID <= 0 || seq <= 0 {
		return Award{}, engine.ErrNotFound
	}
	var ev event.Award
	row, err := s.db.Award(ctx, campaignID, seq)
	switch {
	case err == nil:
		ev = event.Award{CampaignID: campaignID, Seq: seq, UserID: row.UserID, Amount: int64(row.Amount), At: row.AwardedAt}
	case errors.Is(err, store.ErrNotFound):
		// The writer may not have applied the grab yet: Redis knows it.
		ra, ok, err := lua.CampaignAward(ctx, s.rdb, s.keys.Campaign(campaignID), seq)
		if err != nil {
			return Award{}, err
		}
		if !ok {
			return Award{}, fmt.Errorf("%w: no award %d in campaign %d", engine.ErrNotFound, seq, campaignID)
		}
		ev = event.Award{CampaignID: campaignID, Seq: seq, UserID: ra.UserID, Amount: ra.Amount, At: time.UnixMilli(ra.AtMs).UTC()}
	default:
		return Award{}, err
	}
	if ev.UserID != userID {
		return Award{}, fmt.Errorf("%w: not your award", engine.ErrForbidden)
	}
	a, err := s.receive(ctx, ev)
	if errors.Is(err, engine.ErrPayoutInProgress) {
		return a, &PayoutPendingError{Award: a}
	}
	return a, err
}

// receive is the payout's fixed scheme (status 7 before the call; docs/glossary.md):
// one transaction locks the award
// (creating its row if the writer has not; the writer counts it against the
// budget) and moves it to transferring, committed; then, outside any
// transaction, the transfer.
func (s *Service) receive(ctx context.Context, ev event.Award) (Award, error) {
	a := Award{CampaignID: ev.CampaignID, Seq: ev.Seq, UserID: ev.UserID, Amount: ev.Amount, Payout: PayoutReceived, AwardedAt: ev.At}
	row, started, err := s.db.BeginPayout(ctx, ev, s.xfer != nil, s.clock.Now().UTC())
	if err != nil {
		return a, err
	}
	a = awardView(row)
	if row.UserID != ev.UserID {
		return Award{}, fmt.Errorf("%w: not your award", engine.ErrForbidden)
	}
	if !started {
		switch row.Status {
		case PayoutTransferred:
			return a, engine.ErrAwardReceived
		case PayoutTransferring, PayoutNeedsAttention:
			return a, engine.ErrPayoutInProgress
		}
		return a, nil // received, and no transfer service to pay it
	}
	if h := s.hooks.afterTransferring; h != nil {
		if err := h(ctx, row); err != nil {
			return a, err
		}
	}
	return s.transferAward(ctx, row)
}

func awardView(r store.Award) Award {
	a := Award{CampaignID: r.CampaignID, Seq: r.Seq, UserID: r.UserID, Amount: int64(r.Amount), Payout: r.Status, AwardedAt: r.AwardedAt}
	if r.TransferredAt.Valid {
		t := r.TransferredAt.Time
		a.TransferredAt = &t
	}
	return a
}

// MyAwards lists the user's awards of a campaign with their payout status,
// including one Redis has granted that MySQL has not seen yet.
func (s *Service) MyAwards(ctx context.Context, campaignID, userID int64) ([]Award, error) {
	if _, err := s.db.Campaign(ctx, campaignID); err != nil {
		return nil, engine.FromStore(err)
	}
	rows, err := s.db.UserAwards(ctx, campaignID, userID)
	if err != nil {
		return nil, err
	}
	out := make([]Award, 0, len(rows)+1)
	seen := map[int]bool{}
	for _, r := range rows {
		out = append(out, awardView(r))
		seen[r.Seq] = true
	}
	// The users hash holds the latest award; the receive path writes the row
	// at grab time, so only that one can be missing from MySQL.
	u, ok, err := lua.CampaignUserOf(ctx, s.rdb, s.keys.Campaign(campaignID), userID)
	if err != nil {
		return nil, err
	}
	if ok && !seen[u.Award.Seq] {
		out = append(out, Award{CampaignID: campaignID, Seq: u.Award.Seq, UserID: userID, Amount: u.Award.Amount,
			Payout: PayoutReceived, AwardedAt: time.UnixMilli(u.Award.AtMs).UTC()})
	}
	return out, nil
}
