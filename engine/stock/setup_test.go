package stock_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is an engine and its stock service; the engine runs the writer that
// makes stock durable.
type env struct {
	eng   *engine.Engine
	stock *stock.Service
	db    *store.DB
	rdb   redis.UniversalClient
	keys  lua.Keys
	clock *fakeClock
	cfg   engine.Config
}

// setupReal builds an engine on the real Redis and MariaDB, each test with
// its own database and key namespace. The writer is not started.
func setupReal(tb testing.TB, mutate ...func(*engine.Config)) *env {
	tb.Helper()
	db := storetest.MySQL(tb)
	rdb, keys := redistest.Real(tb, 16)
	return newEnv(tb, rdb, keys, db, mutate...)
}

// setupUnit builds an engine on miniredis and SQLite.
func setupUnit(tb testing.TB, mutate ...func(*engine.Config)) *env {
	tb.Helper()
	_, rdb := redistest.Mini(tb)
	return newEnv(tb, rdb, lua.NewKeys("grab", 4), storetest.SQLite(tb), mutate...)
}

func newEnv(tb testing.TB, rdb redis.UniversalClient, keys lua.Keys, db *store.DB, mutate ...func(*engine.Config)) *env {
	cfg := engine.DefaultConfig()
	cfg.Keys = keys
	cfg.Writer.Block = 50 * time.Millisecond
	cfg.Writer.MonitorEvery = 50 * time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	clock := &fakeClock{now: time.Now().UTC().Truncate(time.Second)}
	eng := engine.New(engine.Deps{Redis: rdb, DB: db, Clock: clock, Log: quietLog()}, cfg)
	return &env{eng: eng, stock: eng.Stock(), db: db, rdb: rdb, keys: keys, clock: clock, cfg: cfg}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// another builds a second engine on the same Redis, store, keys and clock,
// as a second process would be; deps and cfg may be adjusted for it.
func (e *env) another(mutateDeps func(*engine.Deps), mutate ...func(*engine.Config)) *env {
	cfg := e.cfg
	for _, m := range mutate {
		m(&cfg)
	}
	d := engine.Deps{Redis: e.rdb, DB: e.db, Clock: e.clock, Log: quietLog()}
	if mutateDeps != nil {
		mutateDeps(&d)
	}
	c := *e
	c.eng, c.cfg = engine.New(d, cfg), cfg
	c.stock = c.eng.Stock()
	return &c
}

// startWriter runs the writer until the test ends.
func (e *env) startWriter(tb testing.TB) {
	stop := e.runWriter()
	tb.Cleanup(stop)
}

// runWriter runs the writer until the returned stop is called; stop waits
// for it to drain and return.
func (e *env) runWriter() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.eng.RunWriter(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric reads a counter or gauge from reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
