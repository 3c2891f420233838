package engine_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
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

type env struct {
	eng   *engine.Engine
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
	clock := &fakeClock{now: time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)}
	eng := engine.New(engine.Deps{Redis: rdb, DB: db, Clock: clock,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, cfg)
	return &env{eng: eng, db: db, rdb: rdb, keys: keys, clock: clock, cfg: cfg}
}

// startWriter runs the writer until the test ends.
func (e *env) startWriter(tb testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.eng.RunWriter(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
}

// drain waits until the store has every grab of the packet that Redis accepted.
func (e *env) drain(tb testing.TB, packetID int64, want int) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		shares, err := e.db.Shares(context.Background(), packetID)
		if err != nil {
			tb.Fatal(err)
		}
		owned := 0
		for _, s := range shares {
			if s.UserID.Valid {
				owned++
			}
		}
		if owned >= want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("writer did not make %d grabs of packet %d durable in time", want, packetID)
}

// groupPacket funds a sender, fills a group with users 1..members, sends a
// packet and pays it by balance.
func (e *env) groupPacket(tb testing.TB, kind string, members, count int, amount int64) engine.Packet {
	tb.Helper()
	ctx := context.Background()
	users := make([]int64, members)
	for i := range users {
		users[i] = int64(i + 1)
	}
	if _, err := e.eng.SetGroupMembers(ctx, 7, users); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.eng.Deposit(ctx, 1, 10_000_000, "seed-1"); err != nil {
		tb.Fatal(err)
	}
	p, err := e.eng.CreatePacket(ctx, engine.NewPacket{SenderID: 1, Kind: kind, GroupID: 7, Count: count, Amount: amount})
	if err != nil {
		tb.Fatal(err)
	}
	if p, err = e.eng.PayByBalance(ctx, p.ID, 1); err != nil {
		tb.Fatal(err)
	}
	return p
}
