package stock

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
)

// SKUStock is one SKU of a submit, with its activity stock.
type SKUStock struct {
	SKU   int64
	Stock int64
}

// ItemResult is one item's outcome in a batch that allows partial success.
type ItemResult struct {
	SKU int64
	Err error // nil when the item succeeded
}

// Submit puts SKUs of an activity product into the high seas with their
// activity stock: all or nothing; a SKU submitted before fails the call.
func (s *Service) Submit(ctx context.Context, voucher string, activityID, productID int64, skus []SKUStock) error {
	if err := validID("voucher", voucher); err != nil {
		return err
	}
	if len(skus) == 0 || len(skus) > MaxItems {
		return fmt.Errorf("%w: 1 to %d SKUs", errs.ErrInvalidArgument, MaxItems)
	}
	items := make([]lua.StockItem, len(skus))
	seen := map[int64]bool{}
	for i, s := range skus {
		if err := validRef(activityID, productID, s.SKU); err != nil {
			return err
		}
		if s.Stock < 0 || s.Stock > maxQty {
			return fmt.Errorf("%w: stock must be in 0..%d", errs.ErrInvalidArgument, maxQty)
		}
		if seen[s.SKU] {
			return fmt.Errorf("%w: SKU %d twice", errs.ErrInvalidArgument, s.SKU)
		}
		seen[s.SKU] = true
		items[i] = lua.StockItem{SKU: s.SKU, Scope: ScopeHighSeas, Qty: s.Stock}
	}
	if err := s.indexVoucher(ctx, voucher, activityID, productID); err != nil {
		return err
	}
	r, err := s.exec(ctx, lua.Direct(s.rdb), lua.StockOp{Op: "submit", ID: "v:" + voucher, ActivityID: activityID, ProductID: productID, Items: items})
	if err != nil {
		return err
	}
	return codeErr(r.Code)
}

// Edit changes a submitted SKU's high-seas stock by delta, never
// below what is reserved, sold or salvaged into pools.
func (s *Service) Edit(ctx context.Context, voucher string, activityID, productID, sku, delta int64) error {
	if err := validID("voucher", voucher); err != nil {
		return err
	}
	if err := validRef(activityID, productID, sku); err != nil {
		return err
	}
	if delta == 0 || delta > maxQty || delta < -maxQty {
		return fmt.Errorf("%w: delta must be non-zero and at most %d either way", errs.ErrInvalidArgument, maxQty)
	}
	if err := s.indexVoucher(ctx, voucher, activityID, productID); err != nil {
		return err
	}
	r, err := s.exec(ctx, lua.Direct(s.rdb), lua.StockOp{Op: "edit", ID: "v:" + voucher, ActivityID: activityID, ProductID: productID,
		Items: []lua.StockItem{{SKU: sku, Scope: ScopeHighSeas, Qty: delta}}})
	if err != nil {
		return err
	}
	return codeErr(r.Code)
}

// Revoke takes a SKU out of the activity: not for sale first (no salvage
// or deduct can take it after), every pool's available stock back to the
// high seas, then what is available withdrawn. Reserved and sold stock stay
// until their orders and branches settle. It returns the quantity withdrawn.
func (s *Service) Revoke(ctx context.Context, voucher string, activityID, productID, sku int64) (int64, error) {
	if err := validID("voucher", voucher); err != nil {
		return 0, err
	}
	if err := validRef(activityID, productID, sku); err != nil {
		return 0, err
	}
	if err := s.indexVoucher(ctx, voucher, activityID, productID); err != nil {
		return 0, err
	}
	r, err := s.exec(ctx, lua.Direct(s.rdb), lua.StockOp{Op: "revoke", ID: "v:" + voucher, ActivityID: activityID, ProductID: productID,
		Items: []lua.StockItem{{SKU: sku, Scope: ScopeHighSeas}}})
	if err != nil {
		return 0, err
	}
	return r.Withdrawn, codeErr(r.Code)
}

// ForceExit takes a SKU out when it is invalidated or its SPU leaves the
// merchant's pool, as two independent steps: first it is made not for sale
// (deducts stop at once), then revoked. Neither keeps a voucher: both are
// idempotent by the SKU's state, so repeating a forced exit, or one racing
// an ordinary revoke, is harmless. A revoke that fails in transit is retried
// with backoff until ctx ends and alerted (log, metric), never losing stock:
// the halted SKU keeps every unit until the revoke runs.
func (s *Service) ForceExit(ctx context.Context, activityID, productID, sku int64) error {
	if err := validRef(activityID, productID, sku); err != nil {
		return err
	}
	op := lua.StockOp{Op: "halt", ActivityID: activityID, ProductID: productID,
		Items: []lua.StockItem{{SKU: sku, Scope: ScopeHighSeas}}}
	r, err := s.exec(ctx, lua.Direct(s.rdb), op)
	if err != nil {
		return err
	}
	if err := codeErr(r.Code); err != nil {
		return err
	}
	op.Op = "revoke"
	for attempt := 1; ; attempt++ {
		r, err := s.exec(ctx, lua.Direct(s.rdb), op)
		if err == nil {
			// Gone since the halt (its submit rolled back) is as good as revoked.
			if err := codeErr(r.Code); err != nil && !errors.Is(err, errs.ErrNotFound) {
				return err
			}
			return nil
		}
		s.m.exitRetries.Inc()
		s.log.ErrorContext(ctx, "stock: forced exit could not revoke; retrying, needs attention if it persists",
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
func (s *Service) MovePool(ctx context.Context, salvage bool, voucher string, pool int64, items []Item) ([]ItemResult, error) {
	if err := validID("voucher", voucher); err != nil {
		return nil, err
	}
	if pool <= 0 {
		return nil, fmt.Errorf("%w: pool id must be positive", errs.ErrInvalidArgument)
	}
	if len(items) == 0 || len(items) > MaxItems {
		return nil, fmt.Errorf("%w: 1 to %d items", errs.ErrInvalidArgument, MaxItems)
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
			return nil, fmt.Errorf("%w: SKU %d twice in one batch", errs.ErrInvalidArgument, it.SKU)
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
		if err := s.indexVoucher(ctx, voucher, p[0], p[1]); err != nil {
			return nil, err
		}
		idx := groups[p]
		li := make([]lua.StockItem, len(idx))
		for j, i := range idx {
			li[j] = lua.StockItem{SKU: items[i].SKU, Scope: PoolScope(pool), Qty: items[i].Qty}
		}
		r, err := s.exec(ctx, lua.Direct(s.rdb), lua.StockOp{Op: op, ID: "v:" + voucher, ActivityID: p[0], ProductID: p[1], Items: li})
		if err != nil {
			return nil, err
		}
		partErr := codeErr(r.Code) // the whole product's part refused: a voucher reused or rolled back
		if partErr == nil && len(r.Results) != len(idx) {
			partErr = fmt.Errorf("%w: the voucher was used with other items", errs.ErrIdempotencyConflict)
		}
		for j, i := range idx {
			results[i] = ItemResult{SKU: items[i].SKU, Err: partErr}
			if partErr == nil {
				results[i].Err = codeErr(r.Results[j])
			}
		}
	}
	return results, nil
}

// indexVoucher notes that voucher touches a product, before it does, so a
// rollback finds every product it may have changed; a voucher rolled back
// before it ran is refused here.
//
// A voucher whose rollback was refused on a product (its stock had moved
// on) is marked rolled back all the same; its op there stands, so a replay
// of it goes on to answer the op's first result.
func (s *Service) indexVoucher(ctx context.Context, voucher string, activityID, productID int64) error {
	ok, err := lua.IndexStockVoucher(ctx, s.rdb, s.keys.StockVoucher(voucher),
		lua.StockProduct(activityID, productID), s.cfg.VoucherTTL)
	if err != nil || ok {
		return err
	}
	rec, err := s.record(ctx, activityID, productID, "v:"+voucher)
	if err != nil {
		return err
	}
	if state, _, _ := lua.ParseStockRecord(rec); state == "" || state == "rollback" {
		return ErrRolledBack // never ran here, or undone: it must not run now
	}
	return nil // its rollback was refused here: the script answers the op's first result
}

// RollbackVoucher undoes what a voucher's submit, edit, salvage or release
// did, product by product, each all or nothing. A voucher not yet run, or
// never seen, is marked so it cannot run later (the rollback succeeds, as a
// cancel before its try does). Repeating it changes nothing. Revokes are
// not undone (ErrNotForSale); stock that has since moved on refuses the
// product's rollback (ErrOutOfStock).
func (s *Service) RollbackVoucher(ctx context.Context, voucher string) error {
	if err := validID("voucher", voucher); err != nil {
		return err
	}
	// The voucher's index lives on a hash tag of its own, without an epoch:
	// after Redis lost it (or came back with an older one), the products
	// whose records MySQL holds for the voucher are the rest of the list.
	durable, err := s.db.StockRecordProducts(ctx, "v:"+voucher)
	if err != nil {
		return err
	}
	products, err := lua.RollbackStockVoucher(ctx, s.rdb, s.keys.StockVoucher(voucher), s.cfg.VoucherTTL)
	if err != nil {
		return err
	}
	list, err := unionProducts(products, durable)
	if err != nil {
		return err
	}
	var firstErr error
	for _, p := range list {
		r, err := s.withRecord(ctx, p[0], p[1], "v:"+voucher, "rollback")
		if err == nil {
			err = codeErr(r.Code)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}
