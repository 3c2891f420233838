package packet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/money"
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
	// (channel.AppPayer); set by PayByProvider only, nil for other channels.
	PayParams map[string]string
	CreatedAt time.Time
	UpdatedAt time.Time
}

func paymentView(p store.Payment) Payment {
	return Payment{TradeNo: p.TradeNo, PacketID: p.PacketID, Channel: p.Channel, Amount: int64(p.Amount), PayStatus: p.Status,
		GivenUp: p.GivenUp, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
}

// sendersTrade is a trade, for the packet's sender only
// (verb says what a stranger may not do with it: ErrForbidden).
func (s *Service) sendersTrade(ctx context.Context, tradeNo string, userID int64, verb string) (store.Payment, error) {
	pay, err := s.db.Payment(ctx, tradeNo)
	if err != nil {
		return store.Payment{}, engine.FromStore(err)
	}
	p, err := s.db.Packet(ctx, pay.PacketID)
	if err != nil {
		return store.Payment{}, engine.FromStore(err)
	}
	if p.SenderID != userID {
		return store.Payment{}, fmt.Errorf("%w: only the sender %s a payment", engine.ErrForbidden, verb)
	}
	return pay, nil
}

// TradeOf is a trade as its sender sees it: its state, and what of its money
// went to the sender's balance. Only the packet's sender may read it.
func (s *Service) TradeOf(ctx context.Context, tradeNo string, userID int64) (Payment, error) {
	pay, err := s.sendersTrade(ctx, tradeNo, userID, "reads")
	if err != nil {
		return Payment{}, err
	}
	back, err := s.db.CreditedBack(ctx, tradeNo)
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
func (s *Service) PayByProvider(ctx context.Context, packetID, senderID int64, ch string) (Payment, error) {
	if !channel.Known(ch) {
		return Payment{}, fmt.Errorf("%w: method must be balance, alipay, wechat or unionpay", engine.ErrInvalidArgument)
	}
	provider := s.pays[ch]
	if provider == nil {
		return Payment{}, fmt.Errorf("%w: %s payments are not enabled on this server", engine.ErrInvalidArgument, ch)
	}
	p, err := s.db.Packet(ctx, packetID)
	if err != nil {
		return Payment{}, engine.FromStore(err)
	}
	if p.SenderID != senderID {
		return Payment{}, fmt.Errorf("%w: only the sender pays", engine.ErrForbidden)
	}
	pay, _, err := s.db.StartPayment(ctx, packetID, ch, newTradeNo(packetID), s.clock.Now().UTC())
	switch {
	case errors.Is(err, store.ErrWrongState) && p.Status == StatusUnpaid:
		return Payment{}, fmt.Errorf("%w: its trade on another ch awaits settlement", engine.ErrNotPayable)
	case errors.Is(err, store.ErrWrongState):
		return Payment{}, fmt.Errorf("%w: it is %s", engine.ErrNotPayable, p.Status)
	case err != nil:
		return Payment{}, engine.FromStore(err)
	}
	// Registered every time: the provider is idempotent by trade number, so a
	// call that failed after the row was written is simply made again.
	view := paymentView(pay)
	t := channel.Trade{TradeNo: pay.TradeNo, Channel: ch, Amount: int64(pay.Amount)}
	if app, ok := provider.(channel.AppPayer); ok {
		view.PayParams, err = app.StartTrade(ctx, t)
	} else {
		err = provider.CreateTrade(ctx, t)
	}
	if err != nil {
		// The API answers BUSY; the ch's own answer is here only.
		s.log.ErrorContext(ctx, "payment ch did not take the trade; the sender may pay again", "trade_no", pay.TradeNo,
			"channel", ch, "err", err)
		return Payment{}, fmt.Errorf("%w: %w", engine.ErrProviderUnavailable, err)
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
func (s *Service) PaymentReturn(ctx context.Context, tradeNo string, userID int64) (Payment, error) {
	pay, err := s.sendersTrade(ctx, tradeNo, userID, "reports")
	if err != nil {
		return Payment{}, err
	}
	now := s.clock.Now().UTC()
	if pay, err = s.db.MarkReturned(ctx, tradeNo, now, now.Add(s.cfg.PacketTTL)); err != nil {
		return Payment{}, engine.FromStore(err)
	}
	if err := s.syncPacket(ctx, pay.PacketID); err != nil {
		// Committed; the first grab rebuilds the state from the store.
		s.log.WarnContext(ctx, "payment returned but the packet was not loaded into redis", "trade_no", tradeNo, "err", err)
	}
	return paymentView(pay), nil
}

// Notify applies a provider's notification. Every well-formed one is
// accepted, duplicates and late ones included: the first final outcome wins
// and nothing moves backwards.
func (s *Service) Notify(ctx context.Context, n channel.Notification) error {
	pay, err := s.db.Payment(ctx, n.TradeNo)
	if err != nil {
		return engine.FromStore(err)
	}
	// A verified notification that disagrees with its trade is refused, so
	// nothing moves and the channel resends it; money a channel may hold
	// for it needs a person: logged at error and counted.
	if pay.Channel != n.Channel {
		s.notifyAnomaly(ctx, "channel_mismatch", n, "trade_channel", pay.Channel)
		return fmt.Errorf("%w: no trade %s on %s", engine.ErrNotFound, n.TradeNo, n.Channel)
	}
	if int64(pay.Amount) != n.Amount {
		s.notifyAnomaly(ctx, "amount_mismatch", n, "trade_amount", money.Format(int64(pay.Amount)))
		return fmt.Errorf("%w: trade %s is %s, the notification says %s", engine.ErrAmountMismatch, n.TradeNo,
			money.Format(int64(pay.Amount)), money.Format(n.Amount))
	}
	return s.settle(ctx, n.TradeNo, n.Success, n.ProviderTxn)
}

// notifyAnomaly logs and counts a verified notification its trade refuses.
func (s *Service) notifyAnomaly(ctx context.Context, kind string, n channel.Notification, args ...any) {
	s.anomalies.WithLabelValues(kind).Inc()
	s.log.ErrorContext(ctx, "payment notification disagrees with its trade; refused, needs attention",
		append([]any{"kind", kind, "trade_no", n.TradeNo, "channel", n.Channel, "amount", money.Format(n.Amount),
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
func (s *Service) settle(ctx context.Context, tradeNo string, success bool, providerTxn string) error {
	now := s.clock.Now().UTC()
	pay, outcome, err := s.db.Settle(ctx, tradeNo, success, providerTxn, now, now.Add(s.cfg.PacketTTL))
	return s.settled(ctx, tradeNo, pay, outcome, err)
}

// settled logs and counts what a store settlement did, then syncs Redis.
func (s *Service) settled(ctx context.Context, tradeNo string, pay store.Payment, outcome store.SettleOutcome, err error) error {
	if err != nil {
		return engine.FromStore(err)
	}
	switch outcome {
	case store.SettleApplied:
		s.log.InfoContext(ctx, "payment settled", "trade_no", tradeNo, "packet_id", pay.PacketID, "status", pay.Status)
	case store.SettleCreditedBack:
		s.anomalies.WithLabelValues("credited_back").Inc()
		s.log.ErrorContext(ctx, "payment succeeded where its packet cannot take it (the trade had failed or was given up, or the packet was paid another way); the amount is credited to the sender's balance",
			"trade_no", tradeNo, "packet_id", pay.PacketID, "amount", money.Format(int64(pay.Amount)))
	case store.SettleContradicted:
		s.anomalies.WithLabelValues("failure_after_success").Inc()
		s.log.ErrorContext(ctx, "payment failure reported for a trade that succeeded; nothing changes, needs attention",
			"trade_no", tradeNo, "packet_id", pay.PacketID)
	}
	return s.syncPacket(ctx, pay.PacketID)
}

// syncPacket brings a packet's Redis state in line with the store after a
// payment moved it, under the packet's load lock so a concurrent rebuild
// cannot put back what it read before the move.
func (s *Service) syncPacket(ctx context.Context, packetID int64) error {
	unlock, err := s.lockPacket(ctx, packetID)
	if err != nil {
		return err
	}
	defer unlock()
	keys := s.keys.Packet(packetID)
	epoch, err := s.core.AdoptEpoch(ctx, keys.Epoch)
	if err != nil {
		return err
	}
	p, err := s.db.Packet(ctx, packetID)
	if err != nil {
		return err
	}
	switch {
	case p.PayStatus == "failed":
		_, err = lua.Settle(ctx, s.rdb, keys, false)
		return err
	case p.Status == StatusUnpaid:
		return nil
	}
	if _, err := s.load(ctx, p, epoch); err != nil {
		return err
	}
	if p.PayStatus == "paid" {
		_, err = lua.Settle(ctx, s.rdb, keys, true)
	}
	return err
}

// Reconcile is one pass of the periodic sweep: it credits grabs of paid
// packets that reached the store after their packet settled, and asks the
// provider about payments awaiting settlement for longer than SettleTimeout.
func (s *Service) Reconcile(ctx context.Context) (credited int, err error) {
	now := s.clock.Now().UTC()
	ids, err := s.db.PacketsToReconcile(ctx, 100)
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		n, err := s.db.ReconcilePacket(ctx, id, now)
		if err != nil {
			return credited, err
		}
		credited += n
	}
	if len(s.pays) == 0 {
		return credited, nil
	}
	stale, err := s.stalePayments(ctx, now.Add(-s.cfg.SettleTimeout))
	if err != nil {
		return credited, err
	}
	for _, pay := range stale {
		r, err := s.queryTrade(ctx, pay)
		unknown := errors.Is(err, channel.ErrTradeUnknown)
		if err != nil && !unknown {
			s.log.WarnContext(ctx, "reconcile: provider query failed", "trade_no", pay.TradeNo, "err", err)
		}
		if unknown || (r.Outcome == channel.TradePending || err != nil) && now.Sub(pay.CreatedAt) > s.cfg.SettleGiveUp {
			if err := s.giveUp(ctx, pay, unknown); err != nil {
				return credited, err
			}
			continue
		}
		if err != nil || r.Outcome == channel.TradePending {
			continue
		}
		if r.Outcome == channel.TradeSucceeded && r.Amount != int64(pay.Amount) {
			s.log.ErrorContext(ctx, "reconcile: provider reports another amount; needs attention", "trade_no", pay.TradeNo,
				"trade", money.Format(int64(pay.Amount)), "provider", money.Format(r.Amount))
			continue
		}
		if err := s.settle(ctx, pay.TradeNo, r.Outcome == channel.TradeSucceeded, r.ProviderTxn); err != nil {
			return credited, err
		}
	}
	return credited, nil
}

// stalePayments is the next page of trades to ask their channel about:
// each pass goes on from where the last one stopped, and starts over once
// it has seen them all.
func (s *Service) stalePayments(ctx context.Context, before time.Time) ([]store.Payment, error) {
	const page = 100
	s.reconcileMu.Lock()
	defer s.reconcileMu.Unlock()
	stale, err := s.db.StalePayments(ctx, before, s.reconcileAt, page)
	switch {
	case err != nil:
		return nil, err
	case len(stale) < page:
		s.reconcileAt = store.PaymentCursor{}
	default:
		last := stale[len(stale)-1]
		s.reconcileAt = store.PaymentCursor{UpdatedAt: last.UpdatedAt, TradeNo: last.TradeNo}
	}
	return stale, nil
}

// queryTrade asks a trade's channel for its outcome. Before the sender's app
// returns from the channel, a trade the channel does not know is one the
// payer has not opened yet (Alipay's App pay creates it only then): pending,
// not unknown. A channel no longer enabled answers nothing (an error).
func (s *Service) queryTrade(ctx context.Context, pay store.Payment) (channel.TradeResult, error) {
	provider := s.pays[pay.Channel]
	if provider == nil {
		return channel.TradeResult{}, fmt.Errorf("%s payments are not enabled on this server", pay.Channel)
	}
	r, err := provider.QueryTrade(ctx, pay.TradeNo)
	if errors.Is(err, channel.ErrTradeUnknown) && pay.Status == store.PaymentUnpaid {
		return channel.TradeResult{Outcome: channel.TradePending}, nil
	}
	return r, err
}

// giveUp ends a trade no outcome will come for — the provider does not
// know it, or it has had none for SettleGiveUp — as failed: its packet
// closes as a failed payment would, and its grabs are never credited. A
// success that arrives after all credits the sender's balance (settle).
func (s *Service) giveUp(ctx context.Context, pay store.Payment, unknown bool) error {
	reason := "no outcome within the give-up bound"
	if unknown {
		reason = "the provider does not know the trade"
	}
	msg := "payment given up and ended as failed; its packet closes and its grabs are not credited"
	if p, err := s.db.Packet(ctx, pay.PacketID); err == nil && p.PayStatus == "paid" {
		msg = "payment given up and ended as failed; its packet was paid another way and stays as it is"
	}
	s.anomalies.WithLabelValues("given_up").Inc()
	s.log.ErrorContext(ctx, msg, "trade_no", pay.TradeNo, "packet_id", pay.PacketID, "reason", reason, "since", pay.CreatedAt)
	ended, outcome, err := s.db.GiveUp(ctx, pay.TradeNo, s.clock.Now().UTC())
	return s.settled(ctx, pay.TradeNo, ended, outcome, err)
}

// RunReconciler runs Reconcile every ReconcileInterval until ctx ends.
func (s *Service) RunReconciler(ctx context.Context) error {
	return s.core.Every(ctx, s.cfg.ReconcileInterval, "reconcile pass", func(ctx context.Context) error {
		_, err := s.Reconcile(ctx)
		return err
	})
}
