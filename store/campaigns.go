package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// Payout statuses of a campaign award. They only move forward:
// received -> transferring -> transferred, and transferring -> needs_attention
// (a person's turn; a later confirmed success still moves it to transferred).
const (
	AwardReceived       = "received"
	AwardTransferring   = "transferring" // status 7 (docs/glossary.md): committed before the transfer call
	AwardTransferred    = "transferred"  // status 4
	AwardNeedsAttention = "needs_attention"
)

// Campaign is a campaign row joined with its rule.
type Campaign struct {
	ID           int64          `db:"id"`
	Ref          sql.NullString `db:"ref"`
	Name         string         `db:"name"`
	Budget       Fen            `db:"budget"`
	UsedAmount   Fen            `db:"used_amount"`
	AwardCount   int            `db:"award_count"`
	AwardedCount int            `db:"awarded_count"`
	StartsAt     time.Time      `db:"starts_at"`
	EndsAt       time.Time      `db:"ends_at"`
	Status       string         `db:"status"`
	CreatedAt    time.Time      `db:"created_at"`
	AwardMin     Fen            `db:"award_min"`
	AwardMax     Fen            `db:"award_max"`
	PerUserLimit int            `db:"per_user_limit"`
	AccAmount    Fen            `db:"acc_amount"` // the rule's accumulated amount (docs/glossary.md)
}

const campaignColumns = `c.id, c.ref, c.name, c.budget, c.used_amount, c.award_count, c.awarded_count, c.starts_at,
	c.ends_at, c.status, c.created_at, r.award_min, r.award_max, r.per_user_limit, r.acc_amount`

const campaignFrom = " FROM campaign c JOIN campaign_rule r ON r.campaign_id = c.id"

// CampaignShare is one pre-split award of a campaign.
type CampaignShare struct {
	Seq    int `db:"seq"`
	Amount Fen `db:"amount"`
}

// Award is a row of campaign_award: a granted award and its payout.
type Award struct {
	CampaignID     int64        `db:"campaign_id"`
	Seq            int          `db:"seq"`
	UserID         int64        `db:"user_id"`
	Amount         Fen          `db:"amount"`
	Status         string       `db:"status"`
	OutTradeNo     string       `db:"out_trade_no"`
	Attempts       int          `db:"attempts"`
	TransferID     string       `db:"transfer_id"`
	LastError      string       `db:"last_error"`
	AwardedAt      time.Time    `db:"awarded_at"`
	UpdatedAt      time.Time    `db:"updated_at"`
	TransferringAt sql.NullTime `db:"transferring_at"`
	TransferredAt  sql.NullTime `db:"transferred_at"`
}

const awardColumns = `campaign_id, seq, user_id, amount, status, out_trade_no, attempts, transfer_id, last_error,
	awarded_at, updated_at, transferring_at, transferred_at`

// OutTradeNo is the number an award is paid out under: one per award, the
// same on every attempt, so the transfer service applies it at most once.
func OutTradeNo(campaignID int64, seq int) string { return fmt.Sprintf("cp%d-%d", campaignID, seq) }

// CreateCampaign stores a campaign, its rule and its pre-split awards (seq
// 1..n in hand-out order) and returns its id. A ref already used is
// ErrDuplicate, with nothing written.
func (db *DB) CreateCampaign(ctx context.Context, c Campaign, shares []int64) (int64, error) {
	var id int64
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO campaign (ref, name, budget, award_count, starts_at, ends_at, status, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, c.Ref, c.Name, db.money(int64(c.Budget)), len(shares), c.StartsAt, c.EndsAt, c.Status, c.CreatedAt)
		if isDuplicate(err) {
			return ErrDuplicate
		}
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO campaign_rule (campaign_id, award_min, award_max, per_user_limit) VALUES (?, ?, ?, ?)",
			id, db.money(int64(c.AwardMin)), db.money(int64(c.AwardMax)), c.PerUserLimit); err != nil {
			return err
		}
		// Chunks keep each statement well under any packet or placeholder limit.
		const chunk = 1000
		for start := 0; start < len(shares); start += chunk {
			part := shares[start:min(start+chunk, len(shares))]
			var q strings.Builder
			q.WriteString("INSERT INTO campaign_share (campaign_id, seq, amount) VALUES ")
			args := make([]any, 0, 3*len(part))
			for i, amount := range part {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?)")
				args = append(args, id, start+i+1, db.money(amount))
			}
			if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
				return err
			}
		}
		return nil
	})
	return id, err
}

// Campaign reads a campaign with its rule.
func (db *DB) Campaign(ctx context.Context, id int64) (Campaign, error) {
	return db.campaignWhere(ctx, "c.id = ?", id)
}

// CampaignByRef reads the campaign created under an idempotency ref.
func (db *DB) CampaignByRef(ctx context.Context, ref string) (Campaign, error) {
	return db.campaignWhere(ctx, "c.ref = ?", ref)
}

func (db *DB) campaignWhere(ctx context.Context, where string, arg any) (Campaign, error) {
	var c Campaign
	err := db.x.GetContext(ctx, &c, "SELECT "+campaignColumns+campaignFrom+" WHERE "+where, arg)
	if errors.Is(err, sql.ErrNoRows) {
		return Campaign{}, ErrNotFound
	}
	return c, err
}

// CampaignShares lists a campaign's pre-split awards in seq order.
func (db *DB) CampaignShares(ctx context.Context, campaignID int64) ([]CampaignShare, error) {
	var s []CampaignShare
	err := db.x.SelectContext(ctx, &s, "SELECT seq, amount FROM campaign_share WHERE campaign_id = ? ORDER BY seq", campaignID)
	return s, err
}

// CampaignAwards lists every award granted in a campaign, in seq order.
func (db *DB) CampaignAwards(ctx context.Context, campaignID int64) ([]Award, error) {
	var a []Award
	err := db.x.SelectContext(ctx, &a, "SELECT "+awardColumns+" FROM campaign_award WHERE campaign_id = ? ORDER BY seq", campaignID)
	return a, err
}

// UncountedAwards lists a campaign's awards the receive path recorded that
// no writer batch has counted yet, as the award events that count them.
func (db *DB) UncountedAwards(ctx context.Context, campaignID int64) ([]event.Award, error) {
	var rows []Award
	if err := db.x.SelectContext(ctx, &rows, "SELECT "+awardColumns+" FROM campaign_award WHERE campaign_id = ? AND counted = 0 ORDER BY seq",
		campaignID); err != nil {
		return nil, err
	}
	out := make([]event.Award, len(rows))
	for i, r := range rows {
		out[i] = event.Award{CampaignID: r.CampaignID, Seq: r.Seq, UserID: r.UserID, Amount: int64(r.Amount), At: r.AwardedAt}
	}
	return out, nil
}

// UserAwards lists a user's awards of a campaign in seq order.
func (db *DB) UserAwards(ctx context.Context, campaignID, userID int64) ([]Award, error) {
	var a []Award
	err := db.x.SelectContext(ctx, &a, "SELECT "+awardColumns+" FROM campaign_award WHERE user_id = ? AND campaign_id = ? ORDER BY seq",
		userID, campaignID)
	return a, err
}

// Award reads one award.
func (db *DB) Award(ctx context.Context, campaignID int64, seq int) (Award, error) {
	var a Award
	err := db.x.GetContext(ctx, &a, "SELECT "+awardColumns+" FROM campaign_award WHERE campaign_id = ? AND seq = ?", campaignID, seq)
	if errors.Is(err, sql.ErrNoRows) {
		return Award{}, ErrNotFound
	}
	return a, err
}

// PayoutCounts counts a campaign's awards by payout status.
func (db *DB) PayoutCounts(ctx context.Context, campaignID int64) (map[string]int, error) {
	var rows []struct {
		Status string `db:"status"`
		N      int    `db:"n"`
	}
	if err := db.x.SelectContext(ctx, &rows, "SELECT status, COUNT(*) AS n FROM campaign_award WHERE campaign_id = ? GROUP BY status", campaignID); err != nil {
		return nil, err
	}
	counts := map[string]int{AwardReceived: 0, AwardTransferring: 0, AwardTransferred: 0, AwardNeedsAttention: 0}
	for _, r := range rows {
		counts[r.Status] = r.N
	}
	return counts, nil
}

// moneyArg is the placeholder of a money argument in arithmetic and
// comparisons: on MySQL the string is cast to DECIMAL, so a budget guard is
// exact decimal arithmetic, never a float comparison.
func (db *DB) moneyArg() string {
	if db.dialect == dialectSQLite {
		return "?"
	}
	return "CAST(? AS DECIMAL(12,2))"
}

// insertAward creates an award's row if it is absent and the award matches
// the campaign's pre-split share; it reports whether this call created it.
// counted: the writer creates rows it counts at once; the receive path
// leaves its rows for the writer to count.
func (db *DB) insertAward(ctx context.Context, tx *sqlx.Tx, a event.Award, status string, attempts int, transferringAt sql.NullTime, now time.Time, counted bool) (bool, error) {
	n, err := db.writeAward(ctx, tx, db.insertIgnore(), "", a, status, attempts, transferringAt, now, counted)
	return n == 1, err
}

// writeAward is insertAward's statement, with an optional upsert clause;
// it answers the rows affected.
func (db *DB) writeAward(ctx context.Context, tx *sqlx.Tx, insert, onDuplicate string, a event.Award, status string, attempts int,
	transferringAt sql.NullTime, now time.Time, counted bool) (int64, error) {
	res, err := tx.ExecContext(ctx, insert+` INTO campaign_award (campaign_id, seq, user_id, amount, status, out_trade_no,
		attempts, awarded_at, updated_at, transferring_at, counted)
		SELECT campaign_id, seq, ?, amount, ?, ?, ?, ?, ?, ?, ? FROM campaign_share
		WHERE campaign_id = ? AND seq = ? AND amount = `+db.moneyArg()+onDuplicate,
		a.UserID, status, OutTradeNo(a.CampaignID, a.Seq), attempts, a.At, now, transferringAt, counted,
		a.CampaignID, a.Seq, db.money(a.Amount))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// countAwardRow is the writer's step for one award: create its row counted,
// or mark the receive path's row (same user and amount) counted. It reports
// whether this call created the row, and whether it counted the award.
func (db *DB) countAwardRow(ctx context.Context, tx *sqlx.Tx, a event.Award) (created, counted bool, err error) {
	if db.dialect == dialectSQLite {
		// One writer at a time: no lock to upgrade.
		if created, err = db.insertAward(ctx, tx, a, AwardReceived, 0, sql.NullTime{}, a.At, true); err != nil || created {
			return created, created, err
		}
		counted, err = db.countRow(ctx, tx, a)
		return false, counted, err
	}
	// One statement, so an existing row is locked exclusively from the start:
	// INSERT IGNORE's shared lock on the duplicate, upgraded by a later
	// UPDATE, deadlocks with the receive path's 7 -> 4 update queued between.
	// Rows affected: 1 inserted, 2 updated (counted now), 0 left alone.
	n, err := db.writeAward(ctx, tx, "INSERT", ` ON DUPLICATE KEY UPDATE campaign_award.counted = IF(campaign_award.counted = 0
		AND campaign_award.user_id = VALUES(user_id) AND campaign_award.amount = VALUES(amount), 1, campaign_award.counted)`,
		a, AwardReceived, 0, sql.NullTime{}, a.At, true)
	return n == 1, n == 1 || n == 2, err
}

// countAward adds a new award to the campaign's used amount and its rule's
// accumulated amount, never past the budget: ErrConflict if it would be.
func (db *DB) countAward(ctx context.Context, tx *sqlx.Tx, campaignID int64, fen int64, n int) error {
	m := db.moneyArg()
	res, err := tx.ExecContext(ctx, "UPDATE campaign SET used_amount = used_amount + "+m+", awarded_count = awarded_count + ?"+
		" WHERE id = ? AND used_amount + "+m+" <= budget", db.money(fen), n, campaignID, db.money(fen))
	if err != nil {
		return err
	}
	if k, err := res.RowsAffected(); err != nil {
		return err
	} else if k == 0 {
		return fmt.Errorf("%w: campaign %d: %d fen more would exceed the budget", ErrConflict, campaignID, fen)
	}
	_, err = tx.ExecContext(ctx, "UPDATE campaign_rule SET acc_amount = acc_amount + "+m+" WHERE campaign_id = ?", db.money(fen), campaignID)
	return err
}

// countRow marks an award's row counted if the receive path created it and
// the writer has not counted it yet; it reports whether this call did.
func (db *DB) countRow(ctx context.Context, tx *sqlx.Tx, a event.Award) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE campaign_award SET counted = 1
		WHERE campaign_id = ? AND seq = ? AND user_id = ? AND amount = `+db.moneyArg()+` AND counted = 0`,
		a.CampaignID, a.Seq, a.UserID, db.money(a.Amount))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// awardApplier applies awards (applyAwards).
var awardApplier = kindApplier[event.Award]{applyAwardEvents,
	"not the campaign's share, another user's award, or over the budget"}

// applyAwardEvents is the award applier (applyAwards); each award the
// batch counted adds its campaign.awarded to the batch's outbox rows.
func applyAwardEvents(ctx context.Context, b *batch, awards []event.Award) ([]bool, error) {
	ok, counted, err := b.db.applyAwards(ctx, b.tx, awards)
	if err != nil || !b.db.outboxOn() {
		return ok, err
	}
	for i, a := range awards {
		if ok[i] && counted[i] {
			b.out = append(b.out, event.CampaignAwarded{CampaignID: a.CampaignID, Seq: a.Seq, UserID: a.UserID,
				Amount: event.Yuan(a.Amount)}.Message(a.At))
		}
	}
	return ok, nil
}

// applyAwards makes a batch's award events durable and counts them: each
// award's row is created as received and counted if absent, or, if the
// receive path created it first, marked counted; only an award this batch
// counted is added to its campaign's used amount, so replays count nothing
// twice. ok[i] is false for an award that contradicts the store: it is not
// the pre-split share, the row holds another user or amount, or it would
// exceed the budget; such an award leaves nothing behind (or, on a row the
// receive path created, leaves it uncounted).
//
// counted[i] reports that this batch counted awards[i] (with ok[i]: it is
// new to the budget; a replay counts nothing).
//
// Award rows are locked before campaigns, and the receive path locks no
// campaign, so the two cannot deadlock on each other.
func (db *DB) applyAwards(ctx context.Context, tx *sqlx.Tx, awards []event.Award) (ok, counted []bool, err error) {
	ok = make([]bool, len(awards))
	created := make([]bool, len(awards)) // this batch created the row
	counted = make([]bool, len(awards))  // this batch counts the award
	var campaigns []int64
	for i, a := range awards {
		if created[i], counted[i], err = db.countAwardRow(ctx, tx, a); err != nil {
			return nil, nil, err
		}
		if counted[i] {
			ok[i] = true
			if !slices.Contains(campaigns, a.CampaignID) {
				campaigns = append(campaigns, a.CampaignID)
			}
			continue
		}
		var row struct {
			UserID int64 `db:"user_id"`
			Amount Fen   `db:"amount"`
		}
		// A locking read: the row may have been committed by the receive path
		// after this transaction's snapshot, which a plain read would not see.
		err := tx.GetContext(ctx, &row, "SELECT user_id, amount FROM campaign_award WHERE campaign_id = ? AND seq = ?"+db.forShare(),
			a.CampaignID, a.Seq)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return nil, nil, err
		default:
			ok[i] = row.UserID == a.UserID && int64(row.Amount) == a.Amount
		}
	}
	slices.Sort(campaigns)
	for _, cp := range campaigns {
		var c struct {
			Budget Fen `db:"budget"`
			Used   Fen `db:"used_amount"`
		}
		if err := tx.GetContext(ctx, &c, "SELECT budget, used_amount FROM campaign WHERE id = ?"+db.forUpdate(), cp); err != nil {
			return nil, nil, err
		}
		var add int64
		n := 0
		for i, a := range awards {
			if !counted[i] || a.CampaignID != cp {
				continue
			}
			if int64(c.Used)+add+a.Amount > int64(c.Budget) {
				ok[i] = false
				undo := "DELETE FROM campaign_award WHERE campaign_id = ? AND seq = ?"
				if !created[i] {
					undo = "UPDATE campaign_award SET counted = 0 WHERE campaign_id = ? AND seq = ?"
				}
				if _, err := tx.ExecContext(ctx, undo, cp, a.Seq); err != nil {
					return nil, nil, err
				}
				continue
			}
			add += a.Amount
			n++
		}
		if n > 0 {
			if err := db.countAward(ctx, tx, cp, add, n); err != nil {
				return nil, nil, err
			}
		}
	}
	return ok, counted, nil
}

// BeginPayout is the receive transaction (the payout's fix, first half): it
// locks the award's row, creating it from a when the writer has not yet (the
// writer still counts it against the budget); a received row moves to transferring
// with one more attempt, committed before any transfer call. It reports
// whether this call moved the award to transferring; when it did not, the
// returned row says why (another user's award, or its status).
//
// transfer false (no transfer service) creates the row as received and moves
// nothing. ErrConflict: a does not match the campaign's split.
func (db *DB) BeginPayout(ctx context.Context, a event.Award, transfer bool, now time.Time) (row Award, started bool, err error) {
	// A lost insert race starts over: the fresh transaction sees the row and
	// locks it at once, rather than upgrading the shared lock the failed
	// insert holds, which deadlocks against another receive of the same award.
	for range 3 {
		row, started, err = db.beginPayout(ctx, a, transfer, now)
		if !errors.Is(err, errLostInsert) {
			break
		}
	}
	return row, started, err
}

// errLostInsert: another transaction created the row between our read and our insert.
var errLostInsert = errors.New("store: award row created concurrently")

func (db *DB) beginPayout(ctx context.Context, a event.Award, transfer bool, now time.Time) (Award, bool, error) {
	var row Award
	started := false
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		started = false
		// A plain read first: a locking read of an absent row would take a gap
		// lock that makes concurrent inserts of other awards deadlock.
		var n int
		if err := tx.GetContext(ctx, &n, "SELECT COUNT(*) FROM campaign_award WHERE campaign_id = ? AND seq = ?", a.CampaignID, a.Seq); err != nil {
			return err
		}
		if n == 0 {
			status, attempts, at := AwardReceived, 0, sql.NullTime{}
			if transfer {
				status, attempts, at = AwardTransferring, 1, sql.NullTime{Time: now, Valid: true}
			}
			created, err := db.insertAward(ctx, tx, a, status, attempts, at, now, false)
			if err != nil {
				return err
			}
			if created {
				started = transfer
				return tx.GetContext(ctx, &row, "SELECT "+awardColumns+" FROM campaign_award WHERE campaign_id = ? AND seq = ?",
					a.CampaignID, a.Seq)
			}
			var again int
			if err := tx.GetContext(ctx, &again, "SELECT COUNT(*) FROM campaign_award WHERE campaign_id = ? AND seq = ?"+db.forShare(),
				a.CampaignID, a.Seq); err != nil {
				return err
			}
			if again == 1 {
				return errLostInsert
			}
			// Still absent: the award is not the campaign's share (below).
		}
		err := tx.GetContext(ctx, &row, "SELECT "+awardColumns+" FROM campaign_award WHERE campaign_id = ? AND seq = ?"+db.forUpdate(),
			a.CampaignID, a.Seq)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: award %d/%d is not a share of the campaign", ErrConflict, a.CampaignID, a.Seq)
		}
		if err != nil {
			return err
		}
		if row.UserID != a.UserID || row.Status != AwardReceived || !transfer {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE campaign_award SET status = 'transferring', attempts = attempts + 1,
			transferring_at = ?, updated_at = ? WHERE campaign_id = ? AND seq = ? AND status = 'received'`,
			now, now, a.CampaignID, a.Seq); err != nil {
			return err
		}
		row.Status, row.Attempts, row.TransferringAt, row.UpdatedAt = AwardTransferring, row.Attempts+1, sql.NullTime{Time: now, Valid: true}, now
		started = true
		return nil
	})
	return row, started, err
}

// MarkTransferred records a confirmed transfer: transferring (or a parked
// row the service has since confirmed) -> transferred. It reports whether
// this call moved it; false means it was transferred already, or is not
// in a state a success may move.
//
// The move writes its payout.transferred.
func (db *DB) MarkTransferred(ctx context.Context, campaignID int64, seq int, transferID string, now time.Time) (bool, error) {
	transferID = truncate(transferID, 64)
	return db.execOneWith(ctx, campaignID, seq, func(p event.Payout) event.Message {
		return event.PayoutTransferred{Payout: p, TransferID: transferID}.Message(now)
	}, `UPDATE campaign_award SET status = 'transferred', transfer_id = ?, transferred_at = ?,
		updated_at = ?, last_error = '' WHERE campaign_id = ? AND seq = ? AND status IN ('transferring', 'needs_attention')`,
		transferID, now, now, campaignID, seq)
}

// ClaimPayout takes an overdue award for one more attempt: it moves it to
// transferring with attempts + 1 and transferring_at now, if it is still
// in status with attempts as read. Every claim bumps attempts, so of two
// sweepers that read the same row only one claims it.
func (db *DB) ClaimPayout(ctx context.Context, campaignID int64, seq int, status string, attempts int, now time.Time) (bool, error) {
	return db.execOne(ctx, `UPDATE campaign_award SET status = 'transferring', attempts = attempts + 1,
		transferring_at = ?, updated_at = ? WHERE campaign_id = ? AND seq = ? AND status = ? AND attempts = ?`,
		now, now, campaignID, seq, status, attempts)
}

// NotePayoutError records why an attempt failed; the award stays transferring.
func (db *DB) NotePayoutError(ctx context.Context, campaignID int64, seq, attempts int, msg string, now time.Time) error {
	_, err := db.execOne(ctx, `UPDATE campaign_award SET last_error = ?, updated_at = ?
		WHERE campaign_id = ? AND seq = ? AND status = 'transferring' AND attempts = ?`,
		truncate(msg, 255), now, campaignID, seq, attempts)
	return err
}

// ParkPayout moves an award that is still transferring with attempts as
// claimed to needs_attention: a person takes over. It is never deleted.
// The move writes its payout.needs_attention.
func (db *DB) ParkPayout(ctx context.Context, campaignID int64, seq, attempts int, reason string, now time.Time) (bool, error) {
	reason = truncate(reason, 255)
	return db.execOneWith(ctx, campaignID, seq, func(p event.Payout) event.Message {
		return event.PayoutNeedsAttention{Payout: p, Attempts: attempts, Reason: reason}.Message(now)
	}, `UPDATE campaign_award SET status = 'needs_attention', last_error = ?, updated_at = ?
		WHERE campaign_id = ? AND seq = ? AND status = 'transferring' AND attempts = ?`,
		reason, now, campaignID, seq, attempts)
}

// DuePayouts lists up to limit awards a payout sweep should drive: those
// transferring since before `before` (the call failed, timed out or the
// process died), then those received before it (the grab's request died
// before its payout began).
func (db *DB) DuePayouts(ctx context.Context, before time.Time, limit int) ([]Award, error) {
	var a []Award
	if err := db.x.SelectContext(ctx, &a, "SELECT "+awardColumns+` FROM campaign_award
		WHERE status = 'transferring' AND transferring_at < ? ORDER BY transferring_at LIMIT ?`, before, limit); err != nil {
		return nil, err
	}
	if len(a) >= limit {
		return a, nil
	}
	var r []Award
	if err := db.x.SelectContext(ctx, &r, "SELECT "+awardColumns+` FROM campaign_award
		WHERE status = 'received' AND awarded_at < ? ORDER BY awarded_at LIMIT ?`, before, limit-len(a)); err != nil {
		return nil, err
	}
	return append(a, r...), nil
}

// ClaimReceived takes up to limit received awards for a payout worker, the
// oldest first: in one transaction it locks them, skipping rows another
// worker or a receive holds (SKIP LOCKED), and moves each to transferring
// with one more attempt, committed before any transfer call. It returns
// the claimed rows as they now read; none when there is no work.
func (db *DB) ClaimReceived(ctx context.Context, limit int, now time.Time) ([]Award, error) {
	var rows []Award
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		rows = rows[:0]
		if err := tx.SelectContext(ctx, &rows, "SELECT "+awardColumns+` FROM campaign_award
			WHERE status = 'received' ORDER BY awarded_at LIMIT ?`+db.forUpdateSkipLocked(), limit); err != nil {
			return err
		}
		for i, r := range rows {
			if _, err := tx.ExecContext(ctx, `UPDATE campaign_award SET status = 'transferring', attempts = attempts + 1,
				transferring_at = ?, updated_at = ? WHERE campaign_id = ? AND seq = ? AND status = 'received'`,
				now, now, r.CampaignID, r.Seq); err != nil {
				return err
			}
			rows[i].Status, rows[i].Attempts = AwardTransferring, r.Attempts+1
			rows[i].TransferringAt, rows[i].UpdatedAt = sql.NullTime{Time: now, Valid: true}, now
		}
		return nil
	})
	return rows, err
}

// forUpdateSkipLocked is the dialect's suffix of a SELECT that locks the
// rows it can and skips those others hold; SQLite has one writer, so a
// plain read is enough.
func (db *DB) forUpdateSkipLocked() string {
	if db.dialect == dialectSQLite {
		return ""
	}
	return " FOR UPDATE SKIP LOCKED"
}

// CountOverdue counts the awards DuePayouts would list, without a limit.
func (db *DB) CountOverdue(ctx context.Context, before time.Time) (int, error) {
	var n int
	err := db.x.GetContext(ctx, &n, `SELECT
		(SELECT COUNT(*) FROM campaign_award WHERE status = 'transferring' AND transferring_at < ?) +
		(SELECT COUNT(*) FROM campaign_award WHERE status = 'received' AND awarded_at < ?)`, before, before)
	return n, err
}

// CountAwards counts awards in a payout status, across campaigns.
func (db *DB) CountAwards(ctx context.Context, status string) (int, error) {
	var n int
	err := db.x.GetContext(ctx, &n, "SELECT COUNT(*) FROM campaign_award WHERE status = ?", status)
	return n, err
}

// forShare is the dialect's shared-lock suffix of a SELECT.
func (db *DB) forShare() string {
	if db.dialect == dialectSQLite {
		return ""
	}
	return " LOCK IN SHARE MODE"
}

// execOne runs one statement that changes at most one row, in a transaction
// of its own so that losing a deadlock (a concurrent receive or writer holds
// the row) retries it, and reports whether it changed the row.
func (db *DB) execOne(ctx context.Context, query string, args ...any) (bool, error) {
	var n int64
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n == 1, err
}

// execOneWith is execOne for a statement that moves one award: when it
// moves it and the outbox is on, the message msg makes of the award's
// payout (as its row now reads) is written in the same transaction.
func (db *DB) execOneWith(ctx context.Context, campaignID int64, seq int, msg func(event.Payout) event.Message, query string, args ...any) (bool, error) {
	var n int64
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil || n != 1 || !db.outboxOn() {
			return err
		}
		var a Award
		if err := tx.GetContext(ctx, &a, "SELECT "+awardColumns+" FROM campaign_award WHERE campaign_id = ? AND seq = ?", campaignID, seq); err != nil {
			return err
		}
		return db.writeOutbox(ctx, tx, outboxRows{msg(event.Payout{CampaignID: campaignID, Seq: seq, UserID: a.UserID,
			Amount: event.Yuan(int64(a.Amount)), OutTradeNo: a.OutTradeNo})})
	})
	return n == 1, err
}

// truncate cuts s to at most n bytes on a rune boundary, to fit a column.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
