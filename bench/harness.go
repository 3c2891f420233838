package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/grab-engine/grab"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// Env is what scenarios and engines run against.
type Env struct {
	Redis  redis.UniversalClient
	Keys   lua.Keys
	DB     *store.DB
	Engine *grab.Grab
	// Setup makes accounts and packets: through the engine, or through the
	// API of an external grabd for the http engine.
	Setup Setup
	// events are the run's relay and stream (nil: events off).
	events *benchEvents
	// metrics is the engine's registry: the writer's batches are read from it.
	metrics *prometheus.Registry
}

// Config is one comparison.
type Config struct {
	Scenario Scenario
	Engines  []string // default DefaultEngines(Scenario)
	// Redis serves the grabs; WriterRedis the writer's blocking reads (nil: Redis).
	Redis, WriterRedis redis.UniversalClient
	Keys               lua.Keys
	// DB is the store the engine writes to and the audit reads: a database
	// of the bench's own (store.CreateScratchMySQL), as the audit reads it all.
	DB *store.DB
	// URL of a running grabd for the http engine (X-User-Id auth and an admin
	// token needed); empty starts grabd's handler in-process on loopback.
	// An external grabd writes to its own database: its run is not audited.
	URL        string
	AdminToken string
	Load       LoadOptions
	// GrabPipelines and GrabBatch configure the engine's auto-pipelining of
	// concurrent grabs (engine.Config); zero keeps the engine's defaults and
	// a negative GrabPipelines sends each grab on its own.
	GrabPipelines, GrabBatch int
	// DrainTimeout bounds the wait for the writer after a run, and then the
	// settling of what the run left unfinished (default 60 s each).
	DrainTimeout time.Duration
	// Events turns the store's outbox on and relays it to an in-process NATS
	// server: each in-process run reports the outbox's age p99 and is
	// audited against the stream (every grab in it once). Not with the
	// mysql-lock engine nor URL, which write no events.
	Events bool
	Log    *slog.Logger // nil: discard
}

// Run runs the scenario on each engine in turn, audits MySQL after each and
// returns the report. A failed audit is in the report, not an error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(cfg.Engines) == 0 {
		cfg.Engines = DefaultEngines(cfg.Scenario)
	}
	if err := CheckEngines(cfg.Scenario, cfg.Engines); err != nil {
		return nil, err
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = time.Minute
	}
	if cfg.Events && (cfg.URL != "" || slices.Contains(cfg.Engines, EngineMySQLLock)) {
		return nil, errEventsEngines
	}
	if err := checkWrk(cfg); err != nil {
		return nil, err
	}
	ecfg := engine.DefaultConfig()
	ecfg.Keys = cfg.Keys
	ecfg.GrabPipelines, ecfg.GrabBatch = cfg.GrabPipelines, cfg.GrabBatch
	// Lag is sampled during the run: measure it often enough to see it move.
	ecfg.Writer.MonitorEvery = 50 * time.Millisecond
	reg := prometheus.NewRegistry()
	deps := grab.Deps{Deps: engine.Deps{Redis: cfg.Redis, WriterRedis: cfg.WriterRedis, DB: cfg.DB, Log: cfg.Log, Metrics: reg}}
	cfg.Scenario.Configure(&deps, &ecfg)
	eng := grab.New(deps, ecfg)
	env := &Env{Redis: cfg.Redis, Keys: cfg.Keys, DB: cfg.DB, Engine: eng, Setup: EngineSetup{eng.Packets}, metrics: reg}
	if cfg.Events {
		ev, err := startEvents(ctx, cfg.DB, cfg.Log)
		if err != nil {
			return nil, fmt.Errorf("events: %w", err)
		}
		defer ev.stop()
		env.events = ev
	}

	writerCtx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	var writerDone sync.WaitGroup
	writerDone.Add(1)
	go func() { defer writerDone.Done(); eng.Engine.RunWriter(writerCtx) }()
	defer func() { stopWriter(); writerDone.Wait() }()

	rep := &Report{Scenario: cfg.Scenario.Params(), Machine: DescribeMachine(ctx, cfg.Redis, cfg.DB), Audit: AuditResult{OK: true}}
	rep.Scenario["name"] = cfg.Scenario.Name()
	if cfg.Load.Rate > 0 {
		rep.Scenario["rate"] = cfg.Load.Rate
	}
	if cfg.Load.Wrk {
		rep.Scenario["http_load"] = "wrk"
	}

	for _, name := range cfg.Engines {
		run, err := runEngine(ctx, cfg, env, name, rep)
		if err != nil {
			return nil, err
		}
		rep.Runs = append(rep.Runs, run)
		for _, v := range run.Audit.Violations {
			rep.Audit.Violations = append(rep.Audit.Violations, run.Engine+": "+v)
		}
		rep.Audit.OK = rep.Audit.OK && run.Audit.OK
	}
	if rep.Audit.Violations == nil {
		rep.Audit.Violations = []string{}
	}
	rep.Ratios = ratios(rep.Runs)
	return rep, nil
}

// runEngine prepares the scenario's trial on one engine, adds its params to
// rep, loads it and measures it.
func runEngine(ctx context.Context, cfg Config, env *Env, name string, rep *Report) (RunReport, error) {
	t, err := prepare(ctx, cfg, env, name)
	if err != nil {
		return RunReport{}, fmt.Errorf("%s: prepare: %w", name, err)
	}
	plan := t.Plan()
	rep.Unit = plan.unit()
	for k, v := range t.Report(ctx) {
		if _, ok := rep.Scenario[k]; !ok {
			rep.Scenario[k] = v
		}
	}
	g, closeG, err := grabber(ctx, cfg, env, name, t, plan.Concurrency)
	if err != nil {
		return RunReport{}, fmt.Errorf("%s: %w", name, err)
	}
	defer closeG()
	run, err := measure(ctx, cfg, env, g, t, plan)
	if err != nil {
		return RunReport{}, fmt.Errorf("%s: %w", name, err)
	}
	if w, ok := g.(wrkGrabber); ok && cfg.Load.Wrk && ctx.Err() == nil {
		// /healthz on the same listener, under wrk for as long: what grabd
		// serves when a request does none of the grab's work. Not once ctx
		// has ended: the run answers that.
		rate, err := wrkHealthz(ctx, w.baseURL(), plan.Concurrency, run.Elapsed, cfg.Load)
		if err != nil {
			return RunReport{}, fmt.Errorf("%s: /healthz: %w", name, err)
		}
		run.HealthzPerSec = &rate
	}
	return run, ctx.Err()
}

// prepare prepares the trial of engine name; an external grabd's trial sets
// up through its API.
func prepare(ctx context.Context, cfg Config, env *Env, name string) (Trial, error) {
	if name == EngineHTTP && cfg.URL != "" {
		ext := *env
		ext.Setup = HTTPSetup{HTTP: HTTP{URL: cfg.URL, Client: http.DefaultClient}, AdminToken: cfg.AdminToken}
		return cfg.Scenario.Prepare(ctx, &ext, name)
	}
	return cfg.Scenario.Prepare(ctx, env, name)
}

// grabber builds the trial's engine under test, until stop. For http it
// starts grabd's handler on a loopback listener, with a client for conc
// clients, unless an external URL was given.
func grabber(ctx context.Context, cfg Config, env *Env, name string, t Trial, conc int) (g Grabber, stop func(), err error) {
	var api HTTPSetup
	stop = func() {}
	if name == EngineHTTP {
		if api, stop, err = serveAPI(ctx, cfg, env, conc); err != nil {
			return nil, nil, err
		}
	}
	if g, err = t.Grabber(api); err != nil {
		stop()
		return nil, nil, err
	}
	return g, stop, nil
}

// serveAPI is grabd's API for the http engine, with a client for conc
// clients: the grabd at cfg.URL, or grabd's handler started on a loopback
// listener until stop.
func serveAPI(ctx context.Context, cfg Config, env *Env, conc int) (api HTTPSetup, stop func(), err error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: 2 * conc, MaxIdleConnsPerHost: 2 * conc}}
	if cfg.URL != "" {
		return HTTPSetup{HTTP: HTTP{URL: cfg.URL, Client: client}, AdminToken: cfg.AdminToken}, client.CloseIdleConnections, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return HTTPSetup{}, nil, err
	}
	// Admin is open to this run only: a token of its own, not a known one.
	var tok [16]byte
	rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	srv := &http.Server{Handler: grabhttp.New(env.Engine, grabhttp.Config{DevAuth: true, AdminToken: token}, cfg.Log, nil),
		ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(l)
	stop = func() {
		client.CloseIdleConnections()
		srv.Shutdown(context.WithoutCancel(ctx))
	}
	return HTTPSetup{HTTP: HTTP{URL: "http://" + l.Addr().String(), Client: client}, AdminToken: token}, stop, nil
}

// measure runs one engine's load, samples the writer lag, waits for the
// writer to drain, settles what the trial leaves unfinished and audits it
// and MySQL. Its error is wrk's: the load was not made.
func measure(ctx context.Context, cfg Config, env *Env, g Grabber, t Trial, plan Plan) (RunReport, error) {
	name := g.Name()
	inProcess := name == EngineEngine || name == EngineSync || (name == EngineHTTP && cfg.URL == "")
	lag := hdrhistogram.New(1, 3_600_000, 3) // ms
	age := hdrhistogram.New(1, 3_600_000, 3) // ms
	stopLag, stopAge := func() {}, func() {}
	if inProcess {
		stopLag = sampleLag(env.Engine.Engine, lag)
		if env.events != nil {
			stopAge = env.events.sampleOutboxAge(ctx, age)
		}
	}
	usesRedis := name != EngineMySQLLock && !(name == EngineHTTP && cfg.URL != "")
	cpuBefore, cpuErr := redisCPU(ctx, env.Redis)
	txs0, events0 := writerBatches(env.metrics)
	load, err := runLoad(ctx, cfg, g, plan)
	if err != nil {
		stopLag()
		stopAge()
		return RunReport{}, err
	}
	run := RunReport{Engine: name, Ops: load.Ops, Elapsed: load.Elapsed, OpsPerSec: load.PerSecond(),
		Codes: load.Codes, Errors: load.Errors, FirstErr: load.FirstErr, Audit: AuditResult{OK: true}}
	if cpuAfter, err := redisCPU(ctx, env.Redis); usesRedis && cpuErr == nil && err == nil && load.Ops > 0 {
		us := (cpuAfter - cpuBefore).Seconds() * 1e6 / float64(load.Ops)
		run.RedisCPUPerOp = &us
	}
	run.P50, run.P90, run.P99, run.P999 = load.percentile(50), load.percentile(90), load.percentile(99), load.percentile(99.9)
	a := &auditor{counts: map[string]int{}}
	if inProcess {
		measureDrain(ctx, cfg, t, load, a, &run)
		if txs, events := writerBatches(env.metrics); txs > txs0 {
			mean := (events - events0) / float64(txs-txs0)
			run.WriterBatch = &mean
		}
		stopLag()
		stopAge()
		p99, worst := float64(lag.ValueAtQuantile(99)), float64(lag.Max())
		run.WriterLagP99, run.WriterLagMax = &p99, &worst
		if env.events != nil {
			p99 := float64(age.ValueAtQuantile(99))
			run.OutboxAgeP99 = &p99
		}
	}
	measureSettle(ctx, cfg, t, a, &run)
	if p, ok := t.(payer); ok {
		measurePayouts(ctx, p, a, &run)
	}
	measureAudit(ctx, cfg, env, t, load, a, &run)
	if inProcess && env.events != nil {
		if err := env.events.auditEvents(ctx, cfg.DrainTimeout, a); err != nil {
			a.add("events audit failed", "%v", err)
		}
	}
	run.Audit = AuditResult{OK: len(a.violations) == 0, Violations: a.violations}
	return run, nil
}

// runLoad makes the plan's requests: with wrk for the http engine when
// cfg asks for it, else from Go clients in this process.
func runLoad(ctx context.Context, cfg Config, g Grabber, plan Plan) (Load, error) {
	if cfg.Load.Wrk && g.Name() == EngineHTTP {
		return RunWrk(ctx, g, plan, cfg.Load)
	}
	return RunLoad(ctx, g, plan, cfg.Load), nil
}

// checkWrk refuses a wrk load wrk cannot make: it is a closed loop, and
// must be installed when the http engine runs.
func checkWrk(cfg Config) error {
	switch {
	case !cfg.Load.Wrk:
		return nil
	case cfg.Load.Rate > 0:
		return errors.New("wrk's connections are a closed loop: no rate with wrk")
	case !slices.Contains(cfg.Engines, EngineHTTP):
		return nil
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return ErrNoWrk
	}
	return nil
}

// measureDrain waits for the trial's accepted requests to be durable, timed in run.
func measureDrain(ctx context.Context, cfg Config, t Trial, load Load, a *auditor, run *RunReport) {
	start := time.Now()
	err := t.Drain(ctx, load.Codes[CodeOK], cfg.DrainTimeout)
	d := float64(time.Since(start).Microseconds()) / 1000
	run.DrainMs = &d
	if err != nil {
		a.add("not durable", "%v", err)
	}
}

// measureSettle finishes what the trial left unfinished, timed in run unless it
// left nothing.
func measureSettle(ctx context.Context, cfg Config, t Trial, a *auditor, run *RunReport) {
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, cfg.DrainTimeout)
	sweeps, err := t.Settle(sctx)
	cancel()
	if errors.Is(err, ErrNothingToSettle) {
		return
	}
	d := float64(time.Since(start).Microseconds()) / 1000
	run.SettleMs, run.SettleSweeps = &d, &sweeps
	if err != nil {
		a.add("not settled", "%v", err)
	}
}

// Payouts are what a run paid out through a transfer service (campaign).
type Payouts struct {
	Applied int   // transfers the service applied: money moved
	Calls   int64 // transfer calls made, retries included (status queries are not calls)
	// Window is the time from the first award to the last transfer applied.
	Window time.Duration
	// Limit is the calls' limit per second (engine.Config.TransferRate, 0:
	// none); nil for the naive scheme, which has no limiter.
	Limit *float64
}

// A payer is a Trial that pays out: Run reports its Payouts after the
// settle, unless it says it paid nothing out (ok false).
type payer interface {
	Payouts(ctx context.Context) (p Payouts, ok bool, err error)
}

// measurePayouts reports the trial's payouts in run: their count, their
// calls and their rate over the window, and the limit.
func measurePayouts(ctx context.Context, t payer, a *auditor, run *RunReport) {
	p, ok, err := t.Payouts(ctx)
	if err != nil {
		a.add("payouts not measured", "%v", err)
		return
	}
	if !ok {
		return
	}
	run.Payouts, run.TransferCalls, run.TransferRate = &p.Applied, &p.Calls, p.Limit
	if p.Window > 0 {
		ms := float64(p.Window.Microseconds()) / 1000
		perSec := float64(p.Applied) / (ms / 1000) // over the window as reported
		run.PayoutWindowMs, run.PayoutsPerSec = &ms, &perSec
	}
}

// measureAudit runs the trial's audit, then the audit of the whole database for
// the engines that write to the bench's own (not raw, which writes none,
// nor an external grabd, which writes its own).
func measureAudit(ctx context.Context, cfg Config, env *Env, t Trial, load Load, a *auditor, run *RunReport) {
	vs, audited, err := t.Audit(ctx, load)
	if err != nil {
		a.add("audit failed", "%v", err)
	}
	a.violations = append(a.violations, vs...)
	run.Audited = audited
	if run.Engine == EngineRaw || (run.Engine == EngineHTTP && cfg.URL != "") {
		return
	}
	run.Audited = true
	res, err := Audit(ctx, env.DB)
	if err != nil {
		a.add("audit failed", "%v", err)
		return
	}
	a.violations = append(a.violations, res.Violations...)
}

// redisCPU is the CPU time the Redis server has used since it started.
func redisCPU(ctx context.Context, rdb redis.UniversalClient) (time.Duration, error) {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, field := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(infoField(info, field), 64)
		if err != nil {
			return 0, fmt.Errorf("redis INFO %s: %w", field, err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// sampleLag records the engine's writer lag every 10 ms until stopped.
func sampleLag(e *engine.Engine, h *hdrhistogram.Histogram) (stop func()) {
	return every(10*time.Millisecond, func() { h.RecordValue(e.WriterLag().Milliseconds()) })
}

// every calls fn every d until the returned stop, which waits for the last call.
func every(d time.Duration, fn func()) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// waitDrained waits until MySQL shows at least `accepted` owned shares among
// the packets: every grab answered OK is durable.
func waitDrained(ctx context.Context, db *store.DB, packets []int64, accepted int64, timeout time.Duration) error {
	if len(packets) == 0 {
		return nil
	}
	var n int64
	err := poll(ctx, timeout, func() (bool, error) {
		var err error
		n, err = ownedShares(ctx, db, packets)
		return n >= accepted, err
	})
	if errors.Is(err, errTimedOut) {
		return fmt.Errorf("%d of %d accepted grabs in MySQL after %v", n, accepted, timeout)
	}
	return err
}

// errTimedOut is poll's answer when its condition did not come true in time.
var errTimedOut = errors.New("bench: timed out")

// poll checks done every 5 ms until it holds, fails, ctx ends or timeout
// passes (errTimedOut). done is checked at least once.
func poll(ctx context.Context, timeout time.Duration, done func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errTimedOut
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func ms(h *hdrhistogram.Histogram, q float64) float64 {
	return float64(h.ValueAtQuantile(q)) / 1000
}

// packetMemory is the mean MEMORY USAGE of an open packet's keys (state,
// shares, grabbed users, eligible users) over a sample of the packets. The
// shard's event stream is shared, so it is not counted.
func packetMemory(ctx context.Context, rdb redis.UniversalClient, keys lua.Keys, packets []int64) (int64, error) {
	n := min(len(packets), 20)
	var total int64
	for _, id := range packets[:n] {
		k := keys.Packet(id)
		for _, key := range []string{k.State, k.Shares, k.Grabbed, k.Eligible} {
			b, err := rdb.MemoryUsage(ctx, key, 0).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return 0, err
			}
			total += b
		}
	}
	return total / int64(n), nil
}

// writerBatches reads the writer's store transactions so far and the
// events they applied, from grab_writer_batch_size in reg.
func writerBatches(reg *prometheus.Registry) (txs uint64, events float64) {
	if reg == nil {
		return 0, 0
	}
	mfs, err := reg.Gather()
	if err != nil {
		return 0, 0
	}
	for _, mf := range mfs {
		if mf.GetName() != "grab_writer_batch_size" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			txs, events = txs+h.GetSampleCount(), events+h.GetSampleSum()
		}
	}
	return txs, events
}
