package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// Payment statuses. They only move forward: unpaid -> awaiting_settlement ->
// paid | failed; paid and failed are final.
const (
	PaymentUnpaid             = "unpaid"
	PaymentAwaitingSettlement = "awaiting_settlement"
	PaymentPaid               = "paid"
	PaymentFailed             = "failed"
)

// KindOverpay returns a third-party payment that arrived for a packet already
// paid another way: the money goes to the sender's balance, not lost.
const KindOverpay = "overpay"

// Payment is a row of the payment table: one third-party trade.
type Payment struct {
	TradeNo     string `db:"trade_no"`
	PacketID    int64  `db:"packet_id"`
	Channel     string `db:"channel"`
	Amount      Fen    `db:"amount"`
	Status      string `db:"status"`
	ProviderTxn string `db:"provider_txn"`
	// GivenUp: grab ended the trade as failed because no outcome came
	// (GiveUp), not because the channel reported a failure.
	GivenUp   bool      `db:"given_up"`
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`
}

const paymentColumns = "trade_no, packet_id, channel, amount, status, provider_txn, given_up, created_at, updated_at"

// StartPayment records a trade for an unpaid packet. A packet has at most one
// trade in progress: asking again on the same channel returns that trade; on
// another channel it supersedes a trade still unpaid (ended as failed) and is
// ErrWrongState for one awaiting settlement, as for a packet that is not
// unpaid. A superseded trade's payment.failed is written with it.
func (db *DB) StartPayment(ctx context.Context, packetID int64, channel, tradeNo string, now time.Time) (Payment, bool, error) {
	var pay Payment
	created := false
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		created = false
		var p Packet
		if err := tx.GetContext(ctx, &p, "SELECT "+packetColumns+" FROM packet WHERE id = ?"+db.forUpdate(), packetID); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			return err
		}
		if p.Status != "unpaid" {
			return ErrWrongState
		}
		err := tx.GetContext(ctx, &pay, "SELECT "+paymentColumns+" FROM payment WHERE packet_id = ? AND status IN ('unpaid', 'awaiting_settlement')", packetID)
		switch {
		case err == nil && pay.Channel == channel:
			return nil
		case err == nil && pay.Status == PaymentUnpaid:
			// The sender chose another channel before returning from this
			// one: it ends as failed, the packet untouched; money it brings
			// after all is credited to the sender (Settle).
			if _, err := tx.ExecContext(ctx, "UPDATE payment SET status = ?, updated_at = ? WHERE trade_no = ? AND status = ?",
				PaymentFailed, now, pay.TradeNo, PaymentUnpaid); err != nil {
				return err
			}
			if db.outboxOn() {
				if err := db.writeOutbox(ctx, tx, outboxRows{failedMessage(pay, event.FailedSuperseded, now)}); err != nil {
					return err
				}
			}
		case err == nil:
			return ErrWrongState
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		pay = Payment{TradeNo: tradeNo, PacketID: packetID, Channel: channel, Amount: p.Total, Status: PaymentUnpaid,
			CreatedAt: now, UpdatedAt: now}
		_, err = tx.ExecContext(ctx, "INSERT INTO payment ("+paymentColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
			pay.TradeNo, pay.PacketID, pay.Channel, db.money(int64(pay.Amount)), pay.Status, "", false, now, now)
		created = err == nil
		return err
	})
	return pay, created, err
}

// Payment reads one trade.
func (db *DB) Payment(ctx context.Context, tradeNo string) (Payment, error) {
	var p Payment
	err := db.x.GetContext(ctx, &p, "SELECT "+paymentColumns+" FROM payment WHERE trade_no = ?", tradeNo)
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, ErrNotFound
	}
	return p, err
}

// CreditedBack is what a trade credited to its sender's balance because
// its packet could not take the money (KindOverpay, ref the trade): 0 when
// nothing was.
func (db *DB) CreditedBack(ctx context.Context, tradeNo string) (Fen, error) {
	var fen Fen
	err := db.x.GetContext(ctx, &fen, "SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = ? AND ref = ?", KindOverpay, tradeNo)
	return fen, err
}

// MarkReturned records the provider's synchronous return: the trade and its
// packet move to awaiting_settlement and the packet opens for grabs (not
// credited yet). Anything past that state is left as it is.
func (db *DB) MarkReturned(ctx context.Context, tradeNo string, now, expiresAt time.Time) (Payment, error) {
	var pay Payment
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		var moved bool
		var err error
		pay, moved, err = advancePayment(ctx, tx, tradeNo,
			"UPDATE payment SET status = 'awaiting_settlement', updated_at = ? WHERE trade_no = ? AND status = 'unpaid'", now, tradeNo)
		if err != nil || !moved {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE packet SET status = 'awaiting_settlement', pay_status = 'awaiting_settlement',
			pay_method = ?, expires_at = ? WHERE id = ? AND status = 'unpaid'`, pay.Channel, expiresAt, pay.PacketID)
		return err
	})
	return pay, err
}

// SettleOutcome is what Settle did with a trade's final outcome.
type SettleOutcome int

const (
	// SettleRepeat: the trade had this outcome already; nothing moved.
	SettleRepeat SettleOutcome = iota
	// SettleApplied: the outcome moved the trade, and its packet with it.
	SettleApplied
	// SettleCreditedBack: money arrived that the packet cannot take (it was
	// paid another way, or the trade had failed or been given up): the
	// amount is credited to the sender's balance (KindOverpay), once; the
	// trade keeps its status. Someone should know: it is not the usual path.
	SettleCreditedBack
	// SettleContradicted: a failure for a trade that succeeded; nothing moves
	// (the money arrived). Someone should know.
	SettleContradicted
)

// Settle records a trade's final outcome (success or failure) and moves its
// packet: a success opens an unpaid or awaiting packet and credits what was
// grabbed meanwhile; a failure closes it as pay_failed. Money that arrives
// where the packet cannot take it — a success after the trade failed (or
// was given up), or for a packet paid another way — goes to the sender's
// balance instead, exactly once (SettleCreditedBack). Repeats change
// nothing.
func (db *DB) Settle(ctx context.Context, tradeNo string, success bool, providerTxn string, now, expiresAt time.Time) (Payment, SettleOutcome, error) {
	return db.settle(ctx, tradeNo, success, false, providerTxn, now, expiresAt)
}

// GiveUp ends a trade no outcome will come for as failed, marked given up,
// as Settle does a failure; a trade already final is left as it is
// (SettleRepeat, or SettleContradicted after a success).
func (db *DB) GiveUp(ctx context.Context, tradeNo string, now time.Time) (Payment, SettleOutcome, error) {
	return db.settle(ctx, tradeNo, false, true, "", now, now)
}

func (db *DB) settle(ctx context.Context, tradeNo string, success, givenUp bool, providerTxn string, now, expiresAt time.Time) (Payment, SettleOutcome, error) {
	var pay Payment
	outcome := SettleRepeat
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		var out outboxRows
		var err error
		if pay, outcome, err = db.settleTx(ctx, tx, tradeNo, success, givenUp, providerTxn, now, expiresAt, &out); err != nil {
			return err
		}
		return db.writeOutbox(ctx, tx, out)
	})
	return pay, outcome, err
}

// settleTx is settle's transaction; the messages of what it moved go to
// out: payment.settled or payment.failed, and for a packet the trade paid,
// packet.paid, the packet.credited of the grabs it credited and its
// packet.refunded.
func (db *DB) settleTx(ctx context.Context, tx *sqlx.Tx, tradeNo string, success, givenUp bool, providerTxn string,
	now, expiresAt time.Time, out *outboxRows) (Payment, SettleOutcome, error) {
	status := PaymentFailed
	if success {
		status = PaymentPaid
	}
	pay, moved, err := advancePayment(ctx, tx, tradeNo, `UPDATE payment SET status = ?, provider_txn = ?, given_up = ?, updated_at = ?
		WHERE trade_no = ? AND status IN ('unpaid', 'awaiting_settlement')`, status, providerTxn, givenUp, now, tradeNo)
	if err != nil {
		return pay, SettleRepeat, err
	}
	if !moved {
		outcome := SettleRepeat
		return pay, outcome, db.settleFinal(ctx, tx, &pay, &outcome, success, now, out)
	}
	var p Packet
	if err := tx.GetContext(ctx, &p, "SELECT "+packetColumns+" FROM packet WHERE id = ?"+db.forUpdate(), pay.PacketID); err != nil {
		return pay, SettleApplied, err
	}
	if !success {
		reason := event.FailedByChannel
		if givenUp {
			reason = event.FailedGivenUp
		}
		if db.outboxOn() {
			*out = append(*out, failedMessage(pay, reason, now))
		}
		if p.PayStatus == "paid" {
			return pay, SettleApplied, nil // paid another way; this trade simply failed
		}
		_, err := tx.ExecContext(ctx, "UPDATE packet SET status = 'pay_failed', pay_status = 'failed' WHERE id = ?", p.ID)
		return pay, SettleApplied, err
	}
	if p.PayStatus == "paid" {
		if db.outboxOn() {
			*out = append(*out, settledMessage(pay, true, now))
		}
		_, err := db.credit(ctx, tx, KindOverpay, tradeNo, p.SenderID, int64(pay.Amount), now)
		return pay, SettleCreditedBack, err
	}
	if db.outboxOn() {
		*out = append(*out, settledMessage(pay, false, now), event.PacketPaid{PacketID: p.ID, SenderID: p.SenderID,
			Amount: event.Yuan(int64(pay.Amount)), Method: pay.Channel, TradeNo: pay.TradeNo}.Message(now))
	}
	if p.Status == "unpaid" {
		_, err = tx.ExecContext(ctx, `UPDATE packet SET status = 'open', pay_status = 'paid', pay_method = ?,
			paid_at = ?, expires_at = ? WHERE id = ?`, pay.Channel, now, expiresAt, p.ID)
	} else {
		// awaiting_settlement opens; finished or expired keep their status.
		_, err = tx.ExecContext(ctx, `UPDATE packet SET status = CASE WHEN status = 'awaiting_settlement' THEN 'open' ELSE status END,
			pay_status = 'paid', paid_at = ? WHERE id = ?`, now, p.ID)
	}
	if err != nil {
		return pay, SettleApplied, err
	}
	if _, err := db.creditUncredited(ctx, tx, p.ID, now, out); err != nil {
		return pay, SettleApplied, err
	}
	// A packet that expired while its payment awaited settlement is
	// refunded now that the money is known to have arrived.
	return pay, SettleApplied, db.refundIfSettled(ctx, tx, p.ID, now, out)
}

// settledMessage is pay's payment.settled.
func settledMessage(pay Payment, creditedBack bool, at time.Time) event.Message {
	return event.PaymentSettled{TradeNo: pay.TradeNo, PacketID: pay.PacketID, Channel: pay.Channel, Amount: event.Yuan(int64(pay.Amount)),
		ProviderTxn: pay.ProviderTxn, CreditedBack: creditedBack}.Message(at)
}

// failedMessage is pay's payment.failed, for reason (an event.Failed* constant).
func failedMessage(pay Payment, reason string, at time.Time) event.Message {
	return event.PaymentFailed{TradeNo: pay.TradeNo, PacketID: pay.PacketID, Channel: pay.Channel, Amount: event.Yuan(int64(pay.Amount)),
		Reason: reason}.Message(at)
}

// settleFinal handles an outcome for a trade already final (pay as it is):
// a repeat changes nothing; a success after a failure (or a give-up) leaves
// the trade and its packet as they are and credits the amount to the
// sender, once (the ledger row's ref is the trade); a failure after a
// success is a contradiction, and nothing moves. Money credited back adds
// its payment.settled (credited_back) to out.
func (db *DB) settleFinal(ctx context.Context, tx *sqlx.Tx, pay *Payment, outcome *SettleOutcome, success bool, now time.Time, out *outboxRows) error {
	switch {
	case !success && pay.Status == PaymentPaid:
		*outcome = SettleContradicted
		return nil
	case !success || pay.Status != PaymentFailed:
		return nil // a repeat
	}
	var sender int64
	if err := tx.GetContext(ctx, &sender, "SELECT sender_id FROM packet WHERE id = ?", pay.PacketID); err != nil {
		return err
	}
	credited, err := db.credit(ctx, tx, KindOverpay, pay.TradeNo, sender, int64(pay.Amount), now)
	if credited {
		*outcome = SettleCreditedBack
		if db.outboxOn() {
			*out = append(*out, settledMessage(*pay, true, now))
		}
	}
	return err
}

// advancePayment runs a conditional status update of a trade and reads the
// trade back; moved reports whether the update applied (statuses only move
// forward, so a repeat finds nothing to move).
func advancePayment(ctx context.Context, tx *sqlx.Tx, tradeNo, update string, args ...any) (pay Payment, moved bool, err error) {
	res, err := tx.ExecContext(ctx, update, args...)
	if err != nil {
		return Payment{}, false, err
	}
	if err := tx.GetContext(ctx, &pay, "SELECT "+paymentColumns+" FROM payment WHERE trade_no = ?", tradeNo); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Payment{}, false, ErrNotFound
		}
		return Payment{}, false, err
	}
	n, err := res.RowsAffected()
	return pay, n == 1, err
}

// ReconcilePacket credits every grab of a paid packet that is not credited
// yet (a grab made while the payment awaited settlement and written after the
// settlement). It returns how many it credited; each share is credited once.
func (db *DB) ReconcilePacket(ctx context.Context, packetID int64, now time.Time) (int, error) {
	var n int
	err := db.inTx(ctx, func(tx *sqlx.Tx) error {
		var out outboxRows
		var err error
		if n, err = db.creditUncredited(ctx, tx, packetID, now, &out); err != nil {
			return err
		}
		return db.writeOutbox(ctx, tx, out)
	})
	return n, err
}

// creditUncredited credits the grabs of a paid packet not credited yet,
// adding each one's packet.credited to out; it returns how many.
func (db *DB) creditUncredited(ctx context.Context, tx *sqlx.Tx, packetID int64, now time.Time, out *outboxRows) (int, error) {
	var payStatus string
	if err := tx.GetContext(ctx, &payStatus, "SELECT pay_status FROM packet WHERE id = ?"+db.forUpdate(), packetID); err != nil {
		return 0, err
	}
	if payStatus != "paid" {
		return 0, nil
	}
	var shares []Share
	if err := tx.SelectContext(ctx, &shares, `SELECT packet_id, seq, amount, user_id, grabbed_at, credited FROM packet_share
		WHERE packet_id = ? AND user_id IS NOT NULL AND credited = 0`+db.forUpdate(), packetID); err != nil {
		return 0, err
	}
	if len(shares) == 0 {
		return 0, nil
	}
	credits := make([]ledgerCredit, len(shares))
	for i, s := range shares {
		credits[i] = ledgerCredit{ref: shareRef(packetID, s.Seq), userID: s.UserID.Int64, fen: int64(s.Amount), at: now}
	}
	// The same batched credit as the writer's (accounts in id order), so the
	// two cannot deadlock and the ledger credits each share once.
	if err := db.creditMany(ctx, tx, KindGrab, credits); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, "UPDATE packet_share SET credited = 1 WHERE packet_id = ? AND user_id IS NOT NULL AND credited = 0", packetID); err != nil {
		return 0, err
	}
	if db.outboxOn() {
		for _, s := range shares {
			*out = append(*out, event.PacketCredited{PacketID: packetID, Seq: s.Seq, UserID: s.UserID.Int64,
				Amount: event.Yuan(int64(s.Amount))}.Message(now))
		}
	}
	return len(shares), nil
}

// PacketsToReconcile lists paid packets that still have uncredited grabs.
func (db *DB) PacketsToReconcile(ctx context.Context, limit int) ([]int64, error) {
	var ids []int64
	err := db.x.SelectContext(ctx, &ids, `SELECT DISTINCT s.packet_id FROM packet_share s JOIN packet p ON p.id = s.packet_id
		WHERE s.credited = 0 AND s.user_id IS NOT NULL AND p.pay_status = 'paid' ORDER BY s.packet_id LIMIT ?`, limit)
	return ids, err
}

// StalePayments lists trades without an outcome (unpaid, or awaiting
// settlement) whose last change is before `before`, in (updated_at,
// trade_no) order after the cursor `after` (the zero cursor starts at the
// oldest): a caller pages through them all, so trades that stay pending
// cannot hide the ones behind them.
func (db *DB) StalePayments(ctx context.Context, before time.Time, after PaymentCursor, limit int) ([]Payment, error) {
	var ps []Payment
	err := db.x.SelectContext(ctx, &ps, "SELECT "+paymentColumns+` FROM payment
		WHERE status IN ('unpaid', 'awaiting_settlement') AND updated_at < ?
		AND (updated_at > ? OR updated_at = ? AND trade_no > ?)
		ORDER BY updated_at, trade_no LIMIT ?`, before, after.UpdatedAt, after.UpdatedAt, after.TradeNo, limit)
	return ps, err
}

// PaymentCursor is a position in StalePayments' order.
type PaymentCursor struct {
	UpdatedAt time.Time
	TradeNo   string
}

// forUpdate locks the rows read in MySQL; SQLite's single writer needs nothing.
func (db *DB) forUpdate() string {
	if db.dialect == dialectSQLite {
		return ""
	}
	return " FOR UPDATE"
}
