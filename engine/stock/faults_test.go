package stock_test

// Stock across Redis faults (issue 12, failure 3 and the stock half of
// failure 2): a Redis that comes back empty, in the embedded mode too, or
// older than MySQL is verified from MySQL before any stock op runs on it,
// so counters, versions and the records that answer replays are what they
// were; nothing is sold twice and the writer parks nothing. And the writer
// parks a stock change whose version went back, but not a replay.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/grab-engine/grab"

	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// stockFaultEnv is an engine on rdb and db whose metrics the test reads.
func stockFaultEnv(t *testing.T, rdb redis.UniversalClient, keys lua.Keys, db *store.DB) (*enginetest.Env, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	return enginetest.NewEnv(t, rdb, keys, db).Another(func(d *grab.Deps) { d.Metrics = reg }), reg
}

// productRecords is a product's record hash in Redis, without its epoch mark.
func productRecords(t testing.TB, e *enginetest.Env, a, p int64) map[string]string {
	t.Helper()
	h, err := e.Redis.HGetAll(context.Background(), e.Keys.Stock(a, p).Record).Result()
	mustOK(t, err)
	delete(h, "ep")
	return h
}

// durableRecords is a product's records as MySQL has them.
func durableRecords(t testing.TB, e *enginetest.Env, a, p int64) map[string]string {
	t.Helper()
	out := map[string]string{}
	for after := ""; ; {
		page, err := e.DB.StockRecords(context.Background(), a, p, after, 100)
		mustOK(t, err)
		for _, r := range page {
			out[r.Ref] = r.Value
		}
		if len(page) < 100 {
			return out
		}
		after = page[len(page)-1].Ref
	}
}

// waitRecordsDurable waits until MySQL has exactly Redis's records of a product.
func waitRecordsDurable(t *testing.T, e *enginetest.Env, a, p int64) {
	t.Helper()
	enginetest.WaitFor(t, fmt.Sprintf("the records of product %d/%d in MySQL", a, p), func() bool {
		return maps.Equal(productRecords(t, e, a, p), durableRecords(t, e, a, p))
	})
}

func wantDeadLetters(t *testing.T, e *enginetest.Env, reg *prometheus.Registry, want int) {
	t.Helper()
	if n := enginetest.Metric(t, reg, "grab_writer_dead_letters_total"); n != float64(want) {
		t.Fatalf("%v events parked, want %d", n, want)
	}
}

func wantCounters(t *testing.T, e *enginetest.Env, r skuRef, want stock.Counters) {
	t.Helper()
	if got := skuView(t, e, r).HighSeas; got != want {
		t.Fatalf("SKU %v high seas %+v, want %+v", r, got, want)
	}
}

func deduct(r skuRef, qty int64) []stock.Item {
	return []stock.Item{r.item(stock.ScopeHighSeas, qty)}
}

// Failure 3 of issue 12: submit SKU 1 with 10, deduct o1 (3), o2 (1), o3
// (1), drain the writer, restart Redis empty. The SKU answers 10/5/0/5 at
// MySQL's version, a resubmit with the same voucher answers as it first
// did and changes nothing, a replayed o1 deducts nothing, a refused order
// replays its refusal, a TCC branch tried before replays and its late try
// stays refused, what came before settles on the records MySQL gave back
// (a confirm, a return and a voucher rollback whose Redis indexes are
// gone), new changes go on above MySQL's versions, and nothing is parked.
func TestStockRedisRestartedEmptyKeepsCountersVersionsAndReplays(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { rdb.Close() })
	e, reg := stockFaultEnv(t, rdb, lua.NewKeys("grab", 4), storetest.MySQL(t))
	e.StartWriter(t)
	ctx := context.Background()
	s1, s2 := ref(1), ref(2)
	submit := []stock.SKUStock{{SKU: 1, Stock: 10}, {SKU: 2, Stock: 5}}

	mustOK(t, e.Stock.Submit(ctx, "sub", 1, 2, submit))
	wantErr(t, "submit under another voucher", e.Stock.Submit(ctx, "sub-again", 1, 2, submit[:1]), stock.ErrAlreadySubmitted)
	for _, o := range []struct {
		id  string
		qty int64
	}{{"o1", 3}, {"o2", 1}, {"o3", 1}} {
		mustOK(t, e.Stock.Deduct(ctx, o.id, deduct(s1, o.qty)))
	}
	wantErr(t, "deduct of more than there is", e.Stock.Deduct(ctx, "big", deduct(s1, 100)), stock.ErrOutOfStock)
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g1", "b1", deduct(s2, 2)))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCCancel, "g2", "b1", deduct(s2, 1))) // before its try: the late try is refused
	salvageAll(t, e, "sal", 7, s2, 1)
	wantCounters(t, e, s1, stock.Counters{Total: 10, Available: 5, Sold: 5})
	waitDurable(t, e, s1, s2)
	waitRecordsDurable(t, e, 1, 2)
	before := stockSnapshot(t, e, s1, s2)
	records := productRecords(t, e, 1, 2)
	if len(records) != 9 {
		t.Fatalf("records before the restart: %v", records)
	}

	srv.Restart()

	// GET …/skus/1: 10/5/0/5 at MySQL's version 4, not 404.
	wantCounters(t, e, s1, stock.Counters{Total: 10, Available: 5, Sold: 5})
	if got := redisStock(t, e, s1); got != "st=on ver=4 high_seas=10,5,0,5" {
		t.Fatalf("SKU 1 after the restart: %s", got)
	}
	if after := stockSnapshot(t, e, s1, s2); after != before {
		t.Fatalf("stock after the restart\n%s\nbefore\n%s", after, before)
	}
	if got := productRecords(t, e, 1, 2); !maps.Equal(got, records) {
		t.Fatalf("records after the restart %v\nbefore %v", got, records)
	}

	// Replays answer as they first did and change nothing.
	mustOK(t, e.Stock.Submit(ctx, "sub", 1, 2, submit))
	wantErr(t, "replayed submit under another voucher", e.Stock.Submit(ctx, "sub-again", 1, 2, submit[:1]), stock.ErrAlreadySubmitted)
	wantErr(t, "a new voucher's submit", e.Stock.Submit(ctx, "sub-new", 1, 2, submit[:1]), stock.ErrAlreadySubmitted)
	mustOK(t, e.Stock.Deduct(ctx, "o1", deduct(s1, 3)))
	wantErr(t, "replayed refusal", e.Stock.Deduct(ctx, "big", deduct(s1, 100)), stock.ErrOutOfStock)
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g1", "b1", deduct(s2, 2)))
	wantErr(t, "late try after its cancel", e.Stock.TCC(ctx, stock.TCCTry, "g2", "b1", deduct(s2, 1)), stock.ErrTCCRefused)
	stockUnchanged(t, e, "replays after the restart", before, s1, s2)

	// What came before settles on the records MySQL gave back. o2's order
	// record and sal's voucher index were lost with Redis: MySQL names
	// their products.
	mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g1", "b1", deduct(s2, 2)))
	mustOK(t, e.Stock.Return(ctx, "o2"))
	mustOK(t, e.Stock.RollbackVoucher(ctx, "sal"))
	wantCounters(t, e, s1, stock.Counters{Total: 10, Available: 6, Sold: 4})
	if v := skuView(t, e, s2); v.HighSeas != (stock.Counters{Total: 5, Available: 3, Sold: 2}) || len(v.Pools) != 0 {
		t.Fatalf("SKU 2 after confirm and rollback: %+v", v)
	}
	wantErr(t, "deduct of the returned o2", e.Stock.Deduct(ctx, "o2", deduct(s1, 1)), stock.ErrOrderClosed)

	// New changes go on from MySQL's versions: 5 was the return, 6 is o4.
	mustOK(t, e.Stock.Deduct(ctx, "o4", deduct(s1, 2)))
	if got := redisStock(t, e, s1); got != "st=on ver=6 high_seas=10,4,0,6" {
		t.Fatalf("SKU 1 after a new deduct: %s", got)
	}
	waitDurable(t, e, s1, s2)
	waitRecordsDurable(t, e, 1, 2)
	gaplessChanges(t, e, s1)
	gaplessChanges(t, e, s2)
	wantDeadLetters(t, e, reg, 0)
	if n := enginetest.Metric(t, reg, "grab_state_verifications_total"); n != 1 {
		t.Fatalf("%v verifications, want the product's one", n)
	}
}

// The embedded mode's Redis lives in memory: a restart (a new miniredis,
// the same SQLite file) must bring the stock back, replays included.
func TestStockEmbeddedModeKeepsStockAcrossARestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "grab.DB")
	open := func() *store.DB {
		db, err := store.OpenSQLite(ctx, path)
		mustOK(t, err)
		mustOK(t, db.Migrate(ctx))
		return db
	}
	start := func() (*enginetest.Env, *prometheus.Registry, func()) {
		m := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: m.Addr()})
		db := open()
		e, reg := stockFaultEnv(t, c, lua.NewKeys("grab", 4), db)
		stopWriter := e.RunWriter()
		return e, reg, func() { stopWriter(); c.Close(); m.Close(); db.Close() }
	}
	s1 := ref(1)

	e, _, stop := start()
	mustOK(t, e.Stock.Submit(ctx, "sub", 1, 2, []stock.SKUStock{{SKU: 1, Stock: 10}}))
	mustOK(t, e.Stock.Deduct(ctx, "o1", deduct(s1, 3)))
	mustOK(t, e.Stock.Deduct(ctx, "o2", deduct(s1, 2)))
	wantErr(t, "deduct of more than there is", e.Stock.Deduct(ctx, "big", deduct(s1, 100)), stock.ErrOutOfStock)
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g", "b", deduct(s1, 1)))
	waitDurable(t, e, s1)
	waitRecordsDurable(t, e, 1, 2)
	before := stockSnapshot(t, e, s1)
	stop()

	e, reg, stop := start()
	defer stop()
	if after := stockSnapshot(t, e, s1); after != before {
		t.Fatalf("stock after the restart\n%s\nbefore\n%s", after, before)
	}
	mustOK(t, e.Stock.Submit(ctx, "sub", 1, 2, []stock.SKUStock{{SKU: 1, Stock: 10}}))
	mustOK(t, e.Stock.Deduct(ctx, "o1", deduct(s1, 3)))
	wantErr(t, "replayed refusal", e.Stock.Deduct(ctx, "big", deduct(s1, 100)), stock.ErrOutOfStock)
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g", "b", deduct(s1, 1)))
	stockUnchanged(t, e, "replays after the restart", before, s1)
	mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g", "b", deduct(s1, 1)))
	mustOK(t, e.Stock.Return(ctx, "o2"))
	mustOK(t, e.Stock.Deduct(ctx, "o3", deduct(s1, 4)))
	wantCounters(t, e, s1, stock.Counters{Total: 10, Available: 2, Sold: 8})
	waitDurable(t, e, s1)
	waitRecordsDurable(t, e, 1, 2)
	gaplessChanges(t, e, s1)
	wantDeadLetters(t, e, reg, 0)
}

// The stock half of failure 2: Redis comes back older than MySQL (its AOF
// cut back) in the middle of a sale. Every order MySQL held before answers
// as before (a replay, or ORDER_CLOSED once returned), no unit is sold
// twice (each sold unit is one order's marker), Redis and MySQL agree after
// the drain, versions run on without a gap, and nothing is parked.
func TestStockRedisRollbackSellsNothingTwice(t *testing.T) {
	srv := redistest.StartAOFServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	t.Cleanup(func() { rdb.Close() })
	e, reg := stockFaultEnv(t, rdb, lua.NewKeys("grab", 4), storetest.MySQL(t))
	e.StartWriter(t)
	ctx := context.Background()
	s := ref(1)
	const units = 100
	mustOK(t, e.Stock.Submit(ctx, "sub", 1, 2, []stock.SKUStock{{SKU: 1, Stock: units}}))

	// deductAll deducts one unit for each order at once and answers their errors.
	deductAll := func(ids []string) map[string]error {
		var mu sync.Mutex
		var wg sync.WaitGroup
		out := map[string]error{}
		for _, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := e.Stock.Deduct(ctx, id, deduct(s, 1))
				mu.Lock()
				out[id] = err
				mu.Unlock()
			}()
		}
		wg.Wait()
		return out
	}
	orders := func(prefix string, n int) []string {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		}
		return ids
	}
	allOK := func(what string, res map[string]error) {
		for id, err := range res {
			if err != nil {
				t.Fatalf("%s: order %s: %v", what, id, err)
			}
		}
	}

	first, second, inFlight := orders("p1", 30), orders("p2", 30), orders("p3", 10)
	allOK("first sale", deductAll(first))
	waitDurable(t, e, s)
	atCut := redisStock(t, e, s)
	cut := srv.AOFSize()
	allOK("second sale", deductAll(second))
	mustOK(t, e.Stock.Return(ctx, "p1-0"))
	mustOK(t, e.Stock.Return(ctx, "p2-0"))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCTry, "g", "b", deduct(s, 2)))
	mustOK(t, e.Stock.TCC(ctx, stock.TCCConfirm, "g", "b", deduct(s, 2)))
	waitDurable(t, e, s)
	waitRecordsDurable(t, e, 1, 2)
	// MySQL now holds every one of those; the last few may or may not reach it.
	allOK("sale in flight", deductAll(inFlight))

	srv.RollBack(cut)
	if got := redisStock(t, e, s); got != atCut {
		t.Fatalf("Redis after the rollback: %s, want the state at the cut, %s", got, atCut)
	}

	// Everyone replays while new buyers come; and one more return.
	var fresh []string
	for i := range 100 {
		fresh = append(fresh, fmt.Sprintf("n-%d", i))
	}
	var retErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); retErr = e.Stock.Return(ctx, "p2-1") }()
	res := deductAll(append(append(append(append([]string{}, first...), second...), inFlight...), fresh...))
	wg.Wait()
	mustOK(t, retErr)
	for _, id := range append(append([]string{}, first...), second...) {
		want := error(nil)
		switch {
		case id == "p1-0" || id == "p2-0":
			want = stock.ErrOrderClosed
		case id == "p2-1" && res[id] != nil:
			want = stock.ErrOrderClosed // returned while it replayed
		}
		wantErr(t, "replay of "+id+" after the rollback", res[id], want)
	}
	sold := 0
	for _, id := range append(append([]string{}, inFlight...), fresh...) {
		switch err := res[id]; {
		case err == nil:
			sold++
		case errors.Is(err, stock.ErrOutOfStock):
			// An in-flight order Redis lost and MySQL never saw ran again, and
			// found the units gone: the loss window the README states.
		default:
			t.Fatalf("order %s after the rollback: %v", id, err)
		}
	}
	sold += len(first) + len(second) - 2 - 1 // returned: p1-0, p2-0, p2-1
	// A unit the concurrent return gave back after the last of them was
	// refused is there for the next buyer: none is stuck.
	for i := 0; ; i++ {
		err := e.Stock.Deduct(ctx, fmt.Sprintf("late-%d", i), deduct(s, 1))
		if errors.Is(err, stock.ErrOutOfStock) {
			break
		}
		mustOK(t, err)
		sold++
	}

	// Each sold unit is one order's marker, plus the confirmed branch's 2.
	waitDurable(t, e, s)
	waitRecordsDurable(t, e, 1, 2)
	held := 0
	for ref, rec := range productRecords(t, e, 1, 2) {
		if strings.HasPrefix(ref, "o:") && strings.HasPrefix(rec, "d#") {
			held++
		}
	}
	v := skuView(t, e, s)
	if v.HighSeas.Sold != int64(held)+2 || held != sold || v.HighSeas.Total != units {
		t.Fatalf("sold %+v; %d orders hold a unit, %d answered so, +2 confirmed", v.HighSeas, held, sold)
	}
	if v.HighSeas.Available != 0 {
		t.Fatalf("stock left while buyers were turned away: %+v", v.HighSeas)
	}
	gaplessChanges(t, e, s)
	wantDeadLetters(t, e, reg, 0)
	if n := enginetest.Metric(t, reg, "grab_state_verifications_total"); n != 1 {
		t.Fatalf("%v verifications, want the product's one", n)
	}
	t.Logf("after the rollback: %+v, %d orders hold a unit", v.HighSeas, held)
}

// The writer parks a units change whose version MySQL holds for another
// change (failure 3's silent drop), with its metric, and applies an exact
// replay of one it holds without parking it.
func TestStockWriterParksAVersionThatGoesBack(t *testing.T) {
	rdb, keys := redistest.Real(t, 4)
	e, reg := stockFaultEnv(t, rdb, keys, storetest.MySQL(t))
	e.StartWriter(t)
	ctx := context.Background()
	s := ref(1)
	mustOK(t, e.Stock.Submit(ctx, "sub", 1, 2, []stock.SKUStock{{SKU: 1, Stock: 10}}))
	mustOK(t, e.Stock.Deduct(ctx, "o1", deduct(s, 3)))
	waitDurable(t, e, s)
	stream := keys.Events(keys.StockShard(1, 2))
	entries, err := rdb.XRange(ctx, stream, "-", "+").Result()
	mustOK(t, err)
	var ded map[string]any
	for _, m := range entries {
		if m.Values["t"] == "stock" && m.Values["op"] == "deduct" {
			ded = m.Values
		}
	}
	if ded == nil {
		t.Fatalf("no deduct event in %v", entries)
	}
	before := mysqlStock(t, e, s)

	// An exact replay (a redelivery, a stream that came back older).
	mustOK(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: ded}).Err())
	// Version 2 again, for another order: Redis restarted without it.
	other := maps.Clone(ded)
	other["ref"], other["snap"] = "o:other", "high_seas=10,9,0,1"
	mustOK(t, rdb.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: other}).Err())

	dead := keys.DeadLetters(keys.StockShard(1, 2))
	enginetest.WaitFor(t, "the contradiction parked", func() bool { return rdb.XLen(ctx, dead).Val() >= 1 })
	parked, err := rdb.XRange(ctx, dead, "-", "+").Result()
	mustOK(t, err)
	if len(parked) != 1 || parked[0].Values["f_ref"] != "o:other" {
		t.Fatalf("parked %v, want only the o:other change", parked)
	}
	wantDeadLetters(t, e, reg, 1)
	if after := mysqlStock(t, e, s); after != before {
		t.Fatalf("MySQL moved: %s -> %s", before, after)
	}
	changes, err := e.DB.StockChanges(ctx, 1, 2, 1)
	mustOK(t, err)
	if len(changes) != 2 || changes[1].Ref != "o:o1" {
		t.Fatalf("change log %+v", changes)
	}
}
