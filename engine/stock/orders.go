package stock

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/lua"
)

// Item is one line of an order, a TCC branch or a pool batch.
type Item struct {
	Scope      string // ScopeHighSeas or PoolScope(id); pool batches set it from the pool
	ActivityID int64
	ProductID  int64
	SKU        int64
	Qty        int64
}

// product is an activity product: activity id, product id.
type product [2]int64

func (p product) String() string { return lua.StockProduct(p[0], p[1]) }

// Deduct takes an order's items from their scopes (available → sold): all
// or nothing, idempotent by order id. A replay answers the first result; a
// deduct after the order's return is refused (ErrOrderClosed).
//
// An order of one product (a flash sale's) is one script call, sent in a
// pipeline shared with concurrent deducts. An order across products checks
// every product's availability first, in the round trip that notes the
// order (so an order that cannot succeed takes nothing), then deducts on
// each product; see deductAcross for the window that remains.
func (s *Service) Deduct(ctx context.Context, orderID string, items []Item) error {
	if err := validID("order_id", orderID); err != nil {
		return err
	}
	products, groups, err := byProduct(items)
	if err != nil {
		return err
	}
	// As grabs do: refuse new sales rather than take more than MySQL can keep up with.
	if s.core.Lagging() {
		return errs.ErrBusy
	}
	if len(products) == 1 {
		p := products[0]
		r, err := s.exec(ctx, s.run, lua.StockOp{Op: "deduct", ID: "o:" + orderID, ActivityID: p[0], ProductID: p[1], Items: groups[p]})
		if err != nil {
			return err
		}
		return codeErr(r.Code)
	}
	err = s.deductAcross(ctx, orderID, products, groups)
	if err == nil || answered(err) {
		if zerr := s.rdb.ZRem(ctx, s.keys.StockPending(), orderID).Err(); zerr != nil {
			s.log.WarnContext(ctx, "stock: order answered but still noted pending; the sweep finds it done", "order_id", orderID, "err", zerr)
		}
	}
	return err
}

// deductAcross is Deduct of an order across products. One script per
// product: a process that dies between them leaves the order half
// deducted, so the order is noted pending first (SweepOrders finds it), in
// the round trip that begins its record and checks every product. Products
// are then deducted in one pipeline; if one refuses, the others give back
// what they took and the order's record keeps the answer.
//
// The window that remains: a product whose stock another order takes
// between the check and the deduct refuses this order after others took
// their units, which they give back at once; a buyer asking for one of
// those units meanwhile is refused. Orders that can be told to fail by the
// check take nothing.
func (s *Service) deductAcross(ctx context.Context, orderID string, products []product, groups map[product][]lua.StockItem) error {
	id, list := "o:"+orderID, encodeProducts(products)
	var begin *redis.Cmd
	checks := make([]*redis.Cmd, len(products))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, s.keys.StockPending(), redis.Z{Score: float64(s.nowMs()), Member: orderID})
		begin = lua.StockOrderCmd(ctx, p, s.keys.StockOrder(orderID), "begin", list, s.cfg.VoucherTTL)
		for i, pr := range products {
			checks[i] = lua.StockCmd(ctx, p, s.keys.Stock(pr[0], pr[1]),
				lua.StockOp{Op: "check", ID: id, NowMs: s.nowMs(), ActivityID: pr[0], ProductID: pr[1], Items: groups[pr], Across: true})
		}
		return nil
	})
	if err != nil && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		return err
	}
	st, err := lua.ParseStockOrder(begin)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		st, err = lua.StockOrder(ctx, s.rdb, s.keys.StockOrder(orderID), "begin", list, s.cfg.VoucherTTL)
	}
	if err != nil {
		return err
	}
	switch st.State {
	case "returned":
		return ErrOrderClosed
	case "failed":
		return codeErr(lua.StockCodeOf(st.Code))
	case "pending":
		if st.Products != list {
			return fmt.Errorf("%w: order %s was deducted with other items", errs.ErrIdempotencyConflict, orderID)
		}
	}
	// An order no product holds yet, that some product refuses now, takes nothing.
	refused, held := lua.StockOK, false
	for i, pr := range products {
		r, err := s.checked(ctx, checks[i], lua.StockOp{Op: "check", ID: id, ActivityID: pr[0], ProductID: pr[1], Items: groups[pr], Across: true})
		if err != nil {
			return err
		}
		held = held || r.Replay && r.Code == lua.StockOK
		if r.Code != lua.StockOK && !r.Replay && refused == lua.StockOK {
			refused = r.Code
		}
	}
	if refused != lua.StockOK && !held {
		// Nothing was taken; the order's products still learn its id, so a
		// later order of one of them under that id is a conflict.
		keys := make([]lua.StockKeys, len(products))
		for i, pr := range products {
			keys[i] = s.keys.Stock(pr[0], pr[1])
		}
		if err := lua.NoteStockOrderAcross(ctx, s.rdb, keys, orderID); err != nil {
			return err
		}
		return s.finish(ctx, orderID, refused)
	}
	deducts := make([]*redis.Cmd, len(products))
	ops := make([]lua.StockOp, len(products))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pr := range products {
			ops[i] = lua.StockOp{Op: "deduct", ID: id, NowMs: s.nowMs(), ActivityID: pr[0], ProductID: pr[1], Items: groups[pr], Across: true}
			deducts[i] = lua.StockCmd(ctx, p, s.keys.Stock(pr[0], pr[1]), ops[i])
		}
		return nil
	})
	if err != nil && !redis.HasErrorPrefix(err, "NOSCRIPT") && !isReply(deducts) {
		return err // the order stays pending; a replay, its return or the sweep finishes it
	}
	code := lua.StockOK
	var done []product
	for i, pr := range products {
		r, err := s.checked(ctx, deducts[i], ops[i])
		if err != nil {
			return err
		}
		if r.Code != lua.StockOK {
			if code == lua.StockOK {
				code = r.Code
			}
			continue
		}
		done = append(done, pr)
	}
	if code == lua.StockOK || len(done) == 0 {
		// Each product's marker answers a replay: "d" deducted, or "x" with
		// the code of a refusal. A return racing this deduct either found the
		// marker and gave the stock back (deduct, then return) or left "r" and
		// refused it.
		return codeErr(code)
	}
	// All or nothing: give back what the other products took, and note the
	// answer on the order, as the products' markers now say "returned".
	for _, p := range done {
		if _, err := s.withRecord(ctx, p[0], p[1], id, "return"); err != nil {
			return err
		}
	}
	return s.finish(ctx, orderID, code)
}

// isReply: every command got an answer from Redis (a pipeline's error is
// its first command's, which may be a script's own refusal or NOSCRIPT).
func isReply(cmds []*redis.Cmd) bool {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return false
		}
	}
	return true
}

// checked reads a pipelined stock command's reply; one that did not run
// (NOSCRIPT) or found the product unverified runs again on its own.
func (s *Service) checked(ctx context.Context, cmd *redis.Cmd, op lua.StockOp) (lua.StockReply, error) {
	if !redis.HasErrorPrefix(cmd.Err(), "NOSCRIPT") {
		v, err := cmd.Slice()
		if err != nil {
			return lua.StockReply{}, err
		}
		r, err := lua.ParseStockReply(op.Op, v)
		if err != nil || r.Code != lua.StockVerify {
			return r, err
		}
	}
	return s.exec(ctx, lua.Direct(s.rdb), op)
}

// finish notes an order's refusal on its record, so a replay answers it.
func (s *Service) finish(ctx context.Context, orderID string, code lua.StockCode) error {
	st, err := lua.StockOrder(ctx, s.rdb, s.keys.StockOrder(orderID), "finish", code.String(), s.cfg.VoucherTTL)
	if err != nil {
		return err
	}
	switch st.State {
	case "returned":
		return ErrOrderClosed // returned while it ran; the return gave it all back
	case "failed":
		return codeErr(lua.StockCodeOf(st.Code)) // a concurrent replay finished first
	}
	return codeErr(code)
}

// Return gives back exactly what an order took. A return before any deduct
// succeeds and blocks that order's later deduct. Repeating it changes
// nothing.
//
// The order's products come from its record (an order across products),
// else from the shards' order index (an order of one product), else, when
// Redis lost both, from MySQL's markers. An order found nowhere is closed
// in every shard's index, and a deduct that reached a product meanwhile is
// returned there.
func (s *Service) Return(ctx context.Context, orderID string) error {
	if err := validID("order_id", orderID); err != nil {
		return err
	}
	st, err := lua.StockOrder(ctx, s.rdb, s.keys.StockOrder(orderID), "return", "", s.cfg.VoucherTTL)
	if err != nil {
		return err
	}
	var found []string
	if st.Products != "" {
		found = st.ProductList()
	} else if found, _, err = lua.FindStockOrder(ctx, s.rdb, s.keys, orderID); err != nil {
		return err
	}
	var durable [][2]int64
	if len(found) == 0 {
		// Unknown to Redis (or known only by an earlier return): the order may
		// have been lost with a dataset, so the products MySQL holds its
		// markers on are asked too; if none, it is closed everywhere.
		if durable, err = s.db.StockRecordProducts(ctx, "o:"+orderID); err != nil {
			return err
		}
		if len(durable) == 0 {
			if found, err = lua.CloseStockOrder(ctx, s.rdb, s.keys, orderID); err != nil {
				return err
			}
		}
	}
	list, err := unionProducts(found, durable)
	if err != nil {
		return err
	}
	for _, p := range list {
		if _, err := s.withRecord(ctx, p[0], p[1], "o:"+orderID, "return"); err != nil {
			return err
		}
	}
	return nil
}

// SweepOrders settles orders across products whose deduct began more than
// engine.Config.StockOrderStale ago and never answered (its process died
// between products).
// One that some but not all of its products hold is returned, so what they
// took comes back and a late replay answers ErrOrderClosed; one every
// product holds is done, and one none holds took nothing (a replay of
// either runs as it would have). It answers how many it returned.
func (s *Service) SweepOrders(ctx context.Context) (int, error) {
	before := s.nowMs() - s.cfg.OrderStale.Milliseconds()
	ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.keys.StockPending(), ByScore: true,
		Start: "-inf", Stop: strconv.FormatInt(before, 10), Count: 100}).Result()
	if err != nil {
		return 0, err
	}
	returned := 0
	for _, id := range ids {
		half, err := s.halfDeducted(ctx, id)
		if err != nil {
			return returned, err
		}
		if half {
			if err := s.Return(ctx, id); err != nil {
				return returned, err
			}
			returned++
			s.log.WarnContext(ctx, "stock: returned an order whose deduct never answered", "order_id", id)
		}
		if err := s.rdb.ZRem(ctx, s.keys.StockPending(), id).Err(); err != nil {
			return returned, err
		}
	}
	return returned, nil
}

// halfDeducted reports whether an order's deduct is still pending with
// some products holding its items and some not. Finished, returned or
// forgotten orders are not: their answer stands.
func (s *Service) halfDeducted(ctx context.Context, orderID string) (bool, error) {
	st, err := lua.ReadStockOrder(ctx, s.rdb, s.keys.StockOrder(orderID))
	if err != nil {
		return false, err
	}
	list := st.ProductList()
	if st.State != "pending" || len(list) == 0 {
		return false, nil
	}
	held := 0
	for _, ap := range list {
		p, err := parseProduct(ap)
		if err != nil {
			return false, err
		}
		rec, err := s.record(ctx, p[0], p[1], "o:"+orderID)
		if err != nil {
			return false, err
		}
		if state, _, err := lua.ParseStockRecord(rec); err != nil {
			return false, err
		} else if state == lua.StockMarkDeducted {
			held++
		}
	}
	return held > 0 && held < len(list), nil
}

// RunSweeper runs SweepOrders every engine.Config.ReconcileInterval until ctx ends.
func (s *Service) RunSweeper(ctx context.Context) error {
	return s.core.Every(ctx, s.cfg.SweepInterval, "stock order sweep", func(ctx context.Context) error {
		_, err := s.SweepOrders(ctx)
		return err
	})
}

// byProduct checks an order's or branch's items, merges repeated lines and
// groups them by activity product, in a fixed order.
func byProduct(items []Item) (products []product, groups map[product][]lua.StockItem, err error) {
	if len(items) == 0 || len(items) > MaxItems {
		return nil, nil, fmt.Errorf("%w: 1 to %d items", errs.ErrInvalidArgument, MaxItems)
	}
	groups = map[product][]lua.StockItem{}
	for _, it := range items {
		if err := validRef(it.ActivityID, it.ProductID, it.SKU); err != nil {
			return nil, nil, err
		}
		if err := validQty(it.Qty); err != nil {
			return nil, nil, err
		}
		if !validScope(it.Scope) {
			return nil, nil, fmt.Errorf("%w: scope must be high_seas or pool:<id>", errs.ErrInvalidArgument)
		}
		p := product{it.ActivityID, it.ProductID}
		g := groups[p]
		merged := false
		for i := range g {
			if g[i].SKU == it.SKU && g[i].Scope == it.Scope {
				if g[i].Qty += it.Qty; g[i].Qty > maxQty {
					return nil, nil, fmt.Errorf("%w: qty of SKU %d over %d", errs.ErrInvalidArgument, it.SKU, maxQty)
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
	slices.SortFunc(products, compareProducts)
	return products, groups, nil
}

// validScope: high_seas, or pool:<id> with an id a pool can have (1..MaxInt64).
func validScope(scope string) bool {
	if !scopeRe.MatchString(scope) {
		return false
	}
	if id, ok := strings.CutPrefix(scope, "pool:"); ok {
		_, err := strconv.ParseInt(id, 10, 64)
		return err == nil
	}
	return true
}

func compareProducts(x, y product) int {
	if x[0] != y[0] {
		return cmp.Compare(x[0], y[0])
	}
	return cmp.Compare(x[1], y[1])
}

func encodeProducts(products []product) string {
	s := make([]string, len(products))
	for i, p := range products {
		s[i] = p.String()
	}
	return lua.JoinStockProducts(s)
}

// unionProducts merges products as Redis lists them ("a:p") with products
// from MySQL, without repeats, in order.
func unionProducts(redisList []string, durable [][2]int64) ([]product, error) {
	out := make([]product, 0, len(redisList)+len(durable))
	for _, p := range durable {
		out = append(out, product(p))
	}
	for _, ap := range redisList {
		p, err := parseProduct(ap)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, compareProducts)
	return slices.Compact(out), nil
}

func parseProduct(s string) (product, error) {
	a, p, err := lua.ParseStockProduct(s)
	return product{a, p}, err
}
