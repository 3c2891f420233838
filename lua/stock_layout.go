package lua

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Fields of a SKU's hash (StockKeys.SKU), as the stock scripts and
// stock_load.lua write them: its status (on, off, rev), its version, and
// per scope ("high_seas", "pool:<id>") four counters, "<scope>:t" total,
// ":a" available, ":r" reserved, ":s" sold.
const (
	skuStatus  = "st"
	skuVersion = "ver"
)

// skuCounters are the suffixes of a scope's counters, in StockCounters order.
var skuCounters = [4]string{"t", "a", "r", "s"}

// parseStockSKU reads a SKU hash written by the stock scripts or stock_load.lua.
func parseStockSKU(h map[string]string) (StockSKUState, error) {
	st := StockSKUState{Status: h[skuStatus], Scopes: map[string]StockCounters{}}
	if v, ok := h[skuVersion]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return StockSKUState{}, fmt.Errorf("%w: SKU version %q", ErrUnexpectedReply, v)
		}
		st.Version = n
	}
	for f := range h {
		scope, ok := strings.CutSuffix(f, ":"+skuCounters[0])
		if !ok {
			continue
		}
		var c [4]int64
		for i, x := range skuCounters {
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

// Record states: what a record's value (StockKeys.Record, field op id)
// starts with, before its first "#". A voucher's record starts with its op
// (submit, edit, revoke, salvage, release, rollback) instead.
const (
	StockMarkDeducted  = "d" // an order's items were deducted: "d#<items>"
	StockMarkReturned  = "r" // returned (perhaps before any deduct): "r#<items>"
	StockMarkRefused   = "x" // the deduct was refused: "x#<code>#"
	StockMarkTried     = "t" // a TCC branch reserved: "t#<items>"
	StockMarkConfirmed = "f" // confirmed: "f#<items>"
	StockMarkCancelled = "c" // cancelled: "c#<items>"
)

// Fields of an order's hash across products (Keys.StockOrder), as
// stock_order.lua writes them.
const (
	orderState      = "s" // pending, failed or returned
	orderCode       = "code"
	orderProducts   = "products"
	orderProductSep = ";"
)

// JoinStockProducts is an order's products as stock_order.lua keeps them
// (begin's argument; StockOrderState.ProductList splits them).
func JoinStockProducts(products []string) string { return strings.Join(products, orderProductSep) }

// ReadStockOrder reads an order's hash across products without changing
// it; State is "" when Redis does not know the order.
func ReadStockOrder(ctx context.Context, c redis.Cmdable, orderKey string) (StockOrderState, error) {
	v, err := c.HMGet(ctx, orderKey, orderState, orderCode, orderProducts).Result()
	if err != nil {
		return StockOrderState{}, err
	}
	var st StockOrderState
	for i, dst := range []*string{&st.State, &st.Code, &st.Products} {
		if v[i] == nil {
			continue
		}
		s, ok := v[i].(string)
		if !ok {
			return StockOrderState{}, fmt.Errorf("%w: stock order %v", ErrUnexpectedReply, v)
		}
		*dst = s
	}
	return st, nil
}

// StockProduct is an activity product's form in the order index, an
// order's products and a voucher's set: "<activity id>:<product id>".
func StockProduct(activityID, productID int64) string {
	return strconv.FormatInt(activityID, 10) + ":" + strconv.FormatInt(productID, 10)
}

// ParseStockProduct reads StockProduct's form.
func ParseStockProduct(s string) (activityID, productID int64, err error) {
	a, p, ok := strings.Cut(s, ":")
	ai, err1 := strconv.ParseInt(a, 10, 64)
	pi, err2 := strconv.ParseInt(p, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w: stock product %q", ErrUnexpectedReply, s)
	}
	return ai, pi, nil
}
