package lua

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed stock.lua
	stockSource string
	//go:embed stock_order.lua
	stockOrderSource string
	//go:embed stock_voucher.lua
	stockVoucherSource string

	stockScript        = redis.NewScript(stockSource)
	stockOrderScript   = redis.NewScript(stockOrderSource)
	stockVoucherScript = redis.NewScript(stockVoucherSource)
)

// StockItem is one line of a stock op: a SKU, its scope ("high_seas" or
// "pool:<id>") and a quantity (for edit, a delta).
type StockItem struct {
	SKU   int64
	Scope string
	Qty   int64
}

// StockOp is one call of stock.lua on one activity product.
type StockOp struct {
	Op                    string // submit, edit, halt, revoke, salvage, release, rollback, deduct, return, try, confirm, cancel
	ID                    string // record field: "v:<voucher>", "o:<order>", "t:<gid>/<branch>"; "" keeps none
	NowMs                 int64
	ActivityID, ProductID int64
	Items                 []StockItem
	// Seen is the record as read before a return, confirm, cancel or
	// rollback, whose items were taken from it.
	Seen string
}

// StockReply is what stock.lua answered: Code "" for success or an API
// code; Results per item (salvage, release); Withdrawn for revoke.
type StockReply struct {
	Code      string
	Replay    bool
	Results   []string
	Withdrawn int64
}

// EncodeStockItems is the items' form in the script's arguments and records.
func EncodeStockItems(items []StockItem) string {
	var b strings.Builder
	for i, it := range items {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, "%d|%s|%d", it.SKU, it.Scope, it.Qty)
	}
	return b.String()
}

// ParseStockRecord reads a record written by stock.lua: its state (the
// marker letter, or the op of a voucher record) and the items it holds.
func ParseStockRecord(rec string) (state string, items []StockItem, err error) {
	if rec == "" {
		return "", nil, nil
	}
	parts := strings.Split(rec, "#")
	state, list := parts[0], parts[len(parts)-1]
	if list == "" {
		return state, nil, nil
	}
	for _, s := range strings.Split(list, ";") {
		f := strings.Split(s, "|")
		if len(f) != 3 {
			return "", nil, fmt.Errorf("%w: stock record item %q", ErrUnexpectedReply, s)
		}
		sku, err1 := strconv.ParseInt(f[0], 10, 64)
		qty, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return "", nil, fmt.Errorf("%w: stock record item %q", ErrUnexpectedReply, s)
		}
		items = append(items, StockItem{SKU: sku, Scope: f[1], Qty: qty})
	}
	return state, items, nil
}

// Stock runs stock.lua: one op on one activity product's SKUs, atomically.
func Stock(ctx context.Context, c redis.Scripter, k StockKeys, op StockOp) (StockReply, error) {
	keys := make([]string, 0, 2+len(op.Items))
	keys = append(keys, k.Record, k.Events)
	for _, it := range op.Items {
		keys = append(keys, k.SKU(it.SKU))
	}
	v, err := stockScript.Run(ctx, c, keys, op.Op, op.ID, op.NowMs, op.ActivityID, op.ProductID,
		EncodeStockItems(op.Items), op.Seen).Slice()
	if err != nil {
		return StockReply{}, err
	}
	if len(v) < 2 {
		return StockReply{}, fmt.Errorf("%w: stock reply %v", ErrUnexpectedReply, v)
	}
	code, _ := v[0].(string)
	replay, _ := v[1].(int64)
	r := StockReply{Code: code, Replay: replay == 1}
	for _, x := range v[2:] {
		switch x := x.(type) {
		case string:
			r.Results = append(r.Results, x)
		case int64:
			r.Withdrawn = x
		}
	}
	return r, nil
}

// StockRecord reads what op id did on a product ("" when nothing yet).
func StockRecord(ctx context.Context, c redis.Cmdable, k StockKeys, id string) (string, error) {
	s, err := c.HGet(ctx, k.Record, id).Result()
	if err == redis.Nil {
		return "", nil
	}
	return s, err
}

// StockOrderState is an order's state across products, as stock_order.lua keeps it.
type StockOrderState struct {
	State    string // "" unknown, pending, failed, returned — before the call
	Code     string // the deduct's answer once finished
	Products string // "a:p;a:p"
}

// StockOrder runs stock_order.lua: op begin (arg: the products), finish
// (arg: the deduct's code) or return; the record is kept for ttl after.
func StockOrder(ctx context.Context, c redis.Scripter, orderKey, op, arg string, ttl time.Duration) (StockOrderState, error) {
	v, err := stockOrderScript.Run(ctx, c, []string{orderKey}, op, arg, int64(ttl/time.Second)).StringSlice()
	if err != nil {
		return StockOrderState{}, err
	}
	if len(v) != 3 {
		return StockOrderState{}, fmt.Errorf("%w: stock order reply %v", ErrUnexpectedReply, v)
	}
	return StockOrderState{State: v[0], Code: v[1], Products: v[2]}, nil
}

// IndexStockVoucher notes, before a voucher's op touches product ("a:p"),
// that it does; false when the voucher was rolled back and must not run.
func IndexStockVoucher(ctx context.Context, c redis.Scripter, voucherKey, product string, ttl time.Duration) (bool, error) {
	n, err := stockVoucherScript.Run(ctx, c, []string{voucherKey}, "index", product, int64(ttl/time.Second)).Int()
	return n == 1, err
}

// RollbackStockVoucher marks a voucher rolled back, so no op of it starts
// after, and lists the products its ops touched before.
func RollbackStockVoucher(ctx context.Context, c redis.Scripter, voucherKey string, ttl time.Duration) ([]string, error) {
	return stockVoucherScript.Run(ctx, c, []string{voucherKey}, "rollback", "", int64(ttl/time.Second)).StringSlice()
}
