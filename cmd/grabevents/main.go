// Command grabevents prints grab's events as they arrive on NATS JetStream,
// one JSON line per event (an event.Message: id, kind, aggregate, at,
// payload), through a durable consumer: an example of package events, and a
// way to watch what grab tells the rest of the company.
//
//	grabevents -filter 'grab.packet.>,grab.stock.changed.>'
//
// Each event is printed once per durable name: a restart under the same name
// resumes after the last event printed (give another -durable to read the
// stream from its start again). Settings come from flags, else from the
// environment (GRAB_NATS_URL, GRAB_NATS_STREAM, GRABEVENTS_DURABLE,
// GRABEVENTS_FILTER). SIGINT or SIGTERM stops it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Config is grabevents' configuration.
type Config struct {
	// URL is the NATS server (GRAB_NATS_URL).
	URL string
	// Stream is the stream grab publishes to (GRAB_NATS_STREAM).
	Stream string
	// Durable names the consumer (GRABEVENTS_DURABLE).
	Durable string
	// Filters are the subjects printed (GRABEVENTS_FILTER, a comma list).
	Filters []string
}

// ParseConfig reads the environment through getenv, then flags from args.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("grabevents", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	url := fs.String("url", env("GRAB_NATS_URL", nats.DefaultURL), "NATS server URL (GRAB_NATS_URL)")
	stream := fs.String("stream", env("GRAB_NATS_STREAM", events.DefaultStream), "JetStream stream grab publishes to (GRAB_NATS_STREAM)")
	durable := fs.String("durable", env("GRABEVENTS_DURABLE", "grabevents"), "durable consumer name; a restart resumes after the last event printed (GRABEVENTS_DURABLE)")
	filter := fs.String("filter", env("GRABEVENTS_FILTER", event.SubjectPrefix+".>"), "comma list of subjects, e.g. grab.packet.>,grab.stock.changed.> (GRABEVENTS_FILTER)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c := Config{URL: *url, Stream: *stream, Durable: *durable}
	for f := range strings.SplitSeq(*filter, ",") {
		if f = strings.TrimSpace(f); f != "" {
			c.Filters = append(c.Filters, f)
		}
	}
	if len(c.Filters) == 0 || c.Durable == "" || c.Stream == "" {
		return Config{}, errors.New("the stream, the durable name and at least one filter are required")
	}
	return c, nil
}

// Main parses the configuration and prints events to stdout until ctx ends.
// It returns the exit code: 2 for a bad configuration, 1 when NATS or the
// consumer fails, 0 after a clean stop.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := ParseConfig(args, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "grabevents: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := Run(ctx, cfg, log, stdout); err != nil {
		log.Error("grabevents failed", "err", err)
		return 1
	}
	return 0
}

// Run connects to NATS and writes each event to out as one JSON line until
// ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger, out io.Writer) error {
	nc, err := nats.Connect(cfg.URL, nats.Name("grabevents"))
	if err != nil {
		return fmt.Errorf("nats %s: %w", cfg.URL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	log.Info("grabevents reading", "url", cfg.URL, "stream", cfg.Stream, "durable", cfg.Durable, "filters", cfg.Filters)
	enc := json.NewEncoder(out) // Consume hands one event at a time
	return events.Consume(ctx, js, events.ConsumerConfig{
		Stream: cfg.Stream, Durable: cfg.Durable, Filters: cfg.Filters, Log: log,
	}, func(_ context.Context, m event.Message) error {
		return enc.Encode(m)
	})
}
