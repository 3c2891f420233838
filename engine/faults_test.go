package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// dropAcks loses every XACK, as a writer that crashed right after its
// store commit would.
type dropAcks struct{ dropped atomic.Int64 }

func (h *dropAcks) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *dropAcks) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h *dropAcks) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "xack" {
			h.dropped.Add(1)
			err := errors.New("test: writer died before XACK")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// Every event reaches the store at least once; applying one again, directly
// or by a redelivery after a crash between commit and ack, changes nothing.
func TestRedeliveryIsHarmless(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 20, 10, 2000, 50_000)
	stream := e.Keys.Packet(p.ID).Events
	answers := e.GrabAll(t, p.ID, 1, 10)
	users := []int64{100}
	for u := range answers {
		users = append(users, u)
	}

	// A writer commits every batch but each ack is lost.
	noAck := redis.NewClient(&redis.Options{Addr: redistest.Addr()})
	t.Cleanup(func() { noAck.Close() })
	hook := &dropAcks{}
	noAck.AddHook(hook)
	crashed := e.Another(func(d *grab.Deps) { d.WriterRedis = noAck },
		func(c *engine.Config) { c.Writer.Consumer = "crashed" })
	stop := crashed.RunWriter()
	e.Drain(t, p.ID, 10)
	stop()
	if hook.dropped.Load() == 0 || e.Pending(t, stream) != 10 {
		t.Fatalf("want 10 committed but unacked events, have %d pending after %d lost acks",
			e.Pending(t, stream), hook.dropped.Load())
	}
	committed := e.ReadMoney(t, users...)
	for u, r := range answers {
		if committed.Balances[u] != r.Amount {
			t.Fatalf("user %d balance %d, won %d", u, committed.Balances[u], r.Amount)
		}
	}
	if committed.Totals.Balances != 50_000 || committed.Totals.Ledger != 50_000 {
		t.Fatalf("totals after commit = %+v", committed.Totals)
	}

	// Applying the same events again through the store changes nothing.
	var events []event.Grab
	for u, r := range answers {
		events = append(events, event.Grab{PacketID: p.ID, UserID: u, Seq: r.Seq, Amount: r.Amount,
			At: e.Clock.Now(), Credit: true, Finished: r.Seq == 10})
	}
	for i := 0; i < 2; i++ {
		if rejected, err := e.DB.ApplyGrabs(ctx, events); err != nil || len(rejected) != 0 {
			t.Fatalf("direct replay: rejected %v, %v", rejected, err)
		}
	}
	if now := e.ReadMoney(t, users...); !now.Equal(committed) {
		t.Fatalf("direct replay changed money: %+v, was %+v", now, committed)
	}

	// A fresh writer under another name reclaims the dead one's pending
	// events, applies them again and acks them.
	rescuer := e.Another(nil, func(c *engine.Config) {
		c.Writer.Consumer = "rescuer"
		c.Writer.ClaimIdle = 100 * time.Millisecond
		c.Writer.ClaimEvery = 100 * time.Millisecond
	})
	rescuer.StartWriter(t)
	enginetest.WaitFor(t, "the rescuer to ack every reclaimed event", func() bool { return e.Pending(t, stream) == 0 })
	// Sums are unchanged and every ledger movement is positive, so no ledger
	// row was duplicated either.
	if now := e.ReadMoney(t, users...); !now.Equal(committed) {
		t.Fatalf("redelivery changed money: %+v, was %+v", now, committed)
	}
	if n := e.Redis.XLen(ctx, e.Keys.DeadLetters(e.Keys.Shard(p.ID))).Val(); n != 0 {
		t.Fatalf("%d replayed events were parked as dead letters", n)
	}
}

// A grab whose reply is lost is re-sent by go-redis with the same request
// id: the user ends with one share, answered as a first grab, not a repeat.
func TestLostGrabReply(t *testing.T) {
	db := storetest.MySQL(t)
	direct, keys := redistest.Real(t, 16)
	proxy := redistest.StartProxy(t, redistest.Addr())
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.Addr})
	t.Cleanup(func() { viaProxy.Close() })
	e := enginetest.NewEnv(t, viaProxy, keys, db)
	ctx := context.Background()
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 10, 5, 500, 10_000)
	k := keys.Packet(p.ID)
	if n := direct.LLen(ctx, k.Shares).Val(); n != 5 {
		t.Fatalf("%d shares loaded, want 5", n)
	}

	// The script must be cached: a lost NOSCRIPT reply would only test the
	// EVAL fallback, not a re-send of a grab that ran.
	if err := lua.Preload(ctx, direct); err != nil {
		t.Fatal(err)
	}
	proxy.DropReplyOnce(func(args []string) bool {
		cmd := strings.ToLower(args[0])
		return (cmd == "evalsha" || cmd == "eval") && len(args) > 3 && args[2] == "6" && args[3] == k.State
	})
	r, err := e.Packets.Grab(ctx, p.ID, 3)
	if proxy.Dropped() != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", proxy.Dropped())
	}
	if err != nil || r.Repeat || r.Seq != 1 || r.Amount <= 0 {
		t.Fatalf("grab with a lost reply = %+v, %v; want seq 1, not a repeat", r, err)
	}
	if n := direct.LLen(ctx, k.Shares).Val(); n != 4 {
		t.Fatalf("%d shares left, want 4: the re-send took another", n)
	}
	g := direct.HGetAll(ctx, k.Grabbed).Val()
	delete(g, lua.GrabbedPlaceholder)
	if len(g) != 1 || g["3"] == "" {
		t.Fatalf("grabbed = %v, want user 3 only", g)
	}
	if n := direct.XLen(ctx, k.Events).Val(); n != 1 {
		t.Fatalf("%d events, want 1", n)
	}
	again, err := e.Packets.Grab(ctx, p.ID, 3)
	if err != nil || again != (packet.GrabResult{PacketID: p.ID, Amount: r.Amount, Seq: 1, Repeat: true, Credited: true}) {
		t.Fatalf("a second call = %+v, %v; want the same share as a repeat", again, err)
	}

	e.StartWriter(t)
	e.Drain(t, p.ID, 1)
	if b, _ := e.Packets.Balance(ctx, 3); b != r.Amount {
		t.Fatalf("balance %d, want %d", b, r.Amount)
	}
}

// Redis restarts empty after the writer made the first grabs durable: the
// packet is rebuilt from the store, earlier grabbers see their own share,
// the rest of the shares go out exactly once, and the writer picks up again.
func TestRedisRestartedEmpty(t *testing.T) {
	srv := redistest.StartServer(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	t.Cleanup(func() { rdb.Close() })
	keys := lua.NewKeys(redistest.Namespace(), 16)
	e := enginetest.NewEnv(t, rdb, keys, storetest.MySQL(t))
	e.StartWriter(t)
	ctx := context.Background()
	const members, shares, total, sender, deposit = 30, 20, 2000, 100, 50_000
	p := e.SendPacket(t, sender, packet.KindGroupLucky, members, shares, total, deposit)
	stream := keys.Packet(p.ID).Events

	before := e.GrabAll(t, p.ID, 1, 8)
	e.Drain(t, p.ID, 8)

	srv.Restart()
	// (The writer may already have recreated its empty streams.)
	if n := rdb.Exists(ctx, keys.Packet(p.ID).State, keys.Packet(p.ID).Grabbed).Val(); n != 0 {
		t.Fatalf("the restarted redis still holds %d keys of the packet", n)
	}

	// Everyone grabs at once: one of them rebuilds, the others wait for it.
	results := make([]packet.GrabResult, members+1)
	errs := make([]error, members+1)
	var wg sync.WaitGroup
	for u := 1; u <= members; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[u], errs[u] = e.Packets.Grab(ctx, p.ID, int64(u))
		}()
	}
	wg.Wait()

	owner := map[int]int64{}
	for u, r := range before {
		owner[r.Seq] = u
	}
	var sum int64
	for _, r := range before {
		sum += r.Amount
	}
	soldOut := 0
	for u := int64(1); u <= members; u++ {
		r, err := results[u], errs[u]
		if b, ok := before[u]; ok {
			if err != nil || r != (packet.GrabResult{PacketID: p.ID, Amount: b.Amount, Seq: b.Seq, Repeat: true, Credited: true}) {
				t.Fatalf("user %d after the restart = %+v, %v; before it %+v", u, r, err, b)
			}
			continue
		}
		switch {
		case errors.Is(err, engine.ErrSoldOut):
			soldOut++
		case err != nil:
			t.Fatalf("user %d: %v", u, err)
		case r.Repeat:
			t.Fatalf("user %d: a first grab answered as a repeat: %+v", u, r)
		default:
			if prev, dup := owner[r.Seq]; dup {
				t.Fatalf("seq %d handed to %d and again to %d", r.Seq, prev, u)
			}
			owner[r.Seq] = u
			sum += r.Amount
			before[u] = r
		}
	}
	if len(owner) != shares || soldOut != members-shares || sum != total {
		t.Fatalf("%d shares owned, %d sold out, %d fen handed out; want %d, %d, %d",
			len(owner), soldOut, sum, shares, members-shares, total)
	}

	e.Drain(t, p.ID, shares)
	rows, _ := e.DB.Shares(ctx, p.ID)
	for _, s := range rows {
		if s.UserID.Int64 != owner[s.Seq] || int64(s.Amount) != before[owner[s.Seq]].Amount {
			t.Fatalf("store share %d: user %v, %d fen; Redis gave it to %d", s.Seq, s.UserID, s.Amount, owner[s.Seq])
		}
	}
	for u, r := range before {
		if b, _ := e.Packets.Balance(ctx, u); b != r.Amount {
			t.Fatalf("user %d balance %d, won %d", u, b, r.Amount)
		}
	}
	if row, _ := e.DB.Packet(ctx, p.ID); row.Status != packet.StatusFinished {
		t.Fatalf("packet is %s, want finished", row.Status)
	}
	if tot, _ := e.DB.MoneyTotals(ctx); tot.Balances != deposit || tot.Ledger != deposit {
		t.Fatalf("totals = %+v, want %d each", tot, deposit)
	}
	// The writer recreated its consumer group on the new, empty server.
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil || len(groups) != 1 || groups[0].Name != e.Cfg.Writer.Group {
		t.Fatalf("groups of %s = %+v, %v", stream, groups, err)
	}
	enginetest.WaitFor(t, "every event after the restart to be acked", func() bool { return e.Pending(t, stream) == 0 })
}

// MySQL going away loses no grab: grabs go on while the writer retries, are
// refused with ErrBusy (taking nothing) once the lag passes its bound, and
// after MySQL returns every accepted grab is durable and credited once.
func TestMySQLOutage(t *testing.T) {
	db, outage := storetest.MySQLWithOutage(t)
	rdb, keys := redistest.Real(t, 16)
	e := enginetest.NewEnv(t, rdb, keys, db, func(c *engine.Config) {
		c.LagLimit = 500 * time.Millisecond
		c.Writer.MaxAttempts = 2
	})
	e.StartWriter(t)
	ctx := context.Background()
	p := e.GroupPacket(t, packet.KindGroupLucky, 20, 10, 1000)
	k := keys.Packet(p.ID)

	outage.Cut()
	granted := e.GrabAll(t, p.ID, 2, 5)
	enginetest.WaitFor(t, "the writer's lag past the limit with MySQL down", func() bool { return e.Engine.WriterLag() > e.Cfg.LagLimit })
	if _, err := e.Packets.Grab(ctx, p.ID, 6); !errors.Is(err, engine.ErrBusy) {
		t.Fatalf("grab with the writer %v behind: err = %v, want ErrBusy", e.Engine.WriterLag(), err)
	}
	if n := rdb.LLen(ctx, k.Shares).Val(); n != 6 {
		t.Fatalf("%d shares left, want 6: a refused grab took one", n)
	}

	outage.Restore()
	e.Drain(t, p.ID, len(granted))
	enginetest.WaitFor(t, "the writer's lag within the limit after MySQL came back", func() bool { return e.Engine.WriterLag() <= e.Cfg.LagLimit })
	for u, r := range e.GrabAll(t, p.ID, 6, 6) {
		granted[u] = r
	}
	e.Drain(t, p.ID, len(granted))

	var grabbed int64
	for u, r := range granted {
		grabbed += r.Amount
		if b, err := e.Packets.Balance(ctx, u); err != nil || b != r.Amount {
			t.Fatalf("balance of %d = %d, %v; want %d", u, b, err, r.Amount)
		}
	}
	totals, err := db.MoneyTotals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := store.Fen(10_000_000 - 1000 + grabbed); totals.Balances != want || totals.Ledger != want {
		t.Fatalf("totals = %+v, want balances and ledger %d", totals, want)
	}
}
