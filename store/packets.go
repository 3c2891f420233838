package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// Packet is a row of the packet table.
type Packet struct {
	ID             int64         `db:"id"`
	Kind           string        `db:"kind"`
	SenderID       int64         `db:"sender_id"`
	GroupID        sql.NullInt64 `db:"group_id"`
	ToUserID       sql.NullInt64 `db:"to_user_id"`
	Count          int           `db:"share_count"`
	Total          Fen           `db:"total"`
	Greeting       string        `db:"greeting"`
	Status         string        `db:"status"`
	PayStatus      string        `db:"pay_status"`
	PayMethod      string        `db:"pay_method"`
	CreatedAt      time.Time     `db:"created_at"`
	PaidAt         sql.NullTime  `db:"paid_at"`
	ExpiresAt      sql.NullTime  `db:"expires_at"`
	FinishedAt     sql.NullTime  `db:"finished_at"`
	RefundedAmount Fen           `db:"refunded_amount"`
	BestSeq        int           `db:"best_seq"`
	// ClosedRemainder is what the close script took back when the packet
	// expired (Valid once closed): the amount to refund once it is paid.
	ClosedRemainder sql.Null[Fen] `db:"closed_remainder"`
}

// Share is a row of packet_share.
type Share struct {
	PacketID  int64         `db:"packet_id"`
	Seq       int           `db:"seq"`
	Amount    Fen           `db:"amount"`
	UserID    sql.NullInt64 `db:"user_id"`
	GrabbedAt sql.NullTime  `db:"grabbed_at"`
	Credited  bool          `db:"credited"`
}

const packetColumns = `id, kind, sender_id, group_id, to_user_id, share_count, total, greeting, status,
	pay_status, pay_method, created_at, paid_at, expires_at, finished_at, refunded_amount, best_seq, closed_remainder`

// CreatePacket inserts an unpaid packet and its pre-split shares (seq 1..n in
// the order they will be handed out) and returns its id.
func (db *DB) CreatePacket(ctx context.Context, p Packet, shares []int64) (int64, error) {
	var id int64
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO packet (kind, sender_id, group_id, to_user_id, share_count, total,
			greeting, status, pay_status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			p.Kind, p.SenderID, p.GroupID, p.ToUserID, p.Count, db.money(int64(p.Total)), p.Greeting,
			p.Status, p.PayStatus, p.CreatedAt)
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		var q strings.Builder
		q.WriteString("INSERT INTO packet_share (packet_id, seq, amount) VALUES ")
		args := make([]any, 0, 3*len(shares))
		for i, amount := range shares {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?)")
			args = append(args, id, i+1, db.money(amount))
		}
		_, err = tx.ExecContext(ctx, q.String(), args...)
		return err
	})
	return id, err
}

// Packet reads one packet.
func (db *DB) Packet(ctx context.Context, id int64) (Packet, error) {
	var p Packet
	err := db.x.GetContext(ctx, &p, "SELECT "+packetColumns+" FROM packet WHERE id = ?", id)
	if errors.Is(err, sql.ErrNoRows) {
		return Packet{}, ErrNotFound
	}
	return p, err
}

// Shares lists every share of a packet in seq order.
func (db *DB) Shares(ctx context.Context, packetID int64) ([]Share, error) {
	var s []Share
	err := db.x.SelectContext(ctx, &s, `SELECT packet_id, seq, amount, user_id, grabbed_at, credited
		FROM packet_share WHERE packet_id = ? ORDER BY seq`, packetID)
	return s, err
}

// PayByBalance debits the sender and opens the packet, in one transaction,
// with its packet.paid message.
// ErrWrongState: the packet is not unpaid. ErrNoFunds: the balance is short.
func (db *DB) PayByBalance(ctx context.Context, packetID int64, now, expiresAt time.Time) (Packet, error) {
	var p Packet
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE packet SET status = 'open', pay_status = 'paid', pay_method = 'balance',
			paid_at = ?, expires_at = ? WHERE id = ? AND status = 'unpaid'`, now, expiresAt, packetID)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return db.missingOr(ctx, tx, packetID, ErrWrongState)
		}
		if err := tx.GetContext(ctx, &p, "SELECT "+packetColumns+" FROM packet WHERE id = ?", packetID); err != nil {
			return err
		}
		res, err = tx.ExecContext(ctx, "UPDATE account SET balance = balance - ?, updated_at = ? WHERE user_id = ? AND balance >= ?",
			db.money(int64(p.Total)), now, p.SenderID, db.money(int64(p.Total)))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNoFunds
		}
		if _, err = tx.ExecContext(ctx, "INSERT INTO ledger (kind, ref, user_id, amount, created_at) VALUES (?, ?, ?, ?, ?)",
			KindPay, packetRef(packetID), p.SenderID, db.money(-int64(p.Total)), now); err != nil {
			return err
		}
		if !db.outboxOn() {
			return nil
		}
		return db.writeOutbox(ctx, tx, outboxRows{event.PacketPaid{PacketID: packetID, SenderID: p.SenderID,
			Amount: event.Yuan(int64(p.Total)), Method: "balance"}.Message(now)})
	})
	return p, err
}

func (db *DB) missingOr(ctx context.Context, tx *sqlx.Tx, packetID int64, err error) error {
	var n int
	if e := tx.GetContext(ctx, &n, "SELECT COUNT(*) FROM packet WHERE id = ?", packetID); e != nil {
		return e
	}
	if n == 0 {
		return ErrNotFound
	}
	return err
}

func packetRef(packetID int64) string { return fmt.Sprintf("pk:%d", packetID) }

func shareRef(packetID int64, seq int) string { return fmt.Sprintf("pk:%d:%d", packetID, seq) }

// grabApplier applies grabs (applyGrabs).
var grabApplier = kindApplier[event.Grab]{applyGrabs,
	"the share is someone else's, the user holds another, or the amount differs"}

// applyGrabs is the grab applier: it claims each grab's share (claimShares)
// and marks finished the packets whose last share a grab took; credited
// grabs reach the balance, through the ledger, once the batch settles. A
// replayed grab finds its share its user's already and changes nothing.
func applyGrabs(ctx context.Context, b *batch, grabs []event.Grab) (ok []bool, err error) {
	if ok, err = b.db.claimShares(ctx, b.tx, grabs); err != nil {
		return nil, err
	}
	var credits []ledgerCredit
	for i, g := range grabs {
		if !ok[i] {
			continue
		}
		if g.Credit {
			credits = append(credits, ledgerCredit{ref: shareRef(g.PacketID, g.Seq), userID: g.UserID, fen: g.Amount, at: g.At})
		}
		if b.db.outboxOn() {
			b.out = append(b.out, event.PacketGrabbed{PacketID: g.PacketID, Seq: g.Seq, UserID: g.UserID, Amount: event.Yuan(g.Amount),
				Credited: g.Credit, Finished: g.Finished}.Message(g.At))
		}
		if g.Finished {
			best, err := b.db.finishPacket(ctx, b.tx, g.PacketID, g.At)
			if err != nil {
				return nil, err
			}
			if b.db.outboxOn() {
				b.out = append(b.out, event.PacketFinished{PacketID: g.PacketID, BestSeq: best}.Message(g.At))
			}
		}
	}
	// The batch's credits in a fixed number of statements: the writer's
	// throughput is bounded by MySQL round trips.
	b.settle = append(b.settle, func(ctx context.Context) error { return b.db.creditMany(ctx, b.tx, KindGrab, credits) })
	return ok, nil
}

// closeApplier applies closes (applyCloses).
var closeApplier = kindApplier[event.Close]{applyCloses,
	"no such packet, or the remainder is more than its unowned shares"}

// applyCloses is the close applier: each close marks its packet expired
// with the remainder taken back (closePacket); once the batch settles, the
// closed packets that are paid are refunded (refundIfSettled, once each).
func applyCloses(ctx context.Context, b *batch, closes []event.Close) (ok []bool, err error) {
	ok = make([]bool, len(closes))
	var closed []event.Close
	for i, c := range closes {
		if ok[i], err = b.db.closePacket(ctx, b.tx, c); err != nil {
			return nil, err
		}
		if ok[i] {
			closed = append(closed, c)
		}
	}
	b.settle = append(b.settle, func(ctx context.Context) error {
		for _, c := range closed {
			if err := b.db.refundIfSettled(ctx, b.tx, c.PacketID, c.At, &b.out); err != nil {
				return err
			}
		}
		return nil
	})
	return ok, nil
}

// claimShares claims each grab's share; ok[i] reports claimShare for grabs[i].
// The writer's throughput is bounded by MySQL round trips, so on MySQL one
// statement claims the whole batch when every share is still unowned and
// matches; anything else (a replay, a contradiction, a user's second share)
// falls back to claiming share by share, which tells those cases apart.
// SQLite runs in-process: there is no round trip to save.
func (db *DB) claimShares(ctx context.Context, tx *sqlx.Tx, grabs []event.Grab) (ok []bool, err error) {
	ok = make([]bool, len(grabs))
	if len(grabs) > 1 && db.dialect == dialectMySQL && independent(grabs) {
		all, err := db.claimAllShares(ctx, tx, grabs)
		if err != nil {
			return nil, err
		}
		if all {
			for i := range ok {
				ok[i] = true
			}
			return ok, nil
		}
	}
	for i, g := range grabs {
		if ok[i], err = db.claimShare(ctx, tx, g); err != nil {
			return nil, err
		}
	}
	return ok, nil
}

// independent reports that no two grabs name the same share or the same
// user in one packet: then the order they are claimed in cannot matter.
func independent(grabs []event.Grab) bool {
	type key struct{ packet, n int64 }
	shares := make(map[key]bool, len(grabs))
	users := make(map[key]bool, len(grabs))
	for _, g := range grabs {
		s, u := key{g.PacketID, int64(g.Seq)}, key{g.PacketID, g.UserID}
		if shares[s] || users[u] {
			return false
		}
		shares[s], users[u] = true, true
	}
	return true
}

// claimAllShares claims every grab's share in one statement and reports
// whether each was claimed. When it says false some may have been: the
// share-by-share claim that follows treats those as the user's already.
func (db *DB) claimAllShares(ctx context.Context, tx *sqlx.Tx, grabs []event.Grab) (bool, error) {
	var q strings.Builder
	args := make([]any, 0, 6*len(grabs))
	q.WriteString("UPDATE packet_share s JOIN (")
	for i, g := range grabs {
		if i == 0 {
			// The first row names the columns and fixes their types.
			q.WriteString("SELECT ? AS packet_id, ? AS seq, CAST(? AS DECIMAL(12,2)) AS amount, ? AS user_id, CAST(? AS DATETIME(3)) AS grabbed_at, ? AS credited")
		} else {
			q.WriteString(" UNION ALL SELECT ?, ?, ?, ?, ?, ?")
		}
		args = append(args, g.PacketID, g.Seq, db.money(g.Amount), g.UserID, g.At, g.Credit)
	}
	q.WriteString(`) v ON s.packet_id = v.packet_id AND s.seq = v.seq
		SET s.user_id = v.user_id, s.grabbed_at = v.grabbed_at, s.credited = v.credited
		WHERE s.user_id IS NULL AND s.amount = v.amount`)
	res, err := tx.ExecContext(ctx, q.String(), args...)
	if isDuplicate(err) {
		return false, nil // the statement is undone; the share-by-share claim finds whose
	}
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == int64(len(grabs)), err
}

// claimShare sets the share's owner; true when it is (now or already) this
// user's. The amount must match the share's: an event that says otherwise
// contradicts the split, and crediting it would create or lose money.
func (db *DB) claimShare(ctx context.Context, tx *sqlx.Tx, ev event.Grab) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE packet_share SET user_id = ?, grabbed_at = ?, credited = ?
		WHERE packet_id = ? AND seq = ? AND amount = ? AND user_id IS NULL`,
		ev.UserID, ev.At, ev.Credit, ev.PacketID, ev.Seq, db.money(ev.Amount))
	if isDuplicate(err) {
		return false, nil // the user already owns another share of this packet
	}
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return n == 1, err
	}
	var row struct {
		UserID sql.NullInt64 `db:"user_id"`
		Amount Fen           `db:"amount"`
	}
	err = tx.GetContext(ctx, &row, "SELECT user_id, amount FROM packet_share WHERE packet_id = ? AND seq = ?", ev.PacketID, ev.Seq)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return row.UserID.Valid && row.UserID.Int64 == ev.UserID && int64(row.Amount) == ev.Amount, nil
}

// finishPacket marks a packet finished, with its share of best luck (the
// first, lowest seq, i.e. earliest grab, of the largest amount), which it
// returns.
func (db *DB) finishPacket(ctx context.Context, tx *sqlx.Tx, packetID int64, at time.Time) (best int, err error) {
	if err := tx.GetContext(ctx, &best, "SELECT seq FROM packet_share WHERE packet_id = ? ORDER BY amount DESC, seq ASC LIMIT 1", packetID); err != nil {
		return 0, err
	}
	_, err = tx.ExecContext(ctx, `UPDATE packet SET status = 'finished', finished_at = ?, best_seq = ?
		WHERE id = ? AND status IN ('open', 'awaiting_settlement')`, at, best, packetID)
	return best, err
}
