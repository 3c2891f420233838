package store_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/store"
)

// One batch of every kind, each with a contradiction, interleaved: the
// rejected indexes come back ascending (stream order) whatever the kind,
// everything else is applied, and Contradiction says why each was rejected.
func TestApplyEventsRejectsEachKindInStreamOrder(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300)
		cp := newCampaign(t, db, 100, 60, 40)
		if r := apply(t, db, stockEv(1, 10, 0, "submit", "v:s")); len(r) != 0 {
			t.Fatalf("submit rejected %v", r)
		}
		events := []event.Event{
			grabEv(id, 20, 1, 500),
			stockEv(1, 9, 1, "deduct", "o:1"), // version 1 is the submit's
			awardEvent(cp, 1, 30, 60),
			closeEv(id+1, 100, 1), // no such packet
			recEv(1, 2, "o:2", "x#OUT_OF_STOCK#", 1),
			grabEv(id, 21, 1, 500),    // share 1 is user 20's
			awardEvent(cp, 2, 31, 41), // not the share's amount
			closeEv(id, 300, 1),
			unknownEvent{},
			&event.Grab{PacketID: id, UserID: 22, Seq: 2, Amount: 300, At: now}, // a grab, but not an event.Grab
		}
		rejected, err := db.ApplyEvents(ctx, events)
		if err != nil || !reflect.DeepEqual(rejected, []int{1, 3, 5, 6, 8, 9}) {
			t.Fatalf("rejected %v, %v; want [1 3 5 6 8 9]", rejected, err)
		}
		if p, _ := db.Packet(ctx, id); p.Status != "refunded" || p.RefundedAmount != 300 {
			t.Fatalf("packet %s, refunded %d; want refunded 300", p.Status, p.RefundedAmount)
		}
		wantUsed(t, db, cp, 60, 1)
		if recs, err := db.StockRecords(ctx, 1, 2, "", 10); err != nil || len(recs) != 1 || recs[0].Ref != "o:2" {
			t.Fatalf("records %+v, %v; want o:2's", recs, err)
		}
		want := map[int]string{
			1: "contradicts the store: the SKU's version is at or below MySQL's but its change log records another change there",
			3: "contradicts the store: no such packet, or the remainder is more than its unowned shares",
			5: "contradicts the store: the share is someone else's, the user holds another, or the amount differs",
			6: "contradicts the store: not the campaign's share, another user's award, or over the budget",
			8: "contradicts the store: no applier for unknown events of type store_test.unknownEvent",
			9: "contradicts the store: no applier for grab events of type *event.Grab",
		}
		for i, msg := range want {
			if got := store.Contradiction(events[i]).Error(); got != msg {
				t.Errorf("Contradiction(events[%d]) = %q\nwant %q", i, got, msg)
			}
		}
	})
}
