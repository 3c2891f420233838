package store_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/store"
)

// stockEv is SKU 1 of activity 1, product 2 at version ver after op ref.
func stockEv(ver, available, sold int64, op, ref string) event.Stock {
	return event.Stock{ActivityID: 1, ProductID: 2, SKU: 1, Version: ver, Status: "on",
		Scopes: []event.StockScope{{Scope: "high_seas", Total: 10, Available: available, Sold: sold}},
		Op:     op, Ref: ref, Change: fmt.Sprintf("high_seas:%s:%d", op, ver), At: now}
}

func recEv(a, p int64, ref, value string, rank int) event.StockRecord {
	return event.StockRecord{ActivityID: a, ProductID: p, Ref: ref, Value: value, Rank: rank, At: now}
}

func apply(t *testing.T, db *store.DB, events ...event.Event) []int {
	t.Helper()
	rejected, err := db.ApplyEvents(context.Background(), events)
	if err != nil {
		t.Fatal(err)
	}
	return rejected
}

func skuState(t *testing.T, db *store.DB) string {
	t.Helper()
	s, err := db.Stock(context.Background(), 1, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("v%d %+v", s.Version, s.Scopes)
}

// A stock event at or below MySQL's version is a replay only when it is the
// change MySQL logged for that version; another change there (Redis came
// back without it and reused the version) is rejected, for the writer to
// park, and changes nothing. One that came late (no row for its version)
// is logged and leaves the newer snapshot.
func TestApplyStockRejectsVersionsGoingBack(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if r := apply(t, db, stockEv(1, 10, 0, "submit", "v:s"), stockEv(2, 7, 3, "deduct", "o:1"),
			stockEv(4, 5, 5, "deduct", "o:3")); len(r) != 0 {
			t.Fatalf("first batch rejected %v", r)
		}
		before := skuState(t, db)
		// Exact replays, alone and mixed with the late version 3: nothing rejected.
		if r := apply(t, db, stockEv(2, 7, 3, "deduct", "o:1"), stockEv(3, 6, 4, "deduct", "o:2"), stockEv(1, 10, 0, "submit", "v:s")); len(r) != 0 {
			t.Fatalf("replays rejected %v", r)
		}
		if after := skuState(t, db); after != before {
			t.Fatalf("replays moved the snapshot: %s -> %s", before, after)
		}
		changes, err := db.StockChanges(ctx, 1, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(changes) != 4 || changes[2].Ref != "o:2" {
			t.Fatalf("change log %+v, want versions 1..4 with the late 3", changes)
		}
		// Failure 3: Redis restarted empty, took a resubmit at version 1 and
		// deducts at 2 and 3. Each contradicts the log; a grab in the same
		// batch and a new version of another SKU still apply.
		other := stockEv(1, 10, 0, "submit", "v:s")
		other.SKU = 9
		r := apply(t, db, stockEv(1, 10, 0, "submit", "v:s2"), other, stockEv(2, 7, 3, "deduct", "o:1"),
			stockEv(3, 6, 4, "deduct", "o:9"), stockEv(4, 5, 5, "deduct", "o:3"))
		if !reflect.DeepEqual(r, []int{0, 3}) {
			t.Fatalf("rejected %v, want [0 3] (the resubmit at 1, o:9 at 3)", r)
		}
		if after := skuState(t, db); after != before {
			t.Fatalf("contradictions moved the snapshot: %s -> %s", before, after)
		}
		if _, err := db.Stock(ctx, 1, 2, 9); err != nil {
			t.Fatalf("the other SKU was not applied: %v", err)
		}
		// Two changes of one version in one batch: the second is rejected,
		// and so is the record it carries; the first's is kept.
		withRec := func(ev event.Stock, value string) event.Stock {
			ev.Record = &event.StockRecord{ActivityID: 1, ProductID: 2, Ref: ev.Ref, Value: value, Rank: 1, At: now}
			return ev
		}
		r = apply(t, db, withRec(stockEv(5, 4, 6, "deduct", "o:5"), "d#1|high_seas|1"), withRec(stockEv(5, 3, 7, "deduct", "o:6"), "d#1|high_seas|1"))
		if !reflect.DeepEqual(r, []int{1}) {
			t.Fatalf("rejected %v, want [1]", r)
		}
		recs, err := db.StockRecords(ctx, 1, 2, "", 10)
		if err != nil || len(recs) != 1 || recs[0].Ref != "o:5" {
			t.Fatalf("records %+v, %v; want only o:5's", recs, err)
		}
		if s := skuState(t, db); !strings.HasPrefix(s, "v5 ") || !strings.Contains(s, "Available:4") {
			t.Fatalf("after version 5: %s", s)
		}
	})
}

// Records keep the value of the highest rank: replays and reordering leave
// the more advanced one; they are found by product and by ref.
func TestApplyStockRecordsKeepTheHigherRank(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		apply(t, db, recEv(1, 2, "o:1", "d#1|high_seas|3", 1), recEv(1, 2, "v:s", "submit###1|high_seas|10", 1),
			recEv(1, 3, "o:1", "d#5|high_seas|1", 1))
		// The return, then a late replay of the deduct, in one batch and in the next.
		apply(t, db, recEv(1, 2, "o:1", "r#1|high_seas|3", 2), recEv(1, 2, "o:1", "d#1|high_seas|3", 1))
		apply(t, db, recEv(1, 2, "o:1", "d#1|high_seas|3", 1), recEv(1, 2, "t:g/b", "c#", 2))
		// A terminal record before its first one (reordered): the first never replaces it.
		apply(t, db, recEv(1, 2, "t:g/b", "t#1|high_seas|1", 1))
		long := "t:" + strings.Repeat("g", 64) + "/" + strings.Repeat("b", 64)
		apply(t, db, recEv(1, 2, long, "t#1|high_seas|1", 1))
		// Ids are case-sensitive: o:1 and O:1 are two orders.
		apply(t, db, recEv(1, 4, "o:a", "d#1|high_seas|1", 1), recEv(1, 4, "o:A", "x#OUT_OF_STOCK#", 1))
		if page, err := db.StockRecords(ctx, 1, 4, "", 10); err != nil || len(page) != 2 || page[0].Ref != "o:A" {
			t.Fatalf("records differing in case: %+v, %v", page, err)
		}

		var got []string
		for after := ""; ; {
			page, err := db.StockRecords(ctx, 1, 2, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page {
				got = append(got, fmt.Sprintf("%s=%s@%d", r.Ref, r.Value, r.Rank))
			}
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1].Ref
		}
		want := []string{"o:1=r#1|high_seas|3@2", "t:g/b=c#@2", long + "=t#1|high_seas|1@1", "v:s=submit###1|high_seas|10@1"}
		if !slices.Equal(got, want) {
			t.Fatalf("records\n%v\nwant\n%v", got, want)
		}
		products, err := db.StockRecordProducts(ctx, "o:1")
		if err != nil || !reflect.DeepEqual(products, [][2]int64{{1, 2}, {1, 3}}) {
			t.Fatalf("products of o:1 = %v, %v", products, err)
		}
		if products, err := db.StockRecordProducts(ctx, "o:none"); err != nil || len(products) != 0 {
			t.Fatalf("products of an unknown ref = %v, %v", products, err)
		}
	})
}

// StockSKUs lists a product's SKUs with their scopes, a rolled-back one
// (no status, no scopes) included.
func TestStockSKUs(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		gone := stockEv(3, 0, 0, "rollback", "v:x")
		gone.SKU, gone.Status, gone.Scopes = 7, "", nil
		pool := stockEv(2, 5, 0, "salvage", "v:p")
		pool.Scopes = append(pool.Scopes, event.StockScope{Scope: "pool:3", Total: 5, Available: 4, Sold: 1})
		elsewhere := stockEv(1, 10, 0, "submit", "v:o")
		elsewhere.ProductID = 3
		apply(t, db, pool, gone, elsewhere)
		skus, err := db.StockSKUs(ctx, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		want := []store.StockSKU{
			{ActivityID: 1, ProductID: 2, SKU: 1, Status: "on", Version: 2, Scopes: []event.StockScope{
				{Scope: "high_seas", Total: 10, Available: 5}, {Scope: "pool:3", Total: 5, Available: 4, Sold: 1}}},
			{ActivityID: 1, ProductID: 2, SKU: 7, Status: "", Version: 3},
		}
		if !reflect.DeepEqual(skus, want) {
			t.Fatalf("SKUs %+v\nwant %+v", skus, want)
		}
	})
}
