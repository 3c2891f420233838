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

	"github.com/grab-engine/grab/engine/stock"
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
	// Provider takes third-party payments on every channel that Providers
	// does not name (a company gateway, or the simulator); nil with no
	// Providers: only balance payments.
	Provider Provider
	// Providers are native channels' own providers, by channel (ChannelAlipay
	// → Alipay, ChannelWechat → WeChat Pay); they take precedence over Provider.
	Providers map[string]Provider
	// Transfer pays campaign awards out. Nil: campaigns still take grabs,
	// and their awards stay received until an engine with a service pays them.
	Transfer TransferService
}

// Engine is the service the API calls.
type Engine struct {
	rdb    redis.UniversalClient
	db     *store.DB
	clock  Clock
	rand   Rand
	log    *slog.Logger
	cfg    Config
	keys   lua.Keys
	writer *Writer
	pays   map[string]Provider // by channel; a channel missing is not enabled
	xfer   TransferService
	pipe   *lua.GrabPipeline // nil: each grab on its own
	stock  *stock.Service
	hooks  payoutHooks
	m      *metrics
	// reconcileAt is where the reconciler's walk over trades without an
	// outcome goes on from (stalePayments).
	reconcileMu sync.Mutex
	reconcileAt store.PaymentCursor
	// lagMs is the writer lag last measured, in ms.
	lagMs atomic.Int64
	// adopted maps a shard's epoch key to the epoch this process last
	// recorded in MySQL for it (adoptEpoch).
	adopted sync.Map
}

// New builds an engine. Call RunWriter to make grabs durable.
func New(d Deps, cfg Config) *Engine {
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
	e := &Engine{rdb: d.Redis, db: d.DB, clock: d.Clock, rand: d.Rand, log: d.Log, cfg: cfg, keys: cfg.Keys, pays: providers(d), xfer: d.Transfer}
	e.m = newMetrics(d.Metrics)
	if cfg.GrabPipelines > 0 {
		e.pipe = lua.NewGrabPipeline(d.Redis, cfg.GrabPipelines, cfg.GrabBatch)
	}
	e.writer = newWriter(e, d.WriterRedis)
	e.stock = stock.New(stock.Deps{Redis: d.Redis, DB: d.DB, Clock: d.Clock, Log: d.Log, LockLoad: e.lockLoad,
		AdoptEpoch: e.adoptEpoch, WriterLag: e.WriterLag, Verified: e.m.verified, Metrics: d.Metrics},
		stock.Config{Keys: cfg.Keys, VoucherTTL: cfg.StockVoucherTTL, OrderStale: cfg.StockOrderStale,
			SweepInterval: cfg.ReconcileInterval, LagLimit: cfg.LagLimit, Pipelines: cfg.GrabPipelines, Batch: cfg.GrabBatch})
	return e
}

// Stock is the engine's stock service: activity SKUs, flash-sale orders and
// the TCC participant, on the engine's Redis, store, writer and load locks.
func (e *Engine) Stock() *stock.Service { return e.stock }

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

func (e *Engine) nowMs() int64 { return e.clock.Now().UnixMilli() }

type metrics struct {
	writerLag   prometheus.Gauge
	batchSize   prometheus.Histogram
	applied     prometheus.Counter
	deadLetters prometheus.Counter
	rebuilds    prometheus.Counter
	verified    prometheus.Counter
	// payAnomalies counts payment outcomes a person should look at, by kind.
	payAnomalies *prometheus.CounterVec
	payout       payoutMetrics
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
		payAnomalies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grab_payment_anomalies_total",
			Help: "Payment outcomes a person should look at: credited_back (money arrived where its packet cannot take it; credited to the sender), failure_after_success, given_up (no outcome; the trade ended as failed), amount_mismatch and channel_mismatch (a verified notification its trade refuses)."},
			[]string{"kind"}),
	}
	m.payout = newPayoutMetrics()
	if reg != nil {
		reg.MustRegister(m.writerLag, m.batchSize, m.applied, m.deadLetters, m.rebuilds, m.verified, m.payAnomalies)
		m.payout.register(reg)
	}
	return m
}
