package stock

import (
	"context"
	"fmt"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
)

// Stock across Redis faults. Redis may restart empty (the embedded mode's
// miniredis always does), or come back older than MySQL (AOF everysec after
// an OS crash, a failover to a lagging replica, a restore). Every write of a
// product's records reaches MySQL through the stream (stock_record), as
// every SKU change does (stock_sku, stock_change), and the stock scripts
// run only on a product verified under the shard's current dataset epoch;
// the first op (or read) after a change verifies it from MySQL. So counters,
// versions and every replay's answer come back, and MySQL's versions are
// never reused for other changes (the writer parks one that is).
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
//   - the shards' order index: a return then finds the order's product in
//     MySQL (its marker), and the mark of an order returned before any
//     deduct ("!") is lost, so that order's late deduct runs;
//   - the rolled-back mark of a voucher that no product has seen ({sv:…}):
//     its op, arriving later, runs. A voucher that touched a product leaves
//     a tombstone there, which MySQL keeps.
//
// A verification reads all of a product's records: its cost grows with the
// product's orders (a chunk of lua.StockLoadChunk per script call), and
// callers wait on the product's load lock meanwhile.

// maxVerifies bounds the verifications one call waits for: more means the
// Redis dataset keeps changing under it (restarting, failing over).
const maxVerifies = 3

// exec runs one op through r (the deduct pipeline, or a round trip of its
// own). A product not verified under the current dataset epoch answers
// VERIFY without running: it is verified from MySQL and the op runs again.
func (s *Service) exec(ctx context.Context, r lua.Runner, op lua.StockOp) (reply lua.StockReply, err error) {
	k := s.keys.Stock(op.ActivityID, op.ProductID)
	err = s.onVerified(ctx, op.ActivityID, op.ProductID, func() (bool, error) {
		op.NowMs = s.nowMs()
		reply, err = lua.Stock(ctx, r, k, op)
		return err == nil && reply.Code == lua.StockVerify, err
	})
	return reply, err
}

// onVerified runs a call on a product's Redis state; when it reports that
// the product must first be verified from MySQL (it answered VERIFY), it
// verifies it and runs the call again.
func (s *Service) onVerified(ctx context.Context, activityID, productID int64, call func() (verify bool, err error)) error {
	for attempt := 0; ; attempt++ {
		verify, err := call()
		if err != nil || !verify {
			return err
		}
		if attempt == maxVerifies {
			return fmt.Errorf("%w: stock of product %d/%d kept moving while it was verified", errs.ErrBusy, activityID, productID)
		}
		if err := s.verify(ctx, activityID, productID); err != nil {
			return err
		}
	}
}

// verify brings an activity product's stock in Redis in line with MySQL
// (stock_load.lua): SKUs MySQL has at a newer version take MySQL's state,
// records MySQL has at a higher rank take MySQL's value, and the product is
// marked verified under the shard's epoch. One caller does it under the
// product's load lock; the others wait and find it done.
//
// The epoch is adopted in MySQL before MySQL is read, so no writer batch
// read from an older dataset commits after this read; if the epoch moves
// again while it runs, nothing is marked verified and the caller's next
// try verifies anew.
func (s *Service) verify(ctx context.Context, activityID, productID int64) error {
	k := s.keys.Stock(activityID, productID)
	unlock, err := s.core.LockLoad(ctx, k.LoadLock, fmt.Sprintf("stock of product %d/%d", activityID, productID))
	if err != nil {
		return err
	}
	defer unlock()
	epoch, err := s.core.AdoptEpoch(ctx, k.Epoch)
	if err != nil {
		return err
	}
	records := 0
	for after := ""; ; {
		page, err := s.db.StockRecords(ctx, activityID, productID, after, lua.StockLoadChunk)
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
		res, set, err := lua.LoadStockRecords(ctx, s.rdb, k, epoch, recs)
		if err != nil || res == lua.Fresh || res == lua.Moved {
			return err // done by whoever held the lock before us, or Redis moved: the caller tries again
		}
		records += set
		if len(page) < lua.StockLoadChunk {
			break
		}
		after = page[len(page)-1].Ref
	}
	rows, err := s.db.StockSKUs(ctx, activityID, productID)
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
	res, taken, err := lua.FinishStockLoad(ctx, s.rdb, k, epoch, skus)
	if err != nil {
		return err
	}
	switch {
	case res == lua.Loaded && len(skus) == 0 && records == 0:
		// A product new to both: nothing to count.
	case res == lua.Loaded, res == lua.Verified:
		s.m.verified.Inc()
		s.log.InfoContext(ctx, "stock: product verified against the store after a Redis dataset change",
			"activity", activityID, "product", productID, "rebuilt", res == lua.Loaded,
			"skus_from_store", taken, "records_from_store", records)
	}
	return nil
}

// record reads what op id did on a product ("" when nothing yet), from a
// product verified under the current dataset epoch.
func (s *Service) record(ctx context.Context, activityID, productID int64, id string) (rec string, err error) {
	k := s.keys.Stock(activityID, productID)
	err = s.onVerified(ctx, activityID, productID, func() (verify bool, err error) {
		rec, verify, err = lua.ReadStockRecord(ctx, s.rdb, k, id)
		return verify, err
	})
	return rec, err
}

// withRecord runs an op that works on the items of a product's record
// (return, confirm, cancel, rollback): read the record, take the items from
// it, and run; the script refuses (RETRY) if the record changed in between.
// It answers the script's reply.
func (s *Service) withRecord(ctx context.Context, activityID, productID int64, id, op string) (lua.StockReply, error) {
	for attempt := 0; attempt < 100; attempt++ {
		rec, err := s.record(ctx, activityID, productID, id)
		if err != nil {
			return lua.StockReply{}, err
		}
		state, items, err := lua.ParseStockRecord(rec)
		if err != nil {
			return lua.StockReply{}, err
		}
		if op == "rollback" && state == "revoke" {
			items = nil // not undone; the script answers so without touching the SKU
		}
		r, err := s.exec(ctx, lua.Direct(s.rdb), lua.StockOp{Op: op, ID: id, ActivityID: activityID, ProductID: productID, Items: items, Seen: rec})
		if err != nil {
			return lua.StockReply{}, err
		}
		if r.Code != lua.StockRetry {
			return r, nil
		}
	}
	return lua.StockReply{}, fmt.Errorf("engine: %s of %s kept racing its record", op, id)
}
