package lua

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	// Each stock script is stock_lib.lua followed by its own ops: one chunk.
	stockSaleScript    = register("stock_lib.lua", "stock_sale.lua")
	stockTCCScript     = register("stock_lib.lua", "stock_tcc.lua")
	stockVoucherScript = register("stock_lib.lua", "stock_voucher.lua")

	stockOrderScript        = register("stock_order.lua")
	stockVoucherIndexScript = register("stock_voucher_index.lua")
	stockIndexScript        = register("stock_index.lua")
)

// StockItem is one line of a stock op: a SKU, its scope ("high_seas" or
// "pool:<id>") and a quantity (for edit, a delta).
type StockItem struct {
	SKU   int64
	Scope string
	Qty   int64
}

// StockOp is one call of a stock script on one activity product.
type StockOp struct {
	// Op picks the script: deduct, return, check (stock_sale.lua); try,
	// confirm, cancel (stock_tcc.lua); submit, edit, halt, revoke, salvage,
	// release, rollback (stock_voucher.lua).
	Op                    string
	ID                    string // record field: "v:<voucher>", "o:<order>", "t:<gid>/<branch>"; "" keeps none
	NowMs                 int64
	ActivityID, ProductID int64
	Items                 []StockItem
	// Seen is the record as read before a return, confirm, cancel or
	// rollback, whose items were taken from it.
	Seen string
	// Across marks a deduct (or check) of an order across products: its
	// products are in its own record (StockOrder), not the shard's index.
	Across bool
}

// StockCode is a stock script's answer (stock_lib.lua's CODE).
type StockCode int

const (
	StockOK               StockCode = 0
	StockOutOfStock       StockCode = 1
	StockAlreadySubmitted StockCode = 2
	StockNotForSale       StockCode = 3
	StockNotFound         StockCode = 4
	StockOrderClosed      StockCode = 5
	StockRefused          StockCode = 6 // a try after its cancel, a confirm after its cancel
	StockNotTried         StockCode = 7 // a confirm of a branch never tried
	StockConfirmed        StockCode = 8 // a cancel after its confirm
	StockRolledBack       StockCode = 9
	StockConflict         StockCode = 10 // the id was used for another op or other products
	StockRetry            StockCode = 11 // the record changed since the caller read it
	// StockVerify: the product was loaded under another dataset epoch, or
	// never; nothing ran. Verify it from MySQL (LoadStockRecords, then
	// FinishStockLoad, under its load lock) and run the op again.
	StockVerify StockCode = -2
)

var stockCodeNames = map[StockCode]string{StockOK: "OK", StockOutOfStock: "OUT_OF_STOCK",
	StockAlreadySubmitted: "ALREADY_SUBMITTED", StockNotForSale: "NOT_FOR_SALE", StockNotFound: "NOT_FOUND",
	StockOrderClosed: "ORDER_CLOSED", StockRefused: "REFUSED", StockNotTried: "NOT_TRIED",
	StockConfirmed: "CONFIRMED", StockRolledBack: "ROLLED_BACK", StockConflict: "CONFLICT",
	StockRetry: "RETRY", StockVerify: "VERIFY"}

func (c StockCode) String() string {
	if s, ok := stockCodeNames[c]; ok {
		return s
	}
	return "StockCode(" + strconv.Itoa(int(c)) + ")"
}

// StockReply is what a stock script answered: Results per item (salvage,
// release); Withdrawn for revoke.
type StockReply struct {
	Code      StockCode
	Replay    bool
	Results   []StockCode
	Withdrawn int64
}

// EncodeStockItems is the items' form in records.
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

// ParseStockRecord reads a record written by a stock script: its state (the
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

// stockCall is the script, keys and arguments of op.
func stockCall(k StockKeys, op StockOp) (*redis.Script, []string, []any) {
	script, arg := stockVoucherScript, op.Seen
	switch op.Op {
	case "deduct", "check":
		script, arg = stockSaleScript, StockProduct(op.ActivityID, op.ProductID)
		if op.Across {
			arg = "*"
		}
	case "return":
		script = stockSaleScript
	case "try", "confirm", "cancel":
		script = stockTCCScript
	}
	keys := make([]string, 0, 4+len(op.Items))
	keys = append(keys, k.Record, k.Events, k.Epoch, k.Orders)
	args := make([]any, 0, 6+3*len(op.Items))
	args = append(args, op.Op, op.ID, op.NowMs, op.ActivityID, op.ProductID, arg)
	for _, it := range op.Items {
		keys = append(keys, k.SKU(it.SKU))
		args = append(args, it.SKU, it.Scope, it.Qty)
	}
	return script, keys, args
}

// Stock runs op's stock script on one activity product's SKUs, atomically,
// through r (a client, or a ScriptPipeline sharing round trips).
func Stock(ctx context.Context, r Runner, k StockKeys, op StockOp) (StockReply, error) {
	script, keys, args := stockCall(k, op)
	v, err := r.Run(ctx, script, keys, args...).Slice()
	if err != nil {
		return StockReply{}, err
	}
	return ParseStockReply(op.Op, v)
}

// StockCmd queues op's stock script on a pipeline; ParseStockReply reads
// its answer. The pipeline must be run with the scripts loaded (Preload):
// a NOSCRIPT answer means the op did not run.
func StockCmd(ctx context.Context, p redis.Pipeliner, k StockKeys, op StockOp) *redis.Cmd {
	script, keys, args := stockCall(k, op)
	return script.EvalSha(ctx, p, keys, args...)
}

// ParseStockReply reads a stock script's reply {code, replay, extra…} to op.
func ParseStockReply(op string, v []any) (StockReply, error) {
	if len(v) < 2 {
		return StockReply{}, fmt.Errorf("%w: stock reply %v", ErrUnexpectedReply, v)
	}
	code, ok1 := v[0].(int64)
	replay, ok2 := v[1].(int64)
	if !ok1 || !ok2 {
		return StockReply{}, fmt.Errorf("%w: stock reply %v", ErrUnexpectedReply, v)
	}
	r := StockReply{Code: StockCode(code), Replay: replay == 1}
	for _, x := range v[2:] {
		n, ok := x.(int64)
		if !ok {
			return StockReply{}, fmt.Errorf("%w: stock reply %v", ErrUnexpectedReply, v)
		}
		switch op {
		case "revoke":
			r.Withdrawn = n
		case "salvage", "release":
			r.Results = append(r.Results, StockCode(n))
		}
	}
	return r, nil
}

// FindStockOrder reads every shard's order index for an order: the
// products ("<a>:<p>") it deducted from alone, and whether some shard knows
// it as an order across products ("*") or closed ("!").
func FindStockOrder(ctx context.Context, c redis.Cmdable, keys Keys, orderID string) (products []string, across bool, err error) {
	cmds := make([]*redis.StringCmd, keys.Shards)
	_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := range cmds {
			cmds[s] = p.HGet(ctx, keys.StockOrders(s), "o:"+orderID)
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, false, err
	}
	for _, cmd := range cmds {
		v, err := cmd.Result()
		switch {
		case err == redis.Nil:
		case err != nil:
			return nil, false, err
		case v == "*":
			across = true
		case v != "!":
			products = append(products, v)
		}
	}
	return products, across, nil
}

// NoteStockOrderAcross notes in the order index of each product's shard
// that orderID is an order across products ("*"), where the index does not
// know it yet: for an order refused before any product took it.
func NoteStockOrderAcross(ctx context.Context, c redis.Cmdable, products []StockKeys, orderID string) error {
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range products {
			p.HSetNX(ctx, k.Orders, "o:"+orderID, "*")
		}
		return nil
	})
	return err
}

// CloseStockOrder closes an order in every shard's order index
// (stock_index.lua), for a return that found no product it deducted from:
// its later deduct is refused. It answers the products a deduct reached
// meanwhile ("<a>:<p>"), to be returned there.
func CloseStockOrder(ctx context.Context, c redis.Cmdable, keys Keys, orderID string) ([]string, error) {
	cmds := make([]*redis.Cmd, keys.Shards)
	_, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := range cmds {
			cmds[s] = stockIndexScript.EvalSha(ctx, p, []string{keys.StockOrders(s)}, "o:"+orderID)
		}
		return nil
	})
	if err != nil && err != redis.Nil && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		return nil, err
	}
	var products []string
	for s, cmd := range cmds {
		v, err := cmd.Slice()
		if redis.HasErrorPrefix(err, "NOSCRIPT") {
			v, err = stockIndexScript.Run(ctx, c, []string{keys.StockOrders(s)}, "o:"+orderID).Slice()
		}
		if err != nil {
			return nil, err
		}
		entry, err := doneStrings(v, "stock_index", 1)
		if err != nil {
			return nil, err
		}
		if e := entry[0]; e != "" && e != "*" && e != "!" {
			products = append(products, e)
		}
	}
	return products, nil
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
		ep = p.HGet(ctx, k.Record, stateEpoch)
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

// StockSKUState is a SKU's hash as the stock scripts keep it.
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
		ep = p.HGet(ctx, k.Record, stateEpoch)
		all = p.HGetAll(ctx, k.SKU(sku))
		return nil
	})
	if err = realErr(err, epoch, ep, all); err != nil {
		return StockSKUState{}, false, err
	}
	st, err = parseStockSKU(all.Val())
	return st, !verified(epoch, ep), err
}

// StockSKU reads a SKU's hash as Redis has it, verified or not (ReadStockSKU
// says which); a SKU Redis has no hash for is the zero StockSKUState.
func StockSKU(ctx context.Context, c redis.Cmdable, k StockKeys, sku int64) (StockSKUState, error) {
	h, err := c.HGetAll(ctx, k.SKU(sku)).Result()
	if err != nil {
		return StockSKUState{}, err
	}
	return parseStockSKU(h)
}

// StockOrderState is an order's state across products, as stock_order.lua keeps it.
type StockOrderState struct {
	State    string // "" unknown, pending, failed, returned — before the call
	Code     string // the deduct's answer once finished
	Products string // "a:p;a:p" (StockProduct), as begin was given it
}

// ProductList is the order's products, each "a:p" (ParseStockProduct).
func (s StockOrderState) ProductList() []string {
	if s.Products == "" {
		return nil
	}
	return strings.Split(s.Products, orderProductSep)
}

// StockOrder runs stock_order.lua: op begin (arg: the products), finish
// (arg: the deduct's code) or return; the record is kept for ttl after.
func StockOrder(ctx context.Context, c redis.Scripter, orderKey, op, arg string, ttl time.Duration) (StockOrderState, error) {
	return readStockOrder(stockOrderScript.Run(ctx, c, []string{orderKey}, op, arg, int64(ttl/time.Second)))
}

// StockOrderCmd queues stock_order.lua on a pipeline (see StockOrder);
// ParseStockOrder reads its answer.
func StockOrderCmd(ctx context.Context, p redis.Pipeliner, orderKey, op, arg string, ttl time.Duration) *redis.Cmd {
	return stockOrderScript.EvalSha(ctx, p, []string{orderKey}, op, arg, int64(ttl/time.Second))
}

// ParseStockOrder reads the answer of a StockOrderCmd.
func ParseStockOrder(cmd *redis.Cmd) (StockOrderState, error) { return readStockOrder(cmd) }

func readStockOrder(cmd *redis.Cmd) (StockOrderState, error) {
	reply, err := cmd.Slice()
	if err != nil {
		return StockOrderState{}, err
	}
	v, err := doneStrings(reply, "stock_order", 3)
	if err != nil {
		return StockOrderState{}, err
	}
	return StockOrderState{State: v[0], Code: v[1], Products: v[2]}, nil
}

// StockCodeOf is the code named name (as records and order states keep
// them); unknown names are -1.
func StockCodeOf(name string) StockCode {
	for c, n := range stockCodeNames {
		if n == name {
			return c
		}
	}
	return -1
}

// IndexStockVoucher notes, before a voucher's op touches product ("a:p"),
// that it does; false when the voucher was rolled back and must not run.
func IndexStockVoucher(ctx context.Context, c redis.Scripter, voucherKey, product string, ttl time.Duration) (bool, error) {
	v, err := stockVoucherIndexScript.Run(ctx, c, []string{voucherKey}, "index", product, int64(ttl/time.Second)).Slice()
	if err != nil {
		return false, err
	}
	code, err := onlyCode(v, "stock_voucher_index", 0, 1)
	return code == 0, err
}

// RollbackStockVoucher marks a voucher rolled back, so no op of it starts
// after, and lists the products its ops touched before.
func RollbackStockVoucher(ctx context.Context, c redis.Scripter, voucherKey string, ttl time.Duration) ([]string, error) {
	v, err := stockVoucherIndexScript.Run(ctx, c, []string{voucherKey}, "rollback", "", int64(ttl/time.Second)).Slice()
	if err != nil {
		return nil, err
	}
	return doneStrings(v, "stock_voucher_index", -1)
}

// StockRecordRank is a record's rank, which is how a verification tells
// the more advanced of two values of one record: 2 for a terminal record
// (rollback, r returned, f confirmed, c cancelled), 1 for a first one (a
// voucher's answer, d, x, t). A record only ever moves to a higher rank.
func StockRecordRank(value string) int {
	state, _, _ := strings.Cut(value, "#")
	switch state {
	case "rollback", "r", "f", "c":
		return 2
	}
	return 1
}
