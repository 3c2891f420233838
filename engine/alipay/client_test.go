package alipay_test

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
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/errs"

	"github.com/grab-engine/grab/engine/alipay"
	"github.com/grab-engine/grab/engine/alipaysim"
	"github.com/grab-engine/grab/engine/channel"
)

const appID = "2021000000000001"

var (
	keysOnce                  sync.Once
	appKey, alipayKey, badKey *rsa.PrivateKey
)

func keys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		gen := func() *rsa.PrivateKey {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			return k
		}
		appKey, alipayKey, badKey = gen(), gen(), gen()
	})
}

func pkcs1PEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

func pkcs8PEM(t *testing.T, k *rsa.PrivateKey) []byte {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: b})
}

func publicPEM(t *testing.T, k *rsa.PublicKey) []byte {
	b, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: b})
}

var fixedNow = time.Date(2026, 12, 1, 16, 30, 5, 0, time.UTC) // 00:30:05 next day in Shanghai

func newClient(t *testing.T, gateway string) *alipay.Client {
	t.Helper()
	keys(t)
	c, err := alipay.New(alipay.Config{AppID: appID, PrivateKey: pkcs1PEM(appKey), AlipayPublicKey: publicPEM(t, &alipayKey.PublicKey),
		Gateway: gateway, NotifyURL: "https://grab.example.com/v1/payments/notify/alipay", Subject: "红包 & more",
		Timeout: 5 * time.Second, Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newSim(t *testing.T) (*alipaysim.Sim, *httptest.Server) {
	t.Helper()
	keys(t)
	sim, err := alipaysim.New(alipaysim.Config{AppID: appID, AppPublicKey: &appKey.PublicKey, Key: alipayKey, Scale: 1e-6})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(sim)
	t.Cleanup(func() { sim.Stop(); srv.Close() })
	return sim, srv
}

// verifyRSA2 is the check written again in the test, apart from the package.
func verifyRSA2(t *testing.T, pub *rsa.PublicKey, v url.Values, skip ...string) {
	t.Helper()
	var ks []string
	for k := range v {
		skipped := false
		for _, s := range skip {
			skipped = skipped || s == k
		}
		if !skipped && v.Get(k) != "" {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, k+"="+v.Get(k))
	}
	sig, err := base64.StdEncoding.DecodeString(v.Get("sign"))
	if err != nil {
		t.Fatalf("sign is not base64: %v", err)
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, "&")))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("sign does not verify: %v", err)
	}
}

func TestAppPayOrderStringIsSignedAndComplete(t *testing.T) {
	c := newClient(t, "")
	s, err := c.AppPayOrderString(channel.Trade{TradeNo: "T42-0a1b2c", Channel: channel.Alipay, Amount: 8888})
	if err != nil {
		t.Fatal(err)
	}
	v, err := url.ParseQuery(s)
	if err != nil {
		t.Fatalf("not URL-encoded: %v", err)
	}
	want := map[string]string{"method": "alipay.trade.app.pay", "app_id": appID, "charset": "utf-8", "sign_type": "RSA2",
		"version": "1.0", "timestamp": "2026-12-02 00:30:05", "notify_url": "https://grab.example.com/v1/payments/notify/alipay"}
	for k, w := range want {
		if got := v.Get(k); got != w {
			t.Errorf("%s = %q, want %q", k, got, w)
		}
	}
	var biz map[string]string
	if err := json.Unmarshal([]byte(v.Get("biz_content")), &biz); err != nil {
		t.Fatal(err)
	}
	wantBiz := map[string]string{"out_trade_no": "T42-0a1b2c", "total_amount": "88.88", "subject": "红包 & more", "product_code": "QUICK_MSECURITY_PAY"}
	if len(biz) != len(wantBiz) {
		t.Errorf("biz_content = %v", biz)
	}
	for k, w := range wantBiz {
		if biz[k] != w {
			t.Errorf("biz_content.%s = %q, want %q", k, biz[k], w)
		}
	}
	verifyRSA2(t, &appKey.PublicKey, v, "sign")
	if strings.Contains(s, " ") || strings.Contains(s, "&more") {
		t.Errorf("order string is not URL-encoded: %s", s)
	}

	// Alipay (the simulator) takes it as the payer's app would hand it over.
	sim, _ := newSim(t)
	if err := sim.Open(s); err != nil {
		t.Fatal(err)
	}
	if got := sim.Status("T42-0a1b2c"); got != alipay.StatusWaitBuyerPay {
		t.Fatalf("status after Open = %q", got)
	}
	// One tampered byte and the sign no longer holds.
	v.Set("biz_content", strings.Replace(v.Get("biz_content"), "88.88", "0.01", 1))
	if err := sim.Open(v.Encode()); err == nil {
		t.Fatal("a tampered order string was opened")
	}
}

func TestCreateTradeOnlyChecks(t *testing.T) {
	c := newClient(t, "")
	ctx := context.Background()
	if err := c.CreateTrade(ctx, channel.Trade{TradeNo: "T1-ab", Channel: channel.Alipay, Amount: 1}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []channel.Trade{
		{TradeNo: "T1-ab", Channel: channel.Wechat, Amount: 1},
		{TradeNo: "T1 ab", Channel: channel.Alipay, Amount: 1},
		{TradeNo: strings.Repeat("x", 65), Channel: channel.Alipay, Amount: 1},
		{TradeNo: "T1-ab", Channel: channel.Alipay, Amount: 0},
	} {
		if err := c.CreateTrade(ctx, bad); !errors.Is(err, errs.ErrInvalidArgument) {
			t.Errorf("CreateTrade(%+v) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestKeysInEveryFormAndNoKeyInErrors(t *testing.T) {
	keys(t)
	pub := publicPEM(t, &alipayKey.PublicKey)
	pkcs8 := pkcs8PEM(t, appKey)
	block, _ := pem.Decode(pkcs8)
	bare := []byte(base64.StdEncoding.EncodeToString(block.Bytes))
	for name, priv := range map[string][]byte{"pkcs1": pkcs1PEM(appKey), "pkcs8": pkcs8, "bare base64": bare} {
		c, err := alipay.New(alipay.Config{AppID: appID, PrivateKey: priv, AlipayPublicKey: pub})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s, err := c.AppPayOrderString(channel.Trade{TradeNo: "T1", Amount: 100})
		if err != nil {
			t.Fatal(err)
		}
		v, _ := url.ParseQuery(s)
		verifyRSA2(t, &appKey.PublicKey, v, "sign")
	}
	// A broken key: the error says what is wrong, never what the key holds.
	secretish := "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7SECRETSECRET"
	for _, cfg := range []alipay.Config{
		{AppID: appID, PrivateKey: []byte(secretish), AlipayPublicKey: pub},
		{AppID: appID, PrivateKey: []byte("-----BEGIN PRIVATE KEY-----\n" + secretish + "\n-----END PRIVATE KEY-----\n"), AlipayPublicKey: pub},
		{AppID: appID, PrivateKey: pkcs8, AlipayPublicKey: []byte(secretish)},
	} {
		_, err := alipay.New(cfg)
		if err == nil {
			t.Fatal("a broken key was taken")
		}
		if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "MIIE") {
			t.Fatalf("the error quotes the key: %v", err)
		}
	}
}

// A Config printed (a log line, %v, %#v) shows no key.
func TestConfigPrintsNoKey(t *testing.T) {
	keys(t)
	cfg := alipay.Config{AppID: appID, PrivateKey: pkcs8PEM(t, appKey), AlipayPublicKey: publicPEM(t, &alipayKey.PublicKey), NotifyURL: "https://grab.example.com/n"}
	for _, s := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, "PRIVATE") || strings.Contains(s, "PUBLIC") || !strings.Contains(s, appID) {
			t.Fatalf("Config prints %s", s)
		}
	}
}

// notification is a form as Alipay posts it, signed with key.
func notification(t *testing.T, key *rsa.PrivateKey, set map[string]string) url.Values {
	t.Helper()
	v := url.Values{}
	for k, x := range map[string]string{"notify_time": "2026-12-02 00:31:00", "notify_type": "trade_status_sync",
		"notify_id": "ac05099524730693a8b330c5ecf72da9786", "app_id": appID, "charset": "utf-8", "version": "1.0",
		"sign_type": "RSA2", "trade_no": "2026120222001404", "out_trade_no": "T42-0a1b2c", "trade_status": "TRADE_SUCCESS",
		"total_amount": "88.88", "receipt_amount": "88.88", "subject": "红包", "gmt_payment": "2026-12-02 00:30:59"} {
		v.Set(k, x)
	}
	for k, x := range set {
		v.Set(k, x)
	}
	sig, err := alipay.Sign(key, []byte(alipay.SignContent(v, "sign", "sign_type")))
	if err != nil {
		t.Fatal(err)
	}
	v.Set("sign", sig)
	return v
}

func TestVerifyNotification(t *testing.T) {
	c := newClient(t, "")
	n, err := c.VerifyNotification(notification(t, alipayKey, nil))
	if err != nil {
		t.Fatal(err)
	}
	want := channel.Notification{Channel: channel.Alipay, TradeNo: "T42-0a1b2c", Amount: 8888, Success: true, ProviderTxn: "2026120222001404"}
	if n != want {
		t.Fatalf("got %+v, want %+v", n, want)
	}
	if n, err := c.VerifyNotification(notification(t, alipayKey, map[string]string{"trade_status": "TRADE_FINISHED"})); err != nil || !n.Success {
		t.Fatalf("TRADE_FINISHED: %+v, %v", n, err)
	}
	if n, err := c.VerifyNotification(notification(t, alipayKey, map[string]string{"trade_status": "TRADE_CLOSED", "gmt_payment": ""})); err != nil || n.Success || n.Amount != 8888 {
		t.Fatalf("TRADE_CLOSED: %+v, %v", n, err)
	}
	if alipay.Ack != "success" {
		t.Fatalf("Ack = %q", alipay.Ack)
	}

	tampered := notification(t, alipayKey, nil)
	tampered.Set("total_amount", "0.01")
	noSign := notification(t, alipayKey, nil)
	noSign.Del("sign")
	md5 := notification(t, alipayKey, nil)
	md5.Set("sign_type", "RSA")
	added := notification(t, alipayKey, nil)
	added.Set("fund_bill_list", `[{"amount":"88.88","fundChannel":"ALIPAYACCOUNT"}]`)
	for name, c2 := range map[string]struct {
		form url.Values
		want error
	}{
		"wrong key":         {notification(t, badKey, nil), alipay.ErrBadSignature},
		"signed by the app": {notification(t, appKey, nil), alipay.ErrBadSignature},
		"tampered amount":   {tampered, alipay.ErrBadSignature},
		"added parameter":   {added, alipay.ErrBadSignature},
		"no sign":           {noSign, alipay.ErrBadSignature},
		"sign_type RSA":     {md5, alipay.ErrBadSignature},
		"another app":       {notification(t, alipayKey, map[string]string{"app_id": "2021999999999999"}), alipay.ErrWrongApp},
		"not final":         {notification(t, alipayKey, map[string]string{"trade_status": "WAIT_BUYER_PAY"}), alipay.ErrNotFinal},
		"unknown status":    {notification(t, alipayKey, map[string]string{"trade_status": "PAID"}), errs.ErrInvalidArgument},
		"bad amount":        {notification(t, alipayKey, map[string]string{"total_amount": "1.234"}), errs.ErrInvalidArgument},
	} {
		_, err := c.VerifyNotification(c2.form)
		if !errors.Is(err, c2.want) {
			t.Errorf("%s: err = %v, want %v", name, err, c2.want)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestQueryTradeAgainstTheSimulator(t *testing.T) {
	sim, srv := newSim(t)
	c := newClient(t, srv.URL)
	ctx := context.Background()

	s, err := c.AppPayOrderString(channel.Trade{TradeNo: "T1-open", Amount: 1234})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Open(s); err != nil {
		t.Fatal(err)
	}
	res, err := c.QueryTrade(ctx, "T1-open")
	if err != nil || res.Outcome != channel.TradePending || res.Amount != 1234 {
		t.Fatalf("WAIT_BUYER_PAY: %+v, %v", res, err)
	}
	if err := sim.Pay("T1-open", "12.34"); err != nil {
		t.Fatal(err)
	}
	res, err = c.QueryTrade(ctx, "T1-open")
	if err != nil || res.Outcome != channel.TradeSucceeded || res.Amount != 1234 || res.ProviderTxn == "" {
		t.Fatalf("TRADE_SUCCESS: %+v, %v", res, err)
	}
	if err := sim.Finish("T1-open"); err != nil {
		t.Fatal(err)
	}
	if res, err = c.QueryTrade(ctx, "T1-open"); err != nil || res.Outcome != channel.TradeSucceeded {
		t.Fatalf("TRADE_FINISHED: %+v, %v", res, err)
	}
	sim.Create("T2-closed", "5.00")
	if err := sim.Close("T2-closed"); err != nil {
		t.Fatal(err)
	}
	if res, err = c.QueryTrade(ctx, "T2-closed"); err != nil || res.Outcome != channel.TradeFailed || res.Amount != 500 {
		t.Fatalf("TRADE_CLOSED: %+v, %v", res, err)
	}
	_, err = c.QueryTrade(ctx, "T3-never")
	if !errors.Is(err, channel.ErrTradeUnknown) {
		t.Fatalf("unknown trade: %v, want ErrTradeUnknown", err)
	}

	// Answers Alipay's key does not vouch for are refused, never mistaken
	// for an outcome or for an unknown trade.
	for name, f := range map[string]alipaysim.Faults{"wrong key": {WrongKey: true}, "tampered": {Tamper: true}} {
		sim.SetFaults(f)
		for _, no := range []string{"T1-open", "T3-never"} {
			res, err := c.QueryTrade(ctx, no)
			if !errors.Is(err, alipay.ErrBadSignature) || errors.Is(err, channel.ErrTradeUnknown) {
				t.Errorf("%s answer for %s: %+v, %v; want ErrBadSignature", name, no, res, err)
			}
		}
	}
	sim.SetFaults(alipaysim.Faults{})

	// The gateway refuses a call the app did not sign with its key.
	keys(t)
	other, err := alipay.New(alipay.Config{AppID: appID, PrivateKey: pkcs1PEM(badKey), AlipayPublicKey: publicPEM(t, &alipayKey.PublicKey), Gateway: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.QueryTrade(ctx, "T3-never"); err == nil || errors.Is(err, channel.ErrTradeUnknown) || !strings.Contains(err.Error(), "isv.invalid-signature") {
		t.Fatalf("query signed with the wrong app key: %v", err)
	}
}

func TestQueryTradeRefusesWhatIsNotAVerifiedAnswer(t *testing.T) {
	keys(t)
	ctx := context.Background()
	sign := func(body string) string {
		s, err := alipay.Sign(alipayKey, []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	notExist := `{"code":"40004","msg":"Business Failed","sub_code":"ACQ.TRADE_NOT_EXIST","sub_msg":"交易不存在"}`
	paid := `{"code":"10000","msg":"Success","trade_no":"2026x","out_trade_no":"T9","trade_status":"TRADE_SUCCESS","total_amount":"1.00"}`
	for name, tc := range map[string]struct {
		status int
		body   string
		check  func(channel.TradeResult, error) bool
	}{
		"verified, spaced as alipay may": {200, `{"alipay_trade_query_response": ` + strings.ReplaceAll(paid, ",", ", ") + `,"sign":"` + sign(strings.ReplaceAll(paid, ",", ", ")) + `"}`,
			func(r channel.TradeResult, err error) bool {
				return err == nil && r.Outcome == channel.TradeSucceeded && r.Amount == 100
			}},
		"unsigned not-exist": {200, `{"alipay_trade_query_response":` + notExist + `}`,
			func(_ channel.TradeResult, err error) bool {
				return errors.Is(err, alipay.ErrBadSignature) && !errors.Is(err, channel.ErrTradeUnknown)
			}},
		"sign over other text": {200, `{"alipay_trade_query_response":` + paid + `,"sign":"` + sign(strings.ReplaceAll(paid, ",", ", ")) + `"}`,
			func(_ channel.TradeResult, err error) bool { return errors.Is(err, alipay.ErrBadSignature) }},
		"another trade": {200, `{"alipay_trade_query_response":` + strings.Replace(paid, `"T9"`, `"T8"`, 1) + `,"sign":"` + sign(strings.Replace(paid, `"T9"`, `"T8"`, 1)) + `"}`,
			func(_ channel.TradeResult, err error) bool { return err != nil && strings.Contains(err.Error(), "T8") }},
		"error_response": {200, `{"error_response":{"code":"40002","msg":"Invalid Arguments","sub_code":"isv.invalid-app-id"}}`,
			func(_ channel.TradeResult, err error) bool {
				return err != nil && !errors.Is(err, channel.ErrTradeUnknown) && strings.Contains(err.Error(), "isv.invalid-app-id")
			}},
		"502": {502, `bad gateway`, func(_ channel.TradeResult, err error) bool {
			return err != nil && !errors.Is(err, channel.ErrTradeUnknown)
		}},
		"not json": {200, `<html>`, func(_ channel.TradeResult, err error) bool { return err != nil }},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			_, _ = w.Write([]byte(tc.body))
		}))
		c := newClient(t, srv.URL)
		res, err := c.QueryTrade(ctx, "T9")
		srv.Close()
		if !tc.check(res, err) {
			t.Errorf("%s: %+v, %v", name, res, err)
		}
	}
}

// The whole path of a notification: the simulator posts it signed, a
// receiver verifies it with the client and answers Ack; a tampered one is
// refused, so Alipay keeps sending until its schedule is used up.
func TestNotificationsFromTheSimulator(t *testing.T) {
	c := newClient(t, "")
	var mu sync.Mutex
	var got []channel.Notification
	var refused []error
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", 400)
			return
		}
		n, err := c.VerifyNotification(r.PostForm)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			refused = append(refused, err)
			_, _ = w.Write([]byte("fail"))
			return
		}
		got = append(got, n)
		_, _ = w.Write([]byte(alipay.Ack))
	}))
	defer receiver.Close()
	keys(t)
	sim, err := alipaysim.New(alipaysim.Config{AppID: appID, AppPublicKey: &appKey.PublicKey, Key: alipayKey,
		NotifyURL: receiver.URL, Scale: 1e-6})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Stop()

	if err := sim.Pay("T5-good", "3.21"); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	mu.Lock()
	if len(got) != 1 || got[0].TradeNo != "T5-good" || got[0].Amount != 321 || !got[0].Success {
		t.Fatalf("got %+v, refused %v", got, refused)
	}
	mu.Unlock()

	sim.SetFaults(alipaysim.Faults{Tamper: true})
	if err := sim.Pay("T6-tampered", "3.21"); err != nil {
		t.Fatal(err)
	}
	sim.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || len(refused) != len(alipaysim.Schedule)+1 {
		t.Fatalf("tampered: got %d, refused %d (want %d)", len(got), len(refused), len(alipaysim.Schedule)+1)
	}
	if !errors.Is(refused[0], alipay.ErrBadSignature) {
		t.Fatalf("tampered refused with %v", refused[0])
	}
}
