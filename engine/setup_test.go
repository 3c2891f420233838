package engine_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

type fakeClock = enginetest.Clock

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
	cfg := enginetest.Config(keys, mutate...)
	clock := enginetest.StartClock()
	eng := engine.New(engine.Deps{Redis: rdb, DB: db, Clock: clock, Log: quietLog()}, cfg)
	return &env{eng: eng, db: db, rdb: rdb, keys: keys, clock: clock, cfg: cfg}
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

// drain waits until the store has every grab of the packet that Redis accepted.
func (e *env) drain(tb testing.TB, packetID int64, want int) {
	tb.Helper()
	enginetest.WaitFor(tb, fmt.Sprintf("the writer to make %d grabs of packet %d durable", want, packetID), func() bool {
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
		return owned >= want
	})
}

// sendPacket funds sender with deposit (ref "seed-<sender>"), makes users
// 1..members and the sender the members of group 7, and sends and pays a packet.
func (e *env) sendPacket(tb testing.TB, sender int64, kind string, members, count int, amount, deposit int64) engine.Packet {
	tb.Helper()
	ctx := context.Background()
	users := []int64{sender}
	for u := int64(1); u <= int64(members); u++ {
		users = append(users, u)
	}
	if _, err := e.eng.SetGroupMembers(ctx, 7, users); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.eng.Deposit(ctx, sender, deposit, fmt.Sprintf("seed-%d", sender)); err != nil {
		tb.Fatal(err)
	}
	p, err := e.eng.CreatePacket(ctx, engine.NewPacket{SenderID: sender, Kind: kind, GroupID: 7, Count: count, Amount: amount})
	if err != nil {
		tb.Fatal(err)
	}
	if p, err = e.eng.PayByBalance(ctx, p.ID, sender); err != nil {
		tb.Fatal(err)
	}
	return p
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
