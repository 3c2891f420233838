package gatewaysim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/gatewaysim"
	"github.com/grab-engine/grab/engine/paytest"
	"github.com/grab-engine/grab/store"
)

// grabEnv is an engine on the real Redis and MariaDB paying through the
// gateway client, behind grabd's HTTP API on a loopback server, and the
// gateway simulator that notifies that API.
type grabEnv struct {
	*paytest.Env
	sim    *gatewaysim.Sim
	client *gateway.Client
}

func setupGrab(t *testing.T, clientSecret []byte, opts gatewaysim.Options) *grabEnv {
	t.Helper()
	if opts.Resend == nil {
		opts.Resend = fast
	}
	sim := gatewaysim.New(secret, opts)
	t.Cleanup(sim.Close)
	gw := httptest.NewServer(http.StripPrefix("/pay", sim))
	t.Cleanup(gw.Close)
	e := &grabEnv{sim: sim}
	e.Env = paytest.New(t, func(api string) paytest.Setup {
		var err error
		e.client, err = gateway.New(gateway.Config{BaseURL: gw.URL + "/pay", Secret: clientSecret, NotifyBase: api, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return paytest.Setup{Provider: e.client, PaySecret: secret}
	})
	return e
}

// A packet paid through the gateway end to end, over grabd's API: the trade
// is created at the gateway with the right fields, the gateway's signed
// notification (sent twice) settles it, and the grabs are credited.
func TestPayThroughTheGateway(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{Faults: gatewaysim.Faults{DuplicateRate: 1}})
	p := e.Packet(t, 100, 3, 3, 2000)
	status, body := e.Call(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", p.ID), `{"method":"wechat"}`, 100, nil)
	if status != 200 || body["status"] != "unpaid" || body["amount"] != "20.00" {
		t.Fatalf("pay = %d %v", status, body)
	}
	tradeNo := body["trade_no"].(string)
	rec, ok := e.sim.Trade(tradeNo)
	if !ok || rec.Channel != "wechat" || rec.Amount != 2000 || rec.NotifyURL != e.API+"/v1/payments/notify/wechat" ||
		rec.Creates != 1 || e.sim.Unauthorized() != 0 {
		t.Fatalf("the gateway holds %+v (%v), %d refused", rec, ok, e.sim.Unauthorized())
	}
	// Asking again on the same channel registers the same trade again, idempotently.
	if status, again := e.Call(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", p.ID), `{"method":"wechat"}`, 100, nil); status != 200 || again["trade_no"] != tradeNo {
		t.Fatalf("pay again = %d %v", status, again)
	}
	if status, body := e.Call(t, "POST", "/v1/payments/"+tradeNo+"/return", "", 100, nil); status != 200 || body["pay_status"] != "awaiting_settlement" {
		t.Fatalf("return = %d %v", status, body)
	}
	won := map[int64]int64{}
	for u := int64(101); u <= 103; u++ {
		r, err := e.Packets.Grab(context.Background(), p.ID, u)
		if err != nil || r.Credited {
			t.Fatalf("grab = %+v, %v", r, err)
		}
		won[u] = r.Amount
	}
	if err := e.sim.Complete(tradeNo, true); err != nil {
		t.Fatal(err)
	}
	e.sim.Wait()
	if rec, _ := e.sim.Trade(tradeNo); rec.Sends != 2 || rec.Acked != 2 || e.sim.GaveUp() != 0 {
		t.Fatalf("notifications: %+v, gave up %d", rec, e.sim.GaveUp())
	}
	if got := e.PayStatus(t, tradeNo, 100); got != store.PaymentPaid {
		t.Fatalf("payment %s after the notification", got)
	}
	e.Credited(t, 100, won)
}

// A trade the gateway ends as failed through its notification stops the
// grabs and credits none.
func TestGatewayFailureNotified(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{})
	p := e.Packet(t, 200, 2, 2, 300)
	pay, won := e.PayAndGrab(t, p, channel.Alipay, 1)
	e.sim.Complete(pay.TradeNo, false)
	e.sim.Wait()
	if got := e.PayStatus(t, pay.TradeNo, 200); got != store.PaymentFailed {
		t.Fatalf("payment %s", got)
	}
	if _, err := e.Packets.Grab(context.Background(), p.ID, 202); !errors.Is(err, engine.ErrNotOpen) {
		t.Fatalf("grab after the failure = %v", err)
	}
	e.NothingCredited(t, p, won)
}

// A notification the gateway lost: the reconciler's query settles the trade.
func TestLostNotificationSettledByQuery(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{Faults: gatewaysim.Faults{LoseRate: 1}})
	p := e.Packet(t, 300, 2, 2, 500)
	pay, won := e.PayAndGrab(t, p, channel.Unionpay, 2)
	e.sim.Complete(pay.TradeNo, true)
	e.sim.Wait()
	if rec, _ := e.sim.Trade(pay.TradeNo); rec.Sends != 0 {
		t.Fatalf("a lost notification was sent: %+v", rec)
	}
	ctx := context.Background()
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.PayStatus(t, pay.TradeNo, 300); got != store.PaymentAwaitingSettlement {
		t.Fatalf("payment %s before the settle timeout", got)
	}
	e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
	e.Credited(t, 300, won)
	if got := e.PayStatus(t, pay.TradeNo, 300); got != store.PaymentPaid {
		t.Fatalf("payment %s after the query", got)
	}
}

// A trade the gateway forgot ends as failed at the reconciler's first query.
func TestForgottenTradeEndsFailed(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{})
	p := e.Packet(t, 400, 2, 2, 500)
	pay, won := e.PayAndGrab(t, p, channel.Alipay, 1)
	e.sim.Forget(pay.TradeNo)
	e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
	if _, err := e.Packets.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.PayStatus(t, pay.TradeNo, 400); got != store.PaymentFailed {
		t.Fatalf("payment %s; want failed (the gateway does not know it)", got)
	}
	if _, err := e.Packets.Grab(context.Background(), p.ID, 402); !errors.Is(err, engine.ErrNotOpen) {
		t.Fatalf("grab after the give-up = %v", err)
	}
	e.NothingCredited(t, p, won)
}

// A gateway that is down is an ordinary error: the query is tried again on
// the next pass and nothing ends meanwhile.
func TestGatewayDownIsRetried(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{Faults: gatewaysim.Faults{LoseRate: 1}})
	p := e.Packet(t, 500, 2, 2, 500)
	pay, won := e.PayAndGrab(t, p, channel.Wechat, 2)
	e.sim.Complete(pay.TradeNo, true)
	e.sim.SetFaults(gatewaysim.Faults{ErrorRate: 1})
	e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
	if _, err := e.Packets.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.PayStatus(t, pay.TradeNo, 500); got != store.PaymentAwaitingSettlement {
		t.Fatalf("payment %s while the gateway is down", got)
	}
	e.sim.SetFaults(gatewaysim.Faults{})
	e.Credited(t, 500, won)
}

// Bad signatures are refused both ways: grab's requests signed with another
// secret (the gateway answers 401 and the pay fails), and notifications
// signed with another key or tampered after signing (grabd answers 401, the
// gateway resends in vain; the reconciler's query settles the trade).
func TestBadSignaturesBothWays(t *testing.T) {
	ctx := context.Background()
	t.Run("grab to gateway", func(t *testing.T) {
		e := setupGrab(t, []byte("another-secret"), gatewaysim.Options{})
		p := e.Packet(t, 600, 2, 2, 500)
		_, err := e.Packets.PayByProvider(ctx, p.ID, 600, channel.Alipay)
		if err == nil || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "another-secret") {
			t.Fatalf("pay with a badly signed create = %v", err)
		}
		if e.sim.Unauthorized() != 1 {
			t.Fatalf("%d requests refused", e.sim.Unauthorized())
		}
		if b, _ := e.Packets.Balance(ctx, 600); b != 0 {
			t.Fatalf("the sender's balance moved to %d", b)
		}
	})
	t.Run("gateway to grab", func(t *testing.T) {
		e := setupGrab(t, secret, gatewaysim.Options{Faults: gatewaysim.Faults{WrongKey: true}})
		p := e.Packet(t, 700, 2, 2, 800)
		pay, won := e.PayAndGrab(t, p, channel.Alipay, 2)
		e.sim.Complete(pay.TradeNo, true)
		e.sim.Wait()
		if rec, _ := e.sim.Trade(pay.TradeNo); rec.Sends != 8 || rec.Acked != 0 || e.sim.GaveUp() != 1 {
			t.Fatalf("notifications %+v, gave up %d", rec, e.sim.GaveUp())
		}
		// A correctly signed body with its amount changed after signing.
		body, sig, err := e.sim.Notification(pay.TradeNo)
		if err != nil {
			t.Fatal(err)
		}
		tampered := bytes.Replace(body, []byte(`"8.00"`), []byte(`"0.08"`), 1)
		if status, _ := e.Call(t, "POST", "/v1/payments/notify/alipay", string(tampered), 0, map[string]string{"X-Grab-Signature": sig}); status != 401 {
			t.Fatalf("tampered notification answered %d", status)
		}
		if got := e.PayStatus(t, pay.TradeNo, 700); got != store.PaymentAwaitingSettlement {
			t.Fatalf("payment %s after refused notifications", got)
		}
		e.NothingCredited(t, p, won)
		e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
		e.Credited(t, 700, won)
	})
}

// A gateway stating another amount is refused and nothing moves: its
// notification answers 409 (resent in vain), its query's success is not
// taken, and the grabs stay uncredited.
func TestAmountDisagreementRefused(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{})
	p := e.Packet(t, 800, 2, 2, 1000)
	pay, won := e.PayAndGrab(t, p, channel.Wechat, 2)
	if err := e.sim.SetAmount(pay.TradeNo, 1); err != nil {
		t.Fatal(err)
	}
	e.sim.Complete(pay.TradeNo, true)
	e.sim.Wait()
	if rec, _ := e.sim.Trade(pay.TradeNo); rec.Sends != 8 || rec.Acked != 0 {
		t.Fatalf("notifications %+v", rec)
	}
	body, sig, _ := e.sim.Notification(pay.TradeNo)
	if status, m := e.Call(t, "POST", "/v1/payments/notify/wechat", string(body), 0, map[string]string{"X-Grab-Signature": sig}); status != 409 ||
		!strings.Contains(fmt.Sprint(m), "AMOUNT_MISMATCH") {
		t.Fatalf("notification of another amount answered %d %v", status, m)
	}
	e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
	if _, err := e.Packets.Reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.PayStatus(t, pay.TradeNo, 800); got != store.PaymentAwaitingSettlement {
		t.Fatalf("payment %s after the gateway stated another amount", got)
	}
	won[800] = 0 // the sender, never debited
	e.NothingCredited(t, p, won)
}

// The gateway's own automatic completion, with delayed and reordered
// notifications over several packets, settles every one exactly once.
func TestManyPacketsWithDelayedNotifications(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{AutoComplete: 20 * time.Millisecond,
		Faults: gatewaysim.Faults{Delay: 100 * time.Millisecond, DuplicateRate: 0.5}, Seed: 7})
	want := map[int64]int64{}
	var trades []packet.Payment
	for i := range 5 {
		sender := int64(900 + 10*i)
		p := e.Packet(t, sender, 2, 2, 200)
		pay, won := e.PayAndGrab(t, p, []string{"alipay", "wechat", "unionpay"}[i%3], 2)
		trades = append(trades, pay)
		for u, a := range won {
			want[u] = a
		}
	}
	e.sim.Wait()
	for i, pay := range trades {
		if got := e.PayStatus(t, pay.TradeNo, int64(900+10*i)); got != store.PaymentPaid {
			t.Fatalf("payment %s is %s", pay.TradeNo, got)
		}
	}
	e.Credited(t, 900, want)
}

// channel is the gateway as paytest drives a channel: its notifications in
// docs/api.md's JSON, signed with X-Grab-Signature, for a trade on unionpay (the
// gateway serves every channel; unionpay has no native provider).
func (e *grabEnv) channel() paytest.Channel {
	return paytest.Channel{
		Name: channel.Unionpay,
		Notice: func(t testing.TB, pay packet.Payment, success bool) paytest.Notice {
			result := "failed"
			if success {
				result = "success"
			}
			body, err := json.Marshal(gateway.Notification{TradeNo: pay.TradeNo, Amount: money.Format(pay.Amount),
				Result: result, ProviderTxn: "gw-" + pay.TradeNo})
			if err != nil {
				t.Fatal(err)
			}
			h := http.Header{}
			h.Set("Content-Type", "application/json")
			h.Set(gateway.HeaderSignature, gateway.Sign(secret, body))
			return paytest.Notice{Header: h, Body: body}
		},
		Acked: func(status int, body []byte) bool {
			var ack struct{ Ack string }
			return status == http.StatusOK && json.Unmarshal(body, &ack) == nil && ack.Ack == "success"
		},
		Refusal: func(status int, body []byte) bool {
			var refusal struct{ Error struct{ Code string } }
			return status >= 400 && json.Unmarshal(body, &refusal) == nil && refusal.Error.Code != ""
		},
		Forget: func(_ testing.TB, pay packet.Payment) { e.sim.Forget(pay.TradeNo) },
	}
}

// The gateway's notifications in every order of the sender's return, the
// success and its duplicate, and two rounds of grabs (60 orders) end with
// the packet paid and open and every accepted grab credited once.
func TestGatewayNotificationsInAnyOrder(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{})
	e.InAnyOrder(t, e.channel())
}

// Outcomes a packet cannot take, in the gateway's notifications: failed
// then success credits the sender once and the packet stays pay_failed;
// success then failed moves nothing; a success for a packet paid by balance
// meanwhile, and one after the trade was given up, credit the sender once;
// each is counted; money is conserved.
func TestGatewayOutcomesThePacketCannotTake(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{})
	e.OutcomesThePacketCannotTake(t, e.channel(), 300)
}

// A trade the gateway has no record of (its 404 not_found) ends failed at
// once after the sender's return, and before any return only once
// SettleGiveUp has passed: its packet pay_failed, nothing credited, the
// give-up counted.
func TestGatewayUnknownTradeEndsFailed(t *testing.T) {
	e := setupGrab(t, secret, gatewaysim.Options{})
	e.UnknownTrades(t, e.channel(), e.client, 400)
}
