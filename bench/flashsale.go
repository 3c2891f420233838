package bench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/grab-engine/grab"

	"github.com/jmoiron/sqlx"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// How flash-sale buyers pick their SKU.
const (
	PickRoundRobin = "round-robin" // order i takes SKU i mod S
	PickRandom     = "random"      // uniformly, from a seeded generator
)

// FlashSale is S SKUs of one activity product with K stock each, and B
// buyers each placing one order of qty 1 on a SKU picked round-robin or at
// random (seeded), from C concurrent clients: the first seconds of a flash
// sale, every client crowding the same product. With B ≥ S×K exactly S×K
// orders succeed and the rest are answered OUT_OF_STOCK.
//
// Its engines deduct stock rather than grab packets: raw is a deduct-shaped
// probe script (lua.FlashProbe), engine is stock.Service.Deduct as grabd's
// handler calls it (a one-product order through the shared pipelines),
// http is POST /v1/stock/deduct, mysql-lock a transaction that locks the
// SKU's row in a scratch table. Each engine run gets an activity of its own.
//
// A FlashSale keeps each engine's last run for Audit; Run prepares one
// engine at a time, and it is not for concurrent use.
type FlashSale struct {
	SKUs        int    // S, at most stock.MaxItems (one submit)
	Stock       int    // K per SKU
	Buyers      int    // B, one order each
	Concurrency int    // C
	Pick        string // PickRoundRobin ("" too) or PickRandom
	Seed        uint64 // of PickRandom
	// ActivityBase offsets activity ids.
	ActivityBase int64

	runs map[string]*flashRun // the last run per engine
}

// DefaultFlashSale finishes every engine within seconds on a 2-core machine
// (mysql-lock in about ten).
func DefaultFlashSale() *FlashSale {
	return &FlashSale{SKUs: 10, Stock: 1000, Buyers: 20000, Concurrency: 64, Pick: PickRoundRobin, Seed: 1}
}

// flashProduct is the product id of every run; activities tell runs apart.
const flashProduct = 1

// Name implements Scenario.
func (*FlashSale) Name() string { return "flash-sale" }

// Configure implements Scenario: the engine needs nothing the harness does
// not give it.
func (*FlashSale) Configure(*grab.Deps, *engine.Config) {}

// Params implements Scenario.
func (s *FlashSale) Params() map[string]any {
	p := map[string]any{"skus": s.SKUs, "stock": s.Stock, "buyers": s.Buyers, "concurrency": s.Concurrency, "pick": s.pick()}
	if s.pick() == PickRandom {
		p["seed"] = s.Seed
	}
	return p
}

func (s *FlashSale) pick() string {
	if s.Pick == "" {
		return PickRoundRobin
	}
	return s.Pick
}

// Validate reports settings the stock API would refuse.
func (s *FlashSale) Validate() error {
	switch {
	case s.SKUs <= 0 || s.Stock <= 0 || s.Buyers <= 0 || s.Concurrency <= 0:
		return fmt.Errorf("flash-sale: skus, stock, buyers and concurrency must be positive")
	case s.SKUs > stock.MaxItems:
		return fmt.Errorf("flash-sale: at most %d SKUs (one submit)", stock.MaxItems)
	case s.Stock > 1_000_000_000:
		return fmt.Errorf("flash-sale: at most 1000000000 stock a SKU")
	case s.pick() != PickRoundRobin && s.pick() != PickRandom:
		return fmt.Errorf("flash-sale: pick %q (have %s, %s)", s.Pick, PickRoundRobin, PickRandom)
	}
	return nil
}

// flashRun is one engine's flash sale: where its stock is, which SKU each
// order takes, and what the orders were answered.
type flashRun struct {
	s                 *FlashSale
	env               *Env
	engine            string
	activity, product int64
	ops               int64
	picks             []int64              // SKU of order i; SKUs are 1..S
	buyers            []int64              // orders per SKU (index SKU-1)
	ok                []atomic.Int64       // OK answers per SKU
	probe             []lua.FlashProbeKeys // raw: each SKU's keys (index SKU-1)
	load              Load                 // set by Audit
}

// Prepare implements Scenario: the SKUs' stock for the engine (a submit
// through the engine, the probe's hashes, or rows of the scratch table).
func (s *FlashSale) Prepare(ctx context.Context, env *Env, engineName string) (Trial, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if _, external := env.Setup.(HTTPSetup); external {
		return nil, errors.New("flash-sale: cannot set up the stock of an external grabd (-url); it runs grabd in-process")
	}
	r := &flashRun{s: s, env: env, engine: engineName, activity: s.ActivityBase + prepared.Add(1), product: flashProduct,
		ops: int64(s.Buyers), picks: make([]int64, s.Buyers), buyers: make([]int64, s.SKUs), ok: make([]atomic.Int64, s.SKUs)}
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9E3779B97F4A7C15))
	for i := range r.picks {
		k := i % s.SKUs
		if s.pick() == PickRandom {
			k = rng.IntN(s.SKUs)
		}
		r.picks[i] = int64(k) + 1
		r.buyers[k]++
	}
	var err error
	switch engineName {
	case EngineRaw:
		err = r.loadProbe(ctx)
	case EngineMySQLLock:
		err = r.createRows(ctx)
	default:
		skus := make([]stock.SKUStock, s.SKUs)
		for i := range skus {
			skus[i] = stock.SKUStock{SKU: int64(i) + 1, Stock: int64(s.Stock)}
		}
		err = env.Engine.Stock.Submit(ctx, fmt.Sprintf("fs-%d", r.activity), r.activity, r.product, skus)
	}
	if err != nil {
		return nil, fmt.Errorf("stock: %w", err)
	}
	if s.runs == nil {
		s.runs = map[string]*flashRun{}
	}
	s.runs[engineName] = r
	return r, nil
}

// Plan implements Trial: buyer i+1 orders one of the SKU picked for it.
func (r *flashRun) Plan() Plan {
	return Plan{Ops: r.ops, Op: func(i int64) Op { return Op{Target: r.picks[i], User: i + 1} },
		Concurrency: r.s.Concurrency, Unit: "deducts"}
}

// Report implements Trial: the params say it all.
func (*flashRun) Report(context.Context) map[string]any { return nil }

// Settle implements Trial: a deduct leaves nothing to finish.
func (*flashRun) Settle(context.Context) (int, error) { return 0, ErrNothingToSettle }

// Product is where the last run on engineName put its stock: SKUs 1..S of
// this activity product.
func (s *FlashSale) Product(engineName string) (activityID, productID int64, ok bool) {
	r := s.runs[engineName]
	if r == nil {
		return 0, 0, false
	}
	return r.activity, r.product, true
}

// Audit checks the last run on engineName again, as the harness did after
// it, against the answers it had then (for tests that plant violations).
func (s *FlashSale) Audit(ctx context.Context, engineName string) (AuditResult, error) {
	r := s.runs[engineName]
	if r == nil {
		return AuditResult{}, fmt.Errorf("flash-sale: no run on %s", engineName)
	}
	vs, err := r.audit(ctx)
	if err != nil {
		return AuditResult{}, err
	}
	return AuditResult{OK: len(vs) == 0, Violations: append([]string{}, vs...)}, nil
}

// order is buyer n's order id, unique across runs.
func (r *flashRun) order(n int64) string {
	b := make([]byte, 0, 32)
	b = append(b, "fs-"...)
	b = strconv.AppendInt(b, r.activity, 10)
	b = append(b, '-')
	return string(strconv.AppendInt(b, n, 10))
}

// Grabber implements Trial: the deducting engines, each counting the OK
// answers per SKU for the audit.
func (r *flashRun) Grabber(api HTTPSetup) (Grabber, error) {
	var g Grabber
	switch r.engine {
	case EngineRaw:
		g = flashRaw{rdb: r.env.Redis, r: r}
	case EngineEngine:
		g = flashEngine{e: r.env.Engine.Stock, r: r}
	case EngineHTTP:
		g = flashHTTP{api: api, r: r}
	case EngineMySQLLock:
		g = flashLock{db: r.env.DB.SQL(), r: r}
	default:
		return nil, fmt.Errorf("flash-sale: no engine %q", r.engine)
	}
	return tally{Grabber: g, ok: r.ok}, nil
}

// tally counts the OK answers per SKU, for the audit.
type tally struct {
	Grabber
	ok []atomic.Int64
}

func (t tally) Grab(ctx context.Context, op Op) (string, error) {
	code, err := t.Grabber.Grab(ctx, op)
	if code == CodeOK && err == nil {
		t.ok[op.Target-1].Add(1)
	}
	return code, err
}

// --- raw: the probe script ---------------------------------------------

// loadProbe opens each SKU's probe (lua.OpenFlashProbe) with K available;
// an interrupted run leaves nothing for long.
func (r *flashRun) loadProbe(ctx context.Context) error {
	r.probe = make([]lua.FlashProbeKeys, r.s.SKUs)
	pipe := r.env.Redis.Pipeline()
	for i := range r.probe {
		r.probe[i] = r.env.Keys.FlashProbe(r.activity, int64(i)+1)
		lua.OpenFlashProbe(ctx, pipe, r.probe[i], int64(r.s.Stock), time.Hour)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// flashRaw is the raw engine of flash-sale: the smallest deduct-shaped
// script (lua/flashsale_probe.lua) with no order record and no business
// rules, what Redis itself can do for a deduct. Each call is a round trip
// of its own, as the group-storm probe's are; the engine shares round trips.
type flashRaw struct {
	rdb redis.Scripter
	r   *flashRun
}

func (flashRaw) Name() string { return EngineRaw }

func (g flashRaw) Grab(ctx context.Context, op Op) (string, error) {
	ok, err := lua.FlashProbe(ctx, g.rdb, g.r.probe[op.Target-1], g.r.order(op.User), 1, time.Now().UnixMilli())
	switch {
	case err != nil:
		return errs.CodeInternal, err
	case ok:
		return CodeOK, nil
	}
	return errs.CodeOutOfStock, nil
}

// --- engine: stock.Service.Deduct in-process ----------------------------

type flashEngine struct {
	e *stock.Service
	r *flashRun
}

func (flashEngine) Name() string { return EngineEngine }

func (g flashEngine) Grab(ctx context.Context, op Op) (string, error) {
	return engineAnswer(g.e.Deduct(ctx, g.r.order(op.User), []stock.Item{{Scope: stock.ScopeHighSeas,
		ActivityID: g.r.activity, ProductID: g.r.product, SKU: op.Target, Qty: 1}}))
}

// --- http: POST /v1/stock/deduct ------------------------------------------

type flashHTTP struct {
	api HTTPSetup
	r   *flashRun
}

type deductItem struct {
	Scope      string `json:"scope"`
	ActivityID int64  `json:"activity_id"`
	ProductID  int64  `json:"product_id"`
	SKU        int64  `json:"sku_id"`
	Qty        int64  `json:"qty"`
}

type deductRequest struct {
	OrderID string       `json:"order_id"`
	Items   []deductItem `json:"items"`
}

func (flashHTTP) Name() string { return EngineHTTP }

// Grab deducts through grabd's stock API with its admin token: 200 is OK,
// an error body's code (409 OUT_OF_STOCK) the answer.
func (g flashHTTP) Grab(ctx context.Context, op Op) (string, error) {
	var code string
	err := g.api.do(ctx, http.MethodPost, "/v1/stock/deduct", g.api.admin(), deductRequest{OrderID: g.r.order(op.User),
		Items: []deductItem{{Scope: stock.ScopeHighSeas, ActivityID: g.r.activity, ProductID: g.r.product, SKU: op.Target, Qty: 1}}},
		nil, &code)
	return answer(code, err)
}

// --- mysql-lock: SELECT … FOR UPDATE on the SKU's row -----------------------

// The naive scheme's tables, created in the bench's database by the
// scenario: a SKU's counters in one row, and the orders.
var flashTables = []string{
	`CREATE TABLE IF NOT EXISTS bench_flash_sku (
	  activity_id BIGINT NOT NULL,
	  product_id  BIGINT NOT NULL,
	  sku_id      BIGINT NOT NULL,
	  total       BIGINT NOT NULL,
	  available   BIGINT NOT NULL,
	  reserved    BIGINT NOT NULL,
	  sold        BIGINT NOT NULL,
	  PRIMARY KEY (activity_id, product_id, sku_id)
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS bench_flash_order (
	  order_id    VARCHAR(64) NOT NULL PRIMARY KEY,
	  activity_id BIGINT NOT NULL,
	  product_id  BIGINT NOT NULL,
	  sku_id      BIGINT NOT NULL,
	  qty         BIGINT NOT NULL,
	  created_at  DATETIME(3) NOT NULL,
	  KEY ix_bench_flash_order_sku (activity_id, product_id, sku_id)
	) ENGINE=InnoDB`,
}

func (r *flashRun) createRows(ctx context.Context) error {
	x := r.env.DB.SQL()
	for _, q := range flashTables {
		if _, err := x.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	for sku := int64(1); sku <= int64(r.s.SKUs); sku++ {
		if _, err := x.ExecContext(ctx, `INSERT INTO bench_flash_sku (activity_id, product_id, sku_id, total, available, reserved, sold)
			VALUES (?, ?, ?, ?, ?, 0, 0)`, r.activity, r.product, sku, r.s.Stock, r.s.Stock); err != nil {
			return err
		}
	}
	return nil
}

// flashLock is the naive scheme: one transaction per order that locks the
// SKU's row (SELECT … FOR UPDATE), checks what is available, moves the qty
// to sold, records the order and commits. Every order of a SKU queues on
// that row lock.
type flashLock struct {
	db *sqlx.DB
	r  *flashRun
}

func (flashLock) Name() string { return EngineMySQLLock }

func (g flashLock) Grab(ctx context.Context, op Op) (string, error) {
	return retryLockRace(func() (string, error) { return g.try(ctx, op) })
}

func (g flashLock) try(ctx context.Context, op Op) (string, error) {
	tx, err := g.db.BeginTxx(ctx, nil)
	if err != nil {
		return errs.CodeInternal, err
	}
	defer tx.Rollback()
	const qty = 1
	var available int64
	err = tx.GetContext(ctx, &available, `SELECT available FROM bench_flash_sku
		WHERE activity_id = ? AND product_id = ? AND sku_id = ? FOR UPDATE`, g.r.activity, g.r.product, op.Target)
	if errors.Is(err, sql.ErrNoRows) {
		return errs.CodeNotFound, nil
	}
	if err != nil {
		return errs.CodeInternal, err
	}
	if available < qty {
		return errs.CodeOutOfStock, nil
	}
	if _, err := tx.ExecContext(ctx, `UPDATE bench_flash_sku SET available = available - ?, sold = sold + ?
		WHERE activity_id = ? AND product_id = ? AND sku_id = ?`, qty, qty, g.r.activity, g.r.product, op.Target); err != nil {
		return errs.CodeInternal, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO bench_flash_order (order_id, activity_id, product_id, sku_id, qty, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, g.r.order(op.User), g.r.activity, g.r.product, op.Target, qty, time.Now().UTC()); err != nil {
		return errs.CodeInternal, err
	}
	if err := tx.Commit(); err != nil {
		return errs.CodeInternal, err
	}
	return CodeOK, nil
}

// --- drain and audit ---------------------------------------------------------

// Drain implements Trial: MySQL's snapshot of every SKU has sold what Redis
// has.
func (r *flashRun) Drain(ctx context.Context, accepted int64, timeout time.Duration) error {
	pending := map[int64]int64{} // SKU -> Redis sold
	for sku := int64(1); sku <= int64(r.s.SKUs); sku++ {
		v, err := r.env.Engine.Stock.SKU(ctx, r.activity, r.product, sku)
		if err != nil {
			return err
		}
		pending[sku] = v.HighSeas.Sold
	}
	err := poll(ctx, timeout, func() (bool, error) {
		for sku, sold := range pending {
			m, err := r.env.DB.Stock(ctx, r.activity, r.product, sku)
			if err != nil && !errors.Is(err, store.ErrNotFound) { // not yet: the submit is on its way too
				return false, err
			}
			if err == nil && highSeas(m.Scopes).Sold == sold {
				delete(pending, sku)
			}
		}
		return len(pending) == 0, nil
	})
	if errors.Is(err, errTimedOut) {
		return fmt.Errorf("%d of %d SKUs not in MySQL as Redis has them after %v (%d deducts answered OK)",
			len(pending), r.s.SKUs, timeout, accepted)
	}
	return err
}

// Audit implements Trial: it keeps the run's answers for FlashSale.Audit
// and checks the run's stock against them.
func (r *flashRun) Audit(ctx context.Context, load Load) ([]string, bool, error) {
	r.load = load
	vs, err := r.audit(ctx)
	return vs, true, err
}

// audit checks the run's stock against its answers:
//
//   - each SKU's counters in the engine's own record (Redis for raw, engine
//     and http; the locked rows for mysql-lock) hold total = K, nothing
//     negative or reserved, available + reserved + sold = total;
//   - no order answered OK is missing: sold ≥ the SKU's OK answers;
//   - when every order was answered OK or OUT_OF_STOCK: each SKU sold
//     exactly its OK answers and min(its buyers, K) — nothing oversold,
//     nothing left while a buyer was turned away — so Σ OK = Σ min(buyers
//     of a SKU, K), which is min(B, S×K) with round-robin picks;
//   - engine and http: MySQL's snapshot holds the same invariant and sold
//     what Redis sold; mysql-lock: the order rows add up to sold.
func (r *flashRun) audit(ctx context.Context) ([]string, error) {
	a := &auditor{counts: map[string]int{}}
	k := int64(r.s.Stock)
	okAll, oos := r.load.Codes[CodeOK], r.load.Codes[errs.CodeOutOfStock]
	exact := r.load.Ops == r.ops && okAll+oos == r.load.Ops
	var want int64
	for i := range r.s.SKUs {
		sku := int64(i) + 1
		ok, should := r.ok[i].Load(), min(r.buyers[i], k)
		want += should
		c, err := r.counters(ctx, sku)
		if err != nil {
			return nil, err
		}
		where := "SKU " + strconv.FormatInt(sku, 10)
		if r.engine != EngineRaw && r.engine != EngineMySQLLock {
			where = "Redis: " + where
		}
		checkStock(a, where, c, k)
		switch {
		case c.Sold < ok:
			a.add("answered OK but not sold", "%s sold %d; %d orders of it were answered OK", where, c.Sold, ok)
		case exact && c.Sold != ok:
			a.add("sold without an OK answer", "%s sold %d; %d orders of it were answered OK", where, c.Sold, ok)
		}
		if exact && c.Sold != should {
			a.add("wrong quantity sold", "%s sold %d of %d stock to %d buyers; want %d", where, c.Sold, k, r.buyers[i], should)
		}
		switch r.engine {
		case EngineEngine, EngineHTTP:
			m, err := r.env.DB.Stock(ctx, r.activity, r.product, sku)
			if err != nil {
				a.add("not durable", "SKU %d: MySQL: %v", sku, err)
				continue
			}
			hs := highSeas(m.Scopes)
			checkStock(a, "MySQL: SKU "+strconv.FormatInt(sku, 10), stock.Counters{Total: hs.Total,
				Available: hs.Available, Reserved: hs.Reserved, Sold: hs.Sold}, k)
			if hs.Sold != c.Sold {
				a.add("MySQL is not Redis", "SKU %d: MySQL sold %d; Redis sold %d", sku, hs.Sold, c.Sold)
			}
		case EngineMySQLLock:
			var orders int64
			if err := r.env.DB.SQL().GetContext(ctx, &orders, `SELECT COALESCE(SUM(qty), 0) FROM bench_flash_order
				WHERE activity_id = ? AND product_id = ? AND sku_id = ?`, r.activity, r.product, sku); err != nil {
				return nil, err
			}
			if orders != c.Sold {
				a.add("orders are not sold", "SKU %d sold %d; its orders hold %d", sku, c.Sold, orders)
			}
		}
	}
	capacity := int64(r.s.SKUs) * k
	switch {
	case okAll > capacity:
		a.add("oversold", "%d orders answered OK for %d stock", okAll, capacity)
	case exact && okAll != want:
		a.add("wrong number of OK answers", "%d orders answered OK; want %d (Σ min(buyers of a SKU, K); min(B, S×K) = %d)",
			okAll, want, min(int64(r.s.Buyers), capacity))
	}
	return a.violations, nil
}

// counters are a SKU's counters in the engine's own record.
func (r *flashRun) counters(ctx context.Context, sku int64) (stock.Counters, error) {
	switch r.engine {
	case EngineRaw:
		c, err := lua.ReadFlashProbe(ctx, r.env.Redis, r.probe[sku-1])
		return stock.Counters(c), err
	case EngineMySQLLock:
		var c struct {
			Total     int64 `db:"total"`
			Available int64 `db:"available"`
			Reserved  int64 `db:"reserved"`
			Sold      int64 `db:"sold"`
		}
		err := r.env.DB.SQL().GetContext(ctx, &c, `SELECT total, available, reserved, sold FROM bench_flash_sku
			WHERE activity_id = ? AND product_id = ? AND sku_id = ?`, r.activity, r.product, sku)
		return stock.Counters{Total: c.Total, Available: c.Available, Reserved: c.Reserved, Sold: c.Sold}, err
	}
	v, err := r.env.Engine.Stock.SKU(ctx, r.activity, r.product, sku)
	return v.HighSeas, err
}

// checkStock checks one scope's counters: total K, none negative, nothing
// reserved (no order reserves here), available + reserved + sold = total.
func checkStock(a *auditor, where string, c stock.Counters, k int64) {
	switch {
	case c.Available < 0 || c.Reserved < 0 || c.Sold < 0:
		a.add("negative stock", "%s: available %d, reserved %d, sold %d", where, c.Available, c.Reserved, c.Sold)
	case c.Available+c.Reserved+c.Sold != c.Total:
		a.add("stock does not add up", "%s: available %d + reserved %d + sold %d ≠ total %d", where, c.Available, c.Reserved, c.Sold, c.Total)
	}
	if c.Total != k {
		a.add("total changed", "%s: total %d; the sale put in %d", where, c.Total, k)
	}
	if c.Reserved != 0 {
		a.add("stock left reserved", "%s: %d reserved", where, c.Reserved)
	}
}

// highSeas is the high-seas scope of a MySQL snapshot (zero when absent).
func highSeas(scopes []event.StockScope) event.StockScope {
	for _, sc := range scopes {
		if sc.Scope == stock.ScopeHighSeas {
			return sc
		}
	}
	return event.StockScope{}
}
