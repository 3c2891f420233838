package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/engine/errs"
)

// 3 SKUs of 5, 20 buyers: 15 orders succeed, 5 find their SKU sold out.
func tinyFlash() *bench.FlashSale {
	return &bench.FlashSale{SKUs: 3, Stock: 5, Buyers: 20, Concurrency: 8}
}

// Every engine serves the flash sale: exactly S×K orders answered OK, the
// rest OUT_OF_STOCK, every SKU sold out and its counters adding up, in Redis
// and (engine, http) in MySQL after the drain.
func TestFlashSaleEveryEngineSellsExactlyTheStock(t *testing.T) {
	rep := runClean(t, config(t, tinyFlash()))
	for _, run := range rep.Runs {
		if run.Ops != 20 || run.Codes[bench.CodeOK] != 15 || run.Codes[errs.CodeOutOfStock] != 5 || run.Errors != 0 {
			t.Errorf("%s: %d deducts, answers %v, %d errors (%v); want 20: 15 OK, 5 OUT_OF_STOCK",
				run.Engine, run.Ops, run.Codes, run.Errors, run.FirstErr)
		}
		if !run.Audited || !run.Audit.OK {
			t.Errorf("%s: audited %v, %v", run.Engine, run.Audited, run.Audit.Violations)
		}
	}
	if rep.Ratios.EngineVsRaw == nil || rep.Ratios.HTTPVsRaw == nil || rep.Ratios.EngineVsMySQLLock == nil {
		t.Errorf("ratios missing: %+v", rep.Ratios)
	}
	if rep.Scenario["name"] != "flash-sale" || rep.Scenario["skus"] != 3 || rep.Scenario["pick"] != bench.PickRoundRobin {
		t.Errorf("scenario %v", rep.Scenario)
	}
	var table, png bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "deducts/s") || strings.Contains(table.String(), "grabs") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
	if err := rep.WritePNG(&png); err != nil || !bytes.HasPrefix(png.Bytes(), []byte("\x89PNG")) {
		t.Errorf("png: %v", err)
	}
}

// Uneven demand: with fewer buyers than stock every order succeeds and
// stock is left; with random picks (seeded) some SKUs draw more buyers than
// stock and others fewer, so fewer than min(B, S×K) orders succeed — each SKU
// sells min(its buyers, K), which the audit checks — the same on every engine.
func TestFlashSaleUnevenDemand(t *testing.T) {
	for _, c := range []struct {
		name string
		s    *bench.FlashSale
		ok   func(int64) bool
	}{
		{"fewer buyers than stock", &bench.FlashSale{SKUs: 3, Stock: 5, Buyers: 10, Concurrency: 8},
			func(ok int64) bool { return ok == 10 }},
		{"random picks", &bench.FlashSale{SKUs: 4, Stock: 5, Buyers: 20, Concurrency: 8, Pick: bench.PickRandom, Seed: 7},
			func(ok int64) bool { return ok > 0 && ok < 20 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := config(t, c.s)
			cfg.Engines = []string{bench.EngineRaw, bench.EngineEngine, bench.EngineMySQLLock}
			rep := runClean(t, cfg)
			for _, run := range rep.Runs {
				ok := run.Codes[bench.CodeOK]
				if !c.ok(ok) || ok != rep.Runs[0].Codes[bench.CodeOK] || ok+run.Codes[errs.CodeOutOfStock] != int64(c.s.Buyers) {
					t.Errorf("%s: answers %v (%s: %v)", run.Engine, run.Codes, rep.Runs[0].Engine, rep.Runs[0].Codes)
				}
			}
			t.Logf("answers %v", rep.Runs[0].Codes)
		})
	}
}

// The flash-sale audit can fail: each planted violation, in Redis, in
// MySQL's snapshot or in the naive scheme's rows, is caught by its check.
func TestFlashSaleAuditCatchesPlantedViolations(t *testing.T) {
	ctx := context.Background()
	s := tinyFlash()
	cfg := config(t, s)
	cfg.Engines = []string{bench.EngineEngine, bench.EngineMySQLLock}
	runClean(t, cfg)
	x := cfg.DB.SQL()
	a, p, _ := s.Product(bench.EngineEngine)
	sku := cfg.Keys.Stock(a, p).SKU(1)
	la, lp, _ := s.Product(bench.EngineMySQLLock)
	row := fmt.Sprintf("activity_id = %d AND product_id = %d AND sku_id = 1", la, lp)
	redisIncr := func(field string, by int64) func() {
		return func() {
			if err := cfg.Redis.HIncrBy(ctx, sku, field, by).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	both := func(fs ...func()) func() {
		return func() {
			for _, f := range fs {
				f()
			}
		}
	}
	for _, c := range []struct {
		name        string
		engine      string
		plant, undo func()
		want        string
	}{
		{"Redis sold one more than was answered OK (total raised to match)", bench.EngineEngine,
			both(redisIncr("high_seas:s", 1), redisIncr("high_seas:t", 1)),
			both(redisIncr("high_seas:s", -1), redisIncr("high_seas:t", -1)),
			"sold without an OK answer"},
		{"MySQL's snapshot does not add up", bench.EngineEngine,
			execAll(x, fmt.Sprintf("UPDATE stock_scope SET available = available + 1 WHERE activity_id = %d AND product_id = %d AND sku_id = 1 AND scope = 'high_seas'", a, p)),
			execAll(x, fmt.Sprintf("UPDATE stock_scope SET available = available - 1 WHERE activity_id = %d AND product_id = %d AND sku_id = 1 AND scope = 'high_seas'", a, p)),
			"stock does not add up"},
		{"MySQL lost a deduct Redis made", bench.EngineEngine,
			execAll(x, fmt.Sprintf("UPDATE stock_scope SET available = available + 1, sold = sold - 1 WHERE activity_id = %d AND product_id = %d AND sku_id = 1 AND scope = 'high_seas'", a, p)),
			execAll(x, fmt.Sprintf("UPDATE stock_scope SET available = available - 1, sold = sold + 1 WHERE activity_id = %d AND product_id = %d AND sku_id = 1 AND scope = 'high_seas'", a, p)),
			"MySQL is not Redis"},
		{"a buyer turned away while stock was left", bench.EngineMySQLLock,
			execAll(x, "UPDATE bench_flash_sku SET available = available + 1, sold = sold - 1 WHERE "+row,
				"UPDATE bench_flash_order SET qty = 0 WHERE "+row+" ORDER BY order_id LIMIT 1"),
			execAll(x, "UPDATE bench_flash_sku SET available = available - 1, sold = sold + 1 WHERE "+row,
				"UPDATE bench_flash_order SET qty = 1 WHERE "+row+" AND qty = 0"),
			"wrong quantity sold"},
		{"an order row with no stock behind it", bench.EngineMySQLLock,
			execAll(x, "UPDATE bench_flash_order SET qty = 2 WHERE "+row+" ORDER BY order_id LIMIT 1"),
			execAll(x, "UPDATE bench_flash_order SET qty = 1 WHERE "+row+" AND qty = 2"),
			"orders are not sold"},
	} {
		t.Run(c.name, func(t *testing.T) {
			requireCaught(t, c.plant, c.undo, func() (bench.AuditResult, error) { return s.Audit(ctx, c.engine) }, c.want)
		})
	}
}
