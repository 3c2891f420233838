package events

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
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
	s := newStream(t, 100*time.Millisecond)
	evs := []event.Message{
		msg("grab:1:0", event.MsgPacketGrabbed, "packet:1"),
		msg("grab:1:1", event.MsgPacketGrabbed, "packet:1"),
		msg("stock:42:1", event.MsgStockChanged, "sku:1:42:420"),
		msg("grab:1:2", event.MsgPacketGrabbed, "packet:1"),
	}
	for _, m := range evs {
		if s.publish(m) {
			t.Fatalf("%s: a first publish taken as a duplicate", m.ID)
		}
	}
	if !s.publish(evs[1]) {
		t.Fatal("a publish within the duplicate window was stored twice")
	}
	// Past the window the stream stores the same id again (seq 5).
	enginetest.WaitFor(t, "the duplicate window to pass", func() bool { return !s.publish(evs[1]) })

	rec := newRecorder(map[string]int{"grab:1:0": 1})
	run(t, s.js, ConsumerConfig{
		Stream: s.name, Durable: "points", Filters: []string{s.filter("grab.packet.>")}, Retry: fastRetry,
		Log: enginetest.QuietLog(),
	}, rec.handle)
	s.settled("points", 5)

	calls, handled := rec.snapshot()
	if want := map[string]int{"grab:1:0": 2, "grab:1:1": 1, "grab:1:2": 1}; !maps.Equal(calls, want) {
		t.Errorf("handler calls = %v, want %v (the repeat of grab:1:1 dropped unseen, grab:1:0 retried once)", calls, want)
	}
	slices.Sort(handled)
	if want := []string{"grab:1:0", "grab:1:1", "grab:1:2"}; !slices.Equal(handled, want) {
		t.Errorf("handled = %v, want each once: %v", handled, want)
	}
}

// A restarted consumer resumes after the last acked event: under the same
// durable name it handles only what was published while it was down.
func TestConsumeResumesDurable(t *testing.T) {
	s := newStream(t, 0)
	cfg := ConsumerConfig{Stream: s.name, Durable: "wms", Filters: []string{s.filter("grab.>")}, Log: enginetest.QuietLog()}
	s.publish(msg("stock:1", event.MsgStockChanged, "sku:1:42:420"))
	first := newRecorder(nil)
	stop := run(t, s.js, cfg, first.handle)
	s.settled("wms", 1)
	if err := stop(); err != nil {
		t.Fatalf("Consume after its context ended = %v, want nil", err)
	}

	s.publish(msg("stock:2", event.MsgStockChanged, "sku:1:42:420"))
	second := newRecorder(nil)
	run(t, s.js, cfg, second.handle)
	s.settled("wms", 2)
	if _, got := second.snapshot(); !slices.Equal(got, []string{"stock:2"}) {
		t.Errorf("after the restart handled %v, want [stock:2]", got)
	}
}

// A failing handler has its event nakked and delivered again until it
// succeeds; one that never succeeds is given up after MaxDeliver deliveries,
// and the events after it are handled meanwhile.
func TestConsumeNakRedelivers(t *testing.T) {
	s := newStream(t, 0)
	s.publish(msg("grab:7:0", event.MsgPacketGrabbed, "packet:7"))
	s.publish(msg("grab:7:1", event.MsgPacketGrabbed, "packet:7"))
	s.publish(msg("grab:7:2", event.MsgPacketGrabbed, "packet:7"))

	rec := newRecorder(map[string]int{"grab:7:0": 2, "grab:7:1": -1})
	run(t, s.js, ConsumerConfig{
		Stream: s.name, Durable: "points", Filters: []string{s.filter("grab.>")}, MaxDeliver: 4, Retry: fastRetry,
		Log: enginetest.QuietLog(),
	}, rec.handle)
	s.settled("points", 3)

	calls, handled := rec.snapshot()
	if want := map[string]int{"grab:7:0": 3, "grab:7:1": 4, "grab:7:2": 1}; !maps.Equal(calls, want) {
		t.Errorf("handler calls = %v, want %v", calls, want)
	}
	slices.Sort(handled)
	if want := []string{"grab:7:0", "grab:7:2"}; !slices.Equal(handled, want) {
		t.Errorf("handled = %v, want %v", handled, want)
	}
}

// A body that is not an event is acked (never delivered again) and the
// events around it are handled.
func TestConsumeAcksPoison(t *testing.T) {
	s := newStream(t, 0)
	s.publish(msg("grab:9:0", event.MsgPacketGrabbed, "packet:9"))
	s.publishRaw("grab.packet.grabbed.9", []byte("not json"))
	s.publishRaw("grab.packet.grabbed.9", []byte(`{"kind":"packet.grabbed","aggregate":"packet:9"}`))
	s.publish(msg("grab:9:1", event.MsgPacketGrabbed, "packet:9"))

	rec := newRecorder(nil)
	run(t, s.js, ConsumerConfig{Stream: s.name, Durable: "points", Filters: []string{s.filter("grab.>")}, Log: enginetest.QuietLog()},
		rec.handle)
	s.settled("points", 4)
	c, err := s.js.Consumer(context.Background(), s.name, "points")
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
	s := newStream(t, 0)
	if err := Consume(context.Background(), s.js, ConsumerConfig{Stream: s.name}, newRecorder(nil).handle); err == nil {
		t.Error("Consume without a durable name succeeded")
	}
	if err := Consume(context.Background(), s.js, ConsumerConfig{Stream: s.name + "_NONE", Durable: "x"}, newRecorder(nil).handle); err == nil {
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
