package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
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

// syncBuffer is a bytes.Buffer safe to read while Main writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// grabevents prints each event of its filter as one JSON line and exits 0
// when its context ends (as on SIGINT).
func TestMainPrintsEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs NATS (run without -short)")
	}
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("NATS at %s is required: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	var b [6]byte
	rand.Read(b[:])
	prefix, stream := "gevtest"+hex.EncodeToString(b[:]), "GEVTEST_"+strings.ToUpper(hex.EncodeToString(b[:]))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{prefix + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), stream) })
	want := []event.Message{
		{ID: "grab:1:0", Kind: event.MsgPacketGrabbed, Aggregate: "packet:1", At: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC), Payload: json.RawMessage(`{"amount":"3.21"}`)},
		{ID: "stock:42:7", Kind: event.MsgStockChanged, Aggregate: "sku:1:42:420", At: time.Date(2026, 12, 1, 8, 0, 1, 0, time.UTC), Payload: json.RawMessage(`{"op":"deduct"}`)},
	}
	for _, m := range want {
		body, _ := json.Marshal(m)
		if _, err := js.Publish(ctx, prefix+strings.TrimPrefix(m.Subject(), "grab"), body, jetstream.WithMsgID(m.ID)); err != nil {
			t.Fatal(err)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	var out, errOut syncBuffer
	code := make(chan int, 1)
	go func() {
		code <- Main(runCtx, []string{"-url", url, "-stream", stream, "-filter", prefix + ".>"}, envOf(nil), &out, &errOut)
	}()
	enginetest.WaitFor(t, "two lines", func() bool { return strings.Count(out.String(), "\n") == 2 })
	cancel()
	if c := <-code; c != 0 {
		t.Errorf("exit code %d, want 0; stderr: %s", c, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	for i, line := range lines {
		want, _ := json.Marshal(want[i])
		if line != string(want) {
			t.Errorf("line %d = %s, want %s", i, line, want)
		}
	}
}
