package store

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// Ledger kinds. (kind, ref) is unique, so a movement is applied at most once.
const (
	KindDeposit = "deposit"
	KindPay     = "pay"
	KindGrab    = "grab"
	KindRefund  = "refund" // an expired packet's remainder back to its sender, ref pk:<id>
)

// Deposit credits an account once per ref and returns the balance after it.
// The same ref again changes nothing; a ref already used for another user or
// amount is ErrConflict.
func (db *DB) Deposit(ctx context.Context, userID, fen int64, ref string, now time.Time) (int64, error) {
	var balance int64
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		applied, err := db.credit(ctx, tx, KindDeposit, ref, userID, fen, now)
		if err != nil {
			return err
		}
		if !applied {
			var prev struct {
				UserID int64 `db:"user_id"`
				Amount Fen   `db:"amount"`
			}
			if err := tx.GetContext(ctx, &prev, "SELECT user_id, amount FROM ledger WHERE kind = ? AND ref = ?", KindDeposit, ref); err != nil {
				return err
			}
			if prev.UserID != userID || int64(prev.Amount) != fen {
				return ErrConflict
			}
		}
		balance, err = balanceOf(ctx, tx, userID)
		return err
	})
	return balance, err
}

// Balance is a user's balance in fen; an unknown user has 0.
func (db *DB) Balance(ctx context.Context, userID int64) (int64, error) {
	return balanceOf(ctx, db.x, userID)
}

func balanceOf(ctx context.Context, q sqlx.QueryerContext, userID int64) (int64, error) {
	var b Fen
	err := sqlx.GetContext(ctx, q, &b, "SELECT balance FROM account WHERE user_id = ?", userID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return int64(b), err
}

// credit records a ledger movement and adds it to the balance, once per
// (kind, ref). It reports whether this call applied it.
func (db *DB) credit(ctx context.Context, tx *sqlx.Tx, kind, ref string, userID, fen int64, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, db.insertIgnore()+" INTO ledger (kind, ref, user_id, amount, created_at) VALUES (?, ?, ?, ?, ?)",
		kind, ref, userID, db.money(fen), now)
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return false, err
	}
	upsert := "INSERT INTO account (user_id, balance, updated_at) VALUES (?, ?, ?) " +
		"ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance), updated_at = VALUES(updated_at)"
	if db.dialect == dialectSQLite {
		upsert = "INSERT INTO account (user_id, balance, updated_at) VALUES (?, ?, ?) " +
			"ON CONFLICT (user_id) DO UPDATE SET balance = balance + excluded.balance, updated_at = excluded.updated_at"
	}
	_, err = tx.ExecContext(ctx, upsert, userID, db.money(fen), now)
	return err == nil, err
}

// Totals sums every balance and every ledger movement; used by tests and the
// bench audit to prove money is conserved.
type Totals struct {
	Balances Fen `db:"balances"`
	Ledger   Fen `db:"ledger"`
}

// MoneyTotals returns the sum of all balances and of all ledger movements.
func (db *DB) MoneyTotals(ctx context.Context) (Totals, error) {
	var t Totals
	err := db.x.GetContext(ctx, &t, `SELECT
		(SELECT COALESCE(SUM(balance), 0) FROM account) AS balances,
		(SELECT COALESCE(SUM(amount), 0) FROM ledger) AS ledger`)
	return t, err
}

// SetGroupMembers replaces a group's member list.
func (db *DB) SetGroupMembers(ctx context.Context, groupID int64, userIDs []int64) error {
	return db.inTx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM group_member WHERE group_id = ?", groupID); err != nil {
			return err
		}
		if len(userIDs) == 0 {
			return nil
		}
		rows := make([]map[string]any, len(userIDs))
		for i, u := range userIDs {
			rows[i] = map[string]any{"g": groupID, "u": u}
		}
		_, err := tx.NamedExecContext(ctx, db.insertIgnore()+" INTO group_member (group_id, user_id) VALUES (:g, :u)", rows)
		return err
	})
}

// GroupMembers lists a group's members in id order.
func (db *DB) GroupMembers(ctx context.Context, groupID int64) ([]int64, error) {
	var ids []int64
	err := db.x.SelectContext(ctx, &ids, "SELECT user_id FROM group_member WHERE group_id = ? ORDER BY user_id", groupID)
	return ids, err
}

// IsGroupMember reports whether a user is in a group.
func (db *DB) IsGroupMember(ctx context.Context, groupID, userID int64) (bool, error) {
	var n int
	err := db.x.GetContext(ctx, &n, "SELECT COUNT(*) FROM group_member WHERE group_id = ? AND user_id = ?", groupID, userID)
	return n > 0, err
}

// ledgerCredit is one movement for creditMany.
type ledgerCredit struct {
	ref    string
	userID int64
	fen    int64
	at     time.Time
}

// creditMany is credit for a batch, in three statements whatever its size:
// it skips the refs the ledger already has (an earlier delivery applied
// them), inserts the rest, and adds each user's sum to the balance, users in
// id order so concurrent batches cannot deadlock. A concurrent transaction
// inserting the same ref makes this one fail on the unique key; the caller
// retries and then finds the ref applied.
func (db *DB) creditMany(ctx context.Context, tx *sqlx.Tx, kind string, cs []ledgerCredit) error {
	if len(cs) == 0 {
		return nil
	}
	refs := make([]string, len(cs))
	for i, c := range cs {
		refs[i] = c.ref
	}
	q, args, err := sqlx.In("SELECT ref FROM ledger WHERE kind = ? AND ref IN (?)", kind, refs)
	if err != nil {
		return err
	}
	var done []string
	if err := tx.SelectContext(ctx, &done, tx.Rebind(q), args...); err != nil {
		return err
	}
	seen := make(map[string]bool, len(cs))
	for _, r := range done {
		seen[r] = true
	}
	var ins strings.Builder
	ins.WriteString("INSERT INTO ledger (kind, ref, user_id, amount, created_at) VALUES ")
	args = args[:0]
	sums := map[int64]int64{}
	var last time.Time
	for _, c := range cs {
		if seen[c.ref] {
			continue
		}
		seen[c.ref] = true
		if len(args) > 0 {
			ins.WriteString(", ")
		}
		ins.WriteString("(?, ?, ?, ?, ?)")
		args = append(args, kind, c.ref, c.userID, db.money(c.fen), c.at)
		sums[c.userID] += c.fen
		if c.at.After(last) {
			last = c.at
		}
	}
	if len(args) == 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, ins.String(), args...); err != nil {
		return err
	}
	users := make([]int64, 0, len(sums))
	for u := range sums {
		users = append(users, u)
	}
	slices.Sort(users)
	var up strings.Builder
	up.WriteString("INSERT INTO account (user_id, balance, updated_at) VALUES ")
	args = args[:0]
	for i, u := range users {
		if i > 0 {
			up.WriteString(", ")
		}
		up.WriteString("(?, ?, ?)")
		args = append(args, u, db.money(sums[u]), last)
	}
	if db.dialect == dialectSQLite {
		up.WriteString(" ON CONFLICT (user_id) DO UPDATE SET balance = balance + excluded.balance, updated_at = excluded.updated_at")
	} else {
		up.WriteString(" ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance), updated_at = VALUES(updated_at)")
	}
	_, err = tx.ExecContext(ctx, up.String(), args...)
	return err
}
