package wechatpaysim_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/paytest"
	"github.com/grab-engine/grab/engine/wechatpay"
	"github.com/grab-engine/grab/engine/wechatpaysim"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/store"
)

var (
	grabKeysOnce               sync.Once
	grabMerchant, grabPlatform *rsa.PrivateKey
)

// grabKeys makes the merchant's API key and WeChat Pay's platform key, once.
func grabKeys(t *testing.T) {
	t.Helper()
	grabKeysOnce.Do(func() {
		var err error
		if grabMerchant, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if grabPlatform, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
}

// grabWechat is grabd paying through the WeChat Pay client, whose API is the
// simulator over loopback HTTP, behind its API on a loopback server.
type grabWechat struct {
	*paytest.Env
	client *wechatpay.Client
	// sim is WeChat Pay: it takes the client's orders and queries, and
	// notifies grabd; current is the simulator the client reaches, sim but
	// for a moment when another one stands in.
	sim     *wechatpaysim.Sim
	current atomic.Pointer[wechatpaysim.Sim]
}

// newSim is a WeChat Pay for the merchant, knowing no order yet.
func newSim(t testing.TB) *wechatpaysim.Sim {
	t.Helper()
	sim, err := wechatpaysim.New(wechatpaysim.Config{MchID: mchID, AppID: appID, MerchantSerial: mchSerial,
		MerchantKey: &grabMerchant.PublicKey, APIv3Key: apiV3Key, PlatformKey: grabPlatform, PlatformSerial: pubKeyID,
		Scale: 1e-4, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Shutdown)
	return sim
}

func setupWechat(t *testing.T) *grabWechat {
	t.Helper()
	grabKeys(t)
	g := &grabWechat{sim: newSim(t)}
	g.current.Store(g.sim)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { g.current.Load().ServeHTTP(w, r) }))
	t.Cleanup(api.Close)
	merchant, err := x509.MarshalPKCS8PrivateKey(grabMerchant)
	if err != nil {
		t.Fatal(err)
	}
	platform, err := x509.MarshalPKIXPublicKey(&grabPlatform.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	g.Env = paytest.New(t, func(grabd string) paytest.Setup {
		g.client, err = wechatpay.New(wechatpay.Config{MchID: mchID, AppID: appID, Serial: mchSerial,
			PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: merchant}), APIv3Key: apiV3Key,
			PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: platform}), PublicKeyID: pubKeyID,
			BaseURL: api.URL, NotifyURL: grabd + paytest.NotifyPath(channel.Wechat), Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return paytest.Setup{Providers: map[string]channel.Provider{channel.Wechat: g.client},
			Notifiers: map[string]grabhttp.Notifier{channel.Wechat: grabhttp.WechatNotifier(g.client, nil)}}
	})
	return g
}

// notification is WeChat Pay's notification of the trade in state, built
// by sim with the faults set now.
func notification(t testing.TB, sim *wechatpaysim.Sim, tradeNo, state string) paytest.Notice {
	t.Helper()
	if err := sim.SetState(tradeNo, state); err != nil {
		t.Fatal(err)
	}
	h, body, err := sim.Notification(tradeNo)
	if err != nil {
		t.Fatal(err)
	}
	return paytest.Notice{Header: h, Body: body}
}

// elsewhere is WeChat Pay's notification (its keys, this merchant) of trade
// tradeNo for total fen, SUCCESS, from a simulator that holds the order at
// that amount: the client places it there while that one stands in.
func (g *grabWechat) elsewhere(t *testing.T, tradeNo string, total int64) paytest.Notice {
	t.Helper()
	other := newSim(t)
	g.current.Store(other)
	err := g.client.CreateTrade(context.Background(), channel.Trade{TradeNo: tradeNo, Channel: channel.Wechat, Amount: total})
	g.current.Store(g.sim)
	if err != nil {
		t.Fatal(err)
	}
	return notification(t, other, tradeNo, wechatpay.StateSuccess)
}

// channel is WeChat Pay as paytest drives it. A failure is CLOSED (WeChat
// Pay does not notify a close itself; the notification is what a failed
// trade's would be, PAYERROR and REVOKED read the same).
func (g *grabWechat) channel() paytest.Channel {
	return paytest.Channel{
		Name: channel.Wechat,
		Notice: func(t testing.TB, pay packet.Payment, success bool) paytest.Notice {
			state := "CLOSED"
			if success {
				state = wechatpay.StateSuccess
			}
			return notification(t, g.sim, pay.TradeNo, state)
		},
		Acked: func(status int, body []byte) bool { return status == http.StatusNoContent && len(body) == 0 },
		Refusal: func(status int, body []byte) bool {
			var fail struct{ Code, Message string }
			return status >= 400 && json.Unmarshal(body, &fail) == nil && fail.Code == "FAIL" && fail.Message != ""
		},
		// WeChat Pay without the order: it lost it (a simulator that never
		// had it stands in from now on).
		Forget: func(t testing.TB, _ packet.Payment) {
			g.sim = newSim(t)
			g.current.Store(g.sim)
		},
	}
}

// Paying with WeChat Pay end to end over grabd's API: the pay call places
// the APP order (the simulator keeps it for the amount, with grabd's notify
// URL) and answers PayReq parameters whose sign verifies with the merchant's
// key; after the sender's return and the grabs, WeChat Pay's encrypted,
// signed notification (the first send lost, the resend duplicated) settles
// the trade, is acknowledged 204, and the grabs are credited.
func TestPayWithWechatOverTheAPI(t *testing.T) {
	g := setupWechat(t)
	p := g.Packet(t, 100, 3, 3, 2000)
	tradeNo, req := g.PayOverAPI(t, p, channel.Wechat)
	order, ok := g.sim.Trade(tradeNo)
	if !ok || order.Total != 2000 || order.State != "NOTPAY" || order.PrepayID != req["prepayid"] ||
		order.NotifyURL != g.API+paytest.NotifyPath(channel.Wechat) {
		t.Fatalf("WeChat Pay holds %+v (%v) for PayReq %v", order, ok, req)
	}
	if req["appid"] != appID || req["partnerid"] != mchID || req["package"] != "Sign=WXPay" || req["noncestr"] == "" {
		t.Fatalf("PayReq %v", req)
	}
	sig, _ := base64.StdEncoding.DecodeString(req["sign"])
	sum := sha256.Sum256([]byte(wechatpay.AppSignMessage(req["appid"], req["timestamp"], req["noncestr"], req["prepayid"])))
	if err := rsa.VerifyPKCS1v15(&grabMerchant.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("PayReq sign does not verify: %v", err)
	}
	if got := g.Return(t, tradeNo, 100); got != store.PaymentAwaitingSettlement {
		t.Fatalf("return = %s", got)
	}
	won := g.GrabOverAPI(t, p, 3)
	g.sim.SetFaults(wechatpaysim.Faults{Lose: 1, Duplicate: true})
	if err := g.sim.Pay(tradeNo); err != nil {
		t.Fatal(err)
	}
	g.sim.Wait()
	if got := fmt.Sprint(g.sim.Deliveries()); !g.sim.Acked(tradeNo) || got != fmt.Sprintf("[{%s 0 0} {%s 1 204}]", tradeNo, tradeNo) {
		t.Fatalf("deliveries %s, want the first lost and the resend acknowledged 204", got)
	}
	if got := g.PayStatus(t, tradeNo, 100); got != store.PaymentPaid {
		t.Fatalf("payment %s after WeChat Pay's notification", got)
	}
	g.Credited(t, 100, won)
	g.Conserved(t, 2000)
}

// WeChat Pay notifications grabd must refuse, each answered with the status
// docs/api.md gives, as {"code":"FAIL",…} (so WeChat Pay sends it again), and
// changing nothing: signed with another key, at a timestamp 10 minutes old,
// tampered after signing, encrypted with another APIv3 key, under a serial
// the merchant does not have, another merchant's; a correctly signed amount
// the trade is not (409 AMOUNT_MISMATCH, counted); a trade grabd never made
// (404). The genuine one is then taken.
func TestWechatRefusedNotificationsChangeNothing(t *testing.T) {
	g := setupWechat(t)
	p := g.Packet(t, 200, 2, 2, 500)
	pay, won := g.PayAndGrab(t, p, channel.Wechat, 2)
	genuine := notification(t, g.sim, pay.TradeNo, wechatpay.StateSuccess)
	var refusals []paytest.Refusal
	for name, f := range map[string]wechatpaysim.Faults{
		"signed with another key": {WrongKey: true}, "a stale timestamp": {Stale: true}, "tampered after signing": {Tamper: true},
		"another APIv3 key": {WrongAPIv3Key: true}, "an unknown serial": {UnknownSerial: true}, "another merchant's": {OtherMchID: true},
	} {
		g.sim.SetFaults(f)
		refusals = append(refusals, paytest.Refuse(name, notification(t, g.sim, pay.TradeNo, wechatpay.StateSuccess), 401, "UNAUTHENTICATED"))
	}
	g.sim.SetFaults(wechatpaysim.Faults{})
	refusals = append(refusals,
		paytest.Refuse("another amount", g.elsewhere(t, pay.TradeNo, 50), 409, "AMOUNT_MISMATCH"),
		paytest.Refuse("a trade grabd never made", g.elsewhere(t, "T999_000000000000", 500), 404, "NOT_FOUND"))

	g.Refused(t, g.channel(), p, won, refusals, genuine)
}

// Every order of the sender's return, WeChat Pay's SUCCESS notification
// and its duplicate (posted to grabd's notify URL) and two rounds of grabs
// ends with the packet paid and open and every accepted grab credited once.
func TestWechatNotificationsInAnyOrder(t *testing.T) {
	g := setupWechat(t)
	g.InAnyOrder(t, g.channel())
}

// Outcomes a packet cannot take, in WeChat Pay's notifications: CLOSED then
// SUCCESS (with duplicates) credits the sender once and the packet stays
// pay_failed; SUCCESS then CLOSED moves nothing; a success for a packet paid
// by balance meanwhile, and one after the trade was given up (NOTPAY past
// SettleGiveUp), credit the sender once; each is counted; money is conserved.
func TestWechatOutcomesThePacketCannotTake(t *testing.T) {
	g := setupWechat(t)
	g.OutcomesThePacketCannotTake(t, g.channel(), 300)
}

// A trade WeChat Pay has no record of (its query answers 404
// ORDER_NOT_EXIST, signed) ends failed at once after the sender's return,
// and before any return only once SettleGiveUp has passed: its packet
// pay_failed, nothing credited, the give-up counted.
func TestWechatUnknownTradeEndsFailed(t *testing.T) {
	g := setupWechat(t)
	g.UnknownTrades(t, g.channel(), g.client, 400)
}
