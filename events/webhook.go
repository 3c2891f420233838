package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/event"
)

// WebhookConfig is grabd's webhook settings. Zero fields other than URL and
// Secret take the defaults named on each.
type WebhookConfig struct {
	// URL receives a POST per event (GRAB_WEBHOOK_URL); empty: no webhooks.
	URL string
	// Secret signs every POST (GRAB_WEBHOOK_SECRET); required with URL.
	Secret string
	// Kinds are the event kinds posted, e.g. event.MsgPacketGrabbed
	// (GRAB_WEBHOOK_KINDS, a comma list); empty: every kind.
	Kinds []string
	// Stream is the stream read (DefaultStream).
	Stream string
	// Durable names the webhooks' own consumer (DefaultWebhookDurable).
	Durable string
	// Prefix is the root of the subjects read (event.SubjectPrefix); set it
	// when the stream holds grab's events under another root (a mirror with a
	// subject transform, a test's own subjects).
	Prefix string
	// Attempts bounds the POSTs of one event (5); after the last failed one
	// the event is dropped.
	Attempts int
	// Backoff is the wait before the first retry (500 ms), doubled before
	// each later one up to MaxBackoff (30 s); each wait is drawn at random
	// between half and all of it, so endpoints recovering from an outage are
	// not hit in step.
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one POST (5 s).
	Timeout time.Duration
	// Client sends the POSTs (an http.Client with Timeout).
	Client *http.Client
}

// Defaults of WebhookConfig.
const (
	DefaultWebhookDurable    = "grab-webhooks"
	DefaultWebhookAttempts   = 5
	DefaultWebhookBackoff    = 500 * time.Millisecond
	DefaultWebhookMaxBackoff = 30 * time.Second
	DefaultWebhookTimeout    = 5 * time.Second
)

// Webhook request headers. SignatureHeader is "t=<unix seconds>,v1=<hex>",
// the hex HMAC-SHA256 under the secret of "<unix seconds>.<body>" (Sign).
const (
	SignatureHeader = "X-Grab-Signature"
	EventIDHeader   = "X-Grab-Event-Id"
	EventKindHeader = "X-Grab-Event-Kind"
)

// kinds are the kinds GRAB_WEBHOOK_KINDS may name.
var kinds = []string{
	event.MsgPacketPaid, event.MsgPacketGrabbed, event.MsgPacketCredited, event.MsgPacketFinished,
	event.MsgPacketRefunded, event.MsgPaymentSettled, event.MsgPaymentFailed, event.MsgStockChanged,
	event.MsgCampaignAwarded, event.MsgPayoutTransferred, event.MsgPayoutNeedsAttention,
}

// WebhookConfigFromEnv reads GRAB_WEBHOOK_URL, GRAB_WEBHOOK_SECRET and
// GRAB_WEBHOOK_KINDS through getenv. Without a URL it returns a config that
// is not Enabled; with one, it refuses a URL that is not absolute http(s), a
// missing secret and an unknown kind.
func WebhookConfigFromEnv(getenv func(string) string) (WebhookConfig, error) {
	c := WebhookConfig{URL: strings.TrimSpace(getenv("GRAB_WEBHOOK_URL")), Secret: getenv("GRAB_WEBHOOK_SECRET")}
	for k := range strings.SplitSeq(getenv("GRAB_WEBHOOK_KINDS"), ",") {
		if k = strings.TrimSpace(k); k != "" {
			c.Kinds = append(c.Kinds, k)
		}
	}
	if c.URL == "" {
		if c.Secret != "" || len(c.Kinds) > 0 {
			return WebhookConfig{}, errors.New("GRAB_WEBHOOK_SECRET and GRAB_WEBHOOK_KINDS need GRAB_WEBHOOK_URL")
		}
		return c, nil
	}
	return c, c.validate()
}

// Enabled reports whether webhooks are configured.
func (c WebhookConfig) Enabled() bool { return c.URL != "" }

// validate checks the URL, the secret and the kinds.
func (c WebhookConfig) validate() error {
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("GRAB_WEBHOOK_URL: %q is not an http or https URL", c.URL)
	}
	if c.Secret == "" {
		return errors.New("GRAB_WEBHOOK_SECRET is required with GRAB_WEBHOOK_URL: the key every POST is signed with")
	}
	for _, k := range c.Kinds {
		if !slices.Contains(kinds, k) {
			return fmt.Errorf("GRAB_WEBHOOK_KINDS: unknown kind %q (one of %s)", k, strings.Join(kinds, ", "))
		}
	}
	return nil
}

// withDefaults fills the zero fields.
func (c WebhookConfig) withDefaults() WebhookConfig {
	if c.Stream == "" {
		c.Stream = DefaultStream
	}
	if c.Durable == "" {
		c.Durable = DefaultWebhookDurable
	}
	if c.Prefix == "" {
		c.Prefix = event.SubjectPrefix
	}
	if c.Attempts <= 0 {
		c.Attempts = DefaultWebhookAttempts
	}
	if c.Backoff <= 0 {
		c.Backoff = DefaultWebhookBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultWebhookMaxBackoff
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultWebhookTimeout
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.Timeout}
	}
	return c
}

// Webhooks posts events to one URL, best effort: each event is POSTed up to
// Attempts times and then dropped, and counted either way
// (grab_webhook_delivered_total, grab_webhook_dropped_total, by kind). An
// event may be posted more than once (a restart, an ack lost): receivers
// drop a repeated X-Grab-Event-Id.
type Webhooks struct {
	cfg       WebhookConfig
	log       *slog.Logger
	delivered *prometheus.CounterVec
	dropped   *prometheus.CounterVec
}

// NewWebhooks checks cfg and registers the metrics on reg (nil: not
// registered). It fails when cfg is not Enabled or is invalid, or the metrics
// are registered already.
func NewWebhooks(cfg WebhookConfig, log *slog.Logger, reg prometheus.Registerer) (*Webhooks, error) {
	if !cfg.Enabled() {
		return nil, errors.New("events: webhooks need a URL")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Webhooks{
		cfg: cfg.withDefaults(),
		log: log,
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grab_webhook_delivered_total", Help: "Events a webhook endpoint accepted, by kind.",
		}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grab_webhook_dropped_total", Help: "Events dropped after the webhook's last failed attempt, by kind.",
		}, []string{"kind"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{w.delivered, w.dropped} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("events: webhook metrics: %w", err)
			}
		}
	}
	return w, nil
}

// RunWebhooks posts the events of cfg.Kinds to cfg.URL until ctx ends (then
// it returns nil); it does nothing and returns nil when cfg is not Enabled.
// It reads through its own durable consumer (cfg.Durable), so it never holds
// back the relay or another consumer. See Webhooks and NewWebhooks.
func RunWebhooks(ctx context.Context, js jetstream.JetStream, cfg WebhookConfig, log *slog.Logger, reg prometheus.Registerer) error {
	if !cfg.Enabled() {
		return nil
	}
	w, err := NewWebhooks(cfg, log, reg)
	if err != nil {
		return err
	}
	return w.Run(ctx, js)
}

// Run consumes the chosen kinds and posts each event until ctx ends.
func (w *Webhooks) Run(ctx context.Context, js jetstream.JetStream) error {
	return Consume(ctx, js, w.consumerConfig(), w.Deliver)
}

// consumerConfig reads one kind by its subject; several kinds, or all, read
// every event and Deliver skips the others, which any NATS server can filter
// (several filter subjects need 2.10). Its ack wait outlasts every attempt
// and wait of one event, so an event is not delivered again while it is
// still being posted.
func (w *Webhooks) consumerConfig() ConsumerConfig {
	filter := w.cfg.Prefix + ".>"
	if len(w.cfg.Kinds) == 1 {
		filter = w.cfg.Prefix + "." + w.cfg.Kinds[0] + ".>"
	}
	return ConsumerConfig{
		Stream:  w.cfg.Stream,
		Durable: w.cfg.Durable,
		Filters: []string{filter},
		AckWait: time.Duration(w.cfg.Attempts)*(w.cfg.Timeout+w.cfg.MaxBackoff) + 30*time.Second,
		Log:     w.log,
	}
}

// Deliver posts m when its kind is chosen, retrying as configured. It returns
// nil once m is delivered, dropped or not chosen, and ctx's error when ctx
// ends first (the event is then delivered again).
func (w *Webhooks) Deliver(ctx context.Context, m event.Message) error {
	if len(w.cfg.Kinds) > 0 && !slices.Contains(w.cfg.Kinds, m.Kind) {
		return nil
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	log := w.log.With("id", m.ID, "kind", m.Kind)
	for attempt := 1; ; attempt++ {
		err := w.post(ctx, m, body)
		if err == nil {
			w.delivered.WithLabelValues(m.Kind).Inc()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var perm permanentError
		if attempt >= w.cfg.Attempts || errors.As(err, &perm) {
			log.Warn("webhook: event dropped", "attempts", attempt, "err", err)
			w.dropped.WithLabelValues(m.Kind).Inc()
			return nil
		}
		log.Debug("webhook: post failed; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(w.wait(attempt)):
		}
	}
}

// wait is the jittered pause after failed attempt n (1-based): Backoff
// doubled n-1 times, at most MaxBackoff, times a random factor in [0.5, 1).
func (w *Webhooks) wait(n int) time.Duration {
	d := w.cfg.Backoff
	for i := 1; i < n && d < w.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, w.cfg.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// permanentError is an answer a retry cannot change (a 4xx other than 408,
// 425 and 429): the event is dropped at once.
type permanentError struct{ status int }

func (e permanentError) Error() string { return fmt.Sprintf("webhook answered %d", e.status) }

// post sends one signed POST of body and reads its answer: nil for a 2xx.
func (w *Webhooks) post(ctx context.Context, m event.Message, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(EventIDHeader, m.ID)
	req.Header.Set(EventKindHeader, m.Kind)
	req.Header.Set(SignatureHeader, Sign([]byte(w.cfg.Secret), time.Now(), body))
	resp, err := w.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	switch s := resp.StatusCode; {
	case s >= 200 && s < 300:
		return nil
	case s >= 400 && s < 500 && s != http.StatusRequestTimeout && s != http.StatusTooEarly && s != http.StatusTooManyRequests:
		return permanentError{status: s}
	default:
		return fmt.Errorf("webhook answered %d", s)
	}
}
