package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events/eventstest"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(nil, envOf(nil))
	if err != nil || c.URL != nats.DefaultURL || c.Stream != "GRAB" || c.Durable != "grabevents" || !slices.Equal(c.Filters, []string{"grab.>"}) {
		t.Errorf("defaults %+v, %v", c, err)
	}
	c, err = ParseConfig([]string{"-durable", "wms", "-filter", "grab.stock.changed.>, grab.packet.>"},
		envOf(map[string]string{"GRAB_NATS_URL": "nats://n:4222", "GRAB_NATS_STREAM": "EVENTS", "GRABEVENTS_DURABLE": "x"}))
	if err != nil || c.URL != "nats://n:4222" || c.Stream != "EVENTS" || c.Durable != "wms" ||
		!slices.Equal(c.Filters, []string{"grab.stock.changed.>", "grab.packet.>"}) {
		t.Errorf("flags over env %+v, %v", c, err)
	}
	for _, args := range [][]string{{"-filter", " , "}, {"extra"}, {"-nope"}} {
		if _, err := ParseConfig(args, envOf(nil)); err == nil {
			t.Errorf("%q accepted", args)
		}
	}
}

// grabevents prints each event of its filter as one JSON line and exits 0
// when its context ends (as on SIGINT).
func TestMainPrintsEvents(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	want := []event.Message{
		{ID: "grab:1:0", Kind: event.MsgPacketGrabbed, Aggregate: "packet:1", At: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), Payload: json.RawMessage(`{"amount":"3.21"}`)},
		{ID: "stock:42:7", Kind: event.MsgStockChanged, Aggregate: "sku:1:42:420", At: time.Date(2026, 12, 1, 8, 0, 1, 0, time.UTC), Payload: json.RawMessage(`{"op":"deduct"}`)},
	}
	for _, m := range want {
		s.Publish(m)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, w := io.Pipe()
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		c := Main(ctx, []string{"-url", eventstest.URL(), "-stream", s.Name, "-filter", s.Filter("grab.>")}, envOf(nil), w, &stderr)
		w.Close() // a Main that stops early ends the lines
		code <- c
	}()
	lines := bufio.NewScanner(out)
	for i := range want {
		if !lines.Scan() {
			t.Fatalf("line %d: %v; stderr: %s", i, lines.Err(), stderr.String())
		}
		if line, _ := json.Marshal(want[i]); lines.Text() != string(line) {
			t.Errorf("line %d = %s, want %s", i, lines.Text(), line)
		}
	}
	cancel()
	if c := <-code; c != 0 {
		t.Errorf("exit code %d, want 0; stderr: %s", c, stderr.String())
	}
}
