package engine

import (
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/grab-engine/grab/lua"
)

// Config tunes the engine. A zero field takes its default from
// DefaultConfig (the Writer's from DefaultWriterConfig): zero always means
// the default, and a setting that can be turned off says how (GrabPipelines:
// negative).
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
	// (see lua.GrabPipeline; packet and campaign grabs share them), and as
	// many carry stock deducts; negative turns pipelining off: each grab and
	// deduct goes on its own.
	GrabPipelines int
	// GrabBatch is the most grabs one pipeline carries.
	GrabBatch int
	// StockVoucherTTL is how long a voucher's list of touched products (for
	// its rollback) and an order's record across products are kept.
	StockVoucherTTL time.Duration
	// StockOrderStale is how long an order across products may go without
	// an answer before the stock order sweep (stock.Service.SweepOrders)
	// settles it.
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
	// PayoutWorkers is how many overdue awards one sweep drives at once,
	// and in PayoutAsync mode how many received awards the payout pool of
	// each process drives at once.
	PayoutWorkers int
	// PayoutMode is PayoutAsync (a campaign grab answers from Redis and the
	// payout pool pays the award from MySQL) or PayoutSync (the grab's
	// answer waits for the award's row and its transfer call).
	PayoutMode string
	// TransferRate bounds the transfer calls of one process, per second;
	// 0 means unlimited.
	TransferRate float64
}

// Payout modes of Config.PayoutMode.
const (
	PayoutAsync = "async"
	PayoutSync  = "sync"
)

// DefaultConfig is the production configuration; `go doc -src` shows its
// values, and README.md the settings of grabd that change them.
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
		PayoutMode:          PayoutAsync,
	}
}

// withDefaults is c with every zero field taken from DefaultConfig, and
// the writer's from DefaultWriterConfig. It is the one place defaults are
// filled. Negative numbers are not defaults: only GrabPipelines gives them
// a meaning (off).
func (c Config) withDefaults() Config {
	w := c.Writer
	fillZero(&c, DefaultConfig())
	c.Keys = lua.NewKeys(c.Keys.NS, c.Keys.Shards) // a namespace or shard count alone keeps the other's default
	c.Writer = w.withDefaults()
	return c
}

// DefaultWriterConfig is the production writer configuration.
func DefaultWriterConfig() WriterConfig {
	return WriterConfig{Group: "writer", Batch: 256, Block: 500 * time.Millisecond,
		ClaimIdle: 3 * time.Second, ClaimEvery: time.Second,
		RetryMin: 50 * time.Millisecond, RetryMax: 500 * time.Millisecond, ApplyTimeout: 30 * time.Second,
		MonitorEvery: 250 * time.Millisecond, DrainTimeout: 30 * time.Second}
}

// withDefaults is c with every zero field taken from DefaultWriterConfig,
// Consumer from the host and process, and RetryMax at least RetryMin.
func (c WriterConfig) withDefaults() WriterConfig {
	if c.Consumer == "" {
		host, _ := os.Hostname()
		c.Consumer = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	fillZero(&c, DefaultWriterConfig())
	c.RetryMax = max(c.RetryMax, c.RetryMin)
	return c
}

// fillZero sets every zero field of *dst to the same field of def. A struct
// field is zero only when all of it is (Limits, Keys).
func fillZero[T any](dst *T, def T) {
	v, d := reflect.ValueOf(dst).Elem(), reflect.ValueOf(def)
	for i := range v.NumField() {
		if f := v.Field(i); f.IsZero() {
			f.Set(d.Field(i))
		}
	}
}
