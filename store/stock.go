package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// StockSKU is a SKU's stock as MySQL has it.
type StockSKU struct {
	ActivityID int64  `db:"activity_id"`
	ProductID  int64  `db:"product_id"`
	SKU        int64  `db:"sku_id"`
	Status     string `db:"status"`
	Version    int64  `db:"version"`
	Scopes     []event.StockScope
}

// StockChange is one line of the change log.
type StockChange struct {
	Version int64     `db:"version"`
	Op      string    `db:"op"`
	Ref     string    `db:"ref"`
	Detail  string    `db:"detail"`
	At      time.Time `db:"created_at"`
}

type skuKey struct{ a, p, sku int64 }

// stockApplier applies stock changes (applyStock).
var stockApplier = kindApplier[event.Stock]{applyStockEvents,
	"the SKU's version is at or below MySQL's but its change log records another change there"}

// applyStockEvents is the stock applier (applyStock); the records the
// applied events carry are upserted with the batch's others, and each
// applied event adds its stock.changed to the batch's outbox rows (a
// replay's id is there already: it adds no row).
func applyStockEvents(ctx context.Context, b *batch, events []event.Stock) ([]bool, error) {
	rejected, err := b.db.applyStock(ctx, b.tx, events)
	if err != nil {
		return nil, err
	}
	b.records = append(b.records, carriedRecords(events, rejected)...)
	ok := make([]bool, len(events))
	for i, ev := range events {
		ok[i] = !slices.Contains(rejected, i)
		if ok[i] && b.db.outboxOn() {
			b.out = append(b.out, event.StockChangedOf(ev).Message(ev.At))
		}
	}
	return ok, nil
}

// stockRecordApplier applies t=srec records, which it never rejects.
var stockRecordApplier = kindApplier[event.StockRecord]{applyStockRecordEvents,
	"never: the higher rank of a record is kept"}

// applyStockRecordEvents is the t=srec applier: its records are upserted
// with the batch's others (applyStockRecords), which keeps the higher rank
// and so never rejects one.
func applyStockRecordEvents(_ context.Context, b *batch, recs []event.StockRecord) ([]bool, error) {
	b.records = append(b.records, recs...)
	ok := make([]bool, len(recs))
	for i := range ok {
		ok[i] = true
	}
	return ok, nil
}

// applyStock makes a batch's stock events durable: every change into the
// log once (its SKU and version are its key), and per SKU only the newest
// snapshot, and only if newer than MySQL's — so replays and reordering
// leave the newest state, in a fixed number of statements per SKU.
//
// Versions never go backwards silently. An event at or below MySQL's
// version for its SKU is a replay only when it matches the change-log row
// MySQL recorded for that version (same op, ref and detail); one that
// differs is a contradiction (Redis restarted or rolled back and reused
// versions MySQL holds for other changes): it is left unapplied and its
// index in events returned, for the writer to park. So is a second event of
// the batch with one SKU and version but another change. An event below
// MySQL's version with no row for its version came late (another consumer
// applied newer ones first): its row is logged, the snapshot stays.
func (db *DB) applyStock(ctx context.Context, tx *sqlx.Tx, events []event.Stock) (rejected []int, err error) {
	if len(events) == 0 {
		return nil, nil
	}
	bySKU := map[skuKey][]int{}
	var order []skuKey
	for i, ev := range events {
		k := skuKey{ev.ActivityID, ev.ProductID, ev.SKU}
		if _, ok := bySKU[k]; !ok {
			order = append(order, k)
		}
		bySKU[k] = append(bySKU[k], i)
	}
	bad := make([]bool, len(events))
	// SKU rows are locked in the order the batch names them first, as before.
	for _, k := range order {
		idx := bySKU[k]
		var stored int64
		err := tx.GetContext(ctx, &stored, tx.Rebind(`SELECT version FROM stock_sku
			WHERE activity_id = ? AND product_id = ? AND sku_id = ?`+db.forUpdate()), k.a, k.p, k.sku)
		exists := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		if err := db.checkReplays(ctx, tx, k, stored, events, idx, bad); err != nil {
			return nil, err
		}
		newest := -1
		for _, i := range idx {
			if !bad[i] && events[i].Version > stored && (newest < 0 || events[i].Version > events[newest].Version) {
				newest = i
			}
		}
		if newest < 0 {
			continue // MySQL already has this state or a newer one
		}
		ev := events[newest]
		if !exists {
			_, err = tx.ExecContext(ctx, `INSERT INTO stock_sku (activity_id, product_id, sku_id, status, version, updated_at)
				VALUES (?, ?, ?, ?, ?, ?)`, k.a, k.p, k.sku, ev.Status, ev.Version, ev.At)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE stock_sku SET status = ?, version = ?, updated_at = ?
				WHERE activity_id = ? AND product_id = ? AND sku_id = ?`, ev.Status, ev.Version, ev.At, k.a, k.p, k.sku)
		}
		if err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM stock_scope WHERE activity_id = ? AND product_id = ? AND sku_id = ?", k.a, k.p, k.sku); err != nil {
			return nil, err
		}
		if len(ev.Scopes) == 0 {
			continue
		}
		var ins strings.Builder
		ins.WriteString("INSERT INTO stock_scope (activity_id, product_id, sku_id, scope, total, available, reserved, sold) VALUES ")
		args := make([]any, 0, 8*len(ev.Scopes))
		for i, s := range ev.Scopes {
			if i > 0 {
				ins.WriteString(", ")
			}
			ins.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, k.a, k.p, k.sku, s.Scope, s.Total, s.Available, s.Reserved, s.Sold)
		}
		if _, err := tx.ExecContext(ctx, ins.String(), args...); err != nil {
			return nil, err
		}
	}
	// Replays are in the log already: INSERT IGNORE skips them.
	var log strings.Builder
	log.WriteString(db.insertIgnore() + " INTO stock_change (activity_id, product_id, sku_id, version, op, ref, detail, created_at) VALUES ")
	args := make([]any, 0, 8*len(events))
	for i, ev := range events {
		if bad[i] {
			rejected = append(rejected, i)
			continue
		}
		if len(args) > 0 {
			log.WriteString(", ")
		}
		log.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
		args = append(args, ev.ActivityID, ev.ProductID, ev.SKU, ev.Version, ev.Op, ev.Ref, ev.Change, ev.At)
	}
	if len(args) > 0 {
		if _, err := tx.ExecContext(ctx, log.String(), args...); err != nil {
			return nil, err
		}
	}
	return rejected, nil
}

// checkReplays marks in bad the events of one SKU (events[idx]) that
// contradict MySQL's change log at or below its version stored, or an
// earlier event of the batch with the same version. Only a batch that
// holds such versions (a redelivery, a replayed stream) costs a query.
func (db *DB) checkReplays(ctx context.Context, tx *sqlx.Tx, k skuKey, stored int64, events []event.Stock, idx []int, bad []bool) error {
	low := int64(-1)
	for _, i := range idx {
		if v := events[i].Version; v <= stored && (low < 0 || v < low) {
			low = v
		}
	}
	logged := map[int64]StockChange{}
	if low >= 0 {
		var rows []StockChange
		if err := tx.SelectContext(ctx, &rows, tx.Rebind(`SELECT version, op, ref, detail, created_at FROM stock_change
			WHERE activity_id = ? AND product_id = ? AND sku_id = ? AND version BETWEEN ? AND ?`), k.a, k.p, k.sku, low, stored); err != nil {
			return err
		}
		for _, r := range rows {
			logged[r.Version] = r
		}
	}
	for _, i := range idx {
		ev := events[i]
		if c, ok := logged[ev.Version]; ok {
			bad[i] = c.Op != ev.Op || c.Ref != ev.Ref || c.Detail != ev.Change
			continue
		}
		// First of its version in the batch: it is the log's row from now on.
		logged[ev.Version] = StockChange{Version: ev.Version, Op: ev.Op, Ref: ev.Ref, Detail: ev.Change}
	}
	return nil
}

// StockRecord is a row of stock_record.
type StockRecord struct {
	ActivityID int64     `db:"activity_id"`
	ProductID  int64     `db:"product_id"`
	Ref        string    `db:"ref"`
	Value      string    `db:"value"`
	Rank       int       `db:"rank"`
	UpdatedAt  time.Time `db:"updated_at"`
}

// carriedRecords are the records stock events carry, but for those of the
// rejected events (indexes into events): their ops were not applied.
func carriedRecords(events []event.Stock, rejected []int) []event.StockRecord {
	var out []event.StockRecord
	for i, ev := range events {
		if ev.Record != nil && !slices.Contains(rejected, i) {
			out = append(out, *ev.Record)
		}
	}
	return out
}

// applyStockRecords upserts a batch's records in one statement, keeping for
// each (product, ref) the value of the highest rank: the first value of it
// seen, as a record's value changes only with its rank. Replays and
// reordering leave the more advanced value.
func (db *DB) applyStockRecords(ctx context.Context, tx *sqlx.Tx, recs []event.StockRecord) error {
	if len(recs) == 0 {
		return nil
	}
	type key struct {
		a, p int64
		ref  string
	}
	best := map[key]int{}
	var order []key
	for i, r := range recs {
		k := key{r.ActivityID, r.ProductID, r.Ref}
		j, ok := best[k]
		if !ok {
			order = append(order, k)
		}
		if !ok || r.Rank > recs[j].Rank {
			best[k] = i
		}
	}
	var q strings.Builder
	q.WriteString("INSERT INTO stock_record (activity_id, product_id, ref, `value`, `rank`, updated_at) VALUES ")
	args := make([]any, 0, 6*len(order))
	for n, k := range order {
		r := recs[best[k]]
		if n > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, ?, ?, ?)")
		args = append(args, r.ActivityID, r.ProductID, r.Ref, r.Value, r.Rank, r.At)
	}
	if db.dialect == dialectSQLite {
		q.WriteString(" ON CONFLICT (activity_id, product_id, ref) DO UPDATE SET `value` = excluded.`value`," +
			" `rank` = excluded.`rank`, updated_at = excluded.updated_at WHERE excluded.`rank` > stock_record.`rank`")
	} else {
		// MySQL assigns left to right, each seeing the ones before: rank last.
		q.WriteString(" ON DUPLICATE KEY UPDATE `value` = IF(VALUES(`rank`) > `rank`, VALUES(`value`), `value`)," +
			" updated_at = IF(VALUES(`rank`) > `rank`, VALUES(updated_at), updated_at)," +
			" `rank` = GREATEST(`rank`, VALUES(`rank`))")
	}
	_, err := tx.ExecContext(ctx, q.String(), args...)
	return err
}

// StockRecords pages through an activity product's records in ref order:
// at most limit of them, with refs after after ("" for the first page).
func (db *DB) StockRecords(ctx context.Context, activityID, productID int64, after string, limit int) ([]StockRecord, error) {
	var out []StockRecord
	err := db.x.SelectContext(ctx, &out, db.x.Rebind("SELECT activity_id, product_id, ref, `value`, `rank`, updated_at"+
		" FROM stock_record WHERE activity_id = ? AND product_id = ? AND ref > ? ORDER BY ref LIMIT ?"),
		activityID, productID, after, limit)
	return out, err
}

// StockRecordProducts lists the activity products ([activity, product])
// that hold a record of ref, in order: where a voucher or an order left its
// mark, for a rollback or return after Redis lost its own index of them.
func (db *DB) StockRecordProducts(ctx context.Context, ref string) ([][2]int64, error) {
	var rows []struct {
		A int64 `db:"activity_id"`
		P int64 `db:"product_id"`
	}
	if err := db.x.SelectContext(ctx, &rows, db.x.Rebind(`SELECT activity_id, product_id FROM stock_record
		WHERE ref = ? ORDER BY activity_id, product_id`), ref); err != nil {
		return nil, err
	}
	out := make([][2]int64, len(rows))
	for i, r := range rows {
		out[i] = [2]int64{r.A, r.P}
	}
	return out, nil
}

// StockSKUs is every SKU MySQL has of an activity product, with its scopes,
// in SKU order. One statement, so each SKU's version and counters are of
// one moment even while the writer applies changes.
func (db *DB) StockSKUs(ctx context.Context, activityID, productID int64) ([]StockSKU, error) {
	var rows []struct {
		SKU       int64          `db:"sku_id"`
		Status    string         `db:"status"`
		Version   int64          `db:"version"`
		Scope     sql.NullString `db:"scope"`
		Total     sql.NullInt64  `db:"total"`
		Available sql.NullInt64  `db:"available"`
		Reserved  sql.NullInt64  `db:"reserved"`
		Sold      sql.NullInt64  `db:"sold"`
	}
	if err := db.x.SelectContext(ctx, &rows, db.x.Rebind(`SELECT s.sku_id, s.status, s.version,
			c.scope, c.total, c.available, c.reserved, c.sold
		FROM stock_sku s LEFT JOIN stock_scope c
			ON c.activity_id = s.activity_id AND c.product_id = s.product_id AND c.sku_id = s.sku_id
		WHERE s.activity_id = ? AND s.product_id = ? ORDER BY s.sku_id, c.scope`), activityID, productID); err != nil {
		return nil, err
	}
	var out []StockSKU
	for _, r := range rows {
		if len(out) == 0 || out[len(out)-1].SKU != r.SKU {
			out = append(out, StockSKU{ActivityID: activityID, ProductID: productID, SKU: r.SKU, Status: r.Status, Version: r.Version})
		}
		if r.Scope.Valid {
			s := &out[len(out)-1]
			s.Scopes = append(s.Scopes, event.StockScope{Scope: r.Scope.String, Total: r.Total.Int64, Available: r.Available.Int64,
				Reserved: r.Reserved.Int64, Sold: r.Sold.Int64})
		}
	}
	return out, nil
}

// Stock reads a SKU's durable stock; ErrNotFound when MySQL has none.
func (db *DB) Stock(ctx context.Context, activityID, productID, sku int64) (StockSKU, error) {
	var s StockSKU
	err := db.x.GetContext(ctx, &s, db.x.Rebind(`SELECT activity_id, product_id, sku_id, status, version FROM stock_sku
		WHERE activity_id = ? AND product_id = ? AND sku_id = ?`), activityID, productID, sku)
	if errors.Is(err, sql.ErrNoRows) {
		return StockSKU{}, fmt.Errorf("%w: stock of SKU %d", ErrNotFound, sku)
	}
	if err != nil {
		return StockSKU{}, err
	}
	err = db.x.SelectContext(ctx, &s.Scopes, db.x.Rebind(`SELECT scope, total, available, reserved, sold FROM stock_scope
		WHERE activity_id = ? AND product_id = ? AND sku_id = ? ORDER BY scope`), activityID, productID, sku)
	return s, err
}

// StockChanges is a SKU's change log, oldest first.
func (db *DB) StockChanges(ctx context.Context, activityID, productID, sku int64) ([]StockChange, error) {
	var out []StockChange
	err := db.x.SelectContext(ctx, &out, db.x.Rebind(`SELECT version, op, ref, detail, created_at FROM stock_change
		WHERE activity_id = ? AND product_id = ? AND sku_id = ? ORDER BY version`), activityID, productID, sku)
	return out, err
}
