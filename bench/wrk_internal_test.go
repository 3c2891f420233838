package bench

import (
	"context"
	"errors"
	"maps"
	nethttp "net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/errs"
)

// wrk's own report, then wrk.lua's result line: the answers by code become
// the Load's, its duration the elapsed time, its percentiles the latency.
func TestParseWrk(t *testing.T) {
	for _, tc := range []struct {
		name     string
		line     string
		ops      int64
		codes    map[string]int64
		errors   int64
		firstErr string
	}{
		{
			name:  "clean",
			line:  `{"requests":1003,"duration_us":250000,"errors":{"connect":0,"read":0,"write":0,"timeout":0},"latency_us":{"p50":1500,"p90":2250,"p99":4000,"p99.9":9125},"answers":{"OK":600,"SOLD_OUT":400}}`,
			ops:   1000,
			codes: map[string]int64{CodeOK: 600, errs.CodeSoldOut: 400},
		},
		{
			name:     "socket errors and error answers",
			line:     `{"requests":1003,"duration_us":250000,"errors":{"connect":1,"read":2,"write":0,"timeout":0},"latency_us":{"p50":1500,"p90":2250,"p99":4000,"p99.9":9125},"answers":{"ERROR":3,"INTERNAL":4,"OK":593,"SOLD_OUT":397}}`,
			ops:      997,
			codes:    map[string]int64{CodeError: 3, errs.CodeInternal: 4, CodeOK: 593, errs.CodeSoldOut: 397},
			errors:   3 + 4 + 1 + 2,
			firstErr: "wrk: socket errors: connect 1, read 2, write 0, timeout (over 1m0s) 0",
		},
		{
			name:     "internal answers",
			line:     `{"requests":10,"duration_us":250000,"errors":{"connect":0,"read":0,"write":0,"timeout":0},"latency_us":{"p50":1500,"p90":2250,"p99":4000,"p99.9":9125},"answers":{"INTERNAL":10}}`,
			ops:      10,
			codes:    map[string]int64{errs.CodeInternal: 10},
			errors:   10,
			firstErr: "wrk: 10 answers INTERNAL",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := "Running 6s test @ http://127.0.0.1:40123\n  2 threads and 8 connections\n" +
				"  1003 requests in 250.00ms, 180.00KB read\nRequests/sec:   4012.00\n" + tc.line + "\n"
			res, err := parseWrk([]byte(out))
			if err != nil {
				t.Fatal(err)
			}
			l := res.load()
			if l.Ops != tc.ops || l.Elapsed != 250*time.Millisecond || !maps.Equal(l.Codes, tc.codes) || l.Errors != tc.errors {
				t.Errorf("load: %d ops in %v, answers %v, %d errors; want %d in 250ms, %v, %d errors",
					l.Ops, l.Elapsed, l.Codes, l.Errors, tc.ops, tc.codes, tc.errors)
			}
			if got := []float64{l.percentile(50), l.percentile(90), l.percentile(99), l.percentile(99.9)}; !slices.Equal(got, []float64{1.5, 2.25, 4, 9.125}) {
				t.Errorf("percentiles %v ms; want 1.5, 2.25, 4, 9.125", got)
			}
			if got := ""; l.FirstErr != nil {
				if got = l.FirstErr.Error(); got != tc.firstErr {
					t.Errorf("first error %q; want %q", got, tc.firstErr)
				}
			} else if tc.firstErr != "" {
				t.Errorf("no first error; want %q", tc.firstErr)
			}
		})
	}
	if _, err := parseWrk([]byte("unable to connect to 127.0.0.1:1 Connection refused\n")); err == nil {
		t.Error("wrk's output without a result line parsed")
	}
}

// The ops file is the plan in order, one request a line, as each engine's
// Grab sends it: the packet grab and the campaign grab.
func TestRenderOps(t *testing.T) {
	targets, users := []int64{7, 9}, []int64{1001, 1002, 1003}
	plan := Plan{Ops: 6, Op: func(i int64) Op { return Op{Target: targets[i/3], User: users[i%3]} }}
	for _, tc := range []struct {
		g    wrkGrabber
		want string
	}{
		{HTTP{}, "POST /v1/packets/7/grab 1001\nPOST /v1/packets/7/grab 1002\nPOST /v1/packets/7/grab 1003\n" +
			"POST /v1/packets/9/grab 1001\nPOST /v1/packets/9/grab 1002\nPOST /v1/packets/9/grab 1003\n"},
		{campaignHTTP{}, "POST /v1/campaigns/7/grab 1001\nPOST /v1/campaigns/7/grab 1002\nPOST /v1/campaigns/7/grab 1003\n" +
			"POST /v1/campaigns/9/grab 1001\nPOST /v1/campaigns/9/grab 1002\nPOST /v1/campaigns/9/grab 1003\n"},
	} {
		var b strings.Builder
		if err := renderOps(&b, tc.g, plan); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("%T: ops\n%s\nwant\n%s", tc.g, b.String(), tc.want)
		}
	}
}

// wrk's threads are min(2, connections) unless set, and its duration whole
// seconds, at least one.
func TestWrkArgs(t *testing.T) {
	for _, tc := range []struct {
		opt  LoadOptions
		conc int
		d    time.Duration
		want string
	}{
		{LoadOptions{}, 64, 6 * time.Second, "-t 2 -c 64 -d 6s --timeout 60s -s s.lua http://h -- ops 2"},
		{LoadOptions{}, 1, 1500 * time.Millisecond, "-t 1 -c 1 -d 2s --timeout 60s -s s.lua http://h -- ops 1"},
		{LoadOptions{WrkThreads: 4}, 64, 200 * time.Millisecond, "-t 4 -c 64 -d 1s --timeout 60s -s s.lua http://h -- ops 4"},
		{LoadOptions{WrkThreads: 4}, 3, 0, "-t 3 -c 3 -d 1s --timeout 60s -s s.lua http://h -- ops 3"},
	} {
		got := strings.Join(wrkArgs(wrkThreads(tc.opt, tc.conc), tc.conc, tc.d, "s.lua", "http://h", "ops"), " ")
		if got != tc.want {
			t.Errorf("%+v, %d, %v: %q; want %q", tc.opt, tc.conc, tc.d, got, tc.want)
		}
	}
}

// fakeWrkGrabber is a wrkGrabber against url: POST /grab/{target}.
type fakeWrkGrabber struct{ url string }

func (fakeWrkGrabber) Name() string                             { return EngineHTTP }
func (fakeWrkGrabber) Grab(context.Context, Op) (string, error) { return "", errors.New("wrk only") }
func (fakeWrkGrabber) grabPath(op Op) string                    { return "/grab/" + strconv.FormatInt(op.Target, 10) }
func (g fakeWrkGrabber) baseURL() string                        { return g.url }

// ctx ending stops wrk, which reports what it has: RunWrk answers the
// requests answered before it, with no error. One connection sends the
// plan's 10 requests in order; the server answers 3, then holds the
// fourth, and the test cancels ctx once it holds it.
func TestRunWrkStoppedByCtx(t *testing.T) {
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatalf("wrk is not installed (apt-get install wrk; .ci/services installs it): %v", err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	var n atomic.Int64
	srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Method != nethttp.MethodPost {
			w.WriteHeader(nethttp.StatusMethodNotAllowed)
			return
		}
		if n.Add(1) == 4 {
			close(held)
			<-release
			return
		}
		w.WriteHeader(nethttp.StatusOK)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close: it waits for the held request
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		<-held
		cancel()
	}()
	plan := Plan{Ops: 10, Concurrency: 1, Op: func(i int64) Op { return Op{Target: i, User: i + 1} }}
	load, err := RunWrk(ctx, fakeWrkGrabber{srv.URL}, plan, LoadOptions{Wrk: true, WrkThreads: 1, MaxTime: time.Minute})
	if err != nil {
		t.Fatalf("RunWrk stopped by ctx: %v; want what wrk had", err)
	}
	if load.Ops != 3 || !maps.Equal(load.Codes, map[string]int64{CodeOK: 3}) || load.Errors != 0 {
		t.Errorf("%d answers %v, %d errors (%v); want 3 OK", load.Ops, load.Codes, load.Errors, load.FirstErr)
	}
}
