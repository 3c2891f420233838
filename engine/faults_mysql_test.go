package engine_test

// Faults of MySQL under load, against the real Redis and a private mariadbd
// (never the shared server): read-only for seconds, read-only switched on
// and off over and over, and a stop and a crash. In each, nothing answered
// is lost, given twice or parked: the writer parks an event only when the
// event itself is wrong, and everything else waits for the store.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/engine/stock/stocktest"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// faultEnv is an engine on the real Redis (a namespace of the test's own)
// and a private MariaDB reached as an unprivileged user.
type faultEnv struct {
	*enginetest.Env
	maria *storetest.MariaDB
	reg   *prometheus.Registry
}

func setupMariaFaults(t *testing.T, mutate ...func(*engine.Config)) *faultEnv {
	t.Helper()
	maria := storetest.StartMariaDB(t)
	db := maria.Open(t)
	rdb, keys := redistest.Real(t, 16)
	reg := prometheus.NewRegistry()
	e := enginetest.NewEnv(t, rdb, keys, db, mutate...).Another(func(d *grab.Deps) { d.Metrics = reg })
	return &faultEnv{Env: e, maria: maria, reg: reg}
}

// deadLetters counts the events parked in every shard's dead-letter stream.
func (f *faultEnv) deadLetters(t *testing.T) int64 {
	t.Helper()
	var n int64
	for shard := 0; shard < f.Keys.Shards; shard++ {
		k, err := f.Redis.XLen(context.Background(), f.Keys.DeadLetters(shard)).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += k
	}
	return n
}

// caughtUp: no shard has an event the writer has not acknowledged.
func (f *faultEnv) caughtUp(t *testing.T) bool {
	t.Helper()
	ctx := context.Background()
	for shard := 0; shard < f.Keys.Shards; shard++ {
		stream := f.Keys.Events(shard)
		groups, err := f.Redis.XInfoGroups(ctx, stream).Result()
		if err != nil {
			if strings.Contains(err.Error(), "no such key") {
				continue
			}
			t.Fatal(err)
		}
		for _, g := range groups {
			if g.Name != f.Cfg.Writer.Group {
				continue
			}
			if g.Pending > 0 {
				return false
			}
			next, err := f.Redis.XRangeN(ctx, stream, "("+g.LastDeliveredID, "+", 1).Result()
			if err != nil {
				t.Fatal(err)
			}
			if len(next) > 0 {
				return false
			}
		}
	}
	return true
}

// loadRates are operations a second of each kind.
type loadRates struct{ grabs, deducts, campaignGrabs int }

// mixedLoad grabs packets, deducts stock and grabs a campaign at steady
// rates until stopped, each kind from workers of its own, and records every
// answer and the longest any request took.
type mixedLoad struct {
	e         *enginetest.Env
	packets   []int64 // each of perPacket shares, grabbed by users 1..perPacket
	perPacket int
	campaign  int64
	skus      []stocktest.SKU
	stopped   chan struct{}
	wg        sync.WaitGroup

	mu         sync.Mutex
	grabs      map[[2]int64]packet.GrabResult // (packet, user) -> answered grab
	awards     map[int64]campaign.Award       // user -> answered award
	orders     map[string]stocktest.SKU       // answered order -> its SKU (1 each)
	outcomes   map[string]int                 // kind/outcome -> count
	maxLatency map[string]time.Duration
	unexpected []string
}

const (
	loadPackets   = 120
	loadPerPacket = 100
	loadSender    = 1_000_000
	loadCampaign  = 30_000 // awards
	campaignUser0 = 2_000_000
)

// startLoad sets up the packets, the campaign and the stock, then drives them.
func startLoad(t *testing.T, e *enginetest.Env, r loadRates) *mixedLoad {
	t.Helper()
	ctx := context.Background()
	l := &mixedLoad{e: e, perPacket: loadPerPacket, stopped: make(chan struct{}),
		grabs: map[[2]int64]packet.GrabResult{}, awards: map[int64]campaign.Award{}, orders: map[string]stocktest.SKU{},
		outcomes: map[string]int{}, maxLatency: map[string]time.Duration{}}
	members := []int64{loadSender}
	for u := int64(1); u <= loadPerPacket; u++ {
		members = append(members, u)
	}
	if _, err := e.Packets.SetGroupMembers(ctx, 7, members); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.Deposit(ctx, loadSender, loadPackets*10_000, "seed-load"); err != nil {
		t.Fatal(err)
	}
	for range loadPackets {
		p, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: loadSender, Kind: packet.KindGroupLucky, GroupID: 7,
			Count: loadPerPacket, Amount: 10_000})
		if err != nil {
			t.Fatal(err)
		}
		if p, err = e.Packets.PayByBalance(ctx, p.ID, loadSender); err != nil {
			t.Fatal(err)
		}
		l.packets = append(l.packets, p.ID)
	}
	l.campaign = e.NewCampaign(t, loadCampaign*50, loadCampaign, 1, 100, 1).ID
	l.skus = []stocktest.SKU{{Activity: 1, Product: 2, SKU: 10}, {Activity: 1, Product: 3, SKU: 20}, {Activity: 2, Product: 4, SKU: 30}}
	for _, s := range l.skus {
		if err := e.Stock.Submit(context.Background(), fmt.Sprintf("sub-%d-%d-%d", s.Activity, s.Product, s.SKU), s.Activity, s.Product, []stock.SKUStock{{SKU: s.SKU, Stock: 1_000_000}}); err != nil {
			t.Fatal(err)
		}
	}

	l.run("grab", r.grabs, loadPackets*loadPerPacket, func(i int) (string, error) {
		p, u := l.packets[i/loadPerPacket], int64(i%loadPerPacket+1)
		res, err := e.Packets.Grab(ctx, p, u)
		if err == nil {
			l.mu.Lock()
			l.grabs[[2]int64{p, u}] = res
			l.mu.Unlock()
		}
		return outcome(err, engine.ErrSoldOut), err
	})
	l.run("campaign", r.campaignGrabs, loadCampaign*2, func(i int) (string, error) {
		u := int64(campaignUser0 + i)
		a, err := e.Campaigns.GrabCampaign(ctx, l.campaign, u)
		var pending *campaign.PayoutPendingError
		if errors.As(err, &pending) {
			a, err = pending.Award, nil // 409 PAYOUT_IN_PROGRESS: the award is the user's
		}
		if err == nil {
			l.mu.Lock()
			l.awards[u] = a
			l.mu.Unlock()
		}
		return outcome(err, engine.ErrSoldOut), err
	})
	l.run("deduct", r.deducts, 1<<30, func(i int) (string, error) {
		s, order := l.skus[i%len(l.skus)], fmt.Sprintf("o-%d", i)
		err := e.Stock.Deduct(ctx, order, []stock.Item{s.Item(stock.ScopeHighSeas, 1)})
		if err == nil {
			l.mu.Lock()
			l.orders[order] = s
			l.mu.Unlock()
		}
		return outcome(err), err
	})
	t.Cleanup(l.stop)
	return l
}

// outcome names an answer: ok, busy, one of the expected refusals, or other.
func outcome(err error, expected ...error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, engine.ErrBusy):
		return "busy"
	}
	for _, x := range expected {
		if errors.Is(err, x) {
			return "refused"
		}
	}
	return "other"
}

// run calls op(0), op(1), ... up to n times at perSecond, from workers of
// its own: a slow answer holds its worker, not the others, and a tick that
// finds every worker busy is dropped.
func (l *mixedLoad) run(kind string, perSecond, n int, op func(i int) (string, error)) {
	if perSecond <= 0 {
		return
	}
	ops := make(chan int)
	var next atomic.Int64
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(ops)
		t := time.NewTicker(time.Second / time.Duration(perSecond))
		defer t.Stop()
		for {
			select {
			case <-l.stopped:
				return
			case <-t.C:
			}
			i := int(next.Load())
			if i >= n {
				return
			}
			select {
			case ops <- i:
				next.Add(1)
			default: // every worker is busy
			}
		}
	}()
	for range 32 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := range ops {
				start := time.Now()
				what, err := op(i)
				took := time.Since(start)
				l.mu.Lock()
				l.outcomes[kind+"/"+what]++
				if took > l.maxLatency[kind] {
					l.maxLatency[kind] = took
				}
				if what == "other" && len(l.unexpected) < 20 {
					l.unexpected = append(l.unexpected, fmt.Sprintf("%s %d: %v", kind, i, err))
				}
				l.mu.Unlock()
			}
		}()
	}
}

func (l *mixedLoad) stop() {
	select {
	case <-l.stopped:
	default:
		close(l.stopped)
	}
	l.wg.Wait()
}

func (l *mixedLoad) count(what string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.outcomes[what]
}

// waitAnswered waits until each kind has n more answers than now.
func (l *mixedLoad) waitAnswered(t *testing.T, n int) {
	t.Helper()
	base := map[string]int{}
	for _, k := range []string{"grab/ok", "campaign/ok", "deduct/ok"} {
		base[k] = l.count(k)
	}
	enginetest.WaitFor(t, fmt.Sprintf("%d more answers of each kind", n), func() bool {
		for k, b := range base {
			if l.count(k) < b+n {
				return false
			}
		}
		return true
	})
}

func (l *mixedLoad) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var parts []string
	for k, v := range l.outcomes {
		parts = append(parts, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(parts)
	for _, k := range []string{"grab", "campaign", "deduct"} {
		parts = append(parts, fmt.Sprintf("max %s %v", k, l.maxLatency[k].Round(time.Millisecond)))
	}
	return strings.Join(parts, " ")
}

// checkAnswers fails on any answer other than success, BUSY or an expected
// refusal, and on any request that took longer than hang.
func (l *mixedLoad) checkAnswers(t *testing.T, hang time.Duration) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.unexpected) > 0 {
		t.Fatalf("unexpected answers:\n%s", strings.Join(l.unexpected, "\n"))
	}
	for kind, d := range l.maxLatency {
		if d > hang {
			t.Fatalf("a %s request waited %v: more than the %v a request may hang", kind, d, hang)
		}
	}
}

// verify waits until MySQL holds every answered grab, award and sale, then
// checks each is there exactly once and nothing else is: every share owned
// is an answered grab's, every award row an answered award, every SKU's
// counters are Redis's and its sales the answered orders; and nothing was
// parked.
func (l *mixedLoad) verify(t *testing.T, f *faultEnv) {
	t.Helper()
	l.stop()
	ctx := context.Background()
	enginetest.WaitFor(t, "the writer to acknowledge every event", func() bool { return f.caughtUp(t) })
	stocktest.WaitDurable(t, f.Redis, f.Keys, f.DB, l.skus...)
	l.mu.Lock()
	defer l.mu.Unlock()

	// Packets: the owner of every share is the user answered with it, and no
	// share has an owner nobody was answered.
	byUser := map[int64]int64{}
	answered := 0
	for i, p := range l.packets {
		shares, err := f.DB.Shares(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, s := range shares {
			if s.UserID.Valid {
				owned++
				r, ok := l.grabs[[2]int64{p, s.UserID.Int64}]
				if !ok || r.Seq != s.Seq || r.Amount != int64(s.Amount) {
					t.Fatalf("packet %d share %d is user %d's in MySQL (%d fen); the answer was %+v (answered %v)",
						p, s.Seq, s.UserID.Int64, s.Amount, r, ok)
				}
				byUser[s.UserID.Int64] += int64(s.Amount)
			}
		}
		for u := int64(1); u <= int64(l.perPacket); u++ {
			if _, ok := l.grabs[[2]int64{p, u}]; ok {
				answered++
				owned--
			}
		}
		if owned != 0 {
			t.Fatalf("packet %d: MySQL and the answers differ by %d owned shares", p, owned)
		}
		row, err := f.DB.Packet(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if full := len(shares) == loadPerPacket && countOwned(shares) == loadPerPacket; full != (row.Status == packet.StatusFinished) {
			t.Fatalf("packet %d (#%d) is %s in MySQL with %d of %d shares owned", p, i, row.Status, countOwned(shares), len(shares))
		}
	}
	if len(l.grabs) != answered {
		t.Fatalf("%d grabs answered, %d found among the packets", len(l.grabs), answered)
	}
	for u, want := range byUser {
		if got, err := f.DB.Balance(ctx, u); err != nil || got != want {
			t.Fatalf("user %d balance %d, %v; the shares MySQL gives them sum to %d", u, got, err, want)
		}
	}
	if tot, err := f.DB.MoneyTotals(ctx); err != nil || tot.Balances != tot.Ledger {
		t.Fatalf("money totals %+v, %v: balances and ledger differ", tot, err)
	}

	// The campaign: one row per answered award, its user's and amount, and
	// the campaign counts exactly those.
	rows, err := f.DB.CampaignAwards(ctx, l.campaign)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(l.awards) {
		t.Fatalf("%d awards answered, %d rows in MySQL", len(l.awards), len(rows))
	}
	bySeq := map[int]store.Award{}
	var used int64
	for _, r := range rows {
		bySeq[r.Seq] = r
		used += int64(r.Amount)
	}
	for u, a := range l.awards {
		r, ok := bySeq[a.Seq]
		if !ok || r.UserID != u || int64(r.Amount) != a.Amount {
			t.Fatalf("award %d answered to user %d (%d fen); MySQL has %+v (present %v)", a.Seq, u, a.Amount, r, ok)
		}
	}
	c, err := f.DB.Campaign(ctx, l.campaign)
	if err != nil {
		t.Fatal(err)
	}
	if int64(c.UsedAmount) != used || c.AwardedCount != len(rows) {
		t.Fatalf("campaign used %d fen over %d awards; its rows sum to %d over %d", c.UsedAmount, c.AwardedCount, used, len(rows))
	}

	// Stock: MySQL's counters are Redis's (waitDurable), the log has no gap,
	// and what is sold is what was answered.
	sold := map[stocktest.SKU]int64{}
	for _, s := range l.orders {
		sold[s]++
	}
	for _, s := range l.skus {
		stocktest.GaplessChanges(t, f.Redis, f.Keys, f.DB, s)
		st, err := f.DB.Stock(ctx, s.Activity, s.Product, s.SKU)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(st.Scopes, func(c event.StockScope) bool { return c.Scope == stock.ScopeHighSeas })
		if i < 0 || st.Scopes[i].Sold != sold[s] {
			t.Fatalf("SKU %v: MySQL %+v; %d sales answered", s, st.Scopes, sold[s])
		}
	}

	if n := f.deadLetters(t); n != 0 {
		t.Fatalf("%d events parked in dead letters", n)
	}
	if n := enginetest.Metric(t, f.reg, "grab_writer_dead_letters_total"); n != 0 {
		t.Fatalf("dead-letter metric %v", n)
	}
}

func countOwned(shares []store.Share) int {
	n := 0
	for _, s := range shares {
		if s.UserID.Valid {
			n++
		}
	}
	return n
}

// waitRecovered waits until the writer has caught up after the store came
// back, and answers how long that took from since.
func (f *faultEnv) waitRecovered(t *testing.T, since time.Time) time.Duration {
	t.Helper()
	enginetest.WaitFor(t, "the writer to catch up after the store came back", func() bool {
		return f.Engine.WriterLag() < 200*time.Millisecond
	})
	return time.Since(since)
}

// MySQL read-only for 10 s (as a failover makes the old primary) under
// packet grabs, deducts and campaign grabs: the writer keeps every batch
// pending, grabs turn BUSY past the lag bound, and once writable again
// every answered grab, sale and award is in MySQL exactly once and nothing
// was parked. Must-show 1 of issue 12.
func TestMySQLReadOnlyParksNothing(t *testing.T) {
	f := setupMariaFaults(t, func(c *engine.Config) { c.LagLimit = 2 * time.Second })
	f.StartWriter(t)
	l := startLoad(t, f.Env, loadRates{grabs: 100, deducts: 100, campaignGrabs: 150})
	l.waitAnswered(t, 50)

	f.maria.SetReadOnly(true)
	before := l.count("grab/busy") + l.count("campaign/busy") + l.count("deduct/busy")
	time.Sleep(10 * time.Second) // the fault's length, not a bet on timing
	if lag := f.Engine.WriterLag(); lag < 5*time.Second {
		t.Fatalf("writer lag %v after 10 s of read-only: the writer did not wait for the store", lag)
	}
	if busy := l.count("grab/busy") + l.count("campaign/busy") + l.count("deduct/busy"); busy == before {
		t.Fatal("no request answered BUSY with the writer 10 s behind")
	}
	if n := f.deadLetters(t); n != 0 {
		t.Fatalf("%d events parked while the store was read-only", n)
	}

	f.maria.SetReadOnly(false)
	recovery := f.waitRecovered(t, time.Now())
	l.waitAnswered(t, 50)
	l.verify(t, f)
	l.checkAnswers(t, 10*time.Second)
	t.Logf("writer caught up %v after the store was writable; %s", recovery.Round(time.Millisecond), l.summary())
}

// read_only switched on and off 30 times under campaign grabs, packet grabs
// and deducts: no request waits more than a few seconds (a lock cycle
// through the global read lock ends within the session's lock timeouts),
// nothing is parked, and every answered change is in MySQL once. Must-show
// 6 of issue 12.
func TestMySQLReadOnlyFlapping(t *testing.T) {
	f := setupMariaFaults(t)
	f.StartWriter(t)
	l := startLoad(t, f.Env, loadRates{grabs: 100, deducts: 100, campaignGrabs: 300})
	l.waitAnswered(t, 20)

	var slowestSet time.Duration
	set := func(on bool) {
		start := time.Now()
		f.maria.SetReadOnly(on)
		slowestSet = max(slowestSet, time.Since(start))
	}
	for range 30 {
		set(true)
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		set(false)
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
	}
	if slowestSet > 10*time.Second {
		t.Fatalf("SET GLOBAL read_only took %v", slowestSet)
	}
	recovery := f.waitRecovered(t, time.Now())
	l.waitAnswered(t, 20)
	l.verify(t, f)
	l.checkAnswers(t, 10*time.Second)
	t.Logf("slowest SET GLOBAL read_only %v; caught up %v after the last; %s",
		slowestSet.Round(time.Millisecond), recovery.Round(time.Millisecond), l.summary())
}

// MySQL stopped cleanly, then killed, each for a few seconds under load: the
// writer retries until it is back, applies everything and parks nothing.
func TestWriterRidesOutMySQLStopAndCrash(t *testing.T) {
	f := setupMariaFaults(t, func(c *engine.Config) { c.LagLimit = 2 * time.Second })
	f.StartWriter(t)
	l := startLoad(t, f.Env, loadRates{grabs: 100, deducts: 100, campaignGrabs: 150})
	l.waitAnswered(t, 30)

	var recoveries []string
	for _, fault := range []struct {
		name string
		stop func()
	}{{"stop", f.maria.Stop}, {"kill", f.maria.Kill}} {
		fault.stop()
		enginetest.WaitFor(t, "the writer to fall behind with MySQL down", func() bool { return f.Engine.WriterLag() > time.Second })
		time.Sleep(3 * time.Second) // the outage's length
		f.maria.Start()
		recoveries = append(recoveries, fmt.Sprintf("%s: %v", fault.name, f.waitRecovered(t, time.Now()).Round(time.Millisecond)))
		l.waitAnswered(t, 30)
	}
	l.verify(t, f)
	l.checkAnswers(t, 10*time.Second)
	t.Logf("writer caught up after MySQL answered again: %s; %s", strings.Join(recoveries, ", "), l.summary())
}
