package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/store"
)

// WriterConfig tunes the durable writer.
type WriterConfig struct {
	Group    string        // consumer group name, one per deployment
	Consumer string        // this process's consumer name; default host-pid
	Batch    int           // events per read and per store transaction
	Block    time.Duration // how long a read waits for new events
	// ClaimIdle is how long an event may sit with a consumer before another
	// one takes it over (the consumer is presumed dead). Keep it below the
	// engine's LagLimit, so a crashed writer's events move on before grabs are
	// refused; taking over a slow but live consumer's events is harmless, as
	// every apply is idempotent.
	ClaimIdle  time.Duration
	ClaimEvery time.Duration
	// MaxAttempts is how often one event may fail against a reachable store
	// before it is parked in the dead-letter stream.
	MaxAttempts  int
	MonitorEvery time.Duration // how often lag is measured and acked events trimmed
	DrainTimeout time.Duration // how long a stop may take to drain what is left
}

// DefaultWriterConfig is the production writer configuration.
func DefaultWriterConfig() WriterConfig {
	return WriterConfig{Group: "writer", Batch: 256, Block: 500 * time.Millisecond,
		ClaimIdle: 3 * time.Second, ClaimEvery: time.Second, MaxAttempts: 5,
		MonitorEvery: 250 * time.Millisecond, DrainTimeout: 30 * time.Second}
}

func (c WriterConfig) withDefaults() WriterConfig {
	d := DefaultWriterConfig()
	if c.Group == "" {
		c.Group = d.Group
	}
	if c.Consumer == "" {
		host, _ := os.Hostname()
		c.Consumer = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Batch <= 0 {
		c.Batch = d.Batch
	}
	if c.Block <= 0 {
		c.Block = d.Block
	}
	if c.ClaimIdle <= 0 {
		c.ClaimIdle = d.ClaimIdle
	}
	if c.ClaimEvery <= 0 {
		c.ClaimEvery = d.ClaimEvery
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.MonitorEvery <= 0 {
		c.MonitorEvery = d.MonitorEvery
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = d.DrainTimeout
	}
	return c
}

// Writer makes accepted grabs and closes durable: it consumes every shard's
// event stream through a consumer group, applies each batch to the store in one
// transaction and acknowledges it only after the commit. Every apply is
// idempotent, so a crash between commit and ack replays harmlessly.
type Writer struct {
	e       *Engine
	rdb     redis.UniversalClient
	cfg     WriterConfig
	running atomic.Bool
	// deadLetters maps each shard's event stream to its dead-letter stream.
	deadLetters map[string]string
}

func newWriter(e *Engine, rdb redis.UniversalClient) *Writer {
	w := &Writer{e: e, rdb: rdb, cfg: e.cfg.Writer, deadLetters: map[string]string{}}
	for shard := 0; shard < e.keys.Shards; shard++ {
		w.deadLetters[e.keys.Events(shard)] = e.keys.DeadLetters(shard)
	}
	return w
}

// RunWriter runs the writer until ctx is cancelled, then drains what is
// left in the streams (within DrainTimeout) and returns.
func (e *Engine) RunWriter(ctx context.Context) error { return e.writer.Run(ctx) }

// Run is RunWriter.
func (w *Writer) Run(ctx context.Context) error {
	w.running.Store(true)
	defer w.running.Store(false)
	drain, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	go func() {
		<-ctx.Done()
		time.AfterFunc(w.cfg.DrainTimeout, cancelDrain)
	}()

	var wg sync.WaitGroup
	for shard := 0; shard < w.e.keys.Shards; shard++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.runShard(ctx, drain, shard)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.monitor(ctx)
	}()
	wg.Wait()
	return nil
}

// runShard consumes one stream. ctx ends normal work; drain bounds the final drain.
func (w *Writer) runShard(ctx, drain context.Context, shard int) {
	stream := w.e.keys.Events(shard)
	w.ensureGroup(drain, stream)
	// Our own pending entries first: a restart with the same consumer name
	// resumes what it had read but not acknowledged.
	w.resumePending(drain, stream)
	lastClaim := time.Now()
	for ctx.Err() == nil {
		if time.Since(lastClaim) >= w.cfg.ClaimEvery {
			w.claim(drain, stream)
			lastClaim = time.Now()
		}
		w.consume(drain, stream, ">", w.cfg.Block)
	}
	// Stopping: apply everything already in the stream, then return.
	for drain.Err() == nil && w.consume(drain, stream, ">", -1) > 0 {
	}
	w.resumePending(drain, stream)
}

// resumePending applies every entry this consumer read but did not
// acknowledge. It walks the pending list by id, so an entry that stays
// pending (its store keeps failing) cannot hold the walk forever.
func (w *Writer) resumePending(ctx context.Context, stream string) {
	for after := "0"; ctx.Err() == nil; {
		last, n := w.read(ctx, stream, after, -1)
		if n == 0 {
			return
		}
		after = last
	}
}

func (w *Writer) ensureGroup(ctx context.Context, stream string) {
	// "0": events added before the group existed are consumed too.
	err := w.rdb.XGroupCreateMkStream(ctx, stream, w.cfg.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		w.e.log.WarnContext(ctx, "writer: cannot create consumer group", "stream", stream, "err", err)
	}
}

// consume reads one batch (id ">" for new events, "0" for our pending ones)
// and applies it; it returns how many events it read. block < 0 means do not block.
func (w *Writer) consume(ctx context.Context, stream, id string, block time.Duration) int {
	_, n := w.read(ctx, stream, id, block)
	return n
}

// read is consume that also returns the id of the last entry read.
func (w *Writer) read(ctx context.Context, stream, id string, block time.Duration) (string, int) {
	if block == 0 {
		block = -1 // go-redis sends BLOCK only for a non-negative duration
	}
	res, err := w.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: w.cfg.Group, Consumer: w.cfg.Consumer,
		Streams: []string{stream, id}, Count: int64(w.cfg.Batch), Block: block}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return "", 0
	case err != nil && strings.HasPrefix(err.Error(), "NOGROUP"):
		// Redis lost the stream (restarted empty): start again.
		w.ensureGroup(ctx, stream)
		return "", 0
	case err != nil:
		if ctx.Err() == nil {
			w.e.log.WarnContext(ctx, "writer: read failed", "stream", stream, "err", err)
			sleep(ctx, 200*time.Millisecond)
		}
		return "", 0
	}
	n, last := 0, ""
	for _, s := range res {
		n += len(s.Messages)
		if len(s.Messages) > 0 {
			w.apply(ctx, stream, s.Messages)
			last = s.Messages[len(s.Messages)-1].ID
		}
	}
	return last, n
}

// claim takes over events left pending by a consumer that stopped.
func (w *Writer) claim(ctx context.Context, stream string) {
	start := "0-0"
	for ctx.Err() == nil {
		msgs, next, err := w.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: stream, Group: w.cfg.Group,
			Consumer: w.cfg.Consumer, MinIdle: w.cfg.ClaimIdle, Start: start, Count: int64(w.cfg.Batch)}).Result()
		if err != nil {
			if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
				w.e.log.WarnContext(ctx, "writer: autoclaim failed", "stream", stream, "err", err)
			}
			return
		}
		if len(msgs) > 0 {
			w.apply(ctx, stream, msgs)
		}
		if next == "0-0" || next == "" {
			return
		}
		start = next
	}
}

// apply makes a batch durable and acknowledges it. It retries while the
// store is unreachable; an event the store keeps refusing is parked.
func (w *Writer) apply(ctx context.Context, stream string, msgs []redis.XMessage) {
	events := make([]store.Event, 0, len(msgs))
	kept := make([]redis.XMessage, 0, len(msgs))
	for _, m := range msgs {
		ev, err := decodeEvent(m.Values)
		if err != nil {
			w.deadLetter(ctx, stream, m, err)
			continue
		}
		events = append(events, ev)
		kept = append(kept, m)
	}
	if len(kept) == 0 {
		return
	}
	for attempt := 1; ; attempt++ {
		rejected, err := w.e.db.ApplyEvents(ctx, events)
		if err == nil {
			// A rejected event that could not be parked stays pending (it is
			// redelivered and parked later), so it must not be acked with the rest.
			unparked := map[int]bool{}
			for _, i := range rejected {
				if !w.deadLetter(ctx, stream, kept[i], contradiction(events[i])) {
					unparked[i] = true
				}
			}
			done := kept
			if len(unparked) > 0 {
				done = make([]redis.XMessage, 0, len(kept))
				for i, m := range kept {
					if !unparked[i] {
						done = append(done, m)
					}
				}
			}
			w.ack(ctx, stream, done)
			w.e.m.batchSize.Observe(float64(len(kept)))
			w.e.m.applied.Add(float64(len(kept) - len(rejected)))
			return
		}
		if ctx.Err() != nil {
			return // stopped mid-retry: the events stay pending and are redelivered
		}
		w.e.log.WarnContext(ctx, "writer: apply failed", "stream", stream, "events", len(kept), "attempt", attempt, "err", err)
		if attempt >= w.cfg.MaxAttempts && w.e.db.Ping(ctx) == nil {
			// The store answers but refuses this batch: find the culprit one by one.
			if len(kept) > 1 {
				for i := range kept {
					w.apply(ctx, stream, kept[i:i+1])
				}
				return
			}
			w.deadLetter(ctx, stream, kept[0], err)
			return
		}
		sleep(ctx, backoff(attempt))
	}
}

func (w *Writer) ack(ctx context.Context, stream string, msgs []redis.XMessage) {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	// An ack lost here only means a harmless redelivery.
	if err := w.rdb.XAck(ctx, stream, w.cfg.Group, ids...).Err(); err != nil {
		w.e.log.WarnContext(ctx, "writer: ack failed; events will be redelivered", "stream", stream, "err", err)
	}
}

// deadLetter parks an event for a person and acknowledges it. It reports
// whether the event was parked; if not, it stays pending.
func (w *Writer) deadLetter(ctx context.Context, stream string, m redis.XMessage, cause error) bool {
	values := map[string]any{"stream": stream, "id": m.ID, "error": cause.Error()}
	for k, v := range m.Values {
		values["f_"+k] = v
	}
	if err := w.rdb.XAdd(ctx, &redis.XAddArgs{Stream: w.deadLetters[stream], Values: values}).Err(); err != nil {
		w.e.log.ErrorContext(ctx, "writer: cannot park event; it stays pending", "stream", stream, "id", m.ID, "err", err)
		return false
	}
	w.e.m.deadLetters.Inc()
	w.e.log.ErrorContext(ctx, "writer: event parked in dead letters; needs attention", "stream", stream, "id", m.ID, "cause", cause)
	w.ack(ctx, stream, []redis.XMessage{m})
	return true
}

func contradiction(ev store.Event) error {
	switch ev.Kind {
	case store.EventClose:
		return errors.New("contradicts the store: no such packet, or the remainder is more than its unowned shares")
	case store.EventAward:
		return errors.New("contradicts the store: not the campaign's share, another user's award, or over the budget")
	}
	return errors.New("contradicts the store: the share is someone else's, the user holds another, or the amount differs")
}

// decodeEvent reads a stream entry written by grab.lua (t=grab), close.lua
// (t=close), stock.lua (t=stock) or campaign_grab.lua (t=award).
func decodeEvent(v map[string]any) (store.Event, error) {
	f := fields{v: v}
	var ev store.Event
	switch t := f.str("t"); t {
	case "grab":
		g := store.GrabEvent{PacketID: f.num("pk"), UserID: f.num("u"), Seq: int(f.num("seq")), Amount: f.num("amt"),
			At: time.UnixMilli(f.num("at")).UTC(), Credit: f.str("cr") == "1", Finished: f.str("fin") == "1"}
		if f.err == nil && (g.PacketID <= 0 || g.UserID <= 0 || g.Seq <= 0 || g.Amount <= 0) {
			f.err = errors.New("packet, user, seq and amount must be positive")
		}
		ev = store.Event{Kind: store.EventGrab, Grab: g}
	case "close":
		c := store.CloseEvent{PacketID: f.num("pk"), Remainder: f.num("rem"), Count: int(f.num("n")),
			At: time.UnixMilli(f.num("at")).UTC()}
		// Every share is at least a fen, so n shares are at least n fen.
		if f.err == nil && (c.PacketID <= 0 || c.Count < 0 || c.Remainder < int64(c.Count) || (c.Count == 0) != (c.Remainder == 0)) {
			f.err = errors.New("packet must be positive, and the remainder at least a fen a share (0 for none)")
		}
		ev = store.Event{Kind: store.EventClose, Close: c}
	case "stock":
		ev = store.Event{Kind: store.EventStock, Stock: decodeStock(&f)}
	case "award":
		a := store.AwardEvent{CampaignID: f.num("cp"), UserID: f.num("u"), Seq: int(f.num("seq")), Amount: f.num("amt"),
			At: time.UnixMilli(f.num("at")).UTC()}
		if f.err == nil && (a.CampaignID <= 0 || a.UserID <= 0 || a.Seq <= 0 || a.Amount <= 0) {
			f.err = errors.New("campaign, user, seq and amount must be positive")
		}
		ev = store.Event{Kind: store.EventAward, Award: a}
	default:
		return store.Event{}, fmt.Errorf("unknown event type %q", t)
	}
	return ev, f.err
}

// decodeStock reads a t=stock entry of stock.lua: the SKU's state after the
// change, its scopes as "scope=t,a,r,s;...".
func decodeStock(f *fields) store.StockEvent {
	s := store.StockEvent{ActivityID: f.num("a"), ProductID: f.num("p"), SKU: f.num("sku"), Version: f.num("ver"),
		Status: f.str("st"), Op: f.str("op"), Ref: f.str("ref"), Change: f.str("chg"), At: time.UnixMilli(f.num("at")).UTC()}
	if snap := f.str("snap"); snap != "" {
		for _, part := range strings.Split(snap, ";") {
			scope, counts, _ := strings.Cut(part, "=")
			var c [4]int64
			n, err := fmt.Sscanf(counts, "%d,%d,%d,%d", &c[0], &c[1], &c[2], &c[3])
			if (err != nil || n != 4) && f.err == nil {
				f.err = fmt.Errorf("stock snapshot %q", part)
			}
			s.Scopes = append(s.Scopes, store.StockScope{Scope: scope, Total: c[0], Available: c[1], Reserved: c[2], Sold: c[3]})
		}
	}
	if f.err == nil && (s.ActivityID <= 0 || s.ProductID <= 0 || s.SKU <= 0 || s.Version <= 0) {
		f.err = errors.New("activity, product, SKU and version must be positive")
	}
	return s
}

// fields reads a stream entry's values; the first bad number is kept in err.
type fields struct {
	v   map[string]any
	err error
}

func (f *fields) str(k string) string { s, _ := f.v[k].(string); return s }

func (f *fields) num(k string) int64 {
	n, err := strconv.ParseInt(f.str(k), 10, 64)
	if err != nil && f.err == nil {
		f.err = fmt.Errorf("field %q: %w", k, err)
	}
	return n
}

// RunMonitor measures the writer lag and trims acknowledged events until ctx
// ends, without consuming anything. RunWriter runs it too; a process that
// serves grabs but leaves the writer to another process runs it alone, so its
// grabs still see the lag and answer ErrBusy past LagLimit.
func (e *Engine) RunMonitor(ctx context.Context) error {
	e.writer.monitor(ctx)
	return nil
}

// monitor measures the writer lag (age of the oldest event not yet
// acknowledged, across shards) and trims acknowledged events.
func (w *Writer) monitor(ctx context.Context) {
	t := time.NewTicker(w.cfg.MonitorEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lag, err := w.measureAndTrim(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.e.log.WarnContext(ctx, "writer: lag measurement failed", "err", err)
			}
			continue
		}
		w.e.lagMs.Store(lag.Milliseconds())
		w.e.m.writerLag.Set(lag.Seconds())
	}
}

func (w *Writer) measureAndTrim(ctx context.Context) (time.Duration, error) {
	now, err := w.rdb.Time(ctx).Result()
	if err != nil {
		return 0, err
	}
	var worst time.Duration
	for shard := 0; shard < w.e.keys.Shards; shard++ {
		stream := w.e.keys.Events(shard)
		oldest, err := w.oldestUnacked(ctx, stream)
		if err != nil {
			return 0, err
		}
		if oldest == "" {
			continue
		}
		if age := now.Sub(time.UnixMilli(idMillis(oldest))); age > worst {
			worst = age
		}
	}
	return worst, nil
}

// oldestUnacked returns the id of the oldest event not yet acknowledged ("" if
// none), and trims every event before it: those are durable already.
func (w *Writer) oldestUnacked(ctx context.Context, stream string) (string, error) {
	groups, err := w.rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") || errors.Is(err, redis.Nil) {
			return "", nil
		}
		return "", err
	}
	var lastDelivered string
	for _, g := range groups {
		if g.Name == w.cfg.Group {
			lastDelivered = g.LastDeliveredID
		}
	}
	if lastDelivered == "" {
		// No writer has created its group yet: every event is unconsumed, so
		// the lag is the age of the first one, and nothing may be trimmed.
		first, err := w.rdb.XRangeN(ctx, stream, "-", "+", 1).Result()
		if err != nil || len(first) == 0 {
			return "", err
		}
		return first[0].ID, nil
	}
	oldest := ""
	pending, err := w.rdb.XPending(ctx, stream, w.cfg.Group).Result()
	if err != nil {
		return "", err
	}
	if pending.Count > 0 {
		oldest = pending.Lower
	} else {
		next, err := w.rdb.XRangeN(ctx, stream, "("+lastDelivered, "+", 1).Result()
		if err != nil {
			return "", err
		}
		if len(next) > 0 {
			oldest = next[0].ID
		}
	}
	trimTo := oldest
	if trimTo == "" {
		trimTo = lastDelivered // everything up to it is acknowledged; keep just that one
	}
	if trimTo != "0-0" {
		if err := w.rdb.XTrimMinIDApprox(ctx, stream, trimTo, 0).Err(); err != nil {
			return "", err
		}
	}
	return oldest, nil
}

func idMillis(id string) int64 {
	ms, _ := strconv.ParseInt(strings.SplitN(id, "-", 2)[0], 10, 64)
	return ms
}

func backoff(attempt int) time.Duration {
	d := 50 * time.Millisecond << min(attempt, 7)
	return min(d, 5*time.Second)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
