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

// Config tunes the engine. Zero values take the defaults of DefaultConfig.
type Config struct {
	Keys      lua.Keys
	Limits    Limits
	PacketTTL time.Duration // how long a paid packet can be grabbed
	KeyGrace  time.Duration // how long Redis keeps a packet's keys past its expiry
	// LagLimit is the writer lag past which grabs are refused with ErrBusy,
	// rather than taking money the engine cannot yet make durable.
	LagLimit        time.Duration
	MaxGroupMembers int
	Writer          WriterConfig
	// RefundInterval is how often expired packets are closed and refunded.
	RefundInterval time.Duration
	// ReconcileInterval is how often paid packets are swept for grabs not yet
	// credited, and stale settlements are queried (the delayed second pass; docs/payments.md).
	ReconcileInterval time.Duration
	// SettleTimeout is how long a payment may await settlement before the
	// provider is asked for its outcome.
	SettleTimeout time.Duration
	// SettleGiveUp is how long a trade may go without an outcome before it
	// is ended as failed (given up); a provider that does not know the trade
	// ends it at its first query.
	SettleGiveUp time.Duration
	// GrabPipelines is how many pipelines carry concurrent grabs to Redis
	// (see lua.GrabPipeline), and as many carry stock deducts; negative
	// sends each grab and deduct on its own.
	GrabPipelines int
	// GrabBatch is the most grabs one pipeline carries.
	GrabBatch int
	// StockVoucherTTL is how long a voucher's list of touched products (for
	// its rollback) and an order's record across products are kept.
	StockVoucherTTL time.Duration
	// StockOrderStale is how long an order across products may go without
	// an answer before SweepStockOrders settles it.
	StockOrderStale time.Duration
	// TransferTimeout bounds one call of the transfer service; past it the
	// outcome is unknown and the award stays transferring for the sweeper.
	TransferTimeout time.Duration
	// PayoutRetryAfter is how long an award may stay transferring (or
	// received, unpaid) before the payout sweeper drives it again.
	PayoutRetryAfter time.Duration
	// PayoutSweepInterval is how often the payout sweeper runs.
	PayoutSweepInterval time.Duration
	// PayoutMaxAttempts is how many transfer attempts an award gets before
	// it is parked as needs_attention for a person.
	PayoutMaxAttempts int
	// PayoutWorkers is how many overdue awards one sweep drives at once.
	PayoutWorkers int
}

// DefaultConfig is the production configuration.
func DefaultConfig() Config {
	return Config{
		Keys:              lua.NewKeys("grab", 16),
		Limits:            DefaultLimits,
		PacketTTL:         24 * time.Hour,
		KeyGrace:          time.Hour,
		LagLimit:          5 * time.Second,
		MaxGroupMembers:   500,
		Writer:            DefaultWriterConfig(),
		RefundInterval:    time.Minute,
		ReconcileInterval: 5 * time.Second,
		SettleTimeout:     2 * time.Minute,
		SettleGiveUp:      24 * time.Hour,
		GrabPipelines:     4,
		GrabBatch:         64,
		StockVoucherTTL:   30 * 24 * time.Hour,
		StockOrderStale:   time.Minute,

		TransferTimeout:     3 * time.Second,
		PayoutRetryAfter:    30 * time.Second,
		PayoutSweepInterval: 10 * time.Second,
		PayoutMaxAttempts:   10,
		PayoutWorkers:       8,
	}
}

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
	writer *Writer
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
	def := DefaultConfig()
	if cfg.Keys.NS == "" {
		cfg.Keys = def.Keys
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = def.Limits
	}
	if cfg.PacketTTL <= 0 {
		cfg.PacketTTL = def.PacketTTL
	}
	if cfg.KeyGrace <= 0 {
		cfg.KeyGrace = def.KeyGrace
	}
	if cfg.LagLimit <= 0 {
		cfg.LagLimit = def.LagLimit
	}
	if cfg.MaxGroupMembers <= 0 {
		cfg.MaxGroupMembers = def.MaxGroupMembers
	}
	if cfg.RefundInterval <= 0 {
		cfg.RefundInterval = def.RefundInterval
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = def.ReconcileInterval
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = def.SettleTimeout
	}
	if cfg.SettleGiveUp <= 0 {
		cfg.SettleGiveUp = def.SettleGiveUp
	}
	if cfg.GrabPipelines == 0 {
		cfg.GrabPipelines = def.GrabPipelines
	}
	if cfg.GrabBatch <= 0 {
		cfg.GrabBatch = def.GrabBatch
	}
	if cfg.StockVoucherTTL <= 0 {
		cfg.StockVoucherTTL = def.StockVoucherTTL
	}
	if cfg.StockOrderStale <= 0 {
		cfg.StockOrderStale = def.StockOrderStale
	}
	if cfg.TransferTimeout <= 0 {
		cfg.TransferTimeout = def.TransferTimeout
	}
	if cfg.PayoutRetryAfter <= 0 {
		cfg.PayoutRetryAfter = def.PayoutRetryAfter
	}
	if cfg.PayoutSweepInterval <= 0 {
		cfg.PayoutSweepInterval = def.PayoutSweepInterval
	}
	if cfg.PayoutMaxAttempts <= 0 {
		cfg.PayoutMaxAttempts = def.PayoutMaxAttempts
	}
	if cfg.PayoutWorkers <= 0 {
		cfg.PayoutWorkers = def.PayoutWorkers
	}
	cfg.Writer = cfg.Writer.withDefaults()
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
	if err := e.db.Ping(ctx); err != nil {
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
