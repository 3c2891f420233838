package events

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/events/eventstest"
)

const testSecret = "whsec"

// endpoint is a webhook receiver that answers status(n) to its n-th POST
// (1-based), checks every signature and keeps the events it accepted.
type endpoint struct {
	t      *testing.T
	status func(n int) int
	mu     sync.Mutex
	posts  int
	got    []event.Message
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if err := VerifySignature([]byte(testSecret), r.Header.Get(SignatureHeader), body, time.Now(), time.Minute); err != nil {
		e.t.Errorf("POST %d: signature %q: %v", e.posts, r.Header.Get(SignatureHeader), err)
	}
	var m event.Message
	if err := json.Unmarshal(body, &m); err != nil {
		e.t.Errorf("body %q: %v", body, err)
	}
	if r.Header.Get(EventIDHeader) != m.ID || r.Header.Get(EventKindHeader) != m.Kind {
		e.t.Errorf("headers id %q kind %q, body id %q kind %q", r.Header.Get(EventIDHeader), r.Header.Get(EventKindHeader), m.ID, m.Kind)
	}
	e.mu.Lock()
	e.posts++
	code := e.status(e.posts)
	if code == http.StatusOK {
		e.got = append(e.got, m)
	}
	e.mu.Unlock()
	w.WriteHeader(code)
}

func (e *endpoint) counts() (posts int, accepted []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, m := range e.got {
		accepted = append(accepted, m.ID)
	}
	return e.posts, accepted
}

// startWebhooks serves e and runs webhooks on s's events for it until the
// test ends.
func startWebhooks(t *testing.T, s *eventstest.Stream, e http.Handler, cfg WebhookConfig) *Webhooks {
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	cfg.URL, cfg.Secret, cfg.Stream, cfg.Prefix = srv.URL, testSecret, s.Name, s.Prefix
	if cfg.Backoff == 0 {
		cfg.Backoff, cfg.MaxBackoff = 10*time.Millisecond, 40*time.Millisecond
	}
	w, err := NewWebhooks(cfg, enginetest.QuietLog(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, s.JS) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Webhooks.Run = %v", err)
		}
	})
	return w
}

// An endpoint that fails its first two POSTs gets the event a third time,
// signed, accepts it, and it is counted delivered once.
func TestWebhookRetriesThenDelivers(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	e := &endpoint{t: t, status: func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}}
	w := startWebhooks(t, s, e, WebhookConfig{})
	want := msg("grab:3:0", event.MsgPacketGrabbed, "packet:3")
	s.Publish(want)
	s.Settled(DefaultWebhookDurable, 1)

	posts, accepted := e.counts()
	if posts != 3 || !slices.Equal(accepted, []string{"grab:3:0"}) {
		t.Errorf("posts %d accepted %v, want 3 posts and grab:3:0 accepted once", posts, accepted)
	}
	e.mu.Lock()
	got := e.got[0]
	e.mu.Unlock()
	if got.Kind != want.Kind || got.Aggregate != want.Aggregate || !got.At.Equal(want.At) ||
		string(got.Payload) != string(want.Payload) {
		t.Errorf("posted %+v, want %+v", got, want)
	}
	if d, x := testutil.ToFloat64(w.delivered.WithLabelValues(event.MsgPacketGrabbed)), testutil.ToFloat64(w.dropped.WithLabelValues(event.MsgPacketGrabbed)); d != 1 || x != 0 {
		t.Errorf("delivered %v dropped %v, want 1 and 0", d, x)
	}
}

// An endpoint that always fails gets Attempts POSTs of an event, which is
// then dropped, counted, and acked; one that refuses it (a 4xx) gets one.
func TestWebhookDropsAfterRetries(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	e := &endpoint{t: t, status: func(int) int { return http.StatusInternalServerError }}
	w := startWebhooks(t, s, e, WebhookConfig{Attempts: 3})
	s.Publish(msg("grab:4:0", event.MsgPacketGrabbed, "packet:4"))
	s.Settled(DefaultWebhookDurable, 1)
	if posts, accepted := e.counts(); posts != 3 || len(accepted) != 0 {
		t.Errorf("posts %d accepted %v, want 3 and none", posts, accepted)
	}
	if x := testutil.ToFloat64(w.dropped.WithLabelValues(event.MsgPacketGrabbed)); x != 1 {
		t.Errorf("dropped %v, want 1", x)
	}

	e.mu.Lock()
	e.posts, e.status = 0, func(int) int { return http.StatusBadRequest }
	e.mu.Unlock()
	s.Publish(msg("grab:4:1", event.MsgPacketGrabbed, "packet:4"))
	s.Settled(DefaultWebhookDurable, 2)
	if posts, _ := e.counts(); posts != 1 {
		t.Errorf("a 400 was posted %d times, want 1", posts)
	}
	if x := testutil.ToFloat64(w.dropped.WithLabelValues(event.MsgPacketGrabbed)); x != 2 {
		t.Errorf("dropped %v, want 2", x)
	}
}

// Only the chosen kinds are posted, with one kind (a subject filter) or
// several (filtered as read).
func TestWebhookKinds(t *testing.T) {
	for _, kinds := range [][]string{{event.MsgPacketRefunded}, {event.MsgPacketRefunded, event.MsgPayoutNeedsAttention}} {
		t.Run(strings.Join(kinds, ","), func(t *testing.T) {
			s := eventstest.NewStream(t, 0)
			e := &endpoint{t: t, status: func(int) int { return http.StatusOK }}
			startWebhooks(t, s, e, WebhookConfig{Kinds: kinds})
			s.Publish(msg("grab:5:0", event.MsgPacketGrabbed, "packet:5"))
			s.Publish(msg("refund:5", event.MsgPacketRefunded, "packet:5"))
			s.Publish(msg("payout:8:1", event.MsgPayoutNeedsAttention, "campaign:8"))
			enginetest.WaitFor(t, "the refund posted", func() bool { _, a := e.counts(); return slices.Contains(a, "refund:5") })
			last := uint64(3) // payout:8:1
			if len(kinds) == 1 {
				last = 2 // refund:5
			}
			s.Settled(DefaultWebhookDurable, last)
			want := []string{"refund:5"}
			if len(kinds) == 2 {
				want = append(want, "payout:8:1")
			}
			if _, got := e.counts(); !slices.Equal(got, want) {
				t.Errorf("posted %v, want %v", got, want)
			}
		})
	}
}

// A webhook endpoint that hangs holds up only the webhooks: another
// consumer of the same stream handles every event meanwhile, and the
// webhooks deliver them all once the endpoint answers.
func TestSlowWebhookDoesNotStallOtherConsumers(t *testing.T) {
	s := eventstest.NewStream(t, 0)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	e := &endpoint{t: t, status: func(int) int { return http.StatusOK }}
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			e.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	})
	startWebhooks(t, s, slow, WebhookConfig{Timeout: time.Minute})
	for i := range 5 {
		s.Publish(msg("grab:6:"+strconv.Itoa(i), event.MsgPacketGrabbed, "packet:6"))
	}

	rec := newRecorder(nil)
	run(t, s.JS, ConsumerConfig{Stream: s.Name, Durable: "points", Filters: []string{s.Filter("grab.>")}, Log: enginetest.QuietLog()},
		rec.handle)
	s.Settled("points", 5)
	if posts, _ := e.counts(); posts != 0 {
		t.Fatalf("the hanging endpoint answered %d posts", posts)
	}

	once.Do(func() { close(release) })
	s.Settled(DefaultWebhookDurable, 5)
	if _, got := e.counts(); len(got) != 5 {
		t.Errorf("webhooks delivered %v after the endpoint recovered, want all 5", got)
	}
}

func TestWebhookConfigFromEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := WebhookConfigFromEnv(env(map[string]string{
		"GRAB_WEBHOOK_URL": "https://hooks.example.com/grab", "GRAB_WEBHOOK_SECRET": "s",
		"GRAB_WEBHOOK_KINDS": " packet.refunded, payout.needs_attention ",
	}))
	if err != nil || !c.Enabled() || !slices.Equal(c.Kinds, []string{event.MsgPacketRefunded, event.MsgPayoutNeedsAttention}) {
		t.Errorf("config %+v, %v", c, err)
	}
	if c, err := WebhookConfigFromEnv(env(nil)); err != nil || c.Enabled() {
		t.Errorf("no settings: %+v, %v; want disabled", c, err)
	}
	for name, m := range map[string]map[string]string{
		"no secret":      {"GRAB_WEBHOOK_URL": "https://h/x"},
		"not http":       {"GRAB_WEBHOOK_URL": "ftp://h/x", "GRAB_WEBHOOK_SECRET": "s"},
		"relative":       {"GRAB_WEBHOOK_URL": "/x", "GRAB_WEBHOOK_SECRET": "s"},
		"unknown kind":   {"GRAB_WEBHOOK_URL": "https://h/x", "GRAB_WEBHOOK_SECRET": "s", "GRAB_WEBHOOK_KINDS": "packet.grab"},
		"secret, no URL": {"GRAB_WEBHOOK_SECRET": "s"},
	} {
		if _, err := WebhookConfigFromEnv(env(m)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestVerifySignature(t *testing.T) {
	at := time.Unix(1_780_000_000, 0)
	body := []byte(`{"id":"grab:1:0"}`)
	h := Sign([]byte("k"), at, body)
	if !strings.HasPrefix(h, "t=1780000000,v1=") || len(h) != len("t=1780000000,v1=")+64 {
		t.Fatalf("Sign = %q", h)
	}
	for name, c := range map[string]struct {
		secret, header, body string
		now                  time.Time
		want                 error
	}{
		"valid":          {"k", h, string(body), at.Add(time.Minute), nil},
		"rotated secret": {"k", "t=1780000000,v1=00," + h[len("t=1780000000,"):], string(body), at, nil},
		"other secret":   {"j", h, string(body), at, ErrSignatureMismatch},
		"other body":     {"k", h, `{"id":"grab:1:1"}`, at, ErrSignatureMismatch},
		"stale":          {"k", h, string(body), at.Add(6 * time.Minute), ErrSignatureStale},
		"no time":        {"k", h[len("t=1780000000,"):], string(body), at, ErrSignatureMalformed},
		"garbage":        {"k", "nonsense", string(body), at, ErrSignatureMalformed},
	} {
		if err := VerifySignature([]byte(c.secret), c.header, []byte(c.body), c.now, 5*time.Minute); err != c.want {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}
