package lua_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/lua"
)

// What the stock scripts write, read back through the typed readers: a
// SKU's hash, each record's state and items, an order's hash across
// products and a voucher's set of products.
func TestStockLayoutRoundTrip(t *testing.T) {
	stockRedises(t, func(t *testing.T, c *redis.Client, keys lua.Keys) {
		ctx := context.Background()
		k := keys.Stock(1, 2)
		verifyEmpty(t, c, k)
		runStock(t, c, k, lua.StockOp{Op: "submit", ID: "v:s", Items: hs(1, 10)})
		runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:1", Items: hs(1, 3)})
		runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:big", Items: hs(1, 100)})
		runStock(t, c, k, lua.StockOp{Op: "try", ID: "t:g/b", Items: hs(1, 2)})

		st, err := lua.StockSKU(ctx, c, k, 1)
		want := lua.StockSKUState{Status: "on", Version: 3,
			Scopes: map[string]lua.StockCounters{"high_seas": {Total: 10, Available: 5, Reserved: 2, Sold: 3}}}
		if err != nil || !reflect.DeepEqual(st, want) {
			t.Fatalf("SKU 1 = %+v, %v\nwant %+v", st, err, want)
		}
		if st, err := lua.StockSKU(ctx, c, k, 9); err != nil || !reflect.DeepEqual(st, lua.StockSKUState{Scopes: map[string]lua.StockCounters{}}) {
			t.Fatalf("absent SKU = %+v, %v", st, err)
		}
		for id, w := range map[string]struct {
			state string
			items []lua.StockItem
		}{
			"v:s":   {"submit", hs(1, 10)},
			"o:1":   {lua.StockMarkDeducted, hs(1, 3)},
			"o:big": {lua.StockMarkRefused, nil},
			"t:g/b": {lua.StockMarkTried, hs(1, 2)},
		} {
			rec, err := lua.StockRecord(ctx, c, k, id)
			if err != nil {
				t.Fatal(err)
			}
			state, items, err := lua.ParseStockRecord(rec)
			if err != nil || state != w.state || !reflect.DeepEqual(items, w.items) {
				t.Errorf("record %s = %q: %q %+v %v; want %q %+v", id, rec, state, items, err, w.state, w.items)
			}
		}

		order := keys.StockOrder("o-x")
		products := lua.JoinStockProducts([]string{lua.StockProduct(1, 2), lua.StockProduct(3, 4)})
		if _, err := lua.StockOrder(ctx, c, order, "begin", products, time.Minute); err != nil {
			t.Fatal(err)
		}
		got, err := lua.ReadStockOrder(ctx, c, order)
		if err != nil || got != (lua.StockOrderState{State: "pending", Products: "1:2;3:4"}) {
			t.Fatalf("order = %+v, %v", got, err)
		}
		if l := got.ProductList(); !reflect.DeepEqual(l, []string{"1:2", "3:4"}) {
			t.Fatalf("products = %q", l)
		}
		if a, p, err := lua.ParseStockProduct(got.ProductList()[1]); err != nil || a != 3 || p != 4 {
			t.Fatalf("ParseStockProduct = %d, %d, %v", a, p, err)
		}
		if got, err := lua.ReadStockOrder(ctx, c, keys.StockOrder("unknown")); err != nil || got != (lua.StockOrderState{}) {
			t.Fatalf("unknown order = %+v, %v", got, err)
		}

		voucher := keys.StockVoucher("v1")
		if ok, err := lua.IndexStockVoucher(ctx, c, voucher, lua.StockProduct(1, 2), time.Minute); !ok || err != nil {
			t.Fatalf("index = %v, %v", ok, err)
		}
		if got, err := lua.RollbackStockVoucher(ctx, c, voucher, time.Minute); err != nil || !reflect.DeepEqual(got, []string{"1:2"}) {
			t.Fatalf("rollback = %q, %v", got, err)
		}
		if ok, err := lua.IndexStockVoucher(ctx, c, voucher, lua.StockProduct(5, 6), time.Minute); ok || err != nil {
			t.Fatalf("index after rollback = %v, %v", ok, err)
		}
	})
}
