package wechatpaysim_test

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/wechatpaysim"
)

const (
	mchID     = "1900009191"
	appID     = "wxd678efh567hg6787"
	mchSerial = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
	pubKeyID  = "PUB_KEY_ID_0119000091912025010100000000000001"
)

var apiV3Key = []byte("0123456789abcdef0123456789ABCDEF")

type env struct {
	sim           *wechatpaysim.Sim
	current       atomic.Pointer[wechatpaysim.Sim] // the one serving /v3/ (sim, but read by the server)
	srv           *httptest.Server
	merchant      *rsa.PrivateKey
	platform      *rsa.PrivateKey
	notifyURL     string
	notifications atomic.Int32
	answer        atomic.Int32 // status the notify URL answers

	mu       sync.Mutex
	notified []transaction // the notifications answered 2xx, decrypted
}

// transaction is what grab reads of a notification's decrypted resource.
type transaction struct {
	OutTradeNo    string `json:"out_trade_no"`
	TransactionID string `json:"transaction_id"`
	TradeState    string `json:"trade_state"`
	Amount        struct {
		Total int64 `json:"total"`
	} `json:"amount"`
}

// newSim is a simulator for e's merchant and platform keys.
func (e *env) newSim(t *testing.T) *wechatpaysim.Sim {
	t.Helper()
	sim, err := wechatpaysim.New(wechatpaysim.Config{MchID: mchID, AppID: appID, MerchantSerial: mchSerial,
		MerchantKey: &e.merchant.PublicKey, APIv3Key: apiV3Key, PlatformKey: e.platform, PlatformSerial: pubKeyID, Scale: 1e-5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Shutdown)
	return sim
}

// decrypt opens a notification's resource with the APIv3 key.
func decrypt(body []byte) (transaction, error) {
	var n struct {
		Resource struct {
			Ciphertext, Nonce string
			AD                string `json:"associated_data"`
		}
	}
	var tr transaction
	if err := json.Unmarshal(body, &n); err != nil {
		return tr, fmt.Errorf("notification %s: %w", body, err)
	}
	sealed, err := base64.StdEncoding.DecodeString(n.Resource.Ciphertext)
	if err != nil {
		return tr, err
	}
	block, err := aes.NewCipher(apiV3Key)
	if err != nil {
		return tr, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return tr, err
	}
	plain, err := gcm.Open(nil, []byte(n.Resource.Nonce), sealed, []byte(n.Resource.AD))
	if err != nil {
		return tr, fmt.Errorf("resource does not open: %w", err)
	}
	if err := json.Unmarshal(plain, &tr); err != nil {
		return tr, fmt.Errorf("resource %s: %w", plain, err)
	}
	return tr, nil
}

// notifiedOf is the notifications of a trade answered 2xx so far.
func (e *env) notifiedOf(no string) []transaction {
	e.mu.Lock()
	defer e.mu.Unlock()
	var got []transaction
	for _, tr := range e.notified {
		if tr.OutTradeNo == no {
			got = append(got, tr)
		}
	}
	return got
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{}
	var err error
	if e.merchant, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if e.platform, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	e.sim = e.newSim(t)
	e.current.Store(e.sim)
	e.answer.Store(http.StatusNoContent)
	mux := http.NewServeMux()
	mux.Handle("/v3/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { e.current.Load().ServeHTTP(w, r) }))
	mux.HandleFunc("/notify", func(w http.ResponseWriter, r *http.Request) {
		e.notifications.Add(1)
		status := int(e.answer.Load())
		if status/100 == 2 {
			body, _ := io.ReadAll(r.Body)
			tr, err := decrypt(body)
			if err != nil {
				t.Error(err) // the sim's own faults are not set where this answers 2xx
			}
			e.mu.Lock()
			e.notified = append(e.notified, tr)
			e.mu.Unlock()
		}
		w.WriteHeader(status)
	})
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	e.notifyURL = e.srv.URL + "/notify"
	return e
}

// do sends a request signed by hand with key at ts; auth overrides the
// Authorization header when not empty.
func (e *env) do(t *testing.T, method, uri string, body []byte, key *rsa.PrivateKey, ts int64, serial string) (*http.Response, []byte) {
	t.Helper()
	nonce := "593BEC0C930BF1AFEB40B4A08C8FB242"
	msg := method + "\n" + uri + "\n" + strconv.FormatInt(ts, 10) + "\n" + nonce + "\n" + string(body) + "\n"
	sum := sha256.Sum256([]byte(msg))
	sig, _ := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	req, _ := http.NewRequest(method, e.srv.URL+uri, bytes.NewReader(body))
	req.Header.Set("Authorization", fmt.Sprintf(`WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",signature="%s",timestamp="%d",serial_no="%s"`,
		mchID, nonce, base64.StdEncoding.EncodeToString(sig), ts, serial))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(resp.Body)
	return resp, reply
}

func (e *env) order(no string, total int64) []byte {
	b, _ := json.Marshal(map[string]any{"appid": appID, "mchid": mchID, "description": "d", "out_trade_no": no,
		"notify_url": e.notifyURL, "amount": map[string]any{"total": total, "currency": "CNY"}})
	return b
}

func (e *env) verifyAnswer(t *testing.T, resp *http.Response, body []byte) {
	t.Helper()
	h := resp.Header
	if h.Get("Wechatpay-Serial") != pubKeyID {
		t.Fatalf("answer serial %q", h.Get("Wechatpay-Serial"))
	}
	sig, _ := base64.StdEncoding.DecodeString(h.Get("Wechatpay-Signature"))
	sum := sha256.Sum256([]byte(h.Get("Wechatpay-Timestamp") + "\n" + h.Get("Wechatpay-Nonce") + "\n" + string(body) + "\n"))
	if err := rsa.VerifyPKCS1v15(&e.platform.PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		t.Fatalf("answer does not verify: %v", err)
	}
}

func TestAuthorizationChecked(t *testing.T) {
	e := newEnv(t)
	now := time.Now().Unix()
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	const path = "/v3/pay/transactions/app"
	for _, c := range []struct {
		name   string
		key    *rsa.PrivateKey
		ts     int64
		serial string
	}{
		{"another key", other, now, mchSerial},
		{"stale", e.merchant, now - 600, mchSerial},
		{"wrong serial", e.merchant, now, "00AA"},
	} {
		resp, body := e.do(t, http.MethodPost, path, e.order("S1", 100), c.key, c.ts, c.serial)
		if resp.StatusCode != http.StatusUnauthorized || !bytes.Contains(body, []byte("SIGN_ERROR")) {
			t.Errorf("%s: %d %s, want 401 SIGN_ERROR", c.name, resp.StatusCode, body)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v3/pay/transactions/out-trade-no/S1?mchid="+mchID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("unsigned query: %d", resp.StatusCode)
	}
	if _, ok := e.sim.Trade("S1"); ok || e.sim.AuthFailures() != 4 {
		t.Fatalf("refused requests had effect or were not counted (%d)", e.sim.AuthFailures())
	}

	resp, body := e.do(t, http.MethodPost, path, e.order("S1", 100), e.merchant, now, mchSerial)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("good order: %d %s", resp.StatusCode, body)
	}
	e.verifyAnswer(t, resp, body)
	var r struct {
		PrepayID string `json:"prepay_id"`
	}
	if json.Unmarshal(body, &r) != nil || r.PrepayID == "" {
		t.Fatalf("order answer %s", body)
	}
	resp, body = e.do(t, http.MethodGet, "/v3/pay/transactions/out-trade-no/S1?mchid="+mchID, nil, e.merchant, now, mchSerial)
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"trade_state":"NOTPAY"`)) {
		t.Fatalf("query: %d %s", resp.StatusCode, body)
	}
	e.verifyAnswer(t, resp, body)
	resp, body = e.do(t, http.MethodGet, "/v3/pay/transactions/out-trade-no/S9?mchid="+mchID, nil, e.merchant, now, mchSerial)
	if resp.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte("ORDER_NOT_EXIST")) {
		t.Fatalf("unknown: %d %s", resp.StatusCode, body)
	}
	e.verifyAnswer(t, resp, body)

	// A closed order is not placed again; another amount is OUT_TRADE_NO_USED.
	if err := e.sim.Close("S1"); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(t, http.MethodPost, path, e.order("S1", 100), e.merchant, now, mchSerial)
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("ORDER_CLOSED")) {
		t.Fatalf("closed again: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(t, http.MethodPost, path, e.order("S1", 101), e.merchant, now, mchSerial)
	if resp.StatusCode != http.StatusBadRequest || !bytes.Contains(body, []byte("OUT_TRADE_NO_USED")) {
		t.Fatalf("other amount: %d %s", resp.StatusCode, body)
	}
}

func TestScheduleIsWeChatPays(t *testing.T) {
	var sum time.Duration
	for _, d := range wechatpaysim.Schedule {
		sum += d
	}
	if len(wechatpaysim.Schedule) != 15 || sum != 24*time.Hour+4*time.Minute {
		t.Fatalf("%d resends over %s, want 15 over 24h4m", len(wechatpaysim.Schedule), sum)
	}
}

func TestResendUntil2xx(t *testing.T) {
	e := newEnv(t)
	now := time.Now().Unix()
	if resp, body := e.do(t, http.MethodPost, "/v3/pay/transactions/app", e.order("S2", 100), e.merchant, now, mchSerial); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	e.answer.Store(http.StatusInternalServerError)
	if err := e.sim.Pay("S2"); err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, "four refused sends", func() bool { return e.notifications.Load() >= 4 })
	e.answer.Store(http.StatusOK)
	e.sim.Wait()
	ds := e.sim.Deliveries()
	if len(ds) < 5 || ds[len(ds)-1].Status != http.StatusOK || !e.sim.Acked("S2") || int(e.notifications.Load()) != len(ds) {
		t.Fatalf("deliveries %+v, %d received", ds, e.notifications.Load())
	}
	for i, d := range ds[:len(ds)-1] {
		if d.Attempt != i || d.Status != http.StatusInternalServerError {
			t.Fatalf("delivery %d: %+v", i, d)
		}
	}
	if tr, _ := e.sim.Trade("S2"); tr.State != "SUCCESS" || tr.TransactionID == "" {
		t.Fatalf("trade %+v", tr)
	}
}
