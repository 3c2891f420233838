package http

import (
	"bytes"
	"context"
	"encoding/json"
	nethttp "net/http"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/stock"
)

// The stock API (docs/api.md "Stock (activity SKUs)"): admin calls on activity
// SKUs and pools, and the service calls of orders and dtm TCC branches. The
// handlers check what JSON can check (types, presence, path ids) and leave
// the domain rules (ranges, scopes, id alphabets, item limits) to the engine,
// whose refusals wrap engine.ErrInvalidArgument.

// Request bodies. Pointers tell a missing field from a zero one. Item types
// decode strictly themselves (see strictItem), as checkKeys only sees the
// top level.

type submitRequest struct {
	Voucher *string      `json:"voucher"`
	SKUs    *[]submitSKU `json:"skus"`
}

type submitSKU struct {
	SKU   *int64 `json:"sku_id"`
	Stock *int64 `json:"stock"`
}

type editRequest struct {
	Voucher *string `json:"voucher"`
	Delta   *int64  `json:"delta"`
}

type voucherRequest struct {
	Voucher *string `json:"voucher"`
}

type poolRequest struct {
	Voucher *string     `json:"voucher"`
	Items   *[]poolItem `json:"items"`
}

type poolItem struct {
	ActivityID *int64 `json:"activity_id"`
	ProductID  *int64 `json:"product_id"`
	SKU        *int64 `json:"sku_id"`
	Qty        *int64 `json:"qty"`
}

type deductRequest struct {
	OrderID *orderID     `json:"order_id"`
	Items   *[]stockItem `json:"items"`
}

type returnRequest struct {
	OrderID *orderID `json:"order_id"`
}

type stockItem struct {
	Scope      *string `json:"scope"`
	ActivityID *int64  `json:"activity_id"`
	ProductID  *int64  `json:"product_id"`
	SKU        *int64  `json:"sku_id"`
	Qty        *int64  `json:"qty"`
}

type emptyRequest struct{}

// UnmarshalJSON implements json.Unmarshaler: an item is as strict as a body.
func (s *submitSKU) UnmarshalJSON(b []byte) error {
	type plain submitSKU
	return strictItem(b, (*plain)(s))
}

// UnmarshalJSON implements json.Unmarshaler: an item is as strict as a body.
func (p *poolItem) UnmarshalJSON(b []byte) error {
	type plain poolItem
	return strictItem(b, (*plain)(p))
}

// UnmarshalJSON implements json.Unmarshaler: an item is as strict as a body.
func (it *stockItem) UnmarshalJSON(b []byte) error {
	type plain stockItem
	return strictItem(b, (*plain)(it))
}

// strictItem decodes one array element with the body's rules: an object (or
// null, which leaves every field missing), no unknown, repeated or
// differently cased keys.
func strictItem(b []byte, dst any) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || (b[0] != '{' && string(b) != "null") {
		return invalid("each item must be a JSON object, not %s", jsonKind(b))
	}
	return decodeJSON(b, dst)
}

// orderID is an order's idempotency id. It travels as a JSON string or as a
// positive JSON integer, which stands for its decimal digits: 42 and "42" are
// the same order. The engine checks the alphabet and length.
type orderID string

var jsonPositiveInt = regexp.MustCompile(`^[1-9][0-9]*$`)

// UnmarshalJSON implements json.Unmarshaler.
func (o *orderID) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return invalid("order_id is not a valid JSON string")
		}
		*o = orderID(s)
		return nil
	}
	// JSON has no leading zeros or plus sign: the literal is already the
	// canonical decimal form, kept whole (no int64 limit, no float rounding).
	if jsonPositiveInt.Match(b) {
		*o = orderID(b)
		return nil
	}
	return invalid("order_id must be a string or a positive integer, not %s", string(b))
}

func requireOrderID(v *orderID) (string, error) {
	if v == nil {
		return "", invalid("order_id is required")
	}
	return string(*v), nil
}

// requireInt checks that an integer field of a body is present; its range
// is the engine's to check.
func requireInt(name string, v *int64) (int64, error) {
	if v == nil {
		return 0, invalid("%s is required", name)
	}
	return *v, nil
}

// Response bodies.

type okResponse struct {
	OK bool `json:"ok"`
}

type revokeResponse struct {
	Withdrawn int64 `json:"withdrawn"`
}

type itemResultView struct {
	SKU     int64  `json:"sku_id"`
	OK      bool   `json:"ok"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

type poolResponse struct {
	Results []itemResultView `json:"results"`
}

type countersView struct {
	Total     int64 `json:"total"`
	Available int64 `json:"available"`
	Reserved  int64 `json:"reserved"`
	Sold      int64 `json:"sold"`
}

type skuResponse struct {
	ActivityID int64                   `json:"activity_id"`
	ProductID  int64                   `json:"product_id"`
	SKU        int64                   `json:"sku_id"`
	ForSale    bool                    `json:"for_sale"`
	Revoked    bool                    `json:"revoked"`
	HighSeas   countersView            `json:"high_seas"`
	Pools      map[string]countersView `json:"pools"`
}

// dtmResult is the dtm HTTP protocol's answer field.
const (
	dtmSuccess = "SUCCESS"
	dtmFailure = "FAILURE"
)

type tccResponse struct {
	DTMResult string `json:"dtm_result"`
}

type tccErrorBody struct {
	DTMResult string      `json:"dtm_result"`
	Error     errorDetail `json:"error"`
}

func countersOf(c stock.Counters) countersView {
	return countersView{Total: c.Total, Available: c.Available, Reserved: c.Reserved, Sold: c.Sold}
}

// skuPath reads the activity, product and (withSKU) SKU ids of the path.
func skuPath(c *gin.Context, withSKU bool) (activityID, productID, sku int64, err error) {
	if activityID, err = namedPathID(c, "a", "activity id"); err != nil {
		return
	}
	if productID, err = namedPathID(c, "p", "product id"); err != nil {
		return
	}
	if withSKU {
		sku, err = namedPathID(c, "sku", "SKU id")
	}
	return
}

// namedPathID is pathID for a path parameter whose name is terse.
func namedPathID(c *gin.Context, param, what string) (int64, error) {
	id, err := positiveID(c.Param(param))
	if err != nil {
		return 0, invalid("the %s in the path must be a positive integer", what)
	}
	return id, nil
}

// decodeOptionalEmpty accepts no body or an empty JSON object.
func decodeOptionalEmpty(c *gin.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	var req emptyRequest
	return decodeJSON(body, &req)
}

func (s *server) submitSKUs(c *gin.Context) {
	a, p, _, err := skuPath(c, false)
	if err != nil {
		s.fail(c, err)
		return
	}
	var req submitRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	voucher, err := requireString("voucher", req.Voucher)
	if err != nil {
		s.fail(c, err)
		return
	}
	if req.SKUs == nil {
		s.fail(c, invalid("skus is required"))
		return
	}
	skus := make([]stock.SKUStock, len(*req.SKUs))
	for i, in := range *req.SKUs {
		if skus[i].SKU, err = requireInt("sku_id", in.SKU); err != nil {
			s.fail(c, err)
			return
		}
		if skus[i].Stock, err = requireInt("stock", in.Stock); err != nil {
			s.fail(c, err)
			return
		}
	}
	if err := s.stock.Submit(c.Request.Context(), voucher, a, p, skus); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, okResponse{OK: true})
}

func (s *server) editSKU(c *gin.Context) {
	a, p, sku, err := skuPath(c, true)
	if err != nil {
		s.fail(c, err)
		return
	}
	var req editRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	voucher, err := requireString("voucher", req.Voucher)
	if err != nil {
		s.fail(c, err)
		return
	}
	delta, err := requireInt("delta", req.Delta)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.stock.Edit(c.Request.Context(), voucher, a, p, sku, delta); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, okResponse{OK: true})
}

func (s *server) revokeSKU(c *gin.Context) {
	a, p, sku, err := skuPath(c, true)
	if err != nil {
		s.fail(c, err)
		return
	}
	var req voucherRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	voucher, err := requireString("voucher", req.Voucher)
	if err != nil {
		s.fail(c, err)
		return
	}
	n, err := s.stock.Revoke(c.Request.Context(), voucher, a, p, sku)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, revokeResponse{Withdrawn: n})
}

func (s *server) getSKU(c *gin.Context) {
	a, p, sku, err := skuPath(c, true)
	if err != nil {
		s.fail(c, err)
		return
	}
	v, err := s.stock.SKU(c.Request.Context(), a, p, sku)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := skuResponse{ActivityID: a, ProductID: p, SKU: sku, ForSale: v.ForSale, Revoked: v.Revoked,
		HighSeas: countersOf(v.HighSeas), Pools: make(map[string]countersView, len(v.Pools))}
	for pool, cnt := range v.Pools {
		out.Pools[pool] = countersOf(cnt)
	}
	c.JSON(nethttp.StatusOK, out)
}

// forcedExitTimeout bounds how long a forced exit retries its revoke within
// one request; a repeat of the request resumes it (each step is idempotent).
const forcedExitTimeout = 10 * time.Second

func (s *server) exitSKU(c *gin.Context) {
	a, p, sku, err := skuPath(c, true)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := decodeOptionalEmpty(c); err != nil {
		s.fail(c, err)
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), forcedExitTimeout)
	defer cancel()
	if err := s.stock.ForceExit(ctx, a, p, sku); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, okResponse{OK: true})
}

func (s *server) rollbackVoucher(c *gin.Context) {
	if err := decodeOptionalEmpty(c); err != nil {
		s.fail(c, err)
		return
	}
	if err := s.stock.RollbackVoucher(c.Request.Context(), c.Param("voucher")); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, okResponse{OK: true})
}

func (s *server) salvage(c *gin.Context) { s.movePool(c, true) }
func (s *server) release(c *gin.Context) { s.movePool(c, false) }

// movePool answers one result per item, in request order, with HTTP 200
// even when items failed; only a call refused as a whole is an error.
func (s *server) movePool(c *gin.Context, salvage bool) {
	pool, err := namedPathID(c, "pool", "pool id")
	if err != nil {
		s.fail(c, err)
		return
	}
	var req poolRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	voucher, err := requireString("voucher", req.Voucher)
	if err != nil {
		s.fail(c, err)
		return
	}
	if req.Items == nil {
		s.fail(c, invalid("items is required"))
		return
	}
	items := make([]stock.Item, len(*req.Items))
	for i, in := range *req.Items {
		it := &items[i]
		for _, f := range []struct {
			name string
			src  *int64
			dst  *int64
		}{{"activity_id", in.ActivityID, &it.ActivityID}, {"product_id", in.ProductID, &it.ProductID},
			{"sku_id", in.SKU, &it.SKU}, {"qty", in.Qty, &it.Qty}} {
			if *f.dst, err = requireInt(f.name, f.src); err != nil {
				s.fail(c, err)
				return
			}
		}
	}
	results, err := s.stock.MovePool(c.Request.Context(), salvage, voucher, pool, items)
	if err != nil {
		s.fail(c, err)
		return
	}
	out := poolResponse{Results: make([]itemResultView, len(results))}
	for i, r := range results {
		out.Results[i] = itemResultView{SKU: r.SKU, OK: r.Err == nil}
		if r.Err != nil {
			ae, known := toAPIError(r.Err)
			if !known {
				s.log.ErrorContext(c.Request.Context(), "stock item failed", "route", routeOf(c), "sku", r.SKU, "err", r.Err)
			}
			out.Results[i].Code, out.Results[i].Message = ae.Code, ae.Message
		}
	}
	c.JSON(nethttp.StatusOK, out)
}

// stockItems checks presence of an order's or branch's item fields.
func stockItems(in *[]stockItem) ([]stock.Item, error) {
	if in == nil {
		return nil, invalid("items is required")
	}
	items := make([]stock.Item, len(*in))
	var err error
	for i, it := range *in {
		if items[i].Scope, err = requireString("scope", it.Scope); err != nil {
			return nil, err
		}
		for _, f := range []struct {
			name string
			src  *int64
			dst  *int64
		}{{"activity_id", it.ActivityID, &items[i].ActivityID}, {"product_id", it.ProductID, &items[i].ProductID},
			{"sku_id", it.SKU, &items[i].SKU}, {"qty", it.Qty, &items[i].Qty}} {
			if *f.dst, err = requireInt(f.name, f.src); err != nil {
				return nil, err
			}
		}
	}
	return items, nil
}

func (s *server) deductStock(c *gin.Context) {
	var req deductRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	id, err := requireOrderID(req.OrderID)
	if err != nil {
		s.fail(c, err)
		return
	}
	items, err := stockItems(req.Items)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.stock.Deduct(c.Request.Context(), id, items); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, okResponse{OK: true})
}

func (s *server) returnStock(c *gin.Context) {
	var req returnRequest
	if err := decodeBody(c, &req); err != nil {
		s.fail(c, err)
		return
	}
	id, err := requireOrderID(req.OrderID)
	if err != nil {
		s.fail(c, err)
		return
	}
	if err := s.stock.Return(c.Request.Context(), id); err != nil {
		s.fail(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, okResponse{OK: true})
}

func (s *server) tccTry(c *gin.Context)     { s.tcc(c, stock.TCCTry) }
func (s *server) tccConfirm(c *gin.Context) { s.tcc(c, stock.TCCConfirm) }
func (s *server) tccCancel(c *gin.Context)  { s.tcc(c, stock.TCCCancel) }

// tcc is a dtm TCC participant (HTTP protocol): 200 SUCCESS; 409 FAILURE for
// a business refusal, which makes dtm roll the transaction back; 400 (also
// FAILURE) for a request that can never succeed; 5xx for what dtm should
// retry. gid and branch_id are the barrier; other query parameters dtm adds
// (trans_type, op) are ignored. The body is the deduct's: order_id, if sent,
// must be a string or an integer and is otherwise unused.
//
// A confirm or cancel whose ids or body are invalid (or too large) answers success: its
// try was refused with the same request (dtm sends every phase the body
// and ids it registered), so nothing was reserved under it, and any other
// answer would have dtm retry it forever.
func (s *server) tcc(c *gin.Context, phase stock.TCCPhase) {
	var req deductRequest
	err := decodeBody(c, &req)
	var items []stock.Item
	if err == nil {
		items, err = stockItems(req.Items)
	}
	if err == nil {
		err = s.stock.TCC(c.Request.Context(), phase, c.Query("gid"), c.Query("branch_id"), items)
	}
	if ae, _ := toAPIError(err); err != nil && phase != stock.TCCTry && (ae.Code == errs.CodeInvalidArgument || ae.Code == errs.CodePayloadTooLarge) {
		s.log.WarnContext(c.Request.Context(), "stock: TCC "+string(phase)+" of an invalid request answered success; its try was refused",
			"gid", c.Query("gid"), "branch_id", c.Query("branch_id"), "err", err)
		err = nil
	}
	if err != nil {
		s.failTCC(c, err)
		return
	}
	c.JSON(nethttp.StatusOK, tccResponse{DTMResult: dtmSuccess})
}

// failTCC answers an error in the dtm protocol: every 4xx carries
// "dtm_result": "FAILURE", and a SKU that is not found is a business
// failure (409) like the others; 5xx stay as fail answers them.
func (s *server) failTCC(c *gin.Context, err error) {
	ae, known := toAPIError(err)
	if !known || ae.Status >= 500 {
		s.fail(c, err)
		return
	}
	status := ae.Status
	if ae.Code == errs.CodeNotFound {
		status = nethttp.StatusConflict
	}
	c.Set(ctxErrorCode, ae.Code)
	c.AbortWithStatusJSON(status, tccErrorBody{DTMResult: dtmFailure, Error: errorDetail{Code: ae.Code, Message: ae.Message}})
}
