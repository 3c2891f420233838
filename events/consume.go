package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/event"
)

// DefaultStream is the JetStream stream grab publishes to unless the
// deployment names another.
const DefaultStream = "GRAB"

// ConsumerConfig says which events a durable consumer reads and how it
// retries. Zero fields take the defaults named on each.
type ConsumerConfig struct {
	// Stream is the stream's name (DefaultStream).
	Stream string
	// Durable names the consumer; required. The server keeps its position
	// under this name, so a restarted process resumes where it stopped, and
	// processes sharing a name share the work. A new name starts at the
	// stream's first event.
	Durable string
	// Filters are the subjects read, e.g. "grab.packet.>" or
	// "grab.stock.changed.>" ("grab.>": every event). More than one needs
	// a NATS server 2.10 or later.
	Filters []string
	// AckWait is how long the server waits for an event's ack before it
	// delivers the event again (30 s); a handler should finish well within
	// it.
	AckWait time.Duration
	// MaxDeliver bounds the deliveries of one event (10); after the last
	// failed one the event is terminated and logged, never delivered again.
	// Negative: unbounded.
	MaxDeliver int
	// Retry is the delay before an event whose handler failed is delivered
	// again, by failed delivery: Retry[0] after the first, the last entry
	// after every later one (1 s, 5 s, 30 s, 1 min).
	Retry []time.Duration
	// Batch is how many events are buffered ahead of the handler (100).
	Batch int
	// Seen drops events already handled (NewMemorySeen(DefaultSeenSize)).
	Seen Seen
	// Log receives poison messages, retries and give-ups (slog.Default()).
	Log *slog.Logger
}

// Defaults of ConsumerConfig.
const (
	DefaultAckWait    = 30 * time.Second
	DefaultMaxDeliver = 10
	DefaultBatch      = 100
)

// fetchPause is the wait after an error fetching from the stream.
const fetchPause = time.Second

// DefaultRetry is ConsumerConfig.Retry's default.
var DefaultRetry = []time.Duration{time.Second, 5 * time.Second, 30 * time.Second, time.Minute}

// withDefaults fills the zero fields, or says which field is wrong.
func (c ConsumerConfig) withDefaults() (ConsumerConfig, error) {
	if c.Durable == "" {
		return c, errors.New("events: ConsumerConfig.Durable is required")
	}
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if len(c.Filters) == 0 {
		c.Filters = []string{event.SubjectPrefix + ".>"}
	}
	if c.AckWait <= 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxDeliver == 0 {
		c.MaxDeliver = DefaultMaxDeliver
	} else if c.MaxDeliver < 0 {
		c.MaxDeliver = -1
	}
	if len(c.Retry) == 0 {
		c.Retry = DefaultRetry
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.Seen == nil {
		c.Seen = NewMemorySeen(0)
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c, nil
}

// jetstream is the server's consumer configuration: durable, pull, explicit
// acks, every event from the stream's start.
func (c ConsumerConfig) jetstream() jetstream.ConsumerConfig {
	jc := jetstream.ConsumerConfig{
		Durable:       c.Durable,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       c.AckWait,
		MaxDeliver:    c.MaxDeliver,
		MaxAckPending: max(1000, 2*c.Batch),
	}
	if len(c.Filters) == 1 {
		jc.FilterSubject = c.Filters[0]
	} else {
		jc.FilterSubjects = c.Filters
	}
	return jc
}

// Handler acts on one event. It returns nil once the event's effect is
// durable; an error has the event delivered again after a delay.
type Handler func(ctx context.Context, m event.Message) error

// Consume creates or updates the durable consumer cfg names and hands each
// event to handle, one at a time in the order delivered, until ctx ends (then
// it returns nil). An event is acked after handle succeeds and its id is
// marked in cfg.Seen; an event whose id is seen already is acked without
// handle; a failed handle naks it with cfg.Retry's delay, so events of one
// aggregate may then arrive out of order. A body that is not an event is
// acked and logged. It returns an error when the consumer cannot be created
// or is deleted, or the connection is closed.
func Consume(ctx context.Context, js jetstream.JetStream, cfg ConsumerConfig, handle Handler) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, cfg.Stream, cfg.jetstream())
	if err != nil {
		return fmt.Errorf("events: consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(cfg.Batch))
	if err != nil {
		return fmt.Errorf("events: consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	defer it.Stop()
	defer context.AfterFunc(ctx, it.Stop)()
	c := consumer{cfg: cfg, handle: handle}
	for {
		msg, err := it.Next()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if fatal(js, err) {
				return fmt.Errorf("events: consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
			}
			cfg.Log.Warn("events: fetching from the stream failed; retrying", "consumer", cfg.Durable, "err", err)
			select { // the iterator recovers by itself; do not spin on its errors meanwhile
			case <-ctx.Done():
				return nil
			case <-time.After(fetchPause):
			}
			continue
		}
		c.deliver(ctx, msg)
	}
}

// fatal reports whether err from the message iterator ends Consume: the
// iterator or the connection is closed, or the consumer is gone. Missed
// heartbeats and timeouts are not: the iterator pulls again by itself.
func fatal(js jetstream.JetStream, err error) bool {
	return errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrConsumerNotFound) || js.Conn().IsClosed()
}

// consumer is one running Consume.
type consumer struct {
	cfg    ConsumerConfig
	handle Handler
}

// deliver handles one message and acks, naks or terminates it.
func (c *consumer) deliver(ctx context.Context, msg jetstream.Msg) {
	m, err := decode(msg.Data())
	if err != nil {
		c.cfg.Log.Error("events: poison message acked and dropped", "consumer", c.cfg.Durable,
			"subject", msg.Subject(), "msg_id", msg.Headers().Get(jetstream.MsgIDHeader), "err", err)
		c.ack(msg, "")
		return
	}
	seen, err := c.cfg.Seen.Seen(ctx, m.ID)
	if err != nil {
		c.retry(ctx, msg, m, fmt.Errorf("seen: %w", err))
		return
	}
	if seen {
		c.ack(msg, m.ID)
		return
	}
	if err := c.handle(ctx, m); err != nil {
		c.retry(ctx, msg, m, err)
		return
	}
	if err := c.cfg.Seen.Mark(ctx, m.ID); err != nil {
		// The effect is done: acking beats delivering it again.
		c.cfg.Log.Warn("events: marking an event seen failed; acked anyway", "consumer", c.cfg.Durable, "id", m.ID, "err", err)
	}
	c.ack(msg, m.ID)
}

// decode reads an event.Message from body; a body without an id or kind is
// not one.
func decode(body []byte) (event.Message, error) {
	var m event.Message
	if err := json.Unmarshal(body, &m); err != nil {
		return m, err
	}
	if m.ID == "" || m.Kind == "" {
		return m, errors.New("no id or kind")
	}
	return m, nil
}

// ack acks msg; a lost ack only delivers it again, which Seen drops.
func (c *consumer) ack(msg jetstream.Msg, id string) {
	if err := msg.Ack(); err != nil {
		c.cfg.Log.Warn("events: ack failed; the event will be delivered again", "consumer", c.cfg.Durable, "id", id, "err", err)
	}
}

// retry naks msg after its handler failed with err, with the delay of its
// delivery count, or terminates it after its last allowed delivery. When ctx
// has ended the nak has no delay, so another process takes the event now.
func (c *consumer) retry(ctx context.Context, msg jetstream.Msg, m event.Message, err error) {
	n := uint64(1)
	if md, mdErr := msg.Metadata(); mdErr == nil {
		n = md.NumDelivered
	}
	log := c.cfg.Log.With("consumer", c.cfg.Durable, "id", m.ID, "kind", m.Kind, "deliveries", n, "err", err)
	if c.cfg.MaxDeliver > 0 && n >= uint64(c.cfg.MaxDeliver) {
		log.Error("events: handler failed on the last delivery; event dropped")
		if err := msg.Term(); err != nil {
			log.Warn("events: term failed", "term_err", err)
		}
		return
	}
	delay := c.cfg.Retry[min(max(int(n)-1, 0), len(c.cfg.Retry)-1)]
	if ctx.Err() != nil {
		delay = 0
	}
	log.Warn("events: handler failed; event delivered again later", "delay", delay)
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn("events: nak failed; the event is delivered again after the ack wait", "nak_err", err)
	}
}
