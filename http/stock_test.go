package http_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/stock"
)

// The stock API runs on the unit setup: the engine's stock scripts on
// miniredis, no services needed.

const (
	stockAct  = 1
	stockProd = 2
)

func skuURL(sku any) string {
	return fmt.Sprintf("/v1/admin/activities/%d/products/%d/skus/%v", stockAct, stockProd, sku)
}

var submitURL = fmt.Sprintf("/v1/admin/activities/%d/products/%d/skus", stockAct, stockProd)

// counters is one scope's {total, available, reserved, sold}.
type counters [4]int64

// skuState is what GET answers for a SKU, read back exactly.
type skuState struct {
	forSale, revoked bool
	highSeas         counters
	pools            map[string]counters
}

func readCounters(t *testing.T, what string, v any) counters {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("%s = %#v, want an object", what, v)
	}
	keys(t, what, m, "total", "available", "reserved", "sold")
	return counters{integer(t, what+".total", m["total"]), integer(t, what+".available", m["available"]),
		integer(t, what+".reserved", m["reserved"]), integer(t, what+".sold", m["sold"])}
}

// getSKU reads a SKU through GET and checks the response's shape.
func (e *env) getSKU(t *testing.T, sku int64) skuState {
	t.Helper()
	m := expect(t, e.do(t, "GET", skuURL(sku), ``, admin()), 200)
	keys(t, "sku", m, "activity_id", "product_id", "sku_id", "for_sale", "revoked", "high_seas", "pools")
	if integer(t, "activity_id", m["activity_id"]) != stockAct || integer(t, "product_id", m["product_id"]) != stockProd ||
		integer(t, "sku_id", m["sku_id"]) != sku {
		t.Fatalf("sku ids = %v", m)
	}
	s := skuState{pools: map[string]counters{}}
	var ok1, ok2 bool
	s.forSale, ok1 = m["for_sale"].(bool)
	s.revoked, ok2 = m["revoked"].(bool)
	if !ok1 || !ok2 {
		t.Fatalf("for_sale, revoked = %#v, %#v", m["for_sale"], m["revoked"])
	}
	s.highSeas = readCounters(t, "high_seas", m["high_seas"])
	pools, ok := m["pools"].(map[string]any)
	if !ok {
		t.Fatalf("pools = %#v, want an object", m["pools"])
	}
	for p, v := range pools {
		s.pools[p] = readCounters(t, "pools."+p, v)
	}
	return s
}

func (e *env) wantSKU(t *testing.T, sku int64, want skuState) {
	t.Helper()
	if want.pools == nil {
		want.pools = map[string]counters{}
	}
	if got := e.getSKU(t, sku); !reflect.DeepEqual(got, want) {
		t.Fatalf("SKU %d = %+v, want %+v", sku, got, want)
	}
}

func onSale(hs counters, pools map[string]counters) skuState {
	return skuState{forSale: true, highSeas: hs, pools: pools}
}

// wantOK expects 200 {"ok": true}.
func wantOK(t *testing.T, r response) {
	t.Helper()
	m := expect(t, r, 200)
	keys(t, "ok response", m, "ok")
	if m["ok"] != true {
		t.Fatalf("ok = %v", m)
	}
}

func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d: %s", r.status, status, r.body)
	}
	if got := r.errorCode(t); got != code {
		t.Fatalf("code = %s, want %s: %s", got, code, r.body)
	}
}

// itemCodes reads a per-item answer: the codes in order, "" for an item that succeeded.
func itemCodes(t *testing.T, r response, skus ...int64) []string {
	t.Helper()
	m := expect(t, r, 200)
	keys(t, "pool response", m, "results")
	list, ok := m["results"].([]any)
	if !ok || len(list) != len(skus) {
		t.Fatalf("results = %#v, want %d of them", m["results"], len(skus))
	}
	codes := make([]string, len(list))
	for i, v := range list {
		res := v.(map[string]any)
		if integer(t, "sku_id", res["sku_id"]) != skus[i] {
			t.Fatalf("result %d = %v, want SKU %d", i, res, skus[i])
		}
		switch res["ok"] {
		case true:
			keys(t, "ok result", res, "sku_id", "ok")
		case false:
			keys(t, "failed result", res, "sku_id", "ok", "code", "message")
			codes[i], _ = res["code"].(string)
			if codes[i] == "" {
				t.Fatalf("result %d without a code: %v", i, res)
			}
		default:
			t.Fatalf("result %d: ok = %#v", i, res["ok"])
		}
	}
	return codes
}

func poolBody(voucher string, items ...[2]int64) string {
	parts := make([]string, len(items))
	for i, it := range items {
		parts[i] = fmt.Sprintf(`{"activity_id":%d,"product_id":%d,"sku_id":%d,"qty":%d}`, stockAct, stockProd, it[0], it[1])
	}
	return fmt.Sprintf(`{"voucher":%q,"items":[%s]}`, voucher, strings.Join(parts, ","))
}

// line is one item of an order or a TCC branch.
type line struct {
	scope    string
	sku, qty int64
}

func itemsJSON(lines ...line) string {
	parts := make([]string, len(lines))
	for i, l := range lines {
		parts[i] = fmt.Sprintf(`{"scope":%q,"activity_id":%d,"product_id":%d,"sku_id":%d,"qty":%d}`, l.scope, stockAct, stockProd, l.sku, l.qty)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// orderBody builds a deduct body; orderID is raw JSON (a string literal or an integer).
func orderBody(orderID string, lines ...line) string {
	return `{"order_id":` + orderID + `,"items":` + itemsJSON(lines...) + `}`
}

func tccURL(phase, gid, branch string) string {
	return fmt.Sprintf("/v1/stock/tcc/%s?gid=%s&branch_id=%s&trans_type=tcc&op=%s", phase, gid, branch, phase)
}

// wantDTM expects a dtm answer: 200 SUCCESS, or status with FAILURE and code.
func wantDTM(t *testing.T, r response, status int, code string) {
	t.Helper()
	m := expect(t, r, status)
	if status == 200 {
		keys(t, "dtm success", m, "dtm_result")
		if m["dtm_result"] != "SUCCESS" {
			t.Fatalf("dtm answer = %v", m)
		}
		return
	}
	keys(t, "dtm failure", m, "dtm_result", "error")
	if m["dtm_result"] != "FAILURE" || r.errorCode(t) != code {
		t.Fatalf("dtm answer = %s, want FAILURE %s", r.body, code)
	}
}

func TestStockHappyPath(t *testing.T) {
	e := setup(t)
	hs := "high_seas"

	// Submit, all or nothing, once per voucher.
	for range 2 {
		wantOK(t, e.do(t, "POST", submitURL, `{"voucher":"sub-1","skus":[{"sku_id":10,"stock":100},{"sku_id":11,"stock":5}]}`, admin()))
	}
	wantError(t, e.do(t, "POST", submitURL, `{"voucher":"sub-2","skus":[{"sku_id":12,"stock":1},{"sku_id":10,"stock":1}]}`, admin()), 409, "ALREADY_SUBMITTED")
	wantError(t, e.do(t, "GET", skuURL(12), ``, admin()), 404, "NOT_FOUND")
	e.wantSKU(t, 10, onSale(counters{100, 100, 0, 0}, nil))
	e.wantSKU(t, 11, onSale(counters{5, 5, 0, 0}, nil))

	// Edit by a delta, negative too.
	wantOK(t, e.do(t, "PATCH", skuURL(10), `{"voucher":"edit-1","delta":-10}`, admin()))
	wantOK(t, e.do(t, "PATCH", skuURL(10), `{"voucher":"edit-1","delta":-10}`, admin())) // replay
	e.wantSKU(t, 10, onSale(counters{90, 90, 0, 0}, nil))

	// Salvage into pool 3: per-item results in request order, HTTP 200.
	salvage := poolBody("salv-1", [2]int64{10, 30}, [2]int64{11, 6}, [2]int64{99, 1})
	for range 2 { // the replay answers the first results
		codes := itemCodes(t, e.do(t, "POST", "/v1/admin/pools/3/salvage", salvage, admin()), 10, 11, 99)
		if !slices.Equal(codes, []string{"", "OUT_OF_STOCK", "NOT_FOUND"}) {
			t.Fatalf("salvage codes = %q", codes)
		}
	}
	e.wantSKU(t, 10, onSale(counters{60, 60, 0, 0}, map[string]counters{"3": {30, 30, 0, 0}}))
	e.wantSKU(t, 11, onSale(counters{5, 5, 0, 0}, nil))

	// Deduct from both scopes; an integer order id is its decimal string.
	deduct := orderBody(`1001`, line{hs, 10, 5}, line{"pool:3", 10, 7}, line{hs, 10, 1})
	wantOK(t, e.do(t, "POST", "/v1/stock/deduct", deduct, admin()))
	wantOK(t, e.do(t, "POST", "/v1/stock/deduct", orderBody(`"1001"`, line{hs, 10, 5}, line{"pool:3", 10, 7}, line{hs, 10, 1}), admin()))
	sold := onSale(counters{60, 54, 0, 6}, map[string]counters{"3": {30, 23, 0, 7}})
	e.wantSKU(t, 10, sold)

	// Release some of the pool back.
	codes := itemCodes(t, e.do(t, "POST", "/v1/admin/pools/3/release", poolBody("rel-1", [2]int64{10, 3}), admin()), 10)
	if !slices.Equal(codes, []string{""}) {
		t.Fatalf("release codes = %q", codes)
	}
	e.wantSKU(t, 10, onSale(counters{63, 57, 0, 6}, map[string]counters{"3": {27, 20, 0, 7}}))

	// Return, by string or integer id, any number of times; the order is then closed.
	wantOK(t, e.do(t, "POST", "/v1/stock/return", `{"order_id":"1001"}`, admin()))
	wantOK(t, e.do(t, "POST", "/v1/stock/return", `{"order_id":1001}`, admin()))
	back := onSale(counters{63, 63, 0, 0}, map[string]counters{"3": {27, 27, 0, 0}})
	e.wantSKU(t, 10, back)
	wantError(t, e.do(t, "POST", "/v1/stock/deduct", deduct, admin()), 409, "ORDER_CLOSED")
	e.wantSKU(t, 10, back)

	// A return with no deduct succeeds and blocks that order's deduct.
	wantOK(t, e.do(t, "POST", "/v1/stock/return", `{"order_id":"never-deducted"}`, admin()))
	wantError(t, e.do(t, "POST", "/v1/stock/deduct", orderBody(`"never-deducted"`, line{hs, 10, 1}), admin()), 409, "ORDER_CLOSED")
	e.wantSKU(t, 10, back)

	// Rollbacks: the release, then the salvage; the replayed release is then refused.
	wantOK(t, e.do(t, "POST", "/v1/admin/vouchers/rel-1/rollback", ``, admin()))
	wantOK(t, e.do(t, "POST", "/v1/admin/vouchers/rel-1/rollback", `{}`, admin()))
	e.wantSKU(t, 10, onSale(counters{60, 60, 0, 0}, map[string]counters{"3": {30, 30, 0, 0}}))
	wantOK(t, e.do(t, "POST", "/v1/admin/vouchers/salv-1/rollback", ``, admin()))
	e.wantSKU(t, 10, onSale(counters{90, 90, 0, 0}, nil))
	wantError(t, e.do(t, "POST", "/v1/admin/pools/3/release", poolBody("rel-1", [2]int64{10, 3}), admin()), 409, "ROLLED_BACK")
	// A voucher rolled back before it ran is dead: its op, arriving late, is refused.
	wantOK(t, e.do(t, "POST", "/v1/admin/vouchers/late-edit/rollback", ``, admin()))
	wantError(t, e.do(t, "PATCH", skuURL(10), `{"voucher":"late-edit","delta":1}`, admin()), 409, "ROLLED_BACK")
	e.wantSKU(t, 10, onSale(counters{90, 90, 0, 0}, nil))

	// Revoke: what is available leaves the activity; a revoke is not rolled back.
	for range 2 {
		m := expect(t, e.do(t, "DELETE", skuURL(11), `{"voucher":"rev-1"}`, admin()), 200)
		keys(t, "revoke", m, "withdrawn")
		if integer(t, "withdrawn", m["withdrawn"]) != 5 {
			t.Fatalf("revoke = %v", m)
		}
	}
	revoked := skuState{revoked: true, highSeas: counters{0, 0, 0, 0}}
	e.wantSKU(t, 11, revoked)
	wantError(t, e.do(t, "POST", "/v1/admin/vouchers/rev-1/rollback", ``, admin()), 409, "NOT_FOR_SALE")
	e.wantSKU(t, 11, revoked)
	wantError(t, e.do(t, "POST", "/v1/stock/deduct", orderBody(`"after-revoke"`, line{hs, 11, 1}), admin()), 404, "NOT_FOUND")

	// A voucher names one operation.
	wantError(t, e.do(t, "PATCH", skuURL(10), `{"voucher":"sub-1","delta":1}`, admin()), 409, "IDEMPOTENCY_CONFLICT")

	// Forced exit: not for sale, then revoked; repeatable.
	wantOK(t, e.do(t, "POST", skuURL(10)+"/exit", ``, admin()))
	wantOK(t, e.do(t, "POST", skuURL(10)+"/exit", `{}`, admin()))
	e.wantSKU(t, 10, revoked)
	codes = itemCodes(t, e.do(t, "POST", "/v1/admin/pools/3/salvage", poolBody("salv-2", [2]int64{10, 1}), admin()), 10)
	if !slices.Equal(codes, []string{"NOT_FOUND"}) {
		t.Fatalf("salvage of an exited SKU: codes = %q", codes)
	}
}

func TestStockTCC(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	if err := e.Stock.Submit(ctx, "sub", stockAct, stockProd, []stock.SKUStock{{SKU: 10, Stock: 10}}); err != nil {
		t.Fatal(err)
	}
	body := `{"items":` + itemsJSON(line{"high_seas", 10, 4}) + `}`

	// Try reserves, confirm sells; repeats are no-ops.
	for range 2 {
		wantDTM(t, e.do(t, "POST", tccURL("try", "g1", "01"), body, admin()), 200, "")
	}
	e.wantSKU(t, 10, onSale(counters{10, 6, 4, 0}, nil))
	for range 2 {
		wantDTM(t, e.do(t, "POST", tccURL("confirm", "g1", "01"), body, admin()), 200, "")
	}
	e.wantSKU(t, 10, onSale(counters{10, 6, 0, 4}, nil))
	// A cancel after the confirm succeeds (dtm retries anything else forever) and undoes nothing.
	wantDTM(t, e.do(t, "POST", tccURL("cancel", "g1", "01"), body, admin()), 200, "")
	e.wantSKU(t, 10, onSale(counters{10, 6, 0, 4}, nil))

	// Try then cancel gives the reservation back; the body may carry the deduct's order_id.
	withOrder := `{"order_id":77,"items":` + itemsJSON(line{"high_seas", 10, 2}) + `}`
	wantDTM(t, e.do(t, "POST", tccURL("try", "g2", "01"), withOrder, admin()), 200, "")
	e.wantSKU(t, 10, onSale(counters{10, 4, 2, 4}, nil))
	for range 2 {
		wantDTM(t, e.do(t, "POST", tccURL("cancel", "g2", "01"), withOrder, admin()), 200, "")
	}
	e.wantSKU(t, 10, onSale(counters{10, 6, 0, 4}, nil))

	// Cancel before try (null compensation) succeeds; the late try is refused (no hanging).
	wantDTM(t, e.do(t, "POST", tccURL("cancel", "g3", "01"), body, admin()), 200, "")
	wantDTM(t, e.do(t, "POST", tccURL("try", "g3", "01"), body, admin()), 409, "TCC_REFUSED")
	e.wantSKU(t, 10, onSale(counters{10, 6, 0, 4}, nil))

	// Business failures are 409 FAILURE; bad input is 400 FAILURE; neither changes anything.
	for _, c := range []struct {
		name, url, body string
		status          int
		code            string
	}{
		{"try over available", tccURL("try", "g5", "01"), `{"items":` + itemsJSON(line{"high_seas", 10, 7}) + `}`, 409, "OUT_OF_STOCK"},
		{"try empty pool", tccURL("try", "g6", "01"), `{"items":` + itemsJSON(line{"pool:3", 10, 1}) + `}`, 409, "OUT_OF_STOCK"},
		{"try unknown SKU", tccURL("try", "g7", "01"), `{"items":` + itemsJSON(line{"high_seas", 99, 1}) + `}`, 409, "NOT_FOUND"},
		{"try all or nothing", tccURL("try", "g8", "01"), `{"items":` + itemsJSON(line{"high_seas", 10, 1}, line{"high_seas", 99, 1}) + `}`, 409, "NOT_FOUND"},
		{"try scope typo", tccURL("try", "g9", "01"), `{"items":` + itemsJSON(line{"highseas", 10, 1}) + `}`, 400, "INVALID_ARGUMENT"},
		{"try qty 0", tccURL("try", "g9", "01"), `{"items":` + itemsJSON(line{"high_seas", 10, 0}) + `}`, 400, "INVALID_ARGUMENT"},
		{"try without gid", "/v1/stock/tcc/try?branch_id=01", body, 400, "INVALID_ARGUMENT"},
		{"try without branch", "/v1/stock/tcc/try?gid=g9", body, 400, "INVALID_ARGUMENT"},
		{"try bad gid", tccURL("try", "g%20x", "01"), body, 400, "INVALID_ARGUMENT"},
		{"try unknown field", tccURL("try", "g9", "01"), `{"items":[],"gid":"g9"}`, 400, "INVALID_ARGUMENT"},
		{"try no body", tccURL("try", "g9", "01"), ``, 400, "INVALID_ARGUMENT"},
		{"try float order id", tccURL("try", "g9", "01"), `{"order_id":1.5,"items":` + itemsJSON(line{"high_seas", 10, 1}) + `}`, 400, "INVALID_ARGUMENT"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantDTM(t, e.do(t, "POST", c.url, c.body, admin()), c.status, c.code)
			e.wantSKU(t, 10, onSale(counters{10, 6, 0, 4}, nil))
		})
	}
	// The refused and failed tries left nothing behind: their cancels change nothing.
	wantDTM(t, e.do(t, "POST", tccURL("cancel", "g5", "01"), body, admin()), 200, "")
	wantDTM(t, e.do(t, "POST", tccURL("cancel", "g8", "01"), body, admin()), 200, "")
	e.wantSKU(t, 10, onSale(counters{10, 6, 0, 4}, nil))

	// Not a dtm-protocol matter: credentials.
	wantError(t, e.do(t, "POST", tccURL("try", "g9", "01"), body, nil), 401, "UNAUTHENTICATED")
	wantError(t, e.do(t, "POST", tccURL("try", "g9", "01"), body, user(1)), 403, "FORBIDDEN")
	e.wantSKU(t, 10, onSale(counters{10, 6, 0, 4}, nil))
}

// stockSnapshot is every SKU a rejected request could have touched.
type stockSnapshot map[string]string

func takeStockSnapshot(t *testing.T, e *env) stockSnapshot {
	t.Helper()
	s := stockSnapshot{}
	for _, ref := range [][3]int64{{stockAct, stockProd, 10}, {stockAct, stockProd, 11}, {stockAct, stockProd, 12},
		{stockAct, stockProd, 99}, {stockAct, 3, 10}} {
		v, err := e.Stock.SKU(context.Background(), ref[0], ref[1], ref[2])
		switch {
		case errors.Is(err, engine.ErrNotFound):
			s[fmt.Sprint(ref)] = "not found"
		case err != nil:
			t.Fatal(err)
		default:
			s[fmt.Sprintf("%v", ref)] = fmt.Sprintf("%+v", v)
		}
	}
	return s
}

func TestStockMalformedInput(t *testing.T) {
	e := setup(t)
	ctx := context.Background()
	// SKU 10: 100 submitted, 20 in pool 3, 2 sold from the high seas. SKU 11: 5. SKU 12 never submitted.
	if err := e.Stock.Submit(ctx, "seed-sub", stockAct, stockProd, []stock.SKUStock{{SKU: 10, Stock: 100}, {SKU: 11, Stock: 5}}); err != nil {
		t.Fatal(err)
	}
	if res, err := e.Stock.MovePool(ctx, true, "seed-salv", 3, []stock.Item{{ActivityID: stockAct, ProductID: stockProd, SKU: 10, Qty: 20}}); err != nil || res[0].Err != nil {
		t.Fatal(err, res)
	}
	if err := e.Stock.Deduct(ctx, "seed-order", []stock.Item{{Scope: "high_seas", ActivityID: stockAct, ProductID: stockProd, SKU: 10, Qty: 2}}); err != nil {
		t.Fatal(err)
	}
	e.wantSKU(t, 10, onSale(counters{80, 78, 0, 2}, map[string]counters{"3": {20, 20, 0, 0}}))

	hs := "high_seas"
	deduct, ret := "/v1/stock/deduct", "/v1/stock/return"
	salvage, release := "/v1/admin/pools/3/salvage", "/v1/admin/pools/3/release"
	item := `{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10,"qty":1}`
	tooBig := `{"order_id":"big","items":[` + item + `],"x":"` + strings.Repeat("x", 70<<10) + `"}`
	manyItems := strings.TrimSuffix(strings.Repeat(item+",", 101), ",")
	bearer := func(tok string) auth { return auth{"Authorization": "Bearer " + tok} }

	type tc struct {
		name         string
		method, path string
		body         string
		auth         auth
		status       int
		code         string   // the error code (not for 200)
		items        []string // 200 only: the per-item codes
	}
	bad := func(name, method, path, body string) tc {
		return tc{name: name, method: method, path: path, body: body, auth: admin(), status: 400, code: "INVALID_ARGUMENT"}
	}
	is := func(name, method, path, body string, status int, code string) tc {
		return tc{name: name, method: method, path: path, body: body, auth: admin(), status: status, code: code}
	}
	perItem := func(name, path, body string, codes ...string) tc {
		return tc{name: name, method: "POST", path: path, body: body, auth: admin(), status: 200, items: codes}
	}
	cases := []tc{
		// Deduct: quantities, scopes, SKUs.
		bad("deduct negative qty", "POST", deduct, orderBody(`"d1"`, line{hs, 10, -1})),
		bad("deduct qty 0", "POST", deduct, orderBody(`"d2"`, line{hs, 10, 0})),
		bad("deduct qty over the maximum", "POST", deduct, orderBody(`"d3"`, line{hs, 10, 1_000_000_001})),
		bad("deduct qty overflow", "POST", deduct, `{"order_id":"d4","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10,"qty":99999999999999999999}]}`),
		bad("deduct qty string", "POST", deduct, `{"order_id":"d5","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10,"qty":"1"}]}`),
		bad("deduct qty float", "POST", deduct, `{"order_id":"d6","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10,"qty":1.5}]}`),
		is("deduct unknown SKU", "POST", deduct, orderBody(`"d7"`, line{hs, 99, 1}), 404, "NOT_FOUND"),
		is("deduct never-submitted SKU", "POST", deduct, orderBody(`"d8"`, line{hs, 12, 1}), 404, "NOT_FOUND"),
		is("deduct all or nothing, unknown SKU", "POST", deduct, orderBody(`"d9"`, line{hs, 10, 5}, line{hs, 99, 1}), 404, "NOT_FOUND"),
		bad("deduct scope pool:x", "POST", deduct, orderBody(`"d10"`, line{"pool:x", 10, 1})),
		bad("deduct scope highseas", "POST", deduct, orderBody(`"d11"`, line{"highseas", 10, 1})),
		bad("deduct scope pool:0", "POST", deduct, orderBody(`"d12"`, line{"pool:0", 10, 1})),
		bad("deduct scope pool:-3", "POST", deduct, orderBody(`"d13"`, line{"pool:-3", 10, 1})),
		bad("deduct scope HIGH_SEAS", "POST", deduct, orderBody(`"d14"`, line{"HIGH_SEAS", 10, 1})),
		bad("deduct scope empty", "POST", deduct, orderBody(`"d15"`, line{"", 10, 1})),
		is("deduct over available", "POST", deduct, orderBody(`"d16"`, line{hs, 10, 79}), 409, "OUT_OF_STOCK"),
		is("deduct over available, merged lines", "POST", deduct, orderBody(`"d17"`, line{hs, 10, 40}, line{hs, 10, 39}), 409, "OUT_OF_STOCK"),
		is("deduct over the pool", "POST", deduct, orderBody(`"d18"`, line{"pool:3", 10, 21}), 409, "OUT_OF_STOCK"),
		is("deduct from an empty pool", "POST", deduct, orderBody(`"d19"`, line{"pool:4", 10, 1}), 409, "OUT_OF_STOCK"),
		is("deduct all or nothing, one line short", "POST", deduct, orderBody(`"d20"`, line{hs, 10, 5}, line{"pool:3", 10, 21}), 409, "OUT_OF_STOCK"),
		is("deduct all or nothing, other product", "POST", deduct, `{"order_id":"d21","items":[`+item+`,{"scope":"high_seas","activity_id":1,"product_id":3,"sku_id":10,"qty":1}]}`, 404, "NOT_FOUND"),
		is("deduct replay of a finished order answers its first result", "POST", deduct, orderBody(`"seed-order"`, line{hs, 10, 3}), 200, ""),
		// Deduct: ids and shapes.
		bad("deduct missing order id", "POST", deduct, `{"items":[`+item+`]}`),
		bad("deduct null order id", "POST", deduct, `{"order_id":null,"items":[`+item+`]}`),
		bad("deduct empty order id", "POST", deduct, orderBody(`""`, line{hs, 10, 1})),
		bad("deduct order id too long", "POST", deduct, orderBody(`"`+strings.Repeat("o", 65)+`"`, line{hs, 10, 1})),
		bad("deduct order id with a space", "POST", deduct, orderBody(`"a b"`, line{hs, 10, 1})),
		bad("deduct order id with a slash", "POST", deduct, orderBody(`"a/b"`, line{hs, 10, 1})),
		bad("deduct order id float", "POST", deduct, orderBody(`1.5`, line{hs, 10, 1})),
		bad("deduct order id exponent", "POST", deduct, orderBody(`1e3`, line{hs, 10, 1})),
		bad("deduct order id negative", "POST", deduct, orderBody(`-5`, line{hs, 10, 1})),
		bad("deduct order id zero", "POST", deduct, orderBody(`0`, line{hs, 10, 1})),
		bad("deduct order id of 65 digits", "POST", deduct, orderBody("1"+strings.Repeat("0", 64), line{hs, 10, 1})),
		bad("deduct order id bool", "POST", deduct, orderBody(`true`, line{hs, 10, 1})),
		bad("deduct order id object", "POST", deduct, orderBody(`{"id":1}`, line{hs, 10, 1})),
		bad("deduct missing items", "POST", deduct, `{"order_id":"d30"}`),
		bad("deduct null items", "POST", deduct, `{"order_id":"d31","items":null}`),
		bad("deduct no items", "POST", deduct, `{"order_id":"d32","items":[]}`),
		bad("deduct 101 items", "POST", deduct, `{"order_id":"d33","items":[`+manyItems+`]}`),
		bad("deduct item not an object", "POST", deduct, `{"order_id":"d34","items":[5]}`),
		bad("deduct null item", "POST", deduct, `{"order_id":"d35","items":[null]}`),
		bad("deduct item missing scope", "POST", deduct, `{"order_id":"d36","items":[{"activity_id":1,"product_id":2,"sku_id":10,"qty":1}]}`),
		bad("deduct item missing qty", "POST", deduct, `{"order_id":"d37","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10}]}`),
		bad("deduct item missing sku", "POST", deduct, `{"order_id":"d38","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"qty":1}]}`),
		bad("deduct item sku 0", "POST", deduct, `{"order_id":"d39","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":0,"qty":1}]}`),
		bad("deduct item negative activity", "POST", deduct, `{"order_id":"d40","items":[{"scope":"high_seas","activity_id":-1,"product_id":2,"sku_id":10,"qty":1}]}`),
		bad("deduct item unknown field", "POST", deduct, `{"order_id":"d41","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10,"qty":1,"pool":3}]}`),
		bad("deduct item key in other case", "POST", deduct, `{"order_id":"d42","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10,"Qty":1}]}`),
		bad("deduct item repeated key", "POST", deduct, `{"order_id":"d43","items":[{"scope":"high_seas","activity_id":1,"product_id":2,"sku_id":10,"qty":1,"qty":50}]}`),
		bad("deduct unknown field", "POST", deduct, `{"order_id":"d44","items":[`+item+`],"voucher":"v"}`),
		bad("deduct trailing garbage", "POST", deduct, `{"order_id":"d45","items":[`+item+`]} x`),
		bad("deduct missing body", "POST", deduct, ``),
		bad("deduct array body", "POST", deduct, `[`+item+`]`),
		{name: "deduct body over 64 KiB", method: "POST", path: deduct, body: tooBig, auth: admin(), status: 413, code: "PAYLOAD_TOO_LARGE"},
		{name: "deduct without credentials", method: "POST", path: deduct, body: orderBody(`"d46"`, line{hs, 10, 1}), status: 401, code: "UNAUTHENTICATED"},
		{name: "deduct with a wrong token", method: "POST", path: deduct, body: orderBody(`"d46"`, line{hs, 10, 1}), auth: bearer("nope"), status: 401, code: "UNAUTHENTICATED"},
		{name: "deduct with a user token", method: "POST", path: deduct, body: orderBody(`"d46"`, line{hs, 10, 1}), auth: user(1), status: 403, code: "FORBIDDEN"},
		is("deduct by GET", "GET", deduct, ``, 405, "METHOD_NOT_ALLOWED"),

		// Return.
		bad("return missing order id", "POST", ret, `{}`),
		bad("return order id bool", "POST", ret, `{"order_id":false}`),
		bad("return bad order id", "POST", ret, `{"order_id":"a b"}`),
		bad("return unknown field", "POST", ret, `{"order_id":"seed-order","items":[]}`),
		bad("return missing body", "POST", ret, ``),

		// Submit.
		bad("submit missing voucher", "POST", submitURL, `{"skus":[{"sku_id":12,"stock":1}]}`),
		bad("submit empty voucher", "POST", submitURL, `{"voucher":"","skus":[{"sku_id":12,"stock":1}]}`),
		bad("submit voucher with a space", "POST", submitURL, `{"voucher":"a b","skus":[{"sku_id":12,"stock":1}]}`),
		bad("submit voucher number", "POST", submitURL, `{"voucher":5,"skus":[{"sku_id":12,"stock":1}]}`),
		bad("submit missing skus", "POST", submitURL, `{"voucher":"s1"}`),
		bad("submit no skus", "POST", submitURL, `{"voucher":"s2","skus":[]}`),
		bad("submit negative stock", "POST", submitURL, `{"voucher":"s3","skus":[{"sku_id":12,"stock":-1}]}`),
		bad("submit stock string", "POST", submitURL, `{"voucher":"s4","skus":[{"sku_id":12,"stock":"1"}]}`),
		bad("submit missing stock", "POST", submitURL, `{"voucher":"s5","skus":[{"sku_id":12}]}`),
		bad("submit sku 0", "POST", submitURL, `{"voucher":"s6","skus":[{"sku_id":0,"stock":1}]}`),
		bad("submit SKU twice", "POST", submitURL, `{"voucher":"s7","skus":[{"sku_id":12,"stock":1},{"sku_id":12,"stock":2}]}`),
		bad("submit item unknown field", "POST", submitURL, `{"voucher":"s8","skus":[{"sku_id":12,"stock":1,"scope":"high_seas"}]}`),
		bad("submit unknown field", "POST", submitURL, `{"voucher":"s9","skus":[{"sku_id":12,"stock":1}],"activity_id":1}`),
		bad("submit path activity abc", "POST", "/v1/admin/activities/abc/products/2/skus", `{"voucher":"s10","skus":[{"sku_id":12,"stock":1}]}`),
		bad("submit path product 0", "POST", "/v1/admin/activities/1/products/0/skus", `{"voucher":"s11","skus":[{"sku_id":12,"stock":1}]}`),
		bad("submit path activity -1", "POST", "/v1/admin/activities/-1/products/2/skus", `{"voucher":"s12","skus":[{"sku_id":12,"stock":1}]}`),
		bad("submit path activity overflow", "POST", "/v1/admin/activities/99999999999999999999/products/2/skus", `{"voucher":"s13","skus":[{"sku_id":12,"stock":1}]}`),
		is("submit an already submitted SKU", "POST", submitURL, `{"voucher":"s14","skus":[{"sku_id":12,"stock":1},{"sku_id":10,"stock":1}]}`, 409, "ALREADY_SUBMITTED"),
		is("submit under another operation's voucher", "POST", submitURL, `{"voucher":"seed-salv","skus":[{"sku_id":12,"stock":1}]}`, 409, "IDEMPOTENCY_CONFLICT"),
		{name: "submit with a user token", method: "POST", path: submitURL, body: `{"voucher":"s15","skus":[{"sku_id":12,"stock":1}]}`, auth: user(1), status: 403, code: "FORBIDDEN"},

		// Edit.
		bad("edit string delta", "PATCH", skuURL(10), `{"voucher":"e1","delta":"5"}`),
		bad("edit float delta", "PATCH", skuURL(10), `{"voucher":"e2","delta":1.5}`),
		bad("edit delta 0", "PATCH", skuURL(10), `{"voucher":"e3","delta":0}`),
		bad("edit missing delta", "PATCH", skuURL(10), `{"voucher":"e4"}`),
		bad("edit missing voucher", "PATCH", skuURL(10), `{"delta":5}`),
		bad("edit unknown field", "PATCH", skuURL(10), `{"voucher":"e5","delta":5,"scope":"pool:3"}`),
		bad("edit path sku abc", "PATCH", skuURL("abc"), `{"voucher":"e6","delta":5}`),
		bad("edit path sku -1", "PATCH", skuURL(-1), `{"voucher":"e7","delta":5}`),
		bad("edit path sku 1.5", "PATCH", skuURL("1.5"), `{"voucher":"e8","delta":5}`),
		is("edit below what is reserved, sold or pooled", "PATCH", skuURL(10), `{"voucher":"e9","delta":-79}`, 409, "OUT_OF_STOCK"),
		is("edit unknown SKU", "PATCH", skuURL(99), `{"voucher":"e10","delta":5}`, 404, "NOT_FOUND"),

		// Revoke.
		bad("revoke missing voucher", "DELETE", skuURL(10), `{}`),
		bad("revoke missing body", "DELETE", skuURL(10), ``),
		bad("revoke unknown field", "DELETE", skuURL(10), `{"voucher":"r1","qty":1}`),
		bad("revoke path sku 0", "DELETE", skuURL(0), `{"voucher":"r2"}`),
		is("revoke unknown SKU", "DELETE", skuURL(99), `{"voucher":"r3"}`, 404, "NOT_FOUND"),

		// Read.
		bad("get path sku abc", "GET", skuURL("abc"), ``),
		bad("get path product abc", "GET", "/v1/admin/activities/1/products/abc/skus/10", ``),
		is("get unknown SKU", "GET", skuURL(99), ``, 404, "NOT_FOUND"),
		{name: "get without credentials", method: "GET", path: skuURL(10), status: 401, code: "UNAUTHENTICATED"},
		is("put on a SKU", "PUT", skuURL(10), `{}`, 405, "METHOD_NOT_ALLOWED"),

		// Salvage and release: whole-call refusals, then per-item failures (HTTP 200).
		bad("salvage path pool x", "POST", "/v1/admin/pools/x/salvage", poolBody("p1", [2]int64{10, 1})),
		bad("salvage path pool 0", "POST", "/v1/admin/pools/0/salvage", poolBody("p2", [2]int64{10, 1})),
		bad("salvage missing voucher", "POST", salvage, `{"items":[{"activity_id":1,"product_id":2,"sku_id":10,"qty":1}]}`),
		bad("salvage qty 0", "POST", salvage, poolBody("p3", [2]int64{10, 0})),
		bad("salvage negative qty", "POST", salvage, poolBody("p4", [2]int64{10, -1})),
		bad("salvage missing qty", "POST", salvage, `{"voucher":"p5","items":[{"activity_id":1,"product_id":2,"sku_id":10}]}`),
		bad("salvage item with a scope", "POST", salvage, `{"voucher":"p6","items":[{"scope":"pool:3","activity_id":1,"product_id":2,"sku_id":10,"qty":1}]}`),
		bad("salvage missing items", "POST", salvage, `{"voucher":"p7"}`),
		bad("salvage no items", "POST", salvage, `{"voucher":"p8","items":[]}`),
		bad("salvage a bad item among good ones", "POST", salvage, poolBody("p9", [2]int64{10, 1}, [2]int64{11, 0})),
		perItem("salvage over available", salvage, poolBody("p10", [2]int64{10, 79}), "OUT_OF_STOCK"),
		perItem("salvage unknown SKUs", salvage, poolBody("p11", [2]int64{99, 1}, [2]int64{12, 1}), "NOT_FOUND", "NOT_FOUND"),
		perItem("release over the pool", release, poolBody("p12", [2]int64{10, 21}), "OUT_OF_STOCK"),
		perItem("release from a pool without stock", "/v1/admin/pools/4/release", poolBody("p13", [2]int64{10, 1}), "OUT_OF_STOCK"),
		perItem("release under the salvage's voucher", release, poolBody("seed-salv", [2]int64{10, 1}), "IDEMPOTENCY_CONFLICT"),

		// Rollback and forced exit.
		bad("rollback bad voucher", "POST", "/v1/admin/vouchers/a%20b/rollback", ``),
		bad("rollback unknown field", "POST", "/v1/admin/vouchers/seed-salv/rollback", `{"voucher":"seed-salv"}`),
		bad("rollback body not an object", "POST", "/v1/admin/vouchers/seed-salv/rollback", `[]`),
		is("rollback a submit whose stock moved", "POST", "/v1/admin/vouchers/seed-sub/rollback", ``, 409, "OUT_OF_STOCK"),
		bad("exit path sku x", "POST", skuURL("x")+"/exit", ``),
		bad("exit unknown field", "POST", skuURL(10)+"/exit", `{"force":true}`),
		is("exit unknown SKU", "POST", skuURL(99)+"/exit", ``, 404, "NOT_FOUND"),
	}

	before := takeStockSnapshot(t, e)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, c.method, c.path, c.body, c.auth)
			if r.status >= 500 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			switch {
			case c.items != nil:
				skus := []int64{}
				var req struct {
					Items []struct {
						SKU int64 `json:"sku_id"`
					} `json:"items"`
				}
				if err := json.Unmarshal([]byte(c.body), &req); err != nil {
					t.Fatal(err)
				}
				for _, it := range req.Items {
					skus = append(skus, it.SKU)
				}
				if got := itemCodes(t, r, skus...); !slices.Equal(got, c.items) {
					t.Fatalf("codes = %q, want %q", got, c.items)
				}
			case c.status == 200:
				wantOK(t, r)
			default:
				wantError(t, r, c.status, c.code)
			}
			if after := takeStockSnapshot(t, e); !reflect.DeepEqual(before, after) {
				t.Fatalf("stock changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
	e.wantSKU(t, 10, onSale(counters{80, 78, 0, 2}, map[string]counters{"3": {20, 20, 0, 0}}))
	e.wantSKU(t, 11, onSale(counters{5, 5, 0, 0}, nil))
}

// TestOpenAPIRoutes checks that the document and the router agree: every
// route is documented with its method, and every documented operation is routed.
func TestOpenAPIRoutes(t *testing.T) {
	e := setup(t)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(e.do(t, "GET", "/openapi.json", ``, nil).body, &doc); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			switch m {
			case "get", "head", "put", "post", "patch", "delete":
				documented[strings.ToUpper(m)+" "+p] = true
			}
		}
	}
	routed := map[string]bool{}
	for _, r := range e.h.(*gin.Engine).Routes() {
		segs := strings.Split(r.Path, "/")
		for i, s := range segs {
			if strings.HasPrefix(s, ":") {
				segs[i] = "{" + s[1:] + "}"
			}
		}
		routed[r.Method+" "+strings.Join(segs, "/")] = true
	}
	for op := range routed {
		if !documented[op] {
			t.Errorf("route %s is not in openapi.json", op)
		}
	}
	for op := range documented {
		if !routed[op] {
			t.Errorf("openapi.json documents %s, which is not routed", op)
		}
	}
	body := string(e.do(t, "GET", "/openapi.json", ``, nil).body)
	for _, code := range []string{"OUT_OF_STOCK", "ALREADY_SUBMITTED", "NOT_FOR_SALE", "ORDER_CLOSED", "TCC_REFUSED",
		"ROLLED_BACK", "AMOUNT_MISMATCH"} {
		if !strings.Contains(body, `"`+code+`"`) {
			t.Errorf("openapi.json lacks code %s", code)
		}
	}
}

// FuzzStockDeduct feeds arbitrary bodies to deduct and TCC try: every answer
// is 200 or a 4xx with an error body, never a 5xx or a panic.
func FuzzStockDeduct(f *testing.F) {
	e := setup(f)
	if err := e.Stock.Submit(context.Background(), "sub", stockAct, stockProd, []stock.SKUStock{{SKU: 10, Stock: 1000}}); err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		orderBody(`"o-1"`, line{"high_seas", 10, 1}),
		orderBody(`2`, line{"pool:3", 10, 1}, line{"high_seas", 10, 2}),
		orderBody(`"o-3"`, line{"high_seas", 10, 1001}),
		orderBody(`"o-4"`, line{"pool:99999999999999999999", 10, 1}),
		orderBody(`"o-5"`, line{"pool:", 10, 1}),
		orderBody(`"o:6"`, line{"high_seas", 9223372036854775807, 1}),
		orderBody(`18446744073709551616`, line{"high_seas", 10, 1}),
		orderBody(`"`+strings.Repeat("x", 64)+`"`, line{"high_seas", 10, 1}),
		orderBody(`"é"`, line{"high_seas", 10, 1}),
		orderBody(`"o\u0000"`, line{"high_seas", 10, 1}),
		`{"order_id":"o-7","items":[{"scope":"high_seas","activity_id":9223372036854775807,"product_id":9223372036854775807,"sku_id":1,"qty":1}]}`,
		`{"order_id":"o-8","items":[{}]}`, `{"order_id":"o-9","items":[[]]}`, `{"order_id":"o-10","items":{}}`,
		`{"order_id":[],"items":[]}`, `[]`, `null`, `""`, `{}`, `{"a":`, "\x00", ``,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/v1/stock/deduct", tccURL("try", "g", "b")} {
			r := e.do(t, "POST", path, body, admin())
			switch {
			case r.status == 200:
			case r.status >= 400 && r.status < 500:
				r.errorCode(t)
			default:
				t.Fatalf("%s body %q: status %d: %s", path, body, r.status, r.body)
			}
		}
	})
}
