package enginetest

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/packet"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// Env is an engine and its domains on a store, a Redis, a key namespace and
// a fake clock of the test's own. The writer is not started.
type Env struct {
	*grab.Grab
	DB    *store.DB
	Redis redis.UniversalClient
	Keys  lua.Keys
	Clock *Clock
	Cfg   engine.Config
}

// Real builds an Env on the real Redis and MariaDB, each test with its own
// database and key namespace.
func Real(tb testing.TB, mutate ...func(*engine.Config)) *Env {
	tb.Helper()
	db := storetest.MySQL(tb)
	rdb, keys := redistest.Real(tb, 16)
	return NewEnv(tb, rdb, keys, db, mutate...)
}

// Unit builds an Env on miniredis and SQLite.
func Unit(tb testing.TB, mutate ...func(*engine.Config)) *Env {
	tb.Helper()
	_, rdb := redistest.Mini(tb)
	return NewEnv(tb, rdb, lua.NewKeys("grab", 4), storetest.SQLite(tb), mutate...)
}

// NewEnv builds an Env on rdb, keys and db.
func NewEnv(tb testing.TB, rdb redis.UniversalClient, keys lua.Keys, db *store.DB, mutate ...func(*engine.Config)) *Env {
	cfg := Config(keys, mutate...)
	clock := StartClock()
	g := grab.New(grab.Deps{Deps: engine.Deps{Redis: rdb, DB: db, Clock: clock, Log: QuietLog()}}, cfg)
	return &Env{Grab: g, DB: db, Redis: rdb, Keys: keys, Clock: clock, Cfg: cfg}
}

// Another builds a second engine on the same Redis, store, keys and clock,
// as a second process would be; deps and cfg may be adjusted for it.
func (e *Env) Another(mutateDeps func(*grab.Deps), mutate ...func(*engine.Config)) *Env {
	cfg := e.Cfg
	for _, m := range mutate {
		m(&cfg)
	}
	d := grab.Deps{Deps: engine.Deps{Redis: e.Redis, DB: e.DB, Clock: e.Clock, Log: QuietLog()}}
	if mutateDeps != nil {
		mutateDeps(&d)
	}
	c := *e
	c.Grab, c.Cfg = grab.New(d, cfg), cfg
	return &c
}

// StartWriter runs the writer until the test ends.
func (e *Env) StartWriter(tb testing.TB) {
	tb.Cleanup(e.RunWriter())
}

// RunWriter runs the writer until the returned stop is called; stop waits
// for it to drain and return.
func (e *Env) RunWriter() (stop func()) { return RunWriter(e.Engine) }

// Drain waits until the store has every grab of the packet that Redis accepted.
func (e *Env) Drain(tb testing.TB, packetID int64, want int) {
	tb.Helper()
	WaitOwned(tb, e.DB, packetID, want)
}

// SendPacket funds sender with deposit (ref "seed-<sender>"), makes users
// 1..members and the sender the members of group 7, and sends and pays a packet.
func (e *Env) SendPacket(tb testing.TB, sender int64, kind string, members, count int, amount, deposit int64) packet.Packet {
	tb.Helper()
	users := []int64{sender}
	for u := int64(1); u <= int64(members); u++ {
		users = append(users, u)
	}
	return e.sendAndPay(tb, sender, users, kind, count, amount, deposit)
}

// GroupPacket funds sender 1, fills group 7 with users 1..members, sends a
// packet and pays it by balance.
func (e *Env) GroupPacket(tb testing.TB, kind string, members, count int, amount int64) packet.Packet {
	tb.Helper()
	users := make([]int64, members)
	for i := range users {
		users[i] = int64(i + 1)
	}
	return e.sendAndPay(tb, 1, users, kind, count, amount, 10_000_000)
}

func (e *Env) sendAndPay(tb testing.TB, sender int64, group []int64, kind string, count int, amount, deposit int64) packet.Packet {
	tb.Helper()
	ctx := context.Background()
	if _, err := e.Packets.SetGroupMembers(ctx, 7, group); err != nil {
		tb.Fatal(err)
	}
	if _, err := e.Packets.Deposit(ctx, sender, deposit, fmt.Sprintf("seed-%d", sender)); err != nil {
		tb.Fatal(err)
	}
	p, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: sender, Kind: kind, GroupID: 7, Count: count, Amount: amount})
	if err != nil {
		tb.Fatal(err)
	}
	if p, err = e.Packets.PayByBalance(ctx, p.ID, sender); err != nil {
		tb.Fatal(err)
	}
	return p
}

// GrabAll grabs the packet as users from..to, one after another, and
// fails the test on any error.
func (e *Env) GrabAll(tb testing.TB, packetID, from, to int64) map[int64]packet.GrabResult {
	tb.Helper()
	got := map[int64]packet.GrabResult{}
	for u := from; u <= to; u++ {
		r, err := e.Packets.Grab(context.Background(), packetID, u)
		if err != nil {
			tb.Fatalf("grab by %d: %v", u, err)
		}
		got[u] = r
	}
	return got
}

// WithTransfer is the Env's engine rebuilt with a transfer service, and a
// metrics registry of its own.
func (e *Env) WithTransfer(x transfer.Service, mutate ...func(*engine.Config)) (*Env, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return e.Another(func(d *grab.Deps) { d.Campaigns.Transfer, d.Metrics = x, reg }, mutate...), reg
}

// NewCampaign creates a campaign open from a minute ago for an hour.
func (e *Env) NewCampaign(tb testing.TB, budget int64, count int, awardMin, awardMax int64, limit int) campaign.Campaign {
	tb.Helper()
	now := e.Clock.Now()
	c, created, err := e.Campaigns.CreateCampaign(context.Background(), campaign.NewCampaign{Name: "test", Budget: budget, AwardCount: count,
		AwardMin: awardMin, AwardMax: awardMax, PerUserLimit: limit, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)})
	if err != nil || !created {
		tb.Fatalf("create campaign: %v, %v", created, err)
	}
	return c
}

// Users are n user ids from from on.
func Users(from, n int) []int64 {
	u := make([]int64, n)
	for i := range u {
		u[i] = int64(from + i)
	}
	return u
}

// Money is what a replay must not change: the store's money totals and the
// balances of some users.
type Money struct {
	Totals   store.Totals
	Balances map[int64]int64
}

// ReadMoney reads the store's totals and the balances of users.
func (e *Env) ReadMoney(tb testing.TB, users ...int64) Money {
	tb.Helper()
	ctx := context.Background()
	m := Money{Balances: map[int64]int64{}}
	var err error
	if m.Totals, err = e.DB.MoneyTotals(ctx); err != nil {
		tb.Fatal(err)
	}
	for _, u := range users {
		if m.Balances[u], err = e.DB.Balance(ctx, u); err != nil {
			tb.Fatal(err)
		}
	}
	return m
}

// Equal reports whether m and o hold the same totals and balances.
func (m Money) Equal(o Money) bool { return m.Totals == o.Totals && maps.Equal(m.Balances, o.Balances) }

// Pending counts the stream's events delivered to the writer and not yet
// acknowledged.
func (e *Env) Pending(tb testing.TB, stream string) int64 {
	tb.Helper()
	p, err := e.Redis.XPending(context.Background(), stream, e.Cfg.Writer.Group).Result()
	if err != nil {
		tb.Fatalf("xpending %s: %v", stream, err)
	}
	return p.Count
}
