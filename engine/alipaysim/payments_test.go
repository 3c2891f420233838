package alipaysim_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/alipaysim"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/paytest"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/store"
)

// grabAlipay is grabd paying through the Alipay client, whose gateway is the
// simulator over loopback HTTP, behind its API on a loopback server.
type grabAlipay struct {
	*paytest.Env
	client *alipay.Client
	// sim is Alipay: the gateway the client queries; it notifies grabd of
	// the trades a payer opened from an order string, and the catcher of
	// the trades the test makes itself.
	sim *alipaysim.Sim
	// again is Alipay's key and app in a second simulator: the notification
	// of an outcome sim's trade can no longer reach (a success after a
	// close, a close after a success), as a reordered or contradicting
	// Alipay would send it.
	again *alipaysim.Sim
	// caught are the notifications of trades the test made itself (Create,
	// not Open), caught before grabd and acknowledged; the test posts them.
	caught chan url.Values
}

func setupAlipay(t *testing.T) *grabAlipay {
	t.Helper()
	keys()
	g := &grabAlipay{caught: make(chan url.Values, 16)}
	catcher := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		g.caught <- r.PostForm
		_, _ = w.Write([]byte(alipay.Ack))
	}))
	t.Cleanup(catcher.Close)
	for _, s := range []**alipaysim.Sim{&g.sim, &g.again} {
		sim, err := alipaysim.New(alipaysim.Config{AppID: appID, AppPublicKey: &appKey.PublicKey, Key: alipayKey,
			NotifyURL: catcher.URL, Scale: scale})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sim.Stop)
		*s = sim
	}
	gw := httptest.NewServer(g.sim)
	t.Cleanup(gw.Close)
	pub, err := x509.MarshalPKIXPublicKey(&alipayKey.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	g.Env = paytest.New(t, func(api string) paytest.Setup {
		g.client, err = alipay.New(alipay.Config{AppID: appID,
			PrivateKey:      pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(appKey)}),
			AlipayPublicKey: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}),
			Gateway:         gw.URL, NotifyURL: api + paytest.NotifyPath(channel.Alipay), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return paytest.Setup{Providers: map[string]channel.Provider{channel.Alipay: g.client},
			Notifiers: map[string]grabhttp.Notifier{channel.Alipay: grabhttp.AlipayNotifier(g.client)}}
	})
	return g
}

// catch has a simulator make a notification (act: Pay, Close, Notify of a
// trade the test made) and returns it as Alipay posted it.
func (g *grabAlipay) catch(t testing.TB, act func() error) url.Values {
	t.Helper()
	if err := act(); err != nil {
		t.Fatal(err)
	}
	select {
	case form := <-g.caught:
		return form
	case <-time.After(10 * time.Second):
		t.Fatal("the simulator sent no notification")
		return nil
	}
}

// notice is a caught form as the channel posts it.
func notice(form url.Values) paytest.Notice {
	return paytest.Notice{Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded; charset=utf-8"}},
		Body: []byte(form.Encode())}
}

// resigned is form with set changed and signed again with Alipay's key, as
// Alipay signs a notification: genuine in every way but what set says.
func resigned(t *testing.T, form url.Values, set map[string]string) url.Values {
	t.Helper()
	out := url.Values{}
	for k, v := range form {
		out[k] = append([]string(nil), v...)
	}
	for k, v := range set {
		out.Set(k, v)
	}
	sig, err := alipay.Sign(alipayKey, []byte(alipay.SignContent(out, "sign", "sign_type")))
	if err != nil {
		t.Fatal(err)
	}
	out.Set("sign", sig)
	return out
}

// channel is Alipay as paytest drives it. Its notices come from the
// simulator: the first outcome of a trade from sim, the other from again.
func (g *grabAlipay) channel() paytest.Channel {
	return paytest.Channel{
		Name: channel.Alipay,
		Notice: func(t testing.TB, pay packet.Payment, success bool) paytest.Notice {
			amount := money.Format(pay.Amount)
			sim := g.sim
			if st := sim.Status(pay.TradeNo); st != "" && st != "WAIT_BUYER_PAY" {
				sim = g.again
			}
			sim.Create(pay.TradeNo, amount) // the payer opened it
			act := func() error { return sim.Close(pay.TradeNo) }
			if success {
				act = func() error { return sim.Pay(pay.TradeNo, amount) }
			}
			return notice(g.catch(t, act))
		},
		Acked: func(status int, body []byte) bool { return status == http.StatusOK && string(body) == alipay.Ack },
		Refusal: func(status int, body []byte) bool {
			return status != http.StatusOK && strings.HasPrefix(string(body), "fail: ")
		},
		Forget: func(testing.TB, packet.Payment) {}, // Alipay knows a trade only once its order string is opened
	}
}

// Paying with Alipay end to end over grabd's API: the pay call answers an
// order string the simulator's SDK side accepts (signed by the app, for
// the trade, amount and notify URL); after the sender's return and the
// grabs, Alipay's notification (the first send lost, then every send
// duplicated) settles the trade, is acknowledged with exactly "success",
// and the grabs are credited.
func TestPayWithAlipayOverTheAPI(t *testing.T) {
	g := setupAlipay(t)
	p := g.Packet(t, 100, 3, 3, 2000)
	tradeNo, params := g.PayOverAPI(t, p, channel.Alipay)
	orderString := params["order_string"]
	order, err := url.ParseQuery(orderString)
	if err != nil {
		t.Fatal(err)
	}
	var biz struct {
		OutTradeNo  string `json:"out_trade_no"`
		TotalAmount string `json:"total_amount"`
	}
	if err := json.Unmarshal([]byte(order.Get("biz_content")), &biz); err != nil || biz.OutTradeNo != tradeNo || biz.TotalAmount != "20.00" ||
		order.Get("notify_url") != g.API+paytest.NotifyPath(channel.Alipay) {
		t.Fatalf("order string %q (%v)", orderString, err)
	}
	if err := g.sim.Open(orderString); err != nil {
		t.Fatalf("Alipay refuses the order string: %v", err)
	}
	if st := g.sim.Status(tradeNo); st != "WAIT_BUYER_PAY" {
		t.Fatalf("opened trade is %q", st)
	}
	if got := g.Return(t, tradeNo, 100); got != store.PaymentAwaitingSettlement {
		t.Fatalf("return = %s", got)
	}
	won := g.GrabOverAPI(t, p, 3)
	g.sim.SetFaults(alipaysim.Faults{Lose: 1, Duplicate: true})
	if err := g.sim.Pay(tradeNo, "20.00"); err != nil {
		t.Fatal(err)
	}
	g.sim.Wait()
	var answers []string
	for _, d := range g.sim.Deliveries() {
		answers = append(answers, fmt.Sprintf("%d:%v:%d:%s", d.Attempt, d.Lost, d.HTTPStatus, d.Answer))
	}
	if got := fmt.Sprint(answers); got != "[1:true:0: 2:false:200:success 2:false:200:success]" {
		t.Fatalf("deliveries %s, want the first lost and the resend (twice) acknowledged with success", got)
	}
	if got := g.PayStatus(t, tradeNo, 100); got != store.PaymentPaid {
		t.Fatalf("payment %s after Alipay's notification", got)
	}
	g.Credited(t, 100, won)
	g.Conserved(t, 2000)
}

// Alipay notifications grabd must refuse, each answered with the status
// docs/api.md gives (not "success", so Alipay sends it again) and changing
// nothing: signed with another key, tampered after signing, another app's,
// a correctly signed amount the trade is not (409 AMOUNT_MISMATCH, counted),
// and a trade grabd never made (404). Alipay's notifications carry no
// signed timestamp to be stale (notify_time is informative, and Alipay sets
// no freshness bound), so there is no stale case. The genuine one is then
// taken.
func TestAlipayRefusedNotificationsChangeNothing(t *testing.T) {
	g := setupAlipay(t)
	p := g.Packet(t, 200, 2, 2, 500)
	pay, won := g.PayAndGrab(t, p, channel.Alipay, 2)
	g.sim.Create(pay.TradeNo, "5.00")
	genuine := g.catch(t, func() error { return g.sim.Pay(pay.TradeNo, "5.00") })
	again := func(f alipaysim.Faults) url.Values {
		g.sim.SetFaults(f)
		defer g.sim.SetFaults(alipaysim.Faults{})
		return g.catch(t, func() error { return g.sim.Notify(pay.TradeNo) })
	}
	wrongKey, tampered := again(alipaysim.Faults{WrongKey: true}), again(alipaysim.Faults{Tamper: true})
	g.sim.Create("T999_000000000000", "5.00")
	unknown := g.catch(t, func() error { return g.sim.Pay("T999_000000000000", "5.00") })

	g.Refused(t, g.channel(), p, won, []paytest.Refusal{
		paytest.Refuse("signed with another key", notice(wrongKey), 401, "UNAUTHENTICATED"),
		paytest.Refuse("tampered after signing", notice(tampered), 401, "UNAUTHENTICATED"),
		paytest.Refuse("another app's", notice(resigned(t, genuine, map[string]string{"app_id": "2021000000000999"})), 401, "UNAUTHENTICATED"),
		paytest.Refuse("another amount", notice(resigned(t, genuine, map[string]string{"total_amount": "0.50"})), 409, "AMOUNT_MISMATCH"),
		paytest.Refuse("a trade grabd never made", notice(unknown), 404, "NOT_FOUND"),
		paytest.Refuse("a body over the size bound", paytest.Notice{Header: notice(genuine).Header,
			Body: []byte(genuine.Encode() + "&pad=" + strings.Repeat("x", grabhttp.MaxBodyBytes))}, 413, "PAYLOAD_TOO_LARGE"),
	}, notice(genuine))
}

// Every order of the sender's return, Alipay's success notification and
// its duplicate (posted to grabd's notify URL) and two rounds of grabs ends
// with the packet paid and open and every accepted grab credited once.
func TestAlipayNotificationsInAnyOrder(t *testing.T) {
	g := setupAlipay(t)
	g.InAnyOrder(t, g.channel())
}

// Outcomes a packet cannot take, in Alipay's notifications: TRADE_CLOSED
// then TRADE_SUCCESS (with duplicates) credits the sender once and the
// packet stays pay_failed; TRADE_SUCCESS then TRADE_CLOSED moves nothing;
// a success for a packet paid by balance meanwhile, and one after the trade
// was given up, credit the sender once; each is counted; money is conserved.
func TestAlipayOutcomesThePacketCannotTake(t *testing.T) {
	g := setupAlipay(t)
	g.OutcomesThePacketCannotTake(t, g.channel(), 300)
}

// A trade Alipay never heard of (the payer never opened its order string;
// Alipay's query answers ACQ.TRADE_NOT_EXIST, signed) ends failed at once
// after the sender's return, and before any return only once SettleGiveUp
// has passed: its packet pay_failed, nothing credited, the give-up counted.
func TestAlipayUnknownTradeEndsFailed(t *testing.T) {
	g := setupAlipay(t)
	g.UnknownTrades(t, g.channel(), g.client, 400)
}
