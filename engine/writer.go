package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/lua"
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
	// Deprecated: ignored. An event is parked only when the store says it is
	// wrong (store.FaultEvent), however often it was tried; every other
	// failure is retried until it passes.
	MaxAttempts int
	// RetryMin and RetryMax bound the backoff between attempts of a batch the
	// store refused: it starts at RetryMin and doubles up to RetryMax, each
	// wait jittered to between half and all of it. A short cap makes the
	// writer resume within RetryMax of the store's return; 16 shards at one
	// attempt each per RetryMax is no burden on a store that is down.
	RetryMin time.Duration
	RetryMax time.Duration
	// ApplyTimeout bounds one attempt at a batch, so a store that stopped
	// answering (a frozen server, a partition that drops packets) fails the
	// attempt and it is retried, instead of hanging the shard for good. A
	// batch normally takes milliseconds.
	ApplyTimeout time.Duration
	MonitorEvery time.Duration // how often lag is measured and acked events trimmed
	DrainTimeout time.Duration // how long a stop may take to drain what is left
}

// writer makes accepted grabs and closes durable: it consumes every shard's
// event stream through a consumer group, applies each batch to the store in one
// transaction and acknowledges it only after the commit. Every apply is
// idempotent, so a crash between commit and ack replays harmlessly.
type writer struct {
	e       *Engine
	rdb     redis.UniversalClient
	cfg     WriterConfig
	running atomic.Bool
	// deadLetters maps each shard's event stream to its dead-letter stream.
	deadLetters map[string]string
	// shards maps each shard's event stream to its loop's state. Both maps
	// are filled once, by newWriter.
	shards map[string]*shardState
}

// shardState is what one shard's loop carries between reads.
type shardState struct {
	// resume: entries this consumer was handed but did not acknowledge may
	// be pending (a read whose reply was lost with Redis, an ack that
	// failed, a stream Redis lost): walk our pending list before reading
	// new entries, rather than wait out ClaimIdle for XAUTOCLAIM.
	resume atomic.Bool
	// readFailures counts reads failed in a row, for the backoff and the log.
	readFailures atomic.Int64
	// epochKey is the shard's dataset epoch key: every batch is read
	// together with it and applied under it (store.EpochGuard).
	epochKey string
}

func newWriter(e *Engine, rdb redis.UniversalClient) *writer {
	w := &writer{e: e, rdb: rdb, cfg: e.cfg.Writer, deadLetters: map[string]string{}, shards: map[string]*shardState{}}
	for shard := 0; shard < e.keys.Shards; shard++ {
		w.deadLetters[e.keys.Events(shard)] = e.keys.DeadLetters(shard)
		w.shards[e.keys.Events(shard)] = &shardState{epochKey: e.keys.Epoch(shard)}
	}
	return w
}

// RunWriter runs the writer until ctx is cancelled, then drains what is
// left in the streams (within DrainTimeout) and returns: nil once every
// event it read is applied, ErrNotDrained (or Redis's error) when some are
// still pending, for the next writer to apply.
func (e *Engine) RunWriter(ctx context.Context) error { return e.writer.run(ctx) }

// Run is RunWriter.
func (w *writer) run(ctx context.Context) error {
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
	return w.leftPending(context.WithoutCancel(ctx))
}

// ErrNotDrained: the writer stopped with events it had read still not
// applied (the drain hit DrainTimeout, or the store or Redis failed it).
// They stay pending in Redis: the next writer to start, or another one
// running, applies them.
var ErrNotDrained = errors.New("engine: the writer stopped before applying every event it had read")

// leftPending reports what this writer leaves pending as it stops: nil when
// it applied every event it read, ErrNotDrained with the count when not,
// and Redis's error when it cannot tell.
func (w *writer) leftPending(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var left int64
	for shard := 0; shard < w.e.keys.Shards; shard++ {
		stream := w.e.keys.Events(shard)
		p, err := w.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: stream, Group: w.cfg.Group,
			Consumer: w.cfg.Consumer, Start: "-", End: "+", Count: 1}).Result()
		if err != nil && !strings.Contains(err.Error(), "NOGROUP") {
			return fmt.Errorf("engine: the writer stopped and cannot tell whether it drained: %w", err)
		}
		left += int64(len(p))
	}
	if left > 0 {
		return fmt.Errorf("%w: events pending on %d shard(s)", ErrNotDrained, left)
	}
	return nil
}

// runShard consumes one stream. ctx ends normal work; drain bounds the final drain.
func (w *writer) runShard(ctx, drain context.Context, shard int) {
	stream := w.e.keys.Events(shard)
	w.ensureGroup(drain, stream)
	// Our own pending entries first: a restart with the same consumer name
	// resumes what it had read but not acknowledged.
	w.resumePending(drain, stream)
	st := w.shards[stream]
	lastClaim := time.Now()
	for ctx.Err() == nil {
		if st.resume.Swap(false) {
			w.resumePending(drain, stream)
		}
		if time.Since(lastClaim) >= w.cfg.ClaimEvery {
			// Between batches nothing of ours is in flight on this stream, so
			// an entry pending with us is one whose delivery went astray: a
			// read whose reply was lost and that the client re-sent on a new
			// connection without telling us (go-redis retries a read on
			// EOF), or an ack that never arrived. Walk them every ClaimEvery,
			// rather than leave them to XAUTOCLAIM after ClaimIdle.
			w.resumePending(drain, stream)
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
func (w *writer) resumePending(ctx context.Context, stream string) {
	for after := "0"; ctx.Err() == nil; {
		last, n := w.read(ctx, stream, after, -1)
		if n == 0 {
			return
		}
		after = last
	}
}

func (w *writer) ensureGroup(ctx context.Context, stream string) {
	// "0": events added before the group existed are consumed too.
	err := w.rdb.XGroupCreateMkStream(ctx, stream, w.cfg.Group, "0").Err()
	if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
		w.e.log.WarnContext(ctx, "writer: cannot create consumer group", "stream", stream, "err", err)
	}
}

// consume reads one batch (id ">" for new events, "0" for our pending ones)
// and applies it; it returns how many events it read. block < 0 means do not block.
func (w *writer) consume(ctx context.Context, stream, id string, block time.Duration) int {
	_, n := w.read(ctx, stream, id, block)
	return n
}

// read is consume that also returns the id of the last entry read.
func (w *writer) read(ctx context.Context, stream, id string, block time.Duration) (string, int) {
	if block == 0 {
		block = -1 // go-redis sends BLOCK only for a non-negative duration
	}
	st := w.shards[stream]
	// The epoch is read in the same pipeline, so on the same connection and
	// from the same dataset as the entries (a restart in between breaks the
	// connection and fails both). Block must stay below the client's
	// ReadTimeout, which bounds a pipeline's reply.
	var epoch *redis.StringCmd
	var xread *redis.XStreamSliceCmd
	_, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		epoch = p.Get(ctx, st.epochKey)
		xread = p.XReadGroup(ctx, &redis.XReadGroupArgs{Group: w.cfg.Group, Consumer: w.cfg.Consumer,
			Streams: []string{stream, id}, Count: int64(w.cfg.Batch), Block: block})
		return nil
	})
	res, err := xread.Result()
	if err == nil && epoch.Err() != nil && !errors.Is(epoch.Err(), redis.Nil) {
		err = epoch.Err()
	}
	switch {
	case errors.Is(err, redis.Nil):
		st.readFailures.Store(0)
		return "", 0
	case err != nil && strings.HasPrefix(err.Error(), "NOGROUP"):
		// Redis lost the stream (restarted empty, or older): start again.
		w.ensureGroup(ctx, stream)
		st.resume.Store(true)
		return "", 0
	case err != nil:
		if ctx.Err() == nil {
			// Redis is unreachable, loading or failing over. A read whose
			// reply was lost may have handed us entries: once Redis answers
			// again, our pending list is walked before anything new.
			st.resume.Store(true)
			n := st.readFailures.Add(1)
			if n == 1 || n%20 == 0 {
				w.e.log.WarnContext(ctx, "writer: read failed; retrying", "stream", stream, "failures", n, "err", err)
			}
			sleep(ctx, w.backoff(int(n)))
		}
		return "", 0
	}
	if st.readFailures.Swap(0) > 0 {
		w.e.log.InfoContext(ctx, "writer: reading again", "stream", stream)
	}
	n, last := 0, ""
	for _, s := range res {
		n += len(s.Messages)
		if len(s.Messages) > 0 {
			w.apply(ctx, stream, epoch.Val(), s.Messages)
			last = s.Messages[len(s.Messages)-1].ID
		}
	}
	return last, n
}

// claim takes over events left pending by a consumer that stopped.
func (w *writer) claim(ctx context.Context, stream string) {
	start := "0-0"
	for ctx.Err() == nil {
		var epoch *redis.StringCmd
		var claim *redis.XAutoClaimCmd
		_, err := w.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			epoch = p.Get(ctx, w.shards[stream].epochKey)
			claim = p.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: stream, Group: w.cfg.Group,
				Consumer: w.cfg.Consumer, MinIdle: w.cfg.ClaimIdle, Start: start, Count: int64(w.cfg.Batch)})
			return nil
		})
		msgs, next, err := claim.Result()
		if err == nil && epoch.Err() != nil && !errors.Is(epoch.Err(), redis.Nil) {
			err = epoch.Err()
		}
		if err != nil {
			if !errors.Is(err, redis.Nil) && ctx.Err() == nil {
				w.e.log.WarnContext(ctx, "writer: autoclaim failed", "stream", stream, "err", err)
			}
			return
		}
		if len(msgs) > 0 {
			w.apply(ctx, stream, epoch.Val(), msgs)
		}
		if next == "0-0" || next == "" {
			return
		}
		start = next
	}
}

// apply makes a batch durable and acknowledges it. It parks an event only
// when the event itself is wrong: an entry it cannot read, an event that
// contradicts the store (ApplyEvents' rejected), or one the store refuses
// for its own values (store.FaultEvent), found by halving the batch. Any
// other failure would fail every event alike — the store is read-only,
// down, out of connections or space, a lock wait ran out, or the error is
// one nobody classified — so the batch stays pending and is retried with
// backoff until it passes or ctx ends, however long that takes: the lag
// grows and grabs turn BUSY, as with the store down.
//
// epoch is the shard's dataset epoch the batch was read under ("" when the
// key was missing: no guard). A batch whose epoch Redis has moved past is
// neither applied, parked nor acknowledged: it is read again from the
// current dataset, which has it still or lost it (see store.EpochGuard).
func (w *writer) apply(ctx context.Context, stream, epoch string, msgs []redis.XMessage) {
	events := make([]event.Event, 0, len(msgs))
	kept := make([]redis.XMessage, 0, len(msgs))
	for _, m := range msgs {
		ev, err := lua.ReadEvent(m.Values)
		if err != nil {
			w.deadLetter(ctx, stream, m, err)
			continue
		}
		events = append(events, ev)
		kept = append(kept, m)
	}
	if len(kept) > 0 {
		w.applyEvents(ctx, stream, epoch, kept, events)
	}
}

// retryLogEvery is how often a batch that keeps failing is logged again.
const retryLogEvery = 10 * time.Second

// applyEvents is apply for decoded events; msgs[i] carries events[i].
func (w *writer) applyEvents(ctx context.Context, stream, epoch string, msgs []redis.XMessage, events []event.Event) {
	var failingSince, logged time.Time
	for attempt := 1; ; attempt++ {
		rejected, err := w.tryApply(ctx, stream, epoch, events)
		if errors.Is(err, store.ErrSuperseded) {
			w.shards[stream].resume.Store(true)
			w.e.log.WarnContext(ctx, "writer: batch read from a Redis dataset that is no longer current; reading again",
				"stream", stream, "events", len(msgs), "first", msgs[0].ID, "last", msgs[len(msgs)-1].ID)
			return
		}
		if err == nil {
			if attempt > 1 {
				w.e.log.InfoContext(ctx, "writer: batch applied after the store refused it", "stream", stream,
					"events", len(msgs), "attempts", attempt, "failing_for", time.Since(failingSince))
			}
			w.applied(ctx, stream, msgs, events, rejected)
			return
		}
		if ctx.Err() != nil {
			return // stopped mid-retry: the events stay pending and are redelivered
		}
		fault := store.Classify(err)
		if fault == store.FaultEvent {
			if len(msgs) == 1 {
				w.deadLetter(ctx, stream, msgs[0], err)
				return
			}
			// Some event of the batch is wrong: each half on its own, so
			// that only the culprit is parked. Halves keep stream order.
			w.e.log.WarnContext(ctx, "writer: the store refused an event of the batch; halving it to find which",
				"stream", stream, "events", len(msgs), "first", msgs[0].ID, "last", msgs[len(msgs)-1].ID, "err", err)
			half := len(msgs) / 2
			w.applyEvents(ctx, stream, epoch, msgs[:half], events[:half])
			if ctx.Err() == nil {
				w.applyEvents(ctx, stream, epoch, msgs[half:], events[half:])
			}
			return
		}
		if attempt == 1 {
			failingSince = time.Now()
		}
		if attempt == 1 || time.Since(logged) >= retryLogEvery {
			logged = time.Now()
			args := []any{"stream", stream, "events", len(msgs), "first", msgs[0].ID, "last", msgs[len(msgs)-1].ID,
				"attempt", attempt, "failing_for", time.Since(failingSince).Round(time.Millisecond), "err", err}
			if fault == store.FaultStore {
				w.e.log.WarnContext(ctx, "writer: store unavailable; the batch stays pending and is retried", args...)
			} else {
				// Not known to be the store's, nor the event's: retried like
				// the store's, so nothing answered is lost. If one event is
				// poison, it is in this batch, and the lag says so.
				w.e.log.ErrorContext(ctx, "writer: apply failed with an unclassified error; the batch stays pending and is retried; needs attention", args...)
			}
		}
		sleep(ctx, w.backoff(attempt))
	}
}

// tryApply is one attempt at a batch, bounded by ApplyTimeout.
func (w *writer) tryApply(ctx context.Context, stream, epoch string, events []event.Event) ([]int, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.ApplyTimeout)
	defer cancel()
	key := w.shards[stream].epochKey
	g := &store.EpochGuard{Key: key, Epoch: epoch, Current: func(ctx context.Context) (string, error) {
		return w.rdb.Get(ctx, key).Result()
	}}
	return w.e.db.ApplyEventsUnder(ctx, g, events)
}

// applied parks a committed batch's contradictions and acknowledges the rest.
func (w *writer) applied(ctx context.Context, stream string, msgs []redis.XMessage, events []event.Event, rejected []int) {
	// A rejected event that could not be parked stays pending (it is
	// redelivered and parked later), so it must not be acked with the rest.
	unparked := map[int]bool{}
	for _, i := range rejected {
		if !w.deadLetter(ctx, stream, msgs[i], store.Contradiction(events[i])) {
			unparked[i] = true
		}
	}
	done := msgs
	if len(unparked) > 0 {
		done = make([]redis.XMessage, 0, len(msgs))
		for i, m := range msgs {
			if !unparked[i] {
				done = append(done, m)
			}
		}
	}
	w.ack(ctx, stream, done)
	w.e.m.batchSize.Observe(float64(len(msgs)))
	w.e.m.applied.Add(float64(len(msgs) - len(rejected)))
}

func (w *writer) ack(ctx context.Context, stream string, msgs []redis.XMessage) {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	// An ack lost here only means a harmless redelivery: the shard's loop
	// walks its pending list again before reading on.
	if err := w.rdb.XAck(ctx, stream, w.cfg.Group, ids...).Err(); err != nil {
		w.shards[stream].resume.Store(true)
		w.e.log.WarnContext(ctx, "writer: ack failed; events will be redelivered", "stream", stream, "err", err)
	}
}

// deadLetter parks an event for a person and acknowledges it. It reports
// whether the event was parked; if not, it stays pending.
func (w *writer) deadLetter(ctx context.Context, stream string, m redis.XMessage, cause error) bool {
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
func (w *writer) monitor(ctx context.Context) {
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

func (w *writer) measureAndTrim(ctx context.Context) (time.Duration, error) {
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
func (w *writer) oldestUnacked(ctx context.Context, stream string) (string, error) {
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

// backoff is the wait after the attempt-th failure in a row: RetryMin
// doubling up to RetryMax, jittered to between half and all of it, so the
// shards do not retry in step.
func (w *writer) backoff(attempt int) time.Duration {
	d := w.cfg.RetryMax
	if attempt < 30 {
		d = min(w.cfg.RetryMin<<max(attempt-1, 0), w.cfg.RetryMax)
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
