package http_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/campaign"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/errs"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/engine/transfersim"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

// Issue 12, must-show 4: Redis stopped, and Redis loading its dataset, answer
// only 200, 503 BUSY (Retry-After: 1) or a business code on every endpoint,
// never 500; /readyz says not ready; service resumes once Redis is back.
// Real servers: a redis-server of the test's own, the real MySQL.

// setupRedisServer is the API over an engine on the redis-server at addr and
// a MySQL database of the test's own, with two Redis pools as grabd has
// them, a transfer simulator for campaign payouts, and the writer running.
// Warnings and errors the engine logs are shown if the test fails.
func setupRedisServer(t *testing.T, addr string) *env {
	t.Helper()
	api := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 64})
	wr := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 12})
	t.Cleanup(func() { api.Close(); wr.Close() })
	db := storetest.MySQL(t)

	secret := []byte("transfer-secret")
	sim := httptest.NewServer(transfersim.New(secret, transfersim.Faults{}, 1))
	t.Cleanup(sim.Close)

	logs := &lockedBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine log (warnings and errors):\n%s", logs.tail(60))
		}
	})
	cfg := engine.DefaultConfig()
	cfg.Keys = lua.NewKeys("grab", 4)
	cfg.Writer.Block = 50 * time.Millisecond
	cfg.Writer.MonitorEvery = 50 * time.Millisecond
	reg := prometheus.NewRegistry()
	g := grab.New(grab.Deps{Deps: engine.Deps{Redis: api, WriterRedis: wr, DB: db, Log: log, Metrics: reg},
		Campaigns: campaign.Deps{Transfer: transfer.NewClient(sim.URL, secret, 5*time.Second, nil)}}, cfg)
	h := grabhttp.New(g, grabhttp.Config{JWTSecret: jwtSecret, AdminToken: adminToken}, log, reg)
	e := &env{h: h, Grab: g, db: db}
	e.startWriter(t)
	return e
}

// lockedBuffer collects log lines from any goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// faultFixture is an open packet, an open campaign and a SKU on sale.
type faultFixture struct {
	packet, campaign int64
	award            int64 // the seq of faultWinner's award
	sku              int64
}

const (
	faultGroup  = 7
	faultSender = 1
	faultSKU    = 30
	faultWinner = 2
)

func newFaultFixture(t *testing.T, e *env) faultFixture {
	t.Helper()
	members := make([]string, 0, 500)
	for u := 1; u <= 500; u++ {
		members = append(members, fmt.Sprint(u))
	}
	expect(t, e.do(t, "PUT", fmt.Sprintf("/v1/admin/groups/%d/members", faultGroup), `{"user_ids":[`+strings.Join(members, ",")+`]}`, admin()), 200)
	expect(t, e.do(t, "POST", fmt.Sprintf("/v1/admin/accounts/%d/deposit", faultSender), `{"amount":"10000","ref":"fault-dep"}`, admin()), 200)
	p := expect(t, e.do(t, "POST", "/v1/packets", fmt.Sprintf(`{"kind":"group_lucky","group_id":%d,"count":100,"amount":"100.00"}`, faultGroup), user(faultSender)), 201)
	f := faultFixture{packet: integer(t, "packet_id", p["packet_id"]), sku: faultSKU}
	expect(t, e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", f.packet), `{"method":"balance"}`, user(faultSender)), 200)
	now := time.Now().UTC()
	c := expect(t, e.do(t, "POST", "/v1/admin/campaigns", fmt.Sprintf(`{"name":"faults","budget":"100.00","award_count":100,`+
		`"award_min":"0.01","award_max":"1.00","per_user_limit":1,"starts_at":%q,"ends_at":%q}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339)), admin()), 201)
	f.campaign = integer(t, "campaign_id", c["campaign_id"])
	a := expect(t, e.do(t, "POST", fmt.Sprintf("/v1/campaigns/%d/grab", f.campaign), ``, user(faultWinner)), 200)
	f.award = integer(t, "seq", a["seq"])
	wantOK(t, e.do(t, "POST", submitURL, fmt.Sprintf(`{"voucher":"fault-sub","skus":[{"sku_id":%d,"stock":100000}]}`, f.sku), admin()))
	return f
}

// probe is one kind of request; i makes its ids unique where it needs them.
type probe struct {
	name string
	send func(t *testing.T, e *env, i int) response
}

// probes are requests on every endpoint that needs Redis, and a few that
// need only the store.
func (f faultFixture) probes() []probe {
	grabber := func(i int) int64 { return int64(2 + i%40) } // repeats answer as repeats; 40 < 100 shares
	return []probe{
		{"packet grab", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", f.packet), ``, user(grabber(i)))
		}},
		{"packet get", func(t *testing.T, e *env, i int) response {
			return e.do(t, "GET", fmt.Sprintf("/v1/packets/%d", f.packet), ``, user(grabber(i)))
		}},
		{"packet create and pay", func(t *testing.T, e *env, i int) response {
			r := e.do(t, "POST", "/v1/packets", `{"kind":"single","to_user_id":9,"amount":"0.01"}`, user(faultSender))
			if r.status != 201 {
				return r
			}
			var p struct {
				ID int64 `json:"packet_id"`
			}
			json.Unmarshal(r.body, &p)
			return e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/pay", p.ID), `{"method":"balance"}`, user(faultSender))
		}},
		{"balance", func(t *testing.T, e *env, i int) response {
			return e.do(t, "GET", "/v1/balance", ``, user(grabber(i)))
		}},
		{"campaign grab", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", fmt.Sprintf("/v1/campaigns/%d/grab", f.campaign), ``, user(grabber(i)))
		}},
		{"campaign awards", func(t *testing.T, e *env, i int) response {
			return e.do(t, "GET", fmt.Sprintf("/v1/campaigns/%d/awards", f.campaign), ``, user(grabber(i)))
		}},
		{"campaign get", func(t *testing.T, e *env, i int) response {
			return e.do(t, "GET", fmt.Sprintf("/v1/admin/campaigns/%d", f.campaign), ``, admin())
		}},
		{"stock deduct", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", "/v1/stock/deduct", orderBody(fmt.Sprintf(`"fo-%d"`, i), line{"high_seas", f.sku, 1}), admin())
		}},
		{"stock return", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", "/v1/stock/return", fmt.Sprintf(`{"order_id":"fo-%d"}`, i-3), admin())
		}},
		{"tcc try", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", tccURL("try", fmt.Sprintf("fg%d", i), "01"), `{"items":`+itemsJSON(line{"high_seas", f.sku, 1})+`}`, admin())
		}},
		{"tcc confirm", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", tccURL("confirm", fmt.Sprintf("fg%d", i-1), "01"), `{"items":`+itemsJSON(line{"high_seas", f.sku, 1})+`}`, admin())
		}},
		{"tcc cancel", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", tccURL("cancel", fmt.Sprintf("fg%d", i-2), "01"), `{"items":`+itemsJSON(line{"high_seas", f.sku, 1})+`}`, admin())
		}},
		{"sku get", func(t *testing.T, e *env, i int) response {
			return e.do(t, "GET", skuURL(f.sku), ``, admin())
		}},
		{"sku edit", func(t *testing.T, e *env, i int) response {
			return e.do(t, "PATCH", skuURL(f.sku), fmt.Sprintf(`{"voucher":"fe-%d","delta":1}`, i), admin())
		}},
		{"sku submit and revoke", func(t *testing.T, e *env, i int) response {
			sku := 1000 + int64(i)
			r := e.do(t, "POST", submitURL, fmt.Sprintf(`{"voucher":"fsub-%d","skus":[{"sku_id":%d,"stock":1}]}`, i, sku), admin())
			if r.status != 200 {
				return r
			}
			return e.do(t, "DELETE", skuURL(sku), fmt.Sprintf(`{"voucher":"frev-%d"}`, i), admin())
		}},
		{"voucher rollback", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", fmt.Sprintf("/v1/admin/vouchers/fe-%d/rollback", i-1), ``, admin())
		}},
		{"award receive", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", fmt.Sprintf("/v1/campaigns/%d/awards/%d/receive", f.campaign, f.award), ``, user(faultWinner))
		}},
		{"pool salvage", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", "/v1/admin/pools/3/salvage", poolBody(fmt.Sprintf("fs-%d", i), [2]int64{f.sku, 1}), admin())
		}},
		{"pool release", func(t *testing.T, e *env, i int) response {
			return e.do(t, "POST", "/v1/admin/pools/3/release", poolBody(fmt.Sprintf("fr-%d", i), [2]int64{f.sku, 1}), admin())
		}},
	}
}

// businessStatus are the 4xx a request of the probes may answer for its
// own reasons (sold out, a TCC branch refused, ...), whatever Redis does.
var businessStatus = map[int]bool{403: true, 404: true, 409: true, 410: true}

// checkAnswer fails the test unless r is a success, a business refusal, or
// 503 BUSY with Retry-After: 1. It may run on any goroutine.
func checkAnswer(t *testing.T, what string, r response) {
	t.Helper()
	switch {
	case r.status == 200 || r.status == 201:
	case r.status == 503:
		var body struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(r.body, &body); err != nil || body.Error.Code != errs.CodeBusy || body.Error.Message == "" {
			t.Errorf("%s: 503 that is not BUSY: %s", what, r.body)
		}
		if ra := r.header.Get("Retry-After"); ra != "1" {
			t.Errorf("%s: 503 with Retry-After %q", what, ra)
		}
	case businessStatus[r.status]:
		if !json.Valid(r.body) {
			t.Errorf("%s: %d without a JSON body: %s", what, r.status, r.body)
		}
	default:
		t.Errorf("%s: status %d: %s", what, r.status, r.body)
	}
}

// outcomes counts answers by probe and status, and keeps each probe's
// slowest answer.
type outcomes struct {
	mu      sync.Mutex
	n       map[string]map[int]int
	slowest map[string]time.Duration
}

func (o *outcomes) add(name string, status int, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n == nil {
		o.n = map[string]map[int]int{}
		o.slowest = map[string]time.Duration{}
	}
	if o.n[name] == nil {
		o.n[name] = map[int]int{}
	}
	o.n[name][status]++
	o.slowest[name] = max(o.slowest[name], took)
}

func (o *outcomes) count(name string, status int) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[name][status]
}

func (o *outcomes) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var b strings.Builder
	for name, byStatus := range o.n {
		fmt.Fprintf(&b, "  %-22s %v slowest %v\n", name, byStatus, o.slowest[name].Round(time.Millisecond))
	}
	return b.String()
}

// hammer sends every probe from one goroutine per probe, round after round,
// each goroutine starting at its own probe (so every probe is sent at once
// at the start), until stop, given how many rounds have ended, returns true;
// a goroutine ends its round first. It returns what they answered, each
// checked by checkAnswer, and how many rounds ended.
func hammer(t *testing.T, e *env, probes []probe, seq *atomic.Int64, stop func(rounds int) bool) (*outcomes, int) {
	t.Helper()
	out := &outcomes{}
	var rounds atomic.Int64
	var done atomic.Bool
	var wg sync.WaitGroup
	for w := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !done.Load() {
				for k := range probes {
					p := probes[(w+k)%len(probes)]
					i := int(seq.Add(1))
					began := time.Now()
					r := p.send(t, e, i)
					out.add(p.name, r.status, time.Since(began))
					checkAnswer(t, p.name, r)
				}
				rounds.Add(1)
			}
		}()
	}
	for !done.Load() {
		if t.Failed() || stop(int(rounds.Load())) {
			done.Store(true)
		}
		time.Sleep(10 * time.Millisecond)
	}
	wg.Wait()
	return out, int(rounds.Load())
}

// wantResumed waits until a packet grab and a campaign grab of users who
// never grabbed answer 200, checking every answer on the way, and /readyz
// answers 200.
func wantResumed(t *testing.T, e *env, f faultFixture, firstUser int64) {
	t.Helper()
	start := time.Now()
	u := firstUser
	enginetest.WaitFor(t, "packet grab answers 200 again", func() bool {
		r := e.do(t, "POST", fmt.Sprintf("/v1/packets/%d/grab", f.packet), ``, user(u))
		checkAnswer(t, "packet grab after", r)
		return r.status == 200
	})
	enginetest.WaitFor(t, "campaign grab answers 200 again", func() bool {
		r := e.do(t, "POST", fmt.Sprintf("/v1/campaigns/%d/grab", f.campaign), ``, user(u))
		checkAnswer(t, "campaign grab after", r)
		return r.status == 200
	})
	enginetest.WaitFor(t, "readyz answers 200 again", func() bool {
		return e.do(t, "GET", "/readyz", ``, nil).status == 200
	})
	t.Logf("grabs answered 200 again %v after Redis served", time.Since(start).Round(time.Millisecond))
	// Every probe answers as allowed once more; the stock may need its own
	// rebuild (issue 12, failure 3) and answers NOT_FOUND until then.
	var seq atomic.Int64
	seq.Store(1_000_000)
	out, _ := hammer(t, e, f.probes(), &seq, func(rounds int) bool { return rounds >= 1 })
	t.Logf("after:\n%s", out)
}

// wantNotReady checks /readyz answers 503 with Retry-After.
func wantNotReady(t *testing.T, r response) {
	t.Helper()
	if r.status != 503 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("readyz: %d (Retry-After %q): %s", r.status, r.header.Get("Retry-After"), r.body)
	}
}

func TestRedisStoppedAnswersBusy(t *testing.T) {
	srv := redistest.StartServer(t)
	e := setupRedisServer(t, srv.Addr)
	f := newFaultFixture(t, e)
	probes := f.probes()
	var seq atomic.Int64
	for _, p := range probes { // all is well before
		r := p.send(t, e, int(seq.Add(1)))
		checkAnswer(t, p.name+" before", r)
	}
	if r := e.do(t, "GET", "/readyz", ``, nil); r.status != 200 {
		t.Fatalf("readyz before: %d %s", r.status, r.body)
	}

	srv.Stop()
	wantNotReady(t, e.do(t, "GET", "/readyz", ``, nil))
	out, _ := hammer(t, e, probes, &seq, func(rounds int) bool { return rounds >= 1 })
	t.Logf("Redis stopped:\n%s", out)
	// What needs Redis cannot succeed: it answered BUSY.
	for _, name := range []string{"packet grab", "campaign grab", "stock deduct", "tcc try", "sku get"} {
		if out.count(name, 503) == 0 {
			t.Errorf("%s never answered 503 while Redis was down", name)
		}
	}
	wantNotReady(t, e.do(t, "GET", "/readyz", ``, nil))

	srv.Start() // empty: the packet and the campaign are rebuilt from MySQL on their next use
	wantResumed(t, e, f, 400)
}

func TestRedisLoadingAnswersBusy(t *testing.T) {
	// Seconds of loading: 20,000 keys at 100 µs each, and more for the
	// sleeps' own overhead (about 4 s here).
	srv := redistest.StartServer(t, redistest.SlowLoad(100*time.Microsecond)...)
	e := setupRedisServer(t, srv.Addr)
	f := newFaultFixture(t, e)
	probes := f.probes()
	var seq atomic.Int64
	for _, p := range probes {
		checkAnswer(t, p.name+" before", p.send(t, e, int(seq.Add(1))))
	}

	srv.Fill(20_000)
	srv.Save()
	srv.Stop()
	began := time.Now()
	srv.StartLoading()
	if !srv.Loading() {
		t.Fatal("the restarted server is not loading its dataset")
	}
	r := e.do(t, "GET", "/readyz", ``, nil)
	if srv.Loading() {
		wantNotReady(t, r) // asked and answered while loading
	}
	out, rounds := hammer(t, e, probes, &seq, func(int) bool { return !srv.Loading() })
	t.Logf("Redis loading for %v, %d rounds of requests:\n%s", time.Since(began).Round(time.Millisecond), rounds, out)
	for _, name := range []string{"packet grab", "campaign grab", "stock deduct"} {
		if out.count(name, 503) == 0 {
			t.Errorf("%s never answered 503 while Redis was loading", name)
		}
	}
	srv.WaitLoaded(10 * time.Second)
	wantResumed(t, e, f, 400)
}
