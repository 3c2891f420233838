package events

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events/eventstest"
	"github.com/nats-io/nats.go/jetstream"
)

// recorder is a handler that counts its calls and successes by event id and
// fails the first fails[id] calls of an id.
type recorder struct {
	mu      sync.Mutex
	calls   map[string]int
	handled []string // ids handled successfully, in order
	fails   map[string]int
}

func newRecorder(fails map[string]int) *recorder {
	return &recorder{calls: map[string]int{}, fails: fails}
}

func (r *recorder) handle(_ context.Context, m event.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[m.ID]++
	if r.fails[m.ID] < 0 || r.calls[m.ID] <= r.fails[m.ID] {
		return errors.New("points service down")
	}
	r.handled = append(r.handled, m.ID)
	return nil
}

func (r *recorder) snapshot() (calls map[string]int, handled []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	calls = make(map[string]int, len(r.calls))
	for k, v := range r.calls {
		calls[k] = v
	}
	return calls, slices.Clone(r.handled)
}

// check compares the calls by id, and the ids handled (in any order), with
// what a test wants.
func (r *recorder) check(t *testing.T, wantCalls map[string]int, wantHandled ...string) {
	t.Helper()
	calls, handled := r.snapshot()
	if !maps.Equal(calls, wantCalls) {
		t.Errorf("handler calls = %v, want %v", calls, wantCalls)
	}
	slices.Sort(handled)
	if !slices.Equal(handled, wantHandled) {
		t.Errorf("handled = %v, want each once: %v", handled, wantHandled)
	}
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.handled)
}

// fastRetry naks a failed event for 20 ms.
var fastRetry = []time.Duration{20 * time.Millisecond}

// An event is handled exactly once though the stream holds it twice (the
// same id published again after the duplicate window) and its first handling
// failed; events of other kinds than the filter's are never seen.
func TestConsumeHandlesEachEventOnce(t *testing.T) {
	s := eventstest.NewStream(t, 100*time.Millisecond)
	evs := []event.Message{
		msg("grab:1:0", event.MsgPacketGrabbed, "packet:1"),
		msg("grab:1:1", event.MsgPacketGrabbed, "packet:1"),
		msg("stock:42:1", event.MsgStockChanged, "sku:1:42:420"),
		msg("grab:1:2", event.MsgPacketGrabbed, "packet:1"),
	}
	for _, m := range evs {
		if s.Publish(m) {
			t.Fatalf("%s: a first publish taken as a duplicate", m.ID)
		}
	}
	if !s.Publish(evs[1]) {
		t.Fatal("a publish within the duplicate window was stored twice")
	}
	// Past the window the stream stores the same id again (seq 5).
	enginetest.WaitFor(t, "the duplicate window to pass", func() bool { return !s.Publish(evs[1]) })

	rec := newRecorder(map[string]int{"grab:1:0": 1})
	run(t, s.JS, ConsumerConfig{
		Stream: s.Name, Durable: "points", Filters: []string{s.Filter("grab.packet.>")}, Retry: fastRetry,
		Log: enginetest.QuietLog(),
	}, rec.handle)
	s.Settled("points", 5)

	// The repeat of grab:1:1 is dropped unseen, grab:1:0 retried once.
	rec.check(t, map[string]int{"grab:1:0": 2, "grab:1:1": 1, "grab:1:2": 1}, "grab:1:0", "grab:1:1", "grab:1:2")
}

// A handler that outlasts the ack wait has its event delivered again while
// it runs; the second delivery finds the id seen and is acked unhandled.
func TestConsumeDropsRedeliveryOfAHandledEvent(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	s.Publish(msg("grab:2:0", event.MsgPacketGrabbed, "packet:2"))
	release := make(chan struct{})
	rec := newRecorder(nil)
	slow := func(ctx context.Context, m event.Message) error {
		<-release
		return rec.handle(ctx, m)
	}
	run(t, s.JS, ConsumerConfig{Stream: s.Name, Durable: "points", Filters: []string{s.Filter("grab.>")}, AckWait: 200 * time.Millisecond, Log: enginetest.QuietLog()}, slow)
	enginetest.WaitFor(t, "the event delivered again", func() bool {
		c, err := s.JS.Consumer(context.Background(), s.Name, "points")
		if err != nil {
			return false
		}
		info, err := c.Info(context.Background())
		return err == nil && info.NumRedelivered > 0
	})
	close(release)
	s.Settled("points", 1)
	rec.check(t, map[string]int{"grab:2:0": 1}, "grab:2:0")
}

// A restarted consumer resumes after the last acked event: under the same
// durable name it handles only what was published while it was down.
func TestConsumeResumesDurable(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	cfg := ConsumerConfig{Stream: s.Name, Durable: "wms", Filters: []string{s.Filter("grab.>")}, Log: enginetest.QuietLog()}
	s.Publish(msg("stock:1", event.MsgStockChanged, "sku:1:42:420"))
	first := newRecorder(nil)
	stop := run(t, s.JS, cfg, first.handle)
	s.Settled("wms", 1)
	if err := stop(); err != nil {
		t.Fatalf("Consume after its context ended = %v, want nil", err)
	}

	s.Publish(msg("stock:2", event.MsgStockChanged, "sku:1:42:420"))
	second := newRecorder(nil)
	run(t, s.JS, cfg, second.handle)
	s.Settled("wms", 2)
	if _, got := second.snapshot(); !slices.Equal(got, []string{"stock:2"}) {
		t.Errorf("after the restart handled %v, want [stock:2]", got)
	}
}

// A failing handler has its event nakked and delivered again until it
// succeeds; one that never succeeds is given up after MaxDeliver deliveries,
// and the events after it are handled meanwhile.
func TestConsumeNakRedelivers(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	s.Publish(msg("grab:7:0", event.MsgPacketGrabbed, "packet:7"))
	s.Publish(msg("grab:7:1", event.MsgPacketGrabbed, "packet:7"))
	s.Publish(msg("grab:7:2", event.MsgPacketGrabbed, "packet:7"))

	rec := newRecorder(map[string]int{"grab:7:0": 2, "grab:7:1": -1})
	run(t, s.JS, ConsumerConfig{
		Stream: s.Name, Durable: "points", Filters: []string{s.Filter("grab.>")}, MaxDeliver: 4, Retry: fastRetry,
		Log: enginetest.QuietLog(),
	}, rec.handle)
	s.Settled("points", 3)

	rec.check(t, map[string]int{"grab:7:0": 3, "grab:7:1": 4, "grab:7:2": 1}, "grab:7:0", "grab:7:2")
}

// A body that is not an event is acked (never delivered again) and the
// events around it are handled.
func TestConsumeAcksPoison(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	s.Publish(msg("grab:9:0", event.MsgPacketGrabbed, "packet:9"))
	s.PublishRaw("grab.packet.grabbed.9", []byte("not json"))
	s.PublishRaw("grab.packet.grabbed.9", []byte(`{"kind":"packet.grabbed","aggregate":"packet:9"}`))
	s.Publish(msg("grab:9:1", event.MsgPacketGrabbed, "packet:9"))

	rec := newRecorder(nil)
	run(t, s.JS, ConsumerConfig{Stream: s.Name, Durable: "points", Filters: []string{s.Filter("grab.>")}, Log: enginetest.QuietLog()},
		rec.handle)
	s.Settled("points", 4)
	c, err := s.JS.Consumer(context.Background(), s.Name, "points")
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 {
		t.Errorf("redelivered %d messages, want 0: poison is acked at once", info.NumRedelivered)
	}
	if _, got := rec.snapshot(); !slices.Equal(got, []string{"grab:9:0", "grab:9:1"}) {
		t.Errorf("handled %v, want [grab:9:0 grab:9:1]", got)
	}
}

func TestConsumeRefusesConfig(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	if err := Consume(context.Background(), s.JS, ConsumerConfig{Stream: s.Name}, newRecorder(nil).handle); err == nil {
		t.Error("Consume without a durable name succeeded")
	}
	if err := Consume(context.Background(), s.JS, ConsumerConfig{Stream: s.Name + "_NONE", Durable: "x"}, newRecorder(nil).handle); err == nil {
		t.Error("Consume of a missing stream succeeded")
	}
}

func TestMemorySeenKeepsTheNewest(t *testing.T) {
	ctx := context.Background()
	s := NewMemorySeen(2)
	for _, id := range []string{"a", "b", "b", "c"} {
		if err := s.Mark(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]bool{"a": false, "b": true, "c": true} {
		if got, _ := s.Seen(ctx, id); got != want {
			t.Errorf("Seen(%s) = %v, want %v", id, got, want)
		}
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d, want 2", s.Len())
	}
}

// A consumer outlives its NATS server going down: once the server is back
// it handles what was published since, and nothing twice.
func TestConsumeSurvivesNATSRestart(t *testing.T) {
	srv := eventstest.StartServer(t)
	js := eventstest.Connect(t, srv.URL)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{"grab.>"}}); err != nil {
		t.Fatal(err)
	}
	publish := func(m event.Message) {
		t.Helper()
		body, _ := json.Marshal(m)
		if _, err := js.Publish(ctx, m.Subject(), body, jetstream.WithMsgID(m.ID)); err != nil {
			t.Fatalf("publish %s: %v", m.ID, err)
		}
	}
	rec := newRecorder(nil)
	stop := run(t, js, ConsumerConfig{Durable: "points", Log: enginetest.QuietLog()}, rec.handle)
	publish(msg("grab:1:0", event.MsgPacketGrabbed, "packet:1"))
	enginetest.WaitFor(t, "the first event", func() bool { return rec.count() == 1 })

	srv.Kill()
	srv.Start()
	enginetest.WaitFor(t, "JetStream to answer again", func() bool {
		_, err := js.Stream(ctx, DefaultStream)
		return err == nil
	})
	publish(msg("grab:1:1", event.MsgPacketGrabbed, "packet:1"))
	enginetest.WaitFor(t, "the event published after the restart", func() bool { return rec.count() == 2 })
	if err := stop(); err != nil {
		t.Errorf("Consume = %v, want nil after its context ended", err)
	}
	if _, got := rec.snapshot(); !slices.Equal(got, []string{"grab:1:0", "grab:1:1"}) {
		t.Errorf("handled %v, want each event once", got)
	}
}

// run runs Consume in the background until stop or the end of the test;
// stop returns what Consume returned, and the test fails if it is an error.
func run(t testing.TB, js jetstream.JetStream, cfg ConsumerConfig, h Handler) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Consume(ctx, js, cfg, h) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Consume = %v", err)
		}
	})
	return stop
}

// msg is an event of kind on aggregate with a small payload.
func msg(id, kind, aggregate string) event.Message {
	return event.Message{
		ID: id, Kind: kind, Aggregate: aggregate, At: time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
		Payload: json.RawMessage(`{"amount":"3.21"}`),
	}
}
