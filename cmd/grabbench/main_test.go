package main

import (
	"bytes"
	"encoding/json"
	"io"
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
		"-c", "6", "-seed", "9"}, io.Discard)
	c := o.campaign
	if err != nil || c.Awards != 30 || c.Users != 100 || c.Budget != 1250 || c.Faults.ErrorRate != 0.2 || c.Faults.LoseReplyRate != 0 ||
		c.Faults.DuplicateRate != 1 || c.Faults.Latency != 5*time.Millisecond || c.Concurrency != 6 || c.Seed != 9 {
		t.Errorf("campaign flags: %+v, %v", c, err)
	}
	o, err = parseFlags([]string{"-scenario", "campaign"}, io.Discard)
	if def := bench.DefaultCampaign(); err != nil || o.campaign.Awards != def.Awards || o.campaign.Users != def.Users ||
		o.campaign.Budget != def.Budget || o.campaign.Faults != def.Faults {
		t.Errorf("campaign defaults: %+v, %v", o.campaign, err)
	}
	o, err = parseFlags([]string{"-scenario", "campaign", "-wrk", "-wrk-threads", "3", "-engines", "http"}, io.Discard)
	if err != nil || !o.load.Wrk || o.load.WrkThreads != 3 {
		t.Errorf("-wrk -wrk-threads 3: %+v, %v", o.load, err)
	}
	if _, err := parseFlags([]string{"-budget", "nope"}, io.Discard); err != nil {
		t.Errorf("-budget refused for group-storm: %v", err)
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

// campaign end to end: the settle column, and settle_ms in the JSON for
// every engine but raw.
func TestRunCampaign(t *testing.T) {
	raw := runTiny(t, []string{"-scenario", "campaign", "-awards", "10", "-users", "25", "-budget", "5.00", "-c", "4"},
		"name=campaign", "budget=5.00", "settle ms/sweeps", "raw", "mysql-lock", "SOLD_OUT 15")
	var rep struct {
		Runs []struct {
			Engine       string   `json:"engine"`
			SettleMs     *float64 `json:"settle_ms"`
			SettleSweeps *int     `json:"settle_sweeps"`
		}
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Runs {
		if (r.Engine == "raw") != (r.SettleMs == nil) || (r.SettleMs == nil) != (r.SettleSweeps == nil) {
			t.Errorf("%s: settle %v ms in %v sweeps", r.Engine, r.SettleMs, r.SettleSweeps)
		}
	}
	if len(rep.Runs) != 4 {
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
