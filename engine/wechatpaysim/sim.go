// Package wechatpaysim is a WeChat Pay API v3 simulator for tests: an HTTP
// server that checks the merchant's WECHATPAY2-SHA256-RSA2048 signatures
// (401 otherwise), keeps APP orders, answers queries signed with the
// platform key, and sends encrypted, signed payment notifications to the
// order's notify_url, again on WeChat Pay's schedule until one is answered
// 2xx. Faults make notifications lost, duplicated, stale, tampered with,
// signed or encrypted with the wrong key, and answers badly signed.
//
// Persist keeps the orders in a file, so that a simulator started again on
// it answers for them and notifies them as before; PayAfter makes it the
// payer too, paying every APP order by itself a while after it is placed
// (grabd's embedded mode).
//
// It is written apart from package wechatpay on purpose: it checks the
// client against the protocol, not against itself.
package wechatpaysim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/grab-engine/grab/engine/internal/simkit"
)

// Schedule is WeChat Pay's resend schedule: after the first send, each
// resend waits these in turn (15 resends over about 24h4m).
var Schedule = []time.Duration{
	15 * time.Second, 15 * time.Second, 30 * time.Second, 3 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, 30 * time.Minute, 30 * time.Minute, 60 * time.Minute,
	3 * time.Hour, 3 * time.Hour, 3 * time.Hour, 6 * time.Hour, 6 * time.Hour,
}

// Config is the simulator's side of one merchant.
type Config struct {
	MchID, AppID string
	// MerchantSerial and MerchantKey are the merchant API certificate's
	// serial and public key, which requests must be signed for.
	MerchantSerial string
	MerchantKey    *rsa.PublicKey
	APIv3Key       []byte // 32 bytes
	// PlatformKey signs answers and notifications under PlatformSerial: a
	// platform certificate's serial or a PUB_KEY_ID_… id.
	PlatformKey    *rsa.PrivateKey
	PlatformSerial string
	// Scale multiplies Schedule (e.g. 0.0001 in tests); 1 when zero.
	Scale  float64
	Client *http.Client // sends notifications; http.DefaultClient when nil
	Now    func() time.Time
}

// Faults change what the simulator sends from when they are set.
type Faults struct {
	Lose          int  // the first Lose sends of each notification are dropped
	Duplicate     bool // each send goes twice
	Stale         bool // notifications signed with a timestamp 10 minutes old
	Tamper        bool // the body altered after signing
	WrongKey      bool // signed with a key that is not the platform key
	WrongAPIv3Key bool // resource encrypted with another APIv3 key
	UnknownSerial bool // Wechatpay-Serial names a key the merchant does not have
	OtherMchID    bool // the transaction is another merchant's
	// BadAnswerSignature signs the HTTP answers (orders, queries) wrongly.
	BadAnswerSignature bool
}

// Trade is an order as the simulator keeps it.
type Trade struct {
	OutTradeNo    string
	PrepayID      string
	TransactionID string
	State         string
	Total         int64
	NotifyURL     string
	Description   string
}

// Delivery is one send of a notification and what came back.
type Delivery struct {
	OutTradeNo string
	Attempt    int // 0 the first send, n the n-th resend
	Status     int // 0 when lost or the POST failed
}

// Sim is the simulator; serve it with httptest.NewServer(sim).
type Sim struct {
	cfg      Config
	wrongKey *rsa.PrivateKey

	mu         sync.Mutex
	faults     Faults
	trades     map[string]*Trade
	deliveries []Delivery
	acked      map[string]bool
	authFails  int
	seq        int
	// file, when set, keeps the trades across restarts (Persist).
	file string
	// payAfter, when positive, pays every placed order that long after it
	// is placed (PayAfter).
	payAfter time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a simulator.
func New(cfg Config) (*Sim, error) {
	if len(cfg.APIv3Key) != 32 || cfg.PlatformKey == nil || cfg.MerchantKey == nil {
		return nil, errors.New("wechatpaysim: APIv3 key (32 bytes), platform key and merchant key are required")
	}
	if cfg.Scale == 0 {
		cfg.Scale = 1
	}
	if cfg.Client == nil {
		cfg.Client = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	wrong, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Sim{cfg: cfg, wrongKey: wrong, trades: map[string]*Trade{}, acked: map[string]bool{}, ctx: ctx, cancel: cancel}, nil
}

// saved is the Persist file: the trades and the sequence transaction ids
// are drawn from, so that a restart does not draw them again.
type saved struct {
	Seq    int
	Trades []Trade
}

// Persist keeps the simulator's orders in the JSON file at path, as WeChat
// Pay keeps them while the merchant restarts: the orders already there are
// loaded (and queried, paid and notified as before), and every change to an
// order is written (to a new file renamed over the old one, mode 0600).
// Call it before any order is placed. A file that cannot be read or
// decoded is an error naming it, and the simulator then keeps no file.
func (s *Sim) Persist(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f saved
	if _, err := simkit.Load(path, &f); err != nil {
		return fmt.Errorf("wechatpaysim: %w", err)
	}
	s.file = path
	s.seq = max(s.seq, f.Seq)
	for _, t := range f.Trades {
		s.trades[t.OutTradeNo] = &t
		if t.State == "NOTPAY" {
			s.payLater(t.OutTradeNo)
		}
	}
	return nil
}

// save writes the trades to the Persist file, if any; s.mu held.
func (s *Sim) save() error {
	if s.file == "" {
		return nil
	}
	f := saved{Seq: s.seq, Trades: make([]Trade, 0, len(s.trades))}
	for _, t := range s.trades {
		f.Trades = append(f.Trades, *t)
	}
	if err := simkit.Save(s.file, f); err != nil {
		return fmt.Errorf("wechatpaysim: %w", err)
	}
	return nil
}

// PayAfter makes the simulator the payer, as in grabd's embedded mode:
// every order placed from now on (POST /v3/pay/transactions/app), and every
// NOTPAY one it already keeps (Persist), is paid by itself d after it is
// placed or after this call — SUCCESS and notified, as Pay does — unless
// it was paid, closed or otherwise ended meanwhile. Shutdown ends the
// waiting; Wait waits for it. Zero or less turns it off for orders placed
// from now on.
func (s *Sim) PayAfter(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.payAfter = d
	for no, t := range s.trades {
		if t.State == "NOTPAY" {
			s.payLater(no)
		}
	}
}

// payLater pays an order after payAfter, if set; s.mu held.
func (s *Sim) payLater(outTradeNo string) {
	if s.payAfter > 0 {
		simkit.After(s.ctx, &s.wg, s.payAfter, func() { s.autoPay(outTradeNo) })
	}
}

// autoPay pays an order, as Pay does, if it is still unpaid.
func (s *Sim) autoPay(outTradeNo string) {
	s.mu.Lock()
	paid := false
	if t, ok := s.trades[outTradeNo]; ok && (t.State == "NOTPAY" || t.State == "USERPAYING") {
		paid = s.setState(t, "SUCCESS") == nil
	}
	s.mu.Unlock()
	if paid {
		_ = s.Notify(outTradeNo)
	}
}

// SetFaults sets the faults for what is sent from now on.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Shutdown stops resending and automatic payments (PayAfter), and waits
// for sends in flight.
func (s *Sim) Shutdown() {
	s.cancel()
	s.wg.Wait()
}

// Wait waits until every notification is acknowledged or out of resends,
// and every automatic payment (PayAfter) has been made.
func (s *Sim) Wait() { s.wg.Wait() }

// Trade returns an order.
func (s *Sim) Trade(outTradeNo string) (Trade, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[outTradeNo]
	if !ok {
		return Trade{}, false
	}
	return *t, true
}

// Deliveries returns the sends so far, in order.
func (s *Sim) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.deliveries...)
}

// Acked reports whether a trade's notification was answered 2xx.
func (s *Sim) Acked(outTradeNo string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked[outTradeNo]
}

// AuthFailures counts requests refused 401.
func (s *Sim) AuthFailures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authFails
}

// Pay makes the payer pay: the trade is SUCCESS and its notification goes.
func (s *Sim) Pay(outTradeNo string) error {
	if err := s.SetState(outTradeNo, "SUCCESS"); err != nil {
		return err
	}
	return s.Notify(outTradeNo)
}

// Close closes an unpaid trade (WeChat Pay does not notify a close).
func (s *Sim) Close(outTradeNo string) error { return s.SetState(outTradeNo, "CLOSED") }

// SetState sets a trade's trade_state (USERPAYING, PAYERROR, REVOKED, …)
// without notifying.
func (s *Sim) SetState(outTradeNo, state string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[outTradeNo]
	if !ok {
		return fmt.Errorf("wechatpaysim: no trade %s", outTradeNo)
	}
	return s.setState(t, state)
}

// setState sets t's state and saves it, or leaves t as it was; s.mu held.
func (s *Sim) setState(t *Trade, state string) error {
	before := *t
	t.State = state
	if state == "SUCCESS" && t.TransactionID == "" {
		s.seq++
		t.TransactionID = fmt.Sprintf("42000%017d", s.seq)
	}
	if err := s.save(); err != nil {
		*t = before
		return err
	}
	return nil
}

// Notify sends the trade's notification to its notify_url now and on the
// schedule until a 2xx, with the faults set now.
func (s *Sim) Notify(outTradeNo string) error {
	s.mu.Lock()
	t, ok := s.trades[outTradeNo]
	f := s.faults
	var tr Trade
	if ok {
		tr = *t
	}
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("wechatpaysim: no trade %s", outTradeNo)
	}
	s.wg.Add(1)
	go s.resend(tr, f)
	return nil
}

func (s *Sim) resend(t Trade, f Faults) {
	defer s.wg.Done()
	for attempt := 0; attempt <= len(Schedule); attempt++ {
		if attempt > 0 {
			select {
			case <-s.ctx.Done():
				return
			case <-time.After(time.Duration(float64(Schedule[attempt-1]) * s.cfg.Scale)):
			}
		}
		status := 0
		if attempt >= f.Lose {
			sends := 1
			if f.Duplicate {
				sends = 2
			}
			for range sends {
				if st := s.post(t, f); st/100 == 2 || status/100 != 2 {
					status = st
				}
			}
		}
		s.mu.Lock()
		s.deliveries = append(s.deliveries, Delivery{OutTradeNo: t.OutTradeNo, Attempt: attempt, Status: status})
		if status/100 == 2 {
			s.acked[t.OutTradeNo] = true
		}
		s.mu.Unlock()
		if status/100 == 2 {
			return
		}
	}
}

func (s *Sim) post(t Trade, f Faults) int {
	h, body, err := s.notification(t, f)
	if err != nil {
		return 0
	}
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, t.NotifyURL, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header = h
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// Notification builds a trade's notification with the faults set now
// (Lose and Duplicate aside), for a test to hand to a handler directly.
func (s *Sim) Notification(outTradeNo string) (http.Header, []byte, error) {
	s.mu.Lock()
	t, ok := s.trades[outTradeNo]
	f := s.faults
	var tr Trade
	if ok {
		tr = *t
	}
	s.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("wechatpaysim: no trade %s", outTradeNo)
	}
	return s.notification(tr, f)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *Sim) transaction(t Trade, mchID string) map[string]any {
	m := map[string]any{
		"appid": s.cfg.AppID, "mchid": mchID, "out_trade_no": t.OutTradeNo, "trade_type": "APP",
		"trade_state": t.State, "trade_state_desc": t.State, "bank_type": "OTHERS", "attach": "",
		"payer":  map[string]any{"openid": "oSim0000000000000000000000"},
		"amount": map[string]any{"total": t.Total, "payer_total": t.Total, "currency": "CNY", "payer_currency": "CNY"},
	}
	if t.TransactionID != "" {
		m["transaction_id"] = t.TransactionID
	}
	if t.State == "SUCCESS" {
		m["success_time"] = s.cfg.Now().Format(time.RFC3339)
	}
	return m
}

func (s *Sim) notification(t Trade, f Faults) (http.Header, []byte, error) {
	mch := s.cfg.MchID
	if f.OtherMchID {
		mch = "1900000999"
	}
	plain, err := json.Marshal(s.transaction(t, mch))
	if err != nil {
		return nil, nil, err
	}
	key := s.cfg.APIv3Key
	if f.WrongAPIv3Key {
		key = bytes.Repeat([]byte("w"), 32)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	nonce := randHex(6) // 12 characters, used as bytes
	ad := "transaction"
	sealed := gcm.Seal(nil, []byte(nonce), plain, []byte(ad))
	env := map[string]any{
		"id": "EV-" + randHex(8), "create_time": s.cfg.Now().Format(time.RFC3339),
		"resource_type": "encrypt-resource", "event_type": "TRANSACTION.SUCCESS", "summary": "支付成功",
		"resource": map[string]any{"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
			"ciphertext": base64.StdEncoding.EncodeToString(sealed), "associated_data": ad, "nonce": nonce},
	}
	body, err := json.Marshal(env)
	if err != nil {
		return nil, nil, err
	}
	at := s.cfg.Now()
	if f.Stale {
		at = at.Add(-10 * time.Minute)
	}
	h, err := s.signed(body, at, f.WrongKey, f.UnknownSerial)
	if err != nil {
		return nil, nil, err
	}
	h.Set("Content-Type", "application/json")
	if f.Tamper {
		body = bytes.Replace(body, []byte(`"summary":"支付成功"`), []byte(`"summary":"支付成功!"`), 1)
	}
	return h, body, nil
}

// signed returns the Wechatpay-* headers signing body at at.
func (s *Sim) signed(body []byte, at time.Time, wrongKey, unknownSerial bool) (http.Header, error) {
	ts, nonce := strconv.FormatInt(at.Unix(), 10), strings.ToUpper(randHex(16))
	key := s.cfg.PlatformKey
	if wrongKey {
		key = s.wrongKey
	}
	sum := sha256.Sum256([]byte(ts + "\n" + nonce + "\n" + string(body) + "\n"))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return nil, err
	}
	serial := s.cfg.PlatformSerial
	if unknownSerial {
		serial = "PUB_KEY_ID_0000000000UNKNOWN"
	}
	h := http.Header{}
	h.Set("Wechatpay-Timestamp", ts)
	h.Set("Wechatpay-Nonce", nonce)
	h.Set("Wechatpay-Signature", base64.StdEncoding.EncodeToString(sig))
	h.Set("Wechatpay-Serial", serial)
	h.Set("Request-ID", "sim-"+randHex(8))
	return h, nil
}

// answer writes a signed JSON answer.
func (s *Sim) answer(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	s.mu.Lock()
	bad := s.faults.BadAnswerSignature
	s.mu.Unlock()
	h, err := s.signed(body, s.cfg.Now(), bad, false)
	if err != nil {
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func apiErr(code, message string) map[string]string {
	return map[string]string{"code": code, "message": message}
}

// ServeHTTP serves the APP order and the query by out_trade_no.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		s.answer(w, http.StatusBadRequest, apiErr("PARAM_ERROR", "unreadable body"))
		return
	}
	if err := s.checkAuth(r, body); err != nil {
		s.mu.Lock()
		s.authFails++
		s.mu.Unlock()
		// WeChat Pay does not sign what it cannot attribute; neither does the sim.
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(apiErr("SIGN_ERROR", err.Error()))
		return
	}
	const query = "/v3/pay/transactions/out-trade-no/"
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/v3/pay/transactions/app":
		s.order(w, body)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, query):
		no := strings.TrimPrefix(r.URL.Path, query)
		if r.URL.Query().Get("mchid") != s.cfg.MchID {
			s.answer(w, http.StatusBadRequest, apiErr("PARAM_ERROR", "mchid does not match"))
			return
		}
		s.mu.Lock()
		t, ok := s.trades[no]
		var tr Trade
		if ok {
			tr = *t
		}
		s.mu.Unlock()
		if !ok {
			s.answer(w, http.StatusNotFound, apiErr("ORDER_NOT_EXIST", "订单不存在"))
			return
		}
		s.answer(w, http.StatusOK, s.transaction(tr, s.cfg.MchID))
	default:
		s.answer(w, http.StatusNotFound, apiErr("RESOURCE_NOT_EXISTS", "no such API"))
	}
}

func (s *Sim) order(w http.ResponseWriter, body []byte) {
	var o struct {
		AppID, MchID, Description string
		OutTradeNo                string `json:"out_trade_no"`
		NotifyURL                 string `json:"notify_url"`
		Amount                    struct {
			Total    int64
			Currency string
		}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&o); err != nil {
		s.answer(w, http.StatusBadRequest, apiErr("PARAM_ERROR", "body is not JSON"))
		return
	}
	switch {
	case o.AppID != s.cfg.AppID || o.MchID != s.cfg.MchID:
		s.answer(w, http.StatusBadRequest, apiErr("APPID_MCHID_NOT_MATCH", "appid and mchid do not match"))
		return
	case o.OutTradeNo == "" || o.Description == "" || o.NotifyURL == "" || o.Amount.Total <= 0 || o.Amount.Currency != "CNY":
		s.answer(w, http.StatusBadRequest, apiErr("PARAM_ERROR", "out_trade_no, description, notify_url, amount.total>0 and currency CNY are required"))
		return
	}
	status, reply := s.place(o.OutTradeNo, o.Amount.Total, o.NotifyURL, o.Description)
	s.answer(w, status, reply)
}

// place keeps a new order or answers a repeated one as WeChat Pay does.
func (s *Sim) place(no string, total int64, notifyURL, description string) (int, any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.trades[no]; ok {
		if t.Total != total {
			return http.StatusBadRequest, apiErr("OUT_TRADE_NO_USED", "out_trade_no used with other parameters")
		}
		if t.State != "NOTPAY" && t.State != "USERPAYING" {
			return http.StatusBadRequest, apiErr("ORDER_CLOSED", "order is "+t.State)
		}
		return http.StatusOK, map[string]string{"prepay_id": t.PrepayID}
	}
	t := &Trade{OutTradeNo: no, PrepayID: "wx" + randHex(15), State: "NOTPAY", Total: total,
		NotifyURL: notifyURL, Description: description}
	s.trades[no] = t
	if err := s.save(); err != nil {
		delete(s.trades, no)
		return http.StatusInternalServerError, apiErr("SYSTEM_ERROR", "the order could not be kept")
	}
	s.payLater(no)
	return http.StatusOK, map[string]string{"prepay_id": t.PrepayID}
}

// checkAuth verifies the merchant's Authorization header on r.
func (s *Sim) checkAuth(r *http.Request, body []byte) error {
	auth := r.Header.Get("Authorization")
	schema, params, ok := strings.Cut(auth, " ")
	if !ok || schema != "WECHATPAY2-SHA256-RSA2048" {
		return errors.New("Authorization is not WECHATPAY2-SHA256-RSA2048")
	}
	kv := map[string]string{}
	for _, part := range strings.Split(params, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return fmt.Errorf("Authorization parameter %q is not k=\"v\"", part)
		}
		if _, dup := kv[k]; dup {
			return fmt.Errorf("Authorization parameter %s repeated", k)
		}
		kv[k] = v[1 : len(v)-1]
	}
	for _, k := range []string{"mchid", "nonce_str", "signature", "timestamp", "serial_no"} {
		if kv[k] == "" {
			return fmt.Errorf("Authorization lacks %s", k)
		}
	}
	if kv["mchid"] != s.cfg.MchID {
		return errors.New("mchid is not the merchant's")
	}
	if kv["serial_no"] != s.cfg.MerchantSerial {
		return errors.New("serial_no is not the merchant certificate's")
	}
	ts, err := strconv.ParseInt(kv["timestamp"], 10, 64)
	if err != nil {
		return errors.New("timestamp is not a number")
	}
	if d := s.cfg.Now().Sub(time.Unix(ts, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return errors.New("timestamp expired")
	}
	sig, err := base64.StdEncoding.DecodeString(kv["signature"])
	if err != nil {
		return errors.New("signature is not base64")
	}
	msg := r.Method + "\n" + r.URL.RequestURI() + "\n" + kv["timestamp"] + "\n" + kv["nonce_str"] + "\n" + string(body) + "\n"
	sum := sha256.Sum256([]byte(msg))
	if rsa.VerifyPKCS1v15(s.cfg.MerchantKey, crypto.SHA256, sum[:], sig) != nil {
		return errors.New("signature does not verify")
	}
	return nil
}
