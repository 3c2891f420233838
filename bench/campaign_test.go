package bench_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/transfersim"
)

// 20 awards of 10.00 for 50 users, the transfer service failing half its
// calls, losing a tenth of its replies and handling some transfers twice:
// 20 users win, 30 find it sold out.
func tinyCampaign() *bench.Campaign {
	return &bench.Campaign{Awards: 20, Users: 50, Budget: 1000, Concurrency: 8, Seed: 1,
		Faults: transfersim.Faults{ErrorRate: 0.5, LoseReplyRate: 0.1, DuplicateRate: 0.05}}
}

// syncAnswers: the engines whose grabs pay before they answer, so that a
// failed or unanswered transfer is answered PAYOUT_IN_PROGRESS: the engine
// in the sync payout mode and the naive scheme.
func syncAnswers(engine string) bool {
	return engine == bench.EngineSync || engine == bench.EngineMySQLLock
}

// Every engine serves the campaign, engine-sync among them by default:
// exactly A awards won (paid at once or pending), the rest SOLD_OUT; after
// the settle every award is transferred, the service applied each
// out-trade-no once, and Σ = the budget. Each engine that pays reports the
// A transfers applied, the calls they took and their rate.
func TestCampaignEveryEngineSpendsExactlyTheBudget(t *testing.T) {
	rep := runClean(t, config(t, tinyCampaign()))
	if len(rep.Runs) != 5 || rep.Runs[2].Engine != bench.EngineSync {
		t.Fatalf("%d runs; want the default five, engine-sync third", len(rep.Runs))
	}
	for _, run := range rep.Runs {
		won := run.Codes[bench.CodeOK] + run.Codes[errs.CodePayoutInProgress]
		if run.Ops != 50 || won != 20 || run.Codes[errs.CodeSoldOut] != 30 || run.Errors != 0 {
			t.Errorf("%s: %d grabs, answers %v, %d errors (%v); want 50: 20 won, 30 SOLD_OUT",
				run.Engine, run.Ops, run.Codes, run.Errors, run.FirstErr)
		}
		if !run.Audited || !run.Audit.OK {
			t.Errorf("%s: audited %v, %v", run.Engine, run.Audited, run.Audit.Violations)
		}
		pays := run.Engine != bench.EngineRaw
		if pays != (run.SettleMs != nil) || pays != (run.SettleSweeps != nil) {
			t.Fatalf("%s: settle %v in %v sweeps; want them exactly for the engines that pay out", run.Engine, run.SettleMs, run.SettleSweeps)
		}
		// Half the calls fail: some payouts were left to the sweeper, which needed a sweep at least.
		// The engine and http (async payouts, the default) answer every award at once, their pool
		// paying during the load; the sync engine and the naive scheme answer some pending.
		pending := run.Codes[errs.CodePayoutInProgress] > 0
		if pays && (pending != syncAnswers(run.Engine) || *run.SettleSweeps == 0) {
			t.Errorf("%s: answers %v, %d sweeps; want payouts pending after the load, and swept", run.Engine, run.Codes, *run.SettleSweeps)
		}
		if !pays {
			if run.Payouts != nil || run.TransferCalls != nil || run.PayoutsPerSec != nil || run.TransferRate != nil {
				t.Errorf("raw: payouts %v, calls %v, %v/s, rate %v; want none", run.Payouts, run.TransferCalls, run.PayoutsPerSec, run.TransferRate)
			}
			continue
		}
		// Every award applied once; half the calls fail, so more calls than payouts. The engines'
		// calls had no limit (0, the engine's default); the naive scheme has no limiter at all.
		if run.Payouts == nil || *run.Payouts != 20 || *run.TransferCalls <= 20 || run.PayoutWindowMs == nil ||
			*run.PayoutWindowMs <= 0 || *run.PayoutsPerSec != 20/(*run.PayoutWindowMs/1000) {
			t.Errorf("%s: payouts %v in %v calls over %v ms, %v/s; want 20 in more calls", run.Engine, run.Payouts,
				run.TransferCalls, run.PayoutWindowMs, run.PayoutsPerSec)
		}
		if limited := run.Engine != bench.EngineMySQLLock; limited != (run.TransferRate != nil) || (limited && *run.TransferRate != 0) {
			t.Errorf("%s: transfer rate %v; want 0 (none) for the engines, absent for mysql-lock", run.Engine, run.TransferRate)
		}
	}
	if rep.Ratios.EngineVsEngineSync == nil || *rep.Ratios.EngineVsEngineSync != rep.Runs[1].OpsPerSec/rep.Runs[2].OpsPerSec {
		t.Errorf("engine / engine-sync %v", rep.Ratios.EngineVsEngineSync)
	}
	if rep.Scenario["name"] != "campaign" || rep.Scenario["budget"] != "10.00" || rep.Scenario["transfer_errors"] != 0.5 ||
		rep.Scenario["transfer_rate"] != 0.0 || rep.Scenario["payout_workers"] != 0 {
		t.Errorf("scenario %v", rep.Scenario)
	}
	var table, js bytes.Buffer
	err := rep.WriteTable(&table)
	for _, want := range []string{"settle ms/sweeps", "payouts/s", "calls/s (limit)", "(none)", "engine / engine-sync"} {
		if err != nil || !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q: %v\n%s", want, err, table.String())
		}
	}
	var out struct {
		Runs   []map[string]any
		Ratios map[string]any
	}
	if err := rep.WriteJSON(&js); err != nil || json.Unmarshal(js.Bytes(), &out) != nil {
		t.Fatalf("json: %v\n%s", err, js.String())
	}
	for _, r := range out.Runs {
		pays := r["engine"] != bench.EngineRaw
		if _, ok := r["settle_ms"]; !ok || pays != (r["settle_ms"] != nil) {
			t.Errorf("json run %v: settle_ms %v", r["engine"], r["settle_ms"])
		}
		for _, k := range []string{"payouts", "transfer_calls", "payout_window_ms", "payouts_per_sec"} {
			if _, ok := r[k]; ok != pays {
				t.Errorf("json run %v: %s %v", r["engine"], k, r[k])
			}
		}
		if _, ok := r["transfer_rate"]; ok != (pays && r["engine"] != bench.EngineMySQLLock) {
			t.Errorf("json run %v: transfer_rate %v", r["engine"], r["transfer_rate"])
		}
	}
	if _, ok := out.Ratios["engine_vs_engine_sync"].(float64); !ok {
		t.Errorf("json ratios %v", out.Ratios)
	}
}

// With fewer users than awards every user wins and part of the budget is
// left; with a service that never fails every payout completes at its first
// call: in the grab for the sync engine and the naive scheme, by the payout
// pool during the load for the engine, so the settle sweeps nothing. The
// engine's grabs (async payouts) all answer at once.
func TestCampaignFewerUsersAndAFaultlessService(t *testing.T) {
	for _, c := range []struct {
		name      string
		s         *bench.Campaign
		faultless bool
	}{
		{"fewer users than awards", &bench.Campaign{Awards: 20, Users: 12, Budget: 1000, Concurrency: 8,
			Faults: transfersim.Faults{ErrorRate: 0.5}}, false},
		{"a service without faults", &bench.Campaign{Awards: 20, Users: 30, Budget: 1000, Concurrency: 8}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := config(t, c.s)
			cfg.Engines = []string{bench.EngineRaw, bench.EngineEngine, bench.EngineSync, bench.EngineMySQLLock}
			rep := runClean(t, cfg)
			want := int64(min(c.s.Users, c.s.Awards))
			for _, run := range rep.Runs {
				pending := run.Codes[errs.CodePayoutInProgress]
				if run.Codes[bench.CodeOK]+pending != want || run.Codes[errs.CodeSoldOut] != int64(c.s.Users)-want ||
					(syncAnswers(run.Engine) && (pending == 0) != c.faultless) ||
					(run.Engine == bench.EngineEngine && pending != 0) { // async payouts: every answer at once
					t.Errorf("%s: answers %v; want %d won", run.Engine, run.Codes, want)
				}
				if run.Engine == bench.EngineRaw || !c.faultless {
					continue
				}
				if *run.SettleSweeps != 0 || *run.Payouts != int(want) || *run.TransferCalls != want {
					t.Errorf("%s: %d sweeps, %d payouts in %d calls; want none swept, %d paid at one call each",
						run.Engine, *run.SettleSweeps, *run.Payouts, *run.TransferCalls, want)
				}
			}
		})
	}
}

// The engine's payout pool runs during the load at -transfer-rate: every
// call, first attempts and retries alike, takes a token of the engine's
// limiter (a burst of a tenth of the rate, at least one), so the transfers
// applied between the first award and the last one applied are at most
// burst + rate × that window: payouts/s ≤ rate + burst / window. Each award
// is still transferred exactly once (the audit).
func TestCampaignPoolPaysAtTheTransferRate(t *testing.T) {
	const rate, burst = 20, 2
	s := &bench.Campaign{Awards: 20, Users: 30, Budget: 1000, Concurrency: 8, Seed: 1,
		Faults: transfersim.Faults{ErrorRate: 0.5}, TransferRate: rate, PayoutWorkers: 4}
	cfg := config(t, s)
	cfg.Engines = []string{bench.EngineEngine}
	rep := runClean(t, cfg)
	run := rep.Runs[0]
	if run.Codes[bench.CodeOK] != 20 || run.Codes[errs.CodeSoldOut] != 10 {
		t.Errorf("answers %v; want 20 OK at once, 10 SOLD_OUT", run.Codes)
	}
	if run.TransferRate == nil || *run.TransferRate != rate || rep.Scenario["transfer_rate"] != float64(rate) ||
		rep.Scenario["payout_workers"] != 4 {
		t.Fatalf("transfer rate %v, scenario %v; want %d", run.TransferRate, rep.Scenario, rate)
	}
	window := *run.PayoutWindowMs / 1000
	if *run.Payouts != 20 || *run.TransferCalls < 20 || float64(*run.Payouts) > burst+rate*window ||
		*run.PayoutsPerSec > rate+burst/window {
		t.Errorf("%d payouts in %d calls over %.3f s (%.1f/s); want 20, at most %d + %d/s × the window",
			*run.Payouts, *run.TransferCalls, window, *run.PayoutsPerSec, burst, rate)
	}
}

// engine-sync is the campaign's sync payout mode beside the engine's async
// one, on an engine of its own: its grabs pay before they answer, so with
// half the calls failing some answer PAYOUT_IN_PROGRESS, while the engine
// run after it still answers every award at once. Both are audited (every
// award transferred once), and the report has engine / engine-sync.
func TestCampaignEngineSyncIsABaseline(t *testing.T) {
	cfg := config(t, tinyCampaign())
	cfg.Engines = []string{bench.EngineSync, bench.EngineEngine}
	rep := runClean(t, cfg)
	sync, async := rep.Runs[0], rep.Runs[1]
	if sync.Codes[bench.CodeOK] == 0 || sync.Codes[errs.CodePayoutInProgress] == 0 ||
		sync.Codes[bench.CodeOK]+sync.Codes[errs.CodePayoutInProgress] != 20 || sync.Codes[errs.CodeSoldOut] != 30 {
		t.Errorf("engine-sync: answers %v; want 20 won, paid (OK) or pending (PAYOUT_IN_PROGRESS), 30 SOLD_OUT", sync.Codes)
	}
	if async.Codes[bench.CodeOK] != 20 || async.Codes[errs.CodeSoldOut] != 30 || len(async.Codes) != 2 {
		t.Errorf("engine after engine-sync: answers %v; want 20 OK at once, 30 SOLD_OUT", async.Codes)
	}
	for _, run := range rep.Runs {
		if !run.Audited || !run.Audit.OK || *run.Payouts != 20 {
			t.Errorf("%s: audited %v %v, %v payouts", run.Engine, run.Audited, run.Audit.Violations, run.Payouts)
		}
	}
	if rep.Ratios.EngineVsEngineSync == nil || *rep.Ratios.EngineVsEngineSync != async.OpsPerSec/sync.OpsPerSec {
		t.Errorf("engine / engine-sync %v", rep.Ratios.EngineVsEngineSync)
	}
}

// engine-sync is the campaign scenario's alone: Run refuses it elsewhere,
// saying so, before it runs anything.
func TestEngineSyncOnlyInCampaign(t *testing.T) {
	for _, s := range []bench.Scenario{tiny(), bench.DefaultFlashSale()} {
		cfg := config(t, s)
		cfg.Engines = []string{bench.EngineEngine, bench.EngineSync}
		rep, err := bench.Run(t.Context(), cfg)
		if err == nil || rep != nil || !strings.Contains(err.Error(), "engine-sync is the campaign scenario's alone") {
			t.Errorf("%s: report %v, error %v; want engine-sync refused", s.Name(), rep, err)
		}
	}
	if got := bench.DefaultEngines(tiny()); !slices.Equal(got, bench.AllEngines) {
		t.Errorf("group-storm's engines %q", got)
	}
	if got, want := bench.DefaultEngines(tinyCampaign()), []string{"raw", "engine", "engine-sync", "http", "mysql-lock"}; !slices.Equal(got, want) {
		t.Errorf("campaign's engines %q; want %q", got, want)
	}
}

// The campaign audit can fail: each planted violation in MySQL is caught by
// its check, and so is an award paid twice — re-driven under a new
// out-trade-no, which the service has no reason to refuse — on the engine's
// sweeper and on the naive scheme's re-drive alike.
func TestCampaignAuditCatchesPlantedViolations(t *testing.T) {
	ctx := t.Context()
	s := tinyCampaign()
	cfg := config(t, s)
	cfg.Engines = []string{bench.EngineEngine, bench.EngineMySQLLock}
	runClean(t, cfg)
	x := cfg.DB.SQL()
	for _, eng := range cfg.Engines {
		cp, ok := s.CampaignID(eng)
		if !ok {
			t.Fatalf("no campaign for %s", eng)
		}
		award := func(seq int) string { return fmt.Sprintf("campaign_id = %d AND seq = %d", cp, seq) }
		var second int64 // the user of award 2
		if err := x.Get(&second, "SELECT user_id FROM campaign_award WHERE "+award(2)); err != nil {
			t.Fatal(err)
		}
		var first int64
		if err := x.Get(&first, "SELECT user_id FROM campaign_award WHERE "+award(1)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name        string
			plant, undo []string
			want        string
		}{
			{"a fen more than the budget, counted as used",
				[]string{"UPDATE campaign_award SET amount = amount + 0.01 WHERE " + award(1),
					fmt.Sprintf("UPDATE campaign SET used_amount = used_amount + 0.01 WHERE id = %d", cp),
					fmt.Sprintf("UPDATE campaign_rule SET acc_amount = acc_amount + 0.01 WHERE campaign_id = %d", cp)},
				[]string{"UPDATE campaign_award SET amount = amount - 0.01 WHERE " + award(1),
					fmt.Sprintf("UPDATE campaign SET used_amount = used_amount - 0.01 WHERE id = %d", cp),
					fmt.Sprintf("UPDATE campaign_rule SET acc_amount = acc_amount - 0.01 WHERE campaign_id = %d", cp)},
				"overspent"},
			{"the used amount not the awards",
				[]string{fmt.Sprintf("UPDATE campaign SET used_amount = used_amount - 0.01 WHERE id = %d", cp)},
				[]string{fmt.Sprintf("UPDATE campaign SET used_amount = used_amount + 0.01 WHERE id = %d", cp)},
				"used amount is not the awards"},
			{"a user holding two awards",
				[]string{fmt.Sprintf("UPDATE campaign_award SET user_id = %d WHERE %s", first, award(2))},
				[]string{fmt.Sprintf("UPDATE campaign_award SET user_id = %d WHERE %s", second, award(2))},
				"over the per-user limit"},
			{"an award left transferring",
				[]string{"UPDATE campaign_award SET status = 'transferring' WHERE " + award(1)},
				[]string{"UPDATE campaign_award SET status = 'transferred' WHERE " + award(1)},
				"not paid out"},
		} {
			t.Run(eng+": "+c.name, func(t *testing.T) {
				requireCaught(t, execAll(x, c.plant...), execAll(x, c.undo...), func() (bench.AuditResult, error) { return s.Audit(ctx, eng) }, c.want)
			})
		}
		// Last: money that moved cannot be undone.
		t.Run(eng+": an award paid twice under a new out-trade-no", func(t *testing.T) {
			x.MustExec("UPDATE campaign_award SET out_trade_no = CONCAT(out_trade_no, 'r'), status = 'transferring', " +
				"transferring_at = '2000-01-01' WHERE " + award(1))
			if sweeps, err := s.Settle(ctx, eng); err != nil || sweeps == 0 {
				t.Fatalf("settle: %d sweeps, %v", sweeps, err)
			}
			res, err := s.Audit(ctx, eng)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(res.Violations, "\n")
			if res.OK || !strings.Contains(got, "paid more than awarded") || !strings.Contains(got, "applied without an award") {
				t.Fatalf("audit: ok=%v %q; want the award paid twice", res.OK, res.Violations)
			}
		})
	}
}
