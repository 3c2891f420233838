package campaign

import (
	"log/slog"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Deps are what the campaign service needs besides the engine.
type Deps struct {
	// Transfer pays awards out. Nil: campaigns still take grabs, and their
	// awards stay received until a service with a transfer service pays them.
	Transfer transfer.Service
}

// Service runs campaigns: it creates them, hands their pre-split awards out
// from Redis, and pays each award out through the transfer service exactly
// once. It is safe for concurrent use.
type Service struct {
	core  *engine.Engine
	rdb   redis.UniversalClient
	db    *store.DB
	clock engine.Clock
	rand  engine.Rand
	log   *slog.Logger
	cfg   engine.Config
	keys  lua.Keys
	run   lua.Runner // campaign grabs: the engine's grab pipeline, or Direct
	xfer  transfer.Service
	hooks payoutHooks
	m     payoutMetrics
	limit *rate.Limiter // transfer calls (Config.TransferRate)
}

// New builds the campaign service on e's Redis, store and writer. The store
// must be migrated (store.DB.Migrate). Its background loop is
// RunPayoutSweeper (which runs the payout pool too), next to the engine's RunWriter.
func New(e *engine.Engine, d Deps) *Service {
	s := &Service{core: e, rdb: e.Redis(), db: e.DB(), clock: e.Clock(), rand: e.Rand(), log: e.Log(), cfg: e.Config(),
		keys: e.Keys(), run: lua.Direct(e.Redis()), xfer: d.Transfer, m: newPayoutMetrics(),
		limit: newLimiter(e.Config().TransferRate)}
	if p := e.Pipeline(); p != nil {
		// Campaign grabs share the packet grabs' round trips: one queue,
		// so a burst of either fills the same pipelines.
		s.run = p
	}
	if reg := e.Metrics(); reg != nil {
		s.m.register(reg)
	}
	return s
}

func (s *Service) nowMs() int64 { return s.clock.Now().UnixMilli() }
