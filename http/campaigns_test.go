package http_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/campaign"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
)

// setupCampaigns is setup with a transfer service simulator on loopback.
func setupCampaigns(t *testing.T, f transfersim.Faults) (*env, *transfersim.Sim) {
	t.Helper()
	secret := []byte("transfer-secret")
	sim := transfersim.New(secret, f, 1)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	client := transfer.NewClient(srv.URL, secret, 5*time.Second, nil)
	return setupDeps(t, func(d *grab.Deps) { d.Campaigns.Transfer = client }), sim
}

// campaignBody is a valid create request with extra fields appended.
func campaignBody(extra string) string {
	now := time.Now().UTC()
	return fmt.Sprintf(`{"name":"spring","budget":"10.00","award_count":10,"award_min":"0.01","award_max":"2.00","starts_at":%q,"ends_at":%q%s}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339), extra)
}

var campaignFields = []string{"campaign_id", "ref", "name", "budget", "used_amount", "acc_amount", "award_count", "award_min",
	"award_max", "per_user_limit", "starts_at", "ends_at", "created_at", "status", "awarded", "remaining", "payouts"}

var awardFields = []string{"campaign_id", "seq", "amount", "repeat", "payout", "awarded_at", "transferred_at"}

func TestCampaignHappyPath(t *testing.T) {
	e, sim := setupCampaigns(t, transfersim.Faults{})
	e.startWriter(t)
	// One body for the create and its replay: built twice, a second ticking
	// over in between would change the window and make the replay a conflict.
	body := campaignBody(`,"ref":"spring-1","per_user_limit":2`)
	c := expect(t, e.do(t, "POST", "/v1/admin/campaigns", body, admin()), 201)
	keys(t, "campaign", c, campaignFields...)
	id := integer(t, "campaign_id", c["campaign_id"])
	if c["status"] != "open" || c["ref"] != "spring-1" || fen(t, "budget", c["budget"]) != 1000 ||
		fen(t, "used_amount", c["used_amount"]) != 0 || integer(t, "remaining", c["remaining"]) != 10 ||
		integer(t, "per_user_limit", c["per_user_limit"]) != 2 {
		t.Fatalf("campaign %v", c)
	}
	timestamp(t, "starts_at", c["starts_at"])
	// The same ref and content again: the same campaign, 200.
	if again := expect(t, e.do(t, "POST", "/v1/admin/campaigns", body, admin()), 200); integer(t, "campaign_id", again["campaign_id"]) != id {
		t.Fatalf("replay %v", again)
	}

	grab := fmt.Sprintf("/v1/campaigns/%d/grab", id)
	a := expect(t, e.do(t, "POST", grab, ``, user(5)), 200)
	keys(t, "award", a, awardFields...)
	seq := integer(t, "seq", a["seq"])
	amount := fen(t, "amount", a["amount"])
	if a["payout"] != "transferred" || a["repeat"] != false || integer(t, "campaign_id", a["campaign_id"]) != id {
		t.Fatalf("grab %v", a)
	}
	timestamp(t, "transferred_at", a["transferred_at"])
	second := expect(t, e.do(t, "POST", grab, ``, user(5)), 200)
	third := expect(t, e.do(t, "POST", grab, ``, user(5)), 200)
	if second["repeat"] != false || third["repeat"] != true || third["seq"] != second["seq"] {
		t.Fatalf("second %v, third %v", second, third)
	}
	receive := func(s int64) string { return fmt.Sprintf("/v1/campaigns/%d/awards/%d/receive", id, s) }
	fails(t, "receive of a paid award", e.do(t, "POST", receive(seq), ``, user(5)), 409, "AWARD_RECEIVED")
	fails(t, "receive of another's award", e.do(t, "POST", receive(seq), ``, user(6)), 403, "FORBIDDEN")

	list := expect(t, e.do(t, "GET", fmt.Sprintf("/v1/campaigns/%d/awards", id), ``, user(5)), 200)
	keys(t, "list", list, "campaign_id", "awards")
	awards, _ := list["awards"].([]any)
	if len(awards) != 2 {
		t.Fatalf("awards %v", list)
	}
	first, _ := awards[0].(map[string]any)
	keys(t, "listed award", first, awardFields...)
	if integer(t, "seq", first["seq"]) != seq || fen(t, "amount", first["amount"]) != amount || first["payout"] != "transferred" {
		t.Fatalf("listed %v", first)
	}
	if none := expect(t, e.do(t, "GET", fmt.Sprintf("/v1/campaigns/%d/awards", id), ``, user(6)), 200); len(none["awards"].([]any)) != 0 {
		t.Fatalf("another user's list %v", none)
	}

	paid := amount + fen(t, "second", second["amount"])
	var v map[string]any
	// The writer counts awards against the budget moments after the grabs.
	enginetest.WaitFor(t, "the awards counted", func() bool {
		v = expect(t, e.do(t, "GET", fmt.Sprintf("/v1/admin/campaigns/%d", id), ``, admin()), 200)
		return fen(t, "used_amount", v["used_amount"]) == paid
	})
	if fen(t, "used_amount", v["used_amount"]) != paid || fen(t, "acc_amount", v["acc_amount"]) != paid ||
		integer(t, "remaining", v["remaining"]) != 8 {
		t.Fatalf("campaign %v", v)
	}
	payouts, _ := v["payouts"].(map[string]any)
	keys(t, "payouts", payouts, "received", "transferring", "transferred", "needs_attention")
	if integer(t, "transferred", payouts["transferred"]) != 2 {
		t.Fatalf("payouts %v", payouts)
	}
	if n, fen := sim.TotalApplied(); n != 2 || fen != paid {
		t.Fatalf("service moved %d fen in %d transfers", fen, n)
	}
}

// A transfer that fails answers 409 PAYOUT_IN_PROGRESS with the award, on
// the grab and on a receive; the award is listed as transferring.
func TestCampaignPayoutInProgress(t *testing.T) {
	e, sim := setupCampaigns(t, transfersim.Faults{ErrorRate: 1})
	c := expect(t, e.do(t, "POST", "/v1/admin/campaigns", campaignBody(``), admin()), 201)
	id := integer(t, "campaign_id", c["campaign_id"])
	r := e.do(t, "POST", fmt.Sprintf("/v1/campaigns/%d/grab", id), ``, user(5))
	fails(t, "grab while the service fails", r, 409, "PAYOUT_IN_PROGRESS")
	body := r.object(t)
	keys(t, "error body", body, "error", "award")
	a, _ := body["award"].(map[string]any)
	keys(t, "award", a, awardFields...)
	if a["payout"] != "transferring" || a["transferred_at"] != nil || fen(t, "amount", a["amount"]) < 1 {
		t.Fatalf("award %v", a)
	}
	seq := integer(t, "seq", a["seq"])
	r = e.do(t, "POST", fmt.Sprintf("/v1/campaigns/%d/awards/%d/receive", id, seq), ``, user(5))
	fails(t, "receive while the transfer is under way", r, 409, "PAYOUT_IN_PROGRESS")
	if again := r.object(t)["award"].(map[string]any); again["seq"] != a["seq"] {
		t.Fatalf("receive's award %v", again)
	}
	// A person's retry is for parked payouts; this one is the sweeper's.
	fails(t, "retry of a payout the sweeper owns", e.do(t, "POST", fmt.Sprintf("/v1/admin/campaigns/%d/awards/%d/retry", id, seq), ``, admin()),
		409, "PAYOUT_IN_PROGRESS")
	list := expect(t, e.do(t, "GET", fmt.Sprintf("/v1/campaigns/%d/awards", id), ``, user(5)), 200)
	if got := list["awards"].([]any)[0].(map[string]any)["payout"]; got != "transferring" {
		t.Fatalf("listed payout %v", got)
	}
	if n, _ := sim.TotalApplied(); n != 0 {
		t.Fatal("a failed transfer moved money")
	}
}

// campaignFixture: an open campaign (ref "fix-open") where user 1 holds a
// paid award, one not started yet, and one whose only award user 2 holds.
type campaignFixture struct {
	open, later, soldOut int64
	seq1                 int
}

func newCampaignFixture(t *testing.T, e *env) campaignFixture {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	mk := func(ref string, count int, budget int64, starts time.Time) int64 {
		c, _, err := e.Campaigns.CreateCampaign(ctx, campaign.NewCampaign{Ref: ref, Name: ref, Budget: budget, AwardCount: count, AwardMin: 1,
			AwardMax: budget, StartsAt: starts, EndsAt: now.Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	f := campaignFixture{open: mk("fix-open", 10, 1000, now.Add(-time.Minute)), later: mk("fix-later", 1, 100, now.Add(30*time.Minute)),
		soldOut: mk("fix-sold", 1, 100, now.Add(-time.Minute))}
	a, err := e.Campaigns.GrabCampaign(ctx, f.open, 1)
	if err != nil {
		t.Fatal(err)
	}
	f.seq1 = a.Seq
	if _, err := e.Campaigns.GrabCampaign(ctx, f.soldOut, 2); err != nil {
		t.Fatal(err)
	}
	return f
}

type campaignSnapshot struct {
	campaigns  map[int64]campaign.Campaign
	awards     map[int64][]campaign.Award
	nextExists bool
	applied    int
}

func (f campaignFixture) snapshot(t *testing.T, e *env, sim *transfersim.Sim) campaignSnapshot {
	t.Helper()
	ctx := context.Background()
	s := campaignSnapshot{campaigns: map[int64]campaign.Campaign{}, awards: map[int64][]campaign.Award{}}
	for _, id := range []int64{f.open, f.later, f.soldOut} {
		c, err := e.Campaigns.GetCampaign(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		s.campaigns[id] = c
		for _, u := range []int64{1, 2, 3} {
			a, err := e.Campaigns.MyAwards(ctx, id, u)
			if err != nil {
				t.Fatal(err)
			}
			s.awards[id*10+u] = a
		}
	}
	_, err := e.Campaigns.GetCampaign(ctx, f.soldOut+1)
	s.nextExists = err == nil
	s.applied, _ = sim.TotalApplied()
	return s
}

// No input to the campaign endpoints is a 5xx, and a rejected request
// changes nothing: no campaign, award, count or transfer.
func TestCampaignMalformedInput(t *testing.T) {
	e, sim := setupCampaigns(t, transfersim.Faults{})
	f := newCampaignFixture(t, e)
	create := "/v1/admin/campaigns"
	get := func(id any) string { return fmt.Sprintf("/v1/admin/campaigns/%v", id) }
	grab := func(id any) string { return fmt.Sprintf("/v1/campaigns/%v/grab", id) }
	list := func(id any) string { return fmt.Sprintf("/v1/campaigns/%v/awards", id) }
	receive := func(id, seq any) string { return fmt.Sprintf("/v1/campaigns/%v/awards/%v/receive", id, seq) }
	retry := func(id, seq any) string { return fmt.Sprintf("/v1/admin/campaigns/%v/awards/%v/retry", id, seq) }
	now := time.Now().UTC()
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	// body builds a create request from field overrides; a value "-" drops the field.
	body := func(over map[string]string) string {
		fields := [][2]string{{"name", `"n"`}, {"budget", `"10.00"`}, {"award_count", `10`}, {"award_min", `"0.01"`},
			{"award_max", `"2.00"`}, {"starts_at", `"` + at(-time.Minute) + `"`}, {"ends_at", `"` + at(time.Hour) + `"`}}
		var b strings.Builder
		b.WriteString("{")
		seen := map[string]bool{}
		for _, kv := range fields {
			v := kv[1]
			if o, ok := over[kv[0]]; ok {
				v = o
			}
			seen[kv[0]] = true
			if v == "-" {
				continue
			}
			if b.Len() > 1 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, "%q:%s", kv[0], v)
		}
		for k, v := range over {
			if !seen[k] {
				fmt.Fprintf(&b, ",%q:%s", k, v)
			}
		}
		b.WriteString("}")
		return b.String()
	}
	with := func(k, v string) string { return body(map[string]string{k: v}) }
	u1, u2, u3 := user(1), user(2), user(3)

	type tc = rejectCase
	bad := func(name, b string) tc { return tc{name, "POST", create, b, admin(), 400, "INVALID_ARGUMENT"} }
	cases := []tc{
		// Create bodies.
		bad("create missing body", ``),
		bad("create empty object", `{}`),
		bad("create null body", `null`),
		bad("create array body", `[]`),
		bad("create trailing garbage", body(nil)+`x`),
		bad("create unknown field", with("memo", `"x"`)),
		bad("create field in other case", strings.Replace(body(nil), `"budget"`, `"Budget"`, 1)),
		bad("create repeated field", strings.Replace(body(nil), `"name":"n"`, `"name":"n","name":"m"`, 1)),
		bad("create missing name", with("name", "-")),
		bad("create empty name", with("name", `""`)),
		bad("create blank name", with("name", `"   "`)),
		bad("create name of 65 characters", with("name", `"`+strings.Repeat("活", 65)+`"`)),
		bad("create name of wrong type", with("name", `5`)),
		bad("create missing budget", with("budget", "-")),
		bad("create number budget", with("budget", `10.00`)),
		bad("create negative budget", with("budget", `"-10.00"`)),
		bad("create three-decimal budget", with("budget", `"10.001"`)),
		bad("create zero budget", with("budget", `"0"`)),
		bad("create budget over the maximum", with("budget", `"10000000.01"`)),
		bad("create huge budget", with("budget", `"99999999999999999999.99"`)),
		bad("create missing award_count", with("award_count", "-")),
		bad("create award_count 0", with("award_count", `0`)),
		bad("create negative award_count", with("award_count", `-1`)),
		bad("create string award_count", with("award_count", `"10"`)),
		bad("create float award_count", with("award_count", `2.5`)),
		bad("create overflowing award_count", with("award_count", `99999999999999999999`)),
		bad("create award_count over the maximum", body(map[string]string{"award_count": `100001`, "budget": `"100000.00"`})),
		bad("create missing award_min", with("award_min", "-")),
		bad("create zero award_min", with("award_min", `"0.00"`)),
		bad("create number award_min", with("award_min", `0.01`)),
		bad("create award_max below award_min", with("award_max", `"0.00"`)),
		bad("create count × min over the budget", with("award_min", `"1.01"`)),
		bad("create count × max under the budget", with("award_max", `"0.99"`)),
		bad("create per_user_limit 0", with("per_user_limit", `0`)),
		bad("create negative per_user_limit", with("per_user_limit", `-1`)),
		bad("create per_user_limit over the maximum", with("per_user_limit", `101`)),
		bad("create string per_user_limit", with("per_user_limit", `"1"`)),
		bad("create missing starts_at", with("starts_at", "-")),
		bad("create date without time", with("starts_at", `"2026-06-01"`)),
		bad("create time of wrong type", with("starts_at", `1780000000`)),
		bad("create time without zone", with("ends_at", `"2026-06-01T00:00:00"`)),
		bad("create missing ends_at", with("ends_at", "-")),
		bad("create ends before it starts", body(map[string]string{"starts_at": `"` + at(2*time.Hour) + `"`})),
		bad("create ends in the past", body(map[string]string{"starts_at": `"` + at(-2*time.Hour) + `"`, "ends_at": `"` + at(-time.Hour) + `"`})),
		bad("create window over 366 days", with("ends_at", `"`+at(400*24*time.Hour)+`"`)),
		bad("create empty ref", with("ref", `""`)),
		bad("create ref with a space", with("ref", `"a b"`)),
		bad("create ref of 65 characters", with("ref", `"`+strings.Repeat("r", 65)+`"`)),
		bad("create ref of wrong type", with("ref", `5`)),
		{"create ref reused for another campaign", "POST", create, with("ref", `"fix-open"`), admin(), 409, "IDEMPOTENCY_CONFLICT"},
		{"create body over 64 KiB", "POST", create, with("name", `"`+strings.Repeat("x", 70<<10)+`"`), admin(), 413, "PAYLOAD_TOO_LARGE"},
		{"create with a user token", "POST", create, body(nil), u1, 403, "FORBIDDEN"},
		{"create without credentials", "POST", create, body(nil), nil, 401, "UNAUTHENTICATED"},

		// Admin detail.
		{"get path id abc", "GET", get("abc"), ``, admin(), 400, "INVALID_ARGUMENT"},
		{"get path id 0", "GET", get(0), ``, admin(), 400, "INVALID_ARGUMENT"},
		{"get path id -1", "GET", get(-1), ``, admin(), 400, "INVALID_ARGUMENT"},
		{"get an unknown campaign", "GET", get(999999), ``, admin(), 404, "NOT_FOUND"},
		{"get with a user token", "GET", get(f.open), ``, u1, 403, "FORBIDDEN"},

		// Grab.
		{"grab path id abc", "POST", grab("abc"), ``, u3, 400, "INVALID_ARGUMENT"},
		{"grab path id 0", "POST", grab(0), ``, u3, 400, "INVALID_ARGUMENT"},
		{"grab path id overflow", "POST", grab("99999999999999999999"), ``, u3, 400, "INVALID_ARGUMENT"},
		{"grab an unknown campaign", "POST", grab(999999), ``, u3, 404, "NOT_FOUND"},
		{"grab before the start", "POST", grab(f.later), ``, u3, 409, "NOT_OPEN"},
		{"grab a sold-out campaign", "POST", grab(f.soldOut), ``, u3, 409, "SOLD_OUT"},
		{"grab without credentials", "POST", grab(f.open), ``, nil, 401, "UNAUTHENTICATED"},
		{"grab with the admin token", "POST", grab(f.open), ``, admin(), 401, "UNAUTHENTICATED"},

		// Receive.
		{"receive path id abc", "POST", receive("abc", f.seq1), ``, u1, 400, "INVALID_ARGUMENT"},
		{"receive seq abc", "POST", receive(f.open, "abc"), ``, u1, 400, "INVALID_ARGUMENT"},
		{"receive seq 0", "POST", receive(f.open, 0), ``, u1, 400, "INVALID_ARGUMENT"},
		{"receive seq -1", "POST", receive(f.open, -1), ``, u1, 400, "INVALID_ARGUMENT"},
		{"receive seq beyond any campaign", "POST", receive(f.open, campaign.MaxAwards+1), ``, u1, 404, "NOT_FOUND"},
		{"receive an award never granted", "POST", receive(f.open, 11), ``, u1, 404, "NOT_FOUND"},
		{"receive in an unknown campaign", "POST", receive(999999, 1), ``, u1, 404, "NOT_FOUND"},
		{"receive another user's award", "POST", receive(f.open, f.seq1), ``, u2, 403, "FORBIDDEN"},
		{"receive a paid award", "POST", receive(f.open, f.seq1), ``, u1, 409, "AWARD_RECEIVED"},
		{"receive without credentials", "POST", receive(f.open, f.seq1), ``, nil, 401, "UNAUTHENTICATED"},
		{"retry path id abc", "POST", retry("abc", f.seq1), ``, admin(), 400, "INVALID_ARGUMENT"},
		{"retry seq 0", "POST", retry(f.open, 0), ``, admin(), 400, "INVALID_ARGUMENT"},
		{"retry with a body", "POST", retry(f.open, f.seq1), `{"force":true}`, admin(), 400, "INVALID_ARGUMENT"},
		{"retry an award never granted", "POST", retry(f.open, 11), ``, admin(), 404, "NOT_FOUND"},
		{"retry a paid award", "POST", retry(f.open, f.seq1), ``, admin(), 409, "AWARD_RECEIVED"},
		{"retry as a user", "POST", retry(f.open, f.seq1), ``, u1, 403, "FORBIDDEN"},

		// List.
		{"list path id abc", "GET", list("abc"), ``, u1, 400, "INVALID_ARGUMENT"},
		{"list an unknown campaign", "GET", list(999999), ``, u1, 404, "NOT_FOUND"},
		{"list without credentials", "GET", list(f.open), ``, nil, 401, "UNAUTHENTICATED"},

		// Routing.
		{"grab with GET", "GET", grab(f.open), ``, u1, 405, "METHOD_NOT_ALLOWED"},
		{"campaigns list is not a route", "GET", "/v1/campaigns", ``, u1, 404, "NOT_FOUND"},
	}

	if f.snapshot(t, e, sim).nextExists {
		t.Fatal("fixture: the next campaign id exists already")
	}
	e.runRejects(t, cases, func(t *testing.T) any { return f.snapshot(t, e, sim) })
}

func TestOpenAPICampaigns(t *testing.T) {
	e := setup(t)
	body := string(e.do(t, "GET", "/openapi.json", ``, nil).body)
	for _, want := range []string{`"/v1/admin/campaigns"`, `"/v1/campaigns/{id}/grab"`, `"/v1/campaigns/{id}/awards/{seq}/receive"`,
		`"AWARD_RECEIVED"`, `"PAYOUT_IN_PROGRESS"`, `"PayoutInProgressError"`, `"CreateCampaignRequest"`} {
		if !strings.Contains(body, want) {
			t.Errorf("openapi.json lacks %s", want)
		}
	}
}

// In the default payout mode a grab answers from Redis at once, payout
// received (pending), and the awards list shows the payout pool paying it.
func TestCampaignAsyncPayout(t *testing.T) {
	secret := []byte("transfer-secret")
	sim := transfersim.New(secret, transfersim.Faults{}, 1)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	client := transfer.NewClient(srv.URL, secret, 5*time.Second, nil)
	e := setupMode(t, engine.PayoutAsync, func(d *grab.Deps) { d.Campaigns.Transfer = client })
	e.startWriter(t)
	ctx, cancel := context.WithCancel(context.Background())
	pool := make(chan error, 1)
	go func() { pool <- e.Campaigns.RunPayoutPool(ctx) }()
	t.Cleanup(func() { cancel(); <-pool })

	c := expect(t, e.do(t, "POST", "/v1/admin/campaigns", campaignBody(``), admin()), 201)
	id := integer(t, "campaign_id", c["campaign_id"])
	a := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/campaigns/%d/grab", id), ``, user(5)), 200)
	keys(t, "award", a, awardFields...)
	if a["payout"] != "received" || a["transferred_at"] != nil || a["repeat"] != false {
		t.Fatalf("grab %v", a)
	}
	var mine []any
	enginetest.WaitFor(t, "the pool pays the award", func() bool {
		mine = expect(t, e.do(t, "GET", fmt.Sprintf("/v1/campaigns/%d/awards", id), ``, user(5)), 200)["awards"].([]any)
		return len(mine) == 1 && mine[0].(map[string]any)["payout"] == "transferred"
	})
	got := mine[0].(map[string]any)
	if got["seq"] != a["seq"] || got["amount"] != a["amount"] {
		t.Fatalf("award listed %v, grabbed %v", got, a)
	}
	timestamp(t, "transferred_at", got["transferred_at"])
	if n, moved := sim.TotalApplied(); n != 1 || moved != fen(t, "amount", a["amount"]) {
		t.Fatalf("the service moved %d fen in %d transfers", moved, n)
	}
}
