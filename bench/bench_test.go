package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/grab-engine/grab"

	"github.com/grab-engine/grab/engine/channel"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/errs"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

func config(tb testing.TB, s bench.Scenario) bench.Config {
	tb.Helper()
	rdb, keys := redistest.Real(tb, 16)
	return bench.Config{Scenario: s, Redis: rdb, Keys: keys, DB: storetest.MySQL(tb)}
}

// runClean runs cfg and requires its engines (cfg.Engines, or all of them)
// to have run in order and the audit to pass.
func runClean(t *testing.T, cfg bench.Config) *bench.Report {
	t.Helper()
	rep, err := bench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Audit.OK {
		t.Fatalf("audit of clean runs failed: %v", rep.Audit.Violations)
	}
	want := cfg.Engines
	if len(want) == 0 {
		want = bench.DefaultEngines(cfg.Scenario)
	}
	var ran []string
	for _, run := range rep.Runs {
		ran = append(ran, run.Engine)
		inProcess := run.Engine == bench.EngineEngine || run.Engine == bench.EngineSync || run.Engine == bench.EngineHTTP
		if inProcess != (run.DrainMs != nil) || inProcess != (run.WriterLagP99 != nil) {
			t.Errorf("%s: drain %v, lag %v; want them exactly for the engines with a writer", run.Engine, run.DrainMs, run.WriterLagP99)
		}
		// Every grab answered OK was applied in some writer transaction.
		if inProcess && run.Codes[bench.CodeOK] > 0 && (run.WriterBatch == nil || *run.WriterBatch < 1) {
			t.Errorf("%s: writer batch mean %v; want one of at least 1 event", run.Engine, run.WriterBatch)
		}
	}
	if !slices.Equal(ran, want) {
		t.Fatalf("runs %q; want %q", ran, want)
	}
	return rep
}

// requireCaught plants a violation, audits, undoes the plant, and requires
// the audit to have reported a want violation, and none once undone.
func requireCaught(t *testing.T, plant, undo func(), audit func() (bench.AuditResult, error), want string) {
	t.Helper()
	plant()
	res, err := audit()
	undo()
	if err != nil {
		t.Fatal(err)
	}
	if res.OK || !strings.Contains(strings.Join(res.Violations, "\n"), want) {
		t.Fatalf("audit: ok=%v %q; want a %q violation", res.OK, res.Violations, want)
	}
	if res, err := audit(); err != nil || !res.OK {
		t.Fatalf("after undoing the plant: %v %v", err, res.Violations)
	}
}

// execAll returns a function that runs the statements qs.
func execAll(x *sqlx.DB, qs ...string) func() {
	return func() {
		for _, q := range qs {
			x.MustExec(q)
		}
	}
}

func tiny() *bench.GroupStorm {
	return &bench.GroupStorm{Packets: 4, Shares: 10, Grabbers: 15, Concurrency: 8}
}

// Every engine serves the whole scenario: exactly N winners a packet, the
// rest SOLD_OUT, nothing lost on the way to MySQL, and the audit passes.
func TestEveryEngineRunsAndAuditPasses(t *testing.T) {
	rep := runClean(t, config(t, tiny()))
	for _, run := range rep.Runs {
		if run.Ops != 60 || run.Codes[bench.CodeOK] != 40 || run.Codes[errs.CodeSoldOut] != 20 || run.Errors != 0 {
			t.Errorf("%s: %d grabs, answers %v, %d errors (%v); want 60: 40 OK, 20 SOLD_OUT",
				run.Engine, run.Ops, run.Codes, run.Errors, run.FirstErr)
		}
	}
	if rep.Ratios.EngineVsRaw == nil || rep.Ratios.HTTPVsRaw == nil || rep.Ratios.EngineVsMySQLLock == nil {
		t.Errorf("ratios missing: %+v", rep.Ratios)
	}
	if b, _ := rep.Scenario["redis_bytes_per_open_packet"].(int64); b <= 0 {
		t.Errorf("redis bytes per open packet: %v", rep.Scenario["redis_bytes_per_open_packet"])
	}
	var table, png bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "mysql-lock") {
		t.Errorf("table: %v\n%s", err, table.String())
	}
	if err := rep.WritePNG(&png); err != nil || !bytes.HasPrefix(png.Bytes(), []byte("\x89PNG")) {
		t.Errorf("png: %v", err)
	}
}

// Packets paid through each channel's simulator, in its own protocol, open
// at the sender's return and are grabbed while the notifications settle
// them: exactly N winners a packet, every grab credited once the payments
// settle, and money conserved with what the channel brought in.
func TestGroupStormPaidThroughEachChannel(t *testing.T) {
	for _, channel := range []string{channel.Alipay, channel.Wechat, channel.Unionpay} {
		t.Run(channel, func(t *testing.T) {
			s := tiny()
			s.Pay = channel
			cfg := config(t, s)
			cfg.Engines = []string{bench.EngineEngine, bench.EngineHTTP}
			rep := runClean(t, cfg)
			if rep.Scenario["pay"] != channel {
				t.Errorf("scenario %v, want pay=%s", rep.Scenario, channel)
			}
			for _, run := range rep.Runs {
				if run.Codes[bench.CodeOK] != 40 || run.Codes[errs.CodeSoldOut] != 20 || run.SettleSweeps == nil {
					t.Errorf("%s: answers %v, settle sweeps %v; want 40 OK, 20 SOLD_OUT, settled", run.Engine, run.Codes, run.SettleSweeps)
				}
			}
			var paid int
			if err := cfg.DB.SQL().Get(&paid, "SELECT COUNT(*) FROM payment WHERE channel = ? AND status = 'paid'", channel); err != nil || paid != 8 {
				t.Fatalf("%d trades paid through %s (%v), want 8: 4 packets for each of 2 engines", paid, channel, err)
			}
		})
	}
	s := tiny()
	s.Pay = "paypal"
	if err := s.Validate(); err == nil {
		t.Fatal("an unknown pay method was taken")
	}
}

// The audit can fail: each planted violation is caught by its own check.
func TestAuditCatchesPlantedViolations(t *testing.T) {
	ctx := context.Background()
	cfg := config(t, tiny())
	cfg.Engines = []string{bench.EngineEngine, bench.EngineMySQLLock}
	runClean(t, cfg)
	x := cfg.DB.SQL()
	var victim struct {
		PacketID int64     `db:"packet_id"`
		Seq      int       `db:"seq"`
		UserID   int64     `db:"user_id"`
		Amount   store.Fen `db:"amount"`
	}
	if err := x.Get(&victim, "SELECT packet_id, seq, user_id, amount FROM packet_share WHERE user_id IS NOT NULL LIMIT 1"); err != nil {
		t.Fatal(err)
	}
	var other int64 // a grabber of the same packet, with an account
	if err := x.Get(&other, "SELECT user_id FROM packet_share WHERE packet_id = ? AND user_id <> ? LIMIT 1", victim.PacketID, victim.UserID); err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf("pk:%d:%d", victim.PacketID, victim.Seq)
	amount := fmt.Sprintf("%d.%02d", victim.Amount/100, victim.Amount%100)
	for _, c := range []struct {
		name        string
		plant, undo []string
		want        string
	}{
		{"a share paid to a second owner, balances moved to match",
			[]string{
				fmt.Sprintf("UPDATE ledger SET user_id = %d WHERE kind = 'grab' AND ref = '%s'", other, ref),
				fmt.Sprintf("UPDATE account SET balance = balance - %s WHERE user_id = %d", amount, victim.UserID),
				fmt.Sprintf("UPDATE account SET balance = balance + %s WHERE user_id = %d", amount, other)},
			[]string{
				fmt.Sprintf("UPDATE ledger SET user_id = %d WHERE kind = 'grab' AND ref = '%s'", victim.UserID, ref),
				fmt.Sprintf("UPDATE account SET balance = balance + %s WHERE user_id = %d", amount, victim.UserID),
				fmt.Sprintf("UPDATE account SET balance = balance - %s WHERE user_id = %d", amount, other)},
			"share has a second owner"},
		{"a balance credited twice",
			[]string{fmt.Sprintf("UPDATE account SET balance = balance + %s WHERE user_id = %d", amount, victim.UserID)},
			[]string{fmt.Sprintf("UPDATE account SET balance = balance - %s WHERE user_id = %d", amount, victim.UserID)},
			"money not conserved"},
		{"a share worth more than the split gave it",
			[]string{fmt.Sprintf("UPDATE packet_share SET amount = amount + 1 WHERE packet_id = %d AND seq = %d", victim.PacketID, victim.Seq)},
			[]string{fmt.Sprintf("UPDATE packet_share SET amount = amount - 1 WHERE packet_id = %d AND seq = %d", victim.PacketID, victim.Seq)},
			"shares do not add up"},
		{"a share marked paid out that the ledger never paid",
			[]string{fmt.Sprintf("DELETE FROM ledger WHERE kind = 'grab' AND ref = '%s'", ref),
				fmt.Sprintf("UPDATE account SET balance = balance - %s WHERE user_id = %d", amount, victim.UserID)},
			[]string{fmt.Sprintf("INSERT INTO ledger (kind, ref, user_id, amount, created_at) VALUES ('grab', '%s', %d, %s, NOW())", ref, victim.UserID, amount),
				fmt.Sprintf("UPDATE account SET balance = balance + %s WHERE user_id = %d", amount, victim.UserID)},
			"credited share without a credit"},
		{"a grab of a paid packet left uncredited, its credit undone",
			[]string{fmt.Sprintf("DELETE FROM ledger WHERE kind = 'grab' AND ref = '%s'", ref),
				fmt.Sprintf("UPDATE account SET balance = balance - %s WHERE user_id = %d", amount, victim.UserID),
				fmt.Sprintf("UPDATE packet_share SET credited = 0 WHERE packet_id = %d AND seq = %d", victim.PacketID, victim.Seq)},
			[]string{fmt.Sprintf("INSERT INTO ledger (kind, ref, user_id, amount, created_at) VALUES ('grab', '%s', %d, %s, NOW())", ref, victim.UserID, amount),
				fmt.Sprintf("UPDATE account SET balance = balance + %s WHERE user_id = %d", amount, victim.UserID),
				fmt.Sprintf("UPDATE packet_share SET credited = 1 WHERE packet_id = %d AND seq = %d", victim.PacketID, victim.Seq)},
			"grab of a paid packet not credited"},
	} {
		t.Run(c.name, func(t *testing.T) {
			requireCaught(t, execAll(x, c.plant...), execAll(x, c.undo...), func() (bench.AuditResult, error) { return bench.Audit(ctx, cfg.DB) }, c.want)
		})
	}
}

// BenchmarkGrab compares the raw probe script (what Redis can do) with the
// engine's grab path in-process and through HTTP, on the same Redis, as Go
// benchmarks; cmd/grabbench is the full comparison. Read the grabs/s.
func BenchmarkGrab(b *testing.B) {
	for _, name := range []string{bench.EngineRaw, bench.EngineEngine, bench.EngineHTTP} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			cfg := config(b, &bench.GroupStorm{Packets: b.N/100 + 1, Shares: 100, Grabbers: 100, Concurrency: 16})
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			ecfg := engine.DefaultConfig()
			ecfg.Keys = cfg.Keys
			eng := grab.New(grab.Deps{Deps: engine.Deps{Redis: cfg.Redis, DB: cfg.DB, Log: log}}, ecfg)
			env := &bench.Env{Redis: cfg.Redis, Keys: cfg.Keys, DB: cfg.DB, Engine: eng, Setup: bench.EngineSetup{E: eng.Packets}}
			trial, err := cfg.Scenario.Prepare(ctx, env, name)
			if err != nil {
				b.Fatal(err)
			}
			plan := trial.Plan()
			var g bench.Grabber = bench.Raw{Redis: cfg.Redis, Keys: cfg.Keys}
			switch name {
			case bench.EngineEngine:
				g = bench.Engine{E: eng.Packets}
			case bench.EngineHTTP:
				srv := httptest.NewServer(grabhttp.New(eng, grabhttp.Config{DevAuth: true}, log, nil))
				b.Cleanup(srv.Close)
				g = bench.HTTP{URL: srv.URL, Client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
			}
			var next atomic.Int64
			b.SetParallelism(16) // many clients in flight, as in a group grab
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if code, err := g.Grab(ctx, plan.Op(next.Add(1)-1)); code != bench.CodeOK || err != nil {
						b.Errorf("%s: %v", code, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grabs/s")
		})
	}
}

// With events on, the in-process runs report the outbox's age and are
// audited against the stream; the table has its column. The mysql-lock
// engine writes no events: it is refused.
func TestEvents(t *testing.T) {
	storm := &bench.GroupStorm{Packets: 3, Shares: 10, Grabbers: 20, Concurrency: 8}
	cfg := config(t, storm)
	cfg.Events, cfg.Engines = true, []string{bench.EngineRaw, bench.EngineEngine, bench.EngineHTTP}
	rep := runClean(t, cfg)
	for _, run := range rep.Runs {
		if inProcess := run.Engine != bench.EngineRaw; inProcess != (run.OutboxAgeP99 != nil) {
			t.Errorf("%s: outbox age %v; want one exactly for the engines with a writer", run.Engine, run.OutboxAgeP99)
		}
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil || !strings.Contains(table.String(), "outbox p99 ms") {
		t.Fatalf("table without the outbox column: %v\n%s", err, table.String())
	}
	cfg.Engines = []string{bench.EngineEngine, bench.EngineMySQLLock}
	if _, err := bench.Run(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), "not the mysql-lock engine") {
		t.Fatalf("events with mysql-lock: %v", err)
	}
}
