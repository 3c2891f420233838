package stock_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/stock"
)

// A rollback refused on a product (its stock moved on) leaves the voucher's
// operation standing there: its replay answers the first result, not
// ROLLED_BACK, and a product the voucher never reached refuses it.
func TestStockRefusedRollbackLeavesItsOperationReplayable(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	s10 := ref(10)
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 10})
	salvage := func() ([]stock.ItemResult, error) {
		return e.Stock.MovePool(ctx, true, "sal-7", 7, []stock.Item{s10.item("", 4)})
	}
	res, err := salvage()
	mustOK(t, err)
	mustOK(t, res[0].Err)
	mustOK(t, e.Stock.Deduct(ctx, "o-pool", []stock.Item{s10.item(stock.PoolScope(7), 1)}))
	before := stockSnapshot(t, e, s10)
	wantErr(t, "rollback after the pool sold", e.Stock.RollbackVoucher(ctx, "sal-7"), stock.ErrOutOfStock)
	stockUnchanged(t, e, "a refused rollback", before, s10)

	res, err = salvage()
	mustOK(t, err)
	wantErr(t, "the salvage's replay", res[0].Err, nil)
	stockUnchanged(t, e, "the salvage's replay", before, s10)

	// On another product the voucher never ran: there it is rolled back.
	submitSKUs(t, e, "sub-p3", 1, 3, stock.SKUStock{SKU: 20, Stock: 5})
	_, err = e.Stock.MovePool(ctx, true, "sal-7", 7, []stock.Item{skuRef{1, 3, 20}.item("", 1)})
	wantErr(t, "the voucher on a product it never reached", err, stock.ErrRolledBack)
}

// A pool id is any positive int64: stock salvaged into pool MaxInt64 is sold
// from that pool's scope.
func TestStockLargestPoolIDSells(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	s10 := ref(10)
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 3})
	salvageAll(t, e, "sal", math.MaxInt64, s10, 2)
	scope := stock.PoolScope(math.MaxInt64)
	mustOK(t, e.Stock.Deduct(ctx, "o1", []stock.Item{s10.item(scope, 2)}))
	wantErr(t, "a pool id past int64", e.Stock.Deduct(ctx, "o2", []stock.Item{s10.item("pool:9223372036854775808", 1)}), errs.ErrInvalidArgument)
	if v := skuView(t, e, s10); v.Pools[fmt.Sprint(int64(math.MaxInt64))] != (stock.Counters{Total: 2, Sold: 2}) {
		t.Fatalf("pool after the sale: %+v", v.Pools)
	}
}

// An order across products refused before any product took it leaves its id
// with each product's shard: the same id for an order of one of them alone
// is a conflict, and takes nothing.
func TestStockRefusedOrderAcrossProductsKeepsItsID(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	a, b := skuRef{1, 2, 10}, skuRef{1, 3, 20}
	submitSKUs(t, e, "sub-a", 1, 2, stock.SKUStock{SKU: 10, Stock: 5})
	submitSKUs(t, e, "sub-b", 1, 3, stock.SKUStock{SKU: 20, Stock: 5})
	wantErr(t, "an order over stock", e.Stock.Deduct(ctx, "rf2", []stock.Item{a.item(hs, 1), b.item(hs, 1000)}), stock.ErrOutOfStock)
	before := stockSnapshot(t, e, a, b)
	wantErr(t, "its id for A alone", e.Stock.Deduct(ctx, "rf2", []stock.Item{a.item(hs, 1)}), errs.ErrIdempotencyConflict)
	wantErr(t, "its id for B alone", e.Stock.Deduct(ctx, "rf2", []stock.Item{b.item(hs, 1)}), errs.ErrIdempotencyConflict)
	wantErr(t, "its replay", e.Stock.Deduct(ctx, "rf2", []stock.Item{a.item(hs, 1), b.item(hs, 1000)}), stock.ErrOutOfStock)
	stockUnchanged(t, e, "the reused id", before, a, b)
}
