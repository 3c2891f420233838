package store_test

import (
	"context"
	"database/sql"
	"strconv"
	"testing"
	"time"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/store"
)

func grabEv(id, user int64, seq int, amount int64) event.Grab {
	return event.Grab{PacketID: id, UserID: user, Seq: seq, Amount: amount, At: now, Credit: true}
}

func closeEv(id, rem int64, n int) event.Close {
	return event.Close{PacketID: id, Remainder: rem, Count: n, At: now.Add(time.Hour)}
}

// refunds lists a user's ledger entries of kind refund.
func refunds(t *testing.T, db *store.DB, user int64) []store.LedgerEntry {
	t.Helper()
	es, err := db.Ledger(context.Background(), user)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.LedgerEntry
	for _, e := range es {
		if e.Kind == store.KindRefund {
			out = append(out, e)
		}
	}
	return out
}

// A close after grabs refunds the remainder once, in the same transaction;
// replays of the batch, whole or in parts and in any order, change nothing.
func TestApplyCloseRefundsOnce(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300, 200)
		events := []event.Event{grabEv(id, 20, 1, 500), closeEv(id, 500, 2)}
		if rejected, err := db.ApplyEvents(ctx, events); err != nil || len(rejected) != 0 {
			t.Fatalf("apply: rejected %v, %v", rejected, err)
		}
		first := snap(t, db, id, 1, 20)
		if first.balances[1] != 100_000-1000+500 || first.balances[20] != 500 {
			t.Fatalf("balances = %v", first.balances)
		}
		if first.totals.Balances != 100_000 || first.totals.Ledger != 100_000 {
			t.Fatalf("totals = %+v, want 100000 each", first.totals)
		}
		p, err := db.Packet(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != "refunded" || p.RefundedAmount != 500 || p.ClosedRemainder != (sql.Null[store.Fen]{V: 500, Valid: true}) {
			t.Fatalf("packet = %s, refunded %d, remainder %+v", p.Status, p.RefundedAmount, p.ClosedRemainder)
		}
		if r := refunds(t, db, 1); len(r) != 1 || r[0].Amount != 500 || r[0].Ref != "pk:"+strconv.FormatInt(id, 10) {
			t.Fatalf("refund entries = %+v", r)
		}
		for _, replay := range [][]event.Event{events, {events[1]}, {events[1], events[0]}} {
			if rejected, err := db.ApplyEvents(ctx, replay); err != nil || len(rejected) != 0 {
				t.Fatalf("replay: rejected %v, %v", rejected, err)
			}
			if again := snap(t, db, id, 1, 20); !equalSnap(again, first) {
				t.Fatalf("replay changed the store: %+v, was %+v", again, first)
			}
			if err := db.RefundIfSettled(ctx, id, now); err != nil {
				t.Fatal(err)
			}
			if len(refunds(t, db, 1)) != 1 {
				t.Fatal("refunded twice")
			}
		}
	})
}

// The writer may apply a close before a grab that preceded it in the stream
// (a reclaimed event): the refund is still the close's remainder, and the
// grab still lands.
func TestApplyCloseBeforeItsGrab(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300, 200)
		for _, batch := range [][]event.Event{{closeEv(id, 200, 1)}, {grabEv(id, 20, 1, 500), grabEv(id, 21, 2, 300)}} {
			if rejected, err := db.ApplyEvents(ctx, batch); err != nil || len(rejected) != 0 {
				t.Fatalf("apply: rejected %v, %v", rejected, err)
			}
		}
		s := snap(t, db, id, 1, 20, 21)
		if s.balances[1] != 100_000-1000+200 || s.balances[20] != 500 || s.balances[21] != 300 {
			t.Fatalf("balances = %v", s.balances)
		}
		if s.totals.Balances != 100_000 || s.totals.Ledger != 100_000 {
			t.Fatalf("totals = %+v", s.totals)
		}
		if p, _ := db.Packet(ctx, id); p.Status != "refunded" || p.RefundedAmount != 200 {
			t.Fatalf("packet %s, refunded %d", p.Status, p.RefundedAmount)
		}
	})
}

// unknownEvent is of a kind no applier knows.
type unknownEvent struct{}

func (unknownEvent) Kind() event.Kind { return 99 }

// A close that contradicts the store is returned unapplied, the rest of the
// batch is applied; a close of a finished packet changes nothing.
func TestApplyCloseRejectsContradictions(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300, 200)
		events := []event.Event{
			grabEv(id, 20, 1, 500),
			closeEv(id, 501, 2),   // more than the 500 fen unowned
			closeEv(id, 300, 3),   // more shares than the 2 unowned
			closeEv(id+1, 100, 1), // no such packet
			unknownEvent{},
		}
		rejected, err := db.ApplyEvents(ctx, events)
		if err != nil || !equalInts(rejected, []int{1, 2, 3, 4}) {
			t.Fatalf("rejected %v, %v; want [1 2 3 4]", rejected, err)
		}
		if p, _ := db.Packet(ctx, id); p.Status != "open" || p.ClosedRemainder.Valid {
			t.Fatalf("packet %s, remainder %+v; want open, none", p.Status, p.ClosedRemainder)
		}
		// Finished: its last grab is applied, then a close (which the script
		// never sends for a finished packet) cannot expire it.
		last := grabEv(id, 22, 3, 200)
		last.Finished = true
		done := []event.Event{grabEv(id, 21, 2, 300), last, closeEv(id, 0, 0)}
		if rejected, err := db.ApplyEvents(ctx, done); err != nil || len(rejected) != 0 {
			t.Fatalf("rejected %v, %v", rejected, err)
		}
		p, _ := db.Packet(ctx, id)
		if p.Status != "finished" || p.ClosedRemainder.Valid || p.RefundedAmount != 0 || len(refunds(t, db, 1)) != 0 {
			t.Fatalf("packet %s, remainder %+v, refunded %d", p.Status, p.ClosedRemainder, p.RefundedAmount)
		}
	})
}

// A packet that expired while its third-party payment awaited settlement
// records its remainder but is not refunded until the payment succeeds; then
// it is refunded once.
func TestRefundAwaitsSettlement(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id, err := db.CreatePacket(ctx, store.Packet{Kind: "group_lucky", SenderID: 1, GroupID: sql.NullInt64{Int64: 7, Valid: true},
			Count: 3, Total: 1000, Greeting: "hi", Status: "unpaid", PayStatus: "unpaid", CreatedAt: now}, []int64{500, 300, 200})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.StartPayment(ctx, id, "alipay", "T1", now); err != nil {
			t.Fatal(err)
		}
		if _, err := db.MarkReturned(ctx, "T1", now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		grab := grabEv(id, 20, 1, 500)
		grab.Credit = false
		if rejected, err := db.ApplyEvents(ctx, []event.Event{grab, closeEv(id, 500, 2)}); err != nil || len(rejected) != 0 {
			t.Fatalf("apply: rejected %v, %v", rejected, err)
		}
		p, _ := db.Packet(ctx, id)
		if p.Status != "expired" || p.ClosedRemainder != (sql.Null[store.Fen]{V: 500, Valid: true}) || p.RefundedAmount != 0 {
			t.Fatalf("packet %s, remainder %+v, refunded %d; want expired, 500, 0", p.Status, p.ClosedRemainder, p.RefundedAmount)
		}
		if err := db.RefundIfSettled(ctx, id, now); err != nil {
			t.Fatal(err)
		}
		if b, _ := db.Balance(ctx, 1); b != 0 || len(refunds(t, db, 1)) != 0 {
			t.Fatalf("refunded %d before the payment settled", b)
		}
		if _, _, err := db.Settle(ctx, "T1", true, "txn", now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := db.RefundIfSettled(ctx, id, now); err != nil {
				t.Fatal(err)
			}
		}
		p, _ = db.Packet(ctx, id)
		if p.Status != "refunded" || p.RefundedAmount != 500 || p.PayStatus != "paid" {
			t.Fatalf("packet %s/%s, refunded %d", p.Status, p.PayStatus, p.RefundedAmount)
		}
		s := snap(t, db, id, 1, 20)
		if r := refunds(t, db, 1); len(r) != 1 || s.balances[1] != 500 || s.balances[20] != 500 {
			t.Fatalf("refunds %+v, balances %v", r, s.balances)
		}
		// The provider paid 1000: 500 to the grabber, 500 back to the sender.
		if s.totals.Balances != 1000 || s.totals.Ledger != 1000 {
			t.Fatalf("totals = %+v", s.totals)
		}
	})
}

// A closed remainder of zero still ends refunded, with no ledger movement.
func TestRefundOfNothing(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500)
		// Whatever left the packet open with nothing unowned, the close takes nothing back.
		if rejected, err := db.ApplyEvents(ctx, []event.Event{grabEv(id, 20, 1, 500), closeEv(id, 0, 0)}); err != nil || len(rejected) != 0 {
			t.Fatalf("rejected %v, %v", rejected, err)
		}
		p, _ := db.Packet(ctx, id)
		if p.Status != "refunded" || p.RefundedAmount != 0 || len(refunds(t, db, 1)) != 0 {
			t.Fatalf("packet %s, refunded %d", p.Status, p.RefundedAmount)
		}
	})
}
