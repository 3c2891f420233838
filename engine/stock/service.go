// Package stock is the stock service of activity SKUs: a merchant's
// vouchers (submit, edit, revoke, pools), flash-sale orders (deduct,
// return) and a TCC participant for dtm. Every operation is one Lua script
// over one activity product's keys in Redis (lua/stock_sale.lua,
// stock_tcc.lua, stock_voucher.lua); MySQL is the durable record, kept
// current by the engine's writer from the events the scripts append. No
// request waits for MySQL, but the first after a Redis dataset change
// (which verifies the product from MySQL first) and a return Redis knows
// nothing about.
//
// Build one with New on an engine.Engine, whose Redis, store, writer and
// load locks it shares (grab.New does).
package stock

import (
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Stock errors (defined with their codes in package errs), beside
// errs.ErrInvalidArgument, ErrNotFound, ErrBusy and ErrIdempotencyConflict.
// Exclusion between a product's operations needs no lock: every operation is
// one script over that product's keys (one hash tag), so submit, edit and
// revoke of a product (the LOCK_SUBMIT of the original stock design),
// salvage and deducts never interleave. An order or TCC branch that spans
// products is one call per product, made idempotent and ordered by a
// record per product, so it needs none either.
var (
	ErrOutOfStock       = errs.ErrOutOfStock
	ErrAlreadySubmitted = errs.ErrAlreadySubmitted
	ErrNotForSale       = errs.ErrNotForSale
	ErrOrderClosed      = errs.ErrOrderClosed
	ErrTCCRefused       = errs.ErrTCCRefused
	ErrRolledBack       = errs.ErrRolledBack
)

// ScopeHighSeas is the shared scope; PoolScope(id) is one pool's exclusive stock.
const ScopeHighSeas = "high_seas"

// PoolScope is the scope of pool id.
func PoolScope(pool int64) string { return "pool:" + strconv.FormatInt(pool, 10) }

// MaxItems bounds one call's items.
const MaxItems = 100

// maxQty bounds one quantity, far below where sums could overflow.
const maxQty = 1_000_000_000

var (
	scopeRe = regexp.MustCompile(`^(high_seas|pool:[1-9][0-9]{0,18})$`)
	// Idempotency ids become Redis keys and record fields: a safe alphabet.
	idRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
	// dtm's ids: its gids (22-character short UUIDs, or the caller's own)
	// and branch ids ("01", "0101"…), up to 128 characters.
	tccIDRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)
)

// config is the part of engine.Config the stock service reads.
type config struct {
	// VoucherTTL is how long a voucher's list of touched products (for its
	// rollback) and an order's record across products are kept.
	VoucherTTL time.Duration
	// OrderStale is how long an order across products may go without an
	// answer before SweepOrders settles it.
	OrderStale time.Duration
	// SweepInterval is how often RunSweeper sweeps.
	SweepInterval time.Duration
}

// Service is the stock service. It is safe for concurrent use.
type Service struct {
	rdb   redis.UniversalClient
	run   lua.Runner // deducts: shared pipelines, or a round trip each
	db    *store.DB
	keys  lua.Keys
	cfg   config
	clock engine.Clock
	log   *slog.Logger
	core  *engine.Engine
	m     metrics
}

type metrics struct {
	verified prometheus.Counter
	// exitRetries counts failed revokes of a forced exit: an alert.
	exitRetries prometheus.Counter
	// tccAnomalies counts confirms and cancels that found their branch in a
	// state dtm never leaves it in (a confirm without a try, a cancel after
	// a confirm): answered success so the transaction ends, and logged.
	tccAnomalies prometheus.Counter
}

// New builds the stock service on e's Redis, store, writer and load
// locks. The store must be migrated (store.DB.Migrate). Its background loop
// is RunSweeper, next to the engine's RunWriter.
func New(e *engine.Engine) *Service {
	c := e.Config()
	s := &Service{rdb: e.Redis(), run: lua.Direct(e.Redis()), db: e.DB(), keys: c.Keys, clock: e.Clock(), log: e.Log(), core: e,
		cfg: config{VoucherTTL: c.StockVoucherTTL, OrderStale: c.StockOrderStale, SweepInterval: c.ReconcileInterval}}
	if c.GrabPipelines > 0 {
		s.run = lua.NewScriptPipeline(e.Redis(), c.GrabPipelines, c.GrabBatch)
	}
	s.m = metrics{verified: e.Verified(),
		exitRetries: prometheus.NewCounter(prometheus.CounterOpts{Name: "grab_stock_forced_exit_retries_total",
			Help: "Failed revokes of a forced SKU exit, retried; a rising count needs a person."}),
		tccAnomalies: prometheus.NewCounter(prometheus.CounterOpts{Name: "grab_stock_tcc_anomalies_total",
			Help: "TCC confirms without a try and cancels after a confirm, answered success so dtm ends the transaction."}),
	}
	if reg := e.Metrics(); reg != nil {
		reg.MustRegister(s.m.exitRetries, s.m.tccAnomalies)
	}
	return s
}

func (s *Service) nowMs() int64 { return s.clock.Now().UnixMilli() }

// codeErr maps a stock script's answer to the service's errors: the one
// place where that mapping lives.
func codeErr(c lua.StockCode) error {
	switch c {
	case lua.StockOK:
		return nil
	case lua.StockOutOfStock:
		return ErrOutOfStock
	case lua.StockAlreadySubmitted:
		return ErrAlreadySubmitted
	case lua.StockNotForSale:
		return ErrNotForSale
	case lua.StockNotFound:
		return fmt.Errorf("%w: no such SKU in the activity", errs.ErrNotFound)
	case lua.StockOrderClosed:
		return ErrOrderClosed
	case lua.StockRefused:
		return fmt.Errorf("%w: the branch was cancelled, or confirmed without a try, before this try", ErrTCCRefused)
	case lua.StockNotTried, lua.StockConfirmed:
		return fmt.Errorf("%w: %s", ErrTCCRefused, strings.ToLower(strings.ReplaceAll(c.String(), "_", " ")))
	case lua.StockRolledBack:
		return ErrRolledBack
	case lua.StockConflict:
		return fmt.Errorf("%w: the id was used for another operation or other products", errs.ErrIdempotencyConflict)
	}
	return fmt.Errorf("engine: unknown stock answer %v", c)
}

// answered: err is an operation's answer, not a failure to reach Redis.
func answered(err error) bool {
	for _, e := range []error{ErrOutOfStock, ErrNotForSale, errs.ErrNotFound, ErrOrderClosed, errs.ErrIdempotencyConflict} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func validID(what, id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("%w: %s must be 1 to 64 of A-Z a-z 0-9 _ . : -", errs.ErrInvalidArgument, what)
	}
	return nil
}

func validRef(activityID, productID, sku int64) error {
	if activityID <= 0 || productID <= 0 || sku <= 0 {
		return fmt.Errorf("%w: activity, product and SKU ids must be positive", errs.ErrInvalidArgument)
	}
	return nil
}

func validQty(q int64) error {
	if q <= 0 || q > maxQty {
		return fmt.Errorf("%w: qty must be in 1..%d", errs.ErrInvalidArgument, maxQty)
	}
	return nil
}
