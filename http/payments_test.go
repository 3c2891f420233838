package http_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/paysim"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/store"
)

var paySecret = []byte("test-pay-secret-of-enough-length")

// deposit is what user 1, the sender, is funded with; the only money in the
// system besides what providers pay.
const deposit = 100_00

// sign is the contract's X-Grab-Signature, computed here rather than taken
// from the simulator: lowercase hex HMAC-SHA256 of the exact body.
func sign(key []byte, body string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

// payEnv is the API over an engine whose provider is the simulator; the
// simulator's notifications go through POST /v1/payments/notify/{channel}.
// Group 7 is users 1..5 and user 1 holds the deposit.
func payEnv(t *testing.T) (*env, *paysim.Sim) {
	t.Helper()
	var e *env
	sim := paysim.New(paySecret, func(_ context.Context, ch string, body []byte, sig string) error {
		r := e.do(t, "POST", "/v1/payments/notify/"+ch, string(body), auth{"X-Grab-Signature": sig})
		if r.status != 200 {
			return fmt.Errorf("notify: %d %s", r.status, r.body)
		}
		return nil
	}, paysim.Faults{})
	e = setupWith(t, sim, func(c *grabhttp.Config) { c.PaySecret = paySecret })
	e.startWriter(t)
	expect(t, e.do(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3,4,5]}`, admin()), 200)
	expect(t, e.do(t, "POST", "/v1/admin/accounts/1/deposit", `{"amount":"100.00","ref":"dep-1"}`, admin()), 200)
	return e, sim
}

// newPacket creates a group_lucky packet of 20.00 in 3 shares from user 1.
func (e *env) newPacket(t *testing.T) int64 {
	t.Helper()
	p := expect(t, e.do(t, "POST", "/v1/packets", `{"kind":"group_lucky","group_id":7,"count":3,"amount":"20.00"}`, user(1)), 201)
	return integer(t, "packet_id", p["packet_id"])
}

// payAlipay starts the packet's payment through alipay and returns the trade.
func (e *env) payAlipay(t *testing.T, id int64) string {
	t.Helper()
	m := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"alipay"}`, user(1)), 200)
	keys(t, "trade", m, "trade_no", "amount", "status")
	tradeNo, _ := m["trade_no"].(string)
	if tradeNo == "" || m["amount"] != "20.00" || m["status"] != "unpaid" {
		t.Fatalf("trade = %v", m)
	}
	return tradeNo
}

func (e *env) paymentReturn(t *testing.T, tradeNo string, want string) {
	t.Helper()
	m := expect(t, e.do(t, "POST", "/v1/payments/"+tradeNo+"/return", ``, user(1)), 200)
	keys(t, "return", m, "trade_no", "pay_status")
	if m["trade_no"] != tradeNo || m["pay_status"] != want {
		t.Fatalf("return = %v, want pay_status %s", m, want)
	}
}

func noticeBody(tradeNo, amount, result string) string {
	return fmt.Sprintf(`{"trade_no":%q,"amount":%q,"result":%q,"provider_txn":"txn-%s"}`, tradeNo, amount, result, tradeNo)
}

// notify posts a notification signed with the pay secret.
func (e *env) notify(t *testing.T, ch, body string) response {
	t.Helper()
	return e.do(t, "POST", "/v1/payments/notify/"+ch, body, auth{"X-Grab-Signature": sign(paySecret, body)})
}

func (e *env) ack(t *testing.T, ch, body string) {
	t.Helper()
	m := expect(t, e.notify(t, ch, body), 200)
	keys(t, "ack", m, "ack")
	if m["ack"] != "success" {
		t.Fatalf("ack = %v", m)
	}
}

func (e *env) grabOK(t *testing.T, id, u int64, credited bool) int64 {
	t.Helper()
	g := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", id), ``, user(u)), 200)
	keys(t, "grab", g, "packet_id", "amount", "seq", "repeat", "credited")
	if integer(t, "packet_id", g["packet_id"]) != id || g["repeat"] != false || g["credited"] != credited {
		t.Fatalf("grab by %d = %v, want credited %v", u, g, credited)
	}
	return fen(t, "amount", g["amount"])
}

func (e *env) grabFails(t *testing.T, id, u int64, status int, code string) {
	t.Helper()
	r := e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", id), ``, user(u))
	if r.status != status || r.errorCode(t) != code {
		t.Fatalf("grab by %d: %d %s, want %d %s", u, r.status, r.body, status, code)
	}
}

func fails(t *testing.T, what string, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
	}
	if got := r.errorCode(t); got != code {
		t.Fatalf("%s: code %s, want %s: %s", what, got, code, r.body)
	}
}

// packet is the detail as user u sees it.
func (e *env) packet(t *testing.T, id, u int64) map[string]any {
	t.Helper()
	p := expect(t, e.do(t, "GET", fmt.Sprintf("/v1/packets/%d", id), ``, user(u)), 200)
	keys(t, "packet", p, packetFields...)
	return p
}

func (e *env) status(t *testing.T, id int64, status, payStatus string) map[string]any {
	t.Helper()
	p := e.packet(t, id, 1)
	if p["status"] != status || p["pay_status"] != payStatus {
		t.Fatalf("packet %d is %v/%v, want %s/%s", id, p["status"], p["pay_status"], status, payStatus)
	}
	return p
}

func (e *env) balanceOf(t *testing.T, u int64) int64 {
	t.Helper()
	return fen(t, "balance", expect(t, e.do(t, "GET", "/v1/balance", ``, user(u)), 200)["balance"])
}

// durable waits until the writer has put n grabs of the packet in the store.
func (e *env) durable(t *testing.T, id int64, n int) {
	t.Helper()
	enginetest.WaitFor(t, fmt.Sprintf("%d durable grabs of packet %d", n, id), func() bool {
		shares, err := e.db.Shares(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, s := range shares {
			if s.UserID.Valid {
				owned++
			}
		}
		if owned > n {
			t.Fatalf("packet %d has %d durable grabs, want %d", id, owned, n)
		}
		return owned == n
	})
}

// payState is everything a refused or repeated call must leave as it is.
type payState struct {
	balances map[int64]int64
	totals   store.Totals
	packet   packet.Packet
	shares   []store.Share
	payment  store.Payment
}

func (e *env) payState(t *testing.T, id int64, tradeNo string) payState {
	t.Helper()
	ctx := context.Background()
	var s payState
	s.balances, s.totals = e.money(t, 1, 2, 3, 4, 5, 6)
	var err error
	if s.packet, err = e.Packets.GetPacket(ctx, id, 1); err != nil {
		t.Fatal(err)
	}
	if s.shares, err = e.db.Shares(ctx, id); err != nil {
		t.Fatal(err)
	}
	if s.payment, err = e.db.Payment(ctx, tradeNo); err != nil {
		t.Fatal(err)
	}
	return s
}

func unchanged(t *testing.T, what string, before, after payState) {
	t.Helper()
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("%s changed the state:\nbefore %+v\nafter  %+v", what, before, after)
	}
}

// conserved checks that no money was made or lost: every balance is in the
// ledger, and the balances are the deposit plus what was credited out of the
// packets the provider paid for; what is left in those packets is still held.
func (e *env) conserved(t *testing.T, paid ...int64) {
	t.Helper()
	ctx := context.Background()
	tot, err := e.db.MoneyTotals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tot.Balances != tot.Ledger {
		t.Fatalf("balances %d != ledger %d", tot.Balances, tot.Ledger)
	}
	want := int64(deposit)
	for _, id := range paid {
		p, err := e.Packets.GetPacket(ctx, id, 1)
		if err != nil {
			t.Fatal(err)
		}
		if p.PayStatus != store.PaymentPaid {
			t.Fatalf("packet %d is %s, not paid", id, p.PayStatus)
		}
		var grabbed int64
		for _, g := range p.Grabs {
			grabbed += g.Amount
		}
		if grabbed+p.RemainingAmount != p.Total {
			t.Fatalf("packet %d: grabs %d + remaining %d != total %d", id, grabbed, p.RemainingAmount, p.Total)
		}
		want += grabbed
	}
	if int64(tot.Balances) != want {
		t.Fatalf("balances sum to %d, want %d", tot.Balances, want)
	}
}

func TestPayByProvider(t *testing.T) {
	e, _ := payEnv(t)
	id := e.newPacket(t)
	pay := fmt.Sprintf("/v1/packets/%d/pay", id)

	tradeNo := e.payAlipay(t, id)
	if again := e.payAlipay(t, id); again != tradeNo {
		t.Fatalf("second alipay trade %s, first %s", again, tradeNo)
	}
	before := e.payState(t, id, tradeNo)
	for _, c := range []struct {
		name, body string
		auth       auth
		status     int
		code       string
	}{
		{"a non-sender", `{"method":"alipay"}`, user(2), 403, "FORBIDDEN"},
		{"an outsider", `{"method":"alipay"}`, user(9), 403, "FORBIDDEN"},
		{"no credentials", `{"method":"alipay"}`, nil, 401, "UNAUTHENTICATED"},
		{"an unknown method", `{"method":"paypal"}`, user(1), 400, "INVALID_ARGUMENT"},
		{"a method in capitals", `{"method":"ALIPAY"}`, user(1), 400, "INVALID_ARGUMENT"},
	} {
		fails(t, "pay by "+c.name, e.do(t, "POST", pay, c.body, c.auth), c.status, c.code)
		unchanged(t, "pay by "+c.name, before, e.payState(t, id, tradeNo))
	}
	fails(t, "pay an unknown packet", e.do(t, "POST", "/v1/packets/999999/pay", `{"method":"alipay"}`, user(1)), 404, "NOT_FOUND")

	p := e.status(t, id, "unpaid", "unpaid")
	if p["expires_at"] != nil || integer(t, "remaining_count", p["remaining_count"]) != 3 {
		t.Fatalf("unpaid packet = %v", p)
	}
	e.grabFails(t, id, 2, 409, "NOT_OPEN")
	unchanged(t, "grab of an unpaid packet", before, e.payState(t, id, tradeNo))
	if b := e.balanceOf(t, 1); b != deposit {
		t.Fatalf("sender balance %d: a provider payment debited it", b)
	}
	e.conserved(t)
}

// A sender who chooses another channel before returning from the first
// starts a new trade there, and the first ends as failed (not given up);
// money the first brings after all goes to the sender's balance, once. Once
// the sender has returned from a channel, another is NOT_PAYABLE.
func TestPayOnAnotherChannelSupersedesAnUnpaidTrade(t *testing.T) {
	e, _ := payEnv(t)
	id := e.newPacket(t)
	first := e.payAlipay(t, id)
	m := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"wechat"}`, user(1)), 200)
	second, _ := m["trade_no"].(string)
	if second == "" || second == first || m["status"] != "unpaid" {
		t.Fatalf("trade on another channel = %v (the first was %s)", m, first)
	}
	old := expect(t, e.do(t, "GET", "/v1/payments/"+first, "", user(1)), 200)
	if old["pay_status"] != "failed" || old["given_up"] != false {
		t.Fatalf("the superseded trade = %v, want failed, not given up", old)
	}
	e.status(t, id, "unpaid", "unpaid")

	e.paymentReturn(t, second, "awaiting_settlement")
	fails(t, "a third channel while the second awaits settlement",
		e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"unionpay"}`, user(1)), 409, "NOT_PAYABLE")
	e.ack(t, "wechat", noticeBody(second, "20.00", "success"))
	e.status(t, id, "open", "paid")

	// The payer paid the first trade after all: the sender gets it back, once.
	for range 2 {
		e.ack(t, "alipay", noticeBody(first, "20.00", "success"))
	}
	if b := e.balanceOf(t, 1); b != deposit+2000 {
		t.Fatalf("sender balance %d, want the deposit %d + 20.00 credited back", b, deposit)
	}
	back := expect(t, e.do(t, "GET", "/v1/payments/"+first, "", user(1)), 200)
	if back["pay_status"] != "failed" || back["credited_back"] != "20.00" {
		t.Fatalf("the superseded trade after its money came = %v", back)
	}
}

func TestPaymentReturn(t *testing.T) {
	e, _ := payEnv(t)
	id := e.newPacket(t)
	tradeNo := e.payAlipay(t, id)
	ret := "/v1/payments/" + tradeNo + "/return"

	before := e.payState(t, id, tradeNo)
	fails(t, "return by another user", e.do(t, "POST", ret, ``, user(2)), 403, "FORBIDDEN")
	fails(t, "return by an outsider", e.do(t, "POST", ret, ``, user(9)), 403, "FORBIDDEN")
	fails(t, "return without credentials", e.do(t, "POST", ret, ``, nil), 401, "UNAUTHENTICATED")
	fails(t, "return of an unknown trade", e.do(t, "POST", "/v1/payments/T999-000000000000/return", ``, user(1)), 404, "NOT_FOUND")
	fails(t, "return of an overlong trade", e.do(t, "POST", "/v1/payments/"+strings.Repeat("T", 65)+"/return", ``, user(1)), 400, "INVALID_ARGUMENT")
	fails(t, "return with GET", e.do(t, "GET", ret, ``, user(1)), 405, "METHOD_NOT_ALLOWED")
	unchanged(t, "refused returns", before, e.payState(t, id, tradeNo))
	e.grabFails(t, id, 2, 409, "NOT_OPEN")

	e.paymentReturn(t, tradeNo, "awaiting_settlement")
	p := e.status(t, id, "awaiting_settlement", "awaiting_settlement")
	exp := timestamp(t, "expires_at", p["expires_at"])
	if exp.Before(time.Now().Add(23 * time.Hour)) {
		t.Fatalf("expires_at = %v", exp)
	}
	// Grabs go on at once, not credited yet.
	got := map[int64]int64{2: e.grabOK(t, id, 2, false), 3: e.grabOK(t, id, 3, false)}
	e.durable(t, id, 2)
	my := e.packet(t, id, 2)["my_grab"].(map[string]any)
	if my["credited"] != false || fen(t, "my_grab.amount", my["amount"]) != got[2] {
		t.Fatalf("my_grab while awaiting settlement = %v", my)
	}
	// The packet cannot be paid again.
	fails(t, "pay after the return", e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"alipay"}`, user(1)), 409, "NOT_PAYABLE")
	fails(t, "pay by balance after the return", e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"balance"}`, user(1)), 409, "NOT_PAYABLE")

	// A second return answers the same and changes nothing.
	before = e.payState(t, id, tradeNo)
	e.paymentReturn(t, tradeNo, "awaiting_settlement")
	unchanged(t, "a second return", before, e.payState(t, id, tradeNo))
	fails(t, "return by a grabber", e.do(t, "POST", ret, ``, user(2)), 403, "FORBIDDEN")
	unchanged(t, "a grabber's return", before, e.payState(t, id, tradeNo))

	// Nobody is credited before the provider says it is paid, the sender
	// is not debited: the balances are the deposit.
	for u, want := range map[int64]int64{1: deposit, 2: 0, 3: 0} {
		if b := e.balanceOf(t, u); b != want {
			t.Fatalf("balance of %d = %d, want %d", u, b, want)
		}
	}
	e.conserved(t)
}

func TestNotify(t *testing.T) {
	e, sim := payEnv(t)
	id := e.newPacket(t)
	tradeNo := e.payAlipay(t, id)
	e.paymentReturn(t, tradeNo, "awaiting_settlement")
	got := map[int64]int64{2: e.grabOK(t, id, 2, false), 3: e.grabOK(t, id, 3, false)}
	e.durable(t, id, 2)

	ok := noticeBody(tradeNo, "20.00", "success")
	if sim.Sign([]byte(ok)) != sign(paySecret, ok) {
		t.Fatal("the simulator signs otherwise than the contract says")
	}
	upper := strings.ToUpper(sign(paySecret, ok))
	other := sign([]byte("another-secret-another-secret-!!"), ok)
	notifyURL := "/v1/payments/notify/alipay"
	unknown := noticeBody("T999-000000000000", "20.00", "success")
	mismatch := noticeBody(tradeNo, "19.99", "success")
	signed := func(body string) auth { return auth{"X-Grab-Signature": sign(paySecret, body)} }
	withField := `{"trade_no":"` + tradeNo + `","amount":"20.00","result":"success","provider_txn":"x","extra":1}`
	number := `{"trade_no":"` + tradeNo + `","amount":20.00,"result":"success","provider_txn":"x"}`
	maybe := noticeBody(tradeNo, "20.00", "maybe")

	before := e.payState(t, id, tradeNo)
	for _, c := range []struct {
		name, path, body string
		auth             auth
		status           int
		code             string
	}{
		{"a wrong signature", notifyURL, ok, auth{"X-Grab-Signature": other}, 401, "UNAUTHENTICATED"},
		{"no signature", notifyURL, ok, nil, 401, "UNAUTHENTICATED"},
		{"an empty signature", notifyURL, ok, auth{"X-Grab-Signature": ""}, 401, "UNAUTHENTICATED"},
		{"an uppercase signature", notifyURL, ok, auth{"X-Grab-Signature": upper}, 401, "UNAUTHENTICATED"},
		{"a signature of another body", notifyURL, ok + " ", signed(ok), 401, "UNAUTHENTICATED"},
		{"a signature that is not hex", notifyURL, ok, auth{"X-Grab-Signature": "zz" + sign(paySecret, ok)[2:]}, 401, "UNAUTHENTICATED"},
		{"a truncated signature", notifyURL, ok, auth{"X-Grab-Signature": sign(paySecret, ok)[:62]}, 401, "UNAUTHENTICATED"},
		{"a bearer token instead", notifyURL, ok, user(1), 401, "UNAUTHENTICATED"},
		{"an unknown trade", notifyURL, unknown, signed(unknown), 404, "NOT_FOUND"},
		{"another amount", notifyURL, mismatch, signed(mismatch), 409, "AMOUNT_MISMATCH"},
		{"an unknown channel", "/v1/payments/notify/paypal", ok, signed(ok), 404, "NOT_FOUND"},
		{"an unknown channel, unsigned", "/v1/payments/notify/paypal", ok, nil, 404, "NOT_FOUND"},
		{"a very long channel", "/v1/payments/notify/" + strings.Repeat("c", 3000), ok, nil, 404, "NOT_FOUND"},
		{"the trade's channel in capitals", "/v1/payments/notify/ALIPAY", ok, signed(ok), 404, "NOT_FOUND"},
		{"another channel than the trade's", "/v1/payments/notify/wechat", ok, signed(ok), 404, "NOT_FOUND"},
		{"an unknown field", notifyURL, withField, signed(withField), 400, "INVALID_ARGUMENT"},
		{"a number amount", notifyURL, number, signed(number), 400, "INVALID_ARGUMENT"},
		{"result maybe", notifyURL, maybe, signed(maybe), 400, "INVALID_ARGUMENT"},
		{"no result", notifyURL, `{"trade_no":"` + tradeNo + `","amount":"20.00"}`, signed(`{"trade_no":"` + tradeNo + `","amount":"20.00"}`), 400, "INVALID_ARGUMENT"},
		{"no amount", notifyURL, `{"trade_no":"` + tradeNo + `","result":"success"}`, signed(`{"trade_no":"` + tradeNo + `","result":"success"}`), 400, "INVALID_ARGUMENT"},
		{"no trade", notifyURL, `{"amount":"20.00","result":"success"}`, signed(`{"amount":"20.00","result":"success"}`), 400, "INVALID_ARGUMENT"},
		{"trailing data", notifyURL, ok + "x", signed(ok + "x"), 400, "INVALID_ARGUMENT"},
		{"a signed empty body", notifyURL, "", signed(""), 400, "INVALID_ARGUMENT"},
		{"GET", notifyURL, "", nil, 405, "METHOD_NOT_ALLOWED"},
	} {
		method := "POST"
		if c.name == "GET" {
			method = "GET"
		}
		fails(t, "notify with "+c.name, e.do(t, method, c.path, c.body, c.auth), c.status, c.code)
		unchanged(t, "notify with "+c.name, before, e.payState(t, id, tradeNo))
	}
	e.status(t, id, "awaiting_settlement", "awaiting_settlement")

	// Success: the packet is paid and open, the grabs made meanwhile credited.
	e.ack(t, "alipay", ok)
	e.status(t, id, "open", "paid")
	for u, want := range got {
		if b := e.balanceOf(t, u); b != want {
			t.Fatalf("balance of %d after settlement = %d, want %d", u, b, want)
		}
		my := e.packet(t, id, u)["my_grab"].(map[string]any)
		if my["credited"] != true || fen(t, "my_grab.amount", my["amount"]) != want {
			t.Fatalf("my_grab of %d after settlement = %v", u, my)
		}
	}
	if b := e.balanceOf(t, 1); b != deposit {
		t.Fatalf("sender balance %d: the provider paid, not the balance", b)
	}
	e.conserved(t, id)

	// Providers resend: a duplicate, and a late failure, are acknowledged
	// and change nothing; the payment never moves backwards.
	settled := e.payState(t, id, tradeNo)
	e.ack(t, "alipay", ok)
	unchanged(t, "a duplicate notification", settled, e.payState(t, id, tradeNo))
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "failed"))
	unchanged(t, "a late failure", settled, e.payState(t, id, tradeNo))
	e.paymentReturn(t, tradeNo, "paid")
	unchanged(t, "a return after settlement", settled, e.payState(t, id, tradeNo))
	fails(t, "notify with another amount after settlement", e.notify(t, "alipay", mismatch), 409, "AMOUNT_MISMATCH")
	unchanged(t, "a mismatch after settlement", settled, e.payState(t, id, tradeNo))

	// Grabs now are credited at once, through the writer.
	got[4] = e.grabOK(t, id, 4, true)
	e.durable(t, id, 3)
	if b := e.balanceOf(t, 4); b != got[4] {
		t.Fatalf("balance of 4 = %d, want %d", b, got[4])
	}
	e.grabFails(t, id, 5, 409, "SOLD_OUT")
	e.status(t, id, "finished", "paid")
	e.conserved(t, id)
}

func TestFailedPaymentOverHTTP(t *testing.T) {
	e, _ := payEnv(t)
	ctx := context.Background()
	id := e.newPacket(t)
	tradeNo := e.payAlipay(t, id)
	e.paymentReturn(t, tradeNo, "awaiting_settlement")
	got := map[int64]int64{2: e.grabOK(t, id, 2, false), 3: e.grabOK(t, id, 3, false)}
	e.durable(t, id, 2)

	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "failed"))
	p := e.status(t, id, "pay_failed", "failed")
	if len(p["grabs"].([]any)) != 2 {
		t.Fatalf("grabs after the failure = %v", p["grabs"])
	}
	e.grabFails(t, id, 4, 409, "NOT_OPEN")
	e.grabFails(t, id, 5, 409, "NOT_OPEN")
	// A grabber's repeat answers its own grab, still not credited.
	g := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", id), ``, user(2)), 200)
	if g["repeat"] != true || g["credited"] != false || fen(t, "amount", g["amount"]) != got[2] {
		t.Fatalf("repeat grab after the failure = %v", g)
	}
	for u := range got {
		my := e.packet(t, id, u)["my_grab"].(map[string]any)
		if my["credited"] != false {
			t.Fatalf("my_grab of %d after the failure = %v", u, my)
		}
	}
	// The sweep credits nothing of a failed payment.
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	failed := e.payState(t, id, tradeNo)
	if failed.balances[1] != deposit || failed.balances[2] != 0 || failed.balances[3] != 0 {
		t.Fatalf("balances after the failure = %v", failed.balances)
	}
	for _, s := range failed.shares {
		if s.Credited {
			t.Fatalf("share %d of a failed payment is credited", s.Seq)
		}
	}

	// A late success means the provider holds the sender's 20.00: the packet
	// stays closed and the sender's balance gets it back, once.
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "success"))
	late := e.payState(t, id, tradeNo)
	if late.balances[1] != deposit+2000 || late.totals.Ledger != failed.totals.Ledger+2000 {
		t.Fatalf("after a success that followed the failure: balances %v, ledger %d; want the sender's 20.00 back",
			late.balances, late.totals.Ledger)
	}
	failed.balances[1], failed.totals = late.balances[1], late.totals
	unchanged(t, "a success after the failure, but for the sender's balance", failed, late)
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "success"))
	unchanged(t, "a second success after the failure", failed, e.payState(t, id, tradeNo))

	// Nothing brings the packet back: a duplicate failure, a return (which
	// reports the failure), a new payment.
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "failed"))
	unchanged(t, "a duplicate failure", failed, e.payState(t, id, tradeNo))
	e.paymentReturn(t, tradeNo, "failed")
	unchanged(t, "a return after the failure", failed, e.payState(t, id, tradeNo))
	fails(t, "pay again after the failure", e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"alipay"}`, user(1)), 409, "NOT_PAYABLE")
	fails(t, "pay by balance after the failure", e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"balance"}`, user(1)), 409, "NOT_PAYABLE")
	unchanged(t, "pay after the failure", failed, e.payState(t, id, tradeNo))
	e.grabFails(t, id, 4, 409, "NOT_OPEN")
	e.status(t, id, "pay_failed", "failed")
	// Money in: the deposit, and the 20.00 the provider took after all, now the sender's.
	if tot, err := e.db.MoneyTotals(ctx); err != nil || tot.Balances != tot.Ledger || int64(tot.Balances) != deposit+2000 {
		t.Fatalf("money totals %+v (%v), want balances = ledger = deposit + 20.00", tot, err)
	}
}

// The notification may beat the app's return: the packet opens paid, and the
// return that follows reports it paid.
func TestNotifyBeforeReturn(t *testing.T) {
	e, sim := payEnv(t)
	ctx := context.Background()

	id := e.newPacket(t)
	tradeNo := e.payAlipay(t, id)
	// Through the simulator: its notification reaches the handler signed.
	if err := sim.Complete(ctx, tradeNo, true); err != nil {
		t.Fatal(err)
	}
	if sim.Sent() != 1 {
		t.Fatalf("simulator sent %d notifications", sim.Sent())
	}
	p := e.status(t, id, "open", "paid")
	timestamp(t, "expires_at", p["expires_at"])
	a := e.grabOK(t, id, 2, true)
	e.paymentReturn(t, tradeNo, "paid")
	e.status(t, id, "open", "paid")
	b := e.grabOK(t, id, 3, true)
	e.durable(t, id, 2)
	if e.balanceOf(t, 2) != a || e.balanceOf(t, 3) != b || e.balanceOf(t, 1) != deposit {
		t.Fatalf("balances %d %d %d", e.balanceOf(t, 1), e.balanceOf(t, 2), e.balanceOf(t, 3))
	}
	e.conserved(t, id)

	// A failure before the return: the packet never opens, and the return
	// that follows reports the failure.
	id2 := e.newPacket(t)
	trade2 := e.payAlipay(t, id2)
	e.ack(t, "alipay", noticeBody(trade2, "20.00", "failed"))
	e.status(t, id2, "pay_failed", "failed")
	e.grabFails(t, id2, 2, 409, "NOT_OPEN")
	e.paymentReturn(t, trade2, "failed")
	e.status(t, id2, "pay_failed", "failed")
	e.grabFails(t, id2, 2, 409, "NOT_OPEN")
	e.conserved(t, id)
}

// Without a pay secret every notification is refused, however it is signed.
func TestNotifyWithoutSecret(t *testing.T) {
	sim := paysim.New(nil, func(context.Context, string, []byte, string) error { return nil }, paysim.Faults{})
	e := setupWith(t, sim)
	body := noticeBody("T1-000000000000", "20.00", "success")
	for _, sig := range []string{"", sign(nil, body), sign([]byte{}, body)} {
		fails(t, "notify with sig "+sig, e.do(t, "POST", "/v1/payments/notify/alipay", body, auth{"X-Grab-Signature": sig}), 401, "UNAUTHENTICATED")
	}
}

func TestOpenAPIPayments(t *testing.T) {
	e := setup(t)
	doc := expect(t, e.do(t, "GET", "/openapi.json", ``, nil), 200)
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{"/v1/payments/{trade_no}/return", "/v1/payments/notify/{channel}"} {
		if _, ok := paths[p]; !ok {
			t.Errorf("openapi.json lacks %s", p)
		}
	}
	body := string(e.do(t, "GET", "/openapi.json", ``, nil).body)
	for _, want := range []string{`"AMOUNT_MISMATCH"`, `"X-Grab-Signature"`, `"NotifyRequest"`, `"Trade"`} {
		if !strings.Contains(body, want) {
			t.Errorf("openapi.json lacks %s", want)
		}
	}
}

// The sender may still pay by balance while a trade is in progress (the
// packet is unpaid until the provider answers). The provider's later word
// never takes the packet back: a success is returned to the sender's balance,
// a failure leaves the packet paid.
func TestBalancePaymentDuringTrade(t *testing.T) {
	e, _ := payEnv(t)
	balancePay := func(id int64) {
		t.Helper()
		p := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"balance"}`, user(1)), 200)
		if p["status"] != "open" || p["pay_status"] != "paid" {
			t.Fatalf("paid by balance = %v", p)
		}
	}

	// The provider succeeds after all.
	id := e.newPacket(t)
	tradeNo := e.payAlipay(t, id)
	balancePay(id)
	if b := e.balanceOf(t, 1); b != deposit-20_00 {
		t.Fatalf("sender balance %d after the balance payment", b)
	}
	fails(t, "pay by alipay after the balance", e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"alipay"}`, user(1)), 409, "NOT_PAYABLE")
	a := e.grabOK(t, id, 2, true)
	e.paymentReturn(t, tradeNo, "awaiting_settlement") // the trade's state; the packet stays as it is
	e.status(t, id, "open", "paid")
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "success"))
	e.status(t, id, "open", "paid")
	b := e.grabOK(t, id, 3, true)
	e.durable(t, id, 2)
	settled := e.payState(t, id, tradeNo)
	if settled.balances[1] != deposit || settled.balances[2] != a || settled.balances[3] != b {
		t.Fatalf("balances = %v; the provider's payment should have gone back to the sender", settled.balances)
	}
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "success"))
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "failed"))
	unchanged(t, "notifications after the refund", settled, e.payState(t, id, tradeNo))
	e.conserved(t, id)

	// The provider fails: the packet paid by balance stays paid and open.
	id2 := e.newPacket(t)
	trade2 := e.payAlipay(t, id2)
	balancePay(id2)
	e.ack(t, "alipay", noticeBody(trade2, "20.00", "failed"))
	e.status(t, id2, "open", "paid")
	c := e.grabOK(t, id2, 4, true)
	e.durable(t, id2, 1)
	if e.balanceOf(t, 1) != deposit-20_00 || e.balanceOf(t, 4) != c {
		t.Fatalf("balances %d and %d after a failed trade of a packet paid by balance", e.balanceOf(t, 1), e.balanceOf(t, 4))
	}
	tot, err := e.db.MoneyTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The deposit plus what the provider paid, less what the two packets still hold.
	if tot.Balances != tot.Ledger || int64(tot.Balances) != deposit+20_00-(20_00-a-b)-(20_00-c) {
		t.Fatalf("totals %+v", tot)
	}
}

// FuzzNotify feeds arbitrary, correctly signed bodies to the notify handler
// of a server with a trade awaiting settlement: every answer is 200 or a 4xx
// with an error body, never a 5xx or a panic, and money stays in the ledger.
func FuzzNotify(f *testing.F) {
	sim := paysim.New(paySecret, func(context.Context, string, []byte, string) error { return nil }, paysim.Faults{})
	e := setupWith(f, sim, func(c *grabhttp.Config) { c.PaySecret = paySecret })
	ctx := context.Background()
	if _, err := e.Packets.SetGroupMembers(ctx, 7, []int64{1, 2}); err != nil {
		f.Fatal(err)
	}
	p, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: 1, Kind: packet.KindGroupLucky, GroupID: 7, Count: 2, Amount: 2000})
	if err != nil {
		f.Fatal(err)
	}
	pay, err := e.Packets.PayByProvider(ctx, p.ID, 1, channel.Alipay)
	if err != nil {
		f.Fatal(err)
	}
	if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, 1); err != nil {
		f.Fatal(err)
	}
	if _, err := e.Packets.Grab(ctx, p.ID, 2); err != nil {
		f.Fatal(err)
	}
	tn := pay.TradeNo
	for _, seed := range []string{
		noticeBody(tn, "20.00", "success"),
		noticeBody(tn, "20.00", "failed"),
		noticeBody(tn, "20", "success"),
		noticeBody(tn, "19.99", "success"),
		noticeBody(tn, "0", "success"),
		noticeBody(tn, "-20.00", "success"),
		noticeBody(tn, "20.001", "success"),
		noticeBody(tn, "99999999999999999999.99", "success"),
		noticeBody(tn, "20.00", "maybe"),
		noticeBody(tn, "20.00", "SUCCESS"),
		noticeBody("T999-000000000000", "20.00", "success"),
		noticeBody("", "20.00", "success"),
		noticeBody(strings.Repeat("T", 65), "20.00", "success"),
		`{"trade_no":"` + tn + `","amount":"20.00","result":"success","provider_txn":"` + strings.Repeat("x", 65) + `"}`,
		`{"trade_no":"` + tn + `","amount":20.00,"result":"success"}`,
		`{"trade_no":"` + tn + `","amount":"20.00","result":"success","provider_txn":null}`,
		`{"trade_no":"` + tn + `","amount":"20.00","result":"success","extra":true}`,
		`{"trade_no":"` + tn + `","amount":"20.00","result":"success","result":"failed"}`,
		`{"trade_no":` + `1,"amount":"20.00","result":"success"}`,
		`{"trade_no":"` + tn + `","amount":"20.00","result":"success"} trailing`,
		`[]`, `null`, `""`, `{}`, `{"a":`, "\x00", ``,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := e.do(t, "POST", "/v1/payments/notify/alipay", body, auth{"X-Grab-Signature": sign(paySecret, body)})
		switch {
		case r.status == 200:
		case r.status >= 400 && r.status < 500:
			r.errorCode(t)
		default:
			t.Fatalf("body %q: status %d: %s", body, r.status, r.body)
		}
		tot, err := e.db.MoneyTotals(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if tot.Balances != tot.Ledger {
			t.Fatalf("body %q: balances %d, ledger %d", body, tot.Balances, tot.Ledger)
		}
	})
}

// Returns, duplicate notifications and grabs all at once: every notification
// is acknowledged, every grab the engine accepted is credited exactly once.
func TestConcurrentPaymentCallbacks(t *testing.T) {
	e, _ := payEnv(t)
	var paid []int64
	for round := range 5 {
		id := e.newPacket(t)
		paid = append(paid, id)
		tradeNo := e.payAlipay(t, id)
		ok := noticeBody(tradeNo, "20.00", "success")
		var calls []func() response
		for range 8 {
			calls = append(calls, func() response { return e.notify(t, "alipay", ok) })
		}
		for range 3 {
			calls = append(calls, func() response { return e.do(t, "POST", "/v1/payments/"+tradeNo+"/return", ``, user(1)) })
		}
		for u := int64(2); u <= 5; u++ {
			calls = append(calls, func() response { return e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", id), ``, user(u)) })
		}
		got := make([]response, len(calls))
		var wg sync.WaitGroup
		for i, call := range calls {
			wg.Go(func() { got[i] = call() })
		}
		wg.Wait()
		won := map[int64]int64{}
		for i, r := range got {
			switch {
			case i < 8:
				if m := expect(t, r, 200); m["ack"] != "success" {
					t.Fatalf("round %d: notify = %v", round, m)
				}
			case i < 11:
				if m := expect(t, r, 200); m["pay_status"] != "awaiting_settlement" && m["pay_status"] != "paid" {
					t.Fatalf("round %d: return = %v", round, m)
				}
			default:
				u := int64(i - 11 + 2)
				if r.status == 200 {
					won[u] = fen(t, "amount", r.object(t)["amount"])
					continue
				}
				if c := r.errorCode(t); r.status != 409 || (c != "NOT_OPEN" && c != "SOLD_OUT") {
					t.Fatalf("round %d: grab by %d: %d %s", round, u, r.status, r.body)
				}
			}
		}
		e.durable(t, id, len(won))
		if _, err := e.Packets.Reconcile(context.Background()); err != nil {
			t.Fatal(err)
		}
		e.status(t, id, map[bool]string{true: "finished", false: "open"}[len(won) == 3], "paid")
		for u, want := range won {
			my := e.packet(t, id, u)["my_grab"].(map[string]any)
			if my["credited"] != true || fen(t, "my_grab.amount", my["amount"]) != want {
				t.Fatalf("round %d: my_grab of %d = %v", round, u, my)
			}
		}
		e.conserved(t, paid...)
		// Each round's grabbers are credited what they won, once.
		shares, err := e.db.Shares(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range shares {
			if s.UserID.Valid && !s.Credited {
				t.Fatalf("round %d: share %d of user %d not credited", round, s.Seq, s.UserID.Int64)
			}
		}
	}
}

// flakyProvider fails the next CreateTrade calls while fail > 0.
type flakyProvider struct {
	channel.Provider
	fail atomic.Int32
}

func (p *flakyProvider) CreateTrade(ctx context.Context, t channel.Trade) error {
	if p.fail.Add(-1) >= 0 {
		return errors.New("provider unreachable")
	}
	return p.Provider.CreateTrade(ctx, t)
}

// A provider that cannot be reached is BUSY (503, a dependency down) and
// leaves the packet unpaid; asking again registers the same trade.
func TestPayByProviderUnreachable(t *testing.T) {
	sim := paysim.New(paySecret, func(context.Context, string, []byte, string) error { return nil }, paysim.Faults{})
	flaky := &flakyProvider{Provider: sim}
	e := setupWith(t, flaky, func(c *grabhttp.Config) { c.PaySecret = paySecret })
	expect(t, e.do(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3,4,5]}`, admin()), 200)
	id := e.newPacket(t)
	flaky.fail.Store(1)
	r := e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", id), `{"method":"alipay"}`, user(1))
	fails(t, "pay while the provider is unreachable", r, 503, "BUSY")
	if strings.Contains(string(r.body), "unreachable") {
		t.Fatalf("the error says something internal: %s", r.body)
	}
	e.status(t, id, "unpaid", "unpaid")
	tradeNo := e.payAlipay(t, id)
	if res, err := sim.QueryTrade(context.Background(), tradeNo); err != nil || res.Outcome != channel.TradePending {
		t.Fatalf("the provider does not know trade %s: %+v %v", tradeNo, res, err)
	}
	if again := e.payAlipay(t, id); again != tradeNo {
		t.Fatalf("trade %s, then %s", tradeNo, again)
	}
}

// The sender sees every state of a trade, and what of its money came back
// to the balance; nobody else sees it.
func TestPaymentStateForTheSender(t *testing.T) {
	e, _ := payEnv(t)
	id := e.newPacket(t)
	tradeNo := e.payAlipay(t, id)
	get := func(state string, back string) {
		t.Helper()
		m := expect(t, e.do(t, "GET", "/v1/payments/"+tradeNo, "", user(1)), 200)
		keys(t, "payment", m, "trade_no", "packet_id", "channel", "amount", "pay_status", "given_up", "credited_back", "created_at", "updated_at")
		if m["trade_no"] != tradeNo || m["channel"] != "alipay" || m["amount"] != "20.00" || m["pay_status"] != state || m["credited_back"] != back ||
			m["given_up"] != false { // a failure the channel reported; given up: engine tests

			t.Fatalf("payment = %v, want %s with %s credited back", m, state, back)
		}
		if integer(t, "packet_id", m["packet_id"]) != id {
			t.Fatalf("payment of packet %v, want %d", m["packet_id"], id)
		}
	}
	get("unpaid", "0.00")
	e.paymentReturn(t, tradeNo, "awaiting_settlement")
	get("awaiting_settlement", "0.00")
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "failed"))
	get("failed", "0.00")
	e.ack(t, "alipay", noticeBody(tradeNo, "20.00", "success")) // the money arrived after all
	get("failed", "20.00")

	fails(t, "another user", e.do(t, "GET", "/v1/payments/"+tradeNo, "", user(2)), 403, "FORBIDDEN")
	fails(t, "an unknown trade", e.do(t, "GET", "/v1/payments/T9-nothing", "", user(1)), 404, "NOT_FOUND")
	fails(t, "a trade number too long", e.do(t, "GET", "/v1/payments/"+strings.Repeat("t", 65), "", user(1)), 400, "INVALID_ARGUMENT")
	fails(t, "no identity", e.do(t, "GET", "/v1/payments/"+tradeNo, "", nil), 401, "UNAUTHENTICATED")
}
