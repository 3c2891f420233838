package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
)

// testStream is a stream of the test's own on the NATS server of NATS_URL,
// deleted when the test ends. Its subjects live under prefix (not "grab"),
// so tests running at once, and a real GRAB stream, never overlap.
type testStream struct {
	t      testing.TB
	js     jetstream.JetStream
	name   string
	prefix string
}

// newStream creates the stream with the given duplicate window (0: the
// server's default of 2 minutes). An unreachable server fails the test.
func newStream(t testing.TB, dupWindow time.Duration) *testStream {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs NATS (run without -short)")
	}
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("NATS at %s is required for integration tests: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var b [6]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	s := &testStream{t: t, js: js, name: "EVTEST_" + strings.ToUpper(id), prefix: "evtest" + id}
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name: s.name, Subjects: []string{s.prefix + ".>"}, Storage: jetstream.MemoryStorage, Duplicates: dupWindow,
	})
	if err != nil {
		t.Fatalf("create stream %s: %v", s.name, err)
	}
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), s.name) })
	return s
}

// subject is where the stream holds m: m.Subject() under the test's prefix.
func (s *testStream) subject(m event.Message) string {
	return s.prefix + strings.TrimPrefix(m.Subject(), event.SubjectPrefix)
}

// filter is a grab subject filter ("grab.packet.>") under the test's prefix.
func (s *testStream) filter(f string) string {
	return s.prefix + strings.TrimPrefix(f, event.SubjectPrefix)
}

// publish publishes m as the relay does (Nats-Msg-Id = m.ID) and reports
// whether the stream took it as a duplicate.
func (s *testStream) publish(m event.Message) (duplicate bool) {
	s.t.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		s.t.Fatal(err)
	}
	ack, err := s.js.Publish(context.Background(), s.subject(m), body, jetstream.WithMsgID(m.ID))
	if err != nil {
		s.t.Fatalf("publish %s: %v", m.ID, err)
	}
	return ack.Duplicate
}

// publishRaw publishes a body that need not be an event.
func (s *testStream) publishRaw(subject string, body []byte) {
	s.t.Helper()
	if _, err := s.js.Publish(context.Background(), s.prefix+"."+subject, body); err != nil {
		s.t.Fatal(err)
	}
}

// settled waits until the durable consumer has every message of its filter
// delivered and acked (or terminated): nothing pending, nothing awaiting an
// ack, and its ack floor at or past lastSeq, the stream sequence of the last
// message of its filter (the floor may also pass later messages outside the
// filter).
func (s *testStream) settled(durable string, lastSeq uint64) {
	s.t.Helper()
	enginetest.WaitFor(s.t, durable+" settled", func() bool {
		c, err := s.js.Consumer(context.Background(), s.name, durable)
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumPending == 0 && info.NumAckPending == 0 && info.AckFloor.Stream >= lastSeq
	})
}

// run runs Consume in the background until the test ends and reports its
// return through the channel.
func run(t testing.TB, js jetstream.JetStream, cfg ConsumerConfig, h Handler) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Consume(ctx, js, cfg, h) }()
	stopped := false
	var err error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// msg is an event of kind on aggregate with a small payload.
func msg(id, kind, aggregate string) event.Message {
	return event.Message{
		ID: id, Kind: kind, Aggregate: aggregate, At: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
		Payload: json.RawMessage(`{"amount":"3.21"}`),
	}
}
