// Package grab wires grab's domains onto one engine: red packets (with their
// payments and refunds), campaigns (with their payouts) and activity stock,
// sharing the Redis connections, the store, the writer and the load locks of
// an engine.Engine.
//
// Embedding grab in a Go service takes four steps:
//
//	db, _ := store.OpenMySQL(ctx, dsn)      // or store.OpenSQLite(ctx, path) in tests
//	_ = db.Migrate(ctx)                      // every call needs the schema
//	g := grab.New(grab.Deps{Deps: engine.Deps{Redis: rdb, DB: db}}, engine.Config{})
//	go g.Run(ctx)                            // the writer and the background jobs, until ctx ends
//
// then call g.Packets, g.Campaigns and g.Stock. A grab answers from Redis;
// the writer makes it durable in the store a moment later, and
// g.Engine.WaitDurable waits for that (a test asserts on the store after it;
// with no writer running anywhere it waits until its ctx ends). Zero fields
// of engine.Config take engine.DefaultConfig's; Keys.NS namespaces every
// Redis key, so tests sharing one Redis give each its own.
// The examples run on miniredis and SQLite, as a unit test of an embedding
// service would.
package grab

import (
	"context"
	"sync"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/packet"
	"github.com/grab-engine/grab/engine/stock"
)

// Deps are the engine's connections and each domain's collaborators.
type Deps struct {
	engine.Deps
	// Payments are the packets' third-party payment channels; empty: only
	// balance payments.
	Payments packet.Deps
	// Campaigns holds the transfer service that pays awards out; nil: awards
	// stay received until a process with one pays them.
	Campaigns campaign.Deps
}

// Grab is every domain on one engine.
type Grab struct {
	Engine    *engine.Engine
	Packets   *packet.Service
	Campaigns *campaign.Service
	Stock     *stock.Service
}

// New builds the engine and its domains. The store must be migrated
// (store.DB.Migrate). Nothing runs until Run (or the loops of Jobs and the
// engine's RunWriter) is started.
func New(d Deps, cfg engine.Config) *Grab {
	e := engine.New(d.Deps, cfg)
	return &Grab{Engine: e, Packets: packet.New(e, d.Payments), Campaigns: campaign.New(e, d.Campaigns), Stock: stock.New(e)}
}

// Jobs are the background loops besides the writer, by name, each running
// until its ctx ends: closing and refunding expired packets, reconciling
// payments, sweeping payouts, and settling stale stock orders. Every process
// may run them; they are safe to run in several at once.
func (g *Grab) Jobs() map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"refund job":        g.Packets.RunRefunder,
		"reconciliation":    g.Packets.RunReconciler,
		"payout sweeper":    g.Campaigns.RunPayoutSweeper,
		"stock order sweep": g.Stock.RunSweeper,
	}
}

// Run runs the writer and every job until ctx ends. The jobs stop first, so
// the writer then drains what their last pass and every answered call wrote;
// Run returns once it has: nil, or engine.ErrNotDrained (or Redis's error)
// when events it read are left for the next writer. A store not migrated
// is store.ErrNotMigrated at once.
func (g *Grab) Run(ctx context.Context) error {
	if err := g.Engine.DB().Migrated(ctx); err != nil {
		return err
	}
	jobsCtx, stopJobs := context.WithCancel(ctx)
	defer stopJobs()
	writerCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWriter()
	writerDone := make(chan error, 1)
	go func() { writerDone <- g.Engine.RunWriter(writerCtx) }()
	var jobs sync.WaitGroup
	for name, run := range g.Jobs() {
		jobs.Go(func() {
			if err := run(jobsCtx); err != nil {
				g.Engine.Log().Error(name+" stopped", "err", err)
			}
		})
	}
	<-ctx.Done()
	stopJobs()
	jobs.Wait()
	stopWriter()
	return <-writerDone
}
