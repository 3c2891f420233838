// Package outbox relays the transactional outbox to NATS JetStream: the
// store writes each event.Message in the same transaction as the change it
// reports, and the Relay publishes the unpublished ones, marks them
// published once JetStream has acknowledged them, and purges them after a
// retention.
//
// Delivery is at least once: a relay that stops between the publish and the
// mark publishes again, and the stream's duplicate window, keyed by the
// message id (Nats-Msg-Id), keeps one copy. Several relays at once are safe:
// the store hands each unpublished row to one of them at a time.
package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/event"
)

// Store is the outbox's side of the store.
type Store interface {
	// RelayOutbox claims up to limit unpublished messages (rows another
	// relay holds are skipped), oldest first, and hands them to publish in
	// that order; publish answers how many leading messages it published,
	// and those, even when publish fails, are marked published in the
	// same transaction. It answers the number marked and publish's error.
	RelayOutbox(ctx context.Context, limit int, publish func(context.Context, []event.Message) (done int, err error)) (int, error)
	// PurgeOutbox deletes messages published before before and answers how many.
	PurgeOutbox(ctx context.Context, before time.Time) (int64, error)
	// OutboxStats answers how many messages are unpublished and when the
	// oldest of them was written (zero when none is).
	OutboxStats(ctx context.Context) (pending int64, oldest time.Time, err error)
}

// Config tunes a Relay; zero fields take DefaultConfig's values.
type Config struct {
	// Stream is the JetStream stream the messages must land in; a publish
	// another stream would take fails. Empty: any stream.
	Stream string
	// SubjectPrefix replaces event.SubjectPrefix in every subject. Empty:
	// event.SubjectPrefix.
	SubjectPrefix string
	// Batch is how many messages one pass claims and publishes before it
	// waits for their acks.
	Batch int
	// Interval is how long the relay waits when the outbox is empty.
	Interval time.Duration
	// AckTimeout bounds the wait for one batch's acks.
	AckTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failed pass; it
	// doubles from MinBackoff at each failure in a row, jittered.
	MinBackoff, MaxBackoff time.Duration
	// Retention is how long published messages are kept before the purge.
	Retention time.Duration
	// PurgeInterval is how often published messages are purged.
	PurgeInterval time.Duration
	// StatsInterval is how often the outbox's size and age are read.
	StatsInterval time.Duration
	// StuckAfter is the age of the oldest unpublished message past which
	// Stuck reports the relay stuck.
	StuckAfter time.Duration
}

// DefaultConfig is the relay's configuration for production.
func DefaultConfig() Config {
	return Config{Batch: 256, Interval: 50 * time.Millisecond, AckTimeout: 5 * time.Second,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second, Retention: 7 * 24 * time.Hour,
		PurgeInterval: time.Hour, StatsInterval: time.Second, StuckAfter: time.Minute}
}

// withDefaults is c with its zero fields from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	or := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = event.SubjectPrefix
	}
	if c.Batch <= 0 {
		c.Batch = d.Batch
	}
	or(&c.Interval, d.Interval)
	or(&c.AckTimeout, d.AckTimeout)
	or(&c.MinBackoff, d.MinBackoff)
	or(&c.MaxBackoff, d.MaxBackoff)
	or(&c.Retention, d.Retention)
	or(&c.PurgeInterval, d.PurgeInterval)
	or(&c.StatsInterval, d.StatsInterval)
	or(&c.StuckAfter, d.StuckAfter)
	return c
}

// Relay moves the outbox to JetStream (Run) and reports its state.
type Relay struct {
	st  Store
	js  jetstream.JetStream
	cfg Config
	log *slog.Logger
	m   relayMetrics

	mu      sync.Mutex
	pending int64
	oldest  time.Time // of the oldest unpublished message; zero: none

	// afterPublish, when set, runs once a batch's acks are all in, before
	// the store marks the batch: where a crash test kills the process.
	afterPublish func()
}

type relayMetrics struct {
	pending   prometheus.Gauge
	published prometheus.Counter
	failures  prometheus.Counter
}

// New returns a relay of st's outbox to js; its metrics are registered on
// reg (nil: not registered). js should time out async publishes
// (jetstream.WithPublishAsyncTimeout, e.g. Config.AckTimeout): the relay
// stops waiting for an ack after AckTimeout, but js keeps an unanswered
// publish pending, and too many pending stall later publishes.
func New(st Store, js jetstream.JetStream, cfg Config, log *slog.Logger, reg prometheus.Registerer) *Relay {
	r := &Relay{st: st, js: js, cfg: cfg.withDefaults(), log: log}
	r.m = relayMetrics{
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "grab_outbox_pending",
			Help: "Outbox messages not yet published to NATS."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "grab_outbox_published_total",
			Help: "Outbox messages published to NATS and acknowledged."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "grab_outbox_publish_failures_total",
			Help: "Relay passes that failed to publish (NATS or the store down), each followed by a backoff."}),
	}
	if reg != nil {
		age := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "grab_outbox_age_seconds",
			Help: "Age of the oldest unpublished outbox message, in seconds; 0 when none is."},
			func() float64 { return r.Age().Seconds() })
		reg.MustRegister(r.m.pending, r.m.published, r.m.failures, age)
	}
	return r
}

// Age is how long the oldest unpublished message has waited, as last read
// (zero when none was).
func (r *Relay) Age() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.oldest.IsZero() {
		return 0
	}
	return max(0, time.Since(r.oldest))
}

// Stuck answers an error when the oldest unpublished message is older than
// Config.StuckAfter (NATS down, or no relay getting through), nil
// otherwise; /readyz reports it.
func (r *Relay) Stuck() error {
	if age := r.Age(); age > r.cfg.StuckAfter {
		r.mu.Lock()
		n := r.pending
		r.mu.Unlock()
		return fmt.Errorf("outbox: relay stuck: oldest of %d unpublished messages waits for %v", n, age.Round(time.Second))
	}
	return nil
}

// Run relays until ctx is done, then answers nil: it publishes batch after
// batch while the outbox has messages, polls it every Config.Interval when
// it is empty, backs off after a failure, reads the outbox's size and age
// and purges old published messages on their intervals.
func (r *Relay) Run(ctx context.Context) error {
	var fails int
	var lastStats, lastPurge time.Time
	for ctx.Err() == nil {
		n, err := r.st.RelayOutbox(ctx, r.cfg.Batch, r.publish)
		r.m.published.Add(float64(n))
		idle := err == nil && n < r.cfg.Batch
		if time.Since(lastStats) >= r.cfg.StatsInterval || idle || err != nil {
			r.readStats(ctx)
			lastStats = time.Now()
		}
		if time.Since(lastPurge) >= r.cfg.PurgeInterval {
			r.purge(ctx)
			lastPurge = time.Now()
		}
		wait := time.Duration(0)
		switch {
		case err != nil && ctx.Err() == nil:
			r.m.failures.Inc()
			wait = r.backoff(fails)
			fails++
			r.log.Warn("outbox: relay pass failed; backing off", "err", err, "published", n, "wait", wait)
		case err != nil:
		case idle:
			fails, wait = 0, r.cfg.Interval
		default:
			fails = 0
		}
		sleep(ctx, wait)
	}
	return nil
}

// publish publishes msgs asynchronously, in order, each under its id, and
// waits for their acks (up to Config.AckTimeout); it answers how many
// leading messages JetStream stored and the first failure, so nothing past
// a failure is marked and the order per aggregate holds.
func (r *Relay) publish(ctx context.Context, msgs []event.Message) (int, error) {
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	var sendErr error
	for _, m := range msgs {
		f, err := r.publishAsync(m)
		if err != nil {
			sendErr = err
			break
		}
		futures = append(futures, f)
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.AckTimeout)
	defer cancel()
	for i, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return i, fmt.Errorf("outbox: publishing %s: %w", msgs[i].ID, err)
		case <-ctx.Done():
			return i, fmt.Errorf("outbox: waiting for the ack of %s: %w", msgs[i].ID, ctx.Err())
		}
	}
	if r.afterPublish != nil {
		r.afterPublish()
	}
	if sendErr != nil {
		return len(futures), fmt.Errorf("outbox: publishing %s: %w", msgs[len(futures)].ID, sendErr)
	}
	return len(futures), nil
}

// publishAsync sends m's JSON to its subject under m.ID (Nats-Msg-Id).
func (r *Relay) publishAsync(m event.Message) (jetstream.PubAckFuture, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	opts := []jetstream.PublishOpt{jetstream.WithMsgID(m.ID)}
	if r.cfg.Stream != "" {
		opts = append(opts, jetstream.WithExpectStream(r.cfg.Stream))
	}
	return r.js.PublishAsync(r.subject(m), body, opts...)
}

// subject is m's subject under Config.SubjectPrefix.
func (r *Relay) subject(m event.Message) string {
	return r.cfg.SubjectPrefix + m.Subject()[len(event.SubjectPrefix):]
}

// readStats refreshes the outbox's size and age; a failure keeps the last ones.
func (r *Relay) readStats(ctx context.Context) {
	n, oldest, err := r.st.OutboxStats(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("outbox: reading its size", "err", err)
		}
		return
	}
	r.mu.Lock()
	r.pending, r.oldest = n, oldest
	r.mu.Unlock()
	r.m.pending.Set(float64(n))
}

// purge deletes the messages published more than Config.Retention ago.
func (r *Relay) purge(ctx context.Context) {
	n, err := r.st.PurgeOutbox(ctx, time.Now().Add(-r.cfg.Retention))
	switch {
	case err != nil && !errors.Is(err, context.Canceled):
		r.log.Warn("outbox: purging published messages", "err", err)
	case n > 0:
		r.log.Info("outbox: purged published messages", "count", n)
	}
}

// backoff is the wait after the fails+1-th failure in a row: MinBackoff
// doubled fails times, at most MaxBackoff, then drawn in [d/2, d) so that
// relays do not retry in step.
func (r *Relay) backoff(fails int) time.Duration {
	d := r.cfg.MaxBackoff
	if fails < 30 {
		d = min(d, r.cfg.MinBackoff<<fails)
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
