package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

func TestParseFlagsRefusesBadSettings(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "nope"},
		{"-events", "-url", "http://127.0.0.1:8080"},
		{"-events", "-engines", "engine,mysql-lock"},
		{"-shares", "101"},
		{"-grabbers", "600"},
		{"-c", "0"},
		{"-rate", "-1"},
		{"extra"},
		{"-scenario", "flash-sale", "-skus", "0"},
		{"-scenario", "flash-sale", "-skus", "101"},
		{"-scenario", "flash-sale", "-stock", "-1"},
		{"-scenario", "flash-sale", "-buyers", "0"},
		{"-scenario", "flash-sale", "-pick", "nope"},
		{"-scenario", "flash-sale", "-c", "0"},
		{"-scenario", "flash-sale", "-url", "http://127.0.0.1:8080"},
		{"-pay", "paypal"},
		{"-pay", "wechat", "-url", "http://127.0.0.1:8080"},
		{"-scenario", "flash-sale", "-pay", "alipay"},
		{"-scenario", "campaign", "-pay", "unionpay"},
		{"-scenario", "campaign", "-awards", "0"},
		{"-scenario", "campaign", "-awards", "100001"},
		{"-scenario", "campaign", "-users", "0"},
		{"-scenario", "campaign", "-budget", "-1"},
		{"-scenario", "campaign", "-budget", "1.234"},
		{"-scenario", "campaign", "-budget", "10000000.01"},            // over a campaign's limit
		{"-scenario", "campaign", "-awards", "200", "-budget", "1.99"}, // under 0.01 an award
		{"-scenario", "campaign", "-transfer-errors", "1"},
		{"-scenario", "campaign", "-transfer-errors", "-0.1"},
		{"-scenario", "campaign", "-transfer-lost", "1"},
		{"-scenario", "campaign", "-transfer-dups", "1.5"},
		{"-scenario", "campaign", "-transfer-latency", "-1ms"},
		{"-scenario", "campaign", "-transfer-latency", "1h"},
		{"-scenario", "campaign", "-c", "0"},
		{"-scenario", "campaign", "-url", "http://127.0.0.1:8080"},
		{"-wrk", "-rate", "100"},
		{"-wrk", "-scenario", "flash-sale"},
		{"-wrk", "-engines", "raw,engine"},
		{"-wrk", "-wrk-threads", "-1"},
		{"-wrk-threads", "2"}, // without -wrk: nothing would run on them
		{"-max-time", "-1s"},  // was no limit, wrk's a day
		{"-pipelines", "-2"},  // -1 is off; below it was off too, silently
		{"-batch", "-1"},      // was a batch of 1, not the default
		{"-url", "notaurl"},   // failed after the engines before http
		{"-url", "127.0.0.1:8080"},
		{"-url", "ftp://127.0.0.1:8080"},
		{"-url", "http://"},
		{"-json", "/nonexistent/r.json"}, // was found after the whole run
		{"-png", "/nonexistent/r.png"},
		{"-cpuprofile", "/nonexistent/cpu.out"},
		{"-json", "main.go/r.json"}, // a file for a directory
		{"-scenario", "campaign", "-transfer-rate", "-1"},
		{"-scenario", "campaign", "-transfer-rate", "NaN"},
		{"-scenario", "campaign", "-transfer-rate", "+Inf"},
		{"-scenario", "campaign", "-payout-workers", "-1"},
		{"-engines", "engine-sync"}, // campaign's alone
		{"-scenario", "flash-sale", "-engines", "raw,engine-sync"},
		{"-engines", "raw,nope"},
		{"-engines", "raw,http,http"},
	} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
	o, err := parseFlags([]string{"-engines", "raw, http"}, io.Discard)
	if err != nil || !slices.Equal(o.engines, []string{"raw", "http"}) {
		t.Errorf("engines %q, %v", o.engines, err)
	}
	// group-storm's limits do not bind flash-sale, and -c is shared.
	o, err = parseFlags([]string{"-scenario", "flash-sale", "-skus", "4", "-stock", "7", "-buyers", "50",
		"-pick", "random", "-seed", "3", "-c", "5", "-shares", "101"}, io.Discard)
	if err != nil || o.flash.SKUs != 4 || o.flash.Stock != 7 || o.flash.Buyers != 50 || o.flash.Pick != "random" ||
		o.flash.Seed != 3 || o.flash.Concurrency != 5 {
		t.Errorf("flash-sale flags: %+v, %v", o.flash, err)
	}
	// The budget is yuan; -c and -seed are shared; -budget binds only campaign.
	o, err = parseFlags([]string{"-scenario", "campaign", "-awards", "30", "-users", "100", "-budget", "12.5",
		"-transfer-errors", "0.2", "-transfer-lost", "0", "-transfer-dups", "1", "-transfer-latency", "5ms",
		"-transfer-rate", "500", "-payout-workers", "3", "-c", "6", "-seed", "9", "-engines", "engine-sync,engine"}, io.Discard)
	c := o.campaign
	if err != nil || c.Awards != 30 || c.Users != 100 || c.Budget != 1250 || c.Faults.ErrorRate != 0.2 || c.Faults.LoseReplyRate != 0 ||
		c.Faults.DuplicateRate != 1 || c.Faults.Latency != 5*time.Millisecond || c.TransferRate != 500 || c.PayoutWorkers != 3 ||
		c.Concurrency != 6 || c.Seed != 9 || !slices.Equal(o.engines, []string{"engine-sync", "engine"}) {
		t.Errorf("campaign flags: %+v, engines %q, %v", c, o.engines, err)
	}
	// The rate and workers default to the engine's (no limit, 8 workers); engine-sync runs by default.
	o, err = parseFlags([]string{"-scenario", "campaign"}, io.Discard)
	if def := bench.DefaultCampaign(); err != nil || o.campaign.Awards != def.Awards || o.campaign.Users != def.Users ||
		o.campaign.Budget != def.Budget || o.campaign.Faults != def.Faults || o.campaign.TransferRate != 0 ||
		o.campaign.PayoutWorkers != 8 || !slices.Equal(o.engines, []string{"raw", "engine", "engine-sync", "http", "mysql-lock"}) {
		t.Errorf("campaign defaults: %+v, engines %q, %v", o.campaign, o.engines, err)
	}
	if o, err := parseFlags(nil, io.Discard); err != nil || !slices.Equal(o.engines, bench.AllEngines) {
		t.Errorf("group-storm's engines %q, %v", o.engines, err)
	}
	o, err = parseFlags([]string{"-scenario", "campaign", "-wrk", "-wrk-threads", "3", "-engines", "http"}, io.Discard)
	if err != nil || !o.load.Wrk || o.load.WrkThreads != 3 {
		t.Errorf("-wrk -wrk-threads 3: %+v, %v", o.load, err)
	}
	o, err = parseFlags([]string{"-max-time", "0", "-pipelines", "-1", "-batch", "0", "-url", "https://grabd.internal:8443/"}, io.Discard)
	if err != nil || o.load.MaxTime != 0 || o.pipelines != -1 || o.batch != 0 || o.url != "https://grabd.internal:8443/" {
		t.Errorf("-max-time 0 -pipelines -1 -batch 0 -url https://…: %v %d %d %q, %v", o.load.MaxTime, o.pipelines, o.batch, o.url, err)
	}
	if _, err := parseFlags([]string{"-budget", "nope"}, io.Discard); err != nil {
		t.Errorf("-budget refused for group-storm: %v", err)
	}
}

// -wrk without wrk in PATH is a bad setting like the others (exit 2),
// refused before any engine runs, not after the engines before http.
func TestParseFlagsRefusesWrkNotInPath(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, args := range [][]string{
		{"-wrk"},
		{"-wrk", "-engines", "raw,http", "-url", "http://127.0.0.1:8080"},
		{"-wrk", "-scenario", "campaign", "-engines", "engine,http"},
	} {
		if _, err := parseFlags(args, io.Discard); !errors.Is(err, bench.ErrNoWrk) {
			t.Errorf("%q: %v, want %v", args, err, bench.ErrNoWrk)
		}
	}
	if _, err := parseFlags([]string{"-engines", "raw,http"}, io.Discard); err != nil {
		t.Errorf("no -wrk, no wrk needed: %v", err)
	}
}

// A campaign under -transfer-rate may settle for twice the time its
// payouts need at that rate, half its calls failing: 2 × 2,000 awards /
// (10/s × 0.5) = 800 s; never less than the harness's minute, and the
// harness's own bound otherwise (0).
func TestDrainTimeout(t *testing.T) {
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 0},
		{[]string{"-scenario", "campaign"}, 0},
		{[]string{"-scenario", "campaign", "-transfer-rate", "10"}, 800 * time.Second},
		{[]string{"-scenario", "campaign", "-transfer-rate", "1000"}, time.Minute},
		// Past a Duration's range: the longest, not a conversion's overflow (a minute, after max).
		{[]string{"-scenario", "campaign", "-transfer-rate", "1e-300"}, math.MaxInt64},
	} {
		o, err := parseFlags(c.args, io.Discard)
		if got := drainTimeout(o); err != nil || got != c.want {
			t.Errorf("%q: %v (%v); want %v", c.args, got, err, c.want)
		}
	}
}

// runTiny runs grabbench end to end with args against the test's Redis and
// MySQL, requires the audit to pass and the table to show each of table,
// and returns the JSON report.
func runTiny(t *testing.T, args []string, table ...string) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs Redis and MySQL (run without -short)")
	}
	path := filepath.Join(t.TempDir(), "r.json")
	o, err := parseFlags(append([]string{"-redis", redistest.Addr(), "-mysql", storetest.DSN(), "-quiet", "-json", path}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ok, err := run(t.Context(), o, &out, io.Discard)
	if err != nil || !ok {
		t.Fatalf("run: ok=%v err=%v\n%s", ok, err, out.String())
	}
	for _, want := range append(table, "audit: ok") {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// wantRun are the keys of a run in the JSON report, whatever the scenario.
var wantRun = []string{"codes", "drain_ms", "engine", "ops_per_sec", "p50_ms", "p90_ms", "p999_ms", "p99_ms",
	"redis_cpu_us_per_op", "settle_ms", "settle_sweeps", "writer_batch_mean", "writer_lag_p99_ms"}

// campaign end to end on its five default engines: the settle and payout
// columns, engine / engine-sync, and in the JSON settle_ms for every engine
// but raw, the payouts of each (all ten awards) and -transfer-rate as the
// engines' limit (the naive scheme has none).
func TestRunCampaign(t *testing.T) {
	raw := runTiny(t, []string{"-scenario", "campaign", "-awards", "10", "-users", "25", "-budget", "5.00", "-c", "4",
		"-transfer-rate", "40"},
		"name=campaign", "budget=5.00", "transfer_rate=40", "settle ms/sweeps", "payouts/s", "calls/s (limit)", "(40)", "(none)",
		"raw", "engine-sync", "mysql-lock", "SOLD_OUT 15", "engine / engine-sync")
	var rep struct {
		Runs []struct {
			Engine        string   `json:"engine"`
			SettleMs      *float64 `json:"settle_ms"`
			SettleSweeps  *int     `json:"settle_sweeps"`
			Payouts       *int     `json:"payouts"`
			PayoutsPerSec *float64 `json:"payouts_per_sec"`
			TransferRate  *float64 `json:"transfer_rate"`
		}
		Ratios struct {
			EngineVsEngineSync *float64 `json:"engine_vs_engine_sync"`
		}
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	var engines []string
	for _, r := range rep.Runs {
		engines = append(engines, r.Engine)
		pays := r.Engine != "raw"
		if pays != (r.SettleMs != nil) || (r.SettleMs == nil) != (r.SettleSweeps == nil) {
			t.Errorf("%s: settle %v ms in %v sweeps", r.Engine, r.SettleMs, r.SettleSweeps)
		}
		if pays != (r.Payouts != nil && *r.Payouts == 10 && r.PayoutsPerSec != nil && *r.PayoutsPerSec > 0) {
			t.Errorf("%s: %v payouts, %v/s", r.Engine, r.Payouts, r.PayoutsPerSec)
		}
		if limited := pays && r.Engine != "mysql-lock"; limited != (r.TransferRate != nil) || (limited && *r.TransferRate != 40) {
			t.Errorf("%s: transfer rate %v", r.Engine, r.TransferRate)
		}
	}
	if !slices.Equal(engines, []string{"raw", "engine", "engine-sync", "http", "mysql-lock"}) || rep.Ratios.EngineVsEngineSync == nil {
		t.Errorf("report %s", raw)
	}
}

// flash-sale end to end: the table in deducts, and JSON of the same shape as group-storm's.
func TestRunFlashSale(t *testing.T) {
	raw := runTiny(t, []string{"-scenario", "flash-sale", "-skus", "3", "-stock", "4", "-buyers", "15", "-c", "4"},
		"name=flash-sale", "deducts/s", "raw", "engine", "http", "mysql-lock", "OK 12, OUT_OF_STOCK 3")
	var rep struct {
		Scenario map[string]any
		Runs     []map[string]json.RawMessage
		Audit    struct{ OK bool }
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Runs {
		var k []string
		for key := range r {
			k = append(k, key)
		}
		slices.Sort(k)
		if !slices.Equal(k, wantRun) {
			t.Errorf("run keys %q", k)
		}
	}
	if len(rep.Runs) != 4 || !rep.Audit.OK || rep.Scenario["name"] != "flash-sale" || rep.Scenario["buyers"] != 15.0 {
		t.Errorf("report %s", raw)
	}
}

// A tiny run end to end: the table, a PNG, and JSON of exactly the agreed shape.
func TestRunWritesTableJSONAndPNG(t *testing.T) {
	pngPath := filepath.Join(t.TempDir(), "r.png")
	raw := runTiny(t, []string{"-packets", "3", "-shares", "5", "-grabbers", "8", "-c", "4", "-png", pngPath},
		"raw", "engine", "http", "mysql-lock")
	var rep map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	keysOf := func(m map[string]json.RawMessage) []string {
		var k []string
		for key := range m {
			k = append(k, key)
		}
		slices.Sort(k)
		return k
	}
	if got := keysOf(rep); !slices.Equal(got, []string{"audit", "machine", "ratios", "runs", "scenario"}) {
		t.Errorf("report keys %q", got)
	}
	var runs []map[string]json.RawMessage
	var ratios, audit map[string]json.RawMessage
	json.Unmarshal(rep["runs"], &runs)
	json.Unmarshal(rep["ratios"], &ratios)
	json.Unmarshal(rep["audit"], &audit)
	if len(runs) != 4 {
		t.Fatalf("%d runs", len(runs))
	}
	for _, r := range runs {
		if got := keysOf(r); !slices.Equal(got, wantRun) {
			t.Errorf("run keys %q", got)
		}
	}
	if got := keysOf(ratios); !slices.Equal(got, []string{"engine_vs_mysql_lock", "engine_vs_raw", "http_vs_raw"}) {
		t.Errorf("ratio keys %q", got)
	}
	if got := keysOf(audit); !slices.Equal(got, []string{"ok", "violations"}) || string(audit["ok"]) != "true" {
		t.Errorf("audit %s", rep["audit"])
	}
	png, err := os.ReadFile(pngPath)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("png: %v", err)
	}
}

// Every -scenario name picks the scenario of that name, with the flags' settings.
func TestEachScenarioNamePicksItsScenario(t *testing.T) {
	for _, name := range scenarioNames() {
		o, err := parseFlags([]string{"-scenario", name, "-c", "3"}, io.Discard)
		if err != nil || o.picked == nil || o.picked.Name() != name || o.picked.Params()["concurrency"] != 3 {
			t.Errorf("-scenario %s picked %v (%v)", name, o.picked, err)
		}
	}
}

// -events without -engines compares every engine that writes events.
func TestEventsEngines(t *testing.T) {
	o, err := parseFlags([]string{"-events"}, io.Discard)
	if want := []string{bench.EngineRaw, bench.EngineEngine, bench.EngineHTTP}; err != nil || !o.events || !slices.Equal(o.engines, want) {
		t.Fatalf("-events: engines %q (%v); want %q", o.engines, err, want)
	}
}

// -wrk end to end: the http run's requests made by wrk, /healthz's rate
// and the ratio to it in the table and the JSON.
func TestRunWrk(t *testing.T) {
	raw := runTiny(t, []string{"-packets", "3", "-shares", "5", "-grabbers", "8", "-c", "4", "-engines", "raw,http", "-wrk"},
		"http_load=wrk", "http grab / healthz", "req/s (wrk)", "OK 15, SOLD_OUT 9")
	var rep struct {
		Runs []struct {
			Engine        string   `json:"engine"`
			HealthzPerSec *float64 `json:"healthz_per_sec"`
		}
		Ratios struct {
			HTTPVsHealthz *float64 `json:"http_vs_healthz"`
		}
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 2 || rep.Runs[0].HealthzPerSec != nil || rep.Runs[1].HealthzPerSec == nil || rep.Ratios.HTTPVsHealthz == nil {
		t.Errorf("report %s", raw)
	}
}
