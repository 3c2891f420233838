package event

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// The payloads of the outbox's messages, one type per Msg* kind
// (docs/events.md). Each type's Message method wraps it in a Message with
// its deterministic id, its kind and its aggregate. Money is a decimal
// string of yuan ("12.34"), formatted by Yuan from the int64 fen the store
// holds: the package stays a leaf, so it formats with strconv rather than
// with the engine's money package, to the same text.

// Yuan formats fen as a decimal string of yuan with two decimals: 1234 is
// "12.34", -5 is "-0.05".
func Yuan(fen int64) string {
	sign := ""
	u := uint64(fen)
	if fen < 0 {
		sign, u = "-", uint64(-fen) // -MinInt64 wraps to itself, as a uint64 its magnitude
	}
	s := strconv.FormatUint(u/100, 10)
	c := u % 100
	return sign + s + "." + string(rune('0'+c/10)) + string(rune('0'+c%10))
}

// PacketAggregate is a packet's aggregate, "packet:<id>".
func PacketAggregate(packetID int64) string { return "packet:" + strconv.FormatInt(packetID, 10) }

// CampaignAggregate is a campaign's aggregate, "campaign:<id>".
func CampaignAggregate(campaignID int64) string {
	return "campaign:" + strconv.FormatInt(campaignID, 10)
}

// SKUAggregate is a SKU's aggregate, "sku:<activity>:<product>:<sku>".
func SKUAggregate(activityID, productID, sku int64) string {
	return fmt.Sprintf("sku:%d:%d:%d", activityID, productID, sku)
}

// message marshals p into a Message. The payload types hold only strings,
// numbers, bools and slices of them, which always marshal.
func message(id, kind, aggregate string, at time.Time, p any) Message {
	b, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("event: %s payload: %v", kind, err))
	}
	return Message{ID: id, Kind: kind, Aggregate: aggregate, At: at.UTC(), Payload: b}
}

// PacketPaid (packet.paid): a packet was paid and opened for grabs; id
// "paid:<packet>".
type PacketPaid struct {
	PacketID int64  `json:"packet_id"`
	SenderID int64  `json:"sender_id"`
	Amount   string `json:"amount"` // the packet's total
	// Method is "balance" or the payment channel of the trade that paid it.
	Method  string `json:"method"`
	TradeNo string `json:"trade_no,omitempty"` // the trade, when a channel paid
}

// Message is p as packet.paid.
func (p PacketPaid) Message(at time.Time) Message {
	return message(fmt.Sprintf("paid:%d", p.PacketID), MsgPacketPaid, PacketAggregate(p.PacketID), at, p)
}

// PacketGrabbed (packet.grabbed): a user took a share of a packet; id
// "grab:<packet>:<seq>". Credited says the amount reached the balance with
// the grab (the packet was paid); an uncredited grab is credited later, by
// its packet.credited.
type PacketGrabbed struct {
	PacketID int64  `json:"packet_id"`
	Seq      int    `json:"seq"`
	UserID   int64  `json:"user_id"`
	Amount   string `json:"amount"`
	Credited bool   `json:"credited"`
	Finished bool   `json:"finished"` // the grab took the last share
}

// Message is p as packet.grabbed.
func (p PacketGrabbed) Message(at time.Time) Message {
	return message(fmt.Sprintf("grab:%d:%d", p.PacketID, p.Seq), MsgPacketGrabbed, PacketAggregate(p.PacketID), at, p)
}

// PacketCredited (packet.credited): a grab made while its packet's payment
// awaited settlement reached the user's balance once the payment settled;
// id "credited:<packet>:<seq>".
type PacketCredited struct {
	PacketID int64  `json:"packet_id"`
	Seq      int    `json:"seq"`
	UserID   int64  `json:"user_id"`
	Amount   string `json:"amount"`
}

// Message is p as packet.credited.
func (p PacketCredited) Message(at time.Time) Message {
	return message(fmt.Sprintf("credited:%d:%d", p.PacketID, p.Seq), MsgPacketCredited, PacketAggregate(p.PacketID), at, p)
}

// PacketFinished (packet.finished): every share of a packet was grabbed;
// id "finished:<packet>".
type PacketFinished struct {
	PacketID int64 `json:"packet_id"`
	BestSeq  int   `json:"best_seq"` // the share of best luck: the first of the largest amount
}

// Message is p as packet.finished.
func (p PacketFinished) Message(at time.Time) Message {
	return message(fmt.Sprintf("finished:%d", p.PacketID), MsgPacketFinished, PacketAggregate(p.PacketID), at, p)
}

// PacketRefunded (packet.refunded): what was left of an expired, paid
// packet went back to its sender's balance; id "refund:<packet>".
type PacketRefunded struct {
	PacketID int64  `json:"packet_id"`
	SenderID int64  `json:"sender_id"`
	Amount   string `json:"amount"` // the remainder refunded; "0.00" when every share was grabbed
}

// Message is p as packet.refunded.
func (p PacketRefunded) Message(at time.Time) Message {
	return message(fmt.Sprintf("refund:%d", p.PacketID), MsgPacketRefunded, PacketAggregate(p.PacketID), at, p)
}

// PaymentSettled (payment.settled): a third-party trade's money arrived;
// id "settled:<trade_no>", aggregate the trade's packet. CreditedBack says
// the packet could not take it (paid another way, or the trade had failed
// or been given up) and the amount went to the sender's balance instead.
type PaymentSettled struct {
	TradeNo      string `json:"trade_no"`
	PacketID     int64  `json:"packet_id"`
	Channel      string `json:"channel"`
	Amount       string `json:"amount"`
	ProviderTxn  string `json:"provider_txn"`
	CreditedBack bool   `json:"credited_back"`
}

// Message is p as payment.settled.
func (p PaymentSettled) Message(at time.Time) Message {
	return message("settled:"+p.TradeNo, MsgPaymentSettled, PacketAggregate(p.PacketID), at, p)
}

// Reasons a trade failed (PaymentFailed.Reason).
const (
	FailedByChannel  = "channel"    // the channel reported the failure
	FailedGivenUp    = "given_up"   // no outcome came in time
	FailedSuperseded = "superseded" // the sender chose another channel before paying
)

// PaymentFailed (payment.failed): a third-party trade ended without money;
// id "failed:<trade_no>", aggregate the trade's packet.
type PaymentFailed struct {
	TradeNo  string `json:"trade_no"`
	PacketID int64  `json:"packet_id"`
	Channel  string `json:"channel"`
	Amount   string `json:"amount"`
	Reason   string `json:"reason"` // a Failed* constant
}

// Message is p as payment.failed.
func (p PaymentFailed) Message(at time.Time) Message {
	return message("failed:"+p.TradeNo, MsgPaymentFailed, PacketAggregate(p.PacketID), at, p)
}

// StockChangedScope is one scope's counters in a stock.changed, in units.
type StockChangedScope struct {
	Scope     string `json:"scope"` // high_seas or pool:<id>
	Total     int64  `json:"total"`
	Available int64  `json:"available"`
	Reserved  int64  `json:"reserved"`
	Sold      int64  `json:"sold"`
}

// StockChanged (stock.changed): a SKU changed; id
// "stock:<activity>:<product>:<sku>:<version>", aggregate the SKU. It
// carries the SKU's whole state after the change and what changed it.
type StockChanged struct {
	ActivityID int64               `json:"activity_id"`
	ProductID  int64               `json:"product_id"`
	SKU        int64               `json:"sku_id"`
	Version    int64               `json:"version"`
	Status     string              `json:"status"`
	Op         string              `json:"op"`
	Ref        string              `json:"ref"` // the order, voucher or TCC branch
	Change     string              `json:"change"`
	Scopes     []StockChangedScope `json:"scopes"`
}

// StockChangedOf is the stock.changed payload of a stock event.
func StockChangedOf(s Stock) StockChanged {
	scopes := make([]StockChangedScope, len(s.Scopes))
	for i, c := range s.Scopes {
		scopes[i] = StockChangedScope(c)
	}
	return StockChanged{ActivityID: s.ActivityID, ProductID: s.ProductID, SKU: s.SKU, Version: s.Version, Status: s.Status,
		Op: s.Op, Ref: s.Ref, Change: s.Change, Scopes: scopes}
}

// Message is p as stock.changed.
func (p StockChanged) Message(at time.Time) Message {
	return message(fmt.Sprintf("stock:%d:%d:%d:%d", p.ActivityID, p.ProductID, p.SKU, p.Version), MsgStockChanged,
		SKUAggregate(p.ActivityID, p.ProductID, p.SKU), at, p)
}

// CampaignAwarded (campaign.awarded): a user won a campaign award, counted
// against its budget; id "award:<campaign>:<seq>".
type CampaignAwarded struct {
	CampaignID int64  `json:"campaign_id"`
	Seq        int    `json:"seq"`
	UserID     int64  `json:"user_id"`
	Amount     string `json:"amount"`
}

// Message is p as campaign.awarded.
func (p CampaignAwarded) Message(at time.Time) Message {
	return message(fmt.Sprintf("award:%d:%d", p.CampaignID, p.Seq), MsgCampaignAwarded, CampaignAggregate(p.CampaignID), at, p)
}

// Payout is what every payout.* payload says of the award it pays out;
// its fields are the payload's own in JSON.
type Payout struct {
	CampaignID int64  `json:"campaign_id"`
	Seq        int    `json:"seq"`
	UserID     int64  `json:"user_id"`
	Amount     string `json:"amount"`
	OutTradeNo string `json:"out_trade_no"` // the number the payout runs under
}

// id is the payout's message id for prefix ("transferred", "attention").
func (p Payout) id(prefix string) string { return fmt.Sprintf("%s:%d:%d", prefix, p.CampaignID, p.Seq) }

// PayoutTransferred (payout.transferred): the transfer service confirmed an
// award's payout (status 7 -> 4); id "transferred:<campaign>:<seq>".
type PayoutTransferred struct {
	Payout
	TransferID string `json:"transfer_id"`
}

// Message is p as payout.transferred.
func (p PayoutTransferred) Message(at time.Time) Message {
	return message(p.id("transferred"), MsgPayoutTransferred, CampaignAggregate(p.CampaignID), at, p)
}

// PayoutNeedsAttention (payout.needs_attention): an award's payout was
// parked for a person; id "attention:<campaign>:<seq>".
type PayoutNeedsAttention struct {
	Payout
	Attempts int    `json:"attempts"`
	Reason   string `json:"reason"`
}

// Message is p as payout.needs_attention.
func (p PayoutNeedsAttention) Message(at time.Time) Message {
	return message(p.id("attention"), MsgPayoutNeedsAttention, CampaignAggregate(p.CampaignID), at, p)
}
