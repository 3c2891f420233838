// Package paytest runs an engine on the real Redis and MariaDB behind grabd's
// HTTP API on a loopback server, paying through the providers a test plugs
// in, and checks what the payments did: which grabs were credited, what the
// anomaly counter counted, that nothing moved when nothing should, and that
// money is conserved to the fen. It serves the tests of the payment
// channels and their simulators.
package paytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/enginetest"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// Setup is what a test plugs into the engine and the API: the providers
// (engine.Deps.Provider and Providers), the native channels' notifiers
// (http.Config.Notifiers) and the secret of the JSON notifications.
type Setup struct {
	Provider  channel.Provider
	Providers map[string]channel.Provider
	Notifiers map[string]grabhttp.Notifier
	PaySecret []byte
}

// Env is an engine with its writer running, behind grabd's API at API.
type Env struct {
	Grab    *grab.Grab
	Packets *packet.Service // Grab.Packets
	DB      *store.DB
	Clock   *enginetest.Clock
	Cfg     engine.Config
	Metrics *prometheus.Registry // the engine's (Deps.Metrics)
	API     string               // grabd's base URL
}

// New starts the API's loopback server, asks build for the setup (which
// may need the server's URL, for the providers' notify URLs), and runs the
// engine behind it on a key prefix and database of the test's own.
func New(t testing.TB, build func(api string) Setup) *Env {
	t.Helper()
	db := storetest.MySQL(t)
	rdb, keys := redistest.Real(t, 16)
	var handler atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*handler.Load()).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)

	s := build(srv.URL)
	e := &Env{DB: db, Clock: enginetest.StartClock(), Cfg: enginetest.Config(keys), Metrics: prometheus.NewRegistry(), API: srv.URL}
	e.Grab = grab.New(grab.Deps{Deps: engine.Deps{Redis: rdb, DB: db, Clock: e.Clock, Log: enginetest.QuietLog(), Metrics: e.Metrics},
		Payments: packet.Deps{Provider: s.Provider, Providers: s.Providers}}, e.Cfg)
	e.Packets = e.Grab.Packets
	h := grabhttp.New(e.Grab, grabhttp.Config{PaySecret: s.PaySecret, Notifiers: s.Notifiers, DevAuth: true}, enginetest.QuietLog(), nil)
	handler.Store(&h)
	t.Cleanup(enginetest.RunWriter(e.Grab.Engine))
	return e
}

// NotifyPath is where a channel's notifications are posted.
func NotifyPath(ch string) string { return "/v1/payments/notify/" + ch }

// Do sends a request to grabd's API and returns its status and raw body.
func (e *Env) Do(t testing.TB, method, path string, h http.Header, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.API+path, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = append([]string(nil), v...)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, raw
}

// Call sends a JSON request to grabd's API as user (none when 0) and
// decodes its answer.
func (e *Env) Call(t testing.TB, method, path, body string, user int64, headers map[string]string) (int, map[string]any) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if user != 0 {
		h.Set("X-User-Id", fmt.Sprint(user))
	}
	for k, v := range headers {
		h.Set(k, v)
	}
	status, raw := e.Do(t, method, path, h, []byte(body))
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return status, m
}

// Return is the sender's app reporting the channel's synchronous return
// over the API: the trade awaits settlement (or keeps the outcome it has).
func (e *Env) Return(t testing.TB, tradeNo string, sender int64) string {
	t.Helper()
	status, body := e.Call(t, "POST", "/v1/payments/"+tradeNo+"/return", "", sender, nil)
	if status != http.StatusOK {
		t.Fatalf("return of %s = %d %v", tradeNo, status, body)
	}
	return fmt.Sprint(body["pay_status"])
}

// PayOverAPI is the sender's POST /v1/packets/{id}/pay on method: an unpaid
// trade for the packet's total; it returns the trade and its pay_params.
func (e *Env) PayOverAPI(t testing.TB, p packet.Packet, method string) (tradeNo string, params map[string]string) {
	t.Helper()
	status, body := e.Call(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", p.ID), fmt.Sprintf(`{"method":%q}`, method), p.SenderID, nil)
	raw, _ := body["pay_params"].(map[string]any)
	if status != http.StatusOK || body["status"] != store.PaymentUnpaid || body["amount"] != money.Format(p.Total) || raw == nil {
		t.Fatalf("pay with %s = %d %v", method, status, body)
	}
	params = map[string]string{}
	for k, v := range raw {
		params[k], _ = v.(string)
	}
	tradeNo, _ = body["trade_no"].(string)
	return tradeNo, params
}

// GrabOverAPI grabs p by users sender+1..sender+n over
// POST /v1/packets/{id}/grab while its payment awaits settlement: each is
// accepted and not credited yet. It returns what each won.
func (e *Env) GrabOverAPI(t testing.TB, p packet.Packet, n int) map[int64]int64 {
	t.Helper()
	won := map[int64]int64{}
	for u := p.SenderID + 1; u <= p.SenderID+int64(n); u++ {
		status, r := e.Call(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", p.ID), "", u, nil)
		amount, err := money.Parse(fmt.Sprint(r["amount"]))
		if status != http.StatusOK || r["credited"] != false || err != nil {
			t.Fatalf("grab by %d = %d %v", u, status, r)
		}
		won[u] = amount
	}
	return won
}

// Packet makes group sender of sender and members sender+1..sender+members
// and an unpaid group_lucky packet of shares shares.
func (e *Env) Packet(t testing.TB, sender int64, members, shares int, amount int64) packet.Packet {
	t.Helper()
	return UnpaidPacket(t, e.Packets, sender, members, shares, amount)
}

// UnpaidPacket makes group sender of sender and members
// sender+1..sender+members on eng and an unpaid group_lucky packet of
// shares shares holding amount fen.
func UnpaidPacket(t testing.TB, packets *packet.Service, sender int64, members, shares int, amount int64) packet.Packet {
	t.Helper()
	ctx := context.Background()
	users := []int64{sender}
	for i := int64(1); i <= int64(members); i++ {
		users = append(users, sender+i)
	}
	if _, err := packets.SetGroupMembers(ctx, sender, users); err != nil {
		t.Fatal(err)
	}
	p, err := packets.CreatePacket(ctx, packet.NewPacket{SenderID: sender, Kind: packet.KindGroupLucky, GroupID: sender, Count: shares, Amount: amount})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// PayAndGrab pays p on channel, returns it (the packet opens) and grabs it
// by users sender+1..sender+n: the grabs are not credited yet.
func (e *Env) PayAndGrab(t testing.TB, p packet.Packet, ch string, n int) (packet.Payment, map[int64]int64) {
	t.Helper()
	ctx := context.Background()
	pay, err := e.Packets.PayByProvider(ctx, p.ID, p.SenderID, ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, p.SenderID); err != nil {
		t.Fatal(err)
	}
	won := map[int64]int64{}
	for u := p.SenderID + 1; u <= p.SenderID+int64(n); u++ {
		r, err := e.Packets.Grab(ctx, p.ID, u)
		if err != nil || r.Credited {
			t.Fatalf("grab by %d while awaiting settlement = %+v, %v", u, r, err)
		}
		won[u] = r.Amount
	}
	return pay, won
}

// PayStatus is a trade's status as its sender reads it.
func (e *Env) PayStatus(t testing.TB, tradeNo string, sender int64) string {
	t.Helper()
	pay, err := e.Packets.TradeOf(context.Background(), tradeNo, sender)
	if err != nil {
		t.Fatal(err)
	}
	return pay.PayStatus
}

// View is p as its sender sees it.
func (e *Env) View(t testing.TB, p packet.Packet) packet.Packet {
	t.Helper()
	v, err := e.Packets.GetPacket(context.Background(), p.ID, p.SenderID)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Credited waits until the trade is final and the writer and the sweep have
// credited every grab: balances are want (and 0 for the sender).
func (e *Env) Credited(t testing.TB, sender int64, want map[int64]int64) {
	t.Helper()
	ctx := context.Background()
	enginetest.WaitFor(t, "grabs credited", func() bool {
		if _, err := e.Packets.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		for u, amount := range want {
			if b, err := e.Packets.Balance(ctx, u); err != nil || b != amount {
				return false
			}
		}
		return true
	})
	if b, _ := e.Packets.Balance(ctx, sender); b != 0 {
		t.Fatalf("the sender's balance moved to %d; the channel paid", b)
	}
}

// Written waits until the writer has made n grabs of p durable.
func (e *Env) Written(t testing.TB, p packet.Packet, n int) {
	t.Helper()
	enginetest.WaitOwned(t, e.DB, p.ID, n)
}

// NothingCredited waits until the writer has written the grabs of p by
// the users of won (the sender aside), then checks that none of them is
// credited and that no balance of theirs, or the sender's, moved.
func (e *Env) NothingCredited(t testing.TB, p packet.Packet, won map[int64]int64) {
	t.Helper()
	grabbers := 0
	for u := range won {
		if u != p.SenderID {
			grabbers++
		}
	}
	e.Written(t, p, grabbers)
	ctx := context.Background()
	for _, u := range append(keys(won), p.SenderID) {
		if b, _ := e.Packets.Balance(ctx, u); b != 0 {
			t.Fatalf("user %d was credited %d", u, b)
		}
	}
	shares, err := e.DB.Shares(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shares {
		if s.Credited {
			t.Fatalf("share %d of packet %d (user %v) is credited", s.Seq, p.ID, s.UserID)
		}
	}
}

func keys(m map[int64]int64) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Anomalies reads grab_payment_anomalies_total{kind}.
func (e *Env) Anomalies(t testing.TB, kind string) float64 {
	t.Helper()
	return enginetest.MetricWith(t, e.Metrics, "grab_payment_anomalies_total", "kind", kind)
}

// Conserved checks that money is conserved to the fen: every balance has
// its ledger rows, and the balances plus the money paid packets still hold
// (their totals less what was credited to grabbers and refunded) are the
// deposits plus channelIn, the money the channels took from payers.
func (e *Env) Conserved(t testing.TB, channelIn int64) {
	t.Helper()
	ctx := context.Background()
	totals, err := e.DB.MoneyTotals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if totals.Balances != totals.Ledger {
		t.Fatalf("balances %d != ledger %d", totals.Balances, totals.Ledger)
	}
	var m struct {
		Held     store.Fen `db:"held"`
		Deposits store.Fen `db:"deposits"`
	}
	if err := e.DB.SQL().GetContext(ctx, &m, `SELECT
		(SELECT COALESCE(SUM(p.total - p.refunded_amount), 0) FROM packet p WHERE p.pay_status = 'paid')
		- (SELECT COALESCE(SUM(s.amount), 0) FROM packet_share s JOIN packet p ON p.id = s.packet_id
			WHERE p.pay_status = 'paid' AND s.credited = 1) AS held,
		(SELECT COALESCE(SUM(amount), 0) FROM ledger WHERE kind = ?) AS deposits`, store.KindDeposit); err != nil {
		t.Fatal(err)
	}
	if got, want := int64(totals.Balances)+int64(m.Held), int64(m.Deposits)+channelIn; got != want {
		t.Fatalf("balances %d + held by packets %d = %d, want deposits %d + paid through channels %d = %d",
			totals.Balances, m.Held, got, m.Deposits, channelIn, want)
	}
}

// State is what a refused notification must leave as it was: p's trades,
// its status, its shares' owners and credits, and every balance.
type State struct {
	Trades, Packet, Shares, Balances string
}

// Snapshot reads p's State.
func (e *Env) Snapshot(t testing.TB, p packet.Packet) State {
	t.Helper()
	ctx := context.Background()
	var s State
	for _, q := range []struct {
		into  *string
		query string
		args  []any
	}{
		{&s.Trades, "SELECT trade_no, status, provider_txn FROM payment WHERE packet_id = ? ORDER BY trade_no", []any{p.ID}},
		{&s.Packet, "SELECT status, pay_status, pay_method FROM packet WHERE id = ?", []any{p.ID}},
		{&s.Shares, "SELECT seq, COALESCE(user_id, 0), credited FROM packet_share WHERE packet_id = ? ORDER BY seq", []any{p.ID}},
		{&s.Balances, "SELECT user_id, balance FROM account ORDER BY user_id", nil},
	} {
		rows, err := e.DB.SQL().QueryxContext(ctx, q.query, q.args...)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for rows.Next() {
			cols, err := rows.SliceScan()
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cols {
				if raw, ok := c.([]byte); ok {
					c = string(raw)
				}
				fmt.Fprintf(&b, "%v ", c)
			}
			b.WriteString("; ")
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		*q.into = b.String()
	}
	return s
}

// Unchanged checks that p's State is still before.
func (e *Env) Unchanged(t testing.TB, p packet.Packet, before State, what string) {
	t.Helper()
	if after := e.Snapshot(t, p); after != before {
		t.Fatalf("%s changed packet %d:\nbefore %+v\nafter  %+v", what, p.ID, before, after)
	}
}
