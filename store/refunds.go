package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// closePacket applies a close event: an open (or awaiting settlement) packet
// becomes expired and records the remainder the close script took back; any
// other status is kept, so a finished packet stays finished and a replay
// changes nothing. It returns false when the event
// contradicts the store: the packet is unknown, or the remainder is more than
// its unowned shares (grabs still on their way only lower what is unowned, so
// a sound remainder never exceeds it).
func (db *DB) closePacket(ctx context.Context, tx *sqlx.Tx, ev event.Close) (bool, error) {
	var sender int64 // read to lock the packet row and to know it exists
	err := tx.GetContext(ctx, &sender, "SELECT sender_id FROM packet WHERE id = ?"+db.forUpdate(), ev.PacketID)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var unowned struct {
		Amount Fen `db:"amount"`
		Count  int `db:"n"`
	}
	if err := tx.GetContext(ctx, &unowned, `SELECT COALESCE(SUM(amount), 0) AS amount, COUNT(*) AS n
		FROM packet_share WHERE packet_id = ? AND user_id IS NULL`, ev.PacketID); err != nil {
		return false, err
	}
	if ev.Remainder > int64(unowned.Amount) || ev.Count > unowned.Count {
		return false, nil
	}
	_, err = tx.ExecContext(ctx, `UPDATE packet SET status = 'expired', closed_remainder = ?
		WHERE id = ? AND status IN ('open', 'awaiting_settlement')`, db.money(ev.Remainder), ev.PacketID)
	return err == nil, err
}

// refundIfSettled refunds a closed packet once it is paid: an expired packet
// whose payment settled gets its closed remainder back in the sender's
// balance, through the ledger (kind refund, once per packet), and becomes
// refunded. Anything else is left as it is, so it is safe to call at any
// time and any number of times: after a close is applied, and after a late
// payment settles a packet that had already expired. A refund adds its
// packet.refunded to out.
func (db *DB) refundIfSettled(ctx context.Context, tx *sqlx.Tx, packetID int64, now time.Time, out *outboxRows) error {
	var p Packet
	err := tx.GetContext(ctx, &p, "SELECT "+packetColumns+" FROM packet WHERE id = ?"+db.forUpdate(), packetID)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if p.Status != "expired" || p.PayStatus != "paid" || !p.ClosedRemainder.Valid {
		return nil
	}
	rem := int64(p.ClosedRemainder.V)
	if rem > 0 {
		if _, err := db.credit(ctx, tx, KindRefund, packetRef(packetID), p.SenderID, rem, now); err != nil {
			return err
		}
	}
	_, err = tx.ExecContext(ctx, "UPDATE packet SET status = 'refunded', refunded_amount = ? WHERE id = ? AND status = 'expired'",
		db.money(rem), packetID)
	if err == nil && db.outboxOn() {
		*out = append(*out, event.PacketRefunded{PacketID: packetID, SenderID: p.SenderID, Amount: event.Yuan(rem)}.Message(now))
	}
	return err
}

// RefundIfSettled is refundIfSettled in a transaction of its own, with the
// refund's message.
func (db *DB) RefundIfSettled(ctx context.Context, packetID int64, now time.Time) error {
	return db.inTx(ctx, func(tx *sqlx.Tx) error {
		var out outboxRows
		if err := db.refundIfSettled(ctx, tx, packetID, now, &out); err != nil {
			return err
		}
		return db.writeOutbox(ctx, tx, out)
	})
}

// ExpiredPackets lists, in id order after afterID, the packets the store
// still shows open or awaiting settlement although they expired at or
// before now: the ones the refund job has to close.
func (db *DB) ExpiredPackets(ctx context.Context, now time.Time, afterID int64, limit int) ([]Packet, error) {
	var ps []Packet
	err := db.x.SelectContext(ctx, &ps, "SELECT "+packetColumns+` FROM packet
		WHERE status IN ('open', 'awaiting_settlement') AND expires_at <= ? AND id > ? ORDER BY id LIMIT ?`, now, afterID, limit)
	return ps, err
}

// UnrefundedPackets lists, in id order after afterID, packets that are closed
// and paid but not refunded yet: a settlement that did not refund them.
func (db *DB) UnrefundedPackets(ctx context.Context, afterID int64, limit int) ([]int64, error) {
	var ids []int64
	err := db.x.SelectContext(ctx, &ids, `SELECT id FROM packet WHERE status = 'expired' AND pay_status = 'paid'
		AND closed_remainder IS NOT NULL AND id > ? ORDER BY id LIMIT ?`, afterID, limit)
	return ids, err
}

// LedgerEntry is one movement of a user's money.
type LedgerEntry struct {
	ID        int64     `db:"id"`
	Kind      string    `db:"kind"`
	Ref       string    `db:"ref"`
	UserID    int64     `db:"user_id"`
	Amount    Fen       `db:"amount"` // signed
	CreatedAt time.Time `db:"created_at"`
}

// Ledger lists a user's movements, oldest first.
func (db *DB) Ledger(ctx context.Context, userID int64) ([]LedgerEntry, error) {
	var es []LedgerEntry
	err := db.x.SelectContext(ctx, &es, "SELECT id, kind, ref, user_id, amount, created_at FROM ledger WHERE user_id = ? ORDER BY id", userID)
	return es, err
}
