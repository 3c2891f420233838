package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/engine/outbox"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/store"
)

// eventsStream is the stream of a bench's events, on its own NATS server.
const eventsStream = "GRABBENCH"

// benchEvents are a run's events for the rest of the company: the store's
// outbox on, relayed to JetStream on an in-process NATS server.
type benchEvents struct {
	db   *store.DB
	js   jetstream.JetStream
	stop func()
}

// startEvents runs an in-process NATS server with JetStream in a temporary
// directory, its stream, and a relay of db's outbox (turned on), until stop,
// which removes the directory.
func startEvents(ctx context.Context, db *store.DB, log *slog.Logger) (ev *benchEvents, err error) {
	dir, err := os.MkdirTemp("", "grabbench-nats")
	if err != nil {
		return nil, err
	}
	var cl closers
	cl.add(func() { os.RemoveAll(dir) })
	defer func() {
		if err != nil {
			cl.close()
		}
	}()
	url, stopNATS, err := outbox.StartEmbedded(dir)
	if err != nil {
		return nil, err
	}
	cl.add(stopNATS)
	nc, err := nats.Connect(url, nats.Name("grabbench"))
	if err != nil {
		return nil, err
	}
	cl.add(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := outbox.EnsureStream(ctx, js, eventsStream, time.Hour, 2*time.Minute); err != nil {
		return nil, err
	}
	db.SetOutbox(true)
	cl.add(func() { db.SetOutbox(false) })
	relay := outbox.New(db, js, outbox.Config{Stream: eventsStream}, log, nil)
	relayCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := relay.Run(relayCtx); err != nil {
			log.Error("event relay stopped", "err", err)
		}
	}()
	cl.add(func() { cancel(); <-done })
	return &benchEvents{db: db, js: js, stop: cl.close}, nil
}

// closers are what startEvents opened, closed last first.
type closers []func()

func (c *closers) add(f func()) { *c = append(*c, f) }

func (c closers) close() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// sampleOutboxAge records the age of the outbox's oldest unpublished row,
// in ms (0 when it is empty), every 10 ms until stopped.
func (ev *benchEvents) sampleOutboxAge(ctx context.Context, h *hdrhistogram.Histogram) (stop func()) {
	return every(10*time.Millisecond, func() {
		_, oldest, err := ev.db.OutboxStats(ctx)
		if err != nil {
			return
		}
		var age int64
		if !oldest.IsZero() {
			age = max(0, time.Since(oldest).Milliseconds())
		}
		h.RecordValue(age)
	})
}

// waitPublished waits until the outbox has no unpublished row, at most timeout.
func (ev *benchEvents) waitPublished(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pending, _, err := ev.db.OutboxStats(ctx)
		if err != nil {
			return err
		}
		if pending == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d events still unpublished after %v", pending, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// streamed reads every message of the stream, in its order.
func (ev *benchEvents) streamed(ctx context.Context) ([]event.Message, error) {
	s, err := ev.js.Stream(ctx, eventsStream)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	total := int(info.State.Msgs)
	if total == 0 {
		return nil, nil
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	out := make([]event.Message, 0, total)
	for len(out) < total {
		batch, err := c.Fetch(min(1000, total-len(out)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		n := 0
		for raw := range batch.Messages() {
			var m event.Message
			if err := json.Unmarshal(raw.Data(), &m); err != nil {
				return nil, fmt.Errorf("message on %s is not an event: %w", raw.Subject(), err)
			}
			out = append(out, m)
			n++
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if n == 0 {
			return nil, fmt.Errorf("stream %s: read %d of %d messages", eventsStream, len(out), total)
		}
	}
	return out, nil
}

// auditEvents waits until the outbox is published, then checks the stream
// against MySQL: every grabbed share has exactly one packet.grabbed, with
// its user and amount, and every credited share exactly one credit
// (packet.grabbed with credited, or packet.credited); no grab event names
// a share MySQL does not hold.
func (ev *benchEvents) auditEvents(ctx context.Context, timeout time.Duration, a *auditor) error {
	if err := ev.waitPublished(ctx, timeout); err != nil {
		a.add("events not published", "%v", err)
		return nil
	}
	msgs, err := ev.streamed(ctx)
	if err != nil {
		return err
	}
	var shares []auditShare
	if err := ev.db.SQL().SelectContext(ctx, &shares, `SELECT packet_id, seq, amount, user_id, credited
		FROM packet_share WHERE user_id IS NOT NULL`); err != nil {
		return err
	}
	return compareEvents(shares, msgs, a)
}

// compareEvents checks msgs against the owned shares as auditEvents says.
func compareEvents(shares []auditShare, msgs []event.Message, a *auditor) error {
	grabs, credits, err := grabEvents(msgs)
	if err != nil {
		return err
	}
	for _, s := range shares {
		ref := [2]int64{s.PacketID, int64(s.Seq)}
		gs := grabs[ref]
		switch {
		case len(gs) != 1:
			a.add("grab not streamed once", "share %d:%d of user %d is in the stream %d times", s.PacketID, s.Seq, s.UserID, len(gs))
		case gs[0].UserID != s.UserID || gs[0].Amount != event.Yuan(int64(s.Amount)):
			a.add("grab streamed wrong", "share %d:%d is user %d's %d fen; the stream says %+v", s.PacketID, s.Seq, s.UserID, s.Amount, gs[0])
		}
		if n := credits[ref]; s.Credited && n != 1 {
			a.add("credit not streamed once", "share %d:%d of user %d is credited; the stream credits it %d times", s.PacketID, s.Seq, s.UserID, n)
		}
		delete(grabs, ref)
	}
	for ref, gs := range grabs {
		a.add("grab streamed without a share", "the stream has %d grabs of share %d:%d, which has no owner in MySQL", len(gs), ref[0], ref[1])
	}
	return nil
}

// grabEvents are the packet.grabbed payloads of msgs by share, and how many
// times each share is credited.
func grabEvents(msgs []event.Message) (map[[2]int64][]event.PacketGrabbed, map[[2]int64]int, error) {
	grabs, credits := map[[2]int64][]event.PacketGrabbed{}, map[[2]int64]int{}
	for _, m := range msgs {
		switch m.Kind {
		case event.MsgPacketGrabbed:
			var p event.PacketGrabbed
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				return nil, nil, fmt.Errorf("event %s: %w", m.ID, err)
			}
			ref := [2]int64{p.PacketID, int64(p.Seq)}
			grabs[ref] = append(grabs[ref], p)
			if p.Credited {
				credits[ref]++
			}
		case event.MsgPacketCredited:
			var p event.PacketCredited
			if err := json.Unmarshal(m.Payload, &p); err != nil {
				return nil, nil, fmt.Errorf("event %s: %w", m.ID, err)
			}
			credits[[2]int64{p.PacketID, int64(p.Seq)}]++
		}
	}
	return grabs, credits, nil
}

// errEventsEngines is Run's answer when events are on for a run that
// writes without the outbox.
var errEventsEngines = errors.New("bench: events need the engine in-process: not the mysql-lock engine (it writes no events) nor an external grabd")
