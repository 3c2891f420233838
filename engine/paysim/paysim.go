// Package paysim is a payment provider simulator with fault injection: it
// takes trades like a real provider, lets a test (or the bench) decide how
// each one ends, and sends signed notifications that can be delayed,
// duplicated, reordered, lost, or report failure.
package paysim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"github.com/grab-engine/grab/engine/money"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/gateway"
)

// Deliver hands a notification to grab: in a server, a POST to
// /v1/payments/notify/{channel}; in a test, a direct call.
type Deliver func(ctx context.Context, ch string, body []byte, signature string) error

// Faults shape how notifications travel. The zero value delivers each one
// once, at once, in order.
type Faults struct {
	LoseRate      float64       // chance a notification is never sent
	DuplicateRate float64       // chance a notification is sent twice
	Delay         time.Duration // each send waits up to this long (random)
	Hold          bool          // keep notifications until Flush, which sends them shuffled
}

// Sim is a simulated provider. It implements channel.Provider.
type Sim struct {
	secret  []byte
	deliver Deliver
	faults  Faults

	mu      sync.Mutex
	trades  map[string]*trade
	held    []notice
	sent    int
	rand    *rand.Rand
	pending sync.WaitGroup
	// settleAfter, when set, makes every new trade succeed on its own that
	// long after it is created, as if the payer paid: grabd's demo mode.
	settleAfter time.Duration
	settleCtx   context.Context
	// file, when set, keeps the trades across restarts (Persist).
	file string
}

// SettleAfter makes every trade created from now on, and every pending one
// it already keeps (Persist), succeed by itself after d, notifying within ctx.
func (s *Sim) SettleAfter(ctx context.Context, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleAfter, s.settleCtx = d, ctx
	for no, t := range s.trades {
		if t.outcome == channel.TradePending {
			s.settleLater(no)
		}
	}
}

// settleLater completes a trade successfully after settleAfter; s.mu held.
func (s *Sim) settleLater(tradeNo string) {
	d, ctx := s.settleAfter, s.settleCtx
	if d <= 0 {
		return
	}
	s.pending.Add(1)
	go func() {
		defer s.pending.Done()
		select {
		case <-ctx.Done():
		case <-time.After(d):
			_ = s.Complete(ctx, tradeNo, true)
		}
	}()
}

// savedTrade is a trade as Persist keeps it.
type savedTrade struct {
	channel.Trade
	Outcome channel.TradeOutcome
	Txn     string
}

// Persist keeps the simulator's trades in the JSON file at path, as a real
// provider keeps its trades when grabd restarts: the trades already there
// are loaded, and every change is written (to a new file, renamed over the
// old one). Call it before any trade is made.
func (s *Sim) Persist(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.file = path
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var saved []savedTrade
	if err := json.Unmarshal(data, &saved); err != nil {
		return fmt.Errorf("paysim: %s: %w", path, err)
	}
	for _, t := range saved {
		s.trades[t.TradeNo] = &trade{Trade: t.Trade, outcome: t.Outcome, txn: t.Txn}
	}
	return nil
}

// save writes the trades to the Persist file, if any; s.mu held.
func (s *Sim) save() error {
	if s.file == "" {
		return nil
	}
	saved := make([]savedTrade, 0, len(s.trades))
	for _, t := range s.trades {
		saved = append(saved, savedTrade{Trade: t.Trade, Outcome: t.outcome, Txn: t.txn})
	}
	data, err := json.Marshal(saved)
	if err != nil {
		return err
	}
	tmp := s.file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.file)
}

type trade struct {
	channel.Trade
	outcome channel.TradeOutcome
	txn     string
}

type notice struct {
	channel string
	body    []byte
}

// New returns a simulator that signs with secret and delivers through d.
func New(secret []byte, d Deliver, f Faults) *Sim {
	return &Sim{secret: secret, deliver: d, faults: f, trades: map[string]*trade{},
		rand: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))}
}

// CreateTrade implements channel.Provider; the same trade again is a no-op.
func (s *Sim) CreateTrade(_ context.Context, t channel.Trade) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.trades[t.TradeNo]; ok {
		return nil
	}
	s.trades[t.TradeNo] = &trade{Trade: t}
	if err := s.save(); err != nil {
		delete(s.trades, t.TradeNo)
		return err
	}
	s.settleLater(t.TradeNo)
	return nil
}

// QueryTrade implements channel.Provider.
func (s *Sim) QueryTrade(_ context.Context, tradeNo string) (channel.TradeResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.trades[tradeNo]
	if !ok {
		return channel.TradeResult{}, fmt.Errorf("%w: paysim: no trade %s", channel.ErrTradeUnknown, tradeNo)
	}
	return channel.TradeResult{Outcome: t.outcome, Amount: t.Amount, ProviderTxn: t.txn}, nil
}

// Forget drops a trade, as a provider does past its retention (or this
// simulator on a restart): QueryTrade then answers channel.ErrTradeUnknown.
func (s *Sim) Forget(tradeNo string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.trades, tradeNo)
	_ = s.save() // a trade the file still holds comes back after a restart: as before Forget
}

// Complete ends a trade the way the payer's bank decided, and notifies grab
// through the faults. It returns without waiting for delayed sends; Wait does.
func (s *Sim) Complete(ctx context.Context, tradeNo string, success bool) error {
	s.mu.Lock()
	t, ok := s.trades[tradeNo]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("paysim: no trade %s", tradeNo)
	}
	if t.outcome == channel.TradePending {
		t.outcome = channel.TradeFailed
		if success {
			t.outcome = channel.TradeSucceeded
			t.txn = "sim-" + tradeNo
		}
		if err := s.save(); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	body := s.body(t)
	copies := 1
	if s.rand.Float64() < s.faults.LoseRate {
		copies = 0
	} else if s.rand.Float64() < s.faults.DuplicateRate {
		copies = 2
	}
	if s.faults.Hold {
		for range copies {
			s.held = append(s.held, notice{t.Channel, body})
		}
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	for range copies {
		s.send(ctx, t.Channel, body)
	}
	return nil
}

// Notify sends a notification of the trade's current outcome once more, as
// providers resend until acknowledged.
func (s *Sim) Notify(ctx context.Context, tradeNo string) error {
	s.mu.Lock()
	t, ok := s.trades[tradeNo]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("paysim: no trade %s", tradeNo)
	}
	if t.outcome == channel.TradePending {
		s.mu.Unlock()
		return fmt.Errorf("paysim: trade %s has no outcome to notify yet", tradeNo)
	}
	body := s.body(t)
	s.mu.Unlock()
	return s.deliver(ctx, t.Channel, body, s.Sign(body))
}

// Flush sends every held notification in a random order.
func (s *Sim) Flush(ctx context.Context) {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.rand.Shuffle(len(held), func(i, j int) { held[i], held[j] = held[j], held[i] })
	s.mu.Unlock()
	for _, n := range held {
		s.send(ctx, n.channel, n.body)
	}
}

// Wait waits for delayed sends to finish.
func (s *Sim) Wait() { s.pending.Wait() }

// Sent is how many notifications were delivered.
func (s *Sim) Sent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// Sign is the X-Grab-Signature of a body: lowercase hex HMAC-SHA256.
func (s *Sim) Sign(body []byte) string { return gateway.Sign(s.secret, body) }

func (s *Sim) body(t *trade) []byte {
	result := "failed"
	if t.outcome == channel.TradeSucceeded {
		result = "success"
	}
	b, _ := json.Marshal(map[string]string{"trade_no": t.TradeNo, "amount": money.Format(t.Amount),
		"result": result, "provider_txn": t.txn})
	return b
}

func (s *Sim) send(ctx context.Context, ch string, body []byte) {
	deliver := func() {
		// A provider keeps sending until it is acknowledged; one retry is enough here.
		if s.deliver(ctx, ch, body, s.Sign(body)) != nil {
			s.deliver(ctx, ch, body, s.Sign(body))
		}
		s.mu.Lock()
		s.sent++
		s.mu.Unlock()
	}
	if s.faults.Delay <= 0 {
		deliver()
		return
	}
	s.mu.Lock()
	d := time.Duration(s.rand.Int64N(int64(s.faults.Delay)))
	s.mu.Unlock()
	s.pending.Add(1)
	go func() {
		defer s.pending.Done()
		time.Sleep(d)
		deliver()
	}()
}
