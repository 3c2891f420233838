package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
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
	// ReconcileInterval is how often grabs of settled packets are swept for
	// credits and stale settlements are queried (GRAB_RECONCILE_INTERVAL).
	ReconcileInterval time.Duration
	// SettleTimeout is how long a payment may await settlement before the
	// provider is asked (GRAB_SETTLE_TIMEOUT).
	SettleTimeout time.Duration
	// SettleGiveUp is how long a trade may go without an outcome before it
	// ends as failed (GRAB_SETTLE_GIVE_UP).
	SettleGiveUp time.Duration
	PacketTTL    time.Duration // GRAB_PACKET_TTL
	Shards       int           // GRAB_SHARDS
	DevAuth      bool          // GRAB_AUTH=dev
	DataDir      string        // GRAB_DATA_DIR, embedded mode only
	LagLimit     time.Duration // GRAB_LAG_LIMIT
	// RefundInterval is how often expired packets are closed and refunded (GRAB_REFUND_INTERVAL).
	RefundInterval time.Duration
	LogLevel       slog.Level // GRAB_LOG_LEVEL
	// GrabPipelines is how many pipelines carry concurrent grabs to Redis;
	// 0 sends each grab on its own (GRAB_GRAB_PIPELINES).
	GrabPipelines int
	// TransferURL is the base URL of the wallet transfer service that pays
	// campaign awards (GRAB_TRANSFER_URL). Empty: the built-in simulator in
	// the embedded mode, none in production (awards stay received).
	TransferURL string
	// TransferSecret signs requests to the transfer service (GRAB_TRANSFER_SECRET).
	TransferSecret string
	// TransferTimeout bounds one call of the transfer service (GRAB_TRANSFER_TIMEOUT).
	TransferTimeout time.Duration
	// PayoutSweepInterval is how often stuck payouts are swept (GRAB_PAYOUT_SWEEP_INTERVAL).
	PayoutSweepInterval time.Duration
	// PayoutRetryAfter is how long a payout may stay transferring, or an
	// award received, before the sweeper drives it again (GRAB_PAYOUT_RETRY_AFTER).
	PayoutRetryAfter time.Duration
	// PayoutMaxAttempts is how many transfer attempts an award gets before it
	// is parked as needs_attention (GRAB_PAYOUT_MAX_ATTEMPTS).
	PayoutMaxAttempts int

	// payerDelay is how long the embedded mode's simulators wait before
	// paying a trade as the demo's payer; zero means a second (tests change it).
	payerDelay time.Duration

	// onListen, when set, is told the address the server listens on (tests use port 0).
	onListen func(net.Addr)
}

// Embedded reports the embedded mode: neither Redis nor MySQL configured.
func (c Config) Embedded() bool { return len(c.RedisAddrs) == 0 && c.MySQLDSN == "" }

// ParseConfig reads the environment through getenv, then flags from args.
func ParseConfig(args []string, getenv func(string) string) (Config, error) {
	env := func(k, def string) string {
		if v := strings.TrimSpace(getenv(k)); v != "" {
			return v
		}
		return def
	}
	fs := flag.NewFlagSet("grabd", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", env("GRAB_ADDR", ":8080"), "listen address (GRAB_ADDR)")
	redisAddr := fs.String("redis-addr", env("REDIS_ADDR", ""), "Redis address; several comma-separated for a cluster (REDIS_ADDR)")
	dsn := fs.String("mysql-dsn", env("MYSQL_DSN", ""), "MySQL DSN, go-sql-driver format (MYSQL_DSN)")
	ttl := fs.String("packet-ttl", env("GRAB_PACKET_TTL", "24h"), "how long a paid packet can be grabbed (GRAB_PACKET_TTL)")
	shards := fs.String("shards", env("GRAB_SHARDS", "16"), "event stream shards, fixed for a deployment (GRAB_SHARDS)")
	authMode := fs.String("auth", env("GRAB_AUTH", ""), "dev: accept X-User-Id in place of a JWT (GRAB_AUTH)")
	dataDir := fs.String("data-dir", env("GRAB_DATA_DIR", "./data"), "SQLite directory of the embedded mode (GRAB_DATA_DIR)")
	lag := fs.String("lag-limit", env("GRAB_LAG_LIMIT", "5s"), "writer lag past which grabs answer BUSY (GRAB_LAG_LIMIT)")
	refund := fs.String("refund-interval", env("GRAB_REFUND_INTERVAL", "1m"), "how often expired packets are closed and refunded (GRAB_REFUND_INTERVAL)")
	reconcile := fs.String("reconcile-interval", env("GRAB_RECONCILE_INTERVAL", "5s"), "how often settled packets are swept for uncredited grabs (GRAB_RECONCILE_INTERVAL)")
	settleTimeout := fs.String("settle-timeout", env("GRAB_SETTLE_TIMEOUT", "2m"), "how long a payment may await settlement before the provider is asked (GRAB_SETTLE_TIMEOUT)")
	settleGiveUp := fs.String("settle-give-up", env("GRAB_SETTLE_GIVE_UP", "24h"), "how long a trade may go without an outcome before it ends as failed (GRAB_SETTLE_GIVE_UP)")
	provider := fs.String("pay-provider", env("GRAB_PAY_PROVIDER", ""), "comma list of alipay, wechat (their own channels) and one of sim (the built-in simulator) or gateway (the company payment gateway at GRAB_PAY_URL) for the other channels; empty: balance payments only (GRAB_PAY_PROVIDER)")
	payURL := fs.String("pay-url", env("GRAB_PAY_URL", ""), "base URL of the company payment gateway (GRAB_PAY_URL)")
	payNotifyBase := fs.String("pay-notify-base", env("GRAB_PAY_NOTIFY_BASE", ""), "grabd's public base URL the payment gateway notifies (GRAB_PAY_NOTIFY_BASE)")
	pipelines := fs.String("grab-pipelines", env("GRAB_GRAB_PIPELINES", "4"), "pipelines carrying concurrent grabs to Redis; 0: one round trip per grab (GRAB_GRAB_PIPELINES)")
	level := fs.String("log-level", env("GRAB_LOG_LEVEL", "info"), "debug, info, warn or error (GRAB_LOG_LEVEL)")
	transferURL := fs.String("transfer-url", env("GRAB_TRANSFER_URL", ""), "base URL of the transfer service paying campaign awards (GRAB_TRANSFER_URL)")
	transferTimeout := fs.String("transfer-timeout", env("GRAB_TRANSFER_TIMEOUT", "3s"), "bound of one transfer service call (GRAB_TRANSFER_TIMEOUT)")
	sweep := fs.String("payout-sweep-interval", env("GRAB_PAYOUT_SWEEP_INTERVAL", "10s"), "how often stuck campaign payouts are swept (GRAB_PAYOUT_SWEEP_INTERVAL)")
	retryAfter := fs.String("payout-retry-after", env("GRAB_PAYOUT_RETRY_AFTER", "30s"), "how long a payout may stay transferring before the sweeper retries it (GRAB_PAYOUT_RETRY_AFTER)")
	maxAttempts := fs.String("payout-max-attempts", env("GRAB_PAYOUT_MAX_ATTEMPTS", "10"), "transfer attempts before an award is parked as needs_attention (GRAB_PAYOUT_MAX_ATTEMPTS)")
	natives := nativeFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	c := Config{Addr: *addr, MySQLDSN: *dsn, JWTSecret: getenv("GRAB_JWT_SECRET"), AdminToken: getenv("GRAB_ADMIN_TOKEN"),
		PaySecret: getenv("GRAB_PAY_SECRET"), PayURL: *payURL, PayNotifyBase: *payNotifyBase, DataDir: *dataDir,
		TransferURL: *transferURL, TransferSecret: getenv("GRAB_TRANSFER_SECRET")}
	for _, a := range strings.Split(*redisAddr, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return Config{}, fmt.Errorf("REDIS_ADDR: %q is not host:port", a)
			}
			c.RedisAddrs = append(c.RedisAddrs, a)
		}
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return Config{}, fmt.Errorf("GRAB_ADDR: %q is not [host]:port", c.Addr)
	}
	var err error
	if c.PacketTTL, err = positiveDuration("GRAB_PACKET_TTL", *ttl); err != nil {
		return Config{}, err
	}
	if c.LagLimit, err = positiveDuration("GRAB_LAG_LIMIT", *lag); err != nil {
		return Config{}, err
	}
	if c.RefundInterval, err = positiveDuration("GRAB_REFUND_INTERVAL", *refund); err != nil {
		return Config{}, err
	}
	if c.ReconcileInterval, err = positiveDuration("GRAB_RECONCILE_INTERVAL", *reconcile); err != nil {
		return Config{}, err
	}
	if c.SettleTimeout, err = positiveDuration("GRAB_SETTLE_TIMEOUT", *settleTimeout); err != nil {
		return Config{}, err
	}
	if c.SettleGiveUp, err = positiveDuration("GRAB_SETTLE_GIVE_UP", *settleGiveUp); err != nil {
		return Config{}, err
	}
	if err := c.parsePayouts(*transferTimeout, *sweep, *retryAfter, *maxAttempts); err != nil {
		return Config{}, err
	}
	if c.Shards, err = strconv.Atoi(*shards); err != nil || c.Shards < 1 || c.Shards > 1024 {
		return Config{}, fmt.Errorf("GRAB_SHARDS: %q must be an integer in 1..1024", *shards)
	}
	if c.GrabPipelines, err = strconv.Atoi(*pipelines); err != nil || c.GrabPipelines < 0 || c.GrabPipelines > 256 {
		return Config{}, fmt.Errorf("GRAB_GRAB_PIPELINES: %q must be an integer in 0..256", *pipelines)
	}
	if err := c.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return Config{}, fmt.Errorf("GRAB_LOG_LEVEL: %q must be debug, info, warn or error", *level)
	}
	switch *authMode {
	case "":
	case "dev":
		c.DevAuth = true
	default:
		return Config{}, fmt.Errorf("GRAB_AUTH: %q is not a mode; the only one is dev", *authMode)
	}

	if err := c.parsePayProviders(*provider, natives); err != nil {
		return Config{}, err
	}

	switch {
	case c.Embedded():
		if c.DataDir == "" {
			return Config{}, errors.New("GRAB_DATA_DIR must not be empty")
		}
		if len(c.PayProviders) == 0 {
			c.PayProviders = []string{providerSim}
		}
	case len(c.RedisAddrs) == 0 || c.MySQLDSN == "":
		return Config{}, errors.New("set both REDIS_ADDR and MYSQL_DSN, or neither for the embedded mode")
	default:
		if _, err := mysql.ParseDSN(c.MySQLDSN); err != nil {
			return Config{}, fmt.Errorf("MYSQL_DSN: %v", err)
		}
		if c.JWTSecret == "" && !c.DevAuth {
			return Config{}, errors.New("GRAB_JWT_SECRET is required (or GRAB_AUTH=dev, never in production)")
		}
		if c.Pays(providerSim) && !c.DevAuth {
			// It settles every trade by itself: packets would open on money nobody paid.
			return Config{}, errors.New("GRAB_PAY_PROVIDER=sim pays every trade by itself with no money moving: only in the embedded mode or with GRAB_AUTH=dev")
		}
		if c.PaySecret == "" && (c.Pays(providerSim) || c.Pays(providerGateway)) {
			return Config{}, errors.New("GRAB_PAY_SECRET is required with GRAB_PAY_PROVIDER=sim or gateway")
		}
	}
	return c, nil
}

// parsePayouts reads the transfer service and payout sweeper settings.
func (c *Config) parsePayouts(timeout, sweep, retryAfter, maxAttempts string) error {
	if c.TransferURL != "" {
		if err := httpURL("GRAB_TRANSFER_URL", c.TransferURL); err != nil {
			return err
		}
		if c.TransferSecret == "" {
			return errors.New("GRAB_TRANSFER_SECRET is required with GRAB_TRANSFER_URL")
		}
	}
	var err error
	if c.TransferTimeout, err = positiveDuration("GRAB_TRANSFER_TIMEOUT", timeout); err != nil {
		return err
	}
	if c.PayoutSweepInterval, err = positiveDuration("GRAB_PAYOUT_SWEEP_INTERVAL", sweep); err != nil {
		return err
	}
	if c.PayoutRetryAfter, err = positiveDuration("GRAB_PAYOUT_RETRY_AFTER", retryAfter); err != nil {
		return err
	}
	// A sweeper that retried a payout whose first call may still be running
	// would waste a call (money still moves once: the number is the same).
	if c.PayoutRetryAfter <= c.TransferTimeout {
		return fmt.Errorf("GRAB_PAYOUT_RETRY_AFTER (%v) must be longer than GRAB_TRANSFER_TIMEOUT (%v)", c.PayoutRetryAfter, c.TransferTimeout)
	}
	if c.PayoutMaxAttempts, err = strconv.Atoi(maxAttempts); err != nil || c.PayoutMaxAttempts < 1 || c.PayoutMaxAttempts > 1000 {
		return fmt.Errorf("GRAB_PAYOUT_MAX_ATTEMPTS: %q must be an integer in 1..1000", maxAttempts)
	}
	return nil
}

func positiveDuration(name, v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q must be a positive Go duration such as 24h or 500ms", name, v)
	}
	return d, nil
}

// httpURL checks that the setting name holds an http or https URL with a host.
func httpURL(name, v string) error {
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s: %q must be an http or https URL", name, v)
	}
	return nil
}
