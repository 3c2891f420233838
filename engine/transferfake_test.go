package engine_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/grab-engine/grab/engine"
)

// fakeTransfer is an idempotent transfer service with injectable faults. It
// counts, per out-trade-no, how often it was applied (moved money) and how
// often it was asked to transfer: a correct engine makes applications 1 for
// every award, whatever the faults.
type fakeTransfer struct {
	mu       sync.Mutex
	rand     *rand.Rand
	failRate float64       // a call fails before it reaches the ledger
	loseRate float64       // a transfer is applied, then its reply is lost
	latency  time.Duration // every call takes this long
	ledger   map[string]*fakeApplied
	calls    map[string]int // Transfer calls per number
	queries  int
}

type fakeApplied struct {
	user, amount int64
	applied      int // money movements: must never exceed 1
}

func newFakeTransfer(failRate, loseRate float64) *fakeTransfer {
	return &fakeTransfer{rand: rand.New(rand.NewPCG(1, 2)), failRate: failRate, loseRate: loseRate,
		ledger: map[string]*fakeApplied{}, calls: map[string]int{}}
}

var errFakeDown = errors.New("fake transfer: service unavailable")

func (f *fakeTransfer) roll(rate float64) bool { return rate > 0 && f.rand.Float64() < rate }

func (f *fakeTransfer) wait(ctx context.Context) error {
	if f.latency <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(f.latency):
		return nil
	}
}

// Transfer implements engine.TransferService.
func (f *fakeTransfer) Transfer(ctx context.Context, t engine.Transfer) (engine.TransferResult, error) {
	if err := f.wait(ctx); err != nil {
		return engine.TransferResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[t.OutTradeNo]++
	if f.roll(f.failRate) {
		return engine.TransferResult{}, errFakeDown
	}
	a, dup := f.ledger[t.OutTradeNo]
	switch {
	case !dup:
		a = &fakeApplied{user: t.UserID, amount: t.Amount, applied: 1}
		f.ledger[t.OutTradeNo] = a
	case a.user != t.UserID || a.amount != t.Amount:
		return engine.TransferResult{}, engine.ErrTransferConflict
	}
	if f.roll(f.loseRate) {
		return engine.TransferResult{}, fmt.Errorf("fake transfer: reply lost: %w", context.DeadlineExceeded)
	}
	return engine.TransferResult{Outcome: engine.TransferSucceeded, TransferID: "T-" + t.OutTradeNo, Amount: a.amount, Duplicate: dup}, nil
}

// QueryTransfer implements engine.TransferService.
func (f *fakeTransfer) QueryTransfer(ctx context.Context, no string) (engine.TransferResult, error) {
	if err := f.wait(ctx); err != nil {
		return engine.TransferResult{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	if f.roll(f.failRate) {
		return engine.TransferResult{}, errFakeDown
	}
	a, ok := f.ledger[no]
	if !ok {
		return engine.TransferResult{Outcome: engine.TransferUnknown}, nil
	}
	return engine.TransferResult{Outcome: engine.TransferSucceeded, TransferID: "T-" + no, Amount: a.amount, Duplicate: true}, nil
}

func (f *fakeTransfer) setFaults(failRate, loseRate float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failRate, f.loseRate = failRate, loseRate
}

// applied is what the service applied: per number, the amount, and how
// often it moved money.
func (f *fakeTransfer) applied() map[string]appliedTransfer {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]appliedTransfer, len(f.ledger))
	for no, a := range f.ledger {
		out[no] = appliedTransfer{user: a.user, amount: a.amount, times: a.applied}
	}
	return out
}

func (f *fakeTransfer) transferCalls(no string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[no]
}

type appliedTransfer struct {
	user, amount int64
	times        int
}
