package engine_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

// Events the store cannot apply, or cannot even read, are parked in the
// dead-letter stream and acked; the good events of the same batch are applied.
func TestWriterParksWhatItCannotApply(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 10, 5, 500, 10_000)
	k := e.Keys.Packet(p.ID)
	shares, err := e.DB.Shares(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	amount := func(seq int) string { return fmt.Sprint(int64(shares[seq-1].Amount)) }
	at := fmt.Sprint(e.Clock.Now().UnixMilli())
	pk := fmt.Sprint(p.ID)
	grab := func(user, seq, amt string) map[string]any {
		return map[string]any{"t": "grab", "pk": pk, "u": user, "seq": seq, "amt": amt, "at": at, "cr": "1", "fin": "0"}
	}

	// The writer is not running, so everything below lands in one batch.
	good := e.GrabAll(t, p.ID, 2, 3) // seqs 1 and 2
	bad := map[string]map[string]any{
		"share of another user":            grab("9", "1", amount(1)),
		"unknown type":                     {"t": "refund", "pk": pk, "u": "8"},
		"bad number":                       grab("8", "3x", amount(3)),
		"user zero":                        grab("0", "3", amount(3)),
		"wrong amount":                     grab("8", "3", fmt.Sprint(int64(shares[2].Amount)+1)),
		"close of more than is left":       {"t": "close", "pk": pk, "rem": "501", "n": "1", "at": at},
		"close of less than a fen a share": {"t": "close", "pk": pk, "rem": "1", "n": "2", "at": at},
	}
	badIDs := map[string]string{} // stream id -> case
	for name, values := range bad {
		id, err := e.Redis.XAdd(ctx, &redis.XAddArgs{Stream: k.Events, Values: values}).Result()
		if err != nil {
			t.Fatal(err)
		}
		badIDs[id] = name
	}
	good[4] = e.GrabAll(t, p.ID, 4, 4)[4] // seq 3, after the bogus claims on it

	e.StartWriter(t)
	e.Drain(t, p.ID, 3)
	dead := e.Keys.DeadLetters(e.Keys.Shard(p.ID))
	enginetest.WaitFor(t, "every bad event to be parked and every event acked", func() bool {
		return e.Redis.XLen(ctx, dead).Val() == int64(len(bad)) && e.Pending(t, k.Events) == 0
	})
	parked, err := e.Redis.XRange(ctx, dead, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range parked {
		id, _ := m.Values["id"].(string)
		name, ok := badIDs[id]
		if !ok || m.Values["stream"] != k.Events || m.Values["error"] == "" {
			t.Fatalf("dead letter %v is not one of the planted events", m.Values)
		}
		for f, v := range bad[name] {
			if m.Values["f_"+f] != v {
				t.Fatalf("%s: parked field %s = %v, want %v", name, f, m.Values["f_"+f], v)
			}
		}
		delete(badIDs, id)
	}
	if len(badIDs) != 0 {
		t.Fatalf("not parked: %v", badIDs)
	}

	rows, _ := e.DB.Shares(ctx, p.ID)
	for u, r := range good {
		if rows[r.Seq-1].UserID.Int64 != u {
			t.Fatalf("share %d belongs to %v, want %d", r.Seq, rows[r.Seq-1].UserID, u)
		}
		if b, _ := e.Packets.Balance(ctx, u); b != r.Amount {
			t.Fatalf("user %d balance %d, won %d", u, b, r.Amount)
		}
	}
	for _, u := range []int64{8, 9} {
		if b, _ := e.Packets.Balance(ctx, u); b != 0 {
			t.Fatalf("user %d was credited %d by a bad event", u, b)
		}
	}
	// The deposit, less the packet, plus the three good grabs: the other two
	// shares are still in the packet.
	want := int64(10_000 - 500)
	for _, r := range good {
		want += r.Amount
	}
	if tot, _ := e.DB.MoneyTotals(ctx); int64(tot.Balances) != want || int64(tot.Ledger) != want {
		t.Fatalf("totals = %+v, want %d each", tot, want)
	}
}

// With no writer consuming, events age; once the oldest is older than
// LagLimit, grabs are refused with ErrBusy and take nothing. A writer that
// catches up lifts the refusal.
func TestBackpressureWhenWriterLags(t *testing.T) {
	const limit = 300 * time.Millisecond
	e := enginetest.Real(t, func(c *engine.Config) {
		c.LagLimit = limit
		c.Writer.MonitorEvery = 20 * time.Millisecond
	})
	ctx := context.Background()
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 10, 5, 500, 10_000)
	k := e.Keys.Packet(p.ID)

	// This process serves grabs; the writer would run elsewhere (and is down).
	mctx, stopMonitor := context.WithCancel(ctx)
	monitorDone := make(chan struct{})
	go func() { e.Engine.RunMonitor(mctx); close(monitorDone) }()
	t.Cleanup(func() { stopMonitor(); <-monitorDone })

	first := e.GrabAll(t, p.ID, 1, 1)[1]
	enginetest.WaitFor(t, "the lag to pass its limit", func() bool { return e.Engine.WriterLag() > limit })
	if _, err := e.Packets.Grab(ctx, p.ID, 2); !errors.Is(err, engine.ErrBusy) {
		t.Fatalf("grab while lagging: err = %v, want ErrBusy", err)
	}
	if n := e.Redis.LLen(ctx, k.Shares).Val(); n != 4 {
		t.Fatalf("%d shares left after a refused grab, want 4", n)
	}
	// The monitor never trims what no writer has consumed.
	if n := e.Redis.XLen(ctx, k.Events).Val(); n != 1 {
		t.Fatalf("stream holds %d events, want the 1 unconsumed", n)
	}

	e.StartWriter(t)
	e.Drain(t, p.ID, 1)
	enginetest.WaitFor(t, "the lag to fall under its limit", func() bool { return e.Engine.WriterLag() <= limit })
	r, err := e.Packets.Grab(ctx, p.ID, 2)
	if err != nil || r.Seq != 2 {
		t.Fatalf("grab after the writer caught up = %+v, %v", r, err)
	}
	if b, _ := e.Packets.Balance(ctx, 1); b != first.Amount {
		t.Fatalf("balance %d, want %d", b, first.Amount)
	}
}

// Acked events are trimmed from the stream, so it stays small under load.
func TestWriterTrimsAckedEvents(t *testing.T) {
	// One shard, so every packet's events share one stream.
	rdb, keys := redistest.Real(t, 1)
	e := enginetest.NewEnv(t, rdb, keys, storetest.MySQL(t), func(c *engine.Config) { c.Writer.Batch = 50 })
	ctx := context.Background()
	stream := keys.Events(0)
	var ids []int64
	for range 3 {
		p := e.SendPacket(t, 500, packet.KindGroupEqual, 100, 100, 1, 1_000)
		e.GrabAll(t, p.ID, 1, 100)
		ids = append(ids, p.ID)
	}
	if n := rdb.XLen(ctx, stream).Val(); n != 300 {
		t.Fatalf("stream holds %d events before the writer runs, want 300", n)
	}
	e.StartWriter(t)
	for _, id := range ids {
		e.Drain(t, id, 100)
	}
	// Trimming is approximate (whole stream nodes of up to 100 entries), so
	// at most one node's worth stays.
	enginetest.WaitFor(t, "the acked events to be trimmed", func() bool {
		return rdb.XLen(ctx, stream).Val() <= 100 && e.Pending(t, stream) == 0
	})
	if tot, _ := e.DB.MoneyTotals(ctx); tot.Balances != 1_000 || tot.Ledger != 1_000 {
		t.Fatalf("totals = %+v", tot)
	}
}

// A poisonous event — one the store refuses for its own values, here a
// trigger raising 1264 (out of range) for user 6's share — is found by
// halving the batch and parked alone; every other event of the batch is
// applied.
func TestWriterParksOnlyTheCulprit(t *testing.T) {
	e := enginetest.Real(t)
	ctx := context.Background()
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 20, 20, 2000, 10_000)
	k := e.Keys.Packet(p.ID)
	if _, err := e.DB.SQL().ExecContext(ctx, `CREATE TRIGGER poison BEFORE UPDATE ON packet_share FOR EACH ROW
		BEGIN IF NEW.user_id = 6 THEN SIGNAL SQLSTATE '22003' SET MESSAGE_TEXT = 'test: poison', MYSQL_ERRNO = 1264; END IF; END`); err != nil {
		t.Fatal(err)
	}
	// The writer is not running: the 16 grabs land in one batch.
	grabbed := e.GrabAll(t, p.ID, 1, 16)

	e.StartWriter(t)
	dead := e.Keys.DeadLetters(e.Keys.Shard(p.ID))
	enginetest.WaitFor(t, "the poisonous grab to be parked and the rest acked", func() bool {
		return e.Redis.XLen(ctx, dead).Val() == 1 && e.Pending(t, k.Events) == 0
	})
	parked, err := e.Redis.XRange(ctx, dead, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	if v := parked[0].Values; v["f_u"] != "6" || !strings.Contains(fmt.Sprint(v["error"]), "1264") {
		t.Fatalf("parked %v; want user 6's grab, refused with 1264", v)
	}
	shares, err := e.DB.Shares(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	for u, r := range grabbed {
		owner := shares[r.Seq-1].UserID
		if u == 6 {
			if owner.Valid {
				t.Fatalf("the parked grab's share %d is owned by %d", r.Seq, owner.Int64)
			}
			continue
		}
		if owner.Int64 != u {
			t.Fatalf("share %d is %v's in MySQL; user %d was answered it", r.Seq, owner, u)
		}
	}
}

// logRecorder keeps the messages of the records logged at or above a level.
type logRecorder struct {
	level slog.Level
	mu    sync.Mutex
	msgs  []string
}

func (h *logRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *logRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs = append(h.msgs, r.Message)
	return nil
}
func (h *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logRecorder) WithGroup(string) slog.Handler      { return h }

func (h *logRecorder) has(substr string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.ContainsFunc(h.msgs, func(m string) bool { return strings.Contains(m, substr) })
}

// An error nobody classified (a trigger's SIGNAL 45000, error 1644) might be
// the store's or the program's as well as the event's: the writer retries
// it with an error log, parks nothing, and applies the batch once the
// error is gone.
func TestWriterRetriesUnclassifiedErrors(t *testing.T) {
	base := enginetest.Real(t)
	logs := &logRecorder{level: slog.LevelError}
	e := base.Another(func(d *grab.Deps) { d.Log = slog.New(logs) })
	ctx := context.Background()
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 10, 10, 1000, 10_000)
	k := e.Keys.Packet(p.ID)
	x := e.DB.SQL()
	if _, err := x.ExecContext(ctx, `CREATE TRIGGER refuse BEFORE UPDATE ON packet_share FOR EACH ROW
		SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'test: refused'`); err != nil {
		t.Fatal(err)
	}
	grabbed := e.GrabAll(t, p.ID, 1, 5)
	e.StartWriter(t)
	enginetest.WaitFor(t, "the writer to log the unclassified error", func() bool { return logs.has("unclassified") })
	if n := e.Redis.XLen(ctx, e.Keys.DeadLetters(e.Keys.Shard(p.ID))).Val(); n != 0 || e.Pending(t, k.Events) != 5 {
		t.Fatalf("%d parked, %d pending; want none parked and all 5 pending", n, e.Pending(t, k.Events))
	}
	if _, err := x.ExecContext(ctx, "DROP TRIGGER refuse"); err != nil {
		t.Fatal(err)
	}
	e.Drain(t, p.ID, len(grabbed))
	enginetest.WaitFor(t, "every event acked", func() bool { return e.Pending(t, k.Events) == 0 })
	if n := e.Redis.XLen(ctx, e.Keys.DeadLetters(e.Keys.Shard(p.ID))).Val(); n != 0 {
		t.Fatalf("%d events parked", n)
	}
}

// A read whose reply is lost (the connection to Redis breaks after Redis
// handed the entries to this consumer) leaves them pending with us, and
// go-redis re-sends the read on a new connection without a word: the writer
// walks its own pending entries every ClaimEvery (and at once after a read
// or ack it saw fail), rather than waiting ClaimIdle (a minute here) for
// XAUTOCLAIM.
func TestWriterResumesItsPendingAtOnce(t *testing.T) {
	db := storetest.MySQL(t)
	rdb, keys := redistest.Real(t, 16)
	proxy := redistest.StartProxy(t, redistest.Addr())
	viaProxy := redis.NewClient(&redis.Options{Addr: proxy.Addr})
	t.Cleanup(func() { viaProxy.Close() })
	e := enginetest.NewEnv(t, rdb, keys, db).Another(func(d *grab.Deps) { d.WriterRedis = viaProxy },
		func(c *engine.Config) { c.Writer.ClaimIdle = time.Minute })
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 10, 5, 500, 10_000)
	stream := keys.Packet(p.ID).Events
	e.GrabAll(t, p.ID, 1, 5)
	proxy.DropReplyOnce(func(args []string) bool {
		return strings.EqualFold(args[0], "xreadgroup") && slices.Contains(args, stream) && args[len(args)-1] == ">"
	})
	start := time.Now()
	e.StartWriter(t)
	e.Drain(t, p.ID, 5)
	if proxy.Dropped() != 1 {
		t.Fatalf("the proxy dropped %d replies, want 1", proxy.Dropped())
	}
	enginetest.WaitFor(t, "every event acked", func() bool { return e.Pending(t, stream) == 0 })
	if took := time.Since(start); took >= e.Cfg.Writer.ClaimIdle {
		t.Fatalf("the events waited %v: as long as a takeover", took)
	}
}
