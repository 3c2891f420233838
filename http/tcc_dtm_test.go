package http_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	nethttp "net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// The TCC participant driven the way dtm drives it (docs/tcc.md), over a real
// HTTP listener, on the real Redis and MySQL, with the writer running.
//
// Who sends what (dtm-labs/dtm):
//   - try: the AP's client library, not the dtm server. Tcc.CallBranch
//     (client/dtmcli/trans_tcc.go) first registers the branch with dtm (gid,
//     branch_id, the body marshalled to JSON as "data", the confirm and cancel
//     URLs), then dtmimp.TransRequestBranch (client/dtmcli/dtmimp/trans_base.go)
//     POSTs the body, marshalled to JSON by resty, to the try URL with the
//     query dtm, gid, branch_id, trans_type=tcc, op=try and the transaction's
//     BranchHeaders. An answer is judged by HTTPResp2DtmError
//     (client/dtmcli/utils.go): 425 or "ONGOING" in the body is ongoing, 409
//     or "FAILURE" is a failure, any other non-200 an error, else success; the
//     AP then aborts on any error, or submits.
//   - confirm and cancel: the dtm server. On submit or abort,
//     transTccProcessor.ProcessOnce (dtmsvr/trans_type_tcc.go) walks the
//     registered branches last registered first, and getHTTPResult
//     (dtmsvr/trans_status.go) POSTs the registered data, as-is, with the
//     query gid, trans_type, branch_id, op (no dtm parameter), the header
//     Content-type: application/json, the passthrough headers and the
//     BranchHeaders. getBranchResult ends a branch only on success: for
//     confirm and cancel, FAILURE and anything else are retried with backoff,
//     forever, and ProcessOnce stops at the first branch that did not succeed.
//   - ids: dtm's own gids are shortuuid.New() (22 characters of base57,
//     dtmsvr/utils.go GenGid), hex IP + "_" + snowflake base58 in old versions;
//     custom gids are anything (the server only strips \r \n ;), up to 128 in
//     its SQL stores. Branch ids are "01".."99", a nested branch's are its
//     parent's id + "01".. (BranchIDGen.NewSubBranchID).

// tccFixture: activity 1, SKU 10 of product 2 (100 on the high seas), SKU 20
// of product 3 (40 on the high seas, 10 in pool 7).
const (
	tccProdA = 2
	tccProdB = 3
	tccSKUA  = 10
	tccSKUB  = 20
	tccPool  = 7
)

// tccStock is the fixture's counters by "<sku>:<scope>".
type tccStock map[string]counters

var tccInitial = tccStock{"10:high_seas": {100, 100, 0, 0}, "20:high_seas": {40, 40, 0, 0}, "20:pool:7": {10, 10, 0, 0}}

// setupTCC is the API over an engine on the real Redis (keys of the test's
// own) and a MySQL database of the test's own, the writer running, served on
// a loopback listener, with the fixture's stock submitted.
func setupTCC(t *testing.T) (*env, string) {
	t.Helper()
	rdb, keys := redistest.Real(t, 4)
	db := storetest.MySQL(t)
	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine log:\n%s", logs.tail(60))
		}
	})
	cfg := engine.DefaultConfig()
	cfg.Keys = keys
	cfg.Writer.Block = 50 * time.Millisecond
	cfg.Writer.MonitorEvery = 50 * time.Millisecond
	reg := prometheus.NewRegistry()
	g := grab.New(grab.Deps{Deps: engine.Deps{Redis: rdb, DB: db, Log: log, Metrics: reg}}, cfg)
	h := grabhttp.New(g, grabhttp.Config{JWTSecret: jwtSecret, AdminToken: adminToken}, log, reg)
	e := &env{h: h, Grab: g, db: db}
	e.startWriter(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	skus := func(p int64) string { return fmt.Sprintf("/v1/admin/activities/%d/products/%d/skus", stockAct, p) }
	wantOK(t, e.do(t, "POST", skus(tccProdA), `{"voucher":"tcc-sub-a","skus":[{"sku_id":10,"stock":100}]}`, admin()))
	wantOK(t, e.do(t, "POST", skus(tccProdB), `{"voucher":"tcc-sub-b","skus":[{"sku_id":20,"stock":50}]}`, admin()))
	salvage := fmt.Sprintf(`{"voucher":"tcc-salv","items":[{"activity_id":%d,"product_id":%d,"sku_id":%d,"qty":10}]}`, stockAct, tccProdB, tccSKUB)
	if codes := itemCodes(t, e.do(t, "POST", fmt.Sprintf("/v1/admin/pools/%d/salvage", tccPool), salvage, admin()), tccSKUB); !slices.Equal(codes, []string{""}) {
		t.Fatalf("salvage codes = %q", codes)
	}
	e.wantTCCStock(t, tccInitial)
	return e, srv.URL
}

// tccStockNow reads the fixture's SKUs through GET.
func (e *env) tccStockNow(t *testing.T) tccStock {
	t.Helper()
	s := tccStock{}
	for _, ref := range [][2]int64{{tccProdA, tccSKUA}, {tccProdB, tccSKUB}} {
		m := expect(t, e.do(t, "GET", fmt.Sprintf("/v1/admin/activities/%d/products/%d/skus/%d", stockAct, ref[0], ref[1]), ``, admin()), 200)
		if m["for_sale"] != true {
			t.Fatalf("SKU %d not for sale: %v", ref[1], m)
		}
		s[fmt.Sprintf("%d:high_seas", ref[1])] = readCounters(t, "high_seas", m["high_seas"])
		pools, _ := m["pools"].(map[string]any)
		for p, v := range pools {
			s[fmt.Sprintf("%d:pool:%s", ref[1], p)] = readCounters(t, "pools."+p, v)
		}
	}
	return s
}

func (e *env) wantTCCStock(t *testing.T, want tccStock) {
	t.Helper()
	if got := e.tccStockNow(t); !reflect.DeepEqual(got, want) {
		t.Fatalf("stock = %v, want %v", got, want)
	}
}

// wantTCCMySQL waits for the writer to bring MySQL to want.
func (e *env) wantTCCMySQL(t *testing.T, want tccStock) {
	t.Helper()
	var got tccStock
	read := func() bool {
		got = tccStock{}
		for _, ref := range [][2]int64{{tccProdA, tccSKUA}, {tccProdB, tccSKUB}} {
			s, err := e.db.Stock(context.Background(), stockAct, ref[0], ref[1])
			if errors.Is(err, store.ErrNotFound) {
				return false // the writer has not brought the SKU yet
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, sc := range s.Scopes {
				got[fmt.Sprintf("%d:%s", ref[1], sc.Scope)] = counters{sc.Total, sc.Available, sc.Reserved, sc.Sold}
			}
		}
		return reflect.DeepEqual(got, want)
	}
	defer func() {
		if t.Failed() {
			t.Logf("MySQL stock = %v, want %v", got, want)
		}
	}()
	enginetest.WaitFor(t, "the writer to bring MySQL's stock to Redis's", read)
}

// dtmBody is a branch body as a Go AP passes it to CallBranch.
type dtmBody struct {
	OrderID string    `json:"order_id,omitempty"`
	Items   []dtmItem `json:"items"`
}

type dtmItem struct {
	Scope      string `json:"scope"`
	ActivityID int64  `json:"activity_id"`
	ProductID  int64  `json:"product_id"`
	SKU        int64  `json:"sku_id"`
	Qty        int64  `json:"qty"`
}

func hsItem(product, sku, qty int64) dtmItem {
	return dtmItem{Scope: "high_seas", ActivityID: stockAct, ProductID: product, SKU: sku, Qty: qty}
}

func poolItem(pool, product, sku, qty int64) dtmItem {
	return dtmItem{Scope: fmt.Sprintf("pool:%d", pool), ActivityID: stockAct, ProductID: product, SKU: sku, Qty: qty}
}

// dtmGlobal is one global TCC transaction as dtm holds it: its gid and its
// branches in registration order.
type dtmGlobal struct {
	t        *testing.T
	grab     string            // grab's base URL
	server   string            // the dtm server's URL, sent as try's dtm parameter
	headers  map[string]string // TransOptions.BranchHeaders
	gid      string
	branches []*dtmBranch
}

// dtmBranch is a registered branch.
type dtmBranch struct {
	id   string
	data string // the registered body, sent as-is to confirm and cancel
	done bool   // its phase 2 answered success; dtm does not call it again
}

// dtmTcc is dtmcli.Tcc: a gid and the id generator of its branches (the
// parent branch id of a nested TCC, "" at the top).
type dtmTcc struct {
	g      *dtmGlobal
	parent string
	sub    int
}

// newDTM begins a global transaction (TccGlobalTransaction2 with the admin
// token as a branch header, which dtm sends on every branch call).
func newDTM(t *testing.T, grab, gid string) *dtmTcc {
	return &dtmTcc{g: &dtmGlobal{t: t, grab: grab, server: "http://dtm.internal:36789/api/dtmsvr", gid: gid,
		headers: map[string]string{"Authorization": "Bearer " + adminToken}}}
}

// nested is the Tcc a branch's service builds from its try's query
// (TccFromQuery): the same global transaction, sub-branches of parent.
func (c *dtmTcc) nested(parent string) *dtmTcc { return &dtmTcc{g: c.g, parent: parent} }

// register is CallBranch's first step: a new branch id (NewSubBranchID) and
// the registration of the body and the confirm and cancel URLs.
func (c *dtmTcc) register(body dtmBody) *dtmBranch {
	c.g.t.Helper()
	c.sub++
	data, err := json.Marshal(body)
	if err != nil {
		c.g.t.Fatal(err)
	}
	b := &dtmBranch{id: c.parent + fmt.Sprintf("%02d", c.sub), data: string(data)}
	c.g.branches = append(c.g.branches, b)
	return b
}

// try is CallBranch's second step, as TransRequestBranch sends it. It is
// also what a late or repeated try of b looks like.
func (c *dtmTcc) try(b *dtmBranch, body dtmBody) response {
	c.g.t.Helper()
	data, err := json.Marshal(body) // resty marshals a struct body with encoding/json
	if err != nil {
		c.g.t.Fatal(err)
	}
	q := url.Values{"dtm": {c.g.server}, "gid": {c.g.gid}, "branch_id": {b.id}, "trans_type": {"tcc"}, "op": {"try"}}
	return c.g.post("try", q, data, map[string]string{"Content-Type": "application/json"})
}

// callBranch is Tcc.CallBranch: register, then try.
func (c *dtmTcc) callBranch(body dtmBody) (*dtmBranch, response) {
	c.g.t.Helper()
	b := c.register(body)
	return b, c.try(b, body)
}

// phase2 sends op (confirm or cancel) of b as getHTTPResult does.
func (g *dtmGlobal) phase2(op string, b *dtmBranch) response {
	g.t.Helper()
	q := url.Values{"gid": {g.gid}, "trans_type": {"tcc"}, "branch_id": {b.id}, "op": {op}}
	return g.post(op, q, []byte(b.data), map[string]string{"Content-type": "application/json"})
}

// finish is one pass of ProcessOnce after submit (confirm) or abort
// (cancel): each branch not yet done, last registered first, until one does
// not succeed. It returns "<branch id> <dtm's verdict>" for each call made,
// and checks that each success is exactly {"dtm_result":"SUCCESS"}.
func (g *dtmGlobal) finish(op string) []string {
	g.t.Helper()
	var calls []string
	for i := len(g.branches) - 1; i >= 0; i-- {
		b := g.branches[i]
		if b.done {
			continue
		}
		r := g.phase2(op, b)
		v := dtmVerdict(r)
		calls = append(calls, b.id+" "+v)
		if v != "SUCCESS" {
			g.t.Logf("%s of branch %s: %d %s (dtm retries it)", op, b.id, r.status, r.body)
			break
		}
		wantDTM(g.t, r, 200, "")
		b.done = true
	}
	return calls
}

// post sends one request to grab over the wire.
func (g *dtmGlobal) post(phase string, q url.Values, body []byte, hdr map[string]string) response {
	g.t.Helper()
	req, err := nethttp.NewRequest("POST", g.grab+"/v1/stock/tcc/"+phase+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	req.Header.Set("User-Agent", "go-resty/2.7.0 (https://github.com/go-resty/resty)")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	for k, v := range g.headers {
		req.Header.Set(k, v)
	}
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// dtmVerdict is how dtm reads an answer (HTTPResp2DtmError, and
// RespAsErrorCompatible on the server): ONGOING, FAILURE, RETRY (any other
// error) or SUCCESS.
func dtmVerdict(r response) string {
	s := string(r.body)
	switch {
	case r.status == nethttp.StatusTooEarly || strings.Contains(s, "ONGOING"):
		return "ONGOING"
	case r.status == nethttp.StatusConflict || strings.Contains(s, "FAILURE"):
		return "FAILURE"
	case r.status != nethttp.StatusOK:
		return "RETRY"
	}
	return "SUCCESS"
}

func wantCalls(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: dtm's calls and verdicts = %q, want %q", what, got, want)
	}
}

// shortuuid's default alphabet (base57), what dtm's server-side GenGid uses.
const base57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

// dtmGid is a gid as dtmcli.MustGenGid gets it from the server: 22 of base57.
func dtmGid() string {
	b := make([]byte, 22)
	rand.Read(b)
	for i := range b {
		b[i] = base57[int(b[i])%len(base57)]
	}
	return string(b)
}

// TestTCCDTMTryConfirm: two branches over two products, tried, then
// confirmed on submit; repeated tries and confirms change nothing.
func TestTCCDTMTryConfirm(t *testing.T) {
	e, grab := setupTCC(t)
	d := newDTM(t, grab, dtmGid())
	body1 := dtmBody{OrderID: "order-1001", Items: []dtmItem{hsItem(tccProdA, tccSKUA, 3), hsItem(tccProdB, tccSKUB, 2)}}
	body2 := dtmBody{Items: []dtmItem{hsItem(tccProdB, tccSKUB, 4), poolItem(tccPool, tccProdB, tccSKUB, 1)}}

	b1, r := d.callBranch(body1)
	wantDTM(t, r, 200, "")
	b2, r := d.callBranch(body2)
	wantDTM(t, r, 200, "")
	if b1.id != "01" || b2.id != "02" {
		t.Fatalf("branch ids %q %q", b1.id, b2.id)
	}
	reserved := tccStock{"10:high_seas": {100, 97, 3, 0}, "20:high_seas": {40, 34, 6, 0}, "20:pool:7": {10, 9, 1, 0}}
	e.wantTCCStock(t, reserved)

	// A try sent again (the AP's retry, a duplicated request) changes nothing.
	wantDTM(t, d.try(b1, body1), 200, "")
	wantDTM(t, d.try(b2, body2), 200, "")
	e.wantTCCStock(t, reserved)

	// Submit: dtm confirms 02, then 01, each once.
	wantCalls(t, "confirm", d.g.finish("confirm"), "02 SUCCESS", "01 SUCCESS")
	sold := tccStock{"10:high_seas": {100, 97, 0, 3}, "20:high_seas": {40, 34, 0, 6}, "20:pool:7": {10, 9, 0, 1}}
	e.wantTCCStock(t, sold)

	// A confirm dtm sends again (its answer was lost) changes nothing.
	for _, b := range d.g.branches {
		wantDTM(t, d.g.phase2("confirm", b), 200, "")
	}
	e.wantTCCStock(t, sold)
	e.wantTCCMySQL(t, sold)
}

// TestTCCDTMTryRefused: a refused try answers 409 FAILURE, the AP aborts,
// and dtm's cancel of every registered branch (tried, refused, never tried)
// succeeds and gives everything back.
func TestTCCDTMTryRefused(t *testing.T) {
	e, grab := setupTCC(t)
	d := newDTM(t, grab, dtmGid())

	_, r := d.callBranch(dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 5)}})
	wantDTM(t, r, 200, "")
	// 41 of SKU 20 on the high seas, which has 40; the branch also spans product 2.
	refused := dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 1), hsItem(tccProdB, tccSKUB, 41)}}
	b2, r := d.callBranch(refused)
	wantDTM(t, r, 409, "OUT_OF_STOCK")
	if v := dtmVerdict(r); v != "FAILURE" {
		t.Fatalf("dtm reads the refusal as %s", v)
	}
	// SKU 20 untouched; what product 2's line may hold until the cancel is no
	// more than was there.
	now := e.tccStockNow(t)
	if now["20:high_seas"] != tccInitial["20:high_seas"] || now["20:pool:7"] != tccInitial["20:pool:7"] {
		t.Fatalf("the refused try changed SKU 20: %v", now)
	}
	if a := now["10:high_seas"]; a[0] != 100 || a[1]+a[2] != 100 || a[3] != 0 {
		t.Fatalf("SKU 10 after the refused try: %v", a)
	}
	// A third branch registered alongside, whose try never reached grab.
	b3 := d.register(dtmBody{Items: []dtmItem{hsItem(tccProdB, tccSKUB, 2)}})

	// Abort: dtm cancels 03, 02, 01; every one must succeed at once.
	wantCalls(t, "cancel", d.g.finish("cancel"), "03 SUCCESS", "02 SUCCESS", "01 SUCCESS")
	e.wantTCCStock(t, tccInitial)
	for _, b := range d.g.branches {
		wantDTM(t, d.g.phase2("cancel", b), 200, "")
	}
	e.wantTCCStock(t, tccInitial)

	// The lost try arriving now, or the refused one again, reserves nothing.
	wantDTM(t, d.try(b3, dtmBody{Items: []dtmItem{hsItem(tccProdB, tccSKUB, 2)}}), 409, "TCC_REFUSED")
	if r := d.try(b2, refused); r.status != 409 || dtmVerdict(r) != "FAILURE" {
		t.Fatalf("the refused try again: %d %s", r.status, r.body)
	}
	e.wantTCCStock(t, tccInitial)
	e.wantTCCMySQL(t, tccInitial)
}

// TestTCCDTMCancelBeforeTry: the AP aborts while a try is still on its way;
// dtm's cancel of that branch succeeds (null compensation), the late try is
// refused with 409 FAILURE and reserves nothing, and a confirm of the
// cancelled branch succeeds and sells nothing.
func TestTCCDTMCancelBeforeTry(t *testing.T) {
	e, grab := setupTCC(t)
	d := newDTM(t, grab, dtmGid())

	_, r := d.callBranch(dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 4)}})
	wantDTM(t, r, 200, "")
	e.wantTCCStock(t, tccStock{"10:high_seas": {100, 96, 4, 0}, "20:high_seas": {40, 40, 0, 0}, "20:pool:7": {10, 10, 0, 0}})
	late := dtmBody{OrderID: "order-7", Items: []dtmItem{hsItem(tccProdA, tccSKUA, 2), poolItem(tccPool, tccProdB, tccSKUB, 3)}}
	b2 := d.register(late) // its try is slow; the AP times out and aborts

	wantCalls(t, "cancel", d.g.finish("cancel"), "02 SUCCESS", "01 SUCCESS")
	e.wantTCCStock(t, tccInitial)
	wantDTM(t, d.g.phase2("cancel", b2), 200, "")

	for range 2 {
		wantDTM(t, d.try(b2, late), 409, "TCC_REFUSED")
		e.wantTCCStock(t, tccInitial)
	}

	// dtm never confirms an aborted transaction; a confirm of a cancelled
	// branch (a replay by hand) must still end in success and sell nothing.
	for _, b := range d.g.branches {
		wantDTM(t, d.g.phase2("confirm", b), 200, "")
	}
	e.wantTCCStock(t, tccInitial)
	e.wantTCCMySQL(t, tccInitial)
}

// TestTCCDTMLongIDs: gids of every shape dtm produces or accepts, up to 128
// characters, work end to end; branch ids too, nested ones included; 129
// characters answer 400 INVALID_ARGUMENT (FAILURE) and change nothing.
func TestTCCDTMLongIDs(t *testing.T) {
	e, grab := setupTCC(t)
	custom := "shop-order:2024.06.01_"
	for len(custom) < 128 {
		custom += base57
	}
	custom = custom[:128]
	gids := []string{
		dtmGid(),                 // dtm's GenGid (shortuuid)
		"c0a8038b_4nxAcyxSX8N",   // older dtm: hex IP _ snowflake base58
		"TestTccNormal",          // a custom gid as dtm's own tests use
		custom,                   // a custom gid of 128 characters
		strings.Repeat("9", 128), // digits only
	}
	for i, gid := range gids {
		d := newDTM(t, grab, gid)
		_, r := d.callBranch(dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 1)}})
		wantDTM(t, r, 200, "")
		// A nested TCC under branch 02: its branches are 0201, 0202.
		_, r = d.callBranch(dtmBody{Items: []dtmItem{hsItem(tccProdB, tccSKUB, 1)}})
		wantDTM(t, r, 200, "")
		n := d.nested("02")
		b, r := n.callBranch(dtmBody{Items: []dtmItem{poolItem(tccPool, tccProdB, tccSKUB, 1)}})
		wantDTM(t, r, 200, "")
		if b.id != "0201" {
			t.Fatalf("nested branch id %q", b.id)
		}
		wantCalls(t, "confirm of gid "+gid, d.g.finish("confirm"), "0201 SUCCESS", "02 SUCCESS", "01 SUCCESS")
		k := int64(i + 1)
		e.wantTCCStock(t, tccStock{"10:high_seas": {100, 100 - k, 0, k}, "20:high_seas": {40, 40 - k, 0, k}, "20:pool:7": {10, 10 - k, 0, k}})
	}
	k := int64(len(gids))
	after := tccStock{"10:high_seas": {100, 100 - k, 0, k}, "20:high_seas": {40, 40 - k, 0, k}, "20:pool:7": {10, 10 - k, 0, k}}

	// A branch id of 128 characters: tried, then cancelled.
	long := newDTM(t, grab, dtmGid())
	b := &dtmBranch{id: strings.Repeat("0", 126) + "01"}
	body := dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 2)}}
	b.data = mustJSON(t, body)
	long.g.branches = append(long.g.branches, b)
	wantDTM(t, long.try(b, body), 200, "")
	e.wantTCCStock(t, tccStock{"10:high_seas": {100, 98 - k, 2, k}, "20:high_seas": after["20:high_seas"], "20:pool:7": after["20:pool:7"]})
	wantCalls(t, "cancel of a 128-character branch id", long.g.finish("cancel"), b.id+" SUCCESS")
	e.wantTCCStock(t, after)

	// 129 characters: refused before anything is touched.
	for name, ids := range map[string][2]string{
		"gid of 129":       {custom + "x", "01"},
		"branch id of 129": {dtmGid(), strings.Repeat("0", 127) + "01"},
	} {
		d := newDTM(t, grab, ids[0])
		b := &dtmBranch{id: ids[1]}
		r := d.try(b, dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 1)}})
		wantDTM(t, r, 400, "INVALID_ARGUMENT")
		if v := dtmVerdict(r); v != "FAILURE" {
			t.Fatalf("%s: dtm reads the answer as %s", name, v)
		}
		e.wantTCCStock(t, after)
		// dtm's abort then cancels it with the same ids: success, or dtm would
		// retry it forever; nothing was reserved under them.
		b.data = mustJSON(t, dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 1)}})
		d.g.branches = append(d.g.branches, b)
		wantCalls(t, name+": cancel", d.g.finish("cancel"), b.id+" SUCCESS")
		e.wantTCCStock(t, after)
	}

	// A registered body over the size limit: the try answers 413 (an error
	// dtm aborts on), and its cancel succeeds.
	big := newDTM(t, grab, dtmGid())
	huge := dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 1)}}
	for len(mustJSON(t, huge)) <= 64<<10 {
		huge.Items = append(huge.Items, huge.Items...)
	}
	hb, r := big.callBranch(huge)
	if r.status != 413 || dtmVerdict(r) != "FAILURE" {
		t.Fatalf("try of a body over 64 KiB: %d %s", r.status, r.body)
	}
	wantCalls(t, "cancel of a body over 64 KiB", big.g.finish("cancel"), hb.id+" SUCCESS")
	e.wantTCCStock(t, after)
	e.wantTCCMySQL(t, after)
}

// TestTCCDTMConfirmNeverTried: an AP that submits although a try never
// reached grab (it ignored the error): dtm's confirm of that branch succeeds
// and sells nothing, the other branch's confirm sells its reservation, the
// late try is refused; a cancel after the confirms succeeds and changes
// nothing.
func TestTCCDTMConfirmNeverTried(t *testing.T) {
	e, grab := setupTCC(t)
	d := newDTM(t, grab, dtmGid())

	_, r := d.callBranch(dtmBody{Items: []dtmItem{hsItem(tccProdA, tccSKUA, 2), hsItem(tccProdB, tccSKUB, 1)}})
	wantDTM(t, r, 200, "")
	lost := dtmBody{Items: []dtmItem{hsItem(tccProdB, tccSKUB, 5)}}
	b2 := d.register(lost) // its try never reaches grab

	wantCalls(t, "confirm", d.g.finish("confirm"), "02 SUCCESS", "01 SUCCESS")
	sold := tccStock{"10:high_seas": {100, 98, 0, 2}, "20:high_seas": {40, 39, 0, 1}, "20:pool:7": {10, 10, 0, 0}}
	e.wantTCCStock(t, sold)

	// The lost try arriving after its null confirm reserves nothing.
	wantDTM(t, d.try(b2, lost), 409, "TCC_REFUSED")
	e.wantTCCStock(t, sold)

	// Confirms again, then cancels of both branches: success, nothing changes.
	for _, op := range []string{"confirm", "cancel", "cancel"} {
		for _, b := range d.g.branches {
			wantDTM(t, d.g.phase2(op, b), 200, "")
		}
		e.wantTCCStock(t, sold)
	}
	e.wantTCCMySQL(t, sold)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
