package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// StockScope is one scope's counters of a SKU.
type StockScope struct {
	Scope     string `db:"scope"` // high_seas or pool:<id>
	Total     int64  `db:"total"`
	Available int64  `db:"available"`
	Reserved  int64  `db:"reserved"`
	Sold      int64  `db:"sold"`
}

// StockEvent is one change of a SKU as stock.lua made it: the SKU's whole
// state after the change (Version counts its changes) and what changed.
type StockEvent struct {
	ActivityID, ProductID, SKU int64
	Version                    int64
	Status                     string // on, off, rev; "" once a submit was rolled back
	Scopes                     []StockScope
	Op, Ref, Change            string
	At                         time.Time
}

// StockSKU is a SKU's stock as MySQL has it.
type StockSKU struct {
	ActivityID int64  `db:"activity_id"`
	ProductID  int64  `db:"product_id"`
	SKU        int64  `db:"sku_id"`
	Status     string `db:"status"`
	Version    int64  `db:"version"`
	Scopes     []StockScope
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

// applyStock makes a batch's stock events durable: every change into the
// log once (its SKU and version are its key), and per SKU only the newest
// snapshot, and only if newer than MySQL's — so replays and reordering
// leave the newest state, in a fixed number of statements per SKU.
func (db *DB) applyStock(ctx context.Context, tx *sqlx.Tx, events []StockEvent) error {
	if len(events) == 0 {
		return nil
	}
	newest := map[skuKey]StockEvent{}
	var order []skuKey
	var log strings.Builder
	log.WriteString(db.insertIgnore() + " INTO stock_change (activity_id, product_id, sku_id, version, op, ref, detail, created_at) VALUES ")
	args := make([]any, 0, 8*len(events))
	for i, ev := range events {
		k := skuKey{ev.ActivityID, ev.ProductID, ev.SKU}
		if cur, ok := newest[k]; !ok || ev.Version > cur.Version {
			if !ok {
				order = append(order, k)
			}
			newest[k] = ev
		}
		if i > 0 {
			log.WriteString(", ")
		}
		log.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
		args = append(args, ev.ActivityID, ev.ProductID, ev.SKU, ev.Version, ev.Op, ev.Ref, ev.Change, ev.At)
	}
	if _, err := tx.ExecContext(ctx, log.String(), args...); err != nil {
		return err
	}
	for _, k := range order {
		ev := newest[k]
		var stored int64
		err := tx.GetContext(ctx, &stored, tx.Rebind(`SELECT version FROM stock_sku
			WHERE activity_id = ? AND product_id = ? AND sku_id = ?`+db.forUpdate()), k.a, k.p, k.sku)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, `INSERT INTO stock_sku (activity_id, product_id, sku_id, status, version, updated_at)
				VALUES (?, ?, ?, ?, ?, ?)`, k.a, k.p, k.sku, ev.Status, ev.Version, ev.At)
		case err != nil:
			return err
		case stored >= ev.Version:
			continue // MySQL already has this state or a newer one
		default:
			_, err = tx.ExecContext(ctx, `UPDATE stock_sku SET status = ?, version = ?, updated_at = ?
				WHERE activity_id = ? AND product_id = ? AND sku_id = ?`, ev.Status, ev.Version, ev.At, k.a, k.p, k.sku)
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM stock_scope WHERE activity_id = ? AND product_id = ? AND sku_id = ?", k.a, k.p, k.sku); err != nil {
			return err
		}
		if len(ev.Scopes) == 0 {
			continue
		}
		var ins strings.Builder
		ins.WriteString("INSERT INTO stock_scope (activity_id, product_id, sku_id, scope, total, available, reserved, sold) VALUES ")
		args = args[:0]
		for i, s := range ev.Scopes {
			if i > 0 {
				ins.WriteString(", ")
			}
			ins.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, k.a, k.p, k.sku, s.Scope, s.Total, s.Available, s.Reserved, s.Sold)
		}
		if _, err := tx.ExecContext(ctx, ins.String(), args...); err != nil {
			return err
		}
	}
	return nil
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
