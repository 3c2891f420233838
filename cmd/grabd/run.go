package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	nethttp "net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// shutdownTimeout bounds how long in-flight requests may take once a stop is asked.
const shutdownTimeout = 15 * time.Second

// Run serves until ctx is cancelled, then stops accepting requests, lets the
// writer drain every accepted grab into the store, and returns nil.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	var cl closers
	defer cl.close()
	st, err := openStores(ctx, &cfg, log, &cl)
	if err != nil {
		return err
	}
	// Listening before the payment providers start: the embedded simulators
	// notify grabd's own address.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	cl.add(func() { ln.Close() })
	svc, err := newServices(ctx, cfg, st, selfURL(ln.Addr().(*net.TCPAddr)), log, &cl)
	if err != nil {
		return err
	}
	stop := startLoops(ctx, svc.grab, log)
	stopEvents := startEventLoops(ctx, svc.events, log)
	err = serve(ctx, cfg, ln, svc.handler, log)
	// The loops outlive the HTTP server: the writer stops only after the
	// last request is answered, and drains what those requests accepted.
	// What the relay leaves, the next start publishes; what the webhooks
	// leave unacked, they post after it.
	stop()
	stopEvents()
	return err
}

// closers are what Run opened, closed last first.
type closers []func()

func (c *closers) add(f ...func()) { *c = append(*c, f...) }

func (c closers) close() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// stores are grabd's connections: two Redis pools (the writer's blocking
// stream reads must never hold the connections grabs need) and the store.
type stores struct {
	apiRedis, writerRedis redis.UniversalClient
	db                    *store.DB
}

// openStores connects to Redis and the store, in-process in the embedded
// mode (which also fills cfg's missing secrets), and migrates the store.
func openStores(ctx context.Context, cfg *Config, log *slog.Logger, cl *closers) (stores, error) {
	open := openProduction
	if cfg.Embedded() {
		open = openEmbedded
	}
	st, err := open(ctx, cfg, log, cl)
	if err != nil {
		return stores{}, err
	}
	if err := st.db.Migrate(ctx); err != nil {
		return stores{}, fmt.Errorf("migrations: %w", err)
	}
	return st, nil
}

// openEmbedded runs miniredis and opens SQLite in cfg.DataDir; the mode
// takes dev auth, and a dev admin token and random secrets where unset.
func openEmbedded(ctx context.Context, cfg *Config, log *slog.Logger, cl *closers) (stores, error) {
	log.Warn("embedded mode: in-process Redis (miniredis) and SQLite; NOT FOR PRODUCTION", "data_dir", cfg.DataDir)
	mr, stopClock, err := startMiniredis()
	if err != nil {
		return stores{}, err
	}
	cl.add(mr.Close, stopClock)
	st := stores{apiRedis: redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: 64}),
		writerRedis: redis.NewClient(&redis.Options{Addr: mr.Addr(), PoolSize: cfg.Engine.Keys.Shards + 8})}
	cl.add(func() { st.apiRedis.Close() }, func() { st.writerRedis.Close() })
	if st.db, err = store.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "grab.db")); err != nil {
		return stores{}, err
	}
	cl.add(func() { st.db.Close() })
	cfg.DevAuth = true
	if cfg.AdminToken == "" {
		cfg.AdminToken = "dev-admin"
		log.Warn("embedded mode: admin token is dev-admin", "header", "Authorization: Bearer dev-admin")
	}
	if cfg.JWTSecret == "" {
		cfg.JWTSecret = randomSecret()
		log.Info("embedded mode: generated a random JWT secret; use X-User-Id for users")
	}
	if cfg.PaySecret == "" {
		cfg.PaySecret = randomSecret()
	}
	return st, nil
}

// openProduction connects to Redis (its scripts preloaded) and MySQL, and
// warns of risky settings.
func openProduction(ctx context.Context, cfg *Config, log *slog.Logger, cl *closers) (stores, error) {
	keys := cfg.Engine.Keys
	st := stores{apiRedis: newRedis(cfg.RedisAddrs, max(256, 20*runtime.GOMAXPROCS(0)), keys),
		writerRedis: newRedis(cfg.RedisAddrs, keys.Shards+8, keys)}
	cl.add(func() { st.apiRedis.Close() }, func() { st.writerRedis.Close() })
	if err := st.apiRedis.Ping(ctx).Err(); err != nil {
		return stores{}, fmt.Errorf("redis %v: %w", cfg.RedisAddrs, err)
	}
	checkEviction(ctx, st.apiRedis, log)
	if err := lua.Preload(ctx, st.apiRedis); err != nil {
		return stores{}, fmt.Errorf("redis: loading scripts: %w", err)
	}
	var err error
	if st.db, err = store.OpenMySQL(ctx, cfg.MySQLDSN); err != nil {
		return stores{}, err
	}
	cl.add(func() { st.db.Close() })
	if cfg.DevAuth {
		log.Warn("GRAB_AUTH=dev: X-User-Id is accepted without a token; never use this in production")
	}
	if cfg.AdminToken == "" {
		log.Warn("GRAB_ADMIN_TOKEN is not set: admin endpoints answer 401")
	}
	if cfg.JWTSecret != "" && len(cfg.JWTSecret) < 32 {
		log.Warn("GRAB_JWT_SECRET is shorter than 32 bytes")
	}
	return st, nil
}

// services are what grabd serves: every domain on one engine, the HTTP
// API over them, and the loops on their events (nil: none).
type services struct {
	grab    *grab.Grab
	handler nethttp.Handler
	events  *eventLoops
}

// newServices wires the domain: payment providers (self is grabd's own
// base URL, which the embedded simulators notify), the transfer service,
// the domains, the event relay and webhooks and the HTTP API, with their metrics in one
// registry.
func newServices(ctx context.Context, cfg Config, st stores, self string, log *slog.Logger, cl *closers) (services, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pay, err := startPayments(ctx, cfg, self, log)
	if err != nil {
		return services{}, err
	}
	cl.add(pay.stop)
	xfer, stopSim, err := transferService(ctx, cfg, log)
	if err != nil {
		return services{}, err
	}
	cl.add(stopSim)
	g := grab.New(grab.Deps{Deps: engine.Deps{Redis: st.apiRedis, WriterRedis: st.writerRedis, DB: st.db, Log: log, Metrics: reg},
		Payments: packet.Deps{Provider: pay.shared, Providers: pay.natives}, Campaigns: campaign.Deps{Transfer: xfer}}, cfg.Engine)
	ev, err := startEvents(ctx, cfg, st.db, log, reg, cl)
	if err != nil {
		return services{}, err
	}
	hcfg := grabhttp.Config{JWTSecret: []byte(cfg.JWTSecret), AdminToken: cfg.AdminToken,
		DevAuth: cfg.DevAuth, PaySecret: []byte(cfg.PaySecret), Notifiers: pay.notifiers}
	if ev != nil {
		hcfg.Ready = append(hcfg.Ready, func(context.Context) error { return ev.relay.Stuck() })
	}
	handler := grabhttp.New(g, hcfg, log, reg)
	return services{grab: g, handler: handler, events: ev}, nil
}

// startLoops runs g's writer and background jobs (grab.Grab.Run) until the
// returned stop is called; stop ends the jobs first, so the writer drains
// the events of their last pass, then the writer, and waits for both.
func startLoops(ctx context.Context, g *grab.Grab, log *slog.Logger) (stop func()) {
	stopRun := goRun(ctx, "writer", g.Run, log)
	return func() {
		stopRun()
		log.Info("stopped: the writer drained")
	}
}

// goRun runs run in a goroutine, on a context ctx's cancellation does not
// end, until the returned stop cancels it and waits; an error it ends
// with is logged as what stopped.
func goRun(ctx context.Context, what string, run func(context.Context) error, log *slog.Logger) (stop func()) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run(runCtx); err != nil {
			log.Error(what+" stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }
}

// serve answers requests on ln until ctx is cancelled or serving fails,
// then lets requests in flight finish (up to shutdownTimeout).
func serve(ctx context.Context, cfg Config, ln net.Listener, handler nethttp.Handler, log *slog.Logger) error {
	srv := &nethttp.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.onListen != nil {
		cfg.onListen(ln.Addr())
	}
	log.Info("grabd listening", "addr", ln.Addr().String(), "embedded", cfg.Embedded(), "shards", cfg.Engine.Keys.Shards,
		"dev_auth", cfg.DevAuth)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	var err error
	select {
	case <-ctx.Done():
		log.Info("stopping: no new requests; draining")
	case err = <-serveErr:
	}
	shCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shCtx); err != nil {
		log.Warn("shutdown: requests still running were cut", "err", err)
	}
	if errors.Is(err, nethttp.ErrServerClosed) {
		err = nil
	}
	return err
}

// transferService is the client of the transfer service that pays campaign
// awards: the configured one; in the embedded mode without one, the
// simulator served in-process on a loopback port (stop ends it); in
// production without one, none, and awards stay received.
func transferService(ctx context.Context, cfg Config, log *slog.Logger) (xfer transfer.Service, stop func(), err error) {
	switch {
	case cfg.TransferURL != "":
		log.Info("transfer service", "url", cfg.TransferURL, "timeout", showDuration(cfg.Engine.TransferTimeout))
		return transfer.NewClient(cfg.TransferURL, []byte(cfg.TransferSecret), cfg.Engine.TransferTimeout, nil), func() {}, nil
	case !cfg.Embedded():
		log.Warn("GRAB_TRANSFER_URL is not set: campaign awards are granted but stay received until a transfer service pays them")
		return nil, func() {}, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, fmt.Errorf("embedded transfer simulator: %w", err)
	}
	secret := []byte(randomSecret())
	sim := transfersim.New(secret, transfersim.Faults{}, uint64(time.Now().UnixNano()))
	simCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := sim.Serve(simCtx, ln); err != nil {
			log.Warn("embedded transfer simulator stopped", "err", err)
		}
	}()
	log.Warn("transfer service: the built-in simulator; campaign payouts succeed in-process, no money moves",
		"addr", ln.Addr().String())
	client := transfer.NewClient("http://"+ln.Addr().String(), secret, cfg.Engine.TransferTimeout, nil)
	return client, func() { cancel(); <-done }, nil
}

// newRedis connects to Redis (a cluster when given several addresses). Every
// new connection stamps its server's dataset epoch before anything runs on
// it, from the very first one (lua.WatchDataset), so a Redis that restarted
// older than MySQL is verified before it serves.
func newRedis(addrs []string, poolSize int, keys lua.Keys) redis.UniversalClient {
	var c redis.UniversalClient
	if len(addrs) > 1 {
		c = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, PoolSize: poolSize})
	} else {
		c = redis.NewClient(&redis.Options{Addr: addrs[0], PoolSize: poolSize})
	}
	lua.WatchDataset(c, keys)
	return c
}

// checkEviction warns when Redis may evict keys: an evicted packet or stream
// loses grabs. Managed Redis often forbids CONFIG; that is not an error.
func checkEviction(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	res, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		log.Debug("cannot read maxmemory-policy", "err", err)
		return
	}
	if p, ok := res["maxmemory-policy"]; ok && p != "noeviction" {
		log.Warn("Redis maxmemory-policy is not noeviction: evicted keys lose grabs", "maxmemory-policy", p)
	}
}

// startMiniredis runs an in-process Redis on a loopback port. miniredis
// moves TTLs only when told, so a ticker tells it how much time has passed.
func startMiniredis() (*miniredis.Miniredis, func(), error) {
	mr := miniredis.NewMiniRedis()
	if err := mr.StartAddr("127.0.0.1:0"); err != nil {
		return nil, nil, fmt.Errorf("embedded redis: %w", err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-t.C:
				mr.FastForward(now.Sub(last))
				last = now
			}
		}
	}()
	return mr, func() { close(stop); <-done }, nil
}

// selfURL is grabd's base URL as a process on this machine reaches it: the
// address it listens on, or IPv4 loopback when that is every address (a
// dual-stack listener takes IPv4 too).
func selfURL(a *net.TCPAddr) string {
	ip := a.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

func randomSecret() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
