package bench

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/store"
)

// maxListed bounds how many violations of one kind are listed one by one.
const maxListed = 10

// AuditResult is the verdict of Audit: OK when there are no violations.
type AuditResult struct {
	OK         bool     `json:"ok"`
	Violations []string `json:"violations"`
}

type auditor struct {
	violations []string
	counts     map[string]int
}

func (a *auditor) add(kind, format string, args ...any) {
	a.counts[kind]++
	if a.counts[kind] <= maxListed {
		a.violations = append(a.violations, kind+": "+fmt.Sprintf(format, args...))
	} else if a.counts[kind] == maxListed+1 {
		a.violations = append(a.violations, kind+": more not listed")
	}
}

// Audit checks the invariants of the whole database, from MySQL alone. Run
// it once the writer has drained; it reads everything, so it belongs to a
// database of the bench's own.
//
//   - every share has at most one owner: the ledger credits a grabbed share
//     once, to the owner packet_share names, with the share's amount, and a
//     credited share has its ledger row;
//   - every user holds at most one share of a packet;
//   - the shares of each packet add up to its total (and Σ shares = Σ totals);
//   - every grabbed share of a paid packet is credited (run it after the
//     payments settled);
//   - money is conserved: the ledger sums to the balances, every account's
//     balance is its ledger, and balances = deposits + what payment channels
//     brought (totals of the packets paid through them, and payments
//     credited back to their senders) − what paid packets still hold (total
//     − credited shares − refunds).
func Audit(ctx context.Context, db *store.DB) (AuditResult, error) {
	x := db.SQL()
	a := &auditor{counts: map[string]int{}}

	type share struct {
		PacketID int64     `db:"packet_id"`
		Seq      int       `db:"seq"`
		Amount   store.Fen `db:"amount"`
		UserID   int64     `db:"user_id"`
		Credited bool      `db:"credited"`
	}
	var owned []share
	if err := x.SelectContext(ctx, &owned, `SELECT packet_id, seq, amount, user_id, credited
		FROM packet_share WHERE user_id IS NOT NULL`); err != nil {
		return AuditResult{}, err
	}
	byRef := make(map[string]*share, len(owned))
	perUser := map[[2]int64]int{}
	for i := range owned {
		s := &owned[i]
		byRef[fmt.Sprintf("pk:%d:%d", s.PacketID, s.Seq)] = s
		perUser[[2]int64{s.PacketID, s.UserID}]++
	}
	for k, n := range perUser {
		if n > 1 {
			a.add("user holds several shares", "user %d holds %d shares of packet %d", k[1], n, k[0])
		}
	}

	var credits []struct {
		Ref    string    `db:"ref"`
		UserID int64     `db:"user_id"`
		Amount store.Fen `db:"amount"`
	}
	if err := x.SelectContext(ctx, &credits, "SELECT ref, user_id, amount FROM ledger WHERE kind = ?", store.KindGrab); err != nil {
		return AuditResult{}, err
	}
	creditsOf := map[string]int{}
	for _, c := range credits {
		creditsOf[c.Ref]++
		s := byRef[c.Ref]
		switch {
		case s == nil:
			a.add("share has a second owner", "%s credited to user %d but the share has no owner", c.Ref, c.UserID)
		case s.UserID != c.UserID:
			a.add("share has a second owner", "%s is owned by user %d but credited to user %d", c.Ref, s.UserID, c.UserID)
		case s.Amount != c.Amount:
			a.add("credit is not the share", "%s is %d fen but credited %d", c.Ref, s.Amount, c.Amount)
		}
	}
	for ref, s := range byRef {
		if s.Credited && creditsOf[ref] == 0 {
			a.add("credited share without a credit", "%s of user %d is marked credited; the ledger has no credit", ref, s.UserID)
		}
	}

	var splits []struct {
		ID     int64     `db:"id"`
		Total  store.Fen `db:"total"`
		Count  int       `db:"share_count"`
		Sum    store.Fen `db:"sum"`
		Shares int       `db:"shares"`
	}
	if err := x.SelectContext(ctx, &splits, `SELECT p.id, p.total, p.share_count,
		COALESCE(SUM(s.amount), 0) AS sum, COUNT(s.seq) AS shares
		FROM packet p LEFT JOIN packet_share s ON s.packet_id = p.id
		GROUP BY p.id, p.total, p.share_count`); err != nil {
		return AuditResult{}, err
	}
	var totals, sums store.Fen
	for _, p := range splits {
		totals += p.Total
		sums += p.Sum
		if p.Sum != p.Total || p.Shares != p.Count {
			a.add("shares do not add up", "packet %d: %d shares of %d fen in all; total %d in %d shares", p.ID, p.Shares, p.Sum, p.Total, p.Count)
		}
	}
	if totals != sums {
		a.add("shares do not add up", "Σ shares %d fen ≠ Σ totals %d fen", sums, totals)
	}

	t, err := db.MoneyTotals(ctx)
	if err != nil {
		return AuditResult{}, err
	}
	if t.Ledger != t.Balances {
		a.add("money not conserved", "Σ ledger %d fen ≠ Σ balances %d fen", t.Ledger, t.Balances)
	}
	var accounts []struct {
		UserID  int64     `db:"user_id"`
		Balance store.Fen `db:"balance"`
		Ledger  store.Fen `db:"ledger"`
	}
	if err := x.SelectContext(ctx, &accounts, `SELECT a.user_id, a.balance, COALESCE(SUM(l.amount), 0) AS ledger
		FROM account a LEFT JOIN ledger l ON l.user_id = a.user_id
		GROUP BY a.user_id, a.balance HAVING a.balance <> COALESCE(SUM(l.amount), 0)`); err != nil {
		return AuditResult{}, err
	}
	for _, acc := range accounts {
		a.add("money not conserved", "user %d has %d fen; the ledger says %d", acc.UserID, acc.Balance, acc.Ledger)
	}
	var uncredited []share
	if err := x.SelectContext(ctx, &uncredited, `SELECT s.packet_id, s.seq, s.amount, s.user_id, s.credited
		FROM packet_share s JOIN packet p ON p.id = s.packet_id
		WHERE s.user_id IS NOT NULL AND s.credited = 0 AND p.pay_status = 'paid'`); err != nil {
		return AuditResult{}, err
	}
	for _, s := range uncredited {
		a.add("grab of a paid packet not credited", "share %d of packet %d, owned by user %d", s.Seq, s.PacketID, s.UserID)
	}
	var flow struct {
		Deposits store.Fen `db:"deposits"`
		Channels store.Fen `db:"channels"`
		Held     store.Fen `db:"held"`
	}
	if err := x.GetContext(ctx, &flow, `SELECT
		(SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = ?) AS deposits,
		(SELECT COALESCE(SUM(total), 0) FROM packet WHERE pay_status = 'paid' AND pay_method <> 'balance')
		  + (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = ?) AS channels,
		(SELECT COALESCE(SUM(p.total - p.refunded_amount - COALESCE(c.credited, 0)), 0)
		   FROM packet p LEFT JOIN (SELECT packet_id, SUM(amount) AS credited FROM packet_share
		                            WHERE user_id IS NOT NULL AND credited = 1 GROUP BY packet_id) c
		   ON c.packet_id = p.id
		  WHERE p.pay_status = 'paid') AS held`, store.KindDeposit, store.KindOverpay); err != nil {
		return AuditResult{}, err
	}
	if want := flow.Deposits + flow.Channels - flow.Held; t.Balances != want {
		a.add("money not conserved", "Σ balances %d fen ≠ deposits %d + from payment channels %d − held by packets %d = %d",
			t.Balances, flow.Deposits, flow.Channels, flow.Held, want)
	}
	return AuditResult{OK: len(a.violations) == 0, Violations: append([]string{}, a.violations...)}, nil
}

// ownedShares counts the packets' shares MySQL shows owned.
func ownedShares(ctx context.Context, db *store.DB, packets []int64) (int64, error) {
	return countShares(ctx, db, packets, "user_id IS NOT NULL")
}

// uncreditedShares counts the packets' shares MySQL shows owned and not credited.
func uncreditedShares(ctx context.Context, db *store.DB, packets []int64) (int64, error) {
	return countShares(ctx, db, packets, "user_id IS NOT NULL AND credited = 0")
}

func countShares(ctx context.Context, db *store.DB, packets []int64, where string) (int64, error) {
	var n sql.NullInt64
	q, args, err := sqlx.In("SELECT COUNT(*) FROM packet_share WHERE "+where+" AND packet_id IN (?)", packets)
	if err != nil {
		return 0, err
	}
	err = db.SQL().GetContext(ctx, &n, q, args...)
	return n.Int64, err
}
