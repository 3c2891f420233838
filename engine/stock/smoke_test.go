package stock_test

import (
	"context"
	"errors"
	"testing"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/stock"
)

func TestStockSmoke(t *testing.T) {
	for name, setup := range map[string]func(testing.TB, ...func(*engine.Config)) *env{"unit": setupUnit, "real": setupReal} {
		t.Run(name, func(t *testing.T) {
			e := setup(t)
			ctx := context.Background()
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			must(e.stock.Submit(ctx, "v1", 1, 2, []stock.SKUStock{{SKU: 10, Stock: 100}, {SKU: 11, Stock: 5}}))
			if err := e.stock.Submit(ctx, "v1b", 1, 2, []stock.SKUStock{{SKU: 10, Stock: 1}}); !errors.Is(err, stock.ErrAlreadySubmitted) {
				t.Fatalf("resubmit: %v", err)
			}
			must(e.stock.Edit(ctx, "v2", 1, 2, 10, 20))
			res, err := e.stock.MovePool(ctx, true, "v3", 7, []stock.Item{{ActivityID: 1, ProductID: 2, SKU: 10, Qty: 30}, {ActivityID: 1, ProductID: 2, SKU: 11, Qty: 6}})
			must(err)
			if res[0].Err != nil || !errors.Is(res[1].Err, stock.ErrOutOfStock) {
				t.Fatalf("salvage results %+v", res)
			}
			must(e.stock.Deduct(ctx, "o1", []stock.Item{{Scope: "pool:7", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 3}, {Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 11, Qty: 2}}))
			must(e.stock.Deduct(ctx, "o1", []stock.Item{{Scope: "pool:7", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 3}, {Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 11, Qty: 2}}))
			must(e.stock.TCC(ctx, stock.TCCTry, "g1", "b1", []stock.Item{{Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 4}}))
			must(e.stock.TCC(ctx, stock.TCCConfirm, "g1", "b1", []stock.Item{{Scope: "high_seas", ActivityID: 1, ProductID: 2, SKU: 10, Qty: 4}}))
			v, err := e.stock.SKU(ctx, 1, 2, 10)
			must(err)
			t.Logf("%+v", v)
			if v.HighSeas != (stock.Counters{Total: 90, Available: 86, Reserved: 0, Sold: 4}) || v.Pools["7"] != (stock.Counters{Total: 30, Available: 27, Sold: 3}) {
				t.Fatalf("view %+v", v)
			}
			must(e.stock.Return(ctx, "o1"))
			w, err := e.stock.Revoke(ctx, "v4", 1, 2, 10)
			must(err)
			t.Logf("withdrawn %d", w)
			v, _ = e.stock.SKU(ctx, 1, 2, 10)
			t.Logf("%+v", v)
			stop := e.runWriter()
			defer stop()
		})
	}
}
