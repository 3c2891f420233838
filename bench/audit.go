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
	c := &dbAudit{db: db, x: db.SQL(), a: &auditor{counts: map[string]int{}}}
	for _, check := range []func(context.Context) error{c.shareOwners, c.credits, c.splits, c.balances, c.uncredited, c.moneyFlow} {
		if err := check(ctx); err != nil {
			return AuditResult{}, err
		}
	}
	return AuditResult{OK: len(c.a.violations) == 0, Violations: append([]string{}, c.a.violations...)}, nil
}

// dbAudit is one Audit: its checks in order, and what a check leaves for a
// later one.
type dbAudit struct {
	db *store.DB
	x  *sqlx.DB
	a  *auditor

	byRef       map[string]*auditShare // owned shares by ledger ref (pk:<packet>:<seq>), from shareOwners
	sumBalances store.Fen              // Σ balances, from balances
}

// auditShare is a share of a packet as MySQL has it.
type auditShare struct {
	PacketID int64     `db:"packet_id"`
	Seq      int       `db:"seq"`
	Amount   store.Fen `db:"amount"`
	UserID   int64     `db:"user_id"`
	Credited bool      `db:"credited"`
}

// shareOwners reads the owned shares and checks every user holds at most
// one share of a packet.
func (c *dbAudit) shareOwners(ctx context.Context) error {
	var owned []auditShare
	if err := c.x.SelectContext(ctx, &owned, `SELECT packet_id, seq, amount, user_id, credited
		FROM packet_share WHERE user_id IS NOT NULL`); err != nil {
		return err
	}
	c.byRef = make(map[string]*auditShare, len(owned))
	perUser := map[[2]int64]int{}
	for i := range owned {
		s := &owned[i]
		c.byRef[fmt.Sprintf("pk:%d:%d", s.PacketID, s.Seq)] = s
		perUser[[2]int64{s.PacketID, s.UserID}]++
	}
	for k, n := range perUser {
		if n > 1 {
			c.a.add("user holds several shares", "user %d holds %d shares of packet %d", k[1], n, k[0])
		}
	}
	return nil
}

// credits checks the ledger credits a grabbed share once, to its owner,
// with its amount, and that a share marked credited has its credit.
func (c *dbAudit) credits(ctx context.Context) error {
	var credits []struct {
		Ref    string    `db:"ref"`
		UserID int64     `db:"user_id"`
		Amount store.Fen `db:"amount"`
	}
	if err := c.x.SelectContext(ctx, &credits, "SELECT ref, user_id, amount FROM ledger WHERE kind = ?", store.KindGrab); err != nil {
		return err
	}
	creditsOf := map[string]int{}
	for _, cr := range credits {
		creditsOf[cr.Ref]++
		s := c.byRef[cr.Ref]
		switch {
		case s == nil:
			c.a.add("share has a second owner", "%s credited to user %d but the share has no owner", cr.Ref, cr.UserID)
		case s.UserID != cr.UserID:
			c.a.add("share has a second owner", "%s is owned by user %d but credited to user %d", cr.Ref, s.UserID, cr.UserID)
		case s.Amount != cr.Amount:
			c.a.add("credit is not the share", "%s is %d fen but credited %d", cr.Ref, s.Amount, cr.Amount)
		}
	}
	for ref, s := range c.byRef {
		if s.Credited && creditsOf[ref] == 0 {
			c.a.add("credited share without a credit", "%s of user %d is marked credited; the ledger has no credit", ref, s.UserID)
		}
	}
	return nil
}

// splits checks the shares of each packet add up to its total and count,
// and Σ shares to Σ totals.
func (c *dbAudit) splits(ctx context.Context) error {
	var splits []struct {
		ID     int64     `db:"id"`
		Total  store.Fen `db:"total"`
		Count  int       `db:"share_count"`
		Sum    store.Fen `db:"sum"`
		Shares int       `db:"shares"`
	}
	if err := c.x.SelectContext(ctx, &splits, `SELECT p.id, p.total, p.share_count,
		COALESCE(SUM(s.amount), 0) AS sum, COUNT(s.seq) AS shares
		FROM packet p LEFT JOIN packet_share s ON s.packet_id = p.id
		GROUP BY p.id, p.total, p.share_count`); err != nil {
		return err
	}
	var totals, sums store.Fen
	for _, p := range splits {
		totals += p.Total
		sums += p.Sum
		if p.Sum != p.Total || p.Shares != p.Count {
			c.a.add("shares do not add up", "packet %d: %d shares of %d fen in all; total %d in %d shares", p.ID, p.Shares, p.Sum, p.Total, p.Count)
		}
	}
	if totals != sums {
		c.a.add("shares do not add up", "Σ shares %d fen ≠ Σ totals %d fen", sums, totals)
	}
	return nil
}

// balances checks the ledger sums to the balances, and every account's
// balance is its ledger.
func (c *dbAudit) balances(ctx context.Context) error {
	t, err := c.db.MoneyTotals(ctx)
	if err != nil {
		return err
	}
	c.sumBalances = t.Balances
	if t.Ledger != t.Balances {
		c.a.add("money not conserved", "Σ ledger %d fen ≠ Σ balances %d fen", t.Ledger, t.Balances)
	}
	var accounts []struct {
		UserID  int64     `db:"user_id"`
		Balance store.Fen `db:"balance"`
		Ledger  store.Fen `db:"ledger"`
	}
	if err := c.x.SelectContext(ctx, &accounts, `SELECT a.user_id, a.balance, COALESCE(SUM(l.amount), 0) AS ledger
		FROM account a LEFT JOIN ledger l ON l.user_id = a.user_id
		GROUP BY a.user_id, a.balance HAVING a.balance <> COALESCE(SUM(l.amount), 0)`); err != nil {
		return err
	}
	for _, acc := range accounts {
		c.a.add("money not conserved", "user %d has %d fen; the ledger says %d", acc.UserID, acc.Balance, acc.Ledger)
	}
	return nil
}

// uncredited checks every grabbed share of a paid packet is credited.
func (c *dbAudit) uncredited(ctx context.Context) error {
	var uncredited []auditShare
	if err := c.x.SelectContext(ctx, &uncredited, `SELECT s.packet_id, s.seq, s.amount, s.user_id, s.credited
		FROM packet_share s JOIN packet p ON p.id = s.packet_id
		WHERE s.user_id IS NOT NULL AND s.credited = 0 AND p.pay_status = 'paid'`); err != nil {
		return err
	}
	for _, s := range uncredited {
		c.a.add("grab of a paid packet not credited", "share %d of packet %d, owned by user %d", s.Seq, s.PacketID, s.UserID)
	}
	return nil
}

// moneyFlow checks balances = deposits + what payment channels brought −
// what paid packets still hold.
func (c *dbAudit) moneyFlow(ctx context.Context) error {
	var flow struct {
		Deposits store.Fen `db:"deposits"`
		Channels store.Fen `db:"channels"`
		Held     store.Fen `db:"held"`
	}
	if err := c.x.GetContext(ctx, &flow, `SELECT
		(SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = ?) AS deposits,
		(SELECT COALESCE(SUM(total), 0) FROM packet WHERE pay_status = 'paid' AND pay_method <> 'balance')
		  + (SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = ?) AS channels,
		(SELECT COALESCE(SUM(p.total - p.refunded_amount - COALESCE(c.credited, 0)), 0)
		   FROM packet p LEFT JOIN (SELECT packet_id, SUM(amount) AS credited FROM packet_share
		                            WHERE user_id IS NOT NULL AND credited = 1 GROUP BY packet_id) c
		   ON c.packet_id = p.id
		  WHERE p.pay_status = 'paid') AS held`, store.KindDeposit, store.KindOverpay); err != nil {
		return err
	}
	if want := flow.Deposits + flow.Channels - flow.Held; c.sumBalances != want {
		c.a.add("money not conserved", "Σ balances %d fen ≠ deposits %d + from payment channels %d − held by packets %d = %d",
			c.sumBalances, flow.Deposits, flow.Channels, flow.Held, want)
	}
	return nil
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
