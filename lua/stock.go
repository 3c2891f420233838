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

// StockVerify is stock.lua's answer when the product was loaded under
// another dataset epoch, or never: nothing ran; verify the product from
// MySQL (LoadStockRecords, then FinishStockLoad, under its load lock) and
// run the op again.
const StockVerify = "VERIFY"

// StockReply is what stock.lua answered: Code "" for success, StockVerify,
// or an API code; Results per item (salvage, release); Withdrawn for revoke.
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
	keys := make([]string, 0, 3+len(op.Items))
	keys = append(keys, k.Record, k.Events, k.Epoch)
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

// StockRecord reads what op id did on a product ("" when nothing yet), as
// Redis has it, verified or not; ReadStockRecord says which.
func StockRecord(ctx context.Context, c redis.Cmdable, k StockKeys, id string) (string, error) {
	s, err := c.HGet(ctx, k.Record, id).Result()
	if err == redis.Nil {
		return "", nil
	}
	return s, err
}

// ReadStockRecord reads what op id did on a product ("" when nothing yet).
// verify is true when the product is not verified under the current
// dataset epoch: the record may be missing or older than MySQL's, so
// verify the product and read again.
func ReadStockRecord(ctx context.Context, c redis.Cmdable, k StockKeys, id string) (rec string, verify bool, err error) {
	var epoch, ep, value *redis.StringCmd
	_, err = c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		epoch = p.Get(ctx, k.Epoch)
		ep = p.HGet(ctx, k.Record, "ep")
		value = p.HGet(ctx, k.Record, id)
		return nil
	})
	if err = realErr(err, epoch, ep, value); err != nil {
		return "", false, err
	}
	if !verified(epoch, ep) {
		return "", true, nil
	}
	return value.Val(), false, nil
}

// realErr is a transaction's error that is not a missing key or field
// (redis.Nil, which TxPipelined answers for the first such command).
func realErr(err error, cmds ...redis.Cmder) error {
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil && e != redis.Nil {
			return e
		}
	}
	if err == redis.Nil {
		return nil
	}
	return err
}

// verified: the product's epoch is the shard's, and the shard has one.
func verified(epoch, ep *redis.StringCmd) bool {
	return epoch.Err() == nil && ep.Err() == nil && epoch.Val() == ep.Val()
}

// StockCounters are one scope's counters of a SKU: total = available +
// reserved + sold.
type StockCounters struct {
	Total, Available, Reserved, Sold int64
}

// StockSKUState is a SKU's hash as stock.lua keeps it.
type StockSKUState struct {
	// Status is on, off (halted) or rev (revoked); "" when the SKU is not
	// in the activity (never submitted, or its submit was rolled back).
	Status  string
	Version int64                    // the SKU's change count; 0 when Redis has no hash for it
	Scopes  map[string]StockCounters // by scope: "high_seas", "pool:<id>"
}

// ReadStockSKU reads a SKU's counters. verify is true when the product is
// not verified under the current dataset epoch (Redis may have lost it or
// be older than MySQL): verify the product and read again.
func ReadStockSKU(ctx context.Context, c redis.Cmdable, k StockKeys, sku int64) (st StockSKUState, verify bool, err error) {
	var epoch, ep *redis.StringCmd
	var all *redis.MapStringStringCmd
	_, err = c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		epoch = p.Get(ctx, k.Epoch)
		ep = p.HGet(ctx, k.Record, "ep")
		all = p.HGetAll(ctx, k.SKU(sku))
		return nil
	})
	if err = realErr(err, epoch, ep, all); err != nil {
		return StockSKUState{}, false, err
	}
	st, err = parseStockSKU(all.Val())
	return st, !verified(epoch, ep), err
}

// parseStockSKU reads a SKU hash written by stock.lua or stock_load.lua.
func parseStockSKU(h map[string]string) (StockSKUState, error) {
	st := StockSKUState{Status: h["st"], Scopes: map[string]StockCounters{}}
	if v, ok := h["ver"]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return StockSKUState{}, fmt.Errorf("%w: SKU version %q", ErrUnexpectedReply, v)
		}
		st.Version = n
	}
	for f := range h {
		scope, ok := strings.CutSuffix(f, ":t")
		if !ok {
			continue
		}
		var c [4]int64
		for i, x := range []string{"t", "a", "r", "s"} {
			n, err := strconv.ParseInt(h[scope+":"+x], 10, 64)
			if err != nil {
				return StockSKUState{}, fmt.Errorf("%w: SKU counter %s:%s = %q", ErrUnexpectedReply, scope, x, h[scope+":"+x])
			}
			c[i] = n
		}
		st.Scopes[scope] = StockCounters{Total: c[0], Available: c[1], Reserved: c[2], Sold: c[3]}
	}
	return st, nil
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
