// Command grabbench is the load harness: it runs a scenario on each engine —
// the raw probe script (what Redis itself can do), the engine in-process,
// grabd over HTTP, and the naive MySQL-lock scheme; for campaign, the engine
// in the sync payout mode too (engine-sync) — side by side, audits
// MySQL after each run, and reports throughput, latency, answers, writer lag
// and drain time (and for campaign, how long the payouts took to settle and
// the rate they were paid at). A failed audit exits 1.
//
// With -wrk a wrk process (wrk 4, in PATH) makes the http engine's grabs,
// each once, instead of Go clients sharing grabbench's process and cores
// with grabd's handler; then GET /healthz runs under wrk on the same
// listener for as long, and the report adds its req/s and the ratio
// "http grab / healthz". Not for flash-sale, nor with -rate.
//
//	grabbench                                  # group-storm on all four engines
//	grabbench -engines engine,http -c 32 -json out.json -png out.png
//	grabbench -engines http -rate 5000         # open loop at a fixed rate
//	grabbench -engines raw,http -wrk           # http's requests made by wrk, /healthz beside them
//	grabbench -engines engine,http -pay wechat # packets paid through WeChat Pay's simulator
//	grabbench -scenario flash-sale -skus 10 -stock 1000 -buyers 20000
//	grabbench -scenario campaign -awards 2000 -users 10000 -budget 1000.00 -transfer-errors 0.5
//	grabbench -scenario campaign -engines raw,engine,engine-sync,mysql-lock -transfer-rate 500
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/grab-engine/grab/engine/money"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opt, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "grabbench:", err)
		os.Exit(2)
	}
	ok, err := run(ctx, opt, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grabbench:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

type options struct {
	redisAddr, mysqlDSN string
	scenario            string // a name in scenarios
	storm               bench.GroupStorm
	flash               bench.FlashSale
	campaign            bench.Campaign
	budget              string // -budget, yuan
	// picked is the scenario the flags configured, checked.
	picked            bench.Scenario
	engines           []string
	url, adminToken   string
	load              bench.LoadOptions
	jsonPath, pngPath string
	cpuProfile        string
	keepDB, quiet     bool
	events            bool
	pipelines, batch  int
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	fs := flag.NewFlagSet("grabbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := bench.DefaultGroupStorm()
	defFlash := bench.DefaultFlashSale()
	defCampaign := bench.DefaultCampaign()
	var o options
	var engines string
	fs.StringVar(&o.redisAddr, "redis", envOr("REDIS_ADDR", "127.0.0.1:6379"), "Redis address (env REDIS_ADDR)")
	fs.StringVar(&o.mysqlDSN, "mysql", envOr("MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"),
		"MySQL DSN (env MYSQL_DSN); the bench creates a database of its own on that server and drops it after")
	names := scenarioNames()
	fs.StringVar(&o.scenario, "scenario", names[0], "scenario: "+strings.Join(names[:len(names)-1], ", ")+" or "+names[len(names)-1])
	fs.IntVar(&o.storm.Packets, "packets", def.Packets, "group-storm: packets per engine (P)")
	fs.IntVar(&o.storm.Shares, "shares", def.Shares, "group-storm: shares per packet (N)")
	fs.IntVar(&o.storm.Grabbers, "grabbers", def.Grabbers, "group-storm: grabbers per packet (G)")
	fs.StringVar(&o.storm.Pay, "pay", "balance", "group-storm: how the engine and http runs pay their packets: "+
		strings.Join(bench.PayMethods, ", ")+" (a channel's simulator over loopback, its notifications settling the packets while they are grabbed)")
	fs.IntVar(&o.flash.SKUs, "skus", defFlash.SKUs, "flash-sale: SKUs of the activity product (S)")
	fs.IntVar(&o.flash.Stock, "stock", defFlash.Stock, "flash-sale: stock per SKU (K)")
	fs.IntVar(&o.flash.Buyers, "buyers", defFlash.Buyers, "flash-sale: buyers, one order of qty 1 each (B)")
	fs.StringVar(&o.flash.Pick, "pick", defFlash.Pick, "flash-sale: how a buyer picks the SKU: round-robin or random")
	fs.Uint64Var(&o.flash.Seed, "seed", defFlash.Seed, "flash-sale: seed of -pick random; campaign: seed of the transfer faults")
	fs.IntVar(&o.campaign.Awards, "awards", defCampaign.Awards, "campaign: awards (A)")
	fs.IntVar(&o.campaign.Users, "users", defCampaign.Users, "campaign: users, one grab each (U)")
	fs.StringVar(&o.budget, "budget", money.Format(defCampaign.Budget),
		"campaign: budget in yuan, a decimal string (1000.00), split into the awards (each 0.01 to twice the mean)")
	fs.Float64Var(&o.campaign.Faults.ErrorRate, "transfer-errors", defCampaign.Faults.ErrorRate,
		"campaign: share of transfer service calls that fail (503) before anything is applied")
	fs.Float64Var(&o.campaign.Faults.LoseReplyRate, "transfer-lost", defCampaign.Faults.LoseReplyRate,
		"campaign: share of transfer service calls handled (a transfer applied) whose reply is lost")
	fs.Float64Var(&o.campaign.Faults.DuplicateRate, "transfer-dups", defCampaign.Faults.DuplicateRate,
		"campaign: share of transfers the network delivers twice at once")
	fs.DurationVar(&o.campaign.Faults.Latency, "transfer-latency", defCampaign.Faults.Latency,
		"campaign: each transfer service call waits up to this long (random) before it is handled")
	fs.Float64Var(&o.campaign.TransferRate, "transfer-rate", defCampaign.TransferRate,
		"campaign: the engine's transfer calls per second (GRAB_TRANSFER_RATE), first attempts and retries alike; 0: no limit")
	fs.IntVar(&o.campaign.PayoutWorkers, "payout-workers", defCampaign.PayoutWorkers,
		"campaign: awards the engine's payout pool, and each sweep, drive at once (GRAB_PAYOUT_WORKERS)")
	fs.IntVar(&o.storm.Concurrency, "c", def.Concurrency, "concurrent clients (C)")
	fs.StringVar(&engines, "engines", "", "engines to compare, in order (default "+strings.Join(bench.AllEngines, ",")+
		"; campaign adds "+bench.EngineSync+", its sync payout mode, after engine)")
	fs.StringVar(&o.url, "url", "", "a running grabd for the http engine (GRAB_AUTH=dev); default: grabd's handler in-process on loopback")
	fs.StringVar(&o.adminToken, "admin-token", envOr("GRAB_ADMIN_TOKEN", "dev-admin"), "admin token of the grabd at -url")
	fs.Float64Var(&o.load.Rate, "rate", 0, "open loop: start this many grabs a second (0: closed loop, as fast as answered)")
	fs.BoolVar(&o.load.Wrk, "wrk", false, "the http engine's requests made by a wrk process (wrk 4 in PATH), each once, "+
		"from -c connections, instead of Go clients in grabbench's process; then /healthz under wrk for as long, "+
		"and the ratio of the two (group-storm and campaign; not with -rate)")
	fs.IntVar(&o.load.WrkThreads, "wrk-threads", 0, "-wrk: wrk's threads, at most -c (0: min(2, -c))")
	fs.DurationVar(&o.load.MaxTime, "max-time", 20*time.Second, "stop an engine's run after this long (0: no limit)")
	fs.IntVar(&o.pipelines, "pipelines", 0, "engine: pipelines carrying concurrent grabs (0: the engine's default; -1: one round trip per grab)")
	fs.IntVar(&o.batch, "batch", 0, "engine: most grabs per pipeline (0: the engine's default)")
	fs.StringVar(&o.jsonPath, "json", "", "write the report as JSON to this file")
	fs.StringVar(&o.pngPath, "png", "", "draw throughput and latency per engine to this PNG file")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	fs.BoolVar(&o.keepDB, "keep-db", false, "keep the bench's database after the run")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress bar")
	fs.BoolVar(&o.events, "events", false, "turn the outbox on, relayed to an in-process NATS: report the outbox age p99 and audit every grab in the stream once (not with mysql-lock nor -url; without -engines, every other engine)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.flash.Concurrency, o.campaign.Concurrency = o.storm.Concurrency, o.storm.Concurrency
	o.campaign.Seed = o.flash.Seed
	if o.storm.Pay != "balance" && o.scenario != "group-storm" {
		return o, fmt.Errorf("-pay is for group-storm; %s pays no packets", o.scenario)
	}
	i := slices.IndexFunc(scenarios, func(e scenarioEntry) bool { return e.name == o.scenario })
	if i < 0 {
		return o, fmt.Errorf("unknown scenario %q (have %s)", o.scenario, strings.Join(names, ", "))
	}
	var err error
	if o.picked, err = scenarios[i].pick(&o); err != nil {
		return o, err
	}
	if scenarios[i].inProcess && o.url != "" {
		return o, fmt.Errorf("%s runs grabd in-process: -url is for %s", o.scenario, names[0])
	}
	for _, e := range strings.Split(engines, ",") {
		if e = strings.TrimSpace(e); e != "" {
			o.engines = append(o.engines, e)
		}
	}
	if len(o.engines) == 0 {
		o.engines = slices.Clone(bench.DefaultEngines(o.picked))
		if o.events {
			o.engines = slices.DeleteFunc(o.engines, func(e string) bool { return e == bench.EngineMySQLLock })
		}
	}
	if err := bench.CheckEngines(o.picked, o.engines); err != nil {
		return o, err
	}
	if o.events && (o.url != "" || slices.Contains(o.engines, bench.EngineMySQLLock)) {
		return o, errors.New("-events needs grabd in-process: not with -url nor the mysql-lock engine, which write no events")
	}
	if o.load.Rate < 0 {
		return o, errors.New("-rate must be positive")
	}
	if err := checkNumbers(o); err != nil {
		return o, err
	}
	if err := checkOutputs(o); err != nil {
		return o, err
	}
	if err := checkWrk(o); err != nil {
		return o, err
	}
	return o, nil
}

// checkNumbers refuses what the other flags' help does not give a
// meaning, and a -url that is not grabd's http(s) base URL.
func checkNumbers(o options) error {
	switch {
	case o.load.MaxTime < 0:
		return errors.New("-max-time must be 0 (no limit) or positive")
	case o.pipelines < -1:
		return errors.New("-pipelines must be -1 (one round trip per grab), 0 (the engine's default) or positive")
	case o.batch < 0:
		return errors.New("-batch must be 0 (the engine's default) or positive")
	}
	if o.url != "" {
		u, err := url.Parse(o.url)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("-url %q: want grabd's base URL, http://host:port", o.url)
		}
	}
	return nil
}

// checkOutputs refuses an output file whose directory is not there, which
// -json and -png would otherwise find only after the whole run.
func checkOutputs(o options) error {
	for _, f := range []struct{ flag, path string }{{"-json", o.jsonPath}, {"-png", o.pngPath}, {"-cpuprofile", o.cpuProfile}} {
		if f.path == "" {
			continue
		}
		if st, err := os.Stat(filepath.Dir(f.path)); err != nil || !st.IsDir() {
			return fmt.Errorf("%s %s: no directory %s to write it in", f.flag, f.path, filepath.Dir(f.path))
		}
	}
	return nil
}

// checkWrk refuses -wrk where wrk cannot make the load, wrk not in PATH
// included: at parse, before any engine runs.
func checkWrk(o options) error {
	switch {
	case o.load.WrkThreads < 0:
		return errors.New("-wrk-threads must be positive")
	case !o.load.Wrk && o.load.WrkThreads > 0:
		return errors.New("-wrk-threads is -wrk's: without -wrk the http engine's load is Go clients")
	case !o.load.Wrk:
		return nil
	case o.scenario == "flash-sale":
		return errors.New("-wrk sends bodiless grabs: flash-sale's deducts carry an order and are tallied per SKU for its audit")
	case o.load.Rate > 0:
		return errors.New("-wrk is a closed loop (wrk's connections): not with -rate")
	case !slices.Contains(o.engines, bench.EngineHTTP):
		return errors.New("-wrk makes the http engine's load: -engines has no http")
	}
	if _, err := exec.LookPath("wrk"); err != nil {
		return bench.ErrNoWrk
	}
	return nil
}

// run reports whether the audit passed.
func run(ctx context.Context, o options, stdout, stderr io.Writer) (bool, error) {
	rdb := redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: o.storm.Concurrency + 32})
	defer rdb.Close()
	// The writer's blocking reads get connections of their own.
	wrdb := redis.NewClient(&redis.Options{Addr: o.redisAddr, PoolSize: 32})
	defer wrdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return false, fmt.Errorf("redis %s: %w", o.redisAddr, err)
	}
	db, drop, err := store.CreateScratchMySQL(ctx, o.mysqlDSN, "grabbench")
	if err != nil {
		return false, err
	}
	if o.keepDB {
		defer db.Close()
	} else {
		defer drop(context.WithoutCancel(ctx))
	}
	keys := lua.NewKeys(fmt.Sprintf("grabbench%d", time.Now().UnixNano()), 16)
	defer deleteKeys(context.WithoutCancel(ctx), rdb, keys)

	cfg := bench.Config{Scenario: o.picked, Engines: o.engines, Redis: rdb, WriterRedis: wrdb, Keys: keys, DB: db,
		URL: strings.TrimSuffix(o.url, "/"), AdminToken: o.adminToken, Load: o.load,
		GrabPipelines: o.pipelines, GrabBatch: o.batch, Events: o.events, DrainTimeout: drainTimeout(o),
		Log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	if !o.quiet {
		cfg.Load.Progress = stderr
	}
	if o.cpuProfile != "" {
		stopProfile, err := startCPUProfile(o.cpuProfile)
		if err != nil {
			return false, err
		}
		defer stopProfile()
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return false, err
	}
	if err := rep.WriteTable(stdout); err != nil {
		return false, err
	}
	if o.jsonPath != "" {
		if err := writeFile(o.jsonPath, rep.WriteJSON); err != nil {
			return false, err
		}
	}
	if o.pngPath != "" {
		if err := writeFile(o.pngPath, rep.WritePNG); err != nil {
			return false, err
		}
	}
	return rep.Audit.OK, nil
}

// drainTimeout bounds each run's drain and settle: the harness's default
// (0), or for a campaign under -transfer-rate twice the time its payouts
// need at that rate, if longer than a minute. Each award takes
// 1 / (1 − -transfer-errors) calls on average, each a token of the limit.
func drainTimeout(o options) time.Duration {
	c := o.campaign
	if o.scenario != "campaign" || c.TransferRate <= 0 {
		return 0
	}
	need := 2 * float64(c.Awards) / (c.TransferRate * (1 - c.Faults.ErrorRate)) * float64(time.Second)
	if need >= math.MaxInt64 { // a rate so low that a Duration cannot hold the time; converted, it overflows
		return math.MaxInt64
	}
	return max(time.Minute, time.Duration(need))
}

// scenarioEntry is a scenario -scenario names: pick checks the flags it
// reads and returns the scenario they configured. A scenario that sets up
// what the API cannot (stock, a transfer service) runs grabd in-process
// only, not against -url.
type scenarioEntry struct {
	name      string
	pick      func(o *options) (bench.Scenario, error)
	inProcess bool
}

// scenarios are every scenario grabbench runs, the default first.
var scenarios = []scenarioEntry{
	{"group-storm", pickGroupStorm, false},
	{"flash-sale", pickFlashSale, true},
	{"campaign", pickCampaign, true},
}

// scenarioNames are the scenarios' names, in order.
func scenarioNames() []string {
	names := make([]string, len(scenarios))
	for i, e := range scenarios {
		names[i] = e.name
	}
	return names
}

func pickGroupStorm(o *options) (bench.Scenario, error) {
	if err := o.storm.Validate(); err != nil {
		return nil, err
	}
	if o.storm.Pay != "balance" && o.url != "" {
		return nil, errors.New("-pay with a channel runs grabd in-process: not with -url")
	}
	storm := o.storm
	storm.UserBase = time.Now().Unix() % 1_000_000 * 1_000_000 // fresh users against a long-lived grabd
	return &storm, nil
}

func pickFlashSale(o *options) (bench.Scenario, error) {
	if err := o.flash.Validate(); err != nil {
		return nil, err
	}
	flash := o.flash
	return &flash, nil
}

func pickCampaign(o *options) (bench.Scenario, error) {
	fen, err := money.Parse(o.budget)
	if err != nil {
		return nil, fmt.Errorf("-budget: %w", err)
	}
	o.campaign.Budget = fen
	if err := o.campaign.Validate(); err != nil {
		return nil, err
	}
	c := o.campaign
	return &c, nil
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func deleteKeys(ctx context.Context, rdb *redis.Client, keys lua.Keys) {
	iter := rdb.Scan(ctx, 0, keys.NS+":*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
