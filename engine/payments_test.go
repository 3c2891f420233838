package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/paysim"
	"github.com/grab-engine/grab/store"
)

// payEnv is an engine on the real servers with a simulated provider whose
// notifications reach Engine.Notify directly.
func payEnv(t *testing.T, faults ...paysim.Faults) (*env, *paysim.Sim) {
	t.Helper()
	e := setupReal(t)
	var sim *paysim.Sim
	sim = paysim.New([]byte("secret"), func(ctx context.Context, channel string, body []byte, _ string) error {
		err := e.eng.Notify(ctx, decodeNotice(t, channel, body))
		if err != nil {
			t.Errorf("notification %s: %v", body, err)
		}
		return err
	}, append(faults, paysim.Faults{})[0])
	e.eng = engine.New(engine.Deps{Redis: e.rdb, DB: e.db, Clock: e.clock, Log: quietLog(), Provider: sim}, e.cfg)
	return e, sim
}

func decodeNotice(t *testing.T, channel string, body []byte) engine.Notification {
	var v struct {
		TradeNo     string `json:"trade_no"`
		Amount      string `json:"amount"`
		Result      string `json:"result"`
		ProviderTxn string `json:"provider_txn"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Errorf("notification %s: %v", body, err)
	}
	amount, err := engine.ParseAmount(v.Amount)
	if err != nil {
		t.Errorf("notification amount %q: %v", v.Amount, err)
	}
	return engine.Notification{Channel: channel, TradeNo: v.TradeNo, Amount: amount, Success: v.Result == "success", ProviderTxn: v.ProviderTxn}
}

// providerPacket sends a group_lucky packet of `shares` shares from sender to
// users sender+1..sender+members and starts its payment by alipay.
func providerPacket(t *testing.T, e *env, sender int64, members, shares int, amount int64) (engine.Packet, engine.Payment) {
	t.Helper()
	ctx := context.Background()
	users := []int64{sender}
	for i := int64(1); i <= int64(members); i++ {
		users = append(users, sender+i)
	}
	if _, err := e.eng.SetGroupMembers(ctx, sender, users); err != nil {
		t.Fatal(err)
	}
	p, err := e.eng.CreatePacket(ctx, engine.NewPacket{SenderID: sender, Kind: engine.KindGroupLucky, GroupID: sender, Count: shares, Amount: amount})
	if err != nil {
		t.Fatal(err)
	}
	pay, err := e.eng.PayByProvider(ctx, p.ID, sender, engine.ChannelAlipay)
	if err != nil {
		t.Fatal(err)
	}
	if pay.PayStatus != store.PaymentUnpaid || pay.Amount != amount {
		t.Fatalf("trade = %+v", pay)
	}
	return p, pay
}

func permutations(items []string) [][]string {
	if len(items) <= 1 {
		return [][]string{append([]string(nil), items...)}
	}
	var out [][]string
	for i := range items {
		rest := append(append([]string(nil), items[:i]...), items[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{items[i]}, p...))
		}
	}
	return out
}

// Every order of the sync return, the success notification and its duplicate,
// with two rounds of grabs anywhere among them, ends the same way: the packet
// paid and open, every grab it accepted credited exactly once.
func TestPaymentInAnyOrder(t *testing.T) {
	e, _ := payEnv(t)
	e.startWriter(t)
	ctx := context.Background()
	cases := 0
	seen := map[string]bool{}
	for i, order := range permutations([]string{"return", "notify", "duplicate", "grab", "grab"}) {
		if key := strings.Join(order, ","); seen[key] {
			continue // the two grab rounds are alike
		} else {
			seen[key] = true
		}
		sender := int64(1000 * (i + 1))
		p, pay := providerPacket(t, e, sender, 6, 4, 400)
		notice := engine.Notification{Channel: engine.ChannelAlipay, TradeNo: pay.TradeNo, Amount: 400, Success: true, ProviderTxn: "txn-" + pay.TradeNo}
		opened, notified := false, false
		won := map[int64]int64{}
		next := sender + 1
		for _, step := range order {
			switch step {
			case "return":
				got, err := e.eng.PaymentReturn(ctx, pay.TradeNo, sender)
				want := store.PaymentAwaitingSettlement
				if notified {
					want = store.PaymentPaid // a return never moves a settled payment back
				}
				if err != nil || got.PayStatus != want {
					t.Fatalf("%v: return = %+v, %v", order, got, err)
				}
				opened = true
			case "notify", "duplicate":
				if err := e.eng.Notify(ctx, notice); err != nil {
					t.Fatalf("%v: %s: %v", order, step, err)
				}
				opened, notified = true, true
			case "grab":
				for range 2 {
					r, err := e.eng.Grab(ctx, p.ID, next)
					switch {
					case !opened && errors.Is(err, engine.ErrNotOpen):
					case opened && err == nil:
						won[next] = r.Amount
					default:
						t.Fatalf("%v: grab by %d (opened %v) = %+v, %v", order, next, opened, r, err)
					}
					next++
				}
			}
		}
		e.drain(t, p.ID, len(won))
		if _, err := e.eng.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := e.eng.GetPacket(ctx, p.ID, sender)
		if err != nil {
			t.Fatal(err)
		}
		if v.PayStatus != "paid" || (v.Status != engine.StatusOpen && v.Status != engine.StatusFinished) || len(v.Grabs) != len(won) {
			t.Fatalf("%v: packet %s/%s with %d grabs, want paid and open with %d", order, v.Status, v.PayStatus, len(v.Grabs), len(won))
		}
		for u, amount := range won {
			if b, err := e.eng.Balance(ctx, u); err != nil || b != amount {
				t.Fatalf("%v: balance of %d = %d, %v; want %d", order, u, b, err, amount)
			}
		}
		if b, _ := e.eng.Balance(ctx, sender); b != 0 {
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
	if _, err := e.eng.PaymentReturn(ctx, pay.TradeNo, 10); err != nil {
		t.Fatal(err)
	}
	r, err := e.eng.Grab(ctx, p.ID, 11)
	if err != nil || r.Credited {
		t.Fatalf("grab while awaiting settlement = %+v, %v; want not credited", r, err)
	}
	// The writer is not running: the notification's own reconciliation
	// cannot see the grab.
	if err := e.eng.Notify(ctx, engine.Notification{Channel: engine.ChannelAlipay, TradeNo: pay.TradeNo, Amount: 300, Success: true}); err != nil {
		t.Fatal(err)
	}
	e.startWriter(t)
	e.drain(t, p.ID, 1)
	if b, _ := e.eng.Balance(ctx, 11); b != 0 {
		t.Fatalf("balance before the sweep = %d; the writer credited an unsettled grab", b)
	}
	for range 2 { // the second pass finds nothing left to do
		if _, err := e.eng.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if b, _ := e.eng.Balance(ctx, 11); b != r.Amount {
			t.Fatalf("balance after the sweep = %d, want %d", b, r.Amount)
		}
	}
	// Grabs after the settlement are credited at once.
	if r, err := e.eng.Grab(ctx, p.ID, 12); err != nil || !r.Credited {
		t.Fatalf("grab after settlement = %+v, %v; want credited", r, err)
	}
	assertLedgerMatchesBalances(t, e)
}

// A failed payment stops the grabs; none is ever credited; the sender is not
// debited; a late success changes nothing.
func TestFailedPayment(t *testing.T) {
	e, _ := payEnv(t)
	e.startWriter(t)
	ctx := context.Background()
	p, pay := providerPacket(t, e, 20, 4, 4, 400)
	if _, err := e.eng.Deposit(ctx, 20, 5000, "sender-funds"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.PaymentReturn(ctx, pay.TradeNo, 20); err != nil {
		t.Fatal(err)
	}
	grabbed := grabAll(t, e, p.ID, 21, 22)
	failed := engine.Notification{Channel: engine.ChannelAlipay, TradeNo: pay.TradeNo, Amount: 400}
	if err := e.eng.Notify(ctx, failed); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.Grab(ctx, p.ID, 23); !errors.Is(err, engine.ErrNotOpen) {
		t.Fatalf("grab after the failure: err = %v, want ErrNotOpen", err)
	}
	late := failed
	late.Success = true
	if err := e.eng.Notify(ctx, late); err != nil {
		t.Fatal(err)
	}
	e.drain(t, p.ID, len(grabbed))
	if _, err := e.eng.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := e.eng.GetPacket(ctx, p.ID, 21)
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != engine.StatusPayFailed || v.PayStatus != "failed" || v.MyGrab == nil || v.MyGrab.Credited {
		t.Fatalf("packet = %s/%s, my grab %+v; want pay_failed, not credited", v.Status, v.PayStatus, v.MyGrab)
	}
	for u := range grabbed {
		if b, _ := e.eng.Balance(ctx, u); b != 0 {
			t.Fatalf("balance of %d = %d after a failed payment", u, b)
		}
	}
	if b, _ := e.eng.Balance(ctx, 20); b != 5000 {
		t.Fatalf("sender balance = %d, want 5000: a failed payment debits nothing", b)
	}
	assertLedgerMatchesBalances(t, e)
}

// A settlement whose notification never came is asked of the provider once
// it is older than SettleTimeout, and settled either way.
func TestStaleSettlementIsQueried(t *testing.T) {
	for _, success := range []bool{true, false} {
		t.Run(fmt.Sprint("success=", success), func(t *testing.T) {
			e, sim := payEnv(t, paysim.Faults{LoseRate: 1})
			e.startWriter(t)
			ctx := context.Background()
			p, pay := providerPacket(t, e, 30, 2, 2, 200)
			if _, err := e.eng.PaymentReturn(ctx, pay.TradeNo, 30); err != nil {
				t.Fatal(err)
			}
			won := grabAll(t, e, p.ID, 31, 31)
			if err := sim.Complete(ctx, pay.TradeNo, success); err != nil { // its notification is lost
				t.Fatal(err)
			}
			e.drain(t, p.ID, 1)
			if _, err := e.eng.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			if got, _ := e.db.Payment(ctx, pay.TradeNo); got.Status != store.PaymentAwaitingSettlement {
				t.Fatalf("settled %s before the timeout", got.Status)
			}
			e.clock.Add(e.cfg.SettleTimeout + time.Second)
			if _, err := e.eng.Reconcile(ctx); err != nil {
				t.Fatal(err)
			}
			got, _ := e.db.Payment(ctx, pay.TradeNo)
			want, credit := store.PaymentFailed, int64(0)
			if success {
				want, credit = store.PaymentPaid, won[31].Amount
			}
			if got.Status != want {
				t.Fatalf("payment %s after the query, want %s", got.Status, want)
			}
			if b, _ := e.eng.Balance(ctx, 31); b != credit {
				t.Fatalf("grabber balance %d, want %d", b, credit)
			}
			assertLedgerMatchesBalances(t, e)
		})
	}
}

// assertLedgerMatchesBalances: every fen in a balance has its ledger row.
func assertLedgerMatchesBalances(t *testing.T, e *env) {
	t.Helper()
	totals, err := e.db.MoneyTotals(context.Background())
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
	e.startWriter(t)
	ctx := context.Background()
	p, pay := providerPacket(t, e, 40, 5, 5, 500)
	if _, err := e.eng.PaymentReturn(ctx, pay.TradeNo, 40); err != nil {
		t.Fatal(err)
	}
	won := grabAll(t, e, p.ID, 41, 43)
	wrong := engine.Notification{Channel: engine.ChannelAlipay, TradeNo: pay.TradeNo, Amount: 499, Success: true}
	if err := e.eng.Notify(ctx, wrong); !errors.Is(err, engine.ErrAmountMismatch) {
		t.Fatalf("wrong amount: err = %v, want ErrAmountMismatch", err)
	}
	if got, _ := e.db.Payment(ctx, pay.TradeNo); got.Status != store.PaymentAwaitingSettlement {
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
	e.drain(t, p.ID, len(won))
	if _, err := e.eng.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	for u, r := range won {
		if b, _ := e.eng.Balance(ctx, u); b != r.Amount {
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
	if _, err := e.eng.Deposit(ctx, 50, 1000, "sender-funds"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.PayByBalance(ctx, p.ID, 50); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := e.eng.Notify(ctx, engine.Notification{Channel: engine.ChannelAlipay, TradeNo: pay.TradeNo, Amount: 200, Success: true}); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := e.eng.Balance(ctx, 50); b != 1000 {
		t.Fatalf("sender balance = %d, want 1000 (paid 200 by balance, 200 back from the provider)", b)
	}
	assertLedgerMatchesBalances(t, e)
}

// Notifications held back, duplicated and then delivered in a shuffled order
// still settle each trade by its own outcome.
func TestReorderedNotifications(t *testing.T) {
	e, sim := payEnv(t, paysim.Faults{Hold: true, DuplicateRate: 0.5})
	e.startWriter(t)
	ctx := context.Background()
	outcomes := map[string]bool{}
	packets := map[string]engine.Packet{}
	for i := int64(0); i < 6; i++ {
		sender := 6000 + 100*i
		p, pay := providerPacket(t, e, sender, 2, 2, 200)
		if _, err := e.eng.PaymentReturn(ctx, pay.TradeNo, sender); err != nil {
			t.Fatal(err)
		}
		grabAll(t, e, p.ID, sender+1, sender+1)
		outcomes[pay.TradeNo], packets[pay.TradeNo] = i%2 == 0, p
		if err := sim.Complete(ctx, pay.TradeNo, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	sim.Flush(ctx)
	for tradeNo, success := range outcomes {
		p := packets[tradeNo]
		e.drain(t, p.ID, 1)
		if _, err := e.eng.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := e.eng.GetPacket(ctx, p.ID, p.SenderID)
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
		if b, _ := e.eng.Balance(ctx, p.SenderID+1); b != credited {
			t.Fatalf("trade %s: grabber balance %d, want %d", tradeNo, b, credited)
		}
	}
	assertLedgerMatchesBalances(t, e)
}
