package bench

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine/errs"
)

// wrkScript makes wrk send a plan's requests once each and count their
// answers by API code (its header says how).
//
//go:embed wrk.lua
var wrkScript []byte

// wrkThreadDone is what wrkScript writes to stderr when one of wrk's
// threads has every answer it waits for.
const wrkThreadDone = "grabbench-wrk: thread done"

// wrkTimeout is wrk's --timeout: its latencies go this high, as the Go
// clients' histogram does; a slower answer counts as a timeout error.
const wrkTimeout = 60 * time.Second

// ErrNoWrk is RunWrk's answer when wrk is not installed.
var ErrNoWrk = errors.New("bench: wrk not found in PATH: -wrk needs wrk 4 (Debian: apt-get install wrk)")

// wrkGrabber is an http engine's Grabber whose requests wrk can send (the
// packet and campaign grabs): op's request is a bodiless POST of
// grabPath(op) to baseURL as X-User-Id op.User, as its Grab sends it.
type wrkGrabber interface {
	Grabber
	grabPath(op Op) string
	baseURL() string
}

// wrkable reports whether g's requests can go through wrk, and if not why.
func wrkable(g Grabber) (wrkGrabber, error) {
	w, ok := g.(wrkGrabber)
	if !ok {
		return nil, errors.New("-wrk sends bodiless grabs as X-User-Id: this scenario's http requests " +
			"are not those (flash-sale's deducts carry an order and are tallied per SKU for the audit)")
	}
	return w, nil
}

// RunWrk makes the plan's requests with wrk against g's URL, each once,
// from plan.Concurrency connections on opt.WrkThreads threads, and reads
// back what the Go clients of RunLoad would have measured: the answers by
// API code (the same names) and wrk's latency percentiles and duration.
// opt.MaxTime, rounded up to whole seconds, cuts the run; a request it
// cuts off is not an answer. ctx ending stops wrk, which reports what it has.
func RunWrk(ctx context.Context, g Grabber, plan Plan, opt LoadOptions) (Load, error) {
	wg, err := wrkable(g)
	if err != nil {
		return Load{}, err
	}
	if plan.Ops == 0 {
		return Load{Codes: map[string]int64{}, wrkLatency: map[float64]float64{}}, nil
	}
	bin, dir, script, err := wrkSetup()
	if err != nil {
		return Load{}, err
	}
	defer os.RemoveAll(dir)
	ops := filepath.Join(dir, "ops")
	if err := writeOps(ops, wg, plan); err != nil {
		return Load{}, err
	}
	threads := int(min(int64(wrkThreads(opt, plan.Concurrency)), plan.Ops))
	d := time.Duration(math.MaxInt64) // no limit: wrkArgs makes it a day
	if opt.MaxTime > 0 {
		d = opt.MaxTime
	}
	out, err := execWrk(ctx, bin, wrkArgs(threads, plan.Concurrency, d, script, wg.baseURL(), ops), threads)
	if err != nil {
		return Load{}, err
	}
	res, err := parseWrk(out)
	if err != nil {
		return Load{}, err
	}
	return res.load(), nil
}

// wrkHealthz is the rate at which grabd at url answers GET /healthz under
// wrk for d (rounded up to whole seconds), from conc connections on the
// threads opt gives.
func wrkHealthz(ctx context.Context, url string, conc int, d time.Duration, opt LoadOptions) (perSec float64, err error) {
	bin, dir, script, err := wrkSetup()
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	out, err := execWrk(ctx, bin, wrkArgs(wrkThreads(opt, conc), conc, d, script, url+"/healthz", ""), 0)
	if err != nil {
		return 0, err
	}
	res, err := parseWrk(out)
	if err != nil {
		return 0, err
	}
	if res.DurationUs <= 0 {
		return 0, fmt.Errorf("wrk: a run of %d µs", res.DurationUs)
	}
	return float64(res.Requests) / (float64(res.DurationUs) / 1e6), nil
}

// wrkSetup finds wrk and writes wrkScript into a temporary directory of
// its own, for the caller to remove.
func wrkSetup() (bin, dir, script string, err error) {
	if bin, err = exec.LookPath("wrk"); err != nil {
		return "", "", "", ErrNoWrk
	}
	if dir, err = os.MkdirTemp("", "grabbench-wrk"); err != nil {
		return "", "", "", err
	}
	script = filepath.Join(dir, "wrk.lua")
	if err := os.WriteFile(script, wrkScript, 0o600); err != nil {
		os.RemoveAll(dir)
		return "", "", "", err
	}
	return bin, dir, script, nil
}

// writeOps renders the plan's requests into the file at path.
func writeOps(path string, g wrkGrabber, plan Plan) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := renderOps(f, g, plan); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// wrkThreads are wrk's threads for conc connections: opt's, or 2, at most conc.
func wrkThreads(opt LoadOptions, conc int) int {
	t := opt.WrkThreads
	if t <= 0 {
		t = 2
	}
	return max(1, min(t, conc))
}

// wrkArgs run wrkScript from path script against url for d, at least a
// second and in whole seconds, as wrk counts it; with an ops file, the
// threads send its requests.
func wrkArgs(threads, conc int, d time.Duration, script, url, ops string) []string {
	secs := int64(min(max(math.Ceil(d.Seconds()), 1), 24*3600))
	args := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conc), "-d", strconv.FormatInt(secs, 10) + "s",
		"--timeout", strconv.Itoa(int(wrkTimeout.Seconds())) + "s", "-s", script, url}
	if ops != "" {
		args = append(args, "--", ops, strconv.Itoa(threads))
	}
	return args
}

// renderOps writes the plan's requests as wrkScript reads them, one a
// line in order: "POST <path> <user>".
func renderOps(w io.Writer, g wrkGrabber, plan Plan) error {
	bw := bufio.NewWriter(w)
	var line []byte
	for i := int64(0); i < plan.Ops; i++ {
		op := plan.Op(i)
		line = append(line[:0], "POST "...)
		line = append(line, g.grabPath(op)...)
		line = append(line, ' ')
		line = strconv.AppendInt(line, op.User, 10)
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// execWrk runs wrk and returns its stdout. wrk's main thread sleeps for
// its -d whatever its threads do and reports on SIGINT: once `threads` of
// them have written wrkThreadDone (0: never), and when ctx ends, it is
// sent one.
func execWrk(ctx context.Context, bin string, args []string, threads int) ([]byte, error) {
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout = &stdout
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("wrk: %w", err)
	}
	var msgs []string
	done, stopInterrupts := 0, func() {}
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if sc.Text() != wrkThreadDone {
			msgs = append(msgs, sc.Text())
			continue
		}
		if done++; done == threads {
			stopInterrupts = interrupt(cmd.Process)
		}
	}
	stopInterrupts()
	err = cmd.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// wrk exited 0 on the SIGINT of ctx's end: its report is what it had,
		// though Wait answers ctx's error.
		err = nil
	}
	if err != nil {
		if len(msgs) > 0 {
			err = fmt.Errorf("%w: %s", err, strings.Join(msgs, "; "))
		}
		return nil, fmt.Errorf("wrk %s: %w", strings.Join(args, " "), err)
	}
	return stdout.Bytes(), nil
}

// interrupt sends p SIGINT now and every 50 ms until stop: wrk ignores
// SIGINT until it has started its threads, and a thread with few requests
// can be done before that.
func interrupt(p *os.Process) (stop func()) {
	p.Signal(os.Interrupt)
	return every(50*time.Millisecond, func() { p.Signal(os.Interrupt) })
}

// wrkResult is the JSON line wrkScript's done prints.
type wrkResult struct {
	Requests   int64 `json:"requests"`
	DurationUs int64 `json:"duration_us"`
	Errors     struct {
		Connect int64 `json:"connect"`
		Read    int64 `json:"read"`
		Write   int64 `json:"write"`
		Timeout int64 `json:"timeout"`
	} `json:"errors"`
	Latency struct {
		P50  float64 `json:"p50"`
		P90  float64 `json:"p90"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p99.9"`
	} `json:"latency_us"`
	Answers map[string]int64 `json:"answers"`
}

// parseWrk reads the last line of wrk's stdout that is wrkScript's result.
func parseWrk(stdout []byte) (wrkResult, error) {
	var line []byte
	for l := range bytes.Lines(stdout) {
		if bytes.HasPrefix(l, []byte(`{"requests":`)) {
			line = l
		}
	}
	var r wrkResult
	if line == nil {
		return r, fmt.Errorf("wrk printed no result: %q", stdout)
	}
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("wrk's result %q: %w", line, err)
	}
	if r.Answers == nil {
		r.Answers = map[string]int64{}
	}
	return r, nil
}

// load is the result as RunLoad would have measured it.
func (r wrkResult) load() Load {
	l := Load{Elapsed: time.Duration(r.DurationUs) * time.Microsecond, Codes: r.Answers,
		wrkLatency: map[float64]float64{50: r.Latency.P50, 90: r.Latency.P90, 99: r.Latency.P99, 99.9: r.Latency.P999}}
	for _, n := range r.Answers {
		l.Ops += n
	}
	e := r.Errors
	noCode, internal, socket := r.Answers[CodeError], r.Answers[errs.CodeInternal], e.Connect+e.Read+e.Write+e.Timeout
	l.Errors = noCode + internal + socket
	switch {
	case socket > 0:
		l.FirstErr = fmt.Errorf("wrk: socket errors: connect %d, read %d, write %d, timeout (over %v) %d",
			e.Connect, e.Read, e.Write, wrkTimeout, e.Timeout)
	case noCode > 0:
		l.FirstErr = fmt.Errorf("wrk: %d answers not 2xx without an API code", noCode)
	case internal > 0:
		l.FirstErr = fmt.Errorf("wrk: %d answers %s", internal, errs.CodeInternal)
	}
	return l
}
