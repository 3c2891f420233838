// Package event holds the events grab's Lua scripts append to a shard's
// stream and the store makes durable, one type per kind:
//
//   - Grab (t=grab, grab.lua): a user took a share of a packet. Applying it
//     gives the share its owner, credits the user's balance when the packet
//     was paid, and marks the packet finished when it took the last share.
//   - Close (t=close, close.lua): an expired packet was closed and what was
//     left of it taken back. Applying it marks the packet expired with that
//     remainder and refunds the sender once the packet is paid.
//   - Stock (t=stock, stock_lib.lua for every stock script): a SKU changed.
//     Applying it logs the change once and keeps the SKU's newest snapshot;
//     the record the op set may ride on it (Record).
//   - StockRecord (t=srec, stock_lib.lua): a stock op set a record and
//     changed no SKU. Applying it keeps, per product and ref, the value of
//     the highest rank.
//   - Award (t=award, campaign_grab.lua): a user won a campaign award.
//     Applying it records the award for its payout and counts it against
//     the campaign's budget.
//
// Applying is idempotent: a replayed event changes nothing. An event that
// contradicts what the store holds is left unapplied and parked.
//
// Every kind is a plain struct that implements Event. An interface rather
// than one struct with a field per kind keeps adding a kind to its own
// type, its Kind constant, its reader in package lua and its applier in
// package store: nothing that handles the other kinds changes, and no
// struct grows a field most of its values leave empty.
//
// Message is the other side: an event for the rest of the company, written
// to the store's outbox with the change it reports and relayed to NATS
// JetStream. Its payload is one of the types of payloads.go, one per Msg*
// kind (docs/events.md), each with a Message method giving the message its
// deterministic id. Their money fields are decimal strings of yuan, which
// Yuan formats from fen with strconv: the package stays a leaf.
package event

import "time"

// Kind tells the events of a shard's stream apart.
type Kind int

// The kinds of events, one per type of this package.
const (
	KindGrab        Kind = iota + 1 // Grab
	KindClose                       // Close
	KindStock                       // Stock
	KindAward                       // Award
	KindStockRecord                 // StockRecord
)

var kindNames = map[Kind]string{KindGrab: "grab", KindClose: "close", KindStock: "stock", KindAward: "award",
	KindStockRecord: "stock record"}

// String is the kind's name ("grab", "close", "stock", "award", "stock record").
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return "unknown"
}

// Event is one entry of a shard's stream, as the engine accepted it: a
// value of one of this package's types (a Grab, not a *Grab).
type Event interface {
	Kind() Kind
}

// Grab is one grab as the engine accepted it.
type Grab struct {
	PacketID int64
	UserID   int64
	Seq      int   // the share's position in the packet, from 1
	Amount   int64 // fen
	At       time.Time
	Credit   bool // credit the balance now (the packet was paid when grabbed)
	Finished bool // this grab took the last share
}

// Kind is KindGrab.
func (Grab) Kind() Kind { return KindGrab }

// Close says the close script took back what was left of an expired
// packet. Remainder is what the sender gets back once the packet is paid.
type Close struct {
	PacketID  int64
	Remainder int64 // fen
	Count     int   // shares taken back
	At        time.Time
}

// Kind is KindClose.
func (Close) Kind() Kind { return KindClose }

// StockScope is one scope's counters of a SKU, in units.
type StockScope struct {
	Scope     string // high_seas or pool:<id>
	Total     int64
	Available int64
	Reserved  int64
	Sold      int64
}

// Stock is one change of a SKU as a stock script made it: the SKU's whole
// state after the change (Version counts its changes) and what changed.
type Stock struct {
	ActivityID, ProductID, SKU int64
	Version                    int64
	Status                     string       // on, off, rev; "" once a submit was rolled back
	Scopes                     []StockScope // sorted by scope
	Op, Ref, Change            string
	At                         time.Time
	// Record is the record the op set (Ref's), carried by its last event;
	// nil when the op set none.
	Record *StockRecord
}

// Kind is KindStock.
func (Stock) Kind() Kind { return KindStock }

// StockRecord is a record a stock script set on an activity product: what
// op id Ref did (a voucher's answer and what it moved, an order's or TCC
// branch's marker, a rollback), as Value; Rank 1 for a first record, 2 for
// a terminal one (rollback, returned, confirmed, cancelled).
type StockRecord struct {
	ActivityID, ProductID int64
	Ref, Value            string
	Rank                  int
	At                    time.Time
}

// Kind is KindStockRecord.
func (StockRecord) Kind() Kind { return KindStockRecord }

// Award is one award as campaign_grab.lua granted it.
type Award struct {
	CampaignID int64
	Seq        int // the award's position in the campaign, from 1
	UserID     int64
	Amount     int64 // fen
	At         time.Time
}

// Kind is KindAward.
func (Award) Kind() Kind { return KindAward }
