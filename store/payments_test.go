package store_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
	"time"

	"github.com/grab-engine/grab/store"
)

// StalePayments pages through every trade without an outcome, unpaid or
// awaiting settlement, oldest first: a cursor after the last row of a page
// gives the next, so trades that stay pending cannot hide newer ones. Trades
// with an outcome, or changed after `before`, are not listed.
func TestStalePaymentsPagesThroughAll(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		want := map[string]bool{}
		for i := range 7 {
			at := now.Add(time.Duration(i/2) * time.Second) // pairs share a time: the trade number breaks the tie
			id, err := db.CreatePacket(ctx, store.Packet{Kind: "group_lucky", SenderID: 1, GroupID: sql.NullInt64{Int64: 7, Valid: true},
				Count: 1, Total: 100, Greeting: "hi", Status: "unpaid", PayStatus: "unpaid", CreatedAt: at}, []int64{100})
			if err != nil {
				t.Fatal(err)
			}
			no := fmt.Sprintf("T%d_stale", id)
			if _, _, err := db.StartPayment(ctx, id, "alipay", no, at); err != nil {
				t.Fatal(err)
			}
			switch i {
			case 1:
				if _, err := db.MarkReturned(ctx, no, at, at.Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
				want[no] = true
			case 4:
				if _, _, err := db.Settle(ctx, no, true, "txn", at, at.Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			case 6:
				// changed after `before`: not stale yet
			default:
				want[no] = true
			}
		}
		before := now.Add(3 * time.Second)
		seen := map[string]bool{}
		var cursor store.PaymentCursor
		for pages := 0; ; pages++ {
			page, err := db.StalePayments(ctx, before, cursor, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range page {
				if seen[p.TradeNo] {
					t.Fatalf("trade %s listed twice", p.TradeNo)
				}
				seen[p.TradeNo] = true
			}
			if len(page) < 2 {
				break
			}
			if pages > 10 {
				t.Fatal("the pages never end")
			}
			last := page[len(page)-1]
			cursor = store.PaymentCursor{UpdatedAt: last.UpdatedAt, TradeNo: last.TradeNo}
		}
		if len(seen) != len(want) {
			t.Fatalf("listed %v, want %v", seen, want)
		}
		for no := range want {
			if !seen[no] {
				t.Fatalf("trade %s never listed; listed %v", no, seen)
			}
		}
	})
}
