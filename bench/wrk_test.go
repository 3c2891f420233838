package bench_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/engine/errs"
)

// requireWrk fails the test when wrk is not installed: -wrk is tested, not
// skipped (.ci/services installs wrk).
func requireWrk(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatalf("wrk is not installed (apt-get install wrk; .ci/services installs it): %v", err)
	}
}

// wrkConfig runs s on the http engine alone, its requests made by wrk.
func wrkConfig(t *testing.T, s bench.Scenario) bench.Config {
	t.Helper()
	cfg := config(t, s)
	cfg.Engines = []string{bench.EngineHTTP}
	cfg.Load.Wrk = true
	return cfg
}

// requireHealthz requires the /healthz rate beside the http run, and its
// ratio and rate in the table.
func requireHealthz(t *testing.T, rep *bench.Report) {
	t.Helper()
	run := rep.Runs[0]
	if run.HealthzPerSec == nil || *run.HealthzPerSec <= 0 || rep.Ratios.HTTPVsHealthz == nil ||
		*rep.Ratios.HTTPVsHealthz != run.OpsPerSec / *run.HealthzPerSec {
		t.Errorf("healthz %v req/s, http grab / healthz %v; want both, for %v grabs/s", run.HealthzPerSec, rep.Ratios.HTTPVsHealthz, run.OpsPerSec)
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "http grab / healthz") ||
		!strings.Contains(table.String(), "http_load=wrk") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
}

// wrk sends each grab of the plan once, from 8 connections on 2 threads,
// and counts the answers as the Go client does: group-storm's 60 grabs,
// exactly the 40 shares OK, the rest SOLD_OUT; the campaign's 50, exactly
// its 20 awards won, the rest SOLD_OUT. Every OK is in MySQL after the
// drain (every award paid out after the settle) and the audit is clean.
func TestUnderWrk(t *testing.T) {
	requireWrk(t)
	for _, tc := range []struct {
		scenario           bench.Scenario
		grabs, ok, soldOut int64
	}{
		{tiny(), 60, 40, 20},
		{tinyCampaign(), 50, 20, 30},
	} {
		t.Run(tc.scenario.Name(), func(t *testing.T) {
			rep := runClean(t, wrkConfig(t, tc.scenario))
			run := rep.Runs[0]
			if run.Ops != tc.grabs || run.Codes[bench.CodeOK] != tc.ok || run.Codes[errs.CodeSoldOut] != tc.soldOut ||
				len(run.Codes) != 2 || run.Errors != 0 {
				t.Errorf("%d grabs, answers %v, %d errors (%v); want %d: %d OK, %d SOLD_OUT",
					run.Ops, run.Codes, run.Errors, run.FirstErr, tc.grabs, tc.ok, tc.soldOut)
			}
			requireHealthz(t, rep)
		})
	}
}

// wrk sends bodiless grabs: flash-sale's deducts are refused, as is an
// open loop.
func TestWrkRefusals(t *testing.T) {
	requireWrk(t)
	if _, err := bench.Run(t.Context(), wrkConfig(t, tinyFlash())); err == nil || !strings.Contains(err.Error(), "flash-sale") {
		t.Errorf("flash-sale under wrk: %v; want it refused", err)
	}
	cfg := wrkConfig(t, tiny())
	cfg.Load.Rate = 100
	if _, err := bench.Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "closed loop") {
		t.Errorf("-rate under wrk: %v; want it refused", err)
	}
}

// settleCancels is a scenario whose trials end ctx in their settle, as a
// SIGINT there would.
type settleCancels struct {
	bench.Scenario
	cancel context.CancelFunc
}

func (s settleCancels) Prepare(ctx context.Context, env *bench.Env, engine string) (bench.Trial, error) {
	t, err := s.Scenario.Prepare(ctx, env, engine)
	return cancelingTrial{t, s.cancel}, err
}

type cancelingTrial struct {
	bench.Trial
	cancel context.CancelFunc
}

func (t cancelingTrial) Settle(ctx context.Context) (int, error) {
	t.cancel()
	return t.Trial.Settle(ctx)
}

// A run under wrk interrupted after its load answers ctx's end, as the Go
// clients' run does, not a /healthz run that wrk could not start.
func TestWrkInterruptedAfterTheLoad(t *testing.T) {
	requireWrk(t)
	ctx, cancel := context.WithCancel(t.Context())
	cfg := wrkConfig(t, settleCancels{tiny(), cancel})
	_, err := bench.Run(ctx, cfg)
	if !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "healthz") {
		t.Errorf("interrupted run: %v; want context canceled, nothing of /healthz", err)
	}
}
