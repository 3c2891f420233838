package wechatpay_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/wechatpay"
	"github.com/grab-engine/grab/engine/wechatpaysim"
)

const (
	mchID     = "1900009191"
	appID     = "wxd678efh567hg6787"
	mchSerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	pubKeyID  = "PUB_KEY_ID_0119000091912025010100000000000001"
)

var (
	apiV3Key = []byte("0123456789abcdef0123456789ABCDEF")

	keysOnce                    sync.Once
	merchantKey, platformKey    *rsa.PrivateKey
	merchantPEM, platformPubPEM []byte
	platformCertPEM             []byte
	platformCertSerial          string
)

func keys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if merchantKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if platformKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(merchantKey)
		merchantPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		pub, _ := x509.MarshalPKIXPublicKey(&platformKey.PublicKey)
		platformPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
		serial, _ := new(big.Int).SetString("3A1B5C7D9E0F11223344556677889900AABBCCDD", 16)
		tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "Tenpay.com Root CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
		cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &platformKey.PublicKey, platformKey)
		if err != nil {
			panic(err)
		}
		platformCertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert})
		platformCertSerial = "3A1B5C7D9E0F11223344556677889900AABBCCDD"
	})
}

// fixture is a client against the simulator, and the notify URL's server
// applying what the client's NotifyHandler accepts.
type fixture struct {
	client *wechatpay.Client
	sim    *wechatpaysim.Sim
	srv    *httptest.Server

	mu       sync.Mutex
	applied  []channel.Notification
	failNext int // apply refuses this many first
}

func (f *fixture) apply(_ context.Context, n channel.Notification) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failNext > 0 {
		f.failNext--
		return errors.New("store unavailable")
	}
	f.applied = append(f.applied, n)
	return nil
}

func (f *fixture) notifications() []channel.Notification {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]channel.Notification(nil), f.applied...)
}

// setup runs the sim with the WeChat Pay public key (byCert false) or a
// platform certificate (byCert true) as what the client verifies with.
func setup(t *testing.T, byCert bool) *fixture {
	t.Helper()
	keys(t)
	f := &fixture{}
	serial := pubKeyID
	if byCert {
		serial = platformCertSerial
	}
	var err error
	f.sim, err = wechatpaysim.New(wechatpaysim.Config{MchID: mchID, AppID: appID, MerchantSerial: mchSerial,
		MerchantKey: &merchantKey.PublicKey, APIv3Key: apiV3Key, PlatformKey: platformKey, PlatformSerial: serial,
		Scale: 1e-5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.sim.Shutdown)
	mux := http.NewServeMux()
	mux.Handle("/v3/", f.sim)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	cfg := wechatpay.Config{MchID: mchID, AppID: appID, Serial: mchSerial, PrivateKeyPEM: merchantPEM,
		APIv3Key: apiV3Key, BaseURL: f.srv.URL, NotifyURL: f.srv.URL + "/notify/wechat", Timeout: 5 * time.Second}
	if byCert {
		cfg.PlatformCertsPEM = platformCertPEM
	} else {
		cfg.PublicKeyPEM, cfg.PublicKeyID = platformPubPEM, pubKeyID
	}
	if f.client, err = wechatpay.New(cfg); err != nil {
		t.Fatal(err)
	}
	mux.Handle("/notify/wechat", f.client.NotifyHandler(f.apply))
	return f
}

func (f *fixture) create(t *testing.T, no string, amount int64) {
	t.Helper()
	if err := f.client.CreateTrade(context.Background(), channel.Trade{TradeNo: no, Channel: channel.Wechat, Amount: amount}); err != nil {
		t.Fatalf("CreateTrade %s: %v", no, err)
	}
}

var authRE = regexp.MustCompile(`^WECHATPAY2-SHA256-RSA2048 mchid="(\d+)",nonce_str="([0-9A-Za-z]{32})",signature="([A-Za-z0-9+/=]+)",timestamp="(\d+)",serial_no="([0-9A-F]+)"$`)

func TestRequestSigningFormat(t *testing.T) {
	keys(t)
	var got struct {
		auth, method, uri string
		body              []byte
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.auth, got.method, got.uri = r.Header.Get("Authorization"), r.Method, r.URL.RequestURI()
		got.body, _ = io.ReadAll(r.Body)
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	c, err := wechatpay.New(wechatpay.Config{MchID: mchID, AppID: appID, Serial: mchSerial, PrivateKeyPEM: merchantPEM,
		APIv3Key: apiV3Key, PublicKeyPEM: platformPubPEM, PublicKeyID: pubKeyID, BaseURL: srv.URL, NotifyURL: "https://grab.example/notify"})
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []func(){
		func() { _ = c.CreateTrade(context.Background(), channel.Trade{TradeNo: "T1-ab", Amount: 100}) },
		func() { _, _ = c.QueryTrade(context.Background(), "T1-ab") },
	} {
		call()
		m := authRE.FindStringSubmatch(got.auth)
		if m == nil {
			t.Fatalf("Authorization %q does not match the v3 format", got.auth)
		}
		if m[1] != mchID || m[5] != mchSerial {
			t.Errorf("mchid %s serial_no %s", m[1], m[5])
		}
		if ts, _ := strconv.ParseInt(m[4], 10, 64); time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
			t.Errorf("timestamp %s is not now", m[4])
		}
		sig, _ := base64.StdEncoding.DecodeString(m[3])
		msg := got.method + "\n" + got.uri + "\n" + m[4] + "\n" + m[2] + "\n" + string(got.body) + "\n"
		sum := sha256.Sum256([]byte(msg))
		if err := rsa.VerifyPKCS1v15(&merchantKey.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
			t.Errorf("%s %s: signature does not cover %q: %v", got.method, got.uri, msg, err)
		}
	}
	if got.uri != "/v3/pay/transactions/out-trade-no/T1-ab?mchid="+mchID {
		t.Errorf("query URI %s", got.uri)
	}

	// The simulator, written from the protocol, accepts the client's
	// requests and refuses one signed by another merchant key.
	f := setup(t, false)
	f.create(t, "T1-sign", 100)
	if n := f.sim.AuthFailures(); n != 0 {
		t.Fatalf("sim refused %d signed requests", n)
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(other)
	bad, err := wechatpay.New(wechatpay.Config{MchID: mchID, AppID: appID, Serial: mchSerial,
		PrivateKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		APIv3Key:      apiV3Key, PublicKeyPEM: platformPubPEM, PublicKeyID: pubKeyID, BaseURL: f.srv.URL, NotifyURL: "https://grab.example/n"})
	if err != nil {
		t.Fatal(err)
	}
	err = bad.CreateTrade(context.Background(), channel.Trade{TradeNo: "T1-bad", Amount: 100})
	var apiErr *wechatpay.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized || apiErr.Code != "SIGN_ERROR" {
		t.Fatalf("wrongly signed order: %v, want a 401 SIGN_ERROR", err)
	}
	if f.sim.AuthFailures() != 1 {
		t.Errorf("sim auth failures %d, want 1", f.sim.AuthFailures())
	}
}

func TestCreateAppPayParams(t *testing.T) {
	f := setup(t, false)
	p, err := f.client.CreateApp(context.Background(), channel.Trade{TradeNo: "T2-app", Channel: channel.Wechat, Amount: 888})
	if err != nil {
		t.Fatal(err)
	}
	tr, ok := f.sim.Trade("T2-app")
	if !ok || tr.Total != 888 || tr.State != "NOTPAY" || !strings.HasSuffix(tr.NotifyURL, "/notify/wechat") {
		t.Fatalf("sim trade %+v %v", tr, ok)
	}
	if p.AppID != appID || p.PartnerID != mchID || p.PrepayID != tr.PrepayID || p.Package != "Sign=WXPay" || p.NonceStr == "" {
		t.Fatalf("params %+v", p)
	}
	sig, _ := base64.StdEncoding.DecodeString(p.Sign)
	sum := sha256.Sum256([]byte(p.AppID + "\n" + p.Timestamp + "\n" + p.NonceStr + "\n" + p.PrepayID + "\n"))
	if err := rsa.VerifyPKCS1v15(&merchantKey.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("app sign does not verify: %v", err)
	}
	// Idempotent per trade number.
	again, err := f.client.CreateApp(context.Background(), channel.Trade{TradeNo: "T2-app", Amount: 888})
	if err != nil || again.PrepayID != p.PrepayID {
		t.Fatalf("again: %+v %v", again, err)
	}
}

func TestQueryTradeStates(t *testing.T) {
	for _, byCert := range []bool{false, true} {
		f := setup(t, byCert)
		ctx := context.Background()
		cases := []struct {
			no    string
			do    func(no string) error
			want  channel.TradeOutcome
			isTxn bool
		}{
			{"T3-notpay", func(string) error { return nil }, channel.TradePending, false},
			{"T3-userpaying", func(no string) error { return f.sim.SetState(no, "USERPAYING") }, channel.TradePending, false},
			{"T3-success", f.sim.Pay, channel.TradeSucceeded, true},
			{"T3-closed", f.sim.Close, channel.TradeFailed, false},
			{"T3-payerror", func(no string) error { return f.sim.SetState(no, "PAYERROR") }, channel.TradeFailed, false},
			{"T3-revoked", func(no string) error { return f.sim.SetState(no, "REVOKED") }, channel.TradeFailed, false},
			// Paid, then refunded by hand: no packet may open on money sent back.
			{"T3-refund", func(no string) error {
				if err := f.sim.Pay(no); err != nil {
					return err
				}
				return f.sim.SetState(no, "REFUND")
			}, channel.TradeFailed, true},
		}
		for _, c := range cases {
			f.create(t, c.no, 1234)
			if err := c.do(c.no); err != nil {
				t.Fatal(err)
			}
			res, err := f.client.QueryTrade(ctx, c.no)
			if err != nil {
				t.Fatalf("cert=%v %s: %v", byCert, c.no, err)
			}
			tr, _ := f.sim.Trade(c.no)
			if res.Outcome != c.want || res.Amount != 1234 || res.ProviderTxn != tr.TransactionID || (res.ProviderTxn != "") != c.isTxn {
				t.Errorf("cert=%v %s: %+v, want outcome %v amount 1234 txn %q", byCert, c.no, res, c.want, tr.TransactionID)
			}
		}
		_, err := f.client.QueryTrade(ctx, "T3-never")
		if !errors.Is(err, channel.ErrTradeUnknown) {
			t.Fatalf("unknown trade: %v, want ErrTradeUnknown", err)
		}
	}
}

func TestQueryAnswerBadSignatureRefused(t *testing.T) {
	f := setup(t, false)
	f.create(t, "T4-q", 500)
	if err := f.sim.Pay("T4-q"); err != nil {
		t.Fatal(err)
	}
	f.sim.SetFaults(wechatpaysim.Faults{BadAnswerSignature: true})
	_, err := f.client.QueryTrade(context.Background(), "T4-q")
	if !errors.Is(err, wechatpay.ErrBadSignature) {
		t.Fatalf("badly signed answer: %v, want ErrBadSignature", err)
	}
	// A not-found that does not verify must not end the trade.
	_, err = f.client.QueryTrade(context.Background(), "T4-never")
	if errors.Is(err, channel.ErrTradeUnknown) || !errors.Is(err, wechatpay.ErrBadSignature) {
		t.Fatalf("badly signed not-found: %v, want ErrBadSignature and not ErrTradeUnknown", err)
	}
	if err := f.client.CreateTrade(context.Background(), channel.Trade{TradeNo: "T4-new", Amount: 1}); !errors.Is(err, wechatpay.ErrBadSignature) {
		t.Fatalf("badly signed order answer: %v", err)
	}
}

func TestNotificationGood(t *testing.T) {
	for _, byCert := range []bool{false, true} {
		f := setup(t, byCert)
		f.create(t, "T5-ok", 2500)
		if err := f.sim.SetState("T5-ok", "SUCCESS"); err != nil {
			t.Fatal(err)
		}
		h, body, err := f.sim.Notification("T5-ok")
		if err != nil {
			t.Fatal(err)
		}
		n, err := f.client.VerifyNotification(h, body, time.Now())
		if err != nil {
			t.Fatalf("cert=%v: %v", byCert, err)
		}
		tr, _ := f.sim.Trade("T5-ok")
		want := channel.Notification{Channel: channel.Wechat, TradeNo: "T5-ok", Amount: 2500, Success: true, ProviderTxn: tr.TransactionID}
		if n != want || n.ProviderTxn == "" {
			t.Fatalf("cert=%v: %+v, want %+v", byCert, n, want)
		}
		// Five minutes on, the same notification is stale.
		if _, err := f.client.VerifyNotification(h, body, time.Now().Add(6*time.Minute)); !errors.Is(err, wechatpay.ErrStaleTimestamp) {
			t.Fatalf("replayed late: %v", err)
		}
	}
}

func TestNotificationRefused(t *testing.T) {
	f := setup(t, false)
	f.create(t, "T6-bad", 300)
	if err := f.sim.SetState("T6-bad", "SUCCESS"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		faults wechatpaysim.Faults
		want   error
	}{
		{"wrong signing key", wechatpaysim.Faults{WrongKey: true}, wechatpay.ErrBadSignature},
		{"stale timestamp", wechatpaysim.Faults{Stale: true}, wechatpay.ErrStaleTimestamp},
		{"tampered body", wechatpaysim.Faults{Tamper: true}, wechatpay.ErrBadSignature},
		{"another mchid", wechatpaysim.Faults{OtherMchID: true}, wechatpay.ErrNotOurs},
		{"unknown serial", wechatpaysim.Faults{UnknownSerial: true}, wechatpay.ErrUnknownSerial},
		{"wrong APIv3 key", wechatpaysim.Faults{WrongAPIv3Key: true}, wechatpay.ErrDecrypt},
	}
	for _, c := range cases {
		f.sim.SetFaults(c.faults)
		h, body, err := f.sim.Notification("T6-bad")
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.client.VerifyNotification(h, body, time.Now())
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, string(apiV3Key)) || strings.Contains(msg, "PRIVATE KEY") || strings.Contains(msg, h.Get("Wechatpay-Signature")) {
			t.Errorf("%s: error carries secret material: %s", c.name, msg)
		}
		t.Logf("%s: %v", c.name, err)
	}
	// WeChat Pay's signature probes never pass.
	f.sim.SetFaults(wechatpaysim.Faults{})
	h, body, _ := f.sim.Notification("T6-bad")
	h.Set("Wechatpay-Signature", "WECHATPAY/SIGNTEST/"+h.Get("Wechatpay-Signature"))
	if _, err := f.client.VerifyNotification(h, body, time.Now()); !errors.Is(err, wechatpay.ErrBadSignature) {
		t.Errorf("signature probe: %v", err)
	}
	// The handler answers a refusal 4xx with {"code":"FAIL"}.
	f.sim.SetFaults(wechatpaysim.Faults{Tamper: true})
	h, body, _ = f.sim.Notification("T6-bad")
	req := httptest.NewRequest(http.MethodPost, "/notify/wechat", strings.NewReader(string(body)))
	req.Header = h
	rec := httptest.NewRecorder()
	f.client.NotifyHandler(f.apply).ServeHTTP(rec, req)
	var ans struct{ Code, Message string }
	if rec.Code != http.StatusUnauthorized || json.Unmarshal(rec.Body.Bytes(), &ans) != nil || ans.Code != "FAIL" || ans.Message == "" {
		t.Fatalf("refusal answered %d %s", rec.Code, rec.Body)
	}
	if len(f.notifications()) != 0 {
		t.Fatal("a refused notification was applied")
	}
}

func TestResendsStopAfter2xx(t *testing.T) {
	f := setup(t, false)
	f.create(t, "T7-resend", 700)
	f.failNext = 3 // the store refuses the first three: answered 500, resent
	f.sim.SetFaults(wechatpaysim.Faults{Lose: 1, Duplicate: true})
	if err := f.sim.Pay("T7-resend"); err != nil {
		t.Fatal(err)
	}
	f.sim.Wait()
	ds := f.sim.Deliveries()
	// Send 0 lost; send 1 twice: 500, 500; send 2 twice: 500, 204 → acked.
	if len(ds) != 3 || ds[0].Status != 0 || ds[1].Status != 500 || ds[2].Status != http.StatusNoContent || !f.sim.Acked("T7-resend") {
		t.Fatalf("deliveries %+v", ds)
	}
	got := f.notifications()
	if len(got) != 1 || got[0].TradeNo != "T7-resend" || !got[0].Success || got[0].Amount != 700 {
		t.Fatalf("applied %+v", got)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(f.sim.Deliveries()); n != 3 {
		t.Fatalf("sent again after the 2xx: %d deliveries", n)
	}
}

func TestResendsUntilScheduleEnds(t *testing.T) {
	f := setup(t, false)
	f.create(t, "T8-never", 700)
	f.sim.SetFaults(wechatpaysim.Faults{Tamper: true})
	if err := f.sim.Pay("T8-never"); err != nil {
		t.Fatal(err)
	}
	f.sim.Wait()
	ds := f.sim.Deliveries()
	if len(ds) != 1+len(wechatpaysim.Schedule) || f.sim.Acked("T8-never") {
		t.Fatalf("%d deliveries, want %d, none acked", len(ds), 1+len(wechatpaysim.Schedule))
	}
	for _, d := range ds {
		if d.Status != http.StatusUnauthorized {
			t.Fatalf("delivery %+v, want 401", d)
		}
	}
	if len(f.notifications()) != 0 {
		t.Fatal("tampered notification applied")
	}
}

func TestConfigChecksAndRedacts(t *testing.T) {
	keys(t)
	base := wechatpay.Config{MchID: mchID, AppID: appID, Serial: mchSerial, PrivateKeyPEM: merchantPEM, APIv3Key: apiV3Key,
		PublicKeyPEM: platformPubPEM, PublicKeyID: pubKeyID, NotifyURL: "https://grab.example/n"}
	if _, err := wechatpay.New(base); err != nil {
		t.Fatal(err)
	}
	bad := []func(*wechatpay.Config){
		func(c *wechatpay.Config) { c.APIv3Key = apiV3Key[:16] },
		func(c *wechatpay.Config) { c.PrivateKeyPEM = []byte("nope") },
		func(c *wechatpay.Config) { c.PublicKeyID = "" },
		func(c *wechatpay.Config) { c.PublicKeyPEM, c.PublicKeyID = nil, "" },
		func(c *wechatpay.Config) { c.NotifyURL = "" },
		func(c *wechatpay.Config) { c.BaseURL = "ftp://x" },
	}
	for i, mod := range bad {
		c := base
		mod(&c)
		_, err := wechatpay.New(c)
		if err == nil {
			t.Errorf("config %d accepted", i)
			continue
		}
		if strings.Contains(err.Error(), string(apiV3Key[:16])) || strings.Contains(err.Error(), "BEGIN") {
			t.Errorf("config %d error carries secrets: %v", i, err)
		}
	}
	for _, s := range []string{base.String(), base.GoString()} {
		if strings.Contains(s, string(apiV3Key)) || strings.Contains(s, "PRIVATE") {
			t.Errorf("Config prints secrets: %s", s)
		}
	}
}
