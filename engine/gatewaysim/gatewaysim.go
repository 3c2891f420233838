// Package gatewaysim is a company payment gateway simulator with fault
// injection. It serves the protocol of engine/gateway over HTTP (signed
// requests, 401 on a bad signature), keeps the trades it is given, ends
// them when told (or by itself after a delay), and notifies each trade's
// notify_url in grabd's format, signed, resending until it is answered 200
// — while the faults lose, duplicate, delay or reorder the notifications.
//
// Persist keeps the trades in a file, so that a simulator started again on
// it answers for them and notifies them as before; with
// Options.AutoComplete it is the payer too, ending every trade by itself,
// those it loads still pending included (grabd's embedded mode).
package gatewaysim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/gateway"
	"github.com/grab-engine/grab/engine/internal/simkit"
)

// maxBody bounds a request body; real ones are a few hundred bytes.
const maxBody = 64 << 10

// DefaultResend is how long the gateway waits before each resend of a
// notification that was not answered 200, like the channels behind it
// (Alipay's 4m, 10m, 10m, 1h, 2h, 6h, 15h, shortened): 8 sends in all.
var DefaultResend = []time.Duration{15 * time.Second, time.Minute, 4 * time.Minute, 10 * time.Minute,
	time.Hour, 2 * time.Hour, 6 * time.Hour}

// Faults shape how the simulator answers and notifies. The zero value
// answers every request and sends every notification at once, correctly.
type Faults struct {
	ErrorRate     float64       // chance a request is answered 503 before anything is done
	LoseRate      float64       // chance a trade's outcome is never notified at all
	DuplicateRate float64       // chance a notification that got through is sent once more
	Delay         time.Duration // each first send waits up to this long (random)
	// Hold keeps notifications until Flush, which sends them shuffled.
	Hold bool
	// WrongKey signs notifications with another key, as a misconfigured
	// gateway would: grabd refuses them and they are resent in vain.
	WrongKey bool
}

// Options configure a simulator.
type Options struct {
	Faults Faults
	// Resend is the wait before each resend; nil means DefaultResend. Tests
	// compress it (e.g. 10 ms steps).
	Resend []time.Duration
	// AutoComplete, when positive, ends every trade by itself that long
	// after it is created — or, for a pending trade loaded by Persist, that
	// long after it is loaded: a success, or a failure with AutoFail. Close
	// ends the waiting.
	AutoComplete time.Duration
	AutoFail     bool
	// Seed drives the fault draws.
	Seed uint64
	// HTTP sends the notifications; nil means a client with a 5 s timeout.
	HTTP *http.Client
}

// Record is what the gateway holds for one trade, with its counters.
type Record struct {
	channel.Trade
	NotifyURL   string
	Status      string // gateway.StatusPending, StatusSuccess, StatusFailed
	ProviderTxn string
	Creates     int // create requests that reached the trade (the first and its repeats)
	Sends       int // notification sends, resends and duplicates included
	Acked       int // sends answered 200
}

// Sim is a simulated gateway; it is an http.Handler.
type Sim struct {
	secret []byte
	opts   Options
	mux    *http.ServeMux
	client *http.Client
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu           sync.Mutex
	faults       Faults
	rand         *rand.Rand
	trades       map[string]*Record
	held         []notice
	lastTxn      int
	unauthorized int
	gaveUp       int
	// file, when set, keeps the trades across restarts (Persist).
	file string
}

// savedTrade is a trade as Persist keeps it (its counters are not kept).
type savedTrade struct {
	channel.Trade
	NotifyURL   string
	Status      string
	ProviderTxn string
}

// saved is the Persist file: the trades and the sequence provider
// transactions are drawn from, so that a restart does not draw them again.
type saved struct {
	LastTxn int
	Trades  []savedTrade
}

// Persist keeps the simulator's trades in the JSON file at path, as a
// gateway keeps them while grabd restarts: the trades already there are
// loaded (and queried, ended and notified as before; those still pending
// are ended by AutoComplete that long after), and every change to a trade
// — created, ended, forgotten, its amount set — is written (to a new file
// renamed over the old one, mode 0600). The counters of Record start again
// from zero. Call it before any trade is created. A file that cannot be
// read or decoded is an error naming it, and the simulator then keeps no
// file.
func (s *Sim) Persist(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f saved
	if _, err := simkit.Load(path, &f); err != nil {
		return fmt.Errorf("gatewaysim: %w", err)
	}
	s.file = path
	s.lastTxn = max(s.lastTxn, f.LastTxn)
	for _, t := range f.Trades {
		s.trades[t.TradeNo] = &Record{Trade: t.Trade, NotifyURL: t.NotifyURL, Status: t.Status, ProviderTxn: t.ProviderTxn}
		if t.Status == gateway.StatusPending {
			s.completeLater(t.TradeNo)
		}
	}
	return nil
}

// save writes the trades to the Persist file, if any; s.mu held.
func (s *Sim) save() error {
	if s.file == "" {
		return nil
	}
	f := saved{LastTxn: s.lastTxn, Trades: make([]savedTrade, 0, len(s.trades))}
	for _, r := range s.trades {
		f.Trades = append(f.Trades, savedTrade{Trade: r.Trade, NotifyURL: r.NotifyURL, Status: r.Status, ProviderTxn: r.ProviderTxn})
	}
	if err := simkit.Save(s.file, f); err != nil {
		return fmt.Errorf("gatewaysim: %w", err)
	}
	return nil
}

type notice struct {
	url  string
	no   string
	body []byte
}

// New returns a simulator that checks and makes signatures with secret.
// Close stops its notifications.
func New(secret []byte, opts Options) *Sim {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Sim{secret: secret, opts: opts, mux: http.NewServeMux(), client: opts.HTTP, ctx: ctx, cancel: cancel,
		faults: opts.Faults, rand: rand.New(rand.NewPCG(opts.Seed, 2)), trades: map[string]*Record{}}
	if s.client == nil {
		s.client = &http.Client{Timeout: 5 * time.Second}
	}
	if s.opts.Resend == nil {
		s.opts.Resend = DefaultResend
	}
	s.mux.HandleFunc("POST "+gateway.PathTrades, s.serve(s.create))
	s.mux.HandleFunc("GET "+gateway.PathTrades+"/{trade_no}", s.serve(s.query))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close stops the automatic completions (AutoComplete) and the
// notifications in flight, and waits for them.
func (s *Sim) Close() {
	s.cancel()
	s.wg.Wait()
}

// SetFaults changes the faults from now on.
func (s *Sim) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Trade is what the gateway holds for a trade.
func (s *Sim) Trade(tradeNo string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.trades[tradeNo]
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// Unauthorized is how many requests were refused for their signature.
func (s *Sim) Unauthorized() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unauthorized
}

// GaveUp is how many notifications were never answered 200 through the
// whole resend schedule.
func (s *Sim) GaveUp() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gaveUp
}

// Forget drops a trade, as a gateway does past its retention: a query then
// answers 404 not_found (after a restart too, with Persist).
func (s *Sim) Forget(tradeNo string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.trades, tradeNo)
	_ = s.save() // a trade the file still holds comes back after a restart: as before Forget
}

// SetAmount makes the gateway hold a trade for another amount, as a broken
// one would: its answers and notifications state fen from now on.
func (s *Sim) SetAmount(tradeNo string, fen int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.trades[tradeNo]
	if !ok {
		return fmt.Errorf("gatewaysim: no trade %s", tradeNo)
	}
	before := r.Amount
	r.Amount = fen
	if err := s.save(); err != nil {
		r.Amount = before
		return err
	}
	return nil
}

// Complete ends a trade as the payer's bank decided and notifies it through
// the faults; a trade already ended keeps its outcome and notifies it again.
// It returns at once; Wait waits for the sends.
func (s *Sim) Complete(tradeNo string, success bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.trades[tradeNo]
	if !ok {
		return fmt.Errorf("gatewaysim: no trade %s", tradeNo)
	}
	if r.Status == gateway.StatusPending {
		r.Status = gateway.StatusFailed
		if success {
			s.lastTxn++
			r.Status, r.ProviderTxn = gateway.StatusSuccess, fmt.Sprintf("GW%010d", s.lastTxn)
		}
		if err := s.save(); err != nil {
			r.Status, r.ProviderTxn = gateway.StatusPending, ""
			return err
		}
	}
	if s.chance(s.faults.LoseRate) {
		return nil
	}
	n := notice{url: r.NotifyURL, no: r.TradeNo, body: s.body(r)}
	if s.faults.Hold {
		s.held = append(s.held, n)
		return nil
	}
	var wait time.Duration
	if s.faults.Delay > 0 {
		wait = time.Duration(s.rand.Int64N(int64(s.faults.Delay)))
	}
	s.deliverLater(n, wait)
	return nil
}

// Flush sends every held notification, in a random order, each first send
// before the next; those not answered 200 are resent on the schedule.
func (s *Sim) Flush() {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.rand.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	s.mu.Unlock()
	for _, n := range held {
		if !s.send(n) {
			s.mu.Lock()
			s.resendLater(n)
			s.mu.Unlock()
		}
	}
}

// Wait waits until no notification is in flight or waiting to be resent.
func (s *Sim) Wait() { s.wg.Wait() }

// deliverLater sends n after wait, then resends it on the schedule until it
// is answered 200; s.mu held.
func (s *Sim) deliverLater(n notice, wait time.Duration) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !s.sleep(wait) {
			return
		}
		if s.send(n) {
			return
		}
		s.mu.Lock()
		s.resendLater(n)
		s.mu.Unlock()
	}()
}

// resendLater resends n on the schedule until it is answered 200; s.mu held.
func (s *Sim) resendLater(n notice) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, wait := range s.opts.Resend {
			if !s.sleep(wait) {
				return
			}
			if s.send(n) {
				return
			}
		}
		s.mu.Lock()
		s.gaveUp++
		s.mu.Unlock()
	}()
}

func (s *Sim) sleep(d time.Duration) bool {
	if d <= 0 {
		return s.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// send posts n once (twice when the duplicate fault draws) and reports
// whether it was answered 200.
func (s *Sim) send(n notice) bool {
	ok := s.post(n)
	s.mu.Lock()
	dup := ok && s.chance(s.faults.DuplicateRate)
	s.mu.Unlock()
	if dup {
		s.post(n)
	}
	return ok
}

func (s *Sim) post(n notice) bool {
	s.mu.Lock()
	key := s.secret
	if s.faults.WrongKey {
		key = append([]byte("wrong-"), s.secret...)
	}
	if r, found := s.trades[n.no]; found {
		r.Sends++
	}
	s.mu.Unlock()
	req, err := http.NewRequestWithContext(s.ctx, http.MethodPost, n.url, bytes.NewReader(n.body))
	if err != nil {
		return false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(gateway.HeaderSignature, gateway.Sign(key, n.body))
	resp, err := s.client.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxBody))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	s.mu.Lock()
	if r, found := s.trades[n.no]; found {
		r.Acked++
	}
	s.mu.Unlock()
	return true
}

// body is a trade's notification; s.mu held.
func (s *Sim) body(r *Record) []byte {
	b, _ := json.Marshal(gateway.Notification{TradeNo: r.TradeNo, Amount: money.Format(r.Amount),
		Result: r.Status, ProviderTxn: r.ProviderTxn})
	return b
}

// Notification is the body and signature the gateway sends for a trade as
// it stands (tests replay or tamper with it).
func (s *Sim) Notification(tradeNo string) (body []byte, signature string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.trades[tradeNo]
	if !ok || r.Status == gateway.StatusPending {
		return nil, "", fmt.Errorf("gatewaysim: no ended trade %s", tradeNo)
	}
	body = s.body(r)
	return body, gateway.Sign(s.secret, body), nil
}

// chance draws only for a rate in use, so zero rates leave the sequence alone; s.mu held.
func (s *Sim) chance(rate float64) bool { return rate > 0 && s.rand.Float64() < rate }

// handler answers one verified request with a status and a JSON body.
type handler func(r *http.Request, body []byte) (int, any)

// serve wraps h with the signature check — of the body for a POST, of the
// escaped path for a GET — and the error fault.
func (s *Sim) serve(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, gateway.ErrorReply{Error: gateway.CodeMalformed, Detail: err.Error()})
			return
		}
		signed := body
		if r.Method == http.MethodGet {
			signed = []byte(r.URL.EscapedPath())
		}
		if !gateway.Verify(s.secret, signed, r.Header.Get(gateway.HeaderSignature)) {
			s.mu.Lock()
			s.unauthorized++
			s.mu.Unlock()
			writeJSON(w, http.StatusUnauthorized, gateway.ErrorReply{Error: gateway.CodeUnauthorized})
			return
		}
		s.mu.Lock()
		fail := s.chance(s.faults.ErrorRate)
		s.mu.Unlock()
		if fail {
			writeJSON(w, http.StatusServiceUnavailable, gateway.ErrorReply{Error: gateway.CodeUnavailable})
			return
		}
		status, reply := h(r, body)
		writeJSON(w, status, reply)
	}
}

func (s *Sim) create(_ *http.Request, body []byte) (int, any) {
	var req gateway.CreateRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&req); err != nil || dec.More() {
		return http.StatusBadRequest, gateway.ErrorReply{Error: gateway.CodeMalformed, Detail: "body is not one JSON object"}
	}
	t, err := req.Trade()
	if err != nil {
		return http.StatusBadRequest, gateway.ErrorReply{Error: gateway.CodeMalformed, Detail: err.Error()}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.trades[t.TradeNo]
	switch {
	case !ok:
		r = &Record{Trade: t, NotifyURL: req.NotifyURL, Status: gateway.StatusPending}
		s.trades[t.TradeNo] = r
		if err := s.save(); err != nil {
			delete(s.trades, t.TradeNo)
			return http.StatusServiceUnavailable, gateway.ErrorReply{Error: gateway.CodeUnavailable, Detail: "the trade could not be kept"}
		}
		s.completeLater(t.TradeNo)
	case r.Channel != t.Channel || r.Amount != t.Amount:
		return http.StatusConflict, gateway.ErrorReply{Error: gateway.CodeConflict}
	}
	r.Creates++
	return http.StatusOK, reply(r)
}

// completeLater ends a pending trade by itself after AutoComplete, if set;
// s.mu held.
func (s *Sim) completeLater(tradeNo string) {
	if s.opts.AutoComplete > 0 {
		simkit.After(s.ctx, &s.wg, s.opts.AutoComplete, func() {
			_ = s.Complete(tradeNo, !s.opts.AutoFail) // a forgotten trade has nothing to end
		})
	}
}

func (s *Sim) query(r *http.Request, _ []byte) (int, any) {
	no := r.PathValue("trade_no")
	if !gateway.ValidTradeNo(no) {
		return http.StatusBadRequest, gateway.ErrorReply{Error: gateway.CodeMalformed, Detail: "bad trade_no"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.trades[no]
	if !ok {
		return http.StatusNotFound, gateway.ErrorReply{Error: gateway.CodeNotFound}
	}
	return http.StatusOK, reply(rec)
}

func reply(r *Record) gateway.TradeReply {
	return gateway.TradeReply{TradeNo: r.TradeNo, Status: r.Status, Amount: money.Format(r.Amount), ProviderTxn: r.ProviderTxn}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
