package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/grab-engine/grab/engine"
)

// option is one setting that is not a secret: its flag, its variable and
// the value it reads into, whose current text is the flag's default.
type option struct {
	flag, env, usage string
	val              value
}

// value is an option's flag.Value.
type value interface {
	String() string
	Set(string) error
}

// named is an option's value whose errors name its variable: "ENV: <what
// is wrong>", from the variable or the flag alike.
type named struct {
	value
	env string
}

// String implements flag.Value; the flag package calls it on a zero value too.
func (n named) String() string {
	if n.value == nil {
		return ""
	}
	return n.value.String()
}

// Set implements flag.Value.
func (n named) Set(s string) error {
	if err := n.value.Set(s); err != nil {
		return fmt.Errorf("%s: %w", n.env, err)
	}
	return nil
}

// settings are c's options, each reading into its field of c (engine
// settings into c.Engine, so their defaults are engine.DefaultConfig's);
// GRAB_PAY_PROVIDER reads into providers, checked with the native
// channels' settings. A new setting is a field with its default and one
// line here.
func (c *Config) settings(providers *string) []option {
	e := &c.Engine
	return []option{
		{"addr", "GRAB_ADDR", "listen address", field(&c.Addr, hostPort, text)},
		{"redis-addr", "REDIS_ADDR", "Redis address; several comma-separated for a cluster",
			field(&c.RedisAddrs, addrList, func(a []string) string { return strings.Join(a, ",") })},
		{"mysql-dsn", "MYSQL_DSN", "MySQL DSN, go-sql-driver format", field(&c.MySQLDSN, anyText, text)},
		{"packet-ttl", "GRAB_PACKET_TTL", "how long a paid packet can be grabbed", duration(&e.PacketTTL)},
		{"shards", "GRAB_SHARDS", "event stream shards, fixed for a deployment", intIn(&e.Keys.Shards, 1, 1024)},
		{"auth", "GRAB_AUTH", "dev: accept X-User-Id in place of a JWT", field(&c.DevAuth, authMode, showAuth)},
		{"data-dir", "GRAB_DATA_DIR", "SQLite directory of the embedded mode", field(&c.DataDir, anyText, text)},
		{"lag-limit", "GRAB_LAG_LIMIT", "writer lag past which grabs answer BUSY", duration(&e.LagLimit)},
		{"refund-interval", "GRAB_REFUND_INTERVAL", "how often expired packets are closed and refunded",
			duration(&e.RefundInterval)},
		{"reconcile-interval", "GRAB_RECONCILE_INTERVAL", "how often settled packets are swept for uncredited grabs",
			duration(&e.ReconcileInterval)},
		{"settle-timeout", "GRAB_SETTLE_TIMEOUT", "how long a payment may await settlement before the provider is asked",
			duration(&e.SettleTimeout)},
		{"settle-give-up", "GRAB_SETTLE_GIVE_UP", "how long a trade may go without an outcome before it ends as failed",
			duration(&e.SettleGiveUp)},
		{"pay-provider", "GRAB_PAY_PROVIDER", "comma list of alipay, wechat (their own channels) and one of sim (the built-in simulator) or gateway (the company payment gateway at GRAB_PAY_URL) for the other channels; empty: balance payments only",
			field(providers, anyText, text)},
		{"pay-url", "GRAB_PAY_URL", "base URL of the company payment gateway", field(&c.PayURL, anyText, text)},
		{"pay-notify-base", "GRAB_PAY_NOTIFY_BASE", "grabd's public base URL the payment gateway notifies",
			field(&c.PayNotifyBase, anyText, text)},
		{"grab-pipelines", "GRAB_GRAB_PIPELINES", "pipelines carrying concurrent grabs to Redis; -1: one round trip per grab",
			intIn(&e.GrabPipelines, -1, 256)},
		{"log-level", "GRAB_LOG_LEVEL", "debug, info, warn or error", field(&c.LogLevel, logLevel, showLevel)},
		{"log-flush", "GRAB_LOG_FLUSH", "how long info lines may wait in the log's buffer (warnings and errors never wait); off: each line at once",
			field(&c.LogFlush, flushPeriod, showFlush)},
		{"transfer-url", "GRAB_TRANSFER_URL", "base URL of the transfer service paying campaign awards",
			field(&c.TransferURL, anyText, text)},
		{"transfer-timeout", "GRAB_TRANSFER_TIMEOUT", "bound of one transfer service call", duration(&e.TransferTimeout)},
		{"payout-sweep-interval", "GRAB_PAYOUT_SWEEP_INTERVAL", "how often stuck campaign payouts are swept",
			duration(&e.PayoutSweepInterval)},
		{"payout-retry-after", "GRAB_PAYOUT_RETRY_AFTER", "how long a payout may stay transferring before the sweeper retries it",
			duration(&e.PayoutRetryAfter)},
		{"payout-max-attempts", "GRAB_PAYOUT_MAX_ATTEMPTS", "transfer attempts before an award is parked as needs_attention",
			intIn(&e.PayoutMaxAttempts, 1, 1000)},
		{"payout-mode", "GRAB_PAYOUT_MODE", "async: a campaign grab answers from Redis and a payout pool pays the award; sync: the answer waits for the transfer",
			field(&e.PayoutMode, payoutMode, text)},
		{"payout-workers", "GRAB_PAYOUT_WORKERS", "campaign awards one process pays out at once", intIn(&e.PayoutWorkers, 1, 256)},
		{"transfer-rate", "GRAB_TRANSFER_RATE", "transfer service calls per second of one process; 0: unlimited",
			field(&e.TransferRate, transferRate, showRate)},
		{"nats-url", "GRAB_NATS_URL", "NATS server with JetStream the events are relayed to; empty: in-process in the embedded mode, else no events",
			field(&c.NATSURL, anyText, text)},
		{"nats-stream", "GRAB_NATS_STREAM", "JetStream stream of the events", field(&c.NATSStream, anyText, text)},
		{"events-retention", "GRAB_EVENTS_RETENTION", "how long the stream and the outbox keep events", duration(&c.EventsRetention)},
		{"events-duplicates", "GRAB_EVENTS_DUPLICATES", "the stream's duplicate window: a republished event id within it is dropped",
			duration(&c.EventsDuplicates)},
		{"webhook-url", "GRAB_WEBHOOK_URL", "URL every event is POSTed to, signed with GRAB_WEBHOOK_SECRET; needs NATS; empty: no webhooks",
			field(&c.Webhook.URL, anyText, text)},
		{"webhook-kinds", "GRAB_WEBHOOK_KINDS", "comma list of the event kinds POSTed, e.g. packet.grabbed; empty: every kind",
			field(&c.Webhook.Kinds, textList, func(k []string) string { return strings.Join(k, ",") })},
	}
}

// fieldValue reads text into *dst with parse and shows it with show.
type fieldValue[T any] struct {
	dst   *T
	parse func(string) (T, error)
	show  func(T) string
}

func field[T any](dst *T, parse func(string) (T, error), show func(T) string) value {
	return fieldValue[T]{dst: dst, parse: parse, show: show}
}

// String implements flag.Value; the flag package calls it on a zero value too.
func (v fieldValue[T]) String() string {
	if v.dst == nil {
		return ""
	}
	return v.show(*v.dst)
}

// Set implements flag.Value.
func (v fieldValue[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.dst = x
	return nil
}

func duration(dst *time.Duration) value { return field(dst, parseDuration, showDuration) }

func intIn(dst *int, lo, hi int) value {
	return field(dst, func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%q must be an integer in %d..%d", s, lo, hi)
		}
		return n, nil
	}, strconv.Itoa)
}

func text(s string) string             { return s }
func anyText(s string) (string, error) { return s, nil }

func hostPort(s string) (string, error) {
	if _, _, err := net.SplitHostPort(s); err != nil {
		return "", fmt.Errorf("%q is not [host]:port", s)
	}
	return s, nil
}

// textList is a comma list, blanks dropped.
func textList(s string) ([]string, error) {
	var list []string
	for v := range strings.SplitSeq(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			list = append(list, v)
		}
	}
	return list, nil
}

// addrList is a comma list of host:port, blanks dropped.
func addrList(s string) ([]string, error) {
	var addrs []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, fmt.Errorf("%q is not host:port", a)
			}
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

func authMode(s string) (bool, error) {
	switch s {
	case "":
		return false, nil
	case "dev":
		return true, nil
	}
	return false, fmt.Errorf("%q is not a mode; the only one is dev", s)
}

func showAuth(dev bool) string {
	if dev {
		return "dev"
	}
	return ""
}

func logLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%q must be debug, info, warn or error", s)
	}
	return l, nil
}

func payoutMode(s string) (string, error) {
	if s != engine.PayoutAsync && s != engine.PayoutSync {
		return "", fmt.Errorf("%q must be async or sync", s)
	}
	return s, nil
}

// transferRate reads a rate in calls per second, 0 for unlimited.
func transferRate(s string) (float64, error) {
	r, err := strconv.ParseFloat(s, 64)
	if err != nil || r < 0 || r > 1e6 {
		return 0, fmt.Errorf("%q must be a number of calls per second in 0..1000000", s)
	}
	return r, nil
}

func showRate(r float64) string { return strconv.FormatFloat(r, 'g', -1, 64) }

func showLevel(l slog.Level) string { return strings.ToLower(l.String()) }

// minLogFlush is the shortest log flush period: the buffer's timer fires
// every period, and at 1ns it keeps a core busy with nothing to write.
const minLogFlush = time.Millisecond

// flushPeriod reads a duration of at least minLogFlush, or off (0).
func flushPeriod(s string) (time.Duration, error) {
	if s == "off" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < minLogFlush {
		return 0, fmt.Errorf("%q must be off or a Go duration of at least %v such as 100ms", s, minLogFlush)
	}
	return d, nil
}

func showFlush(d time.Duration) string {
	if d <= 0 {
		return "off"
	}
	return showDuration(d)
}

// parseDuration reads a positive Go duration.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q must be a positive Go duration such as 24h or 500ms", s)
	}
	return d, nil
}

// showDuration is d as people write it: 24h, 1m, 500ms rather than
// 24h0m0s, 1m0s.
func showDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// positiveDuration reads the setting name's positive Go duration.
func positiveDuration(name, v string) (time.Duration, error) {
	d, err := parseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}
