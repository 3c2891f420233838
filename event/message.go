package event

import (
	"encoding/json"
	"strings"
	"time"
)

// Message is an event for the rest of the company: what the transactional
// outbox holds, the relay publishes to NATS JetStream and consumers read.
// It is written in the same store transaction as the change it reports, so
// a change is never committed without its message nor the other way round.
type Message struct {
	// ID is deterministic from the change ("grab:<packet>:<seq>"), so a
	// replayed batch cannot make a second one; it is the publish's
	// Nats-Msg-Id, and consumers drop an id they have seen.
	ID string `json:"id"`
	// Kind is one of the Msg* constants.
	Kind string `json:"kind"`
	// Aggregate is what changed, "<type>:<id>" ("packet:42", "campaign:7",
	// "sku:1:42:420"); its messages are published in commit order.
	Aggregate string `json:"aggregate"`
	// At is when the change happened (the script's or the store's clock).
	At time.Time `json:"at"`
	// Payload is the kind's JSON document (docs/events.md); money in it is a
	// decimal string of yuan, as in the API.
	Payload json.RawMessage `json:"payload"`
}

// Message kinds.
const (
	MsgPacketPaid           = "packet.paid"
	MsgPacketGrabbed        = "packet.grabbed"
	MsgPacketCredited       = "packet.credited"
	MsgPacketFinished       = "packet.finished"
	MsgPacketRefunded       = "packet.refunded"
	MsgPaymentSettled       = "payment.settled"
	MsgPaymentFailed        = "payment.failed"
	MsgStockChanged         = "stock.changed"
	MsgCampaignAwarded      = "campaign.awarded"
	MsgPayoutTransferred    = "payout.transferred"
	MsgPayoutNeedsAttention = "payout.needs_attention"
)

// SubjectPrefix is the root of every subject grab publishes under.
const SubjectPrefix = "grab"

// Subject is where m is published: "grab.<kind>.<aggregate id>", the
// aggregate's id with its ":" as "." ("grab.packet.grabbed.42",
// "grab.stock.changed.1.42.420"), so consumers can filter by kind and by
// aggregate with NATS wildcards.
func (m Message) Subject() string {
	_, id, _ := strings.Cut(m.Aggregate, ":")
	return SubjectPrefix + "." + m.Kind + "." + strings.ReplaceAll(id, ":", ".")
}
