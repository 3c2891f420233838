package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

func TestParseFlagsRefusesBadSettings(t *testing.T) {
	for _, args := range [][]string{
		{"-scenario", "nope"},
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
}

// flash-sale end to end: the table in deducts, and JSON of the same shape as group-storm's.
func TestRunFlashSale(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs Redis and MySQL (run without -short)")
	}
	dir := t.TempDir()
	o, err := parseFlags([]string{"-redis", redistest.Addr(), "-mysql", storetest.DSN(), "-quiet",
		"-scenario", "flash-sale", "-skus", "3", "-stock", "4", "-buyers", "15", "-c", "4",
		"-json", filepath.Join(dir, "r.json")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ok, err := run(context.Background(), o, &out, io.Discard)
	if err != nil || !ok {
		t.Fatalf("run: ok=%v err=%v\n%s", ok, err, out.String())
	}
	for _, want := range []string{"name=flash-sale", "deducts/s", "raw", "engine", "http", "mysql-lock", "OK 12, OUT_OF_STOCK 3", "audit: ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Scenario map[string]any
		Runs     []map[string]json.RawMessage
		Audit    struct{ OK bool }
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	wantRun := []string{"codes", "drain_ms", "engine", "ops_per_sec", "p50_ms", "p90_ms", "p999_ms", "p99_ms", "redis_cpu_us_per_op", "writer_lag_p99_ms"}
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
	if testing.Short() {
		t.Skip("integration test: needs Redis and MySQL (run without -short)")
	}
	dir := t.TempDir()
	o, err := parseFlags([]string{"-redis", redistest.Addr(), "-mysql", storetest.DSN(), "-quiet",
		"-packets", "3", "-shares", "5", "-grabbers", "8", "-c", "4",
		"-json", filepath.Join(dir, "r.json"), "-png", filepath.Join(dir, "r.png")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	ok, err := run(context.Background(), o, &out, io.Discard)
	if err != nil || !ok {
		t.Fatalf("run: ok=%v err=%v\n%s", ok, err, out.String())
	}
	for _, want := range []string{"raw", "engine", "http", "mysql-lock", "audit: ok"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "r.json"))
	if err != nil {
		t.Fatal(err)
	}
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
	wantRun := []string{"codes", "drain_ms", "engine", "ops_per_sec", "p50_ms", "p90_ms", "p999_ms", "p99_ms", "redis_cpu_us_per_op", "writer_lag_p99_ms"}
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
	png, err := os.ReadFile(filepath.Join(dir, "r.png"))
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("png: %v", err)
	}
}
