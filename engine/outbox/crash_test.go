//go:build unix

package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events/eventstest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// The environment a crash test's child reads: which crash point it dies
// at, and the database and stream it shares with its parent.
const (
	envCrash  = "GRAB_OUTBOX_CRASH"
	envDSN    = "GRAB_OUTBOX_CRASH_DSN"
	envStream = "GRAB_OUTBOX_CRASH_STREAM"
	envPrefix = "GRAB_OUTBOX_CRASH_PREFIX"
)

// Crash points.
const (
	crashAfterCommit  = "after-commit"  // a writer batch committed, its messages not yet published
	crashAfterPublish = "after-publish" // a batch's acks in, its marks not yet committed
)

// crashSKUs and crashVersions shape the changes of a crash test: stock
// changes of crashSKUs SKUs, crashVersions each, interleaved.
const crashSKUs, crashVersions = 3, 8

// stockChanges answers the changes of versions from to to-1 of every SKU,
// in version order, the SKUs interleaved: one outbox message each.
func stockChanges(from, to int64) []event.Event {
	var evs []event.Event
	for v := from; v < to; v++ {
		for sku := int64(1); sku <= crashSKUs; sku++ {
			evs = append(evs, event.Stock{ActivityID: 1, ProductID: 2, SKU: sku, Version: v, Status: "on",
				Scopes: []event.StockScope{{Scope: "high_seas", Total: 100, Available: 100 - v, Sold: v}},
				Op:     "deduct", Ref: fmt.Sprintf("o:%d:%d", sku, v), Change: fmt.Sprintf("high_seas:deduct:%d", v),
				At: time.Now().UTC()})
		}
	}
	return evs
}

// A process killed right after a writer batch commits, before the relay
// publishes any of its messages, loses none: the next relay publishes
// them, each once, after what the killed process published before.
func TestKilledAfterCommit(t *testing.T) {
	if os.Getenv(envCrash) != "" {
		crashChild(t)
		return
	}
	db, s, dsn := crashSetup(t)
	killChild(t, "TestKilledAfterCommit", crashAfterCommit, dsn, s)
	first := 3 * crashSKUs // the child's first batch, relayed before it died
	ids := outboxIDs(t, db)
	if len(ids) != crashSKUs*crashVersions {
		t.Fatalf("outbox holds %d messages, want %d", len(ids), crashSKUs*crashVersions)
	}
	if got := streamIDs(t, s); !slices.Equal(got, ids[:first]) {
		t.Fatalf("after the kill the stream holds %v, want the first batch %v", got, ids[:first])
	}
	wantPending(t, db, int64(len(ids)-first))
	relayAll(t, db, s, ids, len(ids)-first)
}

// A process killed after JetStream acknowledged a batch and before the
// store marked it published loses nothing and duplicates nothing: the
// next relay publishes the batch again and the stream drops each copy by
// its Nats-Msg-Id.
func TestKilledAfterPublish(t *testing.T) {
	if os.Getenv(envCrash) != "" {
		crashChild(t)
		return
	}
	db, s, dsn := crashSetup(t)
	db.SetOutbox(true)
	if _, err := db.ApplyEvents(context.Background(), stockChanges(1, crashVersions+1)); err != nil {
		t.Fatal(err)
	}
	ids := outboxIDs(t, db)
	if len(ids) != crashSKUs*crashVersions {
		t.Fatalf("outbox holds %d messages, want %d", len(ids), crashSKUs*crashVersions)
	}
	killChild(t, "TestKilledAfterPublish", crashAfterPublish, dsn, s)
	// The child marked its first batch and died with the second published.
	if got := streamIDs(t, s); !slices.Equal(got, ids[:2*crashBatch]) {
		t.Fatalf("after the kill the stream holds %v, want two batches %v", got, ids[:2*crashBatch])
	}
	// The second batch is published again, and dropped as a duplicate.
	wantPending(t, db, int64(len(ids)-crashBatch))
	relayAll(t, db, s, ids, len(ids)-crashBatch)
}

// crashBatch is the child relay's batch.
const crashBatch = 8

// crashSetup is a database and a stream of the test's own, and the DSN
// of the database.
func crashSetup(t *testing.T) (*store.DB, *eventstest.Stream, string) {
	t.Helper()
	db := storetest.MySQL(t)
	var name string
	if err := db.SQL().Get(&name, "SELECT DATABASE()"); err != nil {
		t.Fatal(err)
	}
	cfg, err := mysql.ParseDSN(storetest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = name
	return db, eventstest.NewStream(t, 2*time.Minute), cfg.FormatDSN()
}

// killChild runs test again in a child process that shares the database
// and the stream and dies by SIGKILL at crash point at; it fails the test
// when the child ends otherwise.
func killChild(t *testing.T, test, at, dsn string, s *eventstest.Stream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envCrash+"="+at, envDSN+"="+dsn, envStream+"="+s.Name, envPrefix+"="+s.Prefix)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: %v, want killed\n%s", err, out.String())
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, want killed by SIGKILL\n%s", exit, out.String())
	}
}

// crashChild is the child's side: it opens the parent's database and
// stream and dies at the crash point of envCrash.
func crashChild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := store.OpenMySQL(ctx, os.Getenv(envDSN))
	if err != nil {
		t.Fatal(err)
	}
	db.SetOutbox(true)
	js := connect(t, eventstest.URL())
	cfg := testConfig(os.Getenv(envStream), os.Getenv(envPrefix))
	cfg.Batch = crashBatch
	switch at := os.Getenv(envCrash); at {
	case crashAfterCommit:
		// A first batch relayed in full; the relay then idles for an hour.
		if _, err := db.ApplyEvents(ctx, stockChanges(1, 4)); err != nil {
			t.Fatal(err)
		}
		cfg.Batch, cfg.Interval = 16, time.Hour
		r := New(db, js, cfg, quiet, nil)
		go r.Run(ctx)
		for {
			if n, _, err := db.OutboxStats(ctx); err == nil && n == 0 {
				break
			}
			if ctx.Err() != nil {
				t.Fatal("the first batch was not relayed")
			}
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := db.ApplyEvents(ctx, stockChanges(4, crashVersions+1)); err != nil {
			t.Fatal(err)
		}
		killSelf()
	case crashAfterPublish:
		r := New(db, js, cfg, quiet, nil)
		batches := 0
		r.afterPublish = func() {
			if batches++; batches == 2 {
				killSelf()
			}
		}
		r.Run(ctx)
		t.Fatal("the relay ran out of time before its second batch")
	default:
		t.Fatalf("unknown crash point %q", at)
	}
}

// killSelf ends the process as kill -9 does: no deferred call, no flush.
func killSelf() {
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

// outboxIDs answers the ids of every outbox message, in seq order.
func outboxIDs(t *testing.T, db *store.DB) []string {
	t.Helper()
	var ids []string
	if err := db.SQL().Select(&ids, "SELECT event_id FROM outbox ORDER BY seq"); err != nil {
		t.Fatal(err)
	}
	return ids
}

// streamIDs answers the ids of the messages the stream holds, in its order.
func streamIDs(t *testing.T, s *eventstest.Stream) []string {
	t.Helper()
	var ids []string
	for _, m := range streamMessages(t, s.JS, s.Name) {
		ids = append(ids, m.ID)
	}
	return ids
}

// wantPending checks the outbox's count of unpublished messages.
func wantPending(t *testing.T, db *store.DB, want int64) {
	t.Helper()
	n, _, err := db.OutboxStats(context.Background())
	if err != nil || n != want {
		t.Fatalf("outbox pending %d (%v), want %d", n, err, want)
	}
}

// relayAll runs a relay as the restarted process would and checks that it
// publishes the pending messages, the stream then holds each of ids once,
// in outbox order, and a consumer handles each id once.
func relayAll(t *testing.T, db *store.DB, s *eventstest.Stream, ids []string, pending int) {
	t.Helper()
	r := New(db, connect(t, eventstest.URL()), testConfig(s.Name, s.Prefix), quiet, nil)
	run(t, r)
	// The relay counts a batch after its store commit: wait for both.
	enginetest.WaitFor(t, "the outbox to drain and the relay to count it", func() bool {
		n, _, err := db.OutboxStats(context.Background())
		return err == nil && n == 0 && testutil.ToFloat64(r.m.published) >= float64(pending)
	})
	if n := testutil.ToFloat64(r.m.published); n != float64(pending) {
		t.Fatalf("the relay published %v messages, want the %d pending", n, pending)
	}
	if got := streamIDs(t, s); !slices.Equal(got, ids) {
		t.Fatalf("the stream holds %v, want each message once in outbox order %v", got, ids)
	}
	handled := consumeAll(t, s, len(ids))
	for _, id := range ids {
		if handled[id] != 1 {
			t.Errorf("consumer handled %s %d times, want once", id, handled[id])
		}
	}
	if len(handled) != len(ids) {
		t.Errorf("consumer handled %d ids, want %d", len(handled), len(ids))
	}
}
