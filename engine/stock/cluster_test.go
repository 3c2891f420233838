package stock_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

// On Redis Cluster every stock operation works unchanged: each script's keys
// share one product's hash tag, so it runs on one node, while the calls that
// span products or shards (the deduct pipelines, the order index read and
// closed across every shard, orders and TCC branches across products, a
// voucher across products and its rollback) span nodes. Counters are exact
// in Redis and MySQL ends equal to them.
func TestStockOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.StartCluster(t, 3), PoolSize: 64})
	t.Cleanup(func() { rdb.Close() })
	if err := lua.Preload(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	e := enginetest.NewEnv(t, rdb, lua.NewKeys("grab", 16), storetest.MySQL(t))
	e.StartWriter(t)
	hs := stock.ScopeHighSeas

	master := func(key string) string {
		t.Helper()
		node, err := rdb.MasterForKey(ctx, key)
		mustOK(t, err)
		return node.Options().Addr
	}
	// One product per master, in product id order: pa, pb, pc, each on a
	// master of its own (the shards' hash tags and the cluster's slot ranges
	// are fixed, so these are always the same products).
	const act = 1
	var prods []int64
	seen := map[string]bool{}
	for p := int64(2); p < 200 && len(prods) < 3; p++ {
		if m := master(e.Keys.Stock(act, p).Record); !seen[m] {
			seen[m] = true
			prods = append(prods, p)
		}
	}
	if len(prods) < 3 {
		t.Fatalf("products 2..199 on %d masters only: %v", len(seen), seen)
	}
	pa, pb, pc := prods[0], prods[1], prods[2]
	masters := map[string]bool{}
	for _, p := range prods {
		masters[master(e.Keys.Stock(act, p).Record)] = true
	}
	if len(masters) != 3 {
		t.Fatalf("products %v on masters %v; want three apart", prods, masters)
	}
	// The shards' order indexes, read and closed in one pipeline, span nodes too.
	indexNodes := map[string]bool{}
	for s := range e.Keys.Shards {
		indexNodes[master(e.Keys.StockOrders(s))] = true
	}
	if len(indexNodes) < 2 {
		t.Fatalf("every shard's order index on one master: %v", indexNodes)
	}
	t.Logf("products %d, %d, %d on %d masters; the order index on %d", pa, pb, pc, len(masters), len(indexNodes))

	var (
		vouch   = skuRef{act, pa, 10} // vouchers
		revoked = skuRef{act, pa, 11} // revoke
		acrossA = skuRef{act, pa, 12} // the order across products
		tccA    = skuRef{act, pa, 13} // TCC
		saleB   = skuRef{act, pb, 20} // flash sale
		acrossB = skuRef{act, pb, 21}
		vouchB  = skuRef{act, pb, 22} // the voucher across products
		saleC   = skuRef{act, pc, 30}
		tccC    = skuRef{act, pc, 31}
	)
	all := []skuRef{vouch, revoked, acrossA, tccA, saleB, acrossB, vouchB, saleC, tccC}
	want := func(t *testing.T, r skuRef, hsWant stock.Counters, pools map[string]stock.Counters) {
		t.Helper()
		v := skuView(t, e, r)
		if pools == nil {
			pools = map[string]stock.Counters{}
		}
		if v.HighSeas != hsWant || fmt.Sprint(v.Pools) != fmt.Sprint(pools) {
			t.Fatalf("SKU %v: %+v %+v, want %+v %+v", r, v.HighSeas, v.Pools, hsWant, pools)
		}
	}
	c := func(total, avail, reserved, sold int64) stock.Counters {
		return stock.Counters{Total: total, Available: avail, Reserved: reserved, Sold: sold}
	}

	submitSKUs(t, e, "sub-a", act, pa, stock.SKUStock{SKU: 10, Stock: 100}, stock.SKUStock{SKU: 11, Stock: 50},
		stock.SKUStock{SKU: 12, Stock: 20}, stock.SKUStock{SKU: 13, Stock: 20})
	submitSKUs(t, e, "sub-b", act, pb, stock.SKUStock{SKU: 20, Stock: 50}, stock.SKUStock{SKU: 21, Stock: 20},
		stock.SKUStock{SKU: 22, Stock: 40})
	submitSKUs(t, e, "sub-c", act, pc, stock.SKUStock{SKU: 30, Stock: 50}, stock.SKUStock{SKU: 31, Stock: 20})

	// Each step builds on the ones before: the first that fails ends the test.
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("Vouchers", func(t *testing.T) {
		mustOK(t, e.Stock.Submit(ctx, "sub-a", act, pa, []stock.SKUStock{{SKU: 10, Stock: 100}, {SKU: 11, Stock: 50},
			{SKU: 12, Stock: 20}, {SKU: 13, Stock: 20}})) // a replay
		wantErr(t, "resubmit", e.Stock.Submit(ctx, "sub-a2", act, pa, []stock.SKUStock{{SKU: 10, Stock: 1}}), stock.ErrAlreadySubmitted)
		want(t, vouch, c(100, 100, 0, 0), nil)

		mustOK(t, e.Stock.Edit(ctx, "ed-1", act, pa, 10, 20))
		want(t, vouch, c(120, 120, 0, 0), nil)
		salvageAll(t, e, "salv-7", 7, vouch, 30)
		want(t, vouch, c(90, 90, 0, 0), map[string]stock.Counters{"7": c(30, 30, 0, 0)})
		res, err := e.Stock.MovePool(ctx, false, "rel-7", 7, []stock.Item{vouch.item("", 10)})
		mustOK(t, err)
		mustOK(t, res[0].Err)
		want(t, vouch, c(100, 100, 0, 0), map[string]stock.Counters{"7": c(20, 20, 0, 0)})
		mustOK(t, e.Stock.RollbackVoucher(ctx, "rel-7"))
		want(t, vouch, c(90, 90, 0, 0), map[string]stock.Counters{"7": c(30, 30, 0, 0)})

		// One voucher over two products on two masters, and its rollback.
		res, err = e.Stock.MovePool(ctx, true, "salv-x", 8, []stock.Item{vouch.item("", 5), vouchB.item("", 15)})
		mustOK(t, err)
		mustOK(t, errors.Join(res[0].Err, res[1].Err))
		want(t, vouch, c(85, 85, 0, 0), map[string]stock.Counters{"7": c(30, 30, 0, 0), "8": c(5, 5, 0, 0)})
		want(t, vouchB, c(25, 25, 0, 0), map[string]stock.Counters{"8": c(15, 15, 0, 0)})
		mustOK(t, e.Stock.RollbackVoucher(ctx, "salv-x"))
		mustOK(t, e.Stock.RollbackVoucher(ctx, "salv-x"))
		want(t, vouch, c(90, 90, 0, 0), map[string]stock.Counters{"7": c(30, 30, 0, 0)})
		want(t, vouchB, c(40, 40, 0, 0), nil)
		_, err = e.Stock.MovePool(ctx, true, "salv-x", 8, []stock.Item{vouch.item("", 5), vouchB.item("", 15)})
		wantErr(t, "salvage after its rollback", err, stock.ErrRolledBack)

		mustOK(t, e.Stock.Edit(ctx, "ed-2", act, pa, 10, -5))
		want(t, vouch, c(85, 85, 0, 0), map[string]stock.Counters{"7": c(30, 30, 0, 0)})
		mustOK(t, e.Stock.RollbackVoucher(ctx, "ed-2"))
		want(t, vouch, c(90, 90, 0, 0), map[string]stock.Counters{"7": c(30, 30, 0, 0)})
		wantErr(t, "edit after its rollback", e.Stock.Edit(ctx, "ed-2", act, pa, 10, -5), stock.ErrRolledBack)

		// Revoke: the pool's available back to the high seas, all of that withdrawn; the sold unit stays.
		salvageAll(t, e, "salv-9", 9, revoked, 10)
		mustOK(t, e.Stock.Deduct(ctx, "o-11", []stock.Item{revoked.item(stock.PoolScope(9), 1)}))
		w, err := e.Stock.Revoke(ctx, "rev-11", act, pa, 11)
		mustOK(t, err)
		if w != 49 {
			t.Fatalf("revoke withdrew %d, want 49", w)
		}
		if w, err := e.Stock.Revoke(ctx, "rev-11", act, pa, 11); err != nil || w != 49 {
			t.Fatalf("revoke replayed: %d, %v", w, err)
		}
		v := skuView(t, e, revoked)
		if !v.Revoked || v.ForSale || v.HighSeas != (stock.Counters{}) || fmt.Sprint(v.Pools) != fmt.Sprint(map[string]stock.Counters{"9": c(1, 0, 0, 1)}) {
			t.Fatalf("after revoke %+v", v)
		}
		wantErr(t, "rollback of a revoke", e.Stock.RollbackVoucher(ctx, "rev-11"), stock.ErrNotForSale)
		wantErr(t, "deduct after revoke", e.Stock.Deduct(ctx, "o-11b", []stock.Item{revoked.item(hs, 1)}), errs.ErrNotFound)
	})

	// The outcome of each flash-sale order, for replays and returns.
	type outcome struct {
		id   string
		item stock.Item
		err  error
	}
	var sales []outcome
	step("FlashSale", func(t *testing.T) {
		// 200 buyers of 50 units on each of two products on two masters, at
		// once: the deducts share pipelines that span nodes.
		const units, buyers = 50, 200
		for _, r := range []skuRef{saleB, saleC} {
			for i := range buyers {
				sales = append(sales, outcome{id: fmt.Sprintf("fs-%d-%d", r.p, i), item: r.item(hs, 1)})
			}
		}
		run := func(f func(i int)) {
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range sales {
				wg.Add(1)
				go func() { defer wg.Done(); <-start; f(i) }()
			}
			close(start)
			wg.Wait()
		}
		run(func(i int) { sales[i].err = e.Stock.Deduct(ctx, sales[i].id, []stock.Item{sales[i].item}) })
		ok := map[int64]int{}
		for _, o := range sales {
			switch {
			case o.err == nil:
				ok[o.item.ProductID]++
			case !errors.Is(o.err, stock.ErrOutOfStock):
				t.Fatalf("deduct %s: %v", o.id, o.err)
			}
		}
		if ok[pb] != units || ok[pc] != units {
			t.Fatalf("%d and %d deducts succeeded, want %d each", ok[pb], ok[pc], units)
		}
		want(t, saleB, c(units, 0, 0, units), nil)
		want(t, saleC, c(units, 0, 0, units), nil)

		// Every order replayed, concurrently again, answers as it first did.
		replays := make([]error, len(sales))
		run(func(i int) { replays[i] = e.Stock.Deduct(ctx, sales[i].id, []stock.Item{sales[i].item}) })
		for i, o := range sales {
			if fmt.Sprint(replays[i]) != fmt.Sprint(o.err) {
				t.Fatalf("deduct %s replayed: %v, first %v", o.id, replays[i], o.err)
			}
		}
		want(t, saleB, c(units, 0, 0, units), nil)
		want(t, saleC, c(units, 0, 0, units), nil)
	})

	step("Returns", func(t *testing.T) {
		// Ten sold orders of each product come back, found through the
		// shards' order index; a refused order's return gives nothing.
		returned := map[int64]int{}
		var refusedID string
		for _, o := range sales {
			if o.err == nil && returned[o.item.ProductID] < 10 {
				mustOK(t, e.Stock.Return(ctx, o.id))
				mustOK(t, e.Stock.Return(ctx, o.id))
				returned[o.item.ProductID]++
				wantErr(t, "deduct after its return", e.Stock.Deduct(ctx, o.id, []stock.Item{o.item}), stock.ErrOrderClosed)
			}
			if o.err != nil && refusedID == "" {
				refusedID = o.id
			}
		}
		want(t, saleB, c(50, 10, 0, 40), nil)
		want(t, saleC, c(50, 10, 0, 40), nil)
		mustOK(t, e.Stock.Return(ctx, refusedID))
		want(t, saleB, c(50, 10, 0, 40), nil)
		want(t, saleC, c(50, 10, 0, 40), nil)

		// A return before any deduct closes the order in every shard's index,
		// across the nodes: its late deduct on any product is refused.
		mustOK(t, e.Stock.Return(ctx, "early-1"))
		for s := range e.Keys.Shards {
			if v, err := rdb.HGet(ctx, e.Keys.StockOrders(s), "o:early-1").Result(); err != nil || v != "!" {
				t.Fatalf("shard %d's index holds %q, %v for the early return; want \"!\"", s, v, err)
			}
		}
		before := stockSnapshot(t, e, all...)
		for _, r := range []skuRef{saleB, saleC, acrossA} {
			wantErr(t, fmt.Sprintf("late deduct on %v", r), e.Stock.Deduct(ctx, "early-1", []stock.Item{r.item(hs, 1)}), stock.ErrOrderClosed)
		}
		mustOK(t, e.Stock.Return(ctx, "early-1"))
		mustOK(t, e.Stock.Return(ctx, "early-2"))
		wantErr(t, "late deduct across products", e.Stock.Deduct(ctx, "early-2",
			[]stock.Item{acrossA.item(hs, 1), acrossB.item(hs, 1)}), stock.ErrOrderClosed)
		stockUnchanged(t, e, "late deducts of orders returned first", before, all...)
	})

	step("OrderAcrossProducts", func(t *testing.T) {
		x1 := []stock.Item{acrossA.item(hs, 2), acrossB.item(hs, 3)}
		mustOK(t, e.Stock.Deduct(ctx, "x-1", x1))
		mustOK(t, e.Stock.Deduct(ctx, "x-1", x1))
		want(t, acrossA, c(20, 18, 0, 2), nil)
		want(t, acrossB, c(20, 17, 0, 3), nil)

		// Refused by its second product: nothing taken from the first.
		x2 := []stock.Item{acrossA.item(hs, 1), acrossB.item(hs, 99)}
		wantErr(t, "order over stock", e.Stock.Deduct(ctx, "x-2", x2), stock.ErrOutOfStock)
		wantErr(t, "order over stock replayed", e.Stock.Deduct(ctx, "x-2", x2), stock.ErrOutOfStock)
		want(t, acrossA, c(20, 18, 0, 2), nil)
		want(t, acrossB, c(20, 17, 0, 3), nil)

		mustOK(t, e.Stock.Return(ctx, "x-1"))
		mustOK(t, e.Stock.Return(ctx, "x-1"))
		want(t, acrossA, c(20, 20, 0, 0), nil)
		want(t, acrossB, c(20, 20, 0, 0), nil)
		wantErr(t, "order after its return", e.Stock.Deduct(ctx, "x-1", x1), stock.ErrOrderClosed)

		mustOK(t, e.Stock.Deduct(ctx, "x-3", []stock.Item{acrossA.item(hs, 4), acrossB.item(hs, 5)}))
		want(t, acrossA, c(20, 16, 0, 4), nil)
		want(t, acrossB, c(20, 15, 0, 5), nil)
		if n := rdb.ZCard(ctx, e.Keys.StockPending()).Val(); n != 0 {
			t.Fatalf("%d orders still noted pending", n)
		}
	})

	step("TCCAcrossProducts", func(t *testing.T) {
		items := func(qa, qc int64) []stock.Item { return []stock.Item{tccA.item(hs, qa), tccC.item(hs, qc)} }
		tcc := func(phase stock.TCCPhase, gid string, it []stock.Item) error {
			return e.Stock.TCC(ctx, phase, gid, "b1", it)
		}
		mustOK(t, tcc(stock.TCCTry, "g1", items(2, 3)))
		mustOK(t, tcc(stock.TCCTry, "g1", items(2, 3)))
		want(t, tccA, c(20, 18, 2, 0), nil)
		want(t, tccC, c(20, 17, 3, 0), nil)
		mustOK(t, tcc(stock.TCCConfirm, "g1", items(2, 3)))
		mustOK(t, tcc(stock.TCCConfirm, "g1", items(2, 3)))
		mustOK(t, tcc(stock.TCCCancel, "g1", items(2, 3))) // after the confirm: changes nothing
		want(t, tccA, c(20, 18, 0, 2), nil)
		want(t, tccC, c(20, 17, 0, 3), nil)

		mustOK(t, tcc(stock.TCCTry, "g2", items(1, 1)))
		want(t, tccA, c(20, 17, 1, 2), nil)
		want(t, tccC, c(20, 16, 1, 3), nil)
		mustOK(t, tcc(stock.TCCCancel, "g2", items(1, 1)))
		mustOK(t, tcc(stock.TCCCancel, "g2", items(1, 1)))
		want(t, tccA, c(20, 18, 0, 2), nil)
		want(t, tccC, c(20, 17, 0, 3), nil)

		before := stockSnapshot(t, e, tccA, tccC)
		mustOK(t, tcc(stock.TCCCancel, "g3", items(1, 1)))
		wantErr(t, "try after its cancel", tcc(stock.TCCTry, "g3", items(1, 1)), stock.ErrTCCRefused)
		mustOK(t, tcc(stock.TCCConfirm, "g4", items(1, 1)))
		wantErr(t, "try after a confirm without one", tcc(stock.TCCTry, "g4", items(1, 1)), stock.ErrTCCRefused)
		mustOK(t, tcc(stock.TCCCancel, "g4", items(1, 1)))
		// A try refused by one product: its cancel gives back what the other reserved.
		wantErr(t, "try over stock", tcc(stock.TCCTry, "g5", items(1, 99)), stock.ErrOutOfStock)
		mustOK(t, tcc(stock.TCCCancel, "g5", items(1, 99)))
		wantErr(t, "try after its cancel", tcc(stock.TCCTry, "g5", items(1, 99)), stock.ErrTCCRefused)
		stockUnchanged(t, e, "null compensations, confirms without a try and a failed try", before, tccA, tccC)
		want(t, tccA, c(20, 18, 0, 2), nil)
		want(t, tccC, c(20, 17, 0, 3), nil)
	})

	// One version per change, in Redis and (waitDurable) MySQL, and MySQL's
	// change log holds each of them once.
	versions := map[skuRef]int64{
		vouch:   9,  // submit, 2 edits, 3 salvages and releases, 3 rollbacks
		revoked: 4,  // submit, salvage, deduct, revoke
		acrossA: 4,  // submit, x-1, its return, x-3
		tccA:    7,  // submit, g1 try and confirm, g2 try and cancel, g5 try and cancel
		saleB:   61, // submit, 50 deducts, 10 returns
		acrossB: 4,
		vouchB:  3, // submit, salv-x, its rollback
		saleC:   61,
		tccC:    5, // submit, g1 try and confirm, g2 try and cancel (g5 was refused here)
	}
	durable := func(t *testing.T) {
		t.Helper()
		waitDurable(t, e, all...)
		for _, r := range all {
			gaplessChanges(t, e, r)
			if st, err := lua.StockSKU(ctx, rdb, e.Keys.Stock(r.a, r.p), r.sku); err != nil || st.Version != versions[r] {
				t.Fatalf("SKU %v at version %d, %v; want %d", r, st.Version, err, versions[r])
			}
		}
	}

	step("MySQL", func(t *testing.T) {
		durable(t)
		for _, r := range all {
			t.Logf("SKU %v: %s", r, redisStock(t, e, r))
		}
		// The records of the ops across products and nodes are MySQL's too.
		for ref, products := range map[string][]int64{"o:x-1": {pa, pb}, "o:x-3": {pa, pb}, "t:g1/b1": {pa, pc},
			"t:g3/b1": {pa, pc}, "v:salv-x": {pa, pb}, "o:early-1": {pa, pb, pc}} {
			slices.Sort(products)
			waitRecords(t, e, ref, products)
		}
	})

	// Every node loses its data and its script cache, as on a restart: each
	// product is verified from MySQL on its next use, on its own node, the
	// pipelines that span nodes meet NOSCRIPT on some and run those calls
	// again, and every replay answers as it first did.
	step("AfterEveryNodeLosesItsData", func(t *testing.T) {
		before := stockSnapshot(t, e, all...)
		mustOK(t, rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return errors.Join(c.FlushAll(ctx).Err(), c.ScriptFlush(ctx).Err())
		}))
		stockUnchanged(t, e, "the loss of every node's data", before, all...)

		var sold, refused, returned *outcome
		for i := range sales {
			o := &sales[i]
			switch {
			case o.err != nil:
				refused = o // the last refused: the first was returned above
			case o.err == nil && o.item.ProductID == pb && returned == nil:
				returned = o // the first sold order of pb was returned above
			case o.err == nil && o.item.ProductID == pb && returned != nil:
				sold = o // the last sold one of pb: still sold
			}
		}
		mustOK(t, e.Stock.Deduct(ctx, sold.id, []stock.Item{sold.item}))
		wantErr(t, "refused order replayed", e.Stock.Deduct(ctx, refused.id, []stock.Item{refused.item}), stock.ErrOutOfStock)
		wantErr(t, "returned order replayed", e.Stock.Deduct(ctx, returned.id, []stock.Item{returned.item}), stock.ErrOrderClosed)
		wantErr(t, "early-returned order", e.Stock.Deduct(ctx, "early-1", []stock.Item{saleB.item(hs, 1)}), stock.ErrOrderClosed)
		mustOK(t, e.Stock.Deduct(ctx, "x-3", []stock.Item{acrossA.item(hs, 4), acrossB.item(hs, 5)}))
		wantErr(t, "returned order across products replayed", e.Stock.Deduct(ctx, "x-1",
			[]stock.Item{acrossA.item(hs, 2), acrossB.item(hs, 3)}), stock.ErrOrderClosed)
		mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g1", "b1", []stock.Item{tccA.item(hs, 2), tccC.item(hs, 3)}))
		wantErr(t, "try after its cancel", e.Stock.TCC(ctx, stock.TCCTry, "g3", "b1", []stock.Item{tccA.item(hs, 1), tccC.item(hs, 1)}), stock.ErrTCCRefused)
		mustOK(t, e.Stock.Submit(ctx, "sub-b", act, pb, []stock.SKUStock{{SKU: 20, Stock: 50}, {SKU: 21, Stock: 20}, {SKU: 22, Stock: 40}}))
		// The voucher's own index is lost; each product's tombstone (from MySQL) refuses it.
		res, err := e.Stock.MovePool(ctx, true, "salv-x", 8, []stock.Item{vouch.item("", 5), vouchB.item("", 15)})
		mustOK(t, err)
		wantErr(t, "salvage after its rollback, first product", res[0].Err, stock.ErrRolledBack)
		wantErr(t, "salvage after its rollback, second product", res[1].Err, stock.ErrRolledBack)
		stockUnchanged(t, e, "replays after the loss", before, all...)

		// A sold order's return finds it in MySQL's markers.
		mustOK(t, e.Stock.Return(ctx, sold.id))
		want(t, saleB, c(50, 11, 0, 39), nil)

		// New sales go on, through pipelines that meet NOSCRIPT on every node:
		// 15 buyers each of the 11 and 10 units left.
		mustOK(t, rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() }))
		var mu sync.Mutex
		var wg sync.WaitGroup
		ok := map[int64]int{}
		for i := range 30 {
			r := []skuRef{saleB, saleC}[i%2]
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := e.Stock.Deduct(ctx, fmt.Sprintf("after-loss-%d", i), []stock.Item{r.item(hs, 1)})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					ok[r.p]++
				case !errors.Is(err, stock.ErrOutOfStock):
					t.Errorf("deduct after the loss: %v", err)
				}
			}()
		}
		wg.Wait()
		if ok[pb] != 11 || ok[pc] != 10 {
			t.Fatalf("after the loss %d and %d deducts succeeded, want 11 and 10", ok[pb], ok[pc])
		}
		want(t, saleB, c(50, 0, 0, 50), nil)
		want(t, saleC, c(50, 0, 0, 50), nil)

		// And an order across products and a return before its deduct (which
		// closes the order in every shard's index), both meeting NOSCRIPT.
		mustOK(t, rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.ScriptFlush(ctx).Err() }))
		mustOK(t, e.Stock.Return(ctx, "early-3"))
		for s := range e.Keys.Shards {
			if v, err := rdb.HGet(ctx, e.Keys.StockOrders(s), "o:early-3").Result(); err != nil || v != "!" {
				t.Fatalf("shard %d's index holds %q, %v for the early return; want \"!\"", s, v, err)
			}
		}
		wantErr(t, "late deduct", e.Stock.Deduct(ctx, "early-3", []stock.Item{acrossB.item(hs, 1)}), stock.ErrOrderClosed)
		mustOK(t, e.Stock.Deduct(ctx, "x-4", []stock.Item{acrossA.item(hs, 1), acrossB.item(hs, 1)}))
		want(t, acrossA, c(20, 15, 0, 5), nil)
		want(t, acrossB, c(20, 14, 0, 6), nil)
		// Versions go on from MySQL's.
		versions[saleB] += 1 + 11
		versions[saleC] += 10
		versions[acrossA]++
		versions[acrossB]++
		durable(t)
	})
}

// waitRecords waits until MySQL holds record ref on exactly products (of
// activity 1), each with Redis's value.
func waitRecords(t *testing.T, e *enginetest.Env, ref string, products []int64) {
	t.Helper()
	ctx := context.Background()
	var diffs []string
	defer func() {
		if t.Failed() {
			t.Logf("record %s: %v", ref, diffs)
		}
	}()
	enginetest.WaitFor(t, "record "+ref+" in MySQL as in Redis", func() bool {
		diffs = nil
		got, err := e.DB.StockRecordProducts(ctx, ref)
		mustOK(t, err)
		var want [][2]int64
		for _, p := range products {
			want = append(want, [2]int64{1, p})
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			diffs = append(diffs, fmt.Sprintf("on products %v, want %v", got, want))
		}
		for _, p := range products {
			inRedis, err := e.Redis.HGet(ctx, e.Keys.Stock(1, p).Record, ref).Result()
			mustOK(t, err)
			inMySQL := ""
			recs, err := e.DB.StockRecords(ctx, 1, p, "", 100000)
			mustOK(t, err)
			for _, r := range recs {
				if r.Ref == ref {
					inMySQL = r.Value
				}
			}
			if inRedis != inMySQL {
				diffs = append(diffs, fmt.Sprintf("product %d: redis %q, mysql %q", p, inRedis, inMySQL))
			}
		}
		return len(diffs) == 0
	})
}
