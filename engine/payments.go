package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Payment is a third-party trade as the API shows it.
type Payment struct {
	TradeNo   string
	PacketID  int64
	Channel   string
	Amount    int64  // fen
	PayStatus string // unpaid | awaiting_settlement | paid | failed
	// GivenUp: the trade failed because no outcome came (the channel did not
	// know it, or nothing came within SettleGiveUp), not by the channel's word.
	GivenUp bool
	// CreditedBack is what the trade's money credited to the sender's
	// balance because its packet could not take it (paid another way, or the
	// money arrived after the trade failed or was given up), in fen; set by
	// TradeOf only.
	CreditedBack int64
	// PayParams are what the sender's app hands to the channel's SDK to pay
	// (AppPayer); set by PayByProvider only, nil for other channels.
	PayParams map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// Notification is a provider's asynchronous word on a trade.
type Notification struct {
	Channel     string
	TradeNo     string
	Amount      int64 // fen
	Success     bool
	ProviderTxn string
}

func paymentView(p store.Payment) Payment {
	return Payment{TradeNo: p.TradeNo, PacketID: p.PacketID, Channel: p.Channel, Amount: int64(p.Amount), PayStatus: p.Status,
		GivenUp: p.GivenUp, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

// TradeOf is a trade as its sender sees it: its state, and what of its money
// went to the sender's balance. Only the packet's sender may read it.
func (e *Engine) TradeOf(ctx context.Context, tradeNo string, userID int64) (Payment, error) {
	pay, err := e.db.Payment(ctx, tradeNo)
	if err != nil {
		return Payment{}, storeErr(err)
	}
	p, err := e.db.Packet(ctx, pay.PacketID)
	if err != nil {
		return Payment{}, storeErr(err)
	}
	if p.SenderID != userID {
		return Payment{}, fmt.Errorf("%w: only the sender reads a payment", ErrForbidden)
	}
	back, err := e.db.CreditedBack(ctx, tradeNo)
	if err != nil {
		return Payment{}, err
	}
	v := paymentView(pay)
	v.CreditedBack = int64(back)
	return v, nil
}

// PayByProvider starts a third-party payment of an unpaid packet. The packet
// stays unpaid until the provider's return or notification. Asking again on
// the same channel returns the same trade.
func (e *Engine) PayByProvider(ctx context.Context, packetID, senderID int64, channel string) (Payment, error) {
	if !IsChannel(channel) {
		return Payment{}, fmt.Errorf("%w: method must be balance, alipay, wechat or unionpay", ErrInvalidArgument)
	}
	provider := e.pays[channel]
	if provider == nil {
		return Payment{}, fmt.Errorf("%w: %s payments are not enabled on this server", ErrInvalidArgument, channel)
	}
	p, err := e.db.Packet(ctx, packetID)
	if err != nil {
		return Payment{}, storeErr(err)
	}
	if p.SenderID != senderID {
		return Payment{}, fmt.Errorf("%w: only the sender pays", ErrForbidden)
	}
	pay, _, err := e.db.StartPayment(ctx, packetID, channel, newTradeNo(packetID), e.clock.Now().UTC())
	switch {
	case errors.Is(err, store.ErrWrongState) && p.Status == StatusUnpaid:
		return Payment{}, fmt.Errorf("%w: its trade on another channel awaits settlement", ErrNotPayable)
	case errors.Is(err, store.ErrWrongState):
		return Payment{}, fmt.Errorf("%w: it is %s", ErrNotPayable, p.Status)
	case err != nil:
		return Payment{}, storeErr(err)
	}
	// Registered every time: the provider is idempotent by trade number, so a
	// call that failed after the row was written is simply made again.
	view := paymentView(pay)
	t := Trade{TradeNo: pay.TradeNo, Channel: channel, Amount: int64(pay.Amount)}
	if app, ok := provider.(AppPayer); ok {
		view.PayParams, err = app.StartTrade(ctx, t)
	} else {
		err = provider.CreateTrade(ctx, t)
	}
	if err != nil {
		// The API answers BUSY; the channel's own answer is here only.
		e.log.ErrorContext(ctx, "payment channel did not take the trade; the sender may pay again", "trade_no", pay.TradeNo,
			"channel", channel, "err", err)
		return Payment{}, fmt.Errorf("%w: %w", ErrProviderUnavailable, err)
	}
	return view, nil
}

// newTradeNo is a trade's out-trade-no: "T<packet>_<12 hex>", within every
// channel's alphabet (Alipay and WeChat Pay allow letters, digits and _).
func newTradeNo(packetID int64) string {
	var b [6]byte
	rand.Read(b[:])
	return fmt.Sprintf("T%d_%s", packetID, hex.EncodeToString(b[:]))
}

// PaymentReturn records the sender's app seeing the provider's synchronous
// return: the packet opens for grabs at once, which are credited when the
// payment settles. Later states are kept; the answer says where it stands.
func (e *Engine) PaymentReturn(ctx context.Context, tradeNo string, userID int64) (Payment, error) {
	pay, err := e.db.Payment(ctx, tradeNo)
	if err != nil {
		return Payment{}, storeErr(err)
	}
	p, err := e.db.Packet(ctx, pay.PacketID)
	if err != nil {
		return Payment{}, storeErr(err)
	}
	if p.SenderID != userID {
		return Payment{}, fmt.Errorf("%w: only the sender reports a payment", ErrForbidden)
	}
	now := e.clock.Now().UTC()
	if pay, err = e.db.MarkReturned(ctx, tradeNo, now, now.Add(e.cfg.PacketTTL)); err != nil {
		return Payment{}, storeErr(err)
	}
	if err := e.syncPacket(ctx, pay.PacketID); err != nil {
		// Committed; the first grab rebuilds the state from the store.
		e.log.WarnContext(ctx, "payment returned but the packet was not loaded into redis", "trade_no", tradeNo, "err", err)
	}
	return paymentView(pay), nil
}

// Notify applies a provider's notification. Every well-formed one is
// accepted, duplicates and late ones included: the first final outcome wins
// and nothing moves backwards.
func (e *Engine) Notify(ctx context.Context, n Notification) error {
	pay, err := e.db.Payment(ctx, n.TradeNo)
	if err != nil {
		return storeErr(err)
	}
	// A verified notification that disagrees with its trade is refused, so
	// nothing moves and the channel resends it; money a channel may hold
	// for it needs a person: logged at error and counted.
	if pay.Channel != n.Channel {
		e.notifyAnomaly(ctx, "channel_mismatch", n, "trade_channel", pay.Channel)
		return fmt.Errorf("%w: no trade %s on %s", ErrNotFound, n.TradeNo, n.Channel)
	}
	if int64(pay.Amount) != n.Amount {
		e.notifyAnomaly(ctx, "amount_mismatch", n, "trade_amount", FormatAmount(int64(pay.Amount)))
		return fmt.Errorf("%w: trade %s is %s, the notification says %s", ErrAmountMismatch, n.TradeNo,
			FormatAmount(int64(pay.Amount)), FormatAmount(n.Amount))
	}
	return e.settle(ctx, n.TradeNo, n.Success, n.ProviderTxn)
}

// notifyAnomaly logs and counts a verified notification its trade refuses.
func (e *Engine) notifyAnomaly(ctx context.Context, kind string, n Notification, args ...any) {
	e.m.payAnomalies.WithLabelValues(kind).Inc()
	e.log.ErrorContext(ctx, "payment notification disagrees with its trade; refused, needs attention",
		append([]any{"kind", kind, "trade_no", n.TradeNo, "channel", n.Channel, "amount", FormatAmount(n.Amount),
			"success", n.Success, "provider_txn", n.ProviderTxn}, args...)...)
}

// settle records a final outcome in the store, crediting what was grabbed
// meanwhile, then brings Redis in line. Redis is synced even when the store
// had the outcome already: an earlier call may have stopped in between.
// An outcome the packet cannot take as it is — money that arrived after the
// trade failed or was given up, or for a packet paid another way (credited
// to the sender's balance), or a failure after a success (nothing moves) —
// is logged at error and counted (grab_payment_anomalies_total), never
// dropped.
func (e *Engine) settle(ctx context.Context, tradeNo string, success bool, providerTxn string) error {
	now := e.clock.Now().UTC()
	pay, outcome, err := e.db.Settle(ctx, tradeNo, success, providerTxn, now, now.Add(e.cfg.PacketTTL))
	return e.settled(ctx, tradeNo, pay, outcome, err)
}

// settled logs and counts what a store settlement did, then syncs Redis.
func (e *Engine) settled(ctx context.Context, tradeNo string, pay store.Payment, outcome store.SettleOutcome, err error) error {
	if err != nil {
		return storeErr(err)
	}
	switch outcome {
	case store.SettleApplied:
		e.log.InfoContext(ctx, "payment settled", "trade_no", tradeNo, "packet_id", pay.PacketID, "status", pay.Status)
	case store.SettleCreditedBack:
		e.m.payAnomalies.WithLabelValues("credited_back").Inc()
		e.log.ErrorContext(ctx, "payment succeeded where its packet cannot take it (the trade had failed or was given up, or the packet was paid another way); the amount is credited to the sender's balance",
			"trade_no", tradeNo, "packet_id", pay.PacketID, "amount", FormatAmount(int64(pay.Amount)))
	case store.SettleContradicted:
		e.m.payAnomalies.WithLabelValues("failure_after_success").Inc()
		e.log.ErrorContext(ctx, "payment failure reported for a trade that succeeded; nothing changes, needs attention",
			"trade_no", tradeNo, "packet_id", pay.PacketID)
	}
	return e.syncPacket(ctx, pay.PacketID)
}

// syncPacket brings a packet's Redis state in line with the store after a
// payment moved it, under the packet's load lock so a concurrent rebuild
// cannot put back what it read before the move.
func (e *Engine) syncPacket(ctx context.Context, packetID int64) error {
	unlock, err := e.lockPacket(ctx, packetID)
	if err != nil {
		return err
	}
	defer unlock()
	keys := e.keys.Packet(packetID)
	epoch, err := e.adoptEpoch(ctx, keys.Epoch)
	if err != nil {
		return err
	}
	p, err := e.db.Packet(ctx, packetID)
	if err != nil {
		return err
	}
	switch {
	case p.PayStatus == "failed":
		_, err = lua.Settle(ctx, e.rdb, keys, false)
		return err
	case p.Status == StatusUnpaid:
		return nil
	}
	if _, err := e.load(ctx, p, epoch); err != nil {
		return err
	}
	if p.PayStatus == "paid" {
		_, err = lua.Settle(ctx, e.rdb, keys, true)
	}
	return err
}

// Reconcile is one pass of the periodic sweep: it credits grabs of paid
// packets that reached the store after their packet settled, and asks the
// provider about payments awaiting settlement for longer than SettleTimeout.
func (e *Engine) Reconcile(ctx context.Context) (credited int, err error) {
	now := e.clock.Now().UTC()
	ids, err := e.db.PacketsToReconcile(ctx, 100)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		n, err := e.db.ReconcilePacket(ctx, id, now)
		if err != nil {
			return credited, err
		}
		credited += n
	}
	if len(e.pays) == 0 {
		return credited, nil
	}
	stale, err := e.stalePayments(ctx, now.Add(-e.cfg.SettleTimeout))
	if err != nil {
		return credited, err
	}
	for _, pay := range stale {
		r, err := e.queryTrade(ctx, pay)
		unknown := errors.Is(err, ErrTradeUnknown)
		if err != nil && !unknown {
			e.log.WarnContext(ctx, "reconcile: provider query failed", "trade_no", pay.TradeNo, "err", err)
		}
		if unknown || (r.Outcome == TradePending || err != nil) && now.Sub(pay.CreatedAt) > e.cfg.SettleGiveUp {
			if err := e.giveUp(ctx, pay, unknown); err != nil {
				return credited, err
			}
			continue
		}
		if err != nil || r.Outcome == TradePending {
			continue
		}
		if r.Outcome == TradeSucceeded && r.Amount != int64(pay.Amount) {
			e.log.ErrorContext(ctx, "reconcile: provider reports another amount; needs attention", "trade_no", pay.TradeNo,
				"trade", FormatAmount(int64(pay.Amount)), "provider", FormatAmount(r.Amount))
			continue
		}
		if err := e.settle(ctx, pay.TradeNo, r.Outcome == TradeSucceeded, r.ProviderTxn); err != nil {
			return credited, err
		}
	}
	return credited, nil
}

// stalePayments is the next page of trades to ask their channel about:
// each pass goes on from where the last one stopped, and starts over once
// it has seen them all.
func (e *Engine) stalePayments(ctx context.Context, before time.Time) ([]store.Payment, error) {
	const page = 100
	e.reconcileMu.Lock()
	defer e.reconcileMu.Unlock()
	stale, err := e.db.StalePayments(ctx, before, e.reconcileAt, page)
	switch {
	case err != nil:
		return nil, err
	case len(stale) < page:
		e.reconcileAt = store.PaymentCursor{}
	default:
		last := stale[len(stale)-1]
		e.reconcileAt = store.PaymentCursor{UpdatedAt: last.UpdatedAt, TradeNo: last.TradeNo}
	}
	return stale, nil
}

// queryTrade asks a trade's channel for its outcome. Before the sender's app
// returns from the channel, a trade the channel does not know is one the
// payer has not opened yet (Alipay's App pay creates it only then): pending,
// not unknown. A channel no longer enabled answers nothing (an error).
func (e *Engine) queryTrade(ctx context.Context, pay store.Payment) (TradeResult, error) {
	provider := e.pays[pay.Channel]
	if provider == nil {
		return TradeResult{}, fmt.Errorf("%s payments are not enabled on this server", pay.Channel)
	}
	r, err := provider.QueryTrade(ctx, pay.TradeNo)
	if errors.Is(err, ErrTradeUnknown) && pay.Status == store.PaymentUnpaid {
		return TradeResult{Outcome: TradePending}, nil
	}
	return r, err
}

// giveUp ends a trade no outcome will come for — the provider does not
// know it, or it has had none for SettleGiveUp — as failed: its packet
// closes as a failed payment would, and its grabs are never credited. A
// success that arrives after all credits the sender's balance (settle).
func (e *Engine) giveUp(ctx context.Context, pay store.Payment, unknown bool) error {
	reason := "no outcome within the give-up bound"
	if unknown {
		reason = "the provider does not know the trade"
	}
	msg := "payment given up and ended as failed; its packet closes and its grabs are not credited"
	if p, err := e.db.Packet(ctx, pay.PacketID); err == nil && p.PayStatus == "paid" {
		msg = "payment given up and ended as failed; its packet was paid another way and stays as it is"
	}
	e.m.payAnomalies.WithLabelValues("given_up").Inc()
	e.log.ErrorContext(ctx, msg, "trade_no", pay.TradeNo, "packet_id", pay.PacketID, "reason", reason, "since", pay.CreatedAt)
	ended, outcome, err := e.db.GiveUp(ctx, pay.TradeNo, e.clock.Now().UTC())
	return e.settled(ctx, pay.TradeNo, ended, outcome, err)
}

// RunReconciler runs Reconcile every ReconcileInterval until ctx ends.
func (e *Engine) RunReconciler(ctx context.Context) error {
	return e.every(ctx, e.cfg.ReconcileInterval, "reconcile pass", func(ctx context.Context) error {
		_, err := e.Reconcile(ctx)
		return err
	})
}
