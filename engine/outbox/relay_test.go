package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events/eventstest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// grabs answers n packet.grabbed messages over aggregates packets,
// interleaved: packet 1's first grab, packet 2's first grab, ...
func grabs(first, n, packets int) []event.Message {
	msgs := make([]event.Message, n)
	for i := range msgs {
		k := first + i
		p, seq := k%packets+1, k/packets+1
		msgs[i] = event.Message{ID: fmt.Sprintf("grab:%d:%d", p, seq), Kind: event.MsgPacketGrabbed,
			Aggregate: "packet:" + strconv.Itoa(p), At: time.Now(),
			Payload: json.RawMessage(fmt.Sprintf(`{"packet_id":%d,"seq":%d,"amount":"0.01"}`, p, seq))}
	}
	return msgs
}

func ids(msgs []event.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// testConfig is a relay's configuration with test-sized waits.
func testConfig(stream, prefix string) Config {
	return Config{Stream: stream, SubjectPrefix: prefix, Batch: 16, Interval: 5 * time.Millisecond,
		AckTimeout: time.Second, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		StatsInterval: 10 * time.Millisecond, StuckAfter: time.Minute}
}

// connect opens a JetStream context on url that reconnects forever.
func connect(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("nats %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// sharedStream connects to the machine's NATS (NATS_URL) and creates a
// stream of its own, over subjects of its own (so it overlaps no other
// stream there), deleted when the test ends; it answers the stream's name
// and subject prefix.
func sharedStream(t *testing.T) (jetstream.JetStream, string, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs NATS (run without -short)")
	}
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	js := connect(t, url)
	name := fmt.Sprintf("OUTBOXTEST_%d_%d", os.Getpid(), time.Now().UnixNano())
	prefix := strings.ToLower(name)
	ctx := context.Background()
	if err := ensureStream(ctx, js, name, prefix, time.Hour, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.DeleteStream(context.Background(), name) })
	return js, name, prefix
}

// sharedOutbox is a sharedStream and an outbox holding grabs(0, n, packets).
func sharedOutbox(t *testing.T, n, packets int) (js jetstream.JetStream, stream, prefix string, st *fakeStore, msgs []event.Message) {
	t.Helper()
	js, stream, prefix = sharedStream(t)
	st, msgs = &fakeStore{}, grabs(0, n, packets)
	st.add(msgs...)
	return js, stream, prefix, st, msgs
}

// streamMessages answers the events the stream holds, in its order.
func streamMessages(t *testing.T, js jetstream.JetStream, name string) []event.Message {
	t.Helper()
	var msgs []event.Message
	for _, m := range eventstest.Read(t, js, name) {
		msgs = append(msgs, m.Message)
	}
	return msgs
}

func prefixOf(subject string) string { p, _, _ := strings.Cut(subject, "."); return p }

// run runs r until the test ends.
func run(t *testing.T, r *Relay) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func pendingIs(st *fakeStore, n int64) func() bool {
	return func() bool { p, _, _ := st.OutboxStats(context.Background()); return p == n }
}

// The stream holds every message once, in the outbox's order, so each
// packet's grabs in their seq order; the metrics count them.
func TestRelayPublishesInOutboxOrder(t *testing.T) {
	js, stream, prefix, st, want := sharedOutbox(t, 100, 3)
	reg := prometheus.NewRegistry()
	r := New(st, js, testConfig(stream, prefix), quiet, reg)
	run(t, r)
	enginetest.WaitFor(t, "outbox drained", pendingIs(st, 0))
	enginetest.WaitFor(t, "stats read", func() bool { return testutil.ToFloat64(r.m.pending) == 0 })

	got := streamMessages(t, js, stream)
	if !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("stream order %v, want %v", ids(got), ids(want))
	}
	for p := 1; p <= 3; p++ {
		var seqs []string
		for _, m := range got {
			if m.Aggregate == "packet:"+strconv.Itoa(p) {
				seqs = append(seqs, m.ID)
			}
		}
		for i, id := range seqs {
			if w := fmt.Sprintf("grab:%d:%d", p, i+1); id != w {
				t.Fatalf("packet %d: event %d is %s, want %s", p, i, id, w)
			}
		}
	}
	if !slices.Equal(st.published(), ids(want)) {
		t.Fatalf("marked %v", st.published())
	}
	counted(t, r, 100) // the relay counts a batch after its store commit
	if n := testutil.ToFloat64(r.m.published); n != 100 {
		t.Errorf("grab_outbox_published_total = %v, want 100", n)
	}
	if n := testutil.ToFloat64(r.m.failures); n != 0 {
		t.Errorf("grab_outbox_publish_failures_total = %v, want 0", n)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP grab_outbox_age_seconds Age of the oldest unpublished outbox message, in seconds; 0 when none is.
# TYPE grab_outbox_age_seconds gauge
grab_outbox_age_seconds 0
`), "grab_outbox_age_seconds"); err != nil {
		t.Error(err)
	}
	if err := r.Stuck(); err != nil {
		t.Errorf("Stuck: %v", err)
	}
}

// fakeJS is a JetStream whose async publishes fail from the failAt-th
// (counting from 0) on; the others are acked at once.
type fakeJS struct {
	jetstream.JetStream
	failAt int
	sent   []string
}

type fakeFuture struct {
	ok  chan *jetstream.PubAck
	err chan error
	msg *nats.Msg
}

func (f fakeFuture) Ok() <-chan *jetstream.PubAck { return f.ok }
func (f fakeFuture) Err() <-chan error            { return f.err }
func (f fakeFuture) Msg() *nats.Msg               { return f.msg }

func (js *fakeJS) PublishAsync(subject string, data []byte, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	f := fakeFuture{ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1), msg: &nats.Msg{Subject: subject, Data: data}}
	if len(js.sent) >= js.failAt {
		f.err <- errors.New("nats: no response from stream")
	} else {
		f.ok <- &jetstream.PubAck{Stream: "GRAB", Sequence: uint64(len(js.sent) + 1)}
	}
	js.sent = append(js.sent, subject)
	return f, nil
}

// A batch whose 6th publish fails marks its first 5 messages and nothing
// past them, even those whose publish went through.
func TestPublishFailureMarksNothingPastIt(t *testing.T) {
	st := &fakeStore{}
	msgs := grabs(0, 10, 2)
	st.add(msgs...)
	js := &fakeJS{failAt: 5}
	r := New(st, js, testConfig("", ""), quiet, nil)
	n, err := st.RelayOutbox(context.Background(), 10, r.publish)
	if n != 5 || err == nil || !strings.Contains(err.Error(), msgs[5].ID) {
		t.Fatalf("RelayOutbox = %d, %v; want 5 and the failure of %s", n, err, msgs[5].ID)
	}
	if !slices.Equal(st.published(), ids(msgs[:5])) {
		t.Fatalf("marked %v, want %v", st.published(), ids(msgs[:5]))
	}
	if len(js.sent) != 10 || js.sent[0] != "grab.packet.grabbed.1" || js.sent[1] != "grab.packet.grabbed.2" {
		t.Fatalf("sent %v", js.sent)
	}
}

// A relay that keeps failing backs off, counts each failed pass and, once
// the oldest message is older than StuckAfter, reports itself stuck.
func TestFailingRelayBacksOffAndIsStuck(t *testing.T) {
	st := &fakeStore{}
	old := grabs(0, 3, 1)
	for i := range old {
		old[i].At = time.Now().Add(-2 * time.Minute)
	}
	st.add(old...)
	cfg := testConfig("", "")
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 50*time.Millisecond
	r := New(st, &fakeJS{failAt: 0}, cfg, quiet, prometheus.NewRegistry())
	start := time.Now()
	run(t, r)
	enginetest.WaitFor(t, "three failed passes", func() bool { return testutil.ToFloat64(r.m.failures) >= 3 })
	// Two backoffs of at least 25ms each lie between the first and the third failure.
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("three failures in %v: no backoff", d)
	}
	enginetest.WaitFor(t, "stats read", func() bool { return testutil.ToFloat64(r.m.pending) == 3 })
	if n := testutil.ToFloat64(r.m.published); n != 0 {
		t.Errorf("grab_outbox_published_total = %v, want 0", n)
	}
	if age := r.Age(); age < 2*time.Minute || age > 3*time.Minute {
		t.Errorf("Age = %v, want about 2m", age)
	}
	if err := r.Stuck(); err == nil || !strings.Contains(err.Error(), "3 unpublished") {
		t.Errorf("Stuck = %v, want the relay stuck with 3 unpublished", err)
	}
}

// A relay killed after its publish and before its mark leaves every
// message unpublished; the next relay publishes them again, and the
// stream's duplicate window keeps one copy of each.
func TestRepublishAfterCrashKeepsOneCopy(t *testing.T) {
	js, stream, prefix, st, want := sharedOutbox(t, 40, 4)
	var crashed atomic.Bool
	st.crash = func() bool { return crashed.CompareAndSwap(false, true) }

	first := New(st, js, testConfig(stream, prefix), quiet, nil)
	if n, err := st.RelayOutbox(context.Background(), 100, first.publish); n != 0 || !errors.Is(err, errCrash) {
		t.Fatalf("crashed pass = %d, %v", n, err)
	}
	if got := streamMessages(t, js, stream); len(got) != 40 || len(st.published()) != 0 {
		t.Fatalf("after the crash: %d in the stream, %d marked; want 40 and 0", len(got), len(st.published()))
	}

	second := New(st, js, testConfig(stream, prefix), quiet, prometheus.NewRegistry())
	run(t, second)
	enginetest.WaitFor(t, "outbox drained", pendingIs(st, 0))
	if got := streamMessages(t, js, stream); !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("stream %v, want each message once in order %v", ids(got), ids(want))
	}
	counted(t, second, 40) // the relay counts a batch after its store commit
	if n := testutil.ToFloat64(second.m.published); n != 40 {
		t.Errorf("grab_outbox_published_total = %v, want 40", n)
	}
}

// Relays at once publish every message, none twice in the stream.
func TestConcurrentRelays(t *testing.T) {
	js, stream, prefix, st, want := sharedOutbox(t, 300, 5)
	var relays []*Relay
	for range 3 {
		r := New(st, js, testConfig(stream, prefix), quiet, nil)
		relays = append(relays, r)
		run(t, r)
	}
	enginetest.WaitFor(t, "outbox drained", pendingIs(st, 0))
	got := ids(streamMessages(t, js, stream))
	slices.Sort(got)
	w := ids(want)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Fatalf("stream holds %d messages, want the 300 once each", len(got))
	}
	var total float64
	for _, r := range relays {
		total += testutil.ToFloat64(r.m.published)
	}
	if total != 300 {
		t.Errorf("published %v in all, want 300", total)
	}
}

// privateNATS runs nats-server with JetStream on port, storing under dir,
// until the returned kill.
func privateNATS(t *testing.T, port int, dir string) (kill func()) {
	t.Helper()
	cmd := exec.Command("/usr/sbin/nats-server", "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once atomic.Bool
	kill = func() {
		if once.CompareAndSwap(false, true) {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}
	t.Cleanup(kill)
	enginetest.WaitFor(t, "nats-server listening", func() bool {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return kill
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// With NATS down the relay backs off and the outbox grows; once NATS is
// back it drains, and the stream holds every message once, in order.
func TestNATSDownThenDrainsInOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: runs nats-server (run without -short)")
	}
	port, dir := freePort(t), t.TempDir()
	kill := privateNATS(t, port, dir)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	js := connect(t, url)
	ctx := context.Background()
	if err := EnsureStream(ctx, js, "GRAB", time.Hour, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	st := &fakeStore{}
	want := grabs(0, 90, 3)
	st.add(want[:30]...)
	r := New(st, js, testConfig("GRAB", ""), quiet, prometheus.NewRegistry())
	run(t, r)
	enginetest.WaitFor(t, "first messages published", pendingIs(st, 0))

	kill()
	st.add(want[30:60]...)
	enginetest.WaitFor(t, "two failed passes", func() bool { return testutil.ToFloat64(r.m.failures) >= 2 })
	st.add(want[60:]...)
	enginetest.WaitFor(t, "the outbox grown to 60", func() bool { return testutil.ToFloat64(r.m.pending) == 60 })
	if n := testutil.ToFloat64(r.m.published); n != 30 {
		t.Fatalf("grab_outbox_published_total = %v while NATS is down, want 30", n)
	}

	privateNATS(t, port, dir)
	enginetest.WaitFor(t, "outbox drained", pendingIs(st, 0))
	if got := streamMessages(t, js, "GRAB"); !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("stream %v, want %v", ids(got), ids(want))
	}
	if !slices.Equal(st.published(), ids(want)) {
		t.Fatalf("marked %v", st.published())
	}
	counted(t, r, 90) // the relay counts a batch after its store commit
	if n := testutil.ToFloat64(r.m.published); n != 90 {
		t.Errorf("grab_outbox_published_total = %v, want 90", n)
	}
}

// EnsureStream creates the grab stream on the embedded server, then
// updates its retention in place.
func TestEnsureStreamOnEmbeddedNATS(t *testing.T) {
	url, stop, err := StartEmbedded(filepath.Join(t.TempDir(), "data", "nats"))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	js := connect(t, url)
	ctx := context.Background()
	if err := EnsureStream(ctx, js, "GRAB", 7*24*time.Hour, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := EnsureStream(ctx, js, "GRAB", 24*time.Hour, time.Minute); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "GRAB")
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if !slices.Equal(c.Subjects, []string{"grab.>"}) || c.Storage != jetstream.FileStorage || c.MaxAge != 24*time.Hour || c.Duplicates != time.Minute {
		t.Fatalf("stream config: subjects %v, storage %v, max age %v, duplicates %v", c.Subjects, c.Storage, c.MaxAge, c.Duplicates)
	}
	if err := EnsureStream(ctx, js, "GRAB", time.Minute, time.Hour); err == nil {
		t.Fatal("a duplicate window longer than the retention was accepted")
	}
}

// counted waits until r has counted n published messages: it counts a
// batch after the store commit that marks it, so a drained outbox may come
// first.
func counted(t *testing.T, r *Relay, n int) {
	t.Helper()
	enginetest.WaitFor(t, fmt.Sprintf("the relay to count %d published", n), func() bool {
		return testutil.ToFloat64(r.m.published) >= float64(n)
	})
}
