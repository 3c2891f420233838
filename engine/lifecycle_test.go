package engine_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// New refuses missing connections at once, rather than failing the first
// call far from the cause.
func TestNewRequiresRedisAndStore(t *testing.T) {
	_, rdb := redistest.Mini(t)
	for name, d := range map[string]engine.Deps{"no redis": {DB: storetest.SQLite(t)}, "no store": {Redis: rdb}} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil {
					t.Fatal("New did not panic")
				}
			}()
			engine.New(d, engine.Config{})
		})
	}
}

// A store not migrated is named as such: Run refuses to start and Ready
// says so, instead of every call failing on a missing table.
func TestStoreNotMigrated(t *testing.T) {
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, t.TempDir()+"/grab.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	_, rdb := redistest.Mini(t)
	g := grab.New(grab.Deps{Deps: engine.Deps{Redis: rdb, DB: db, Log: enginetest.QuietLog()}}, engine.Config{Keys: lua.NewKeys("grab", 2)})
	if err := g.Run(ctx); !errors.Is(err, store.ErrNotMigrated) {
		t.Fatalf("Run on a store not migrated: %v, want ErrNotMigrated", err)
	}
	if err := g.Engine.Ready(ctx); !errors.Is(err, store.ErrNotMigrated) {
		t.Fatalf("Ready on a store not migrated: %v, want ErrNotMigrated", err)
	}
	if err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.Migrated(ctx); err != nil {
		t.Fatalf("Migrated after Migrate: %v", err)
	}
}

// A writer that stops with events it read still unapplied (the store is
// gone and the drain times out) says so, and leaves them pending in Redis
// for the next writer.
func TestWriterThatCannotDrainSaysSo(t *testing.T) {
	e := enginetest.Unit(t, func(c *engine.Config) { c.Writer.DrainTimeout = 100 * time.Millisecond })
	p := e.SendPacket(t, 100, packet.KindGroupLucky, 3, 3, 300, 1_000)
	if _, err := e.Packets.Grab(context.Background(), p.ID, 1); err != nil {
		t.Fatal(err)
	}
	e.DB.Close() // every apply fails from here on
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Engine.RunWriter(ctx) }()
	stream := e.Keys.Events(e.Keys.Shard(p.ID))
	enginetest.WaitFor(t, "the writer to read the grab", func() bool {
		p, err := e.Redis.XPending(context.Background(), stream, e.Cfg.Writer.Group).Result()
		return err == nil && p.Count == 1 // NOGROUP until the writer makes its group
	})
	stop()
	if err := <-done; !errors.Is(err, engine.ErrNotDrained) {
		t.Fatalf("RunWriter = %v, want ErrNotDrained", err)
	}
	if n := e.Pending(t, stream); n != 1 {
		t.Fatalf("%d events pending after the stop, want the grab", n)
	}
}
