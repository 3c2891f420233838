package bench

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/schollz/progressbar/v3"
)

// Latencies are recorded in µs, from 1 µs to a minute, to 3 significant digits.
func newLatencyHist() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// Load is what one load loop measured.
type Load struct {
	Ops     int64 // requests answered
	Elapsed time.Duration
	// Latency is the Go clients' (µs); nil when wrk made the requests,
	// whose percentiles are in wrkLatency.
	Latency *hdrhistogram.Histogram
	Codes   map[string]int64
	// Errors counts answers with an error (CodeError, errs.CodeInternal),
	// and with wrk its socket errors; FirstErr is one of them.
	Errors   int64
	FirstErr error

	wrkLatency map[float64]float64 // µs by percentile: 50, 90, 99, 99.9
}

// percentile is the latency at percentile q (50, 90, 99 or 99.9), in ms.
func (l Load) percentile(q float64) float64 {
	if l.Latency == nil {
		return l.wrkLatency[q] / 1000
	}
	return ms(l.Latency, q)
}

// PerSecond is the throughput of the run.
func (l Load) PerSecond() float64 {
	if l.Elapsed <= 0 {
		return 0
	}
	return float64(l.Ops) / l.Elapsed.Seconds()
}

// LoadOptions shape the load loop.
type LoadOptions struct {
	// Rate, when positive, is an open loop: requests start at this many per
	// second whatever the answers, and latency counts from when each was due
	// (so a stall is not hidden by the requests it delayed). Zero is a closed
	// loop: each client sends its next request as soon as it has an answer.
	Rate float64
	// MaxTime ends the run early; zero is no limit.
	MaxTime time.Duration
	// Progress, when set, shows a progress bar there.
	Progress io.Writer
	// Wrk makes the http engine's requests with a wrk process (RunWrk)
	// instead of Go clients in this process, from Concurrency connections
	// on WrkThreads threads (0: min(2, Concurrency)); Rate must be zero
	// and Progress is not shown. Run then also measures /healthz under
	// wrk for as long, on the same listener.
	Wrk        bool
	WrkThreads int
}

// RunLoad makes the plan's requests with g from plan.Concurrency clients.
func RunLoad(ctx context.Context, g Grabber, plan Plan, opt LoadOptions) Load {
	if opt.MaxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opt.MaxTime)
		defer cancel()
	}
	type worker struct {
		hist  *hdrhistogram.Histogram
		codes map[string]int64
		errs  int64
		first error
	}
	workers := make([]*worker, plan.Concurrency)
	var done atomic.Int64

	// jobs hands out request indexes; in an open loop with their due time.
	type job struct {
		i   int64
		due time.Time
	}
	stopBar := progress(opt.Progress, g.Name(), plan.unit(), plan.Ops, &done)
	start := time.Now()
	var next atomic.Int64
	var jobs chan job
	if opt.Rate > 0 {
		jobs = make(chan job, 1<<16)
		go func() {
			defer close(jobs)
			interval := time.Duration(float64(time.Second) / opt.Rate)
			for i := int64(0); i < plan.Ops; i++ {
				due := start.Add(time.Duration(i) * interval)
				if d := time.Until(due); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				select {
				case jobs <- job{i, due}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	nextJob := func() (job, bool) {
		if jobs != nil {
			j, ok := <-jobs
			return j, ok && ctx.Err() == nil
		}
		i := next.Add(1) - 1
		return job{i: i}, i < plan.Ops && ctx.Err() == nil
	}

	var wg sync.WaitGroup
	for w := range workers {
		wk := &worker{hist: newLatencyHist(), codes: map[string]int64{}}
		workers[w] = wk
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j, ok := nextJob(); ok; j, ok = nextJob() {
				t0 := time.Now()
				if !j.due.IsZero() {
					t0 = j.due
				}
				code, err := g.Grab(ctx, plan.Op(j.i))
				if ctx.Err() != nil && err != nil {
					return // cut off by MaxTime or a signal: not an answer
				}
				wk.hist.RecordValue(max(1, time.Since(t0).Microseconds()))
				wk.codes[code]++
				if err != nil {
					wk.errs++
					if wk.first == nil {
						wk.first = err
					}
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopBar()

	l := Load{Elapsed: elapsed, Latency: newLatencyHist(), Codes: map[string]int64{}}
	for _, wk := range workers {
		l.Latency.Merge(wk.hist)
		for c, n := range wk.codes {
			l.Codes[c] += n
		}
		l.Errors += wk.errs
		if l.FirstErr == nil {
			l.FirstErr = wk.first
		}
	}
	l.Ops = l.Latency.TotalCount()
	return l
}

// progress shows a bar of done out of total (in unit) on w until the
// returned stop. Its clock starts now, as the load does: left to itself the
// bar starts it at its first render, a tick into the load, and divides the
// requests made until then by a few microseconds.
func progress(w io.Writer, name, unit string, total int64, done *atomic.Int64) (stop func()) {
	if w == nil {
		return func() {}
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(name),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	bar.StartWithoutRender()
	// A ticker, not a call per grab: the bar must not cost the clients.
	stopTicks := every(100*time.Millisecond, func() { bar.Set64(done.Load()) })
	return func() {
		stopTicks()
		bar.Set64(done.Load())
		bar.Finish()
	}
}
