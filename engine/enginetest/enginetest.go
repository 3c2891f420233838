// Package enginetest holds what tests of the engine and its domain packages
// share: an Env (grab's domains on a test's own Redis namespace and
// database), a settable clock, a quiet logger, waiting for a condition, and
// reading a metric.
package enginetest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Clock is a settable clock (engine.Clock, stock.Clock).
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock is a clock at now.
func NewClock(now time.Time) *Clock { return &Clock{now: now} }

// Now implements the engine's Clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Add moves the clock by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// QuietLog discards everything.
func QuietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// WaitFor polls cond until it holds, failing the test after 30 s; it stops
// at once when the test has failed (a cond that reports with t.Error).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if t.Failed() {
			t.FailNow()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitOwned waits until db holds owners for at least n shares of the
// packet: the writer has made n of its grabs durable.
func WaitOwned(t testing.TB, db *store.DB, packetID int64, n int) {
	t.Helper()
	WaitFor(t, fmt.Sprintf("the writer to make %d grabs of packet %d durable", n, packetID), func() bool {
		shares, err := db.Shares(context.Background(), packetID)
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, s := range shares {
			if s.UserID.Valid {
				owned++
			}
		}
		return owned >= n
	})
}

// Metric reads a counter or gauge (its first series) from reg.
func Metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, ok := metric(t, reg, name, func(*dto.Metric) bool { return true })
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	return v
}

// MetricWith reads the counter or gauge name{label="value"} from reg; 0
// when that series has not been written.
func MetricWith(t testing.TB, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	v, _ := metric(t, reg, name, func(m *dto.Metric) bool {
		for _, l := range m.GetLabel() {
			if l.GetName() == label && l.GetValue() == value {
				return true
			}
		}
		return false
	})
	return v
}

// metric is the first series of name in reg that match accepts.
func metric(t testing.TB, reg *prometheus.Registry, name string, match func(*dto.Metric) bool) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !match(m) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue(), true
			}
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// Config is the engine's production configuration on keys, with a writer
// that polls every 50 ms (tests wait for it) and campaign payouts in
// PayoutSync mode (a campaign grab's answer is its payout; tests of
// PayoutAsync set it with mutate), adjusted by mutate.
func Config(keys lua.Keys, mutate ...func(*engine.Config)) engine.Config {
	cfg := engine.DefaultConfig()
	cfg.Keys = keys
	cfg.PayoutMode = engine.PayoutSync
	cfg.Writer.Block = 50 * time.Millisecond
	cfg.Writer.MonitorEvery = 50 * time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	return cfg
}

// StartClock is a clock at the real time, to the second: Redis expires a
// packet's keys at an absolute time taken from the engine's clock, so a
// clock far behind the server's would make a real Redis drop the keys as
// soon as they load.
func StartClock() *Clock { return NewClock(time.Now().UTC().Truncate(time.Second)) }

// RunWriter runs eng's writer until the returned stop is called; stop waits
// for it to drain and return.
func RunWriter(eng *engine.Engine) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.RunWriter(ctx); close(done) }()
	return func() { cancel(); <-done }
}
