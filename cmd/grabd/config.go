package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/events"
)

// Config is grabd's configuration, from the environment; flags mirror the
// settings that are not secrets (secrets stay out of the process list).
type Config struct {
	Addr       string   // GRAB_ADDR
	RedisAddrs []string // REDIS_ADDR, comma-separated; several mean Redis Cluster
	MySQLDSN   string   // MYSQL_DSN
	JWTSecret  string   // GRAB_JWT_SECRET
	AdminToken string   // GRAB_ADMIN_TOKEN
	// PaySecret verifies payment-provider notifications (GRAB_PAY_SECRET).
	PaySecret string
	// PayProviders take third-party payments (GRAB_PAY_PROVIDER, a comma
	// list): "alipay" and "wechat" pay their own channel; "sim", the built-in
	// simulator (the embedded default), or "gateway", the company payment
	// gateway at PayURL, pays every channel no native provider takes. Empty:
	// balance payments only.
	PayProviders []string
	// Alipay and Wechat are the native channels' settings (GRAB_ALIPAY_*,
	// GRAB_WECHAT_*), with their key files read.
	Alipay AlipaySettings
	Wechat WechatSettings
	// PayURL is the company payment gateway's base URL (GRAB_PAY_URL),
	// required with GRAB_PAY_PROVIDER=gateway.
	PayURL string
	// PayNotifyBase is grabd's public base URL as the gateway reaches it
	// (GRAB_PAY_NOTIFY_BASE), required with the gateway: each trade's
	// notify_url is it + /v1/payments/notify/{channel}.
	PayNotifyBase string
	DevAuth       bool       // GRAB_AUTH=dev
	DataDir       string     // GRAB_DATA_DIR, embedded mode only
	LogLevel      slog.Level // GRAB_LOG_LEVEL
	// LogFlush is how long an info or debug line may wait in the log's
	// buffer before it is written (GRAB_LOG_FLUSH); 0 ("off") writes every
	// line at once. Warnings and errors are written at once either way.
	LogFlush time.Duration
	// TransferURL is the base URL of the wallet transfer service that pays
	// campaign awards (GRAB_TRANSFER_URL). Empty: the built-in simulator in
	// the embedded mode, none in production (awards stay received).
	TransferURL string
	// TransferSecret signs requests to the transfer service (GRAB_TRANSFER_SECRET).
	TransferSecret string
	// NATSURL is the NATS server (with JetStream) the outbox's events are
	// relayed to (GRAB_NATS_URL). Empty: the embedded mode runs one in-process
	// under DataDir/nats; production writes no events.
	NATSURL string
	// NATSStream is the JetStream stream of the events (GRAB_NATS_STREAM).
	NATSStream string
	// EventsRetention is how long the stream, and the outbox its published
	// rows, keep events (GRAB_EVENTS_RETENTION).
	EventsRetention time.Duration
	// EventsDuplicates is the stream's duplicate window: a republished event
	// id within it is dropped (GRAB_EVENTS_DUPLICATES).
	EventsDuplicates time.Duration
	// Webhook posts events to one URL (GRAB_WEBHOOK_URL, GRAB_WEBHOOK_SECRET,
	// GRAB_WEBHOOK_KINDS); not Enabled without a URL. It needs NATS: it
	// reads the events' stream.
	Webhook events.WebhookConfig
	// Engine is the engine's configuration: engine.DefaultConfig, changed
	// by the settings that name an engine field (settings).
	Engine engine.Config

	// payerDelay is how long the embedded mode's simulators wait before
	// paying a trade as the demo's payer; zero means a second (tests change it).
	payerDelay time.Duration

	// onListen, when set, is told the address the server listens on (tests use port 0).
	onListen func(net.Addr)
}

// Embedded reports the embedded mode: neither Redis nor MySQL configured.
func (c Config) Embedded() bool { return len(c.RedisAddrs) == 0 && c.MySQLDSN == "" }

// defaultConfig is grabd's configuration before the environment and flags.
func defaultConfig() Config {
	return Config{Addr: ":8080", DataDir: "./data", LogLevel: slog.LevelInfo, LogFlush: 100 * time.Millisecond,
		Engine:     engine.DefaultConfig(),
		NATSStream: "GRAB", EventsRetention: 7 * 24 * time.Hour, EventsDuplicates: 2 * time.Minute}
}

// ParseConfig reads the environment through getenv, then flags from args
// (a flag overrides its variable), then checks the settings together.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	c := defaultConfig()
	providers, natives, err := c.readSettings(args, getenv)
	if err != nil {
		return Config{}, err
	}
	c.JWTSecret, c.AdminToken = getenv("GRAB_JWT_SECRET"), getenv("GRAB_ADMIN_TOKEN")
	c.PaySecret, c.TransferSecret = getenv("GRAB_PAY_SECRET"), getenv("GRAB_TRANSFER_SECRET")
	c.Webhook.Secret = getenv("GRAB_WEBHOOK_SECRET")
	if err := c.parsePayouts(); err != nil {
		return Config{}, err
	}
	if err := c.checkEvents(); err != nil {
		return Config{}, err
	}
	if err := c.parsePayProviders(providers, natives); err != nil {
		return Config{}, err
	}
	if err := c.checkMode(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// readSettings reads every option (settings) and the native channels'
// settings, each from its variable and then its flag; it answers
// GRAB_PAY_PROVIDER's list and the native settings as given. A bad variable
// is an error only when its flag does not override it.
func (c *Config) readSettings(args []string, getenv func(string) string) (string, *nativeSettings, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	var providers string
	fs := flag.NewFlagSet("grabd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	envErrs := map[string]error{} // by flag
	list := c.settings(&providers)
	for _, s := range list {
		val := named{s.val, s.env}
		if v := env(s.env, ""); v != "" {
			envErrs[s.flag] = val.Set(v)
		}
		fs.Var(val, s.flag, s.usage+" ("+s.env+")")
	}
	natives := nativeFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			var usage strings.Builder
			fs.SetOutput(&usage)
			fs.PrintDefaults()
			return "", nil, helpError(usage.String())
		}
		return "", nil, err
	}
	if fs.NArg() > 0 {
		return "", nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { delete(envErrs, f.Name) })
	for _, s := range list {
		if err := envErrs[s.flag]; err != nil {
			return "", nil, err
		}
	}
	return providers, natives, nil
}

// helpError is ParseConfig's answer to -h: the flags' usage, each with
// its variable and default, for Main to print.
type helpError string

func (e helpError) Error() string { return "Usage of grabd:\n" + string(e) }

// checkMode checks what the mode needs: the embedded mode a data
// directory (and the payment simulator unless told otherwise), production
// both stores, a JWT secret and no self-paying simulator.
func (c *Config) checkMode() error {
	switch {
	case c.Embedded():
		if c.DataDir == "" {
			return errors.New("GRAB_DATA_DIR must not be empty")
		}
		if len(c.PayProviders) == 0 {
			c.PayProviders = []string{providerSim}
		}
	case len(c.RedisAddrs) == 0 || c.MySQLDSN == "":
		return errors.New("set both REDIS_ADDR and MYSQL_DSN, or neither for the embedded mode")
	default:
		if _, err := mysql.ParseDSN(c.MySQLDSN); err != nil {
			return fmt.Errorf("MYSQL_DSN: %v", err)
		}
		if c.JWTSecret == "" && !c.DevAuth {
			return errors.New("GRAB_JWT_SECRET is required (or GRAB_AUTH=dev, never in production)")
		}
		if c.Pays(providerSim) && !c.DevAuth {
			// It settles every trade by itself: packets would open on money nobody paid.
			return errors.New("GRAB_PAY_PROVIDER=sim pays every trade by itself with no money moving: only in the embedded mode or with GRAB_AUTH=dev")
		}
		if c.PaySecret == "" && (c.Pays(providerSim) || c.Pays(providerGateway)) {
			return errors.New("GRAB_PAY_SECRET is required with GRAB_PAY_PROVIDER=sim or gateway")
		}
	}
	return nil
}

// parsePayouts checks the transfer service and payout sweeper settings together.
func (c *Config) parsePayouts() error {
	if c.TransferURL != "" {
		if err := httpURL("GRAB_TRANSFER_URL", c.TransferURL); err != nil {
			return err
		}
		if c.TransferSecret == "" {
			return errors.New("GRAB_TRANSFER_SECRET is required with GRAB_TRANSFER_URL")
		}
	}
	// A sweeper that retried a payout whose first call may still be running
	// would waste a call (money still moves once: the number is the same).
	if e := c.Engine; e.PayoutRetryAfter <= e.TransferTimeout {
		return fmt.Errorf("GRAB_PAYOUT_RETRY_AFTER (%v) must be longer than GRAB_TRANSFER_TIMEOUT (%v)", e.PayoutRetryAfter, e.TransferTimeout)
	}
	return nil
}

// checkEvents checks the event settings together.
func (c *Config) checkEvents() error {
	if c.NATSStream == "" || strings.ContainsAny(c.NATSStream, ".*> \t") {
		return fmt.Errorf("GRAB_NATS_STREAM: %q is not a stream name", c.NATSStream)
	}
	// A duplicate window longer than the stream keeps events would track
	// ids of events it no longer holds; JetStream refuses it.
	if c.EventsDuplicates > c.EventsRetention {
		return fmt.Errorf("GRAB_EVENTS_DUPLICATES (%v) must not be longer than GRAB_EVENTS_RETENTION (%v)", c.EventsDuplicates, c.EventsRetention)
	}
	return c.checkWebhook()
}

// checkWebhook checks the webhook settings as events.WebhookConfigFromEnv
// does, and that there is a stream to read: GRAB_NATS_URL, or the embedded
// mode's in-process NATS.
func (c *Config) checkWebhook() error {
	set := map[string]string{"GRAB_WEBHOOK_URL": c.Webhook.URL, "GRAB_WEBHOOK_SECRET": c.Webhook.Secret,
		"GRAB_WEBHOOK_KINDS": strings.Join(c.Webhook.Kinds, ",")}
	w, err := events.WebhookConfigFromEnv(func(k string) string { return set[k] })
	if err != nil {
		return err
	}
	if w.Enabled() && c.NATSURL == "" && !c.Embedded() {
		return errors.New("GRAB_WEBHOOK_URL needs GRAB_NATS_URL: webhooks post the events of the NATS stream, and without NATS there are none")
	}
	w.Stream = c.NATSStream
	c.Webhook = w
	return nil
}

// httpURL checks that the setting name holds an http or https URL with a host.
func httpURL(name, v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: %q must be an http or https URL", name, v)
	}
	return nil
}
