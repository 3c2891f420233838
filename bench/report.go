package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/grab-engine/grab/store"
)

// Report is one comparison; its JSON is what -json writes.
type Report struct {
	// Scenario is the scenario's name and parameters, and what an open
	// packet of it costs in Redis (redis_bytes_per_open_packet).
	Scenario map[string]any `json:"scenario"`
	Machine  Machine        `json:"machine"`
	Runs     []RunReport    `json:"runs"`
	Ratios   Ratios         `json:"ratios"`
	Audit    AuditResult    `json:"audit"`
	// Unit is what the table and the PNG call a request, plural: "grabs",
	// or the scenario's own ("deducts"); "" is "grabs". The JSON keys stay.
	Unit string `json:"-"`
}

func (r *Report) unit() string {
	if r.Unit == "" {
		return "grabs"
	}
	return r.Unit
}

// RunReport is one engine's run. Fields that do not apply to an engine
// (writer lag of the raw probe) are null.
type RunReport struct {
	Engine       string           `json:"engine"`
	OpsPerSec    float64          `json:"ops_per_sec"`
	P50          float64          `json:"p50_ms"`
	P90          float64          `json:"p90_ms"`
	P99          float64          `json:"p99_ms"`
	P999         float64          `json:"p999_ms"`
	Codes        map[string]int64 `json:"codes"`
	WriterLagP99 *float64         `json:"writer_lag_p99_ms"`
	// WriterBatch is the mean number of events the writer applied per store
	// transaction during the run and its drain (in-process engines): the
	// smaller, the more MySQL spends per event on the statements every
	// transaction makes.
	WriterBatch *float64 `json:"writer_batch_mean"`
	DrainMs     *float64 `json:"drain_ms"`
	// RedisCPUPerOp is the Redis server's CPU time (user + system) per
	// grab during the run, writer reads included: 1e6 / it is the most
	// grabs a second one Redis core could serve this way.
	RedisCPUPerOp *float64 `json:"redis_cpu_us_per_op"`
	// SettleMs is the time from the drain until what the run left
	// unfinished was done (campaign: every award paid out), in SettleSweeps
	// sweeps; null for plans with nothing to settle.
	SettleMs     *float64 `json:"settle_ms"`
	SettleSweeps *int     `json:"settle_sweeps"`
	// OutboxAgeP99 is the p99 of the outbox's oldest unpublished event's
	// age during the run, sampled every 10 ms: how far the relay to NATS
	// lagged the writer. Only with events on (Config.Events).
	OutboxAgeP99 *float64 `json:"outbox_age_p99_ms,omitempty"`
	// HealthzPerSec is the rate at which the http engine's grabd answered
	// GET /healthz under wrk right after its run, for as long: a request
	// that does none of the grab's work. Only with LoadOptions.Wrk.
	HealthzPerSec *float64 `json:"healthz_per_sec,omitempty"`
	// Only for runs that pay out (campaign's but raw): Payouts is the
	// transfers the transfer service applied, and TransferCalls the calls
	// made for them, retries included; PayoutsPerSec is Payouts over
	// PayoutWindowMs, the time from the first award to the last transfer
	// applied (absent when nothing was applied); TransferRate is the limit
	// the engine's calls were held to, per second (0: none; absent for the
	// naive scheme, which has no limiter).
	Payouts        *int     `json:"payouts,omitempty"`
	TransferCalls  *int64   `json:"transfer_calls,omitempty"`
	PayoutWindowMs *float64 `json:"payout_window_ms,omitempty"`
	PayoutsPerSec  *float64 `json:"payouts_per_sec,omitempty"`
	TransferRate   *float64 `json:"transfer_rate,omitempty"`

	// Shown in the table only.
	Ops          int64         `json:"-"`
	Elapsed      time.Duration `json:"-"`
	WriterLagMax *float64      `json:"-"`
	Errors       int64         `json:"-"`
	FirstErr     error         `json:"-"`
	Audit        AuditResult   `json:"-"`
	// Audited: MySQL was checked after the run (not for raw, which writes
	// none, nor for an external grabd, which writes its own database).
	Audited bool `json:"-"`
}

// Ratios of throughput; null when either engine did not run, and
// engine_vs_engine_sync absent then (only campaign has engine-sync).
type Ratios struct {
	EngineVsRaw        *float64 `json:"engine_vs_raw"`
	HTTPVsRaw          *float64 `json:"http_vs_raw"`
	EngineVsMySQLLock  *float64 `json:"engine_vs_mysql_lock"`
	EngineVsEngineSync *float64 `json:"engine_vs_engine_sync,omitempty"`
	// HTTPVsHealthz is the http engine's grabs/s over its /healthz req/s
	// (RunReport.HealthzPerSec), with wrk.
	HTTPVsHealthz *float64 `json:"http_vs_healthz,omitempty"`
}

func ratios(runs []RunReport) Ratios {
	rate := map[string]float64{}
	for _, r := range runs {
		rate[r.Engine] = r.OpsPerSec
		if r.Engine == EngineHTTP && r.HealthzPerSec != nil {
			rate[healthz] = *r.HealthzPerSec
		}
	}
	ratio := func(a, b string) *float64 {
		if rate[a] <= 0 || rate[b] <= 0 {
			return nil
		}
		v := rate[a] / rate[b]
		return &v
	}
	return Ratios{EngineVsRaw: ratio(EngineEngine, EngineRaw), HTTPVsRaw: ratio(EngineHTTP, EngineRaw),
		EngineVsMySQLLock: ratio(EngineEngine, EngineMySQLLock), EngineVsEngineSync: ratio(EngineEngine, EngineSync),
		HTTPVsHealthz: ratio(EngineHTTP, healthz)}
}

// healthz names the http engine's /healthz rate among ratios' rates.
const healthz = "healthz"

// Machine is what the numbers were measured on.
type Machine struct {
	Cores    int     `json:"cores"`
	CPU      string  `json:"cpu"`
	MemoryGB float64 `json:"memory_gb"`
	OS       string  `json:"os"`
	Go       string  `json:"go"`
	Redis    string  `json:"redis"`
	MySQL    string  `json:"mysql"`
}

// DescribeMachine reads what it can; unknown fields stay empty.
func DescribeMachine(ctx context.Context, rdb redis.UniversalClient, db *store.DB) Machine {
	m := Machine{Cores: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		m.Redis = infoField(info, "redis_version")
	}
	db.SQL().GetContext(ctx, &m.MySQL, "SELECT VERSION()")
	m.CPU = procField("/proc/cpuinfo", "model name")
	if kb, err := strconv.ParseFloat(strings.TrimSuffix(procField("/proc/meminfo", "MemTotal"), " kB"), 64); err == nil {
		m.MemoryGB = float64(int(kb/1024/1024*10+0.5)) / 10
	}
	return m
}

func infoField(info, key string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return ""
}

// procField is the first "key: value" of a Linux /proc file; "" elsewhere.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for a terminal.
func (r *Report) WriteTable(w io.Writer) error {
	names := make([]string, 0, len(r.Scenario))
	for k := range r.Scenario {
		names = append(names, k)
	}
	slices.Sort(names)
	var params []string
	for _, k := range names {
		params = append(params, fmt.Sprintf("%s=%v", k, r.Scenario[k]))
	}
	m := r.Machine
	fmt.Fprintf(w, "scenario: %s\n", strings.Join(params, " "))
	fmt.Fprintf(w, "machine:  %d cores %s, %.1f GB, %s, %s, Redis %s, MySQL %s\n\n",
		m.Cores, m.CPU, m.MemoryGB, m.OS, m.Go, m.Redis, m.MySQL)
	// The settle column only for scenarios that settle, so the others'
	// tables stay as they were.
	settles := slices.ContainsFunc(r.Runs, func(run RunReport) bool { return run.SettleMs != nil })
	settleHead := ""
	if settles {
		settleHead = "settle ms/sweeps\t"
	}
	// The payout columns only for scenarios that pay out.
	pays := slices.ContainsFunc(r.Runs, func(run RunReport) bool { return run.Payouts != nil })
	payHead := ""
	if pays {
		payHead = "payouts/s\tcalls/s (limit)\t"
	}
	// The outbox column only with events on.
	outboxes := slices.ContainsFunc(r.Runs, func(run RunReport) bool { return run.OutboxAgeP99 != nil })
	outboxHead := ""
	if outboxes {
		outboxHead = "outbox p99 ms\t"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "engine\t%[1]s\t%[1]s/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tredis µs/op\tlag p99/max ms\ttx batch\t%[3]sdrain ms\t%[2]s%[4]saudit\tanswers\t\n",
		r.unit(), settleHead, outboxHead, payHead)
	for _, run := range r.Runs {
		lag, batch, drain, rcpu, settle, outbox, pay := "-", "-", "-", "-", "", "", ""
		if run.WriterBatch != nil {
			batch = fmt.Sprintf("%.1f", *run.WriterBatch)
		}
		if run.RedisCPUPerOp != nil {
			rcpu = fmt.Sprintf("%.1f", *run.RedisCPUPerOp)
		}
		if run.WriterLagP99 != nil {
			lag = fmt.Sprintf("%.0f/%.0f", *run.WriterLagP99, *run.WriterLagMax)
		}
		if run.DrainMs != nil {
			drain = fmt.Sprintf("%.0f", *run.DrainMs)
		}
		switch {
		case run.OutboxAgeP99 != nil:
			outbox = fmt.Sprintf("%.0f\t", *run.OutboxAgeP99)
		case outboxes:
			outbox = "-\t"
		}
		switch {
		case run.SettleMs != nil:
			settle = fmt.Sprintf("%.0f/%d\t", *run.SettleMs, *run.SettleSweeps)
		case settles:
			settle = "-\t"
		}
		if pays {
			pay = payoutColumns(run)
		}
		audit := "ok"
		switch {
		case !run.Audit.OK:
			audit = "FAIL"
		case !run.Audited:
			audit = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t%s\t%s\t%s%s\t%s%s%s\t%s\t\n", run.Engine, run.Ops, run.OpsPerSec,
			run.P50, run.P90, run.P99, run.P999, rcpu, lag, batch, outbox, drain, settle, pay, audit, codes(run.Codes))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	ratio := func(name string, v *float64) {
		if v != nil {
			fmt.Fprintf(w, "%-22s %.2fx\n", name, *v)
		}
	}
	ratio("engine / raw", r.Ratios.EngineVsRaw)
	ratio("http / raw", r.Ratios.HTTPVsRaw)
	ratio("engine / mysql-lock", r.Ratios.EngineVsMySQLLock)
	ratio("http grab / healthz", r.Ratios.HTTPVsHealthz)
	for _, run := range r.Runs {
		if run.HealthzPerSec != nil {
			fmt.Fprintf(w, "%-22s %.0f req/s (wrk)\n", "healthz", *run.HealthzPerSec)
		}
	}
	ratio("engine / engine-sync", r.Ratios.EngineVsEngineSync)
	if b, ok := r.Scenario["redis_bytes_per_open_packet"]; ok {
		fmt.Fprintf(w, "redis per open packet  %v bytes\n", b)
	}
	for _, run := range r.Runs {
		if run.Errors > 0 {
			fmt.Fprintf(w, "%s: %d errors, e.g. %v\n", run.Engine, run.Errors, run.FirstErr)
		}
	}
	if r.Audit.OK {
		fmt.Fprintln(w, "audit: ok")
		return nil
	}
	fmt.Fprintln(w, "audit: FAILED")
	for _, v := range r.Audit.Violations {
		fmt.Fprintln(w, "  "+v)
	}
	return nil
}

// payoutColumns are a run's payouts/s and its transfer calls/s over the
// same window (perSec) with their limit ("none": unlimited, or no
// limiter), each "-" where it has none; tab-terminated.
func payoutColumns(run RunReport) string {
	if run.Payouts == nil || run.PayoutsPerSec == nil {
		return "-\t-\t"
	}
	limit := "none"
	if run.TransferRate != nil && *run.TransferRate > 0 {
		limit = strconv.FormatFloat(*run.TransferRate, 'f', -1, 64)
	}
	calls := float64(*run.TransferCalls) / (*run.PayoutWindowMs / 1000)
	return fmt.Sprintf("%s\t%s (%s)\t", perSec(*run.PayoutsPerSec), perSec(calls), limit)
}

// perSec is a rate a second as the table shows it: whole from 10 up, else
// two significant digits, so that a rate under a low -transfer-rate does
// not round up past its limit (0.62 calls/s under 0.5 plus its burst, not 1).
func perSec(v float64) string {
	if v >= 10 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

// codes lists the answers, most frequent first.
func codes(c map[string]int64) string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if c[a] != c[b] {
			return int(c[b] - c[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, c[k])
	}
	return strings.Join(parts, ", ")
}

// WritePNG draws throughput (bars) and latency percentiles (one line per
// engine, log scale: the engines differ by orders of magnitude) side by side.
func (r *Report) WritePNG(w io.Writer) error {
	names := make([]string, len(r.Runs))
	rates := make(plotter.Values, len(r.Runs))
	labels := plotter.XYLabels{}
	for i, run := range r.Runs {
		names[i], rates[i] = run.Engine, run.OpsPerSec
		labels.XYs = append(labels.XYs, plotter.XY{X: float64(i), Y: run.OpsPerSec})
		labels.Labels = append(labels.Labels, fmt.Sprintf("%.0f", run.OpsPerSec))
	}
	title := fmt.Sprintf("%v", r.Scenario["name"])

	tp := plot.New()
	tp.Title.Text = title + ": throughput"
	tp.Y.Label.Text = r.unit() + " / s"
	bars, err := plotter.NewBarChart(rates, vg.Points(40))
	if err != nil {
		return err
	}
	bars.Color = plotutil.Color(0)
	tp.Add(bars, plotter.NewGrid())
	if lbl, err := plotter.NewLabels(labels); err == nil {
		for i := range lbl.TextStyle {
			lbl.TextStyle[i].XAlign = draw.XCenter
		}
		lbl.Offset = vg.Point{Y: vg.Points(3)}
		tp.Add(lbl)
	}
	tp.NominalX(names...)
	tp.Y.Min = 0
	tp.Y.Max = slices.Max(append([]float64{1}, rates...)) * 1.15

	lp := plot.New()
	lp.Title.Text = title + ": latency"
	lp.Y.Label.Text = "ms (log scale)"
	lp.Y.Scale = plot.LogScale{}
	lp.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	// Bottom right stays clear: latency grows to the right.
	lp.Legend.Top, lp.Legend.Left = false, false
	lp.Legend.XOffs, lp.Legend.YOffs = -vg.Points(10), vg.Points(10)
	lp.Add(plotter.NewGrid())
	lo, hi := math.Inf(1), 0.0
	for i, run := range r.Runs {
		pts := plotter.XYs{}
		for j, v := range []float64{run.P50, run.P90, run.P99, run.P999} {
			v = max(v, 0.001)
			pts = append(pts, plotter.XY{X: float64(j), Y: v})
			lo, hi = min(lo, v), max(hi, v)
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return err
		}
		line.Color, points.Color, points.Shape = plotutil.Color(i), plotutil.Color(i), plotutil.Shape(i)
		line.Width = vg.Points(1.5)
		lp.Add(line, points)
		lp.Legend.Add(run.Engine, line, points)
	}
	lp.NominalX("p50", "p90", "p99", "p99.9")
	if hi > 0 { // whole decades, so the log axis has a tick at each end
		lp.Y.Min, lp.Y.Max = math.Pow(10, math.Floor(math.Log10(lo))-1), math.Pow(10, math.Ceil(math.Log10(hi)))
	}

	img := vgimg.New(vg.Points(900), vg.Points(380))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Points(20), PadTop: vg.Points(10), PadBottom: vg.Points(10),
		PadLeft: vg.Points(10), PadRight: vg.Points(10)}
	canvases := plot.Align([][]*plot.Plot{{tp, lp}}, tiles, dc)
	tp.Draw(canvases[0][0])
	lp.Draw(canvases[0][1])
	_, err = vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}
