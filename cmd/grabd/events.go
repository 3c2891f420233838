package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/engine/outbox"
	"github.com/grab-engine/grab/events"
	"github.com/grab-engine/grab/store"
)

// eventLoops are grabd's loops on the events' stream: the outbox's relay
// and the webhooks (nil: none), both on one JetStream connection.
type eventLoops struct {
	relay    *outbox.Relay
	webhooks *events.Webhooks
	js       jetstream.JetStream
}

// startEvents connects to NATS (GRAB_NATS_URL, or in the embedded mode
// without one an in-process server under GRAB_DATA_DIR/nats), sets up the
// events' stream, turns the store's outbox on and answers its relay and the
// webhooks (when GRAB_WEBHOOK_URL is set), not yet running. Without NATS it
// answers nil: no outbox, no relay, no webhooks (ParseConfig refuses a
// webhook URL then).
func startEvents(ctx context.Context, cfg Config, db *store.DB, log *slog.Logger, reg prometheus.Registerer, cl *closers) (*eventLoops, error) {
	url := cfg.NATSURL
	if url == "" && !cfg.Embedded() {
		log.Warn("GRAB_NATS_URL is not set: no events are written for the rest of the company")
		return nil, nil
	}
	if url == "" {
		u, stop, err := outbox.StartEmbedded(filepath.Join(cfg.DataDir, "nats"))
		if err != nil {
			return nil, err
		}
		cl.add(stop)
		url = u
		log.Warn("embedded mode: in-process NATS with JetStream; NOT FOR PRODUCTION", "url", url, "stream", cfg.NATSStream)
	}
	rcfg := outbox.DefaultConfig()
	rcfg.Stream, rcfg.Retention = cfg.NATSStream, cfg.EventsRetention
	nc, err := nats.Connect(url, nats.Name("grabd"), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", url, err)
	}
	cl.add(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(rcfg.AckTimeout))
	if err != nil {
		return nil, err
	}
	if err := outbox.EnsureStream(ctx, js, cfg.NATSStream, cfg.EventsRetention, cfg.EventsDuplicates); err != nil {
		return nil, err
	}
	db.SetOutbox(true)
	log.Info("events relayed to NATS JetStream", "url", url, "stream", cfg.NATSStream,
		"retention", cfg.EventsRetention.String(), "duplicates", cfg.EventsDuplicates.String())
	ev := &eventLoops{relay: outbox.New(db, js, rcfg, log, reg), js: js}
	if cfg.Webhook.Enabled() {
		if ev.webhooks, err = events.NewWebhooks(cfg.Webhook, log, reg); err != nil {
			return nil, err
		}
		log.Info("events posted to a webhook", "url", cfg.Webhook.URL, "kinds", cfg.Webhook.Kinds)
	}
	return ev, nil
}

// startEventLoops runs ev's relay and webhooks (none when ev is nil) until
// the returned stop is called, which waits for both.
func startEventLoops(ctx context.Context, ev *eventLoops, log *slog.Logger) (stop func()) {
	if ev == nil {
		return func() {}
	}
	stopRelay := goRun(ctx, "event relay", ev.relay.Run, log)
	stopHooks := func() {}
	if ev.webhooks != nil {
		stopHooks = goRun(ctx, "webhooks", func(ctx context.Context) error { return ev.webhooks.Run(ctx, ev.js) }, log)
	}
	return func() { stopHooks(); stopRelay() }
}
