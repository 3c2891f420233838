package stock_test

// The stock engine's specification, against the real Redis and MariaDB:
// concurrent deducts sell exactly what is available, TCC branches keep
// dtm's barrier semantics under disorder, a revoke racing everything else
// loses no stock, every operation is idempotent under its id, bad input
// changes nothing, a return racing its deduct leaves nothing taken, a forced
// exit takes a SKU out, and MySQL ends equal to Redis with a gapless change log.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/engine/stock/stocktest"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
)

// skuRef names one activity product's SKU.
type skuRef struct{ a, p, sku int64 }

// Activity 1, product 2 unless a test needs more products.
func ref(sku int64) skuRef { return skuRef{1, 2, sku} }

func (r skuRef) item(scope string, qty int64) stock.Item {
	return stock.Item{Scope: scope, ActivityID: r.a, ProductID: r.p, SKU: r.sku, Qty: qty}
}

func (r skuRef) String() string { return fmt.Sprintf("%d/%d/%d", r.a, r.p, r.sku) }

func mustOK(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantErr fails unless err is target (nil for success).
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if target == nil && err != nil || target != nil && !errors.Is(err, target) {
		t.Fatalf("%s: got %v, want %v", what, err, target)
	}
}

func submitSKUs(t testing.TB, e *enginetest.Env, voucher string, a, p int64, skus ...stock.SKUStock) {
	t.Helper()
	mustOK(t, e.Stock.Submit(context.Background(), voucher, a, p, skus))
}

// salvage moves qty of r into pool, failing the test unless it all moved.
func salvageAll(t testing.TB, e *enginetest.Env, voucher string, pool int64, r skuRef, qty int64) {
	t.Helper()
	res, err := e.Stock.MovePool(context.Background(), true, voucher, pool, []stock.Item{r.item("", qty)})
	mustOK(t, err)
	mustOK(t, res[0].Err)
}

func skuView(t testing.TB, e *enginetest.Env, r skuRef) stock.SKUView {
	t.Helper()
	v, err := e.Stock.SKU(context.Background(), r.a, r.p, r.sku)
	mustOK(t, err)
	if err := invariant(v); err != nil {
		t.Fatalf("SKU %v: %v", r, err)
	}
	return v
}

// wantView fails unless the SKU's view is exactly want (Pools empty, not
// nil, when it has none).
func wantView(t testing.TB, e *enginetest.Env, r skuRef, want stock.SKUView) {
	t.Helper()
	if got := skuView(t, e, r); !reflect.DeepEqual(got, want) {
		t.Fatalf("SKU %v: %+v, want %+v", r, got, want)
	}
}

// scopes lists a view's counters by scope name (high_seas, pool:<id>).
func scopes(v stock.SKUView) map[string]stock.Counters {
	m := map[string]stock.Counters{stock.ScopeHighSeas: v.HighSeas}
	for id, c := range v.Pools {
		m["pool:"+id] = c
	}
	return m
}

// invariant: in every scope total = available + reserved + sold, none negative.
func invariant(v stock.SKUView) error {
	for s, c := range scopes(v) {
		if c.Total < 0 || c.Available < 0 || c.Reserved < 0 || c.Sold < 0 {
			return fmt.Errorf("scope %s negative: %+v", s, c)
		}
		if c.Total != c.Available+c.Reserved+c.Sold {
			return fmt.Errorf("scope %s: total %d != available %d + reserved %d + sold %d", s, c.Total, c.Available, c.Reserved, c.Sold)
		}
	}
	return nil
}

// viewOf reads a SKU hash as SKUStock does.
func viewOf(h map[string]string) stock.SKUView {
	v := stock.SKUView{ForSale: h["st"] == "on", Revoked: h["st"] == "rev", Pools: map[string]stock.Counters{}}
	for f := range h {
		scope, ok := strings.CutSuffix(f, ":t")
		if !ok {
			continue
		}
		n := func(c string) int64 { x, _ := strconv.ParseInt(h[scope+":"+c], 10, 64); return x }
		c := stock.Counters{Total: n("t"), Available: n("a"), Reserved: n("r"), Sold: n("s")}
		if pool, ok := strings.CutPrefix(scope, "pool:"); ok {
			v.Pools[pool] = c
		} else {
			v.HighSeas = c
		}
	}
	return v
}

// sampleInvariant reads the SKU's hash over and over, on a connection of
// its own (so it never waits behind the load for a pooled one), checking the
// invariant at every read. stop ends it and answers how many samples it
// took, failing the test on the first broken one.
func sampleInvariant(t testing.TB, e *enginetest.Env, r skuRef) (stop func() int64) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: redistest.Addr(), PoolSize: 1})
	key := e.Keys.Stock(r.a, r.p).SKU(r.sku)
	quit, done := make(chan struct{}), make(chan struct{})
	var samples int64
	var bad error
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			default:
			}
			h, err := c.HGetAll(context.Background(), key).Result()
			if err == nil {
				err = invariant(viewOf(h))
			}
			if err != nil {
				bad = fmt.Errorf("sample %d of SKU %v: %w", samples+1, r, err)
				return
			}
			samples++
		}
	}()
	return func() int64 {
		t.Helper()
		close(quit)
		<-done
		c.Close()
		if bad != nil {
			t.Fatal(bad)
		}
		return samples
	}
}

// sum adds up a SKU's scopes.
func sumScopes(v stock.SKUView) stock.Counters {
	var t stock.Counters
	for _, c := range scopes(v) {
		t.Total += c.Total
		t.Available += c.Available
		t.Reserved += c.Reserved
		t.Sold += c.Sold
	}
	return t
}

// snapshot is every named SKU's state as SKUStock reads it (a SKU that is
// not there reads as its error), for before/after comparisons.
func stockSnapshot(t testing.TB, e *enginetest.Env, refs ...skuRef) string {
	t.Helper()
	var b strings.Builder
	for _, r := range refs {
		v, err := e.Stock.SKU(context.Background(), r.a, r.p, r.sku)
		if err != nil {
			fmt.Fprintf(&b, "%v: %v\n", r, err)
			continue
		}
		if err := invariant(v); err != nil {
			t.Fatalf("SKU %v: %v", r, err)
		}
		fmt.Fprintf(&b, "%v: %+v\n", r, v)
	}
	return b.String()
}

// unchanged fails when the SKUs' snapshot differs from before.
func stockUnchanged(t testing.TB, e *enginetest.Env, what, before string, refs ...skuRef) {
	t.Helper()
	if after := stockSnapshot(t, e, refs...); after != before {
		t.Fatalf("%s changed the stock:\nbefore %s\nafter  %s", what, before, after)
	}
}

func resultsString(res []stock.ItemResult) string {
	var b strings.Builder
	for _, r := range res {
		fmt.Fprintf(&b, "[%d %v]", r.SKU, r.Err)
	}
	return b.String()
}

func (r skuRef) ref() stocktest.SKU { return stocktest.SKU{Activity: r.a, Product: r.p, SKU: r.sku} }

// redisStock is a SKU's hash in Redis in a canonical form (stocktest.InRedis).
func redisStock(t testing.TB, e *enginetest.Env, r skuRef) string {
	return stocktest.InRedis(t, e.Redis, e.Keys, r.ref())
}

// mysqlStock is the SKU as MySQL has it, in redisStock's form.
func mysqlStock(t testing.TB, e *enginetest.Env, r skuRef) string {
	return stocktest.InMySQL(t, e.DB, r.ref())
}

// waitDurable waits until MySQL has exactly Redis's state of every SKU.
func waitDurable(t testing.TB, e *enginetest.Env, refs ...skuRef) {
	t.Helper()
	list := make([]stocktest.SKU, len(refs))
	for i, r := range refs {
		list[i] = r.ref()
	}
	stocktest.WaitDurable(t, e.Redis, e.Keys, e.DB, list...)
}

// gaplessChanges checks MySQL's change log of a SKU holds versions 1..N.
func gaplessChanges(t testing.TB, e *enginetest.Env, r skuRef) {
	t.Helper()
	stocktest.GaplessChanges(t, e.Redis, e.Keys, e.DB, r.ref())
}

// ---------------------------------------------------------------------------

func TestStockConcurrentDeductsSellExactlyTheAvailableStock(t *testing.T) {
	for _, tc := range []struct {
		name  string
		scope string
	}{{"high_seas", stock.ScopeHighSeas}, {"pool", stock.PoolScope(9)}} {
		t.Run(tc.name, func(t *testing.T) {
			e := enginetest.Real(t)
			ctx := context.Background()
			sku := ref(10)
			const units, buyers = 500, 2000
			if tc.scope == stock.ScopeHighSeas {
				submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: sku.sku, Stock: units})
			} else {
				// 300 more stay in the high seas, which pool orders must not touch.
				submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: sku.sku, Stock: units + 300})
				salvageAll(t, e, "salv", 9, sku, units)
			}

			// A sampler reads the SKU's hash while the deducts run: the
			// invariant holds at every instant, not only at the end.
			stopSampling := sampleInvariant(t, e, sku)

			start := make(chan struct{})
			var ok, out atomic.Int64
			errs := make(chan error, buyers)
			var buyersWG sync.WaitGroup
			for i := range buyers {
				buyersWG.Add(1)
				go func() {
					defer buyersWG.Done()
					<-start
					err := e.Stock.Deduct(ctx, fmt.Sprintf("order-%d", i), []stock.Item{sku.item(tc.scope, 1)})
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, stock.ErrOutOfStock):
						out.Add(1)
					default:
						errs <- err
					}
				}()
			}
			close(start)
			buyersWG.Wait()
			samples := stopSampling()
			close(errs)
			for err := range errs {
				t.Errorf("deduct: unexpected error %v", err)
			}
			t.Logf("%d samples taken while %d deducts ran", samples, buyers)
			if samples < 10 {
				t.Fatalf("only %d samples taken", samples)
			}
			if ok.Load() != units || out.Load() != buyers-units {
				t.Fatalf("%d deducts succeeded and %d were out of stock, want %d and %d", ok.Load(), out.Load(), units, buyers-units)
			}

			v := skuView(t, e, sku)
			want := stock.Counters{Total: units, Available: 0, Sold: units}
			got := v.HighSeas
			if tc.scope != stock.ScopeHighSeas {
				got = v.Pools["9"]
				if v.HighSeas != (stock.Counters{Total: 300, Available: 300}) {
					t.Fatalf("pool orders touched the high seas: %+v", v.HighSeas)
				}
			}
			if got != want {
				t.Fatalf("%s counters %+v, want %+v", tc.scope, got, want)
			}

			stop := e.RunWriter()
			defer stop()
			waitDurable(t, e, sku)
			gaplessChanges(t, e, sku)
		})
	}
}

// ---------------------------------------------------------------------------

func TestStockTCCBarrierUnderDisorder(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	const units = 100
	skus := make([]stock.SKUStock, 0, 8)
	for s := int64(10); s < 18; s++ {
		skus = append(skus, stock.SKUStock{SKU: s, Stock: units})
	}
	submitSKUs(t, e, "sub", 1, 2, skus...)
	initial := stock.Counters{Total: units, Available: units}

	t.Run("CancelBeforeTryIsANullCompensationAndRefusesTheLateTry", func(t *testing.T) {
		sku := ref(10)
		items := []stock.Item{sku.item(stock.ScopeHighSeas, 5)}
		wantErr(t, "cancel first", e.Stock.TCC(ctx, stock.TCCCancel, "g-a", "b1", items), nil)
		before := stockSnapshot(t, e, sku)
		wantErr(t, "late try", e.Stock.TCC(ctx, stock.TCCTry, "g-a", "b1", items), stock.ErrTCCRefused)
		stockUnchanged(t, e, "a late try", before, sku)
		if v := skuView(t, e, sku); v.HighSeas != initial {
			t.Fatalf("counters %+v, want %+v", v.HighSeas, initial)
		}
		// The branch stays cancelled: a confirm (which dtm would retry until it
		// succeeds) and another cancel succeed and change nothing.
		wantErr(t, "confirm after cancel", e.Stock.TCC(ctx, stock.TCCConfirm, "g-a", "b1", items), nil)
		wantErr(t, "cancel again", e.Stock.TCC(ctx, stock.TCCCancel, "g-a", "b1", items), nil)
		stockUnchanged(t, e, "confirm and cancel of a cancelled branch", before, sku)
	})

	t.Run("ConcurrentDuplicateCancelsReleaseOnce", func(t *testing.T) {
		sku := ref(11)
		items := []stock.Item{sku.item(stock.ScopeHighSeas, 7)}
		mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g-b", "b1", items))
		if v := skuView(t, e, sku); v.HighSeas != (stock.Counters{Total: units, Available: units - 7, Reserved: 7}) {
			t.Fatalf("after try %+v", v.HighSeas)
		}
		var wg sync.WaitGroup
		errs := make([]error, 20)
		for i := range errs {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = e.Stock.TCC(ctx, stock.TCCCancel, "g-b", "b1", items) }()
		}
		wg.Wait()
		for i, err := range errs {
			wantErr(t, fmt.Sprintf("cancel %d", i), err, nil)
		}
		if v := skuView(t, e, sku); v.HighSeas != initial {
			t.Fatalf("after 20 cancels %+v, want %+v", v.HighSeas, initial)
		}
	})

	t.Run("ConfirmTwiceSellsOnce", func(t *testing.T) {
		sku := ref(12)
		items := []stock.Item{sku.item(stock.ScopeHighSeas, 3)}
		mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g-c", "b1", items))
		mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g-c", "b1", items))
		before := stockSnapshot(t, e, sku)
		mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g-c", "b1", items))
		stockUnchanged(t, e, "a second confirm", before, sku)
		if v := skuView(t, e, sku); v.HighSeas != (stock.Counters{Total: units, Available: units - 3, Sold: 3}) {
			t.Fatalf("after confirm %+v", v.HighSeas)
		}
		// A cancel after the confirm succeeds (dtm retries anything else) and
		// gives nothing back; a late try is a no-op.
		wantErr(t, "cancel after confirm", e.Stock.TCC(ctx, stock.TCCCancel, "g-c", "b1", items), nil)
		wantErr(t, "try after confirm", e.Stock.TCC(ctx, stock.TCCTry, "g-c", "b1", items), nil)
		stockUnchanged(t, e, "cancel and try of a confirmed branch", before, sku)
	})

	t.Run("TryTwiceReservesOnce", func(t *testing.T) {
		sku := ref(13)
		items := []stock.Item{sku.item(stock.ScopeHighSeas, 4)}
		mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g-d", "b1", items))
		before := stockSnapshot(t, e, sku)
		mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g-d", "b1", items))
		stockUnchanged(t, e, "a second try", before, sku)
		if v := skuView(t, e, sku); v.HighSeas != (stock.Counters{Total: units, Available: units - 4, Reserved: 4}) {
			t.Fatalf("after two tries %+v", v.HighSeas)
		}
		// A branch id is per gid: another global transaction reserves again.
		mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g-d2", "b1", items))
		if v := skuView(t, e, sku); v.HighSeas.Reserved != 8 {
			t.Fatalf("two gids reserved %d, want 8", v.HighSeas.Reserved)
		}
	})

	t.Run("ConfirmOfABranchNeverTriedSellsNothingAndRefusesTheLateTry", func(t *testing.T) {
		sku := ref(14)
		items := []stock.Item{sku.item(stock.ScopeHighSeas, 2)}
		before := stockSnapshot(t, e, sku)
		// Success, so dtm ends the transaction; nothing was reserved, so nothing is sold.
		wantErr(t, "confirm without try", e.Stock.TCC(ctx, stock.TCCConfirm, "g-e", "b1", items), nil)
		wantErr(t, "confirm again", e.Stock.TCC(ctx, stock.TCCConfirm, "g-e", "b1", items), nil)
		wantErr(t, "late try", e.Stock.TCC(ctx, stock.TCCTry, "g-e", "b1", items), stock.ErrTCCRefused)
		wantErr(t, "cancel after it", e.Stock.TCC(ctx, stock.TCCCancel, "g-e", "b1", items), nil)
		stockUnchanged(t, e, "a confirm without try, its late try and a cancel", before, sku)
	})

	t.Run("ConcurrentTryAndCancelNeverLeaveAReservationHanging", func(t *testing.T) {
		sku := ref(15)
		for round := range 20 {
			gid := fmt.Sprintf("g-g%d", round)
			items := []stock.Item{sku.item(stock.ScopeHighSeas, 1)}
			var wg sync.WaitGroup
			var tryErr, cancelErr error
			wg.Add(2)
			go func() { defer wg.Done(); tryErr = e.Stock.TCC(ctx, stock.TCCTry, gid, "b1", items) }()
			go func() { defer wg.Done(); cancelErr = e.Stock.TCC(ctx, stock.TCCCancel, gid, "b1", items) }()
			wg.Wait()
			wantErr(t, "cancel", cancelErr, nil)
			if tryErr != nil && !errors.Is(tryErr, stock.ErrTCCRefused) {
				t.Fatalf("try racing its cancel: %v", tryErr)
			}
			// Whichever came first, nothing stays reserved once the cancel answered.
			if v := skuView(t, e, sku); v.HighSeas != initial {
				t.Fatalf("round %d (try: %v): %+v, want %+v", round, tryErr, v.HighSeas, initial)
			}
		}
	})

	t.Run("FailedTryAcrossProductsIsUndoneByItsCancel", func(t *testing.T) {
		// Products 3 and 4: the branch reserves in product 3, then product 4 is out of stock.
		p3, p4 := skuRef{1, 3, 30}, skuRef{1, 4, 40}
		submitSKUs(t, e, "sub-p3", 1, 3, stock.SKUStock{SKU: 30, Stock: 10})
		submitSKUs(t, e, "sub-p4", 1, 4, stock.SKUStock{SKU: 40, Stock: 1})
		before := stockSnapshot(t, e, p3, p4)
		items := []stock.Item{p4.item(stock.ScopeHighSeas, 2), p3.item(stock.ScopeHighSeas, 4)}
		wantErr(t, "try", e.Stock.TCC(ctx, stock.TCCTry, "g-f", "b1", items), stock.ErrOutOfStock)
		// Product 3 may hold its part until dtm cancels the branch, or none of it.
		if r := skuView(t, e, p3).HighSeas.Reserved; r != 4 && r != 0 {
			t.Fatalf("product 3 reserved %d after the failed try, want 4 or 0", r)
		}
		wantErr(t, "cancel", e.Stock.TCC(ctx, stock.TCCCancel, "g-f", "b1", items), nil)
		stockUnchanged(t, e, "a failed try and its cancel", before, p3, p4)
		// The late retry of that try is refused in both products.
		wantErr(t, "try after cancel", e.Stock.TCC(ctx, stock.TCCTry, "g-f", "b1", items), stock.ErrTCCRefused)
		stockUnchanged(t, e, "a try after the cancel", before, p3, p4)
	})
}

// ---------------------------------------------------------------------------

func TestStockRevokeRacingSalvagesDeductsAndTriesConservesStock(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	sku := ref(10)
	const N = 2000
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: sku.sku, Stock: N})
	for pool := int64(1); pool <= 4; pool++ {
		salvageAll(t, e, fmt.Sprintf("seed-%d", pool), pool, sku, 40)
	}

	type order struct {
		id   string
		item stock.Item
	}
	var (
		mu       sync.Mutex
		deducted []order // successful deducts
		tried    []order // successful tries (id is the gid)
		withdraw int64
		badErrs  []error
	)
	scopeOf := func(i int) string {
		if i%3 == 0 {
			return stock.ScopeHighSeas
		}
		return stock.PoolScope(int64(1 + i%4))
	}
	var refused atomic.Int64 // ops that found the SKU revoked
	expected := func(what string, err error) {
		if errors.Is(err, errs.ErrNotFound) {
			refused.Add(1)
		}
		if err != nil && !errors.Is(err, stock.ErrOutOfStock) && !errors.Is(err, errs.ErrNotFound) {
			mu.Lock()
			badErrs = append(badErrs, fmt.Errorf("%s: %w", what, err))
			mu.Unlock()
		}
	}
	var ops []func()
	for i := range 60 {
		ops = append(ops, func() {
			res, err := e.Stock.MovePool(ctx, true, fmt.Sprintf("salv-%d", i), int64(1+i%5), []stock.Item{sku.item("", int64(5+i%7))})
			if err == nil {
				err = res[0].Err
			}
			expected("salvage", err)
		})
	}
	for i := range 400 {
		o := order{fmt.Sprintf("o-%d", i), sku.item(scopeOf(i), int64(1+i%3))}
		ops = append(ops, func() {
			err := e.Stock.Deduct(ctx, o.id, []stock.Item{o.item})
			expected("deduct", err)
			if err == nil {
				mu.Lock()
				deducted = append(deducted, o)
				mu.Unlock()
			}
		})
	}
	for i := range 100 {
		o := order{fmt.Sprintf("g-%d", i), sku.item(scopeOf(i+1), int64(1+i%2))}
		ops = append(ops, func() {
			err := e.Stock.TCC(ctx, stock.TCCTry, o.id, "b1", []stock.Item{o.item})
			expected("try", err)
			if err == nil {
				mu.Lock()
				tried = append(tried, o)
				mu.Unlock()
			}
		})
	}

	// Two waves of the ops, kinds mixed: the first starts at once; when
	// half of it has finished the revoke starts, and with it the second.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(ops), func(i, j int) { ops[i], ops[j] = ops[j], ops[i] })
	first, second := ops[:len(ops)/2], ops[len(ops)/2:]
	start, halfway, revoking := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var finished atomic.Int64
	var wg sync.WaitGroup
	stopSampling := sampleInvariant(t, e, sku)
	run := func(op func(), after chan struct{}) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-after
			op()
			if finished.Add(1) == int64(len(first)/2) {
				close(halfway)
			}
		}()
	}
	for _, op := range first {
		run(op, start)
	}
	for _, op := range second {
		run(op, revoking)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-halfway
		close(revoking)
		w, err := e.Stock.Revoke(ctx, "revoke", 1, 2, sku.sku)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			badErrs = append(badErrs, fmt.Errorf("revoke: %w", err))
		}
		withdraw = w
	}()
	close(start)
	wg.Wait()
	t.Logf("%d samples taken during the race", stopSampling())
	for _, err := range badErrs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	sumQty := func(os []order) (n int64) {
		for _, o := range os {
			n += o.item.Qty
		}
		return n
	}
	sold, reserved := sumQty(deducted), sumQty(tried)
	t.Logf("withdrawn %d, %d deducts sold %d, %d tries reserved %d, %d ops refused after the revoke",
		withdraw, len(deducted), sold, len(tried), reserved, refused.Load())

	// Revoked: nothing available anywhere; what was reserved and sold stays.
	v := skuView(t, e, sku)
	all := sumScopes(v)
	if !v.Revoked || v.ForSale {
		t.Fatalf("after revoke: %+v", v)
	}
	if all.Available != 0 || all.Sold != sold || all.Reserved != reserved {
		t.Fatalf("after revoke: %+v, want available 0, sold %d, reserved %d", all, sold, reserved)
	}
	if N != withdraw+all.Total {
		t.Fatalf("conservation: %d submitted != %d withdrawn + %d left", N, withdraw, all.Total)
	}
	w, err := e.Stock.Revoke(ctx, "revoke", 1, 2, sku.sku)
	if err != nil || w != withdraw {
		t.Fatalf("revoke replay: %d, %v; want %d, nil", w, err, withdraw)
	}

	// After the revoke nothing can take or move its stock.
	before := stockSnapshot(t, e, sku)
	res, err := e.Stock.MovePool(ctx, true, "late-salv", 1, []stock.Item{sku.item("", 1)})
	mustOK(t, err)
	wantErr(t, "salvage after revoke", res[0].Err, errs.ErrNotFound)
	res, err = e.Stock.MovePool(ctx, false, "late-rel", 1, []stock.Item{sku.item("", 1)})
	mustOK(t, err)
	wantErr(t, "release after revoke", res[0].Err, errs.ErrNotFound)
	wantErr(t, "deduct after revoke", e.Stock.Deduct(ctx, "late-1", []stock.Item{sku.item(stock.ScopeHighSeas, 1)}), errs.ErrNotFound)
	wantErr(t, "pool deduct after revoke", e.Stock.Deduct(ctx, "late-2", []stock.Item{sku.item(stock.PoolScope(2), 1)}), errs.ErrNotFound)
	wantErr(t, "try after revoke", e.Stock.TCC(ctx, stock.TCCTry, "late-g", "b1", []stock.Item{sku.item(stock.ScopeHighSeas, 1)}), errs.ErrNotFound)
	wantErr(t, "edit after revoke", e.Stock.Edit(ctx, "late-edit", 1, 2, sku.sku, 5), errs.ErrNotFound)
	stockUnchanged(t, e, "operations after the revoke", before, sku)

	// Branches settle: confirms sell, cancels leave the activity.
	var confirmed, cancelled int64
	for i, o := range tried {
		if i%2 == 0 {
			mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, o.id, "b1", []stock.Item{o.item}))
			confirmed += o.item.Qty
		} else {
			mustOK(t, e.Stock.TCC(ctx, stock.TCCCancel, o.id, "b1", []stock.Item{o.item}))
			cancelled += o.item.Qty
		}
	}
	all = sumScopes(skuView(t, e, sku))
	if all.Reserved != 0 || all.Sold != sold+confirmed || all.Available != 0 {
		t.Fatalf("after settling the branches: %+v, want sold %d", all, sold+confirmed)
	}
	if N != withdraw+cancelled+all.Total {
		t.Fatalf("conservation: %d != %d withdrawn + %d cancelled + %d left", N, withdraw, cancelled, all.Total)
	}

	// A return after the revoke takes the stock out of the activity too.
	var returned int64
	for i, o := range deducted {
		before := skuView(t, e, sku)
		mustOK(t, e.Stock.Return(ctx, o.id))
		returned += o.item.Qty
		after := skuView(t, e, sku)
		if b, a := scopes(before)[o.item.Scope], scopes(after)[o.item.Scope]; a.Total != b.Total-o.item.Qty || a.Sold != b.Sold-o.item.Qty || a.Available != 0 {
			t.Fatalf("return %d of %s: %+v -> %+v", i, o.id, b, a)
		}
	}
	all = sumScopes(skuView(t, e, sku))
	if all != (stock.Counters{Total: confirmed, Sold: confirmed}) {
		t.Fatalf("after every return: %+v, want only the %d confirmed", all, confirmed)
	}
	if N != withdraw+cancelled+returned+all.Total {
		t.Fatalf("conservation: %d != %d withdrawn + %d cancelled + %d returned + %d left", N, withdraw, cancelled, returned, all.Total)
	}
}

// ---------------------------------------------------------------------------

func TestStockReplaysChangeNothing(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	s10, s11, s12 := ref(10), ref(11), ref(12)
	refs := []skuRef{s10, s11, s12}
	snap := func() string { return stockSnapshot(t, e, refs...) }

	// replay runs op twice more and requires the first answer and no change.
	replay := func(what string, first error, op func() error) {
		t.Helper()
		before := snap()
		for range 2 {
			if err := op(); fmt.Sprint(err) != fmt.Sprint(first) {
				t.Fatalf("%s replayed: %v, first answered %v", what, err, first)
			}
		}
		stockUnchanged(t, e, what+" replayed", before, refs...)
	}

	t.Run("Submit", func(t *testing.T) {
		subOp := func() error {
			return e.Stock.Submit(ctx, "v-sub", 1, 2, []stock.SKUStock{{SKU: 10, Stock: 100}, {SKU: 11, Stock: 50}})
		}
		mustOK(t, subOp())
		replay("submit", nil, subOp)
		badOp := func() error {
			return e.Stock.Submit(ctx, "v-sub-bad", 1, 2, []stock.SKUStock{{SKU: 12, Stock: 9}, {SKU: 10, Stock: 1}})
		}
		err := badOp()
		wantErr(t, "submit of a submitted SKU", err, stock.ErrAlreadySubmitted)
		replay("failed submit", err, badOp)
		if _, err := e.Stock.SKU(ctx, 1, 2, 12); !errors.Is(err, errs.ErrNotFound) {
			t.Fatalf("a failed submit is all or nothing; SKU 12: %v", err)
		}
		// A voucher names one operation: reusing it for another is a conflict.
		before := snap()
		wantErr(t, "edit under a submit's voucher", e.Stock.Edit(ctx, "v-sub", 1, 2, 10, 5), errs.ErrIdempotencyConflict)
		stockUnchanged(t, e, "an edit under a submit's voucher", before, refs...)
	})

	t.Run("Edit", func(t *testing.T) {
		mustOK(t, e.Stock.Edit(ctx, "v-edit", 1, 2, 10, 20))
		replay("edit", nil, func() error { return e.Stock.Edit(ctx, "v-edit", 1, 2, 10, 20) })
		// The same voucher with another delta still answers the first result only.
		replay("edit with another delta", nil, func() error { return e.Stock.Edit(ctx, "v-edit", 1, 2, 10, 999) })
		if v := skuView(t, e, s10); v.HighSeas != (stock.Counters{Total: 120, Available: 120}) {
			t.Fatalf("after edit %+v", v.HighSeas)
		}
	})

	t.Run("SalvageAndRelease", func(t *testing.T) {
		salv := func() ([]stock.ItemResult, error) {
			return e.Stock.MovePool(ctx, true, "v-salv", 7, []stock.Item{s10.item("", 30), s11.item("", 60), s12.item("", 1)})
		}
		first, err := salv()
		mustOK(t, err)
		if first[0].Err != nil || !errors.Is(first[1].Err, stock.ErrOutOfStock) || !errors.Is(first[2].Err, errs.ErrNotFound) {
			t.Fatalf("salvage results %s", resultsString(first))
		}
		replay("salvage", nil, func() error {
			res, err := salv()
			if err == nil && resultsString(res) != resultsString(first) {
				return fmt.Errorf("results %s, first %s", resultsString(res), resultsString(first))
			}
			return err
		})
		rel := func() ([]stock.ItemResult, error) {
			return e.Stock.MovePool(ctx, false, "v-rel", 7, []stock.Item{s10.item("", 5), s11.item("", 1)})
		}
		first, err = rel()
		mustOK(t, err)
		if first[0].Err != nil || !errors.Is(first[1].Err, stock.ErrOutOfStock) {
			t.Fatalf("release results %s", resultsString(first))
		}
		replay("release", nil, func() error {
			res, err := rel()
			if err == nil && resultsString(res) != resultsString(first) {
				return fmt.Errorf("results %s, first %s", resultsString(res), resultsString(first))
			}
			return err
		})
		// The voucher with an item its first call did not have: that item did not run.
		replay("release with an added item", nil, func() error {
			res, err := e.Stock.MovePool(ctx, false, "v-rel", 7, []stock.Item{s10.item("", 5), s11.item("", 1), s12.item("", 1)})
			if err == nil && !errors.Is(res[2].Err, errs.ErrIdempotencyConflict) {
				return fmt.Errorf("results %s, want the added item refused", resultsString(res))
			}
			return err
		})
		if v := skuView(t, e, s10); v.HighSeas != (stock.Counters{Total: 95, Available: 95}) || v.Pools["7"] != (stock.Counters{Total: 25, Available: 25}) {
			t.Fatalf("after salvage and release %+v", v)
		}
	})

	t.Run("DeductAndReturn", func(t *testing.T) {
		items := []stock.Item{s10.item(stock.ScopeHighSeas, 3), s10.item(stock.PoolScope(7), 2), s11.item(stock.ScopeHighSeas, 1)}
		mustOK(t, e.Stock.Deduct(ctx, "o-1", items))
		replay("deduct", nil, func() error { return e.Stock.Deduct(ctx, "o-1", items) })
		big := []stock.Item{s11.item(stock.ScopeHighSeas, 1000)}
		err := e.Stock.Deduct(ctx, "o-2", big)
		wantErr(t, "deduct over stock", err, stock.ErrOutOfStock)
		replay("failed deduct", err, func() error { return e.Stock.Deduct(ctx, "o-2", big) })

		before := snap()
		mustOK(t, e.Stock.Return(ctx, "o-1"))
		if after := snap(); after == before {
			t.Fatal("return changed nothing")
		}
		v := skuView(t, e, s10)
		if v.HighSeas != (stock.Counters{Total: 95, Available: 95}) || v.Pools["7"] != (stock.Counters{Total: 25, Available: 25}) {
			t.Fatalf("after return %+v", v)
		}
		replay("return", nil, func() error { return e.Stock.Return(ctx, "o-1") })
		// The order is closed: its deduct, replayed after the return, takes nothing.
		replay("deduct after its return", stock.ErrOrderClosed, func() error { return e.Stock.Deduct(ctx, "o-1", items) })

		// A return that arrives before its deduct blocks the deduct.
		replay("return before deduct", nil, func() error { return e.Stock.Return(ctx, "o-3") })
		replay("deduct after an early return", stock.ErrOrderClosed, func() error { return e.Stock.Deduct(ctx, "o-3", items) })
	})

	t.Run("TCC", func(t *testing.T) {
		items := []stock.Item{s10.item(stock.ScopeHighSeas, 4)}
		mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g1", "b1", items))
		replay("try", nil, func() error { return e.Stock.TCC(ctx, stock.TCCTry, "g1", "b1", items) })
		mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g1", "b1", items))
		replay("confirm", nil, func() error { return e.Stock.TCC(ctx, stock.TCCConfirm, "g1", "b1", items) })
		mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g1", "b2", items))
		mustOK(t, e.Stock.TCC(ctx, stock.TCCCancel, "g1", "b2", items))
		replay("cancel", nil, func() error { return e.Stock.TCC(ctx, stock.TCCCancel, "g1", "b2", items) })
		if v := skuView(t, e, s10); v.HighSeas != (stock.Counters{Total: 95, Available: 91, Sold: 4}) {
			t.Fatalf("after TCC %+v", v.HighSeas)
		}
	})

	t.Run("Rollback", func(t *testing.T) {
		before := snap()
		mustOK(t, e.Stock.Edit(ctx, "v-edit2", 1, 2, 10, 7))
		mustOK(t, e.Stock.RollbackVoucher(ctx, "v-edit2"))
		stockUnchanged(t, e, "an edit and its rollback", before, refs...)
		replay("rollback of an edit", nil, func() error { return e.Stock.RollbackVoucher(ctx, "v-edit2") })
		replay("edit after its rollback", stock.ErrRolledBack, func() error { return e.Stock.Edit(ctx, "v-edit2", 1, 2, 10, 7) })

		res, err := e.Stock.MovePool(ctx, true, "v-salv2", 8, []stock.Item{s10.item("", 10), s11.item("", 5)})
		mustOK(t, err)
		mustOK(t, errors.Join(res[0].Err, res[1].Err))
		mustOK(t, e.Stock.RollbackVoucher(ctx, "v-salv2"))
		stockUnchanged(t, e, "a salvage and its rollback", before, refs...)
		replay("rollback of a salvage", nil, func() error { return e.Stock.RollbackVoucher(ctx, "v-salv2") })
		replay("salvage after its rollback", stock.ErrRolledBack, func() error {
			_, err := e.Stock.MovePool(ctx, true, "v-salv2", 8, []stock.Item{s10.item("", 10), s11.item("", 5)})
			return err
		})

		// Submit and its rollback: the SKU is gone and can be submitted again.
		mustOK(t, e.Stock.Submit(ctx, "v-sub12", 1, 2, []stock.SKUStock{{SKU: 12, Stock: 6}}))
		mustOK(t, e.Stock.RollbackVoucher(ctx, "v-sub12"))
		stockUnchanged(t, e, "a submit and its rollback", before, refs...)
		replay("rollback of a submit", nil, func() error { return e.Stock.RollbackVoucher(ctx, "v-sub12") })
		replay("submit after its rollback", stock.ErrRolledBack, func() error {
			return e.Stock.Submit(ctx, "v-sub12", 1, 2, []stock.SKUStock{{SKU: 12, Stock: 6}})
		})

		// A rollback that overtakes its operation: the operation's index step
		// ran (the caller timed out) but not its script. The rollback marks
		// the voucher, and the operation, arriving late, changes nothing.
		mustOK(t, e.Redis.SAdd(ctx, e.Keys.StockVoucher("v-early"), "1:2").Err())
		replay("rollback before its operation", nil, func() error { return e.Stock.RollbackVoucher(ctx, "v-early") })
		replay("salvage after its early rollback", stock.ErrRolledBack, func() error {
			_, err := e.Stock.MovePool(ctx, true, "v-early", 8, []stock.Item{s10.item("", 10)})
			return err
		})
		// A rollback that comes before its operation was even indexed (the
		// caller gave up on a request still in flight) kills the voucher too.
		replay("rollback of a voucher never seen", nil, func() error { return e.Stock.RollbackVoucher(ctx, "v-never") })
		replay("edit after its rollback came first", stock.ErrRolledBack, func() error {
			return e.Stock.Edit(ctx, "v-never", 1, 2, 10, 7)
		})
	})

	t.Run("Revoke", func(t *testing.T) {
		w, err := e.Stock.Revoke(ctx, "v-rev", 1, 2, 11)
		mustOK(t, err)
		v := skuView(t, e, s11)
		if !v.Revoked || sumScopes(v).Available != 0 || w != 50 {
			t.Fatalf("revoke withdrew %d: %+v", w, v)
		}
		replay("revoke", nil, func() error {
			again, err := e.Stock.Revoke(ctx, "v-rev", 1, 2, 11)
			if err == nil && again != w {
				return fmt.Errorf("withdrew %d, first %d", again, w)
			}
			return err
		})
		// A revoke is not undone, and its rollback changes nothing.
		replay("rollback of a revoke", stock.ErrNotForSale, func() error { return e.Stock.RollbackVoucher(ctx, "v-rev") })
	})
}

// ---------------------------------------------------------------------------

func TestStockBadInputChangesNothing(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	s10, p3 := ref(10), skuRef{1, 3, 30}
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 100})
	submitSKUs(t, e, "sub-p3", 1, 3, stock.SKUStock{SKU: 30, Stock: 5})
	salvageAll(t, e, "salv", 7, s10, 20)
	mustOK(t, e.Stock.Deduct(ctx, "sold", []stock.Item{s10.item(stock.ScopeHighSeas, 10)}))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g", "b", []stock.Item{s10.item(stock.ScopeHighSeas, 5)}))
	// High seas: total 80 = available 65 + reserved 5 + sold 10; pool 7: 20 available.
	refs := []skuRef{s10, p3}
	before := stockSnapshot(t, e, refs...)
	if v := skuView(t, e, s10); v.HighSeas != (stock.Counters{Total: 80, Available: 65, Reserved: 5, Sold: 10}) {
		t.Fatalf("setup %+v", v.HighSeas)
	}

	hs := stock.ScopeHighSeas
	n := 0 // a fresh order id or gid per case, so no case replays another
	deduct := func(items ...stock.Item) error {
		n++
		return e.Stock.Deduct(ctx, fmt.Sprintf("bad-order-%d", n), items)
	}
	try := func(items ...stock.Item) error {
		n++
		return e.Stock.TCC(ctx, stock.TCCTry, fmt.Sprintf("bad-g-%d", n), "b", items)
	}
	move := func(salvage bool, voucher string, pool int64, items ...stock.Item) error {
		res, err := e.Stock.MovePool(ctx, salvage, voucher, pool, items)
		if err != nil {
			return err
		}
		var errs []error
		for _, r := range res {
			errs = append(errs, r.Err)
		}
		return errors.Join(errs...)
	}
	cases := []struct {
		name string
		want error
		op   func() error
	}{
		{"deduct of a negative qty", errs.ErrInvalidArgument, func() error { return deduct(s10.item(hs, -1)) }},
		{"deduct of qty 0", errs.ErrInvalidArgument, func() error { return deduct(s10.item(hs, 0)) }},
		{"deduct of no items", errs.ErrInvalidArgument, func() error { return deduct() }},
		{"deduct of an unknown SKU", errs.ErrNotFound, func() error { return deduct(ref(99).item(hs, 1)) }},
		{"deduct from an unknown product", errs.ErrNotFound, func() error { return deduct(skuRef{1, 9, 10}.item(hs, 1)) }},
		{"deduct from scope pool:x", errs.ErrInvalidArgument, func() error { return deduct(s10.item("pool:x", 1)) }},
		{"deduct from scope highseas", errs.ErrInvalidArgument, func() error { return deduct(s10.item("highseas", 1)) }},
		{"deduct from scope pool:0", errs.ErrInvalidArgument, func() error { return deduct(s10.item("pool:0", 1)) }},
		{"deduct from scope pool:-7", errs.ErrInvalidArgument, func() error { return deduct(s10.item("pool:-7", 1)) }},
		{"deduct from scope HIGH_SEAS", errs.ErrInvalidArgument, func() error { return deduct(s10.item("HIGH_SEAS", 1)) }},
		{"deduct from no scope", errs.ErrInvalidArgument, func() error { return deduct(s10.item("", 1)) }},
		{"deduct over available", stock.ErrOutOfStock, func() error { return e.Stock.Deduct(ctx, "over-1", []stock.Item{s10.item(hs, 66)}) }},
		{"deduct over a pool's available", stock.ErrOutOfStock, func() error {
			return e.Stock.Deduct(ctx, "over-2", []stock.Item{s10.item(stock.PoolScope(7), 21)})
		}},
		{"deduct from an empty pool", stock.ErrOutOfStock, func() error {
			return e.Stock.Deduct(ctx, "over-3", []stock.Item{s10.item(stock.PoolScope(8), 1)})
		}},
		{"deduct whose repeated lines add up over available", stock.ErrOutOfStock, func() error {
			return e.Stock.Deduct(ctx, "over-4", []stock.Item{s10.item(hs, 40), s10.item(hs, 30)})
		}},
		{"deduct across products, the second out of stock", stock.ErrOutOfStock, func() error {
			return e.Stock.Deduct(ctx, "over-5", []stock.Item{s10.item(hs, 5), p3.item(hs, 6)})
		}},
		{"deduct with an empty order id", errs.ErrInvalidArgument, func() error { return e.Stock.Deduct(ctx, "", []stock.Item{s10.item(hs, 1)}) }},
		{"deduct with a spaced order id", errs.ErrInvalidArgument, func() error { return e.Stock.Deduct(ctx, "o 1", []stock.Item{s10.item(hs, 1)}) }},
		{"deduct with a braced order id", errs.ErrInvalidArgument, func() error { return e.Stock.Deduct(ctx, "o{1}", []stock.Item{s10.item(hs, 1)}) }},
		{"return with a braced order id", errs.ErrInvalidArgument, func() error { return e.Stock.Return(ctx, "{sold}") }},
		{"try of qty 0", errs.ErrInvalidArgument, func() error { return try(s10.item(hs, 0)) }},
		{"try from scope pool:x", errs.ErrInvalidArgument, func() error { return try(s10.item("pool:x", 1)) }},
		{"try of an unknown SKU", errs.ErrNotFound, func() error { return try(ref(99).item(hs, 1)) }},
		{"try over available", stock.ErrOutOfStock, func() error { return try(s10.item(hs, 66)) }},
		{"try with a spaced gid", errs.ErrInvalidArgument, func() error {
			return e.Stock.TCC(ctx, stock.TCCTry, "g 1", "b", []stock.Item{s10.item(hs, 1)})
		}},
		{"try with a braced branch", errs.ErrInvalidArgument, func() error {
			return e.Stock.TCC(ctx, stock.TCCTry, "g", "{b}", []stock.Item{s10.item(hs, 1)})
		}},
		{"salvage of a negative qty", errs.ErrInvalidArgument, func() error { return move(true, "bad-1", 7, s10.item("", -5)) }},
		{"salvage of qty 0", errs.ErrInvalidArgument, func() error { return move(true, "bad-2", 7, s10.item("", 0)) }},
		{"salvage into pool 0", errs.ErrInvalidArgument, func() error { return move(true, "bad-3", 0, s10.item("", 1)) }},
		{"salvage of one SKU twice", errs.ErrInvalidArgument, func() error { return move(true, "bad-dup", 7, s10.item("", 1), s10.item("", 1)) }},
		{"salvage over available", stock.ErrOutOfStock, func() error { return move(true, "bad-4", 7, s10.item("", 66)) }},
		{"salvage of an unknown SKU", errs.ErrNotFound, func() error { return move(true, "bad-5", 7, ref(99).item("", 1)) }},
		{"release over a pool's available", stock.ErrOutOfStock, func() error { return move(false, "bad-6", 7, s10.item("", 21)) }},
		{"release from an empty pool", stock.ErrOutOfStock, func() error { return move(false, "bad-7", 8, s10.item("", 1)) }},
		{"salvage with an empty voucher", errs.ErrInvalidArgument, func() error { return move(true, "", 7, s10.item("", 1)) }},
		{"salvage with a spaced voucher", errs.ErrInvalidArgument, func() error { return move(true, "v 1", 7, s10.item("", 1)) }},
		{"salvage with a braced voucher", errs.ErrInvalidArgument, func() error { return move(true, "v{1}", 7, s10.item("", 1)) }},
		{"submit with an empty voucher", errs.ErrInvalidArgument, func() error {
			return e.Stock.Submit(ctx, "", 1, 2, []stock.SKUStock{{SKU: 50, Stock: 1}})
		}},
		{"submit of a negative stock", errs.ErrInvalidArgument, func() error {
			return e.Stock.Submit(ctx, "bad-sub-1", 1, 2, []stock.SKUStock{{SKU: 50, Stock: -1}})
		}},
		{"submit of a SKU twice", errs.ErrInvalidArgument, func() error {
			return e.Stock.Submit(ctx, "bad-sub-2", 1, 2, []stock.SKUStock{{SKU: 50, Stock: 1}, {SKU: 50, Stock: 2}})
		}},
		{"submit of no SKUs", errs.ErrInvalidArgument, func() error { return e.Stock.Submit(ctx, "bad-sub-3", 1, 2, nil) }},
		{"edit by 0", errs.ErrInvalidArgument, func() error { return e.Stock.Edit(ctx, "bad-edit-1", 1, 2, 10, 0) }},
		{"edit with a braced voucher", errs.ErrInvalidArgument, func() error { return e.Stock.Edit(ctx, "}{", 1, 2, 10, 1) }},
		{"edit of an unknown SKU", errs.ErrNotFound, func() error { return e.Stock.Edit(ctx, "bad-edit-2", 1, 2, 99, 1) }},
		{"edit below reserved + sold", stock.ErrOutOfStock, func() error { return e.Stock.Edit(ctx, "bad-edit-3", 1, 2, 10, -66) }},
		{"revoke of an unknown SKU", errs.ErrNotFound, func() error { _, err := e.Stock.Revoke(ctx, "bad-rev-1", 1, 2, 99); return err }},
		{"revoke with a spaced voucher", errs.ErrInvalidArgument, func() error { _, err := e.Stock.Revoke(ctx, " ", 1, 2, 10); return err }},
		{"rollback with a braced voucher", errs.ErrInvalidArgument, func() error { return e.Stock.RollbackVoucher(ctx, "{sub}") }},
		{"read of an unknown SKU", errs.ErrNotFound, func() error { _, err := e.Stock.SKU(ctx, 1, 2, 99); return err }},
	}
	for _, c := range cases {
		err := c.op()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
		if after := stockSnapshot(t, e, refs...); after != before {
			t.Fatalf("%s changed the stock:\nbefore %s\nafter  %s", c.name, before, after)
		}
	}
	if _, err := e.Stock.SKU(ctx, 1, 2, 50); !errors.Is(err, errs.ErrNotFound) {
		t.Fatalf("a refused submit created SKU 50: %v", err)
	}
	// The boundary: the high seas can be cut to exactly its reserved + sold.
	mustOK(t, e.Stock.Edit(ctx, "edit-to-floor", 1, 2, 10, -65))
	if v := skuView(t, e, s10); v.HighSeas != (stock.Counters{Total: 15, Available: 0, Reserved: 5, Sold: 10}) {
		t.Fatalf("after cutting to the floor %+v", v.HighSeas)
	}
}

// ---------------------------------------------------------------------------

func TestStockForceExitTakesTheSKUOut(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	sku := ref(10)
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 100}, stock.SKUStock{SKU: 11, Stock: 100})
	salvageAll(t, e, "salv", 7, sku, 30)
	mustOK(t, e.Stock.Deduct(ctx, "o-hs", []stock.Item{sku.item(stock.ScopeHighSeas, 4)}))
	mustOK(t, e.Stock.Deduct(ctx, "o-pool", []stock.Item{sku.item(stock.PoolScope(7), 6)}))
	sibling := stockSnapshot(t, e, ref(11))

	mustOK(t, e.Stock.ForceExit(ctx, 1, 2, 10))
	v := skuView(t, e, sku)
	want := stock.SKUView{Revoked: true, HighSeas: stock.Counters{Total: 4, Sold: 4},
		Pools: map[string]stock.Counters{"7": {Total: 6, Sold: 6}}}
	if fmt.Sprint(v) != fmt.Sprint(want) {
		t.Fatalf("after forced exit %+v, want %+v", v, want)
	}
	stockUnchanged(t, e, "another SKU's forced exit", sibling, ref(11))
	wantErr(t, "deduct after exit", e.Stock.Deduct(ctx, "o-late", []stock.Item{sku.item(stock.ScopeHighSeas, 1)}), errs.ErrNotFound)
	wantErr(t, "pool deduct after exit", e.Stock.Deduct(ctx, "o-late2", []stock.Item{sku.item(stock.PoolScope(7), 1)}), errs.ErrNotFound)

	before := stockSnapshot(t, e, sku, ref(11))
	mustOK(t, e.Stock.ForceExit(ctx, 1, 2, 10))
	stockUnchanged(t, e, "a second forced exit", before, sku, ref(11))

	// What was sold comes back out of the activity.
	mustOK(t, e.Stock.Return(ctx, "o-pool"))
	if v := skuView(t, e, sku); len(v.Pools) != 0 || v.HighSeas != (stock.Counters{Total: 4, Sold: 4}) {
		t.Fatalf("after returning the pool order %+v", v)
	}
	wantErr(t, "forced exit of an unknown SKU", e.Stock.ForceExit(ctx, 1, 2, 99), errs.ErrNotFound)
}

func TestStockForceExitKeepsNoVoucher(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 100})

	// A client voucher that looks like anything a forced exit might use is the client's.
	mustOK(t, e.Stock.Edit(ctx, "exit-10", 1, 2, 10, 5))
	mustOK(t, e.Stock.Edit(ctx, "exit-10-halt", 1, 2, 10, 5))
	mustOK(t, e.Stock.ForceExit(ctx, 1, 2, 10))
	if v := skuView(t, e, ref(10)); !v.Revoked || v.HighSeas != (stock.Counters{}) {
		t.Fatalf("after forced exit %+v", v)
	}

	// Revoked already, by an ordinary revoke: a forced exit is then a no-op success.
	submitSKUs(t, e, "sub-11", 1, 2, stock.SKUStock{SKU: 11, Stock: 10})
	if _, err := e.Stock.Revoke(ctx, "rev-11", 1, 2, 11); err != nil {
		t.Fatal(err)
	}
	mustOK(t, e.Stock.ForceExit(ctx, 1, 2, 11))

	// An exited SKU whose submit is rolled back may come back, and exit again.
	submitSKUs(t, e, "sub-12", 1, 2, stock.SKUStock{SKU: 12, Stock: 10})
	mustOK(t, e.Stock.RollbackVoucher(ctx, "sub-12"))
	wantErr(t, "forced exit after its submit was rolled back", e.Stock.ForceExit(ctx, 1, 2, 12), errs.ErrNotFound)
	submitSKUs(t, e, "sub-12-again", 1, 2, stock.SKUStock{SKU: 12, Stock: 10})
	mustOK(t, e.Stock.ForceExit(ctx, 1, 2, 12))
	if v := skuView(t, e, ref(12)); !v.Revoked || v.HighSeas != (stock.Counters{}) {
		t.Fatalf("the resubmitted SKU after its forced exit %+v", v)
	}
}

func TestStockTCCBranchIDsNeverShareARecord(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 10})
	item := []stock.Item{ref(10).item(stock.ScopeHighSeas, 1)}
	// "a:b" + "c" and "a" + "b:c" are different branches that once joined to the same id.
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "a:b", "c", item))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "a", "b:c", item))
	if v := skuView(t, e, ref(10)); v.HighSeas.Reserved != 2 {
		t.Fatalf("two branches reserved %d, want 2", v.HighSeas.Reserved)
	}
	mustOK(t, e.Stock.TCC(ctx, stock.TCCCancel, "a", "b:c", item))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "a:b", "c", item))
	if v := skuView(t, e, ref(10)); v.HighSeas != (stock.Counters{Total: 10, Available: 9, Sold: 1}) {
		t.Fatalf("after one cancel and one confirm %+v", v.HighSeas)
	}
}

// ---------------------------------------------------------------------------

func TestStockMySQLAgreesWithRedisAfterDrain(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	s10, s11, s20 := ref(10), ref(11), skuRef{1, 3, 20}
	refs := []skuRef{s10, s11, s20}
	hs := stock.ScopeHighSeas

	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 100}, stock.SKUStock{SKU: 11, Stock: 40})
	submitSKUs(t, e, "sub-p3", 1, 3, stock.SKUStock{SKU: 20, Stock: 30})
	mustOK(t, e.Stock.Edit(ctx, "edit", 1, 2, 10, 25))
	mustOK(t, e.Stock.Edit(ctx, "edit-down", 1, 2, 11, -5))
	salvageAll(t, e, "salv-7", 7, s10, 30)
	salvageAll(t, e, "salv-8", 8, s10, 10)
	salvageAll(t, e, "salv-8b", 8, s11, 10)
	// Pool 8 of SKU 10 empties again: Redis drops the scope, MySQL must too.
	res, err := e.Stock.MovePool(ctx, false, "rel-8", 8, []stock.Item{s10.item("", 10)})
	mustOK(t, err)
	mustOK(t, res[0].Err)
	mustOK(t, e.Stock.Deduct(ctx, "o-1", []stock.Item{s10.item(hs, 3), s10.item(stock.PoolScope(7), 2), s20.item(hs, 4)}))
	mustOK(t, e.Stock.Deduct(ctx, "o-2", []stock.Item{s11.item(stock.PoolScope(8), 1)}))
	wantErr(t, "deduct over stock", e.Stock.Deduct(ctx, "o-3", []stock.Item{s10.item(hs, 1), s20.item(hs, 99)}), stock.ErrOutOfStock)
	mustOK(t, e.Stock.Return(ctx, "o-2"))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g1", "b1", []stock.Item{s10.item(hs, 5), s20.item(hs, 2)}))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g1", "b1", []stock.Item{s10.item(hs, 5), s20.item(hs, 2)}))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g2", "b1", []stock.Item{s10.item(stock.PoolScope(7), 3)}))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCCancel, "g2", "b1", []stock.Item{s10.item(stock.PoolScope(7), 3)}))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g3", "b1", []stock.Item{s11.item(hs, 2)})) // stays reserved
	w, err := e.Stock.Revoke(ctx, "rev", 1, 2, 11)
	mustOK(t, err)
	// SKU 11: 40 - 5, pool 8's 10 back from the salvage, o-2 returned, g3's 2
	// reserved: the revoke withdraws the other 33.
	if w != 33 {
		t.Fatalf("revoke withdrew %d, want 33", w)
	}
	none := map[string]stock.Counters{}
	wantView(t, e, s10, stock.SKUView{ForSale: true, HighSeas: stock.Counters{Total: 95, Available: 87, Sold: 8},
		Pools: map[string]stock.Counters{"7": {Total: 30, Available: 28, Sold: 2}}})
	wantView(t, e, s11, stock.SKUView{Revoked: true, HighSeas: stock.Counters{Total: 2, Reserved: 2}, Pools: none})
	wantView(t, e, s20, stock.SKUView{ForSale: true, HighSeas: stock.Counters{Total: 30, Available: 24, Sold: 6}, Pools: none})

	stop := e.RunWriter()
	defer stop()
	waitDurable(t, e, refs...)
	for _, r := range refs {
		gaplessChanges(t, e, r)
	}

	// More changes while the writer runs are caught up with too.
	mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g3", "b1", []stock.Item{s11.item(hs, 2)}))
	mustOK(t, e.Stock.Return(ctx, "o-1"))
	wantView(t, e, s10, stock.SKUView{ForSale: true, HighSeas: stock.Counters{Total: 95, Available: 90, Sold: 5},
		Pools: map[string]stock.Counters{"7": {Total: 30, Available: 30}}})
	wantView(t, e, s11, stock.SKUView{Revoked: true, HighSeas: stock.Counters{Total: 2, Sold: 2}, Pools: none})
	wantView(t, e, s20, stock.SKUView{ForSale: true, HighSeas: stock.Counters{Total: 30, Available: 28, Sold: 2}, Pools: none})
	waitDurable(t, e, refs...)
	for _, r := range refs {
		gaplessChanges(t, e, r)
	}
	// The versions in MySQL are Redis's: one per change.
	for _, r := range refs {
		s, err := e.DB.Stock(ctx, r.a, r.p, r.sku)
		mustOK(t, err)
		hot, err := lua.StockSKU(ctx, e.Redis, e.Keys.Stock(r.a, r.p), r.sku)
		mustOK(t, err)
		if s.Version != hot.Version {
			t.Fatalf("SKU %v: MySQL version %d, Redis %d", r, s.Version, hot.Version)
		}
	}
}

// ---------------------------------------------------------------------------

func TestStockReturnRacingItsDeductLeavesNothingTaken(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	s10, p3 := ref(10), skuRef{1, 3, 30}
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 300})
	submitSKUs(t, e, "sub-p3", 1, 3, stock.SKUStock{SKU: 30, Stock: 300})
	salvageAll(t, e, "salv", 7, s10, 100)
	before := stockSnapshot(t, e, s10, p3)

	// Each order spans two products; its return races its deduct.
	const orders = 200
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []error
	var deducted, closed int
	for i := range orders {
		id := fmt.Sprintf("o-%d", i)
		scope := stock.ScopeHighSeas
		if i%2 == 1 {
			scope = stock.PoolScope(7)
		}
		items := []stock.Item{s10.item(scope, 1), p3.item(stock.ScopeHighSeas, 1)}
		wg.Add(2)
		go func() {
			defer wg.Done()
			err := e.Stock.Deduct(ctx, id, items)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				deducted++
			case errors.Is(err, stock.ErrOrderClosed):
				closed++
			default:
				bad = append(bad, fmt.Errorf("deduct %s: %w", id, err))
			}
		}()
		go func() {
			defer wg.Done()
			if err := e.Stock.Return(ctx, id); err != nil {
				mu.Lock()
				bad = append(bad, fmt.Errorf("return %s: %w", id, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, err := range bad {
		t.Error(err)
	}
	t.Logf("%d deducts ran before their return, %d were refused after it", deducted, closed)
	// Whichever ran first, every order ends returned: nothing sold, nothing lost.
	stockUnchanged(t, e, "deducts raced by their returns", before, s10, p3)
	for i := range orders {
		wantErr(t, "deduct replayed after its return", e.Stock.Deduct(ctx, fmt.Sprintf("o-%d", i),
			[]stock.Item{s10.item(stock.ScopeHighSeas, 1), p3.item(stock.ScopeHighSeas, 1)}), stock.ErrOrderClosed)
	}
	stockUnchanged(t, e, "replayed deducts", before, s10, p3)
}

func TestStockRollbackRacingItsOperationLeavesNothingBehind(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 1000})
	const n = 200
	var wg sync.WaitGroup
	var ran, refused atomic.Int64
	for i := range n {
		voucher := fmt.Sprintf("race-%d", i)
		wg.Add(2)
		go func() {
			defer wg.Done()
			switch err := e.Stock.Edit(ctx, voucher, 1, 2, 10, 1); {
			case err == nil:
				ran.Add(1)
			case errors.Is(err, stock.ErrRolledBack):
				refused.Add(1)
			default:
				t.Errorf("edit %s: %v", voucher, err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := e.Stock.RollbackVoucher(ctx, voucher); err != nil {
				t.Errorf("rollback %s: %v", voucher, err)
			}
		}()
	}
	wg.Wait()
	// Whichever came first, each edit ends undone or never run.
	if v := skuView(t, e, ref(10)); v.HighSeas != (stock.Counters{Total: 1000, Available: 1000}) {
		t.Fatalf("after %d edits that ran and %d refused, all rolled back: %+v", ran.Load(), refused.Load(), v.HighSeas)
	}
	if ran.Load()+refused.Load() != n {
		t.Fatalf("%d ran + %d refused, want %d", ran.Load(), refused.Load(), n)
	}
	t.Logf("%d edits ran and were rolled back, %d were refused after their rollback", ran.Load(), refused.Load())
}

func TestStockRefusedDeductReplaysItsRefusal(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 5})
	submitSKUs(t, e, "sub-p3", 1, 3, stock.SKUStock{SKU: 20, Stock: 5})
	one := []stock.Item{ref(10).item(stock.ScopeHighSeas, 6)}
	two := []stock.Item{ref(10).item(stock.ScopeHighSeas, 1), skuRef{1, 3, 20}.item(stock.ScopeHighSeas, 6)}
	wantErr(t, "deduct over available", e.Stock.Deduct(ctx, "o-1", one), stock.ErrOutOfStock)
	wantErr(t, "deduct over available on a second product", e.Stock.Deduct(ctx, "o-2", two), stock.ErrOutOfStock)

	// Enough stock now; the orders still answer what they answered first, and take nothing.
	mustOK(t, e.Stock.Edit(ctx, "more", 1, 2, 10, 10))
	mustOK(t, e.Stock.Edit(ctx, "more-p3", 1, 3, 20, 10))
	before := stockSnapshot(t, e, ref(10), skuRef{1, 3, 20})
	for range 2 {
		wantErr(t, "replayed refusal", e.Stock.Deduct(ctx, "o-1", one), stock.ErrOutOfStock)
		wantErr(t, "replayed refusal on a second product", e.Stock.Deduct(ctx, "o-2", two), stock.ErrOutOfStock)
	}
	stockUnchanged(t, e, "replayed refusals", before, ref(10), skuRef{1, 3, 20})
	// A return of a refused order gives nothing back and closes it.
	mustOK(t, e.Stock.Return(ctx, "o-1"))
	stockUnchanged(t, e, "the return of a refused order", before, ref(10), skuRef{1, 3, 20})
}

// A process that dies between the products of an order's deduct leaves it
// half done; the sweep returns what it took, once the order is stale. An
// order that took everything stays sold.
func TestStockSweepSettlesAnOrderADeadProcessLeftHalfDone(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	p2, p3 := ref(10), skuRef{1, 3, 20}
	submitSKUs(t, e, "sub", 1, 2, stock.SKUStock{SKU: 10, Stock: 10})
	submitSKUs(t, e, "sub-p3", 1, 3, stock.SKUStock{SKU: 20, Stock: 10})
	items := []stock.Item{p2.item(stock.ScopeHighSeas, 2), p3.item(stock.ScopeHighSeas, 3)}
	pending := func() int64 { return e.Redis.ZCard(ctx, e.Keys.StockPending()).Val() }

	// Answered orders take their note back.
	mustOK(t, e.Stock.Deduct(ctx, "whole", items))
	wantErr(t, "an order over stock", e.Stock.Deduct(ctx, "too-much", []stock.Item{p2.item(stock.ScopeHighSeas, 1),
		p3.item(stock.ScopeHighSeas, 99)}), stock.ErrOutOfStock)
	if n := pending(); n != 0 {
		t.Fatalf("%d orders noted pending after their answers", n)
	}

	// The dead process: noted, begun, the first product deducted, then nothing.
	mustOK(t, e.Redis.ZAdd(ctx, e.Keys.StockPending(), redis.Z{Score: float64(e.Clock.Now().UnixMilli()), Member: "half"}).Err())
	if _, err := lua.StockOrder(ctx, e.Redis, e.Keys.StockOrder("half"), "begin", "1:2;1:3", time.Hour); err != nil {
		t.Fatal(err)
	}
	r, err := lua.Stock(ctx, lua.Direct(e.Redis), e.Keys.Stock(1, 2), lua.StockOp{Op: "deduct", ID: "o:half", NowMs: e.Clock.Now().UnixMilli(),
		ActivityID: 1, ProductID: 2, Items: []lua.StockItem{{SKU: 10, Scope: stock.ScopeHighSeas, Qty: 2}}, Across: true})
	if err != nil || r.Code != lua.StockOK {
		t.Fatalf("first product: %+v, %v", r, err)
	}
	// One that died before any product took anything: nothing to give back.
	mustOK(t, e.Redis.ZAdd(ctx, e.Keys.StockPending(), redis.Z{Score: float64(e.Clock.Now().UnixMilli()), Member: "none"}).Err())
	if _, err := lua.StockOrder(ctx, e.Redis, e.Keys.StockOrder("none"), "begin", "1:2;1:3", time.Hour); err != nil {
		t.Fatal(err)
	}
	// And one whose answer was lost after every product took its items.
	mustOK(t, e.Redis.ZAdd(ctx, e.Keys.StockPending(), redis.Z{Score: float64(e.Clock.Now().UnixMilli()), Member: "whole"}).Err())
	held := stockSnapshot(t, e, p2, p3)
	if v := skuView(t, e, p2); v.HighSeas.Sold != 4 {
		t.Fatalf("before the sweep %+v", v.HighSeas)
	}

	if n, err := e.Stock.SweepOrders(ctx); err != nil || n != 0 {
		t.Fatalf("sweep before the orders are stale: %d, %v", n, err)
	}
	stockUnchanged(t, e, "a sweep before the orders are stale", held, p2, p3)
	e.Clock.Add(e.Cfg.StockOrderStale + time.Second)
	if n, err := e.Stock.SweepOrders(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: returned %d, %v; want 1", n, err)
	}
	if v2, v3 := skuView(t, e, p2), skuView(t, e, p3); v2.HighSeas != (stock.Counters{Total: 10, Available: 8, Sold: 2}) ||
		v3.HighSeas != (stock.Counters{Total: 10, Available: 7, Sold: 3}) {
		t.Fatalf("after the sweep: %+v, %+v", v2.HighSeas, v3.HighSeas)
	}
	wantErr(t, "the half order's late replay", e.Stock.Deduct(ctx, "half", []stock.Item{p2.item(stock.ScopeHighSeas, 2),
		p3.item(stock.ScopeHighSeas, 3)}), stock.ErrOrderClosed)
	mustOK(t, e.Stock.Deduct(ctx, "whole", items))
	if n := pending(); n != 0 {
		t.Fatalf("%d orders still noted pending", n)
	}
	// The order that took nothing runs when it is replayed.
	mustOK(t, e.Stock.Deduct(ctx, "none", []stock.Item{p2.item(stock.ScopeHighSeas, 1), p3.item(stock.ScopeHighSeas, 1)}))
	mustOK(t, e.Stock.Return(ctx, "none"))
	after := stockSnapshot(t, e, p2, p3)
	if n, err := e.Stock.SweepOrders(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep: %d, %v", n, err)
	}
	stockUnchanged(t, e, "a second sweep", after, p2, p3)
}
