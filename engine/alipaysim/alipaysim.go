// Package alipaysim is an Alipay open-platform gateway simulator for tests:
// an HTTP server that takes alipay.trade.query calls signed by the app
// (RSA2), answers them signed with its own key, keeps trades the test makes
// (Open, Pay, Close), and posts signed asynchronous notifications to the
// notify URL, again on Alipay's schedule until the receiver answers
// "success". Faults lose, duplicate, tamper or mis-sign what it sends.
//
// Persist keeps the trades in a file, so that a simulator started again on
// it answers for them and notifies them as before; PayAfter makes it the
// payer too, paying every opened trade by itself a while after it is
// opened (grabd's embedded mode).
//
// Its signing is written here on its own, not borrowed from engine/alipay,
// so that a mistake in the client cannot agree with itself.
package alipaysim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/grab-engine/grab/engine/internal/simkit"
)

// Schedule is Alipay's: after the first notification, resends 4m, 10m, 10m,
// 1h, 2h, 6h and 15h apart, 8 sends over about 25 hours.
var Schedule = []time.Duration{4 * time.Minute, 10 * time.Minute, 10 * time.Minute,
	time.Hour, 2 * time.Hour, 6 * time.Hour, 15 * time.Hour}

// Faults shape what the simulator sends. The zero value is a faithful Alipay.
type Faults struct {
	Lose      int  // the first Lose sends of each notification never leave (counted as failed)
	Duplicate bool // each notification send is made twice
	Tamper    bool // total_amount (else sub_msg) is changed after signing (notifications and answers)
	WrongKey  bool // notifications and answers are signed with a key that is not the simulator's
}

// Config sets a simulator up.
type Config struct {
	AppID        string
	AppPublicKey *rsa.PublicKey  // verifies the app's requests
	Key          *rsa.PrivateKey // Alipay's key: signs answers and notifications
	// NotifyURL is used for trades made by Pay or Close without Open; Open
	// takes the order string's notify_url.
	NotifyURL string
	// Scale multiplies Schedule (1e-6 turns 25 hours into 90ms); zero means 1.
	Scale float64
	// HTTPClient posts notifications; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// Delivery is one notification send as the simulator saw it.
type Delivery struct {
	OutTradeNo string
	Status     string
	Attempt    int // 1 for the first send
	At         time.Time
	Lost       bool
	HTTPStatus int
	Answer     string
	Err        string
}

// Sim is the simulator; serve it with httptest.NewServer(sim).
type Sim struct {
	cfg   Config
	wrong *rsa.PrivateKey

	mu         sync.Mutex
	faults     Faults
	trades     map[string]*trade
	deliveries []Delivery
	seq        int
	// file, when set, keeps the trades across restarts (Persist).
	file string
	// payAfter, when positive, pays every opened trade that long after it
	// is opened (PayAfter).
	payAfter time.Duration

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type trade struct {
	outTradeNo, tradeNo, status, amount, subject, notifyURL string
	created, paid, closed                                   time.Time
}

// savedTrade is a trade as Persist keeps it.
type savedTrade struct {
	OutTradeNo, TradeNo, Status, Amount, Subject, NotifyURL string
	Created, Paid, Closed                                   time.Time
}

// saved is the Persist file: the trades and the sequence their trade_no
// and notify_id are drawn from, so that a restart does not draw them again.
type saved struct {
	Seq    int
	Trades []savedTrade
}

// Persist keeps the simulator's trades in the JSON file at path, as Alipay
// keeps them while the app restarts: the trades already there are loaded
// (and queried, notified, paid or closed as before), and every change to a
// trade is written (to a new file renamed over the old one, mode 0600).
// Call it before any trade is made. A file that cannot be read or decoded
// is an error naming it, and the simulator then keeps no file.
func (s *Sim) Persist(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f saved
	if _, err := simkit.Load(path, &f); err != nil {
		return fmt.Errorf("alipaysim: %w", err)
	}
	s.file = path
	s.seq = max(s.seq, f.Seq)
	for _, t := range f.Trades {
		s.trades[t.OutTradeNo] = &trade{outTradeNo: t.OutTradeNo, tradeNo: t.TradeNo, status: t.Status,
			amount: t.Amount, subject: t.Subject, notifyURL: t.NotifyURL, created: t.Created, paid: t.Paid, closed: t.Closed}
		if t.Status == "WAIT_BUYER_PAY" {
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
	f := saved{Seq: s.seq, Trades: make([]savedTrade, 0, len(s.trades))}
	for _, t := range s.trades {
		f.Trades = append(f.Trades, savedTrade{OutTradeNo: t.outTradeNo, TradeNo: t.tradeNo, Status: t.status,
			Amount: t.amount, Subject: t.subject, NotifyURL: t.notifyURL, Created: t.created, Paid: t.paid, Closed: t.closed})
	}
	if err := simkit.Save(s.file, f); err != nil {
		return fmt.Errorf("alipaysim: %w", err)
	}
	return nil
}

// PayAfter makes the simulator the payer, as in grabd's embedded mode:
// every trade opened from now on (Open), and every WAIT_BUYER_PAY trade it
// already keeps (Persist), is paid by itself d after it is opened or after
// this call — TRADE_SUCCESS and notified, as Pay does — unless it was
// paid or closed meanwhile. Stop ends the waiting; Wait waits for it.
// Zero or less turns it off for trades opened from now on.
func (s *Sim) PayAfter(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.payAfter = d
	for no, t := range s.trades {
		if t.status == "WAIT_BUYER_PAY" {
			s.payLater(no)
		}
	}
}

// payLater pays a trade after payAfter, if set; s.mu held.
func (s *Sim) payLater(outTradeNo string) {
	if s.payAfter > 0 {
		simkit.After(s.ctx, &s.wg, s.payAfter, func() {
			_ = s.end(outTradeNo, "", "TRADE_SUCCESS") // paid or closed meanwhile: nothing to do
		})
	}
}

// New returns a simulator. It makes its own wrong key for Faults.WrongKey.
func New(cfg Config) (*Sim, error) {
	if cfg.AppID == "" || cfg.AppPublicKey == nil || cfg.Key == nil {
		return nil, errors.New("alipaysim: app id, app public key and key are required")
	}
	if cfg.Scale == 0 {
		cfg.Scale = 1
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	wrong, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Sim{cfg: cfg, wrong: wrong, trades: map[string]*trade{}, ctx: ctx, cancel: cancel}, nil
}

// SetFaults changes the faults of what is sent from now on.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Stop ends every pending resend and automatic payment (PayAfter), and
// waits for sends in flight.
func (s *Sim) Stop() {
	s.cancel()
	s.wg.Wait()
}

// Wait waits until every notification has been acknowledged or has used up
// its schedule, and every automatic payment (PayAfter) has been made.
func (s *Sim) Wait() { s.wg.Wait() }

// Deliveries is every notification send so far, in order.
func (s *Sim) Deliveries() []Delivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Delivery(nil), s.deliveries...)
}

// Status is a trade's trade_status, or "" when the simulator does not know it.
func (s *Sim) Status(outTradeNo string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.trades[outTradeNo]; ok {
		return t.status
	}
	return ""
}

// Open is the payer's app opening an order string with Alipay's SDK: the
// app's sign must verify, and the trade is made WAIT_BUYER_PAY (no
// notification, as with Alipay's default settings).
func (s *Sim) Open(orderString string) error {
	v, err := url.ParseQuery(orderString)
	if err != nil {
		return fmt.Errorf("alipaysim: order string: %w", err)
	}
	if err := s.checkRequest(v, "alipay.trade.app.pay"); err != nil {
		return err
	}
	var biz struct {
		OutTradeNo  string `json:"out_trade_no"`
		TotalAmount string `json:"total_amount"`
		Subject     string `json:"subject"`
		ProductCode string `json:"product_code"`
	}
	if err := json.Unmarshal([]byte(v.Get("biz_content")), &biz); err != nil {
		return fmt.Errorf("alipaysim: biz_content: %w", err)
	}
	if biz.OutTradeNo == "" || biz.TotalAmount == "" || biz.Subject == "" || biz.ProductCode != "QUICK_MSECURITY_PAY" {
		return fmt.Errorf("alipaysim: biz_content misses out_trade_no, total_amount, subject or product_code QUICK_MSECURITY_PAY: %s", v.Get("biz_content"))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.trades[biz.OutTradeNo]; ok {
		if t.amount != biz.TotalAmount {
			return fmt.Errorf("alipaysim: trade %s exists for %s", biz.OutTradeNo, t.amount)
		}
		return nil
	}
	s.trades[biz.OutTradeNo] = s.newTrade(biz.OutTradeNo, biz.TotalAmount, biz.Subject, v.Get("notify_url"))
	if err := s.save(); err != nil {
		delete(s.trades, biz.OutTradeNo)
		return err
	}
	s.payLater(biz.OutTradeNo)
	return nil
}

// newTrade; s.mu held.
func (s *Sim) newTrade(outTradeNo, amount, subject, notifyURL string) *trade {
	s.seq++
	if notifyURL == "" {
		notifyURL = s.cfg.NotifyURL
	}
	return &trade{outTradeNo: outTradeNo, tradeNo: fmt.Sprintf("2026%016d", s.seq), status: "WAIT_BUYER_PAY",
		amount: amount, subject: subject, notifyURL: notifyURL, created: time.Now()}
}

// Pay makes the trade TRADE_SUCCESS for amount (yuan, "12.34"), making it
// first if the test did not Open it, and notifies.
func (s *Sim) Pay(outTradeNo, amount string) error {
	return s.end(outTradeNo, amount, "TRADE_SUCCESS")
}

// Finish makes a paid trade TRADE_FINISHED (past its refund window) and
// notifies, as Alipay does.
func (s *Sim) Finish(outTradeNo string) error {
	return s.end(outTradeNo, "", "TRADE_FINISHED")
}

// Close makes the trade TRADE_CLOSED (unpaid past its time, or closed) and
// notifies.
func (s *Sim) Close(outTradeNo string) error {
	return s.end(outTradeNo, "", "TRADE_CLOSED")
}

// Create makes a WAIT_BUYER_PAY trade for the test (as Open, without the order
// string and without PayAfter) and sends no notification. With Persist, a
// trade that could not be written is not made.
func (s *Sim) Create(outTradeNo, amount string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.trades[outTradeNo]; !ok {
		s.trades[outTradeNo] = s.newTrade(outTradeNo, amount, "test", "")
		if s.save() != nil {
			delete(s.trades, outTradeNo)
		}
	}
}

// Notify sends the trade's current status as a notification again (e.g.
// WAIT_BUYER_PAY, which Alipay sends only when asked to).
func (s *Sim) Notify(outTradeNo string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[outTradeNo]
	if !ok {
		return fmt.Errorf("alipaysim: no trade %s", outTradeNo)
	}
	s.notifyLocked(t)
	return nil
}

func (s *Sim) end(outTradeNo, amount, status string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[outTradeNo]
	if !ok {
		if amount == "" {
			return fmt.Errorf("alipaysim: no trade %s", outTradeNo)
		}
		t = s.newTrade(outTradeNo, amount, "test", "")
	}
	if amount != "" && amount != t.amount {
		return fmt.Errorf("alipaysim: trade %s is for %s, not %s", outTradeNo, t.amount, amount)
	}
	switch {
	case status == "TRADE_FINISHED" && t.status != "TRADE_SUCCESS":
		return fmt.Errorf("alipaysim: trade %s is %s, only a paid trade finishes", outTradeNo, t.status)
	case status != "TRADE_FINISHED" && t.status != "WAIT_BUYER_PAY":
		return fmt.Errorf("alipaysim: trade %s is already %s", outTradeNo, t.status)
	}
	before := *t
	t.status = status
	switch status {
	case "TRADE_SUCCESS":
		t.paid = time.Now()
	case "TRADE_CLOSED":
		t.closed = time.Now()
	}
	s.trades[outTradeNo] = t
	if err := s.save(); err != nil {
		if ok {
			*t = before
		} else {
			delete(s.trades, outTradeNo)
		}
		return err
	}
	s.notifyLocked(t)
	return nil
}

// notifyLocked builds the notification of t's status and sends it on the
// schedule in the background; s.mu held.
func (s *Sim) notifyLocked(t *trade) {
	if t.notifyURL == "" {
		return
	}
	s.seq++
	now := time.Now().In(shanghai)
	v := url.Values{}
	v.Set("notify_time", now.Format(layout))
	v.Set("notify_type", "trade_status_sync")
	v.Set("notify_id", fmt.Sprintf("notify-%d", s.seq))
	v.Set("app_id", s.cfg.AppID)
	v.Set("charset", "utf-8")
	v.Set("version", "1.0")
	v.Set("sign_type", "RSA2")
	v.Set("trade_no", t.tradeNo)
	v.Set("out_trade_no", t.outTradeNo)
	v.Set("trade_status", t.status)
	v.Set("total_amount", t.amount)
	v.Set("subject", t.subject)
	v.Set("gmt_create", t.created.In(shanghai).Format(layout))
	if !t.paid.IsZero() {
		v.Set("gmt_payment", t.paid.In(shanghai).Format(layout))
		v.Set("receipt_amount", t.amount)
		v.Set("buyer_pay_amount", t.amount)
	}
	if !t.closed.IsZero() {
		v.Set("gmt_close", t.closed.In(shanghai).Format(layout))
	}
	f := s.faults
	key := s.cfg.Key
	if f.WrongKey {
		key = s.wrong
	}
	v.Set("sign", sign(key, []byte(content(v, "sign", "sign_type"))))
	if f.Tamper {
		v.Set("total_amount", tamper(t.amount))
	}
	s.wg.Add(1)
	go s.deliver(t.outTradeNo, t.status, t.notifyURL, v.Encode(), f)
}

// deliver sends one notification until it is acknowledged or the schedule
// is used up.
func (s *Sim) deliver(outTradeNo, status, notifyURL, body string, f Faults) {
	defer s.wg.Done()
	for attempt := 1; ; attempt++ {
		ok := s.send(outTradeNo, status, notifyURL, body, attempt, attempt <= f.Lose)
		if f.Duplicate && attempt > f.Lose {
			s.send(outTradeNo, status, notifyURL, body, attempt, false)
		}
		if ok {
			return
		}
		if attempt > len(Schedule) {
			return
		}
		wait := time.Duration(float64(Schedule[attempt-1]) * s.cfg.Scale)
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// send posts once and records it; true when the receiver answered success.
// A duplicate's answer is recorded but the first send decides.
func (s *Sim) send(outTradeNo, status, notifyURL, body string, attempt int, lost bool) bool {
	d := Delivery{OutTradeNo: outTradeNo, Status: status, Attempt: attempt, At: time.Now(), Lost: lost}
	ok := false
	if !lost {
		ok = s.post(notifyURL, body, &d)
	}
	s.mu.Lock()
	s.deliveries = append(s.deliveries, d)
	s.mu.Unlock()
	return ok
}

func (s *Sim) post(notifyURL, body string, d *Delivery) bool {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, notifyURL, strings.NewReader(body))
	if err != nil {
		d.Err = err.Error()
		return false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		d.Err = err.Error()
		return false
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	d.HTTPStatus, d.Answer = resp.StatusCode, string(answer)
	// Alipay takes exactly "success"; "SUCCESS", JSON or a trailing newline
	// are failures and it sends again.
	return resp.StatusCode == http.StatusOK && bytes.Equal(answer, []byte("success"))
}

// ServeHTTP is the gateway: POST (form or query) alipay.trade.query.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeJSON(w, map[string]any{"error_response": map[string]string{"code": "40001", "msg": "Missing Required Arguments"}})
		return
	}
	v := r.Form
	method := v.Get("method")
	field := strings.ReplaceAll(method, ".", "_") + "_response"
	if method != "alipay.trade.query" {
		s.answer(w, "error_response", errBody("40002", "Invalid Arguments", "isv.invalid-method", "method "+method+" is not simulated"))
		return
	}
	if err := s.checkRequest(v, method); err != nil {
		sub := "isv.invalid-signature"
		if errors.Is(err, errApp) {
			sub = "isv.invalid-app-id"
		}
		s.answer(w, field, errBody("40002", "Invalid Arguments", sub, err.Error()))
		return
	}
	var biz struct {
		OutTradeNo string `json:"out_trade_no"`
		TradeNo    string `json:"trade_no"`
	}
	if err := json.Unmarshal([]byte(v.Get("biz_content")), &biz); err != nil || (biz.OutTradeNo == "" && biz.TradeNo == "") {
		s.answer(w, field, errBody("40002", "Invalid Arguments", "isv.missing-biz-content", "out_trade_no or trade_no is required"))
		return
	}
	s.mu.Lock()
	t, ok := s.trades[biz.OutTradeNo]
	var body queryBody
	if ok {
		body = queryBody{Code: "10000", Msg: "Success", TradeNo: t.tradeNo, OutTradeNo: t.outTradeNo,
			BuyerLogonID: "159****5620", TradeStatus: t.status, TotalAmount: t.amount}
		if !t.paid.IsZero() {
			body.SendPayDate = t.paid.In(shanghai).Format(layout)
		}
	}
	s.mu.Unlock()
	if !ok {
		b := errBody("40004", "Business Failed", "ACQ.TRADE_NOT_EXIST", "交易不存在")
		b.OutTradeNo = biz.OutTradeNo
		s.answer(w, field, b)
		return
	}
	s.answer(w, field, body)
}

type queryBody struct {
	Code         string `json:"code"`
	Msg          string `json:"msg"`
	SubCode      string `json:"sub_code,omitempty"`
	SubMsg       string `json:"sub_msg,omitempty"`
	TradeNo      string `json:"trade_no,omitempty"`
	OutTradeNo   string `json:"out_trade_no,omitempty"`
	BuyerLogonID string `json:"buyer_logon_id,omitempty"`
	TradeStatus  string `json:"trade_status,omitempty"`
	TotalAmount  string `json:"total_amount,omitempty"`
	SendPayDate  string `json:"send_pay_date,omitempty"`
}

func errBody(code, msg, sub, subMsg string) queryBody {
	return queryBody{Code: code, Msg: msg, SubCode: sub, SubMsg: subMsg}
}

// answer writes {"<field>":<body>,"sign":"…"} with the sign over the exact
// text of body, through the faults. error_response goes unsigned.
func (s *Sim) answer(w http.ResponseWriter, field string, body queryBody) {
	raw, _ := json.Marshal(body)
	if field == "error_response" {
		writeJSON(w, map[string]json.RawMessage{field: raw})
		return
	}
	s.mu.Lock()
	f := s.faults
	s.mu.Unlock()
	key := s.cfg.Key
	if f.WrongKey {
		key = s.wrong
	}
	sig := sign(key, raw)
	if f.Tamper {
		if body.TotalAmount != "" {
			body.TotalAmount = tamper(body.TotalAmount)
		} else {
			body.SubMsg += " (tampered)"
		}
		raw, _ = json.Marshal(body)
	}
	// Written by hand: field order as Alipay's, the body's text untouched.
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	fmt.Fprintf(w, `{"%s":%s,"sign":"%s"}`, field, raw, sig)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

var errApp = errors.New("alipaysim: unknown app_id")

// checkRequest verifies an app's call: its app id, method, sign type and
// RSA2 sign over every non-empty parameter but sign.
func (s *Sim) checkRequest(v url.Values, method string) error {
	if v.Get("app_id") != s.cfg.AppID {
		return fmt.Errorf("%w %q", errApp, v.Get("app_id"))
	}
	if v.Get("method") != method {
		return fmt.Errorf("alipaysim: method %q, want %s", v.Get("method"), method)
	}
	if v.Get("sign_type") != "RSA2" || v.Get("charset") != "utf-8" || v.Get("version") != "1.0" {
		return fmt.Errorf("alipaysim: sign_type %q, charset %q, version %q; want RSA2, utf-8, 1.0",
			v.Get("sign_type"), v.Get("charset"), v.Get("version"))
	}
	if _, err := time.ParseInLocation(layout, v.Get("timestamp"), shanghai); err != nil {
		return fmt.Errorf("alipaysim: timestamp %q is not %q", v.Get("timestamp"), layout)
	}
	sig, err := base64.StdEncoding.DecodeString(v.Get("sign"))
	if err != nil {
		return errors.New("alipaysim: sign is not base64")
	}
	sum := sha256.Sum256([]byte(content(v, "sign")))
	if err := rsa.VerifyPKCS1v15(s.cfg.AppPublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return errors.New("alipaysim: the app's sign does not verify")
	}
	return nil
}

var shanghai = time.FixedZone("Asia/Shanghai", 8*3600)

const layout = "2006-01-02 15:04:05"

// content is the signed text: non-empty parameters but skip, sorted, k=v&k=v.
func content(v url.Values, skip ...string) string {
	var keys []string
	for k := range v {
		if v.Get(k) != "" && !contains(skip, k) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys) // by name: "a" before "a1", which sorting "k=v" would not give
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + v.Get(k)
	}
	return strings.Join(parts, "&")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func sign(key *rsa.PrivateKey, b []byte) string {
	sum := sha256.Sum256(b)
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		panic(err) // only with a broken key
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// tamper raises an amount by one yuan, keeping its form.
func tamper(amount string) string {
	var yuan, fen int64
	if _, err := fmt.Sscanf(amount, "%d.%d", &yuan, &fen); err != nil {
		return amount + "1"
	}
	return fmt.Sprintf("%d.%02d", yuan+1, fen)
}
