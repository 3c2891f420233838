package paysim_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/paysim"
)

// A simulator that persists its trades keeps them across a restart, as a
// real provider does when grabd restarts: outcomes answer the same, and a
// trade still pending settles after the restart in the demo mode.
func TestSimKeepsItsTradesAcrossARestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "paysim.json")
	var mu sync.Mutex
	var notified []string
	deliver := func(_ context.Context, ch string, body []byte, _ string) error {
		mu.Lock()
		defer mu.Unlock()
		notified = append(notified, string(body))
		return nil
	}

	first := paysim.New([]byte("secret"), deliver, paysim.Faults{})
	if err := first.Persist(path); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"T-paid", "T-failed", "T-pending"} {
		if err := first.CreateTrade(ctx, channel.Trade{TradeNo: no, Channel: channel.Alipay, Amount: 500}); err != nil {
			t.Fatal(err)
		}
	}
	if err := first.Complete(ctx, "T-paid", true); err != nil {
		t.Fatal(err)
	}
	if err := first.Complete(ctx, "T-failed", false); err != nil {
		t.Fatal(err)
	}

	second := paysim.New([]byte("secret"), deliver, paysim.Faults{})
	if err := second.Persist(path); err != nil {
		t.Fatal(err)
	}
	for no, want := range map[string]channel.TradeOutcome{"T-paid": channel.TradeSucceeded, "T-failed": channel.TradeFailed, "T-pending": channel.TradePending} {
		r, err := second.QueryTrade(ctx, no)
		if err != nil || r.Outcome != want || r.Amount != 500 {
			t.Fatalf("%s after the restart: %+v, %v; want outcome %v of 500 fen", no, r, err, want)
		}
	}
	if _, err := second.QueryTrade(ctx, "T-never"); !errors.Is(err, channel.ErrTradeUnknown) {
		t.Fatalf("a trade never made: %v, want ErrTradeUnknown", err)
	}

	mu.Lock()
	before := len(notified)
	mu.Unlock()
	second.SettleAfter(ctx, time.Millisecond)
	second.Wait()
	if r, _ := second.QueryTrade(ctx, "T-pending"); r.Outcome != channel.TradeSucceeded {
		t.Fatalf("the pending trade after the demo settle: %v, want succeeded", r.Outcome)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notified) != before+1 {
		t.Fatalf("%d notifications after the restart, want 1 for the pending trade", len(notified)-before)
	}
}
