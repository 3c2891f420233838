package stock_test

import (
	"context"
	"errors"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/stock"
)

func TestStockSmoke(t *testing.T) {
	for name, setup := range map[string]func(testing.TB, ...func(*engine.Config)) *enginetest.Env{"unit": enginetest.Unit, "real": enginetest.Real} {
		t.Run(name, func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			mustOK(t, e.Stock.Submit(ctx, "v1", 1, 2, []stock.SKUStock{{SKU: 10, Stock: 100}, {SKU: 11, Stock: 5}}))
			if err := e.Stock.Submit(ctx, "v1b", 1, 2, []stock.SKUStock{{SKU: 10, Stock: 1}}); !errors.Is(err, stock.ErrAlreadySubmitted) {
				t.Fatalf("resubmit: %v", err)
			}
			mustOK(t, e.Stock.Edit(ctx, "v2", 1, 2, 10, 20))
			res, err := e.Stock.MovePool(ctx, true, "v3", 7, []stock.Item{{ActivityID: 1, ProductID: 2, SKU: 10, Qty: 30}, {ActivityID: 1, ProductID: 2, SKU: 11, Qty: 6}})
			mustOK(t, err)
			if res[0].Err != nil || !errors.Is(res[1].Err, stock.ErrOutOfStock) {
				t.Fatalf("salvage results %+v", res)
			}
			mustOK(t, e.Stock.Deduct(ctx, "o1", []stock.Item{{Scope: "pool:7", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 3}, {Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 11, Qty: 2}}))
			mustOK(t, e.Stock.Deduct(ctx, "o1", []stock.Item{{Scope: "pool:7", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 3}, {Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 11, Qty: 2}}))
			mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g1", "b1", []stock.Item{{Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 4}}))
			mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g1", "b1", []stock.Item{{Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 4}}))
			// 100 + 20 submitted and edited, 30 salvaged into pool 7; o1 (once)
			// sold 3 there and 2 of SKU 11, the branch 4 on the high seas.
			wantView(t, e, ref(10), stock.SKUView{ForSale: true, HighSeas: stock.Counters{Total: 90, Available: 86, Sold: 4},
				Pools: map[string]stock.Counters{"7": {Total: 30, Available: 27, Sold: 3}}})
			wantView(t, e, ref(11), stock.SKUView{ForSale: true, HighSeas: stock.Counters{Total: 5, Available: 3, Sold: 2}, Pools: map[string]stock.Counters{}})

			// o1's return gives back its 3 and 2; the revoke brings pool 7's 30
			// back (the pool is gone) and withdraws all 116 available; the branch's 4
			// stay sold.
			mustOK(t, e.Stock.Return(ctx, "o1"))
			w, err := e.Stock.Revoke(ctx, "v4", 1, 2, 10)
			mustOK(t, err)
			if w != 116 {
				t.Fatalf("revoke withdrew %d, want 116", w)
			}
			wantView(t, e, ref(10), stock.SKUView{Revoked: true, HighSeas: stock.Counters{Total: 4, Sold: 4}, Pools: map[string]stock.Counters{}})
			wantView(t, e, ref(11), stock.SKUView{ForSale: true, HighSeas: stock.Counters{Total: 5, Available: 5}, Pools: map[string]stock.Counters{}})

			// The writer brings MySQL to exactly Redis's state, every change logged.
			e.StartWriter(t)
			waitDurable(t, e, ref(10), ref(11))
			gaplessChanges(t, e, ref(10))
			gaplessChanges(t, e, ref(11))
		})
	}
}
