package lua

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/grab-engine/grab/event"
)

// FieldType is the field of every stream entry that names its kind; its
// value is one of the Type constants.
const FieldType = "t"

// The values of FieldType, one per event kind the scripts write.
const (
	TypeGrab        = "grab"  // grab.lua
	TypeClose       = "close" // close.lua
	TypeStock       = "stock" // stock_lib.lua, for every stock script
	TypeStockRecord = "srec"  // stock_lib.lua
	TypeAward       = "award" // campaign_grab.lua
)

// FieldAt is the time of every entry, in Unix milliseconds.
const FieldAt = "at"

// readers maps each FieldType value to the reader of its entries.
var readers = map[string]func(*entry) event.Event{
	TypeGrab:        readGrab,
	TypeClose:       readClose,
	TypeStock:       readStock,
	TypeStockRecord: readStockRecord,
	TypeAward:       readAward,
}

// ReadEvent reads a stream entry's values, as XRANGE or XREADGROUP return
// them, into the event a script wrote. An entry of an unknown type, with a
// field that is not an integer where one is due, or with values no script
// writes (a grab of no amount, a close taking back less than a fen a
// share, ...) is an error: the writer parks it.
func ReadEvent(values map[string]any) (event.Event, error) {
	e := &entry{v: values}
	read, ok := readers[e.str(FieldType)]
	if !ok {
		return nil, fmt.Errorf("unknown event type %q", e.str(FieldType))
	}
	ev := read(e)
	if e.err != nil {
		return nil, e.err
	}
	return ev, nil
}

// Fields of a t=grab entry (grab.lua).
const (
	grabPacket   = "pk"
	grabUser     = "u"
	grabSeq      = "seq"
	grabAmount   = "amt" // fen
	grabCredit   = "cr"  // "1": credit the balance now
	grabFinished = "fin" // "1": took the last share
)

func readGrab(e *entry) event.Event {
	g := event.Grab{PacketID: e.num(grabPacket), UserID: e.num(grabUser), Seq: int(e.num(grabSeq)),
		Amount: e.num(grabAmount), At: e.at(), Credit: e.str(grabCredit) == "1", Finished: e.str(grabFinished) == "1"}
	e.check(g.PacketID > 0 && g.UserID > 0 && g.Seq > 0 && g.Amount > 0, "packet, user, seq and amount must be positive")
	return g
}

// Fields of a t=close entry (close.lua).
const (
	closePacket    = "pk"
	closeRemainder = "rem" // fen
	closeCount     = "n"   // shares taken back
)

func readClose(e *entry) event.Event {
	c := event.Close{PacketID: e.num(closePacket), Remainder: e.num(closeRemainder), Count: int(e.num(closeCount)), At: e.at()}
	// Every share is at least a fen, so n shares are at least n fen.
	e.check(c.PacketID > 0 && c.Count >= 0 && c.Remainder >= int64(c.Count) && (c.Count == 0) == (c.Remainder == 0),
		"packet must be positive, and the remainder at least a fen a share (0 for none)")
	return c
}

// Fields of a t=stock entry (stock_lib.lua): the SKU's state after the change.
const (
	stockActivity = "a"
	stockProduct  = "p"
	stockSKU      = "sku"
	stockVersion  = "ver"
	stockStatus   = "st"
	stockSnapshot = "snap" // the scopes, "scope=t,a,r,s;..." sorted by scope
	stockOp       = "op"
	stockRef      = "ref"
	stockChange   = "chg"
	stockRecord   = "rv" // the value of the record the op set, on its last event
)

func readStock(e *entry) event.Event {
	s := event.Stock{ActivityID: e.num(stockActivity), ProductID: e.num(stockProduct), SKU: e.num(stockSKU),
		Version: e.num(stockVersion), Status: e.str(stockStatus), Op: e.str(stockOp), Ref: e.str(stockRef),
		Change: e.str(stockChange), At: e.at()}
	s.Scopes = e.scopes(stockSnapshot)
	e.check(s.ActivityID > 0 && s.ProductID > 0 && s.SKU > 0 && s.Version > 0,
		"activity, product, SKU and version must be positive")
	if _, ok := e.v[stockRecord]; ok {
		// The record rides as a t=srec entry's value would.
		re := &entry{v: map[string]any{recordActivity: e.v[stockActivity], recordProduct: e.v[stockProduct],
			recordRef: e.v[stockRef], recordValue: e.v[stockRecord], FieldAt: e.v[FieldAt]}}
		r := readStockRecord(re).(event.StockRecord)
		if re.err != nil {
			e.fail(re.err)
		}
		s.Record = &r
	}
	return s
}

// scopes reads a stock snapshot, "scope=t,a,r,s;..." sorted by scope ("" for
// none), in EncodeStockScopes's form.
func (e *entry) scopes(k string) []event.StockScope {
	m, err := ParseStockScopes(e.str(k))
	if err != nil {
		e.fail(err)
		return nil
	}
	var out []event.StockScope
	for _, scope := range slices.Sorted(maps.Keys(m)) {
		c := m[scope]
		out = append(out, event.StockScope{Scope: scope, Total: c.Total, Available: c.Available, Reserved: c.Reserved, Sold: c.Sold})
	}
	return out
}

// Fields of a t=srec entry (stock_lib.lua): a record a stock op set.
const (
	recordActivity = "a"
	recordProduct  = "p"
	recordRef      = "ref"
	recordValue    = "val"
	// recordRank is the record's rank on entries written before the
	// scripts stopped sending it; it follows from the value (StockRecordRank).
	recordRank = "rk"
)

func readStockRecord(e *entry) event.Event {
	r := event.StockRecord{ActivityID: e.num(recordActivity), ProductID: e.num(recordProduct), Ref: e.str(recordRef),
		Value: e.str(recordValue), Rank: StockRecordRank(e.str(recordValue)), At: e.at()}
	if _, ok := e.v[recordRank]; ok {
		r.Rank = int(e.num(recordRank))
	}
	e.check(r.ActivityID > 0 && r.ProductID > 0 && r.Ref != "" && r.Value != "" && r.Rank >= 1 && r.Rank <= 2,
		"activity and product must be positive, ref and value set, rank 1 or 2")
	return r
}

// Fields of a t=award entry (campaign_grab.lua).
const (
	awardCampaign = "cp"
	awardUser     = "u"
	awardSeq      = "seq"
	awardAmount   = "amt" // fen
)

func readAward(e *entry) event.Event {
	a := event.Award{CampaignID: e.num(awardCampaign), UserID: e.num(awardUser), Seq: int(e.num(awardSeq)),
		Amount: e.num(awardAmount), At: e.at()}
	e.check(a.CampaignID > 0 && a.UserID > 0 && a.Seq > 0 && a.Amount > 0, "campaign, user, seq and amount must be positive")
	return a
}

// entry reads a stream entry's values; the first error is kept in err.
type entry struct {
	v   map[string]any
	err error
}

func (e *entry) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// check fails with msg unless ok; a bad field found before says more.
func (e *entry) check(ok bool, msg string) {
	if !ok {
		e.fail(errors.New(msg))
	}
}

func (e *entry) str(k string) string { s, _ := e.v[k].(string); return s }

func (e *entry) num(k string) int64 {
	n, err := strconv.ParseInt(e.str(k), 10, 64)
	if err != nil {
		e.fail(fmt.Errorf("field %q: %w", k, err))
	}
	return n
}

// at is the entry's time, in UTC.
func (e *entry) at() time.Time { return time.UnixMilli(e.num(FieldAt)).UTC() }
