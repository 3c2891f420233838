package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Stock errors. Exclusion between a product's operations needs no lock:
// every operation is one stock.lua call over that product's keys (one hash
// tag), so submit, edit and revoke of a product (the seed's LOCK_SUBMIT),
// salvage and deducts never interleave. An order or TCC branch that spans
// products is one call per product, made idempotent and ordered by a record
// per product (see stock.lua), so it needs none either.
var (
	ErrOutOfStock       = errors.New("engine: out of stock")
	ErrAlreadySubmitted = errors.New("engine: SKU already submitted")
	ErrNotForSale       = errors.New("engine: not for sale")
	ErrOrderClosed      = errors.New("engine: order already returned or cancelled")
	// ErrTCCRefused: a try after its cancel (no hanging), a confirm of a
	// branch never tried or already cancelled, a cancel after a confirm.
	ErrTCCRefused = errors.New("engine: TCC branch refused")
	// ErrRolledBack: the voucher was rolled back; its operation cannot run now.
	ErrRolledBack = errors.New("engine: voucher rolled back")
)

// Scope names: the shared high seas, or one pool's exclusive stock.
const ScopeHighSeas = "high_seas"

// PoolScope is the scope of pool id.
func PoolScope(pool int64) string { return "pool:" + strconv.FormatInt(pool, 10) }

var (
	scopeRe = regexp.MustCompile(`^(high_seas|pool:[1-9][0-9]{0,17})$`)
	// Idempotency ids become Redis keys and record fields: a safe alphabet.
	idRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
)

// MaxStockItems bounds one call's items.
const MaxStockItems = 100

// maxQty bounds one quantity, far below where sums could overflow.
const maxQty = 1_000_000_000

// SKUStock is one SKU of a submit, with its activity stock.
type SKUStock struct {
	SKU   int64
	Stock int64
}

// StockItem is one line of an order, a TCC branch or a pool batch.
type StockItem struct {
	Scope      string // ScopeHighSeas or PoolScope(id); pool batches set it from the pool
	ActivityID int64
	ProductID  int64
	SKU        int64
	Qty        int64
}

// ItemResult is one item's outcome in a batch that allows partial success.
type ItemResult struct {
	SKU int64
	Err error // nil when the item succeeded
}

// Counters of one scope. Available + Reserved + Sold = Total.
type Counters struct {
	Total, Available, Reserved, Sold int64
}

// SKUView is a SKU's stock as Redis has it now.
type SKUView struct {
	ForSale  bool
	Revoked  bool
	HighSeas Counters
	Pools    map[string]Counters // by pool id
}

func validID(what, id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("%w: %s must be 1 to 64 of A-Z a-z 0-9 _ . : -", ErrInvalidArgument, what)
	}
	return nil
}

func validRef(activityID, productID, sku int64) error {
	if activityID <= 0 || productID <= 0 || sku <= 0 {
		return fmt.Errorf("%w: activity, product and SKU ids must be positive", ErrInvalidArgument)
	}
	return nil
}

func validQty(q int64) error {
	if q <= 0 || q > maxQty {
		return fmt.Errorf("%w: qty must be in 1..%d", ErrInvalidArgument, maxQty)
	}
	return nil
}

// stockCode maps a script's answer to the engine's errors.
func stockCode(code string) error {
	switch code {
	case "":
		return nil
	case "OUT_OF_STOCK":
		return ErrOutOfStock
	case "ALREADY_SUBMITTED":
		return ErrAlreadySubmitted
	case "NOT_FOR_SALE":
		return ErrNotForSale
	case "NOT_FOUND":
		return fmt.Errorf("%w: no such SKU in the activity", ErrNotFound)
	case "ORDER_CLOSED":
		return ErrOrderClosed
	case "REFUSED", "NOT_TRIED", "CONFIRMED":
		return fmt.Errorf("%w: %s", ErrTCCRefused, strings.ToLower(strings.ReplaceAll(code, "_", " ")))
	case "ROLLED_BACK":
		return ErrRolledBack
	case "CONFLICT":
		return fmt.Errorf("%w: the voucher was used for another operation", ErrIdempotencyConflict)
	}
	return fmt.Errorf("engine: unknown stock answer %q", code)
}

// stock runs one op of stock.lua. A product not verified under the
// current dataset epoch (Redis restarted, lost it, came back older, or never
// had it) answers VERIFY without running: it is verified from MySQL and the
// op runs again.
func (e *Engine) stock(ctx context.Context, op lua.StockOp) (r lua.StockReply, err error) {
	k := e.keys.Stock(op.ActivityID, op.ProductID)
	err = e.onVerified(ctx, op.ActivityID, op.ProductID, func() (bool, error) {
		op.NowMs = e.nowMs()
		r, err = lua.Stock(ctx, e.rdb, k, op)
		return err == nil && r.Code == lua.StockVerify, err
	})
	return r, err
}

// onVerified runs a call on a product's Redis state; when it reports that
// the product must first be verified from MySQL (it answered VERIFY), it
// verifies it and runs the call again.
func (e *Engine) onVerified(ctx context.Context, activityID, productID int64, call func() (verify bool, err error)) error {
	for attempt := 0; ; attempt++ {
		verify, err := call()
		if err != nil || !verify {
			return err
		}
		if attempt == maxVerifies {
			return fmt.Errorf("%w: stock of product %d/%d kept moving while it was verified", ErrBusy, activityID, productID)
		}
		if err := e.verifyStock(ctx, activityID, productID); err != nil {
			return err
		}
	}
}

// maxVerifies bounds the verifications one call waits for: more means the
// Redis dataset keeps changing under it (restarting, failing over).
const maxVerifies = 3

// Stock across Redis faults. Redis may restart empty (the embedded mode's
// miniredis always does), or come back older than MySQL (AOF everysec after
// an OS crash, a failover to a lagging replica, a restore). Every write of a
// product's records reaches MySQL through the stream (stock_record), as
// every SKU change does (stock_sku, stock_change), and stock.lua runs only
// on a product verified under the shard's current dataset epoch; the first
// op (or read) after a change verifies it from MySQL. So counters, versions
// and every replay's answer come back, and MySQL's versions are never
// reused for other changes (the writer parks one that is: store.applyStock).
//
// What Redis alone still holds, and a fault can lose:
//   - an op answered but not yet committed to MySQL by the writer when
//     Redis lost it (AOF everysec: about a second of ops, plus the writer's
//     lag): it is gone from both, and its replay runs afresh (and may find
//     the stock gone);
//   - an op that changed several SKUs, when the writer had committed the
//     events of some of them and Redis rolls back to before the op: those
//     SKUs come back from MySQL with it, the others and the op's record
//     (carried by its last event) without it;
//   - the order record of a deduct across products ({so:<id>}): a replay of
//     one refused after an earlier product gave its stock back answers
//     ORDER_CLOSED (that product's marker) instead of the refusal; and the
//     pending set ({so}:pending), so the sweep no longer finds an order a
//     dead process left half deducted if Redis lost it too;
//   - the rolled-back mark of a voucher that no product has seen ({sv:…}):
//     its op, arriving later, runs. A voucher that touched a product leaves
//     a tombstone there, which MySQL keeps.
//
// A verification reads all of a product's records: its cost grows with the
// product's orders (a chunk of StockLoadChunk per script call), and callers
// wait on the product's load lock meanwhile.

// verifyStock brings an activity product's stock in Redis in line with
// MySQL (stock_load.lua): SKUs MySQL has at a newer version take MySQL's
// state, records MySQL has at a higher rank take MySQL's value, and the
// product is marked verified under the shard's epoch. One caller does it
// under the product's load lock; the others wait and find it done.
//
// The epoch is adopted in MySQL before MySQL is read (adoptEpoch), so no
// writer batch read from an older dataset commits after this read; if the
// epoch moves again while it runs, nothing is marked verified and the
// caller's next try verifies anew.
func (e *Engine) verifyStock(ctx context.Context, activityID, productID int64) error {
	k := e.keys.Stock(activityID, productID)
	unlock, err := e.lockLoad(ctx, k.LoadLock, fmt.Sprintf("stock of product %d/%d", activityID, productID))
	if err != nil {
		return err
	}
	defer unlock()
	epoch, err := e.adoptEpoch(ctx, k.Epoch)
	if err != nil {
		return err
	}
	records := 0
	for after := ""; ; {
		page, err := e.db.StockRecords(ctx, activityID, productID, after, lua.StockLoadChunk)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		recs := make([]lua.StockRecordEntry, len(page))
		for i, r := range page {
			recs[i] = lua.StockRecordEntry{Ref: r.Ref, Value: r.Value, Rank: r.Rank}
		}
		res, set, err := lua.LoadStockRecords(ctx, e.rdb, k, epoch, recs)
		if err != nil || res == lua.Fresh || res == lua.Moved {
			return err // done by whoever held the lock before us, or Redis moved: the caller tries again
		}
		records += set
		if len(page) < lua.StockLoadChunk {
			break
		}
		after = page[len(page)-1].Ref
	}
	rows, err := e.db.StockSKUs(ctx, activityID, productID)
	if err != nil {
		return err
	}
	skus := make([]lua.StockSnapshot, len(rows))
	for i, r := range rows {
		skus[i] = lua.StockSnapshot{SKU: r.SKU, Status: r.Status, Version: r.Version, Scopes: map[string]lua.StockCounters{}}
		for _, c := range r.Scopes {
			skus[i].Scopes[c.Scope] = lua.StockCounters{Total: c.Total, Available: c.Available, Reserved: c.Reserved, Sold: c.Sold}
		}
	}
	res, taken, err := lua.FinishStockLoad(ctx, e.rdb, k, epoch, skus)
	if err != nil {
		return err
	}
	switch {
	case res == lua.Loaded && len(skus) == 0 && records == 0:
		// A product new to both: nothing to count.
	case res == lua.Loaded, res == lua.Verified:
		e.m.verified.Inc()
		e.log.InfoContext(ctx, "stock: product verified against the store after a Redis dataset change",
			"activity", activityID, "product", productID, "rebuilt", res == lua.Loaded,
			"skus_from_store", taken, "records_from_store", records)
	}
	return nil
}

// stockRecord reads what op id did on a product ("" when nothing yet), from
// a product verified under the current dataset epoch.
func (e *Engine) stockRecord(ctx context.Context, activityID, productID int64, id string) (rec string, err error) {
	k := e.keys.Stock(activityID, productID)
	err = e.onVerified(ctx, activityID, productID, func() (verify bool, err error) {
		rec, verify, err = lua.ReadStockRecord(ctx, e.rdb, k, id)
		return verify, err
	})
	return rec, err
}

// decodeStockRecord reads a t=srec entry of stock.lua: a record it set.
func decodeStockRecord(f *fields) store.StockRecordEvent {
	r := store.StockRecordEvent{ActivityID: f.num("a"), ProductID: f.num("p"), Ref: f.str("ref"), Value: f.str("val"),
		Rank: int(f.num("rk")), At: time.UnixMilli(f.num("at")).UTC()}
	if f.err == nil && (r.ActivityID <= 0 || r.ProductID <= 0 || r.Ref == "" || r.Value == "" || r.Rank < 1 || r.Rank > 2) {
		f.err = errors.New("activity and product must be positive, ref and value set, rank 1 or 2")
	}
	return r
}

// SubmitSKUs puts SKUs of an activity product into the high seas with their
// activity stock: all or nothing; a SKU submitted before fails the call.
func (e *Engine) SubmitSKUs(ctx context.Context, voucher string, activityID, productID int64, skus []SKUStock) error {
	if err := validID("voucher", voucher); err != nil {
		return err
	}
	if len(skus) == 0 || len(skus) > MaxStockItems {
		return fmt.Errorf("%w: 1 to %d SKUs", ErrInvalidArgument, MaxStockItems)
	}
	items := make([]lua.StockItem, len(skus))
	seen := map[int64]bool{}
	for i, s := range skus {
		if err := validRef(activityID, productID, s.SKU); err != nil {
			return err
		}
		if s.Stock < 0 || s.Stock > maxQty {
			return fmt.Errorf("%w: stock must be in 0..%d", ErrInvalidArgument, maxQty)
		}
		if seen[s.SKU] {
			return fmt.Errorf("%w: SKU %d twice", ErrInvalidArgument, s.SKU)
		}
		seen[s.SKU] = true
		items[i] = lua.StockItem{SKU: s.SKU, Scope: ScopeHighSeas, Qty: s.Stock}
	}
	if err := e.indexVoucher(ctx, voucher, activityID, productID); err != nil {
		return err
	}
	r, err := e.stock(ctx, lua.StockOp{Op: "submit", ID: "v:" + voucher, ActivityID: activityID, ProductID: productID, Items: items})
	if err != nil {
		return err
	}
	return stockCode(r.Code)
}

// EditSKUStock changes a submitted SKU's high-seas stock by delta, never
// below what is reserved, sold or salvaged into pools.
func (e *Engine) EditSKUStock(ctx context.Context, voucher string, activityID, productID, sku, delta int64) error {
	if err := validID("voucher", voucher); err != nil {
		return err
	}
	if err := validRef(activityID, productID, sku); err != nil {
		return err
	}
	if delta == 0 || delta > maxQty || delta < -maxQty {
		return fmt.Errorf("%w: delta must be non-zero and at most %d either way", ErrInvalidArgument, maxQty)
	}
	if err := e.indexVoucher(ctx, voucher, activityID, productID); err != nil {
		return err
	}
	r, err := e.stock(ctx, lua.StockOp{Op: "edit", ID: "v:" + voucher, ActivityID: activityID, ProductID: productID,
		Items: []lua.StockItem{{SKU: sku, Scope: ScopeHighSeas, Qty: delta}}})
	if err != nil {
		return err
	}
	return stockCode(r.Code)
}

// RevokeSKU takes a SKU out of the activity: not for sale first (no salvage
// or deduct can take it after), every pool's available stock back to the
// high seas, then what is available withdrawn. Reserved and sold stock stay
// until their orders and branches settle. It returns the quantity withdrawn.
func (e *Engine) RevokeSKU(ctx context.Context, voucher string, activityID, productID, sku int64) (int64, error) {
	if err := validID("voucher", voucher); err != nil {
		return 0, err
	}
	if err := validRef(activityID, productID, sku); err != nil {
		return 0, err
	}
	if err := e.indexVoucher(ctx, voucher, activityID, productID); err != nil {
		return 0, err
	}
	r, err := e.stock(ctx, lua.StockOp{Op: "revoke", ID: "v:" + voucher, ActivityID: activityID, ProductID: productID,
		Items: []lua.StockItem{{SKU: sku, Scope: ScopeHighSeas}}})
	if err != nil {
		return 0, err
	}
	return r.Withdrawn, stockCode(r.Code)
}

// ForceExit takes a SKU out when it is invalidated or its SPU leaves the
// merchant's pool, as two independent steps: first it is made not for sale
// (deducts stop at once), then revoked. Neither keeps a voucher: both are
// idempotent by the SKU's state, so repeating a forced exit, or one racing
// an ordinary revoke, is harmless. A revoke that fails in transit is retried
// with backoff until ctx ends and alerted (log, metric), never losing stock:
// the halted SKU keeps every unit until the revoke runs.
func (e *Engine) ForceExit(ctx context.Context, activityID, productID, sku int64) error {
	if err := validRef(activityID, productID, sku); err != nil {
		return err
	}
	op := lua.StockOp{Op: "halt", ActivityID: activityID, ProductID: productID,
		Items: []lua.StockItem{{SKU: sku, Scope: ScopeHighSeas}}}
	r, err := e.stock(ctx, op)
	if err != nil {
		return err
	}
	if err := stockCode(r.Code); err != nil {
		return err
	}
	op.Op = "revoke"
	for attempt := 1; ; attempt++ {
		r, err := e.stock(ctx, op)
		if err == nil {
			// Gone since the halt (its submit rolled back) is as good as revoked.
			if err := stockCode(r.Code); err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			return nil
		}
		e.m.stockExitRetries.Inc()
		e.log.ErrorContext(ctx, "stock: forced exit could not revoke; retrying, needs attention if it persists",
			"activity", activityID, "product", productID, "sku", sku, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("forced exit of SKU %d halted, revoke pending: %w", sku, err)
		case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, 5*time.Second)):
		}
	}
}

// MovePool moves stock between the high seas and a pool: salvage (into the
// pool) or release (back out). Each item succeeds or fails on its own.
func (e *Engine) MovePool(ctx context.Context, salvage bool, voucher string, pool int64, items []StockItem) ([]ItemResult, error) {
	if err := validID("voucher", voucher); err != nil {
		return nil, err
	}
	if pool <= 0 {
		return nil, fmt.Errorf("%w: pool id must be positive", ErrInvalidArgument)
	}
	if len(items) == 0 || len(items) > MaxStockItems {
		return nil, fmt.Errorf("%w: 1 to %d items", ErrInvalidArgument, MaxStockItems)
	}
	op := "release"
	if salvage {
		op = "salvage"
	}
	groups := map[[2]int64][]int{} // product -> item indexes
	var order [][2]int64
	seen := map[[3]int64]bool{}
	for i, it := range items {
		if err := validRef(it.ActivityID, it.ProductID, it.SKU); err != nil {
			return nil, err
		}
		if err := validQty(it.Qty); err != nil {
			return nil, err
		}
		// One line per SKU: each item has its own result, and a rollback
		// checks and undoes what each line moved on its own.
		if seen[[3]int64{it.ActivityID, it.ProductID, it.SKU}] {
			return nil, fmt.Errorf("%w: SKU %d twice in one batch", ErrInvalidArgument, it.SKU)
		}
		seen[[3]int64{it.ActivityID, it.ProductID, it.SKU}] = true
		p := [2]int64{it.ActivityID, it.ProductID}
		if _, ok := groups[p]; !ok {
			order = append(order, p)
		}
		groups[p] = append(groups[p], i)
	}
	results := make([]ItemResult, len(items))
	for _, p := range order {
		if err := e.indexVoucher(ctx, voucher, p[0], p[1]); err != nil {
			return nil, err
		}
		idx := groups[p]
		li := make([]lua.StockItem, len(idx))
		for j, i := range idx {
			li[j] = lua.StockItem{SKU: items[i].SKU, Scope: PoolScope(pool), Qty: items[i].Qty}
		}
		r, err := e.stock(ctx, lua.StockOp{Op: op, ID: "v:" + voucher, ActivityID: p[0], ProductID: p[1], Items: li})
		if err != nil {
			return nil, err
		}
		partErr := stockCode(r.Code) // the whole product's part refused: a voucher reused or rolled back
		if partErr == nil && len(r.Results) != len(idx) {
			partErr = fmt.Errorf("%w: the voucher was used with other items", ErrIdempotencyConflict)
		}
		for j, i := range idx {
			results[i] = ItemResult{SKU: items[i].SKU, Err: partErr}
			if partErr == nil {
				results[i].Err = stockCode(r.Results[j])
			}
		}
	}
	return results, nil
}

// indexVoucher notes that voucher touches a product, before it does, so a
// rollback finds every product it may have changed; a voucher rolled back
// before it ran is refused here.
func (e *Engine) indexVoucher(ctx context.Context, voucher string, activityID, productID int64) error {
	ok, err := lua.IndexStockVoucher(ctx, e.rdb, e.keys.StockVoucher(voucher),
		fmt.Sprintf("%d:%d", activityID, productID), e.cfg.StockVoucherTTL)
	if err == nil && !ok {
		err = ErrRolledBack
	}
	return err
}

// RollbackVoucher undoes what a voucher's submit, edit, salvage or release
// did, product by product, each all or nothing. A voucher not yet run, or
// never seen, is marked so it cannot run later (the rollback succeeds, as a
// cancel before its try does). Repeating it changes nothing. Revokes are
// not undone (ErrNotForSale); stock that has since moved on refuses the
// product's rollback (ErrOutOfStock).
func (e *Engine) RollbackVoucher(ctx context.Context, voucher string) error {
	if err := validID("voucher", voucher); err != nil {
		return err
	}
	// The voucher's index lives on a hash tag of its own, without an epoch:
	// after Redis lost it (or came back with an older one), the products
	// whose records MySQL holds for the voucher are the rest of the list.
	durable, err := e.db.StockRecordProducts(ctx, "v:"+voucher)
	if err != nil {
		return err
	}
	products, err := lua.RollbackStockVoucher(ctx, e.rdb, e.keys.StockVoucher(voucher), e.cfg.StockVoucherTTL)
	if err != nil {
		return err
	}
	list, err := unionProducts(products, durable)
	if err != nil {
		return err
	}
	var firstErr error
	for _, p := range list {
		if err := e.withRecord(ctx, p[0], p[1], "v:"+voucher, "rollback"); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// unionProducts merges products as Redis lists them ("a:p") with products
// from MySQL, without repeats, in order.
func unionProducts(redisList []string, durable [][2]int64) ([][2]int64, error) {
	out := slices.Clone(durable)
	for _, ap := range redisList {
		a, p, err := parseProduct(ap)
		if err != nil {
			return nil, err
		}
		out = append(out, [2]int64{a, p})
	}
	slices.SortFunc(out, func(x, y [2]int64) int {
		if x[0] != y[0] {
			return cmp.Compare(x[0], y[0])
		}
		return cmp.Compare(x[1], y[1])
	})
	return slices.Compact(out), nil
}

// withRecord runs an op that works on the items of a product's record
// (return, confirm, cancel, rollback): read the record, build the keys from
// its items, and run; the script refuses if the record changed in between.
func (e *Engine) withRecord(ctx context.Context, activityID, productID int64, id, op string) error {
	for attempt := 0; attempt < 100; attempt++ {
		rec, err := e.stockRecord(ctx, activityID, productID, id)
		if err != nil {
			return err
		}
		_, items, err := lua.ParseStockRecord(rec)
		if err != nil {
			return err
		}
		if op == "rollback" && strings.HasPrefix(rec, "revoke#") {
			items = nil // not undone; the script answers so without touching the SKU
		}
		r, err := e.stock(ctx, lua.StockOp{Op: op, ID: id, ActivityID: activityID, ProductID: productID, Items: items, Seen: rec})
		if err != nil {
			return err
		}
		if r.Code != "RETRY" {
			return stockCode(r.Code)
		}
	}
	return fmt.Errorf("engine: %s of %s kept racing its record", op, id)
}

func parseProduct(s string) (int64, int64, error) {
	a, p, ok := strings.Cut(s, ":")
	ai, err1 := strconv.ParseInt(a, 10, 64)
	pi, err2 := strconv.ParseInt(p, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("engine: bad product %q in a stock record", s)
	}
	return ai, pi, nil
}

// byProduct checks an order's or branch's items, merges repeated lines and
// groups them by activity product, in a fixed order.
func byProduct(items []StockItem) (products [][2]int64, groups map[[2]int64][]lua.StockItem, err error) {
	if len(items) == 0 || len(items) > MaxStockItems {
		return nil, nil, fmt.Errorf("%w: 1 to %d items", ErrInvalidArgument, MaxStockItems)
	}
	groups = map[[2]int64][]lua.StockItem{}
	for _, it := range items {
		if err := validRef(it.ActivityID, it.ProductID, it.SKU); err != nil {
			return nil, nil, err
		}
		if err := validQty(it.Qty); err != nil {
			return nil, nil, err
		}
		if !scopeRe.MatchString(it.Scope) {
			return nil, nil, fmt.Errorf("%w: scope must be high_seas or pool:<id>", ErrInvalidArgument)
		}
		p := [2]int64{it.ActivityID, it.ProductID}
		g := groups[p]
		merged := false
		for i := range g {
			if g[i].SKU == it.SKU && g[i].Scope == it.Scope {
				if g[i].Qty += it.Qty; g[i].Qty > maxQty {
					return nil, nil, fmt.Errorf("%w: qty of SKU %d over %d", ErrInvalidArgument, it.SKU, maxQty)
				}
				merged = true
			}
		}
		if !merged {
			if _, ok := groups[p]; !ok {
				products = append(products, p)
			}
			groups[p] = append(g, lua.StockItem{SKU: it.SKU, Scope: it.Scope, Qty: it.Qty})
		}
	}
	slices.SortFunc(products, func(a, b [2]int64) int {
		if a[0] != b[0] {
			return int(a[0] - b[0])
		}
		return int(a[1] - b[1])
	})
	return products, groups, nil
}

func encodeProducts(products [][2]int64) string {
	s := make([]string, len(products))
	for i, p := range products {
		s[i] = fmt.Sprintf("%d:%d", p[0], p[1])
	}
	return strings.Join(s, ";")
}

// DeductStock takes an order's items from their scopes (available → sold):
// all or nothing, idempotent by order id. A replay answers the first result.
// A deduct after the order's return is refused (ErrOrderClosed).
func (e *Engine) DeductStock(ctx context.Context, orderID string, items []StockItem) error {
	if err := validID("order_id", orderID); err != nil {
		return err
	}
	products, groups, err := byProduct(items)
	if err != nil {
		return err
	}
	// As grabs do: refuse new sales rather than take more than MySQL can keep up with.
	if e.WriterLag() > e.cfg.LagLimit {
		return ErrBusy
	}
	orderKey := e.keys.StockOrder(orderID)
	if len(products) > 1 {
		// One script per product: a process that dies between them leaves the
		// order half deducted. Noted first, so SweepStockOrders finds it; a
		// deduct that reaches its answer takes the note back.
		if err := e.rdb.ZAdd(ctx, e.keys.StockPending(), redis.Z{Score: float64(e.nowMs()), Member: orderID}).Err(); err != nil {
			return err
		}
	}
	err = e.deductOrder(ctx, orderID, orderKey, products, groups)
	if len(products) > 1 && (err == nil || isStockAnswer(err)) {
		if zerr := e.rdb.ZRem(ctx, e.keys.StockPending(), orderID).Err(); zerr != nil {
			e.log.WarnContext(ctx, "stock: order answered but still noted pending; the sweep finds it done", "order_id", orderID, "err", zerr)
		}
	}
	return err
}

// isStockAnswer: err is the deduct's answer, not a failure to reach Redis.
func isStockAnswer(err error) bool {
	for _, s := range []error{ErrOutOfStock, ErrNotForSale, ErrNotFound, ErrOrderClosed, ErrIdempotencyConflict} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// deductOrder is DeductStock past its checks: the order record, then each product.
func (e *Engine) deductOrder(ctx context.Context, orderID, orderKey string, products [][2]int64, groups map[[2]int64][]lua.StockItem) error {
	st, err := lua.StockOrder(ctx, e.rdb, orderKey, "begin", encodeProducts(products), e.cfg.StockVoucherTTL)
	if err != nil {
		return err
	}
	switch st.State {
	case "returned":
		return ErrOrderClosed
	case "failed":
		return stockCode(st.Code)
	case "pending":
		if st.Products != encodeProducts(products) {
			return fmt.Errorf("%w: order %s was deducted with other items", ErrIdempotencyConflict, orderID)
		}
	}
	id := "o:" + orderID
	code := ""
	var done [][2]int64
	for _, p := range products {
		r, err := e.stock(ctx, lua.StockOp{Op: "deduct", ID: id, ActivityID: p[0], ProductID: p[1], Items: groups[p]})
		if err != nil {
			return err // the order stays pending; a replay or its return finishes it
		}
		if r.Code != "" {
			code = r.Code
			break
		}
		done = append(done, p)
	}
	if code == "" || len(done) == 0 {
		// Each product's marker answers a replay: "d" deducted, or "x" with the
		// code of a refusal on the first product. A return racing this deduct
		// either found the marker and gave the stock back (deduct, then
		// return) or left "r" and refused it. So no third round trip.
		return stockCode(code)
	}
	// All or nothing: give back what the other products gave, and note the
	// answer on the order, as the products' markers now say "returned".
	for _, p := range done {
		if err := e.withRecord(ctx, p[0], p[1], id, "return"); err != nil {
			return err
		}
	}
	st, err = lua.StockOrder(ctx, e.rdb, orderKey, "finish", code, e.cfg.StockVoucherTTL)
	if err != nil {
		return err
	}
	if st.State == "returned" {
		return ErrOrderClosed // returned while it ran; the return gave it all back
	}
	if st.State != "pending" {
		return stockCode(st.Code) // a concurrent replay finished first
	}
	return stockCode(code)
}

// SweepStockOrders settles orders across products whose deduct began more
// than StockOrderStale ago and never answered (its process died between
// products). One that some but not all of its products hold is returned, so
// what they took comes back and a late replay answers ErrOrderClosed; one
// every product holds is done, and one none holds took nothing (a replay of
// either runs as it would have). It answers how many it returned.
func (e *Engine) SweepStockOrders(ctx context.Context) (int, error) {
	before := e.nowMs() - e.cfg.StockOrderStale.Milliseconds()
	ids, err := e.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: e.keys.StockPending(), ByScore: true,
		Start: "-inf", Stop: strconv.FormatInt(before, 10), Count: 100}).Result()
	if err != nil {
		return 0, err
	}
	returned := 0
	for _, id := range ids {
		half, err := e.halfDeducted(ctx, id)
		if err != nil {
			return returned, err
		}
		if half {
			if err := e.ReturnStock(ctx, id); err != nil {
				return returned, err
			}
			returned++
			e.log.WarnContext(ctx, "stock: returned an order whose deduct never answered", "order_id", id)
		}
		if err := e.rdb.ZRem(ctx, e.keys.StockPending(), id).Err(); err != nil {
			return returned, err
		}
	}
	return returned, nil
}

// halfDeducted reports whether an order's deduct is still pending with
// some products holding its items and some not. Finished, returned or
// forgotten orders are not: their answer stands.
func (e *Engine) halfDeducted(ctx context.Context, orderID string) (bool, error) {
	st, err := e.rdb.HMGet(ctx, e.keys.StockOrder(orderID), "s", "products").Result()
	if err != nil {
		return false, err
	}
	state, _ := st[0].(string)
	products, _ := st[1].(string)
	if state != "pending" || products == "" {
		return false, nil
	}
	held := 0
	list := strings.Split(products, ";")
	for _, ap := range list {
		a, p, err := parseProduct(ap)
		if err != nil {
			return false, err
		}
		rec, err := e.stockRecord(ctx, a, p, "o:"+orderID)
		if err != nil {
			return false, err
		}
		if strings.HasPrefix(rec, "d#") {
			held++
		}
	}
	return held > 0 && held < len(list), nil
}

// RunStockSweeper runs SweepStockOrders every ReconcileInterval until ctx ends.
func (e *Engine) RunStockSweeper(ctx context.Context) error {
	return e.every(ctx, e.cfg.ReconcileInterval, "stock order sweep", func(ctx context.Context) error {
		_, err := e.SweepStockOrders(ctx)
		return err
	})
}

// ReturnStock gives back exactly what an order took. A return before any
// deduct succeeds and blocks that order's later deduct. Repeating it
// changes nothing.
func (e *Engine) ReturnStock(ctx context.Context, orderID string) error {
	if err := validID("order_id", orderID); err != nil {
		return err
	}
	st, err := lua.StockOrder(ctx, e.rdb, e.keys.StockOrder(orderID), "return", "", e.cfg.StockVoucherTTL)
	if err != nil {
		return err
	}
	var redisList []string
	if st.Products != "" {
		redisList = strings.Split(st.Products, ";")
	}
	var durable [][2]int64
	if st.Products == "" {
		// The order's record lives on a hash tag of its own, without an
		// epoch: unknown to Redis (or known only by an earlier return), it
		// may have been lost with a dataset, so the products MySQL holds the
		// order's markers on are asked too. An order's products, once known,
		// are complete: they are set once, when its deduct begins.
		if durable, err = e.db.StockRecordProducts(ctx, "o:"+orderID); err != nil {
			return err
		}
	}
	list, err := unionProducts(redisList, durable)
	if err != nil {
		return err
	}
	for _, p := range list {
		if err := e.withRecord(ctx, p[0], p[1], "o:"+orderID, "return"); err != nil {
			return err
		}
	}
	return nil
}

// TCCPhase is one of the participant's three calls.
type TCCPhase string

const (
	TCCTry     TCCPhase = "try"
	TCCConfirm TCCPhase = "confirm"
	TCCCancel  TCCPhase = "cancel"
)

// TCC runs one phase of a branch: try reserves (available → reserved),
// confirm sells what was reserved, cancel gives it back. Barrier semantics
// per (gid, branch) and product: repeats are no-ops, a cancel before its
// try succeeds and refuses the late try (ErrTCCRefused).
func (e *Engine) TCC(ctx context.Context, phase TCCPhase, gid, branchID string, items []StockItem) error {
	if err := validID("gid", gid); err != nil {
		return err
	}
	if err := validID("branch_id", branchID); err != nil {
		return err
	}
	products, groups, err := byProduct(items)
	if err != nil {
		return err
	}
	if phase == TCCTry && e.WriterLag() > e.cfg.LagLimit {
		return ErrBusy
	}
	id := "t:" + gid + "/" + branchID // "/" is outside the ids' alphabet: no two branches share a record
	for _, p := range products {
		if phase == TCCTry {
			r, err := e.stock(ctx, lua.StockOp{Op: "try", ID: id, ActivityID: p[0], ProductID: p[1], Items: groups[p]})
			if err != nil {
				return err
			}
			if err := stockCode(r.Code); err != nil {
				return err // dtm cancels the branch, which gives back what other products reserved
			}
			continue
		}
		if err := e.withRecord(ctx, p[0], p[1], id, string(phase)); err != nil {
			return err
		}
	}
	return nil
}

// SKUStock reads a SKU's counters from Redis, from a product verified
// under the current dataset epoch (verified first if it is not).
func (e *Engine) SKUStock(ctx context.Context, activityID, productID, sku int64) (SKUView, error) {
	if err := validRef(activityID, productID, sku); err != nil {
		return SKUView{}, err
	}
	k := e.keys.Stock(activityID, productID)
	var st lua.StockSKUState
	err := e.onVerified(ctx, activityID, productID, func() (verify bool, err error) {
		st, verify, err = lua.ReadStockSKU(ctx, e.rdb, k, sku)
		if err != nil || !verify || st.Version != 0 {
			return verify, err
		}
		// Neither Redis nor MySQL knows the SKU: not found, and no need to
		// verify (and mark) a product for a look-up of nothing.
		if _, err := e.db.Stock(ctx, activityID, productID, sku); errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("%w: no such SKU in the activity", ErrNotFound)
		} else if err != nil {
			return false, err
		}
		return true, nil
	})
	if err != nil {
		return SKUView{}, err
	}
	if st.Status == "" {
		return SKUView{}, fmt.Errorf("%w: no such SKU in the activity", ErrNotFound)
	}
	v := SKUView{ForSale: st.Status == "on", Revoked: st.Status == "rev", Pools: map[string]Counters{}}
	for scope, c := range st.Scopes {
		cs := Counters{Total: c.Total, Available: c.Available, Reserved: c.Reserved, Sold: c.Sold}
		if scope == ScopeHighSeas {
			v.HighSeas = cs
		} else if pool, ok := strings.CutPrefix(scope, "pool:"); ok {
			v.Pools[pool] = cs
		}
	}
	return v, nil
}
