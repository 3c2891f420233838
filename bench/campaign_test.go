package bench_test

import (
	"bytes"
	"encoding/json"
	"fmt"
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

// Every engine serves the campaign: exactly A awards won (paid at once or
// pending), the rest SOLD_OUT; after the settle every award is transferred,
// the service applied each out-trade-no once, and Σ = the budget.
func TestCampaignEveryEngineSpendsExactlyTheBudget(t *testing.T) {
	rep := runClean(t, config(t, tinyCampaign()))
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
		// Half the calls fail: some payouts were left to the settle, which needed a sweep at least.
		// The engine (async payouts, the default) answers every award at once and pays in the settle;
		// the naive scheme answers some pending.
		pending := run.Codes[errs.CodePayoutInProgress] > 0
		if pays && (pending != (run.Engine == bench.EngineMySQLLock) || *run.SettleSweeps == 0) {
			t.Errorf("%s: answers %v, %d sweeps; want payouts pending after the load, and swept", run.Engine, run.Codes, *run.SettleSweeps)
		}
	}
	if rep.Scenario["name"] != "campaign" || rep.Scenario["budget"] != "10.00" || rep.Scenario["transfer_errors"] != 0.5 {
		t.Errorf("scenario %v", rep.Scenario)
	}
	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "settle ms/sweeps") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
	var runs struct{ Runs []map[string]any }
	if err := rep.WriteJSON(&js); err != nil || json.Unmarshal(js.Bytes(), &runs) != nil {
		t.Fatalf("json: %v\n%s", err, js.String())
	}
	for _, r := range runs.Runs {
		if _, ok := r["settle_ms"]; !ok || (r["engine"] != bench.EngineRaw) != (r["settle_ms"] != nil) {
			t.Errorf("json run %v: settle_ms %v", r["engine"], r["settle_ms"])
		}
	}
}

// With fewer users than awards every user wins and part of the budget is
// left; with a service that never fails every payout of the naive scheme
// completes in the grab. The engine's grabs (async payouts) all answer at
// once, its payouts left to the settle.
func TestCampaignFewerUsersAndAFaultlessService(t *testing.T) {
	for _, c := range []struct {
		name    string
		s       *bench.Campaign
		pending func(int64) bool
	}{
		{"fewer users than awards", &bench.Campaign{Awards: 20, Users: 12, Budget: 1000, Concurrency: 8,
			Faults: transfersim.Faults{ErrorRate: 0.5}}, func(n int64) bool { return n > 0 }},
		{"a service without faults", &bench.Campaign{Awards: 20, Users: 30, Budget: 1000, Concurrency: 8},
			func(n int64) bool { return n == 0 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := config(t, c.s)
			cfg.Engines = []string{bench.EngineRaw, bench.EngineEngine, bench.EngineMySQLLock}
			rep := runClean(t, cfg)
			want := int64(min(c.s.Users, c.s.Awards))
			for _, run := range rep.Runs {
				pending := run.Codes[errs.CodePayoutInProgress]
				if run.Codes[bench.CodeOK]+pending != want || run.Codes[errs.CodeSoldOut] != int64(c.s.Users)-want ||
					(run.Engine == bench.EngineMySQLLock && !c.pending(pending)) ||
					(run.Engine == bench.EngineEngine && pending != 0) { // async payouts: every answer at once
					t.Errorf("%s: answers %v; want %d won", run.Engine, run.Codes, want)
				}
			}
		})
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
