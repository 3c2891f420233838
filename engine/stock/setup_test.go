package stock_test

import (
	"log/slog"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

type fakeClock = enginetest.Clock

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
	cfg := enginetest.Config(keys, mutate...)
	clock := enginetest.StartClock()
	eng := engine.New(engine.Deps{Redis: rdb, DB: db, Clock: clock, Log: quietLog()}, cfg)
	return &env{eng: eng, stock: stock.New(eng), db: db, rdb: rdb, keys: keys, clock: clock, cfg: cfg}
}

func quietLog() *slog.Logger { return enginetest.QuietLog() }

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
	c.stock = stock.New(c.eng)
	return &c
}

// startWriter runs the writer until the test ends.
func (e *env) startWriter(tb testing.TB) {
	stop := e.runWriter()
	tb.Cleanup(stop)
}

// runWriter runs the writer until the returned stop is called; stop waits
// for it to drain and return.
func (e *env) runWriter() (stop func()) { return enginetest.RunWriter(e.eng) }

// metric reads a counter or gauge from reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	return enginetest.Metric(t, reg, name)
}
