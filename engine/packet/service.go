package packet

import (
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Deps are what the packet service needs besides the engine.
type Deps struct {
	// Provider takes third-party payments on every channel that Providers
	// does not name (a company gateway, or the simulator); nil with no
	// Providers: only balance payments.
	Provider channel.Provider
	// Providers are native channels' own providers, by channel
	// (channel.Alipay → Alipay, channel.Wechat → WeChat Pay); they take
	// precedence over Provider.
	Providers map[string]channel.Provider
}

// Service sends, pays, grabs and refunds red packets, and keeps the balances
// they move. It is safe for concurrent use.
type Service struct {
	core  *engine.Engine
	rdb   redis.UniversalClient
	db    *store.DB
	clock engine.Clock
	rand  engine.Rand
	log   *slog.Logger
	cfg   engine.Config
	keys  lua.Keys
	pipe  *lua.GrabPipeline           // nil: each grab on its own
	pays  map[string]channel.Provider // by channel; a channel missing is not enabled
	// anomalies counts payment outcomes a person should look at, by kind.
	anomalies *prometheus.CounterVec
	// reconcileAt is where the reconciler's walk over trades without an
	// outcome goes on from (stalePayments).
	reconcileMu sync.Mutex
	reconcileAt store.PaymentCursor
}

// New builds the packet service on e's Redis, store and writer. The store
// must be migrated (store.DB.Migrate). Its background loops are RunRefunder
// and RunReconciler, next to the engine's RunWriter.
func New(e *engine.Engine, d Deps) *Service {
	s := &Service{core: e, rdb: e.Redis(), db: e.DB(), clock: e.Clock(), rand: e.Rand(), log: e.Log(), cfg: e.Config(),
		keys: e.Keys(), pipe: e.Pipeline(), pays: providers(d)}
	s.anomalies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "grab_payment_anomalies_total",
		Help: "Payment outcomes a person should look at: credited_back (money arrived where its packet cannot take it; credited to the sender), failure_after_success, given_up (no outcome; the trade ended as failed), amount_mismatch and channel_mismatch (a verified notification its trade refuses)."},
		[]string{"kind"})
	if reg := e.Metrics(); reg != nil {
		reg.MustRegister(s.anomalies)
	}
	return s
}

// providers maps each channel to the provider that serves it: its own in
// d.Providers, else d.Provider.
func providers(d Deps) map[string]channel.Provider {
	m := map[string]channel.Provider{}
	for _, ch := range channel.All {
		if p := d.Providers[ch]; p != nil {
			m[ch] = p
		} else if d.Provider != nil {
			m[ch] = d.Provider
		}
	}
	return m
}

func (s *Service) nowMs() int64 { return s.clock.Now().UnixMilli() }
