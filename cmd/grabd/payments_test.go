package main

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/alipaysim"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/simchannel"
	"github.com/grab-engine/grab/engine/wechatpaysim"
)

// keyFiles are a deployment's key files for both native channels, written
// to a test's directory, and the keys in them.
type keyFiles struct {
	dir                                 string
	alipayApp, alipay, merchant, wechat *rsa.PrivateKey
	wechatSerial, pubKeyID              string
	// The files, by the setting that names them.
	files map[string]string
}

var testKeys = sync.OnceValues(func() ([]*rsa.PrivateKey, error) {
	keys := make([]*rsa.PrivateKey, 4)
	for i := range keys {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}
		keys[i] = k
	}
	return keys, nil
})

// writeKeyFiles writes key files, as a deployment has them, to a new
// directory: Alipay's app key (PKCS #1) and Alipay's public key, the
// merchant's key (PKCS #8), the APIv3 key with a trailing newline, the
// WeChat Pay public key and a platform certificate.
func writeKeyFiles(t *testing.T) keyFiles {
	t.Helper()
	keys, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	k := keyFiles{dir: t.TempDir(), alipayApp: keys[0], alipay: keys[1], merchant: keys[2], wechat: keys[3],
		wechatSerial: "5157F09EFDC096DE15EBE81A47057A7232F1B8E1", pubKeyID: "PUB_KEY_ID_0114232134912410000000000000000000",
		files: map[string]string{}}
	der, err := x509.MarshalPKCS8PrivateKey(k.merchant)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5157F09E), Subject: pkix.Name{CommonName: "Tenpay.com Root CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.wechat.PublicKey, k.wechat)
	if err != nil {
		t.Fatal(err)
	}
	for setting, data := range map[string][]byte{
		"GRAB_ALIPAY_PRIVATE_KEY_FILE":   pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.alipayApp)}),
		"GRAB_ALIPAY_PUBLIC_KEY_FILE":    simchannel.PublicKeyPEM(k.alipay),
		"GRAB_WECHAT_PRIVATE_KEY_FILE":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		"GRAB_WECHAT_APIV3_KEY_FILE":     []byte(testAPIv3Key + "\n"),
		"GRAB_WECHAT_PUBLIC_KEY_FILE":    simchannel.PublicKeyPEM(k.wechat),
		"GRAB_WECHAT_PLATFORM_CERT_FILE": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert}),
	} {
		k.files[setting] = filepath.Join(k.dir, strings.ToLower(setting))
		if err := os.WriteFile(k.files[setting], data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return k
}

const testAPIv3Key = "0123456789abcdef0123456789abcdef"

// env is the production settings of both native channels (their URLs
// alipayURL and wechatURL), changed by change ("" deletes).
func (k keyFiles) env(alipayURL, wechatURL string, change ...string) map[string]string {
	m := map[string]string{"REDIS_ADDR": "127.0.0.1:6379", "MYSQL_DSN": "root@tcp(127.0.0.1:3306)/grab", "GRAB_JWT_SECRET": "s",
		"GRAB_PAY_PROVIDER": "alipay,wechat", "GRAB_ALIPAY_APP_ID": "2021004100000001", "GRAB_ALIPAY_GATEWAY": alipayURL,
		"GRAB_ALIPAY_NOTIFY_URL": "https://grab.example.com/v1/payments/notify/alipay",
		"GRAB_WECHAT_MCHID":      "1900000109", "GRAB_WECHAT_APPID": "wxd678efh567hg6787", "GRAB_WECHAT_SERIAL": k.wechatSerial,
		"GRAB_WECHAT_PUBLIC_KEY_ID": k.pubKeyID, "GRAB_WECHAT_BASE_URL": wechatURL,
		"GRAB_WECHAT_NOTIFY_URL": "https://grab.example.com/v1/payments/notify/wechat"}
	for setting, file := range k.files {
		if setting != "GRAB_WECHAT_PLATFORM_CERT_FILE" {
			m[setting] = file
		}
	}
	for i := 0; i+1 < len(change); i += 2 {
		if change[i+1] == "" {
			delete(m, change[i])
		} else {
			m[change[i]] = change[i+1]
		}
	}
	return m
}

func TestParseConfigPayProviders(t *testing.T) {
	k := writeKeyFiles(t)
	prod := func(change ...string) map[string]string {
		return k.env("https://openapi.alipay.com/gateway.do", "https://api.mch.weixin.qq.com", change...)
	}
	embedded := func(list string) map[string]string { return map[string]string{"GRAB_PAY_PROVIDER": list} }
	notAKey := filepath.Join(k.dir, "not-a-key")
	os.WriteFile(notAKey, []byte("-----BEGIN RSA PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END RSA PRIVATE KEY-----\n"), 0o600)
	shortAPIv3 := filepath.Join(k.dir, "short-apiv3")
	os.WriteFile(shortAPIv3, []byte("0123456789abcdef\n"), 0o600)
	missing := filepath.Join(k.dir, "missing.pem")
	cases := []payCase{
		{"natives and the gateway, simulated", embedded("alipay, wechat,gateway"), ""},
		{"natives and sim", embedded("sim,alipay"), ""},
		{"native alone", embedded("wechat"), ""},
		{"named twice", embedded("alipay,wechat,alipay"), "GRAB_PAY_PROVIDER: alipay is named twice"},
		{"sim and gateway", embedded("gateway,sim"), "name one of them"},
		{"unknown", embedded("alipay,paypal"), `"paypal" is not a provider; they are alipay, wechat, gateway, sim`},
		{"production natives", prod(), ""},
		{"production natives, no pay secret needed", prod("GRAB_PAY_SECRET", ""), ""},
		{"production natives with sim", prod("GRAB_PAY_PROVIDER", "alipay,wechat,sim", "GRAB_PAY_SECRET", "p"), "only in the embedded mode"},
		{"dev natives with sim need the pay secret", prod("GRAB_PAY_PROVIDER", "alipay,wechat,sim", "GRAB_AUTH", "dev"), "GRAB_PAY_SECRET is required"},
		{"dev natives with sim and the pay secret", prod("GRAB_PAY_PROVIDER", "alipay,wechat,sim", "GRAB_AUTH", "dev", "GRAB_PAY_SECRET", "p"), ""},
		{"production natives with the gateway need the pay secret", prod("GRAB_PAY_PROVIDER", "alipay,gateway",
			"GRAB_PAY_URL", "https://pay.internal", "GRAB_PAY_NOTIFY_BASE", "https://grab.example.com"), "GRAB_PAY_SECRET is required"},
		{"platform certificate only", prod("GRAB_WECHAT_PUBLIC_KEY_FILE", "", "GRAB_WECHAT_PUBLIC_KEY_ID", "",
			"GRAB_WECHAT_PLATFORM_CERT_FILE", k.files["GRAB_WECHAT_PLATFORM_CERT_FILE"]), ""},
		{"both verifiers", prod("GRAB_WECHAT_PLATFORM_CERT_FILE", k.files["GRAB_WECHAT_PLATFORM_CERT_FILE"]), ""},
		{"no verifier", prod("GRAB_WECHAT_PUBLIC_KEY_FILE", "", "GRAB_WECHAT_PUBLIC_KEY_ID", ""), "GRAB_WECHAT_PLATFORM_CERT_FILE is required"},
		{"public key without its id", prod("GRAB_WECHAT_PUBLIC_KEY_ID", ""), "GRAB_WECHAT_PUBLIC_KEY_ID go together"},
		{"several missing", prod("GRAB_ALIPAY_APP_ID", "", "GRAB_ALIPAY_NOTIFY_URL", ""),
			"GRAB_ALIPAY_APP_ID, GRAB_ALIPAY_NOTIFY_URL are required with GRAB_PAY_PROVIDER=alipay"},
		{"alipay settings without alipay", prod("GRAB_PAY_PROVIDER", "wechat"), "GRAB_PAY_PROVIDER does not name alipay"},
		{"wechat settings without wechat in the embedded mode", map[string]string{"GRAB_WECHAT_MCHID": "1"}, "GRAB_PAY_PROVIDER does not name wechat"},
		{"partial settings in the embedded mode", map[string]string{"GRAB_PAY_PROVIDER": "alipay", "GRAB_ALIPAY_APP_ID": "2021"},
			"GRAB_ALIPAY_PRIVATE_KEY_FILE, GRAB_ALIPAY_PUBLIC_KEY_FILE, GRAB_ALIPAY_NOTIFY_URL are required"},
		{"notify url not a url", prod("GRAB_WECHAT_NOTIFY_URL", "grab.example.com"), "GRAB_WECHAT_NOTIFY_URL"},
		{"alipay gateway flag-free default", prod("GRAB_ALIPAY_GATEWAY", ""), ""},
		{"bad alipay timeout", prod("GRAB_ALIPAY_TIMEOUT", "soon"), "GRAB_ALIPAY_TIMEOUT"},
		{"bad wechat timeout", prod("GRAB_WECHAT_TIMEOUT", "0s"), "GRAB_WECHAT_TIMEOUT"},
		{"short APIv3 key", prod("GRAB_WECHAT_APIV3_KEY_FILE", shortAPIv3), shortAPIv3 + " holds 16 bytes; the APIv3 key is 32"},
		{"a directory for a key", prod("GRAB_ALIPAY_PUBLIC_KEY_FILE", k.dir), "GRAB_ALIPAY_PUBLIC_KEY_FILE: read " + k.dir},
		{"gateway simulated in the embedded mode", embedded("gateway"), ""},
		{"gateway half configured in the embedded mode", map[string]string{"GRAB_PAY_PROVIDER": "gateway", "GRAB_PAY_URL": "http://pay",
			"GRAB_PAY_SECRET": "p"}, "GRAB_PAY_NOTIFY_BASE is required"},
	}
	for _, s := range []string{"GRAB_ALIPAY_APP_ID", "GRAB_ALIPAY_PRIVATE_KEY_FILE", "GRAB_ALIPAY_PUBLIC_KEY_FILE", "GRAB_ALIPAY_NOTIFY_URL",
		"GRAB_WECHAT_MCHID", "GRAB_WECHAT_APPID", "GRAB_WECHAT_SERIAL", "GRAB_WECHAT_PRIVATE_KEY_FILE", "GRAB_WECHAT_APIV3_KEY_FILE",
		"GRAB_WECHAT_NOTIFY_URL"} {
		cases = append(cases, payCase{"without " + s, prod(s, ""), s + " is required"})
	}
	for _, s := range []string{"GRAB_ALIPAY_PRIVATE_KEY_FILE", "GRAB_ALIPAY_PUBLIC_KEY_FILE", "GRAB_WECHAT_PRIVATE_KEY_FILE",
		"GRAB_WECHAT_PUBLIC_KEY_FILE", "GRAB_WECHAT_PLATFORM_CERT_FILE"} {
		cases = append(cases, payCase{s + " missing", prod(s, missing), s + ": open " + missing},
			payCase{s + " not a key", prod(s, notAKey), s + ": " + notAKey})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := ParseConfig(nil, envOf(c.env))
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("err = %v, want %q", err, c.err)
			}
			// Neither an error nor the configuration shows what a key file holds.
			shown := fmt.Sprintf("%v %+v %#v", err, cfg, cfg)
			for _, leak := range []string{"c2VjcmV0", testAPIv3Key, "MII", "45 45 45 45 45", "BEGIN"} {
				if strings.Contains(shown, leak) {
					t.Fatalf("%q shown: %s", leak, shown)
				}
			}
		})
	}

	cfg, err := ParseConfig([]string{"-pay-provider", "alipay,wechat,gateway"}, envOf(nil))
	if err != nil || !cfg.Alipay.Simulated || !cfg.Wechat.Simulated || cfg.PayURL != "" || cfg.Alipay.Timeout != 5*time.Second {
		t.Fatalf("embedded natives without settings: %+v, %v", cfg, err)
	}
	cfg, err = ParseConfig([]string{"-alipay-subject", "红包", "-wechat-timeout", "2s"}, envOf(prod()))
	if err != nil || cfg.Alipay.Simulated || cfg.Wechat.Simulated || cfg.Alipay.Subject != "红包" || cfg.Wechat.Timeout != 2*time.Second ||
		len(cfg.Wechat.keys.apiV3) != 32 || cfg.PayProviders[0] != "alipay" || cfg.PayProviders[1] != "wechat" {
		t.Fatalf("production natives: %+v, %v", cfg, err)
	}
}

// payCase is a case of TestParseConfigPayProviders.
type payCase struct {
	name string
	env  map[string]string
	err  string // "" for success
}

// The production wiring reads the key files: the Alipay client's order
// string verifies at Alipay (the app's key) and its query answers verify
// with Alipay's key; the WeChat Pay client's orders are accepted (the
// merchant's key), their answers verify (the WeChat Pay public key), and a
// notification decrypts (the APIv3 key).
func TestProductionChannelsFromKeyFiles(t *testing.T) {
	k := writeKeyFiles(t)
	asim, err := alipaysim.New(alipaysim.Config{AppID: "2021004100000001", AppPublicKey: &k.alipayApp.PublicKey, Key: k.alipay})
	if err != nil {
		t.Fatal(err)
	}
	defer asim.Stop()
	asrv := httptest.NewServer(asim)
	defer asrv.Close()
	wsim, err := wechatpaysim.New(wechatpaysim.Config{MchID: "1900000109", AppID: "wxd678efh567hg6787", MerchantSerial: k.wechatSerial,
		MerchantKey: &k.merchant.PublicKey, APIv3Key: []byte(testAPIv3Key), PlatformKey: k.wechat, PlatformSerial: k.pubKeyID})
	if err != nil {
		t.Fatal(err)
	}
	defer wsim.Shutdown()
	wsrv := httptest.NewServer(wsim)
	defer wsrv.Close()

	cfg, err := ParseConfig(nil, envOf(k.env(asrv.URL+"/gateway.do", wsrv.URL)))
	if err != nil {
		t.Fatal(err)
	}
	pay, err := startPayments(context.Background(), cfg, "http://127.0.0.1:1", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer pay.stop()
	if pay.shared != nil || len(pay.natives) != 2 || len(pay.notifiers) != 2 {
		t.Fatalf("payments = %+v", pay)
	}
	ctx := context.Background()

	ali := pay.natives[channel.Alipay].(channel.AppPayer)
	params, err := ali.StartTrade(ctx, channel.Trade{TradeNo: "T1_a", Channel: channel.Alipay, Amount: 300})
	if err != nil {
		t.Fatal(err)
	}
	if err := asim.Open(params["order_string"]); err != nil {
		t.Fatalf("Alipay refuses the order string: %v", err)
	}
	if err := asim.Pay("T1_a", "3.00"); err != nil {
		t.Fatal(err)
	}
	if r, err := ali.QueryTrade(ctx, "T1_a"); err != nil || r.Outcome != channel.TradeSucceeded || r.Amount != 300 {
		t.Fatalf("Alipay query = %+v, %v", r, err)
	}

	wx := pay.natives[channel.Wechat].(channel.AppPayer)
	params, err = wx.StartTrade(ctx, channel.Trade{TradeNo: "T2_b", Channel: channel.Wechat, Amount: 150})
	if err != nil || params["prepayid"] == "" || params["sign"] == "" {
		t.Fatalf("WeChat Pay order = %v, %v", params, err)
	}
	if err := wsim.SetState("T2_b", "SUCCESS"); err != nil {
		t.Fatal(err)
	}
	h, body, err := wsim.Notification("T2_b")
	if err != nil {
		t.Fatal(err)
	}
	n, apply, err := pay.notifiers[channel.Wechat].Notification(h, body)
	if err != nil || !apply || n.TradeNo != "T2_b" || !n.Success || n.Amount != 150 {
		t.Fatalf("WeChat Pay notification = %+v, %v, %v", n, apply, err)
	}
	if r, err := wx.QueryTrade(ctx, "T2_b"); err != nil || r.Outcome != channel.TradeSucceeded {
		t.Fatalf("WeChat Pay query = %+v, %v", r, err)
	}
	if wsim.AuthFailures() != 0 {
		t.Fatalf("WeChat Pay refused %d requests", wsim.AuthFailures())
	}
}

// natives is the embedded mode with every channel simulated: Alipay and
// WeChat Pay on their own, UnionPay through the company gateway.
const natives = "alipay,wechat,gateway"

// payerAfter has the embedded simulators pay d after a trade is made.
func payerAfter(d time.Duration) func(*Config) { return func(c *Config) { c.payerDelay = d } }

// payThrough creates a packet for group 7 and pays it through channel,
// checking the pay params the channel's app needs; it returns the packet and
// the trade.
func (g *grabd) payThrough(t *testing.T, ch string) (packetID, tradeNo string) {
	t.Helper()
	g.call(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3]}`, adminHeaders, 200)
	p := g.call(t, "POST", "/v1/packets", `{"kind":"group_equal","group_id":7,"count":2,"amount":"1.50"}`, as(1), 201)
	packetID = fmt.Sprint(p["packet_id"])
	trade := g.call(t, "POST", "/v1/packets/"+packetID+"/pay", fmt.Sprintf(`{"method":%q}`, ch), as(1), 200)
	if trade["status"] != "unpaid" || trade["amount"] != "3.00" {
		t.Fatalf("%s trade = %v", ch, trade)
	}
	params, _ := trade["pay_params"].(map[string]any)
	switch ch {
	case channel.Alipay:
		if s, _ := params["order_string"].(string); !strings.Contains(s, "alipay.trade.app.pay") {
			t.Fatalf("alipay pay_params = %v", trade["pay_params"])
		}
	case channel.Wechat:
		if params["prepayid"] == nil || params["sign"] == nil || params["package"] != "Sign=WXPay" {
			t.Fatalf("wechat pay_params = %v", trade["pay_params"])
		}
	default:
		if params != nil {
			t.Fatalf("%s pay_params = %v", ch, params)
		}
	}
	return packetID, fmt.Sprint(trade["trade_no"])
}

// returnAndGrab is the sender's app back from paying, and user 2's grab.
func (g *grabd) returnAndGrab(t *testing.T, packetID, tradeNo string) {
	t.Helper()
	g.call(t, "POST", "/v1/payments/"+tradeNo+"/return", "", as(1), 200)
	if r := g.call(t, "POST", "/v1/packets/"+packetID+"/grab", "", as(2), 200); r["amount"] != "1.50" {
		t.Fatalf("grab = %v", r)
	}
}

// paid is a packet and the trade paying it.
type paid struct{ packet, trade string }

// payEveryChannel pays a packet through each channel, in channel.All'
// order, and has user 2 grab each once the sender's app is back.
func (g *grabd) payEveryChannel(t *testing.T) []paid {
	t.Helper()
	var trades []paid
	for _, ch := range channel.All {
		p, tr := g.payThrough(t, ch)
		g.returnAndGrab(t, p, tr)
		trades = append(trades, paid{p, tr})
	}
	return trades
}

// awaitSettled waits until the trade is paid and user 2's grab of the
// packet credited.
func (g *grabd) awaitSettled(t *testing.T, packetID, tradeNo string) {
	t.Helper()
	g.awaitPaid(t, tradeNo, "trade "+tradeNo+" paid")
	enginetest.WaitFor(t, "user 2's grab of packet "+packetID+" credited", func() bool {
		mine, _ := g.call(t, "GET", "/v1/packets/"+packetID, "", as(2), 200)["my_grab"].(map[string]any)
		return mine != nil && mine["credited"] == true
	})
}

// The embedded mode pays through each channel's simulator end to end, over
// HTTP: Alipay's and WeChat Pay's pay params, the payer paying, the channel's
// own notification back to grabd, the grab credited.
func TestEmbeddedNativeChannels(t *testing.T) {
	g := startEmbeddedWith(t, payerAfter(200*time.Millisecond), "GRAB_PAY_PROVIDER", natives)
	trades := g.payEveryChannel(t)
	for _, tr := range trades {
		g.awaitSettled(t, tr.packet, tr.trade)
	}
	// 2 × 50.00 never deposited: the sender paid 3 × 3.00 from outside,
	// user 2 got 3 × 1.50.
	if b := g.call(t, "GET", "/v1/balance", "", as(2), 200); b["balance"] != "4.50" {
		t.Fatalf("grabber balance = %v", b)
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// A restart mid-payment settles on every channel: the simulators keep their
// trades in the data directory, and after grabd starts again (on the same
// address, where the trades' notify URLs point) their payer pays the pending
// ones and notifies them.
func TestEmbeddedNativeChannelsSettleAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := []string{"GRAB_DATA_DIR", dir, "GRAB_ADDR", addr, "GRAB_PAY_PROVIDER", natives}
	g := startEmbeddedWith(t, payerAfter(time.Hour), env...) // the payer does not pay before the stop
	trades := g.payEveryChannel(t)
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	for i, file := range []string{simchannel.AlipayFile, simchannel.WechatFile, simchannel.GatewayFile} {
		if b, err := os.ReadFile(filepath.Join(dir, file)); err != nil || !strings.Contains(string(b), trades[i].trade) {
			t.Fatalf("%s: %v; want trade %s in it", file, err, trades[i].trade)
		}
	}

	g = startEmbeddedWith(t, payerAfter(50*time.Millisecond), env...)
	for _, tr := range trades {
		g.awaitSettled(t, tr.packet, tr.trade)
		if v := g.call(t, "GET", "/v1/payments/"+tr.trade, "", as(1), 200); v["credited_back"] != "0.00" {
			t.Fatalf("payment = %v", v)
		}
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}
