package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Deps are the engine's connections and collaborators.
type Deps struct {
	Redis redis.UniversalClient
	// WriterRedis serves the writer's blocking reads, so they never hold
	// connections the grab path needs. Nil means Redis.
	WriterRedis redis.UniversalClient
	DB          *store.DB
	Clock       Clock                 // nil: SystemClock
	Rand        Rand                  // nil: GlobalRand
	Log         *slog.Logger          // nil: slog.Default()
	Metrics     prometheus.Registerer // nil: metrics are not registered
}

// Engine is what every domain of grab shares: the Redis and store
// connections, the configuration, the clock, the writer that makes the
// scripts' events durable, and the load locks. The domain services
// (engine/packet, engine/campaign, engine/stock) are built on it.
type Engine struct {
	rdb    redis.UniversalClient
	db     *store.DB
	clock  Clock
	rand   Rand
	log    *slog.Logger
	cfg    Config
	keys   lua.Keys
	writer *writer
	pipe   *lua.GrabPipeline // nil: each grab on its own
	reg    prometheus.Registerer
	m      *metrics
	// lagMs is the writer lag last measured, in ms.
	lagMs atomic.Int64
	// adopted maps a shard's epoch key to the epoch this process last
	// recorded in MySQL for it (AdoptEpoch).
	adopted sync.Map
}

// New builds an engine. The store must be migrated first (store.DB.Migrate).
// Call RunWriter (or, in a process that leaves the writer to another,
// RunMonitor) to make grabs durable.
func New(d Deps, cfg Config) *Engine {
	// Without them the first call would fail far from the cause.
	if d.Redis == nil || d.DB == nil {
		panic("engine.New: Deps.Redis and Deps.DB are required")
	}
	cfg = cfg.withDefaults()
	if d.Clock == nil {
		d.Clock = SystemClock{}
	}
	if d.Rand == nil {
		d.Rand = GlobalRand{}
	}
	if d.Log == nil {
		d.Log = slog.Default()
	}
	if d.WriterRedis == nil {
		d.WriterRedis = d.Redis
	}
	// Before any script runs on a new connection, its server's dataset
	// epoch is stamped, so state loaded under another one is verified.
	lua.WatchDataset(d.Redis, cfg.Keys)
	if d.WriterRedis != d.Redis {
		lua.WatchDataset(d.WriterRedis, cfg.Keys)
	}
	e := &Engine{rdb: d.Redis, db: d.DB, clock: d.Clock, rand: d.Rand, log: d.Log, cfg: cfg, keys: cfg.Keys, reg: d.Metrics}
	e.m = newMetrics(d.Metrics)
	if cfg.GrabPipelines > 0 {
		e.pipe = lua.NewGrabPipeline(d.Redis, cfg.GrabPipelines, cfg.GrabBatch)
	}
	e.writer = newWriter(e, d.WriterRedis)
	return e
}

// Keys are the key builders the engine uses.
func (e *Engine) Keys() lua.Keys { return e.keys }

// Ready reports whether Redis and the store answer and the writer is running.
func (e *Engine) Ready(ctx context.Context) error {
	if err := e.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if err := e.db.Migrated(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if !e.writer.running.Load() {
		return errors.New("writer is not running")
	}
	return nil
}

// WriterLag is the age of the oldest grab not yet durable, as last measured.
func (e *Engine) WriterLag() time.Duration { return time.Duration(e.lagMs.Load()) * time.Millisecond }

type metrics struct {
	writerLag   prometheus.Gauge
	batchSize   prometheus.Histogram
	applied     prometheus.Counter
	deadLetters prometheus.Counter
	rebuilds    prometheus.Counter
	verified    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		writerLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "grab_writer_lag_seconds", Help: "Age of the oldest grab event not yet applied to the store."}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "grab_writer_batch_size", Help: "Events applied per store transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11)}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_writer_events_applied_total", Help: "Events made durable by the writer."}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_writer_dead_letters_total", Help: "Events parked in a dead-letter stream; each needs a person."}),
		rebuilds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_packet_rebuilds_total", Help: "Packets whose Redis state was rebuilt from the store."}),
		verified: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "grab_state_verifications_total",
			Help: "Packets, campaigns and stock products whose Redis state was verified against the store after a Redis dataset change."}),
	}
	if reg != nil {
		reg.MustRegister(m.writerLag, m.batchSize, m.applied, m.deadLetters, m.rebuilds, m.verified)
	}
	return m
}
