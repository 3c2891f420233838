package packet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/engine/paysim"
	"github.com/grab-engine/grab/engine/paytest"
	"github.com/grab-engine/grab/store"
)

// payEnv is an engine on the real servers with a simulated provider whose
// notifications reach packet.Service.Notify directly.
func payEnv(t *testing.T, faults ...paysim.Faults) (*enginetest.Env, *paysim.Sim) {
	t.Helper()
	e := enginetest.Real(t)
	var sim *paysim.Sim
	sim = paysim.New([]byte("secret"), func(ctx context.Context, ch string, body []byte, _ string) error {
		err := e.Packets.Notify(ctx, decodeNotice(t, ch, body))
		if err != nil {
			t.Errorf("notification %s: %v", body, err)
		}
		return err
	}, append(faults, paysim.Faults{})[0])
	e = e.Another(func(d *grab.Deps) { d.Payments.Provider = sim })
	return e, sim
}

func decodeNotice(t *testing.T, ch string, body []byte) channel.Notification {
	var v struct {
		TradeNo     string `json:"trade_no"`
		Amount      string `json:"amount"`
		Result      string `json:"result"`
		ProviderTxn string `json:"provider_txn"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Errorf("notification %s: %v", body, err)
	}
	amount, err := money.Parse(v.Amount)
	if err != nil {
		t.Errorf("notification amount %q: %v", v.Amount, err)
	}
	return channel.Notification{Channel: ch, TradeNo: v.TradeNo, Amount: amount, Success: v.Result == "success", ProviderTxn: v.ProviderTxn}
}

// providerPacket sends a group_lucky packet of `shares` shares from sender to
// users sender+1..sender+members and starts its payment by alipay.
func providerPacket(t *testing.T, e *enginetest.Env, sender int64, members, shares int, amount int64) (packet.Packet, packet.Payment) {
	t.Helper()
	ctx := context.Background()
	p := paytest.UnpaidPacket(t, e.Packets, sender, members, shares, amount)
	pay, err := e.Packets.PayByProvider(ctx, p.ID, sender, channel.Alipay)
	if err != nil {
		t.Fatal(err)
	}
	if pay.PayStatus != store.PaymentUnpaid || pay.Amount != amount {
		t.Fatalf("trade = %+v", pay)
	}
	return p, pay
}

// Every order of the sync return, the success notification and its duplicate,
// with two rounds of grabs anywhere among them, ends the same way: the packet
// paid and open, every grab it accepted credited exactly once.
func TestPaymentInAnyOrder(t *testing.T) {
	e, _ := payEnv(t)
	e.StartWriter(t)
	ctx := context.Background()
	cases := 0
	for i, order := range paytest.Orders() {
		sender := int64(1000 * (i + 1))
		p, pay := providerPacket(t, e, sender, 6, 4, 400)
		notice := channel.Notification{Channel: channel.Alipay, TradeNo: pay.TradeNo, Amount: 400, Success: true, ProviderTxn: "txn-" + pay.TradeNo}
		won := paytest.Play(t, e.Packets, p, order, func(notified bool) {
			got, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, sender)
			want := store.PaymentAwaitingSettlement
			if notified {
				want = store.PaymentPaid // a return never moves a settled payment back
			}
			if err != nil || got.PayStatus != want {
				t.Fatalf("%v: return = %+v, %v", order, got, err)
			}
		}, func() {
			if err := e.Packets.Notify(ctx, notice); err != nil {
				t.Fatalf("%v: notify: %v", order, err)
			}
		})
		e.Drain(t, p.ID, len(won))
		if _, err := e.Packets.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := e.Packets.GetPacket(ctx, p.ID, sender)
		if err != nil {
			t.Fatal(err)
		}
		if v.PayStatus != "paid" || (v.Status != packet.StatusOpen && v.Status != packet.StatusFinished) || len(v.Grabs) != len(won) {
			t.Fatalf("%v: packet %s/%s with %d grabs, want paid and open with %d", order, v.Status, v.PayStatus, len(v.Grabs), len(won))
		}
		for u, amount := range won {
			if b, err := e.Packets.Balance(ctx, u); err != nil || b != amount {
				t.Fatalf("%v: balance of %d = %d, %v; want %d", order, u, b, err, amount)
			}
		}
		if b, _ := e.Packets.Balance(ctx, sender); b != 0 {
			t.Fatalf("%v: the sender's balance moved to %d; the provider paid", order, b)
		}
		cases++
	}
	if cases != 60 {
		t.Fatalf("%d orders tried, want 5!/2 = 60", cases)
	}
	assertLedgerMatchesBalances(t, e)
}

// A grab that reaches the store after the payment settled (its event was
// still in the stream when the notification's reconciliation ran) is
// credited by the sweep, once.
func TestGrabWrittenAfterSettlementIsCredited(t *testing.T) {
	e, _ := payEnv(t)
	ctx := context.Background()
	p, pay := providerPacket(t, e, 10, 3, 3, 300)
	if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, 10); err != nil {
		t.Fatal(err)
	}
	r, err := e.Packets.Grab(ctx, p.ID, 11)
	if err != nil || r.Credited {
		t.Fatalf("grab while awaiting settlement = %+v, %v; want not credited", r, err)
	}
	// The writer is not running: the notification's own reconciliation
	// cannot see the grab.
	if err := e.Packets.Notify(ctx, channel.Notification{Channel: channel.Alipay, TradeNo: pay.TradeNo, Amount: 300, Success: true}); err != nil {
		t.Fatal(err)
	}
	e.StartWriter(t)
	e.Drain(t, p.ID, 1)
	if b, _ := e.Packets.Balance(ctx, 11); b != 0 {
		t.Fatalf("balance before the sweep = %d; the writer credited an unsettled grab", b)
	}
	for range 2 { // the second pass finds nothing left to do
		if _, err := e.Packets.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if b, _ := e.Packets.Balance(ctx, 11); b != r.Amount {
			t.Fatalf("balance after the sweep = %d, want %d", b, r.Amount)
		}
	}
	// Grabs after the settlement are credited at once.
	if r, err := e.Packets.Grab(ctx, p.ID, 12); err != nil || !r.Credited {
		t.Fatalf("grab after settlement = %+v, %v; want credited", r, err)
	}
	assertLedgerMatchesBalances(t, e)
}

// A failed payment stops the grabs; none is ever credited; the sender is not
// debited; a late success changes nothing.
func TestFailedPayment(t *testing.T) {
	e, _ := payEnv(t)
	e.StartWriter(t)
	ctx := context.Background()
	p, pay := providerPacket(t, e, 20, 4, 4, 400)
	if _, err := e.Packets.Deposit(ctx, 20, 5000, "sender-funds"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, 20); err != nil {
		t.Fatal(err)
	}
	grabbed := e.GrabAll(t, p.ID, 21, 22)
	failed := channel.Notification{Channel: channel.Alipay, TradeNo: pay.TradeNo, Amount: 400}
	if err := e.Packets.Notify(ctx, failed); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.Grab(ctx, p.ID, 23); !errors.Is(err, engine.ErrNotOpen) {
		t.Fatalf("grab after the failure: err = %v, want ErrNotOpen", err)
	}
	late := failed
	late.Success = true
	if err := e.Packets.Notify(ctx, late); err != nil {
		t.Fatal(err)
	}
	e.Drain(t, p.ID, len(grabbed))
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := e.Packets.GetPacket(ctx, p.ID, 21)
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != packet.StatusPayFailed || v.PayStatus != "failed" || v.MyGrab == nil || v.MyGrab.Credited {
		t.Fatalf("packet = %s/%s, my grab %+v; want pay_failed, not credited", v.Status, v.PayStatus, v.MyGrab)
	}
	for u := range grabbed {
		if b, _ := e.Packets.Balance(ctx, u); b != 0 {
			t.Fatalf("balance of %d = %d after a failed payment", u, b)
		}
	}
	// The late success means the provider holds the sender's 4.00: the packet
	// stays closed and the money goes to the sender's balance, once.
	if b, _ := e.Packets.Balance(ctx, 20); b != 5000+400 {
		t.Fatalf("sender balance = %d, want 5400: the money that arrived after the failure comes back", b)
	}
	if got, _ := e.DB.Payment(ctx, pay.TradeNo); got.Status != store.PaymentFailed {
		t.Fatalf("trade %s after its late success, want it to stay failed (its packet is closed)", got.Status)
	}
	assertLedgerMatchesBalances(t, e)
}

// payMetricsEnv is an engine with the simulated provider whose metrics the
// test reads.
func payMetricsEnv(t *testing.T) (*enginetest.Env, *paysim.Sim, *prometheus.Registry) {
	t.Helper()
	e, sim := payEnv(t)
	reg := prometheus.NewRegistry()
	return e.Another(func(d *grab.Deps) { d.Payments.Provider, d.Metrics = sim, reg }), sim, reg
}

func anomalies(t *testing.T, reg *prometheus.Registry, kind string) float64 {
	t.Helper()
	return enginetest.MetricWith(t, reg, "grab_payment_anomalies_total", "kind", kind)
}

// Outcomes a packet cannot take as they are move no money twice and none
// is forgotten: a success after a failure pays the sender back exactly once,
// a failure after a success changes nothing, and each is counted.
func TestPaymentOutcomesAfterTheFinalOne(t *testing.T) {
	e, _, reg := payMetricsEnv(t)
	ctx := context.Background()
	notice := func(tradeNo string, success bool) {
		t.Helper()
		if err := e.Packets.Notify(ctx, channel.Notification{Channel: channel.Alipay, TradeNo: tradeNo, Amount: 300, Success: success}); err != nil {
			t.Fatal(err)
		}
	}

	// failed -> success -> success: the sender is credited 3.00 once.
	p1, pay1 := providerPacket(t, e, 60, 2, 2, 300)
	notice(pay1.TradeNo, false)
	for range 3 {
		notice(pay1.TradeNo, true)
	}
	if b, _ := e.Packets.Balance(ctx, 60); b != 300 {
		t.Fatalf("sender balance %d after a success that followed a failure, want 300", b)
	}
	if v, _ := e.Packets.GetPacket(ctx, p1.ID, 60); v.Status != packet.StatusPayFailed {
		t.Fatalf("packet %s, want it to stay pay_failed", v.Status)
	}
	if n := anomalies(t, reg, "credited_back"); n != 1 {
		t.Fatalf("credited_back counted %v, want 1", n)
	}

	// success -> failed: nothing moves, and it is counted.
	p2, pay2 := providerPacket(t, e, 70, 2, 2, 300)
	notice(pay2.TradeNo, true)
	notice(pay2.TradeNo, false)
	if v, _ := e.Packets.GetPacket(ctx, p2.ID, 70); v.Status != packet.StatusOpen || v.PayStatus != "paid" {
		t.Fatalf("packet %s/%s after a failure that followed a success, want open/paid", v.Status, v.PayStatus)
	}
	if b, _ := e.Packets.Balance(ctx, 70); b != 0 {
		t.Fatalf("sender balance %d, want 0: the packet holds the money", b)
	}
	if n := anomalies(t, reg, "failure_after_success"); n != 1 {
		t.Fatalf("failure_after_success counted %v, want 1", n)
	}
	assertLedgerMatchesBalances(t, e)
}

// A trade the provider does not know ends at its first query, and one with
// no outcome ends after SettleGiveUp: failed, the packet closed, its grabs
// never credited. A success that comes after all pays the sender back.
func TestPaymentWithNoOutcomeIsGivenUp(t *testing.T) {
	e, sim, reg := payMetricsEnv(t)
	e.StartWriter(t)
	ctx := context.Background()

	// The provider forgot the trade (a restart, or past its retention).
	p1, pay1 := providerPacket(t, e, 80, 2, 2, 200)
	if _, err := e.Packets.PaymentReturn(ctx, pay1.TradeNo, 80); err != nil {
		t.Fatal(err)
	}
	won := e.GrabAll(t, p1.ID, 81, 81)
	sim.Forget(pay1.TradeNo)
	e.Drain(t, p1.ID, 1)

	// A trade the provider keeps pending forever.
	p2, pay2 := providerPacket(t, e, 90, 2, 2, 200)
	if _, err := e.Packets.PaymentReturn(ctx, pay2.TradeNo, 90); err != nil {
		t.Fatal(err)
	}

	e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.DB.Payment(ctx, pay1.TradeNo); got.Status != store.PaymentFailed {
		t.Fatalf("unknown trade %s after the query, want failed", got.Status)
	}
	if got, _ := e.DB.Payment(ctx, pay2.TradeNo); got.Status != store.PaymentAwaitingSettlement {
		t.Fatalf("pending trade %s before the give-up bound, want awaiting_settlement", got.Status)
	}
	e.Clock.Add(e.Cfg.SettleGiveUp)
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.DB.Payment(ctx, pay2.TradeNo); got.Status != store.PaymentFailed {
		t.Fatalf("pending trade %s after the give-up bound, want failed", got.Status)
	}
	for _, sp := range []struct {
		no     string
		sender int64
	}{{pay1.TradeNo, 80}, {pay2.TradeNo, 90}} {
		if v, err := e.Packets.TradeOf(ctx, sp.no, sp.sender); err != nil || !v.GivenUp || v.PayStatus != store.PaymentFailed {
			t.Fatalf("the sender sees trade %s as %+v, %v; want failed and given up", sp.no, v, err)
		}
	}
	for _, sp := range [][2]int64{{p1.ID, 80}, {p2.ID, 90}} {
		v, err := e.Packets.GetPacket(ctx, sp[0], sp[1])
		if err != nil || v.Status != packet.StatusPayFailed {
			t.Fatalf("packet %d is %s (%v) after its trade was given up, want pay_failed", sp[0], v.Status, err)
		}
	}
	if v, _ := e.Packets.GetPacket(ctx, p1.ID, 81); v.MyGrab == nil || v.MyGrab.Credited {
		t.Fatalf("grab of a given-up trade: %+v, want it never credited", v.MyGrab)
	}
	if b, _ := e.Packets.Balance(ctx, 81); b != 0 {
		t.Fatalf("grabber balance %d (won %d) after the trade was given up, want 0", b, won[81].Amount)
	}
	if n := anomalies(t, reg, "given_up"); n != 2 {
		t.Fatalf("given_up counted %v, want 2", n)
	}

	// The money arrives after all: the sender gets it back, once.
	for range 2 {
		if err := e.Packets.Notify(ctx, channel.Notification{Channel: channel.Alipay, TradeNo: pay2.TradeNo, Amount: 200, Success: true}); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := e.Packets.Balance(ctx, 90); b != 200 {
		t.Fatalf("sender balance %d after a success past the give-up, want 200", b)
	}
	assertLedgerMatchesBalances(t, e)
}

// Paying a packet that is not payable says what it is.
func TestNotPayableSaysWhatThePacketIs(t *testing.T) {
	e := enginetest.Real(t)
	p := e.GroupPacket(t, packet.KindGroupLucky, 3, 2, 200)
	_, err := e.Packets.PayByBalance(context.Background(), p.ID, 1)
	if !errors.Is(err, engine.ErrNotPayable) || !strings.HasSuffix(err.Error(), "it is open") {
		t.Fatalf("paying an open packet: %v, want ErrNotPayable ending \"it is open\"", err)
	}
}

// A settlement whose notification never came is asked of the provider once
// it is older than SettleTimeout, and settled either way.
func TestStaleSettlementIsQueried(t *testing.T) {
	for _, success := range []bool{true, false} {
		t.Run(fmt.Sprint("success=", success), func(t *testing.T) {
			e, sim := payEnv(t, paysim.Faults{LoseRate: 1})
			e.StartWriter(t)
			ctx := context.Background()
			p, pay := providerPacket(t, e, 30, 2, 2, 200)
			if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, 30); err != nil {
				t.Fatal(err)
			}
			won := e.GrabAll(t, p.ID, 31, 31)
			if err := sim.Complete(ctx, pay.TradeNo, success); err != nil { // its notification is lost
				t.Fatal(err)
			}
			e.Drain(t, p.ID, 1)
			if _, err := e.Packets.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := e.DB.Payment(ctx, pay.TradeNo); got.Status != store.PaymentAwaitingSettlement {
				t.Fatalf("settled %s before the timeout", got.Status)
			}
			e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
			if _, err := e.Packets.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			got, _ := e.DB.Payment(ctx, pay.TradeNo)
			want, credit := store.PaymentFailed, int64(0)
			if success {
				want, credit = store.PaymentPaid, won[31].Amount
			}
			if got.Status != want {
				t.Fatalf("payment %s after the query, want %s", got.Status, want)
			}
			if b, _ := e.Packets.Balance(ctx, 31); b != credit {
				t.Fatalf("grabber balance %d, want %d", b, credit)
			}
			assertLedgerMatchesBalances(t, e)
		})
	}
}

// assertLedgerMatchesBalances: every fen in a balance has its ledger row.
func assertLedgerMatchesBalances(t *testing.T, e *enginetest.Env) {
	t.Helper()
	totals, err := e.DB.MoneyTotals(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if totals.Balances != totals.Ledger {
		t.Fatalf("balances %d != ledger %d", totals.Balances, totals.Ledger)
	}
}

// Notifications delivered many times at once, reordered and delayed by the
// simulator, credit each grab once; a wrong amount changes nothing.
func TestConcurrentDuplicateNotifications(t *testing.T) {
	e, sim := payEnv(t, paysim.Faults{DuplicateRate: 1, Delay: 20 * time.Millisecond})
	e.StartWriter(t)
	ctx := context.Background()
	p, pay := providerPacket(t, e, 40, 5, 5, 500)
	if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, 40); err != nil {
		t.Fatal(err)
	}
	won := e.GrabAll(t, p.ID, 41, 43)
	wrong := channel.Notification{Channel: channel.Alipay, TradeNo: pay.TradeNo, Amount: 499, Success: true}
	if err := e.Packets.Notify(ctx, wrong); !errors.Is(err, engine.ErrAmountMismatch) {
		t.Fatalf("wrong amount: err = %v, want ErrAmountMismatch", err)
	}
	if got, _ := e.DB.Payment(ctx, pay.TradeNo); got.Status != store.PaymentAwaitingSettlement {
		t.Fatalf("a wrong amount moved the payment to %s", got.Status)
	}
	for range 5 {
		if err := sim.Complete(ctx, pay.TradeNo, true); err != nil { // each sends two, later, in any order
			t.Fatal(err)
		}
	}
	sim.Wait()
	if sim.Sent() != 10 {
		t.Fatalf("simulator sent %d notifications, want 10", sim.Sent())
	}
	e.Drain(t, p.ID, len(won))
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for u, r := range won {
		if b, _ := e.Packets.Balance(ctx, u); b != r.Amount {
			t.Fatalf("balance of %d = %d, want %d", u, b, r.Amount)
		}
	}
	assertLedgerMatchesBalances(t, e)
}

// A packet paid by balance while its provider trade was still open: when the
// trade succeeds after all, the money goes back to the sender's balance.
func TestProviderSuccessAfterBalancePayment(t *testing.T) {
	e, _ := payEnv(t)
	ctx := context.Background()
	p, pay := providerPacket(t, e, 50, 2, 2, 200)
	if _, err := e.Packets.Deposit(ctx, 50, 1000, "sender-funds"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.PayByBalance(ctx, p.ID, 50); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.Packets.Notify(ctx, channel.Notification{Channel: channel.Alipay, TradeNo: pay.TradeNo, Amount: 200, Success: true}); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := e.Packets.Balance(ctx, 50); b != 1000 {
		t.Fatalf("sender balance = %d, want 1000 (paid 200 by balance, 200 back from the provider)", b)
	}
	assertLedgerMatchesBalances(t, e)
}

// Notifications held back, duplicated and then delivered in a shuffled order
// still settle each trade by its own outcome.
func TestReorderedNotifications(t *testing.T) {
	e, sim := payEnv(t, paysim.Faults{Hold: true, DuplicateRate: 0.5})
	e.StartWriter(t)
	ctx := context.Background()
	outcomes := map[string]bool{}
	packets := map[string]packet.Packet{}
	for i := int64(0); i < 6; i++ {
		sender := 6000 + 100*i
		p, pay := providerPacket(t, e, sender, 2, 2, 200)
		if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, sender); err != nil {
			t.Fatal(err)
		}
		e.GrabAll(t, p.ID, sender+1, sender+1)
		outcomes[pay.TradeNo], packets[pay.TradeNo] = i%2 == 0, p
		if err := sim.Complete(ctx, pay.TradeNo, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	sim.Flush(ctx)
	for tradeNo, success := range outcomes {
		p := packets[tradeNo]
		e.Drain(t, p.ID, 1)
		if _, err := e.Packets.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := e.Packets.GetPacket(ctx, p.ID, p.SenderID)
		if err != nil {
			t.Fatal(err)
		}
		want, credited := "failed", int64(0)
		if success {
			want, credited = "paid", v.Grabs[0].Amount
		}
		if v.PayStatus != want {
			t.Fatalf("trade %s: pay_status %s, want %s", tradeNo, v.PayStatus, want)
		}
		if b, _ := e.Packets.Balance(ctx, p.SenderID+1); b != credited {
			t.Fatalf("trade %s: grabber balance %d, want %d", tradeNo, b, credited)
		}
	}
	assertLedgerMatchesBalances(t, e)
}

// Each channel goes to its own provider (Deps.Providers) and the rest to
// Deps.Provider: trades are made, and reconciled, where their channel
// lives; a channel no provider serves is refused, and nothing is recorded.
func TestProvidersByChannel(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	deliver := func(ctx context.Context, ch string, body []byte, _ string) error {
		return e.Packets.Notify(ctx, decodeNotice(t, ch, body))
	}
	alipay, gateway := paysim.New([]byte("a"), deliver, paysim.Faults{LoseRate: 1}), paysim.New([]byte("g"), deliver, paysim.Faults{LoseRate: 1})
	e = e.Another(func(d *grab.Deps) {
		d.Payments = packet.Deps{Provider: gateway, Providers: map[string]channel.Provider{channel.Alipay: alipay}}
	})

	trades := map[string]string{}
	for i, ch := range []string{channel.Alipay, channel.Wechat, channel.Unionpay} {
		p := paytest.UnpaidPacket(t, e.Packets, int64(500+10*i), 2, 2, 200)
		pay, err := e.Packets.PayByProvider(ctx, p.ID, p.SenderID, ch)
		if err != nil {
			t.Fatalf("%s: %v", ch, err)
		}
		trades[ch] = pay.TradeNo
	}
	for ch, no := range trades {
		_, errA := alipay.QueryTrade(ctx, no)
		_, errG := gateway.QueryTrade(ctx, no)
		if (ch == channel.Alipay) != (errA == nil) || (ch == channel.Alipay) != (errG != nil) {
			t.Fatalf("%s trade %s: alipay knows it: %v, the gateway: %v", ch, no, errA == nil, errG == nil)
		}
	}
	// Lost notifications: each trade is settled by asking its own provider.
	alipay.Complete(ctx, trades[channel.Alipay], true)
	gateway.Complete(ctx, trades[channel.Wechat], false)
	gateway.Complete(ctx, trades[channel.Unionpay], true)
	e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{channel.Alipay: store.PaymentPaid, channel.Wechat: store.PaymentFailed, channel.Unionpay: store.PaymentPaid}
	for ch, no := range trades {
		if got, _ := e.DB.Payment(ctx, no); got.Status != want[ch] {
			t.Fatalf("%s trade %s after reconciliation, want %s", ch, got.Status, want[ch])
		}
	}

	// Only Alipay enabled: WeChat Pay is refused before anything is recorded.
	only := e.Another(func(d *grab.Deps) { d.Payments.Providers = map[string]channel.Provider{channel.Alipay: alipay} }).Packets
	p := paytest.UnpaidPacket(t, only, 600, 2, 2, 200)
	if _, err := only.PayByProvider(ctx, p.ID, p.SenderID, channel.Wechat); !errors.Is(err, engine.ErrInvalidArgument) ||
		!strings.Contains(err.Error(), "wechat payments are not enabled") {
		t.Fatalf("paying by a channel not enabled: %v", err)
	}
	if v, _ := only.GetPacket(ctx, p.ID, p.SenderID); v.Status != packet.StatusUnpaid || v.PayStatus != "unpaid" {
		t.Fatalf("packet %s/%s after a refused channel, want unpaid", v.Status, v.PayStatus)
	}
}
