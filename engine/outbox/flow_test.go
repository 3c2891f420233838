package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/engine/packet"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events"
	"github.com/grab-engine/grab/events/eventstest"
)

// soak reports whether GRAB_SOAK=1 asks for the full 30 s NATS
// outage.
func soak() bool { return os.Getenv("GRAB_SOAK") == "1" }

// relayConfig is testConfig with batches of the production size, for loads
// of thousands of messages.
func relayConfig(stream, prefix string) Config {
	c := testConfig(stream, prefix)
	c.Batch = DefaultConfig().Batch
	return c
}

// outboxEnv is a real engine (Redis, MariaDB) whose store writes the
// outbox, with its writer running.
func outboxEnv(t *testing.T) *enginetest.Env {
	t.Helper()
	env := enginetest.Real(t)
	env.DB.SetOutbox(true)
	env.StartWriter(t)
	return env
}

// drained waits until the outbox has no unpublished message.
func drained(t *testing.T, env *enginetest.Env) {
	t.Helper()
	enginetest.WaitFor(t, "the outbox drained", func() bool { return pending(t, env) == 0 })
}

func pending(t *testing.T, env *enginetest.Env) int64 {
	t.Helper()
	n, _, err := env.DB.OutboxStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// readStream answers every message of the stream, in its order; each must
// carry its id as Nats-Msg-Id.
func readStream(t *testing.T, js jetstream.JetStream, name string) []eventstest.Streamed {
	t.Helper()
	msgs := eventstest.Read(t, js, name)
	for _, m := range msgs {
		if m.MsgID != m.Message.ID {
			t.Errorf("event %s published with Nats-Msg-Id %q", m.Message.ID, m.MsgID)
		}
	}
	return msgs
}

// byID indexes msgs by event id, failing the test on an id twice or a
// message on another subject than its event's under prefix.
func byID(t *testing.T, msgs []eventstest.Streamed, prefix string) map[string]event.Message {
	t.Helper()
	out := make(map[string]event.Message, len(msgs))
	for _, s := range msgs {
		if _, dup := out[s.Message.ID]; dup {
			t.Errorf("event %s twice in the stream (again at %d)", s.Message.ID, s.Seq)
		}
		out[s.Message.ID] = s.Message
		if want := prefix + strings.TrimPrefix(s.Message.Subject(), event.SubjectPrefix); s.Subject != want {
			t.Errorf("event %s on %s, want %s", s.Message.ID, s.Subject, want)
		}
	}
	return out
}

// idsOfKind are the ids of the events of kind, sorted.
func idsOfKind(got map[string]event.Message, kind string) []string {
	var ids []string
	for id, m := range got {
		if m.Kind == kind {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// storeChanges is what MySQL holds after a test's changes: the event ids
// each of its rows must have produced, by kind (sorted), and the money of
// the grabbed shares and of the awards.
type storeChanges struct {
	ids        map[string][]string
	grabbedFen int64
	awardedFen int64
}

// readStore reads the owned shares of packets, the finished ones among
// them, the change log of skus and the awards of campaigns.
func readStore(t *testing.T, env *enginetest.Env, packets []int64, skus [][3]int64, campaigns []int64) storeChanges {
	t.Helper()
	ctx := context.Background()
	sc := storeChanges{ids: map[string][]string{}}
	add := func(kind, id string) { sc.ids[kind] = append(sc.ids[kind], id) }
	for _, p := range packets {
		shares, err := env.DB.Shares(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		owned := 0
		for _, s := range shares {
			if s.UserID.Valid {
				owned++
				sc.grabbedFen += int64(s.Amount)
				add(event.MsgPacketGrabbed, fmt.Sprintf("grab:%d:%d", p, s.Seq))
			}
		}
		add(event.MsgPacketPaid, fmt.Sprintf("paid:%d", p))
		if owned == len(shares) {
			add(event.MsgPacketFinished, fmt.Sprintf("finished:%d", p))
		}
	}
	for _, k := range skus {
		changes, err := env.DB.StockChanges(ctx, k[0], k[1], k[2])
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			add(event.MsgStockChanged, fmt.Sprintf("stock:%d:%d:%d:%d", k[0], k[1], k[2], c.Version))
		}
	}
	for _, c := range campaigns {
		awards, err := env.DB.CampaignAwards(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range awards {
			sc.awardedFen += int64(a.Amount)
			add(event.MsgCampaignAwarded, fmt.Sprintf("award:%d:%d", c, a.Seq))
		}
	}
	for _, ids := range sc.ids {
		slices.Sort(ids)
	}
	return sc
}

// total is how many events sc's rows make.
func (sc storeChanges) total() int {
	n := 0
	for _, ids := range sc.ids {
		n += len(ids)
	}
	return n
}

// checkStream fails the test unless got holds exactly the events sc's rows
// make, each kind's ids equal to MySQL's.
func checkStream(t *testing.T, got map[string]event.Message, sc storeChanges) {
	t.Helper()
	kinds := map[string]bool{}
	for _, m := range got {
		kinds[m.Kind] = true
	}
	for k := range sc.ids {
		kinds[k] = true
	}
	for _, k := range slices.Sorted(maps.Keys(kinds)) {
		if g, w := idsOfKind(got, k), sc.ids[k]; !slices.Equal(g, w) {
			t.Errorf("%s: the stream holds %d events, MySQL's rows make %d (or other ids)", k, len(g), len(w))
		}
	}
	if len(got) != sc.total() {
		t.Errorf("the stream holds %d events, MySQL's rows make %d", len(got), sc.total())
	}
}

// sumMoney adds the field amount of the payloads of got's events of kind, in fen.
func sumMoney(t *testing.T, got map[string]event.Message, kind string) int64 {
	t.Helper()
	var sum int64
	for _, m := range got {
		if m.Kind != kind {
			continue
		}
		var p struct {
			Amount string `json:"amount"`
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatalf("%s: %v", m.ID, err)
		}
		fen, err := money.Parse(p.Amount)
		if err != nil {
			t.Fatalf("%s: amount %q: %v", m.ID, p.Amount, err)
		}
		sum += fen
	}
	return sum
}

// grabSender is the user who sends every packet of these tests.
const grabSender = 9_000_000

// sendPackets funds the sender, makes users 1..100 and the sender group 7,
// and sends and pays n lucky packets of 100 shares of 1.00 to 200.00 yuan.
func sendPackets(t *testing.T, env *enginetest.Env, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	if _, err := env.Packets.SetGroupMembers(ctx, 7, append(enginetest.Users(1, 100), grabSender)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Packets.Deposit(ctx, grabSender, int64(n)*1_000_000, "seed"); err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, n)
	for i := range ids {
		p, err := env.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: grabSender, Kind: packet.KindGroupLucky,
			GroupID: 7, Count: 100, Amount: 100*100 + int64(i)*97})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := env.Packets.PayByBalance(ctx, p.ID, grabSender); err != nil {
			t.Fatal(err)
		}
		ids[i] = p.ID
	}
	return ids
}

// parallel runs do(0..n-1) on workers goroutines and answers the first error.
func parallel(n, workers int, do func(i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := do(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return first
}

// Many grabs, stock deducts and campaign awards at once, with the writer
// and one relay running: the stream holds exactly one event per change (per
// kind, the ids MySQL's rows make: owned shares, change-log rows, awards),
// a durable consumer sees each event id once, and the money in the
// packet.grabbed and campaign.awarded events adds up to MySQL's, to the
// fen.
func TestOutboxUnderLoad(t *testing.T) {
	const packets, deducts, awards = 100, 5_000, 5_000 // 10,000 grabs: 20,000 changes
	s := eventstest.NewStream(t, 0)
	env := outboxEnv(t)
	run(t, New(env.DB, connect(t, eventstest.URL()), relayConfig(s.Name, s.Prefix), quiet, nil))
	ctx := context.Background()

	pids := sendPackets(t, env, packets)
	const act, prod, nSKU = 1, 42, 10
	skus := make([]stock.SKUStock, nSKU)
	keys := make([][3]int64, nSKU)
	for i := range skus {
		skus[i] = stock.SKUStock{SKU: int64(100 + i), Stock: int64(deducts)}
		keys[i] = [3]int64{act, prod, skus[i].SKU}
	}
	if err := env.Stock.Submit(ctx, "v-1", act, prod, skus); err != nil {
		t.Fatal(err)
	}
	cp := env.NewCampaign(t, int64(awards)*100, awards, 1, 1000, 1)

	start := time.Now()
	grabs := packets * 100
	err := parallel(grabs+deducts+awards, 32, func(i int) error {
		switch {
		case i < grabs:
			_, err := env.Packets.Grab(ctx, pids[i%packets], int64(i/packets+1))
			return err
		case i < grabs+deducts:
			k := i - grabs
			return env.Stock.Deduct(ctx, fmt.Sprintf("o-%d", k),
				[]stock.Item{{Scope: stock.ScopeHighSeas, ActivityID: act, ProductID: prod, SKU: int64(100 + k%nSKU), Qty: 1}})
		default:
			_, err := env.Campaigns.GrabCampaign(ctx, cp.ID, int64(i-grabs-deducts+1))
			var pendingPayout *campaign.PayoutPendingError
			if errors.As(err, &pendingPayout) {
				return nil
			}
			return err
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d grabs, %d deducts and %d awards in %v", grabs, deducts, awards, time.Since(start))
	for _, p := range pids {
		env.Drain(t, p, 100)
	}
	enginetest.WaitFor(t, "every award counted and every deduct durable", func() bool {
		uncounted, err := env.DB.UncountedAwards(ctx, cp.ID)
		if err != nil {
			t.Fatal(err)
		}
		sc := readStore(t, env, pids, keys, []int64{cp.ID})
		return len(uncounted) == 0 && len(sc.ids[event.MsgCampaignAwarded]) == awards && len(sc.ids[event.MsgStockChanged]) == nSKU+deducts
	})
	drained(t, env)
	t.Logf("all durable and relayed after %v", time.Since(start))

	sc := readStore(t, env, pids, keys, []int64{cp.ID})
	if len(sc.ids[event.MsgPacketGrabbed]) != grabs || len(sc.ids[event.MsgPacketFinished]) != packets {
		t.Fatalf("MySQL holds %d grabs and %d finished packets, want %d and %d",
			len(sc.ids[event.MsgPacketGrabbed]), len(sc.ids[event.MsgPacketFinished]), grabs, packets)
	}
	got := byID(t, readStream(t, s.JS, s.Name), s.Prefix)
	checkStream(t, got, sc)
	if g := sumMoney(t, got, event.MsgPacketGrabbed); g != sc.grabbedFen {
		t.Errorf("packet.grabbed events carry %s, MySQL's grabbed shares %s", money.Format(g), money.Format(sc.grabbedFen))
	}
	if g := sumMoney(t, got, event.MsgCampaignAwarded); g != sc.awardedFen {
		t.Errorf("campaign.awarded events carry %s, MySQL's awards %s", money.Format(g), money.Format(sc.awardedFen))
	}

	seen := consumeAll(t, s, len(got))
	if !slices.Equal(slices.Sorted(maps.Keys(seen)), slices.Sorted(maps.Keys(got))) {
		t.Errorf("the consumer saw %d event ids, the stream holds %d", len(seen), len(got))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("the consumer saw %s %d times", id, n)
		}
	}
	t.Logf("%d events checked after %v", len(got), time.Since(start))
}

// packetOrder fails the test unless each packet's events come in the
// stream in the order of its changes: packet.paid, its grabs by seq 1, 2,
// ... and packet.finished last when it finished.
func packetOrder(t *testing.T, msgs []eventstest.Streamed) {
	t.Helper()
	next := map[string]int{} // by aggregate: the seq of the grab due next; 0: paid is due
	for _, s := range msgs {
		m := s.Message
		if !strings.HasPrefix(m.Aggregate, "packet:") {
			continue
		}
		n, seen := next[m.Aggregate]
		switch m.Kind {
		case event.MsgPacketPaid:
			if seen {
				t.Errorf("%s at %d: paid again or after a grab", m.ID, s.Seq)
			}
			next[m.Aggregate] = 1
		case event.MsgPacketGrabbed:
			var p struct {
				Seq int `json:"seq"`
			}
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				t.Fatal(err)
			}
			if p.Seq != n {
				t.Errorf("%s at %d: grab %d of %s, want grab %d next", m.ID, s.Seq, p.Seq, m.Aggregate, n)
			}
			next[m.Aggregate] = p.Seq + 1
		case event.MsgPacketFinished:
			next[m.Aggregate] = -1
		}
	}
}

// With NATS down while grabs go on, every grab succeeds and the outbox
// grows by exactly the events of the grabs made meanwhile; once NATS is
// back, it drains: the stream holds every event once, each packet's in the
// order of its changes. NATS is down 2 s (30 s under GRAB_SOAK=1).
func TestOutboxWhileNATSDown(t *testing.T) {
	down := 2 * time.Second
	if soak() {
		down = 30 * time.Second
	}
	srv := eventstest.StartServer(t)
	js := connect(t, srv.URL)
	ctx := context.Background()
	if err := EnsureStream(ctx, js, events.DefaultStream, time.Hour, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	env := outboxEnv(t)
	reg := prometheus.NewRegistry()
	run(t, New(env.DB, js, relayConfig(events.DefaultStream, ""), quiet, reg))
	const packets = 20
	pids := sendPackets(t, env, packets)

	// Users 1..10 grab every packet while NATS is up.
	if err := parallel(packets*10, 8, func(i int) error {
		_, err := env.Packets.Grab(ctx, pids[i%packets], int64(i/packets+1))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		env.Drain(t, p, 10)
	}
	drained(t, env)

	srv.Kill()
	start := time.Now()
	// Two waves of grabs while it is down, each spread over half the
	// outage: users 11..50, then 51..100; the outbox holds each wave's events.
	grabbed, before := 10, int64(0)
	var slowest time.Duration
	for _, upTo := range []int{50, 100} {
		from, n := grabbed+1, packets*(upTo-grabbed)
		tick := time.NewTicker(down / 2 / time.Duration(n))
		var mu sync.Mutex
		err := parallel(n, 8, func(i int) error {
			<-tick.C
			t0 := time.Now()
			_, err := env.Packets.Grab(ctx, pids[i%packets], int64(from+i/packets))
			mu.Lock()
			slowest = max(slowest, time.Since(t0))
			mu.Unlock()
			return err
		})
		tick.Stop()
		if err != nil {
			t.Fatalf("grab while NATS is down: %v", err)
		}
		for _, p := range pids {
			env.Drain(t, p, upTo)
		}
		want := int64(packets * (upTo - 10))
		if upTo == 100 {
			want += packets // packet.finished
		}
		if got := pending(t, env); got != want || got <= before {
			t.Fatalf("with NATS down and users 11..%d's grabs durable, the outbox holds %d unpublished, want %d", upTo, got, want)
		}
		before, grabbed = want, upTo
	}
	t.Logf("%d grabs in %v with NATS down, the slowest %v", packets*90, time.Since(start), slowest)
	time.Sleep(time.Until(start.Add(down))) // the rest of the outage, if the waves ended early
	if n := enginetest.Metric(t, reg, "grab_outbox_publish_failures_total"); n == 0 {
		t.Errorf("no relay pass failed with NATS down")
	}
	srv.Start()
	drained(t, env)
	t.Logf("drained %d events %v after NATS came back", before, time.Since(start)-down)

	msgs := readStream(t, js, events.DefaultStream)
	got := byID(t, msgs, event.SubjectPrefix)
	checkStream(t, got, readStore(t, env, pids, nil, nil))
	packetOrder(t, msgs)
}

// publishes counts, by event id, every publish to the subjects under
// prefix on the NATS server of url: a plain subscriber receives each
// publish, including one the stream drops as a duplicate.
func publishes(t *testing.T, url, prefix string) (count func() map[string]int) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	seen := map[string]int{}
	sub, err := nc.Subscribe(prefix+".>", func(m *nats.Msg) {
		mu.Lock()
		seen[m.Header.Get(jetstream.MsgIDHeader)]++
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return func() map[string]int {
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		if n, _, err := sub.Pending(); err != nil || n != 0 {
			t.Fatalf("the subscriber has %d publishes undelivered (%v)", n, err)
		}
		if d, err := sub.Dropped(); err != nil || d != 0 {
			t.Fatalf("the subscriber dropped %d publishes (%v)", d, err)
		}
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(seen)
	}
}

// Two relays at once on the same store and stream, while grabs go on: no
// event is published twice (a plain subscriber counts every publish, the
// ones the stream's duplicate window would drop too) and none is missing;
// each row is marked once.
func TestTwoRelaysAtOnce(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	sent := publishes(t, eventstest.URL(), s.Prefix)
	env := outboxEnv(t)
	ctx := context.Background()
	const packets = 20
	pids := sendPackets(t, env, packets)
	half := func(from int) error {
		return parallel(packets*50, 16, func(i int) error {
			_, err := env.Packets.Grab(ctx, pids[i%packets], int64(from+i/packets))
			return err
		})
	}
	// A backlog first, so both relays start with work, then grabs meanwhile.
	if err := half(1); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		env.Drain(t, p, 50)
	}
	var regs [2]*prometheus.Registry
	for i := range regs {
		regs[i] = prometheus.NewRegistry()
		cfg := testConfig(s.Name, s.Prefix)
		cfg.Batch = 32
		run(t, New(env.DB, connect(t, eventstest.URL()), cfg, quiet, regs[i]))
	}
	if err := half(51); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		env.Drain(t, p, 100)
	}
	drained(t, env)

	sc := readStore(t, env, pids, nil, nil)
	msgs := readStream(t, s.JS, s.Name)
	got := byID(t, msgs, s.Prefix)
	checkStream(t, got, sc)
	packetOrder(t, msgs)
	for id, n := range sent() {
		if n != 1 || got[id].ID != id {
			t.Errorf("event %q published %d times (in the stream: %v)", id, n, got[id].ID == id)
		}
	}
	if n := len(sent()); n != len(got) {
		t.Errorf("%d event ids published, the stream holds %d", n, len(got))
	}
	var marked [2]float64
	for i, reg := range regs {
		marked[i] = enginetest.Metric(t, reg, "grab_outbox_published_total")
	}
	if int(marked[0]+marked[1]) != sc.total() {
		t.Errorf("the relays marked %v + %v published, want %d in all", marked[0], marked[1], sc.total())
	}
	t.Logf("relay 1 published %v, relay 2 %v", marked[0], marked[1])
}

// consumeAll runs a durable consumer with a MemorySeen over the stream until
// it has acked all n messages, and answers how often it handled each id.
func consumeAll(t *testing.T, s *eventstest.Stream, n int) map[string]int {
	t.Helper()
	var mu sync.Mutex
	handled := map[string]int{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- events.Consume(ctx, s.JS, events.ConsumerConfig{Stream: s.Name, Durable: "all",
			Filters: []string{s.Prefix + ".>"}, Seen: events.NewMemorySeen(2 * n), Log: quiet},
			func(_ context.Context, m event.Message) error {
				mu.Lock()
				defer mu.Unlock()
				handled[m.ID]++
				return nil
			})
	}()
	s.Settled("all", uint64(n))
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Consume: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(handled)
}
