package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/gatewaysim"
	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// grabd is a running embedded-mode server.
type grabd struct {
	base    string
	dataDir string
	cancel  context.CancelFunc
	done    chan error
}

// startEmbedded runs grabd in the embedded mode; extra are more environment variables.
func startEmbedded(t *testing.T, extra ...string) *grabd {
	t.Helper()
	return startEmbeddedWith(t, nil, extra...)
}

// startEmbeddedWith is startEmbedded with change applied to the configuration.
func startEmbeddedWith(t *testing.T, change func(*Config), extra ...string) *grabd {
	t.Helper()
	dir := t.TempDir()
	env := map[string]string{"GRAB_ADDR": "127.0.0.1:0", "GRAB_DATA_DIR": dir}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	cfg, err := ParseConfig(nil, envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(&cfg)
	}
	addrs := make(chan net.Addr, 1)
	cfg.onListen = func(a net.Addr) { addrs <- a }
	ctx, cancel := context.WithCancel(context.Background())
	g := &grabd{dataDir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { g.done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	select {
	case a := <-addrs:
		g.base = "http://" + a.String()
	case err := <-g.done:
		t.Fatalf("Run returned before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("grabd did not start")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-g.done:
		case <-time.After(60 * time.Second):
		}
	})
	return g
}

// stop cancels Run (as SIGTERM does) and returns what it returned.
func (g *grabd) stop(t *testing.T) error {
	t.Helper()
	g.cancel()
	select {
	case err := <-g.done:
		g.done <- err // for the cleanup
		return err
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// call sends a request and decodes the JSON object answered.
func (g *grabd) call(t *testing.T, method, path, body string, headers map[string]string, want int) map[string]any {
	t.Helper()
	req, err := nethttp.NewRequest(method, g.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := nethttp.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s %s: %v: %s", method, path, err, raw)
	}
	return m
}

var adminHeaders = map[string]string{"Authorization": "Bearer dev-admin"}

func as(user int) map[string]string { return map[string]string{"X-User-Id": fmt.Sprint(user)} }

// sendPacket sets up group 7, funds user 1 and sends and pays a lucky packet.
func (g *grabd) sendPacket(t *testing.T) string {
	t.Helper()
	g.call(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3]}`, adminHeaders, 200)
	if b := g.call(t, "POST", "/v1/admin/accounts/1/deposit", `{"amount":"50.00","ref":"d1"}`, adminHeaders, 200); b["balance"] != "50.00" {
		t.Fatalf("deposit = %v", b)
	}
	p := g.call(t, "POST", "/v1/packets", `{"kind":"group_lucky","group_id":7,"count":2,"amount":"10.00"}`, as(1), 201)
	id := p["packet_id"].(json.Number).String()
	if p = g.call(t, "POST", "/v1/packets/"+id+"/pay", `{"method":"balance"}`, as(1), 200); p["status"] != "open" {
		t.Fatalf("paid = %v", p)
	}
	return id
}

func TestEmbeddedMode(t *testing.T) {
	g := startEmbedded(t)
	g.call(t, "GET", "/healthz", "", nil, 200)
	// The writer starts with Run; readiness follows within moments.
	enginetest.WaitFor(t, "grabd to be ready", func() bool {
		resp, err := nethttp.Get(g.base + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	id := g.sendPacket(t)
	g1 := g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200)
	g2 := g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(3), 200)
	if g1["seq"].(json.Number) != "1" || g2["seq"].(json.Number) != "2" {
		t.Fatalf("grabs = %v %v", g1, g2)
	}
	d := g.call(t, "GET", "/v1/packets/"+id, "", as(2), 200)
	if d["status"] != "finished" || len(d["grabs"].([]any)) != 2 || d["my_grab"] == nil {
		t.Fatalf("detail = %v", d)
	}
	if b := g.call(t, "GET", "/v1/balance", "", as(1), 200); b["balance"] != "40.00" {
		t.Fatalf("sender balance = %v", b)
	}
	// Without the dev token admin is closed; a dev user is not admin.
	g.call(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1]}`, as(1), 403)
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

// Cancelling Run (what SIGTERM does) drains the writer: a grab answered just
// before the stop is in SQLite when Run returns.
func TestShutdownDrainsWriter(t *testing.T) {
	g := startEmbedded(t)
	id := g.sendPacket(t)
	r := g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200)
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, filepath.Join(g.dataDir, "grab.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var pid int64
	if _, err := fmt.Sscan(id, &pid); err != nil {
		t.Fatal(err)
	}
	shares, err := db.Shares(ctx, pid)
	if err != nil {
		t.Fatal(err)
	}
	seq := r["seq"].(json.Number).String()
	for _, s := range shares {
		if fmt.Sprint(s.Seq) == seq {
			if !s.UserID.Valid || s.UserID.Int64 != 2 || !s.Credited {
				t.Fatalf("share %s after shutdown = %+v", seq, s)
			}
			if b, _ := db.Balance(ctx, 2); b != int64(s.Amount) {
				t.Fatalf("grabber balance %d, share %d", b, s.Amount)
			}
			return
		}
	}
	t.Fatalf("share %s not found in %+v", seq, shares)
}

func TestParseConfig(t *testing.T) {
	prod := map[string]string{"REDIS_ADDR": "127.0.0.1:6379", "MYSQL_DSN": "root@tcp(127.0.0.1:3306)/grab", "GRAB_JWT_SECRET": "s"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range prod {
			m[a] = b
		}
		m[k] = v
		return m
	}
	with2 := func(k1, v1, k2, v2 string) map[string]string {
		m := with(k1, v1)
		m[k2] = v2
		return m
	}
	// gw is production with the gateway's settings, changed by change.
	gw := func(change map[string]string) map[string]string {
		m := with("GRAB_PAY_PROVIDER", "gateway")
		m["GRAB_PAY_URL"], m["GRAB_PAY_NOTIFY_BASE"], m["GRAB_PAY_SECRET"] = "https://pay.internal/api", "https://grab.example.com", "p"
		for a, b := range change {
			m[a] = b
		}
		return m
	}
	for _, c := range []struct {
		name string
		env  map[string]string
		args []string
		err  string // "" for success
	}{
		{"embedded", nil, nil, ""},
		{"production", prod, nil, ""},
		{"cluster", with("REDIS_ADDR", "a:1, b:2,c:3"), nil, ""},
		{"only redis", map[string]string{"REDIS_ADDR": "127.0.0.1:6379"}, nil, "set both REDIS_ADDR and MYSQL_DSN"},
		{"only mysql", map[string]string{"MYSQL_DSN": "root@tcp(127.0.0.1:3306)/grab"}, nil, "set both REDIS_ADDR and MYSQL_DSN"},
		{"no jwt secret", with("GRAB_JWT_SECRET", ""), nil, "GRAB_JWT_SECRET is required"},
		{"no jwt secret in dev auth", map[string]string{"REDIS_ADDR": "r:1", "MYSQL_DSN": "u@tcp(h:1)/d", "GRAB_AUTH": "dev"}, nil, ""},
		{"bad auth mode", with("GRAB_AUTH", "none"), nil, "GRAB_AUTH"},
		{"bad ttl", with("GRAB_PACKET_TTL", "1 day"), nil, "GRAB_PACKET_TTL"},
		{"negative ttl", with("GRAB_PACKET_TTL", "-1h"), nil, "GRAB_PACKET_TTL"},
		{"bad shards", with("GRAB_SHARDS", "0"), nil, "GRAB_SHARDS"},
		{"pipelines off", with("GRAB_GRAB_PIPELINES", "-1"), nil, ""},
		{"pipelines default", with("GRAB_GRAB_PIPELINES", "0"), nil, ""},
		{"bad pipelines", with("GRAB_GRAB_PIPELINES", "-2"), nil, "GRAB_GRAB_PIPELINES"},
		{"bad env, good flag", with("GRAB_SHARDS", "many"), []string{"-shards", "8"}, ""},
		{"bad lag", with("GRAB_LAG_LIMIT", "fast"), nil, "GRAB_LAG_LIMIT"},
		{"bad refund interval", with("GRAB_REFUND_INTERVAL", "0s"), nil, "GRAB_REFUND_INTERVAL"},
		{"refund interval flag", prod, []string{"-refund-interval", "soon"}, "GRAB_REFUND_INTERVAL"},
		{"bad level", with("GRAB_LOG_LEVEL", "loud"), nil, "GRAB_LOG_LEVEL"},
		{"log unbuffered", with("GRAB_LOG_FLUSH", "off"), nil, ""},
		{"log flush", with("GRAB_LOG_FLUSH", "1s"), nil, ""},
		{"bad log flush", with("GRAB_LOG_FLUSH", "0s"), nil, "GRAB_LOG_FLUSH"},
		{"log flush too often", with("GRAB_LOG_FLUSH", "999us"), nil, "at least 1ms"}, // 1ns: a timer spinning a core
		{"log flush at its least", with("GRAB_LOG_FLUSH", "1ms"), nil, ""},
		{"bad reconcile interval", with("GRAB_RECONCILE_INTERVAL", "-5s"), nil, "GRAB_RECONCILE_INTERVAL"},
		{"bad settle timeout", with("GRAB_SETTLE_TIMEOUT", "later"), nil, "GRAB_SETTLE_TIMEOUT"},
		{"bad settle give-up", with("GRAB_SETTLE_GIVE_UP", "0s"), nil, "GRAB_SETTLE_GIVE_UP"},
		{"unknown pay provider", with("GRAB_PAY_PROVIDER", "paypal"), nil, "GRAB_PAY_PROVIDER"},
		{"the simulator in production", with("GRAB_PAY_PROVIDER", "sim"), nil, "only in the embedded mode or with GRAB_AUTH=dev"},
		{"the simulator with dev auth, without secret", with2("GRAB_PAY_PROVIDER", "sim", "GRAB_AUTH", "dev"), nil, "GRAB_PAY_SECRET"},
		{"an empty provider name", with("GRAB_PAY_PROVIDER", "alipay,,wechat"), nil, "has an empty name"},
		{"only commas", with("GRAB_PAY_PROVIDER", ",,,"), nil, "has an empty name"},
		{"gateway", gw(nil), nil, ""},
		{"gateway in embedded mode", map[string]string{"GRAB_PAY_PROVIDER": "gateway", "GRAB_PAY_URL": "http://pay",
			"GRAB_PAY_NOTIFY_BASE": "http://grab", "GRAB_PAY_SECRET": "p"}, nil, ""},
		{"gateway url flag", gw(nil), []string{"-pay-url", "https://pay.internal:8443/api"}, ""},
		{"gateway without url", gw(map[string]string{"GRAB_PAY_URL": ""}), nil, "GRAB_PAY_URL is required"},
		{"gateway url not http", gw(map[string]string{"GRAB_PAY_URL": "ftp://pay"}), nil, "GRAB_PAY_URL"},
		{"gateway url not a url", gw(map[string]string{"GRAB_PAY_URL": "pay:8080"}), nil, "GRAB_PAY_URL"},
		{"gateway url flag not a url", gw(nil), []string{"-pay-url", "::"}, "GRAB_PAY_URL"},
		{"gateway without notify base", gw(map[string]string{"GRAB_PAY_NOTIFY_BASE": ""}), nil, "GRAB_PAY_NOTIFY_BASE is required"},
		{"gateway notify base not a url", gw(map[string]string{"GRAB_PAY_NOTIFY_BASE": "grab.example.com"}), nil, "GRAB_PAY_NOTIFY_BASE"},
		{"gateway without secret", gw(map[string]string{"GRAB_PAY_SECRET": ""}), nil, "GRAB_PAY_SECRET"},
		{"gateway without secret in embedded mode", map[string]string{"GRAB_PAY_PROVIDER": "gateway", "GRAB_PAY_URL": "http://pay",
			"GRAB_PAY_NOTIFY_BASE": "http://grab"}, nil, "GRAB_PAY_SECRET"},
		{"pay url without the gateway", with("GRAB_PAY_URL", "https://pay.internal"), nil, "GRAB_PAY_PROVIDER=gateway"},
		{"pay url with the simulator", with2("GRAB_PAY_PROVIDER", "sim", "GRAB_PAY_URL", "https://pay.internal"), nil, "GRAB_PAY_PROVIDER=gateway"},
		{"bad redis addr", with("REDIS_ADDR", "localhost"), nil, "REDIS_ADDR"},
		{"bad dsn", with("MYSQL_DSN", "not a dsn"), nil, "MYSQL_DSN"},
		{"bad listen addr", with("GRAB_ADDR", "8080"), nil, "GRAB_ADDR"},
		{"flag overrides env", prod, []string{"-shards", "abc"}, "GRAB_SHARDS"},
		{"transfer service", with2("GRAB_TRANSFER_URL", "https://wallet.internal/api", "GRAB_TRANSFER_SECRET", "t"), nil, ""},
		{"transfer url without secret", with("GRAB_TRANSFER_URL", "https://wallet.internal"), nil, "GRAB_TRANSFER_SECRET"},
		{"webhook without secret", with2("GRAB_NATS_URL", "nats://n:4222", "GRAB_WEBHOOK_URL", "https://hooks.example.com/grab"), []string{"-webhook-kinds", "packet.grabbed, packet.credited"}, "GRAB_WEBHOOK_SECRET is required"},
		{"webhook without nats", with2("GRAB_WEBHOOK_URL", "https://hooks.example.com/grab", "GRAB_WEBHOOK_SECRET", "w"), nil, "GRAB_WEBHOOK_URL needs GRAB_NATS_URL"},
		{"webhook in embedded mode", map[string]string{"GRAB_WEBHOOK_URL": "http://127.0.0.1:9/hook", "GRAB_WEBHOOK_SECRET": "w"}, nil, ""},
		{"webhook url not http", map[string]string{"GRAB_WEBHOOK_URL": "hooks.example.com", "GRAB_WEBHOOK_SECRET": "w"}, nil, "GRAB_WEBHOOK_URL"},
		{"webhook unknown kind", map[string]string{"GRAB_WEBHOOK_URL": "http://h/", "GRAB_WEBHOOK_SECRET": "w"}, []string{"-webhook-kinds", "packet.grabbed,packet.eaten"}, "GRAB_WEBHOOK_KINDS: unknown kind \"packet.eaten\""},
		{"webhook secret without url", map[string]string{"GRAB_WEBHOOK_SECRET": "w"}, nil, "need GRAB_WEBHOOK_URL"},
		{"transfer url not http", with2("GRAB_TRANSFER_URL", "ftp://wallet", "GRAB_TRANSFER_SECRET", "t"), nil, "GRAB_TRANSFER_URL"},
		{"transfer url without host", with2("GRAB_TRANSFER_URL", "http://", "GRAB_TRANSFER_SECRET", "t"), nil, "GRAB_TRANSFER_URL"},
		{"transfer url not a url", with2("GRAB_TRANSFER_URL", "wallet:8080", "GRAB_TRANSFER_SECRET", "t"), nil, "GRAB_TRANSFER_URL"},
		{"transfer url flag", prod, []string{"-transfer-url", "::"}, "GRAB_TRANSFER_URL"},
		{"bad transfer timeout", with("GRAB_TRANSFER_TIMEOUT", "0"), nil, "GRAB_TRANSFER_TIMEOUT"},
		{"bad sweep interval", with("GRAB_PAYOUT_SWEEP_INTERVAL", "often"), nil, "GRAB_PAYOUT_SWEEP_INTERVAL"},
		{"bad retry after", with("GRAB_PAYOUT_RETRY_AFTER", "-30s"), nil, "GRAB_PAYOUT_RETRY_AFTER"},
		{"retry after within the timeout", with("GRAB_PAYOUT_RETRY_AFTER", "3s"), nil, "longer than GRAB_TRANSFER_TIMEOUT"},
		{"longer timeout, longer retry", with2("GRAB_TRANSFER_TIMEOUT", "10s", "GRAB_PAYOUT_RETRY_AFTER", "1m"), nil, ""},
		{"zero max attempts", with("GRAB_PAYOUT_MAX_ATTEMPTS", "0"), nil, "GRAB_PAYOUT_MAX_ATTEMPTS"},
		{"too many max attempts", with("GRAB_PAYOUT_MAX_ATTEMPTS", "1001"), nil, "GRAB_PAYOUT_MAX_ATTEMPTS"},
		{"max attempts flag", prod, []string{"-payout-max-attempts", "x"}, "GRAB_PAYOUT_MAX_ATTEMPTS"},
		{"unknown flag", prod, []string{"-nope"}, "nope"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseConfig(c.args, envOf(c.env))
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("err = %v, want %q", err, c.err)
			}
		})
	}
	cfg, err := ParseConfig(nil, envOf(nil))
	if err != nil || cfg.Addr != ":8080" || cfg.DataDir != "./data" || cfg.LogLevel != slog.LevelInfo || !cfg.Embedded() ||
		!slices.Equal(cfg.PayProviders, []string{providerSim}) {
		t.Fatalf("defaults = %+v, %v", cfg, err)
	}
	if cfg.TransferURL != "" || !reflect.DeepEqual(cfg.Engine, engine.DefaultConfig()) {
		t.Fatalf("engine settings = %+v, want engine.DefaultConfig() %+v", cfg.Engine, engine.DefaultConfig())
	}
	cfg, err = ParseConfig([]string{"-payout-retry-after", "2m", "-payout-max-attempts", "25", "-payout-sweep-interval", "1s"},
		envOf(with2("GRAB_TRANSFER_URL", "http://127.0.0.1:9000", "GRAB_TRANSFER_SECRET", "s3cret")))
	e := cfg.Engine
	if err != nil || cfg.TransferURL != "http://127.0.0.1:9000" || cfg.TransferSecret != "s3cret" || e.PayoutRetryAfter != 2*time.Minute ||
		e.PayoutMaxAttempts != 25 || e.PayoutSweepInterval != time.Second {
		t.Fatalf("payout settings = %+v, %v", cfg, err)
	}
	cfg, err = ParseConfig([]string{"-shards", "8", "-grab-pipelines", "-1"}, envOf(map[string]string{"GRAB_PACKET_TTL": "1h"}))
	if e := cfg.Engine; err != nil || e.Keys != lua.NewKeys("grab", 8) || e.GrabPipelines != -1 || e.PacketTTL != time.Hour {
		t.Fatalf("engine settings = %+v, %v", cfg.Engine, err)
	}
}

// The event settings read into the config; a duplicate window longer than
// the retention, or a stream name NATS refuses, is an error naming its
// variable.
func TestEventSettings(t *testing.T) {
	cfg, err := ParseConfig([]string{"-events-retention", "24h"}, envOf(map[string]string{
		"GRAB_NATS_URL": "nats://127.0.0.1:4222", "GRAB_NATS_STREAM": "EVENTS", "GRAB_EVENTS_DUPLICATES": "5m"}))
	if err != nil || cfg.NATSURL != "nats://127.0.0.1:4222" || cfg.NATSStream != "EVENTS" ||
		cfg.EventsRetention != 24*time.Hour || cfg.EventsDuplicates != 5*time.Minute {
		t.Fatalf("event settings = %q %q %v %v, %v", cfg.NATSURL, cfg.NATSStream, cfg.EventsRetention, cfg.EventsDuplicates, err)
	}
	cfg, err = ParseConfig([]string{"-webhook-kinds", "packet.grabbed, packet.credited"}, envOf(map[string]string{
		"GRAB_NATS_URL": "nats://127.0.0.1:4222", "GRAB_NATS_STREAM": "EVENTS",
		"GRAB_WEBHOOK_URL": "https://hooks.example.com/grab", "GRAB_WEBHOOK_SECRET": "w"}))
	if w := cfg.Webhook; err != nil || w.URL != "https://hooks.example.com/grab" || w.Secret != "w" || w.Stream != "EVENTS" ||
		!slices.Equal(w.Kinds, []string{event.MsgPacketGrabbed, event.MsgPacketCredited}) {
		t.Fatalf("webhook settings = %+v, %v", cfg.Webhook, err)
	}
	for _, c := range []struct{ env, val, want string }{
		{"GRAB_EVENTS_DUPLICATES", "200h", "GRAB_EVENTS_DUPLICATES (200h0m0s) must not be longer than GRAB_EVENTS_RETENTION (168h0m0s)"},
		{"GRAB_NATS_STREAM", "a.b", `GRAB_NATS_STREAM: "a.b" is not a stream name`},
	} {
		if _, err := ParseConfig(nil, envOf(map[string]string{c.env: c.val})); err == nil || err.Error() != c.want {
			t.Errorf("%s=%s: %v, want %s", c.env, c.val, err, c.want)
		}
	}
}

// Every flag's default is its field's default as text (the engine's from
// engine.DefaultConfig): given back as flags, they change nothing.
func TestFlagDefaults(t *testing.T) {
	c := defaultConfig()
	var providers string
	var args []string
	want := map[string]string{"packet-ttl": "24h", "lag-limit": "5s", "refund-interval": "1m", "reconcile-interval": "5s",
		"settle-timeout": "2m", "settle-give-up": "24h", "shards": "16", "grab-pipelines": "4", "transfer-timeout": "3s",
		"payout-sweep-interval": "10s", "payout-retry-after": "30s", "payout-max-attempts": "10", "addr": ":8080",
		"data-dir": "./data", "log-level": "info", "nats-url": "", "nats-stream": "GRAB", "events-retention": "168h",
		"events-duplicates": "2m", "webhook-url": "", "webhook-kinds": ""}
	for _, o := range c.settings(&providers) {
		def := o.val.String()
		if w, ok := want[o.flag]; ok && def != w {
			t.Errorf("-%s defaults to %q, want %q (README)", o.flag, def, w)
		}
		args = append(args, "-"+o.flag+"="+def)
	}
	got, err := ParseConfig(args, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	base, _ := ParseConfig(nil, envOf(nil))
	if !reflect.DeepEqual(got.Engine, engine.DefaultConfig()) || got.Addr != base.Addr || got.LogLevel != base.LogLevel ||
		got.DataDir != base.DataDir || got.DevAuth || len(got.RedisAddrs) != 0 {
		t.Fatalf("the defaults given as flags = %+v, want %+v", got, base)
	}
}

// The embedded mode pays campaign awards through the built-in transfer
// simulator, over HTTP: make run works end to end. A grab answers its award
// received (payout pending), and the payout pool transfers it moments later.
func TestEmbeddedCampaign(t *testing.T) {
	g := startEmbedded(t)
	now := time.Now().UTC()
	body := fmt.Sprintf(`{"name":"demo","budget":"1.00","award_count":3,"award_min":"0.10","award_max":"0.50","starts_at":%q,"ends_at":%q}`,
		now.Add(-time.Minute).Format(time.RFC3339), now.Add(time.Hour).Format(time.RFC3339))
	c := g.call(t, "POST", "/v1/admin/campaigns", body, adminHeaders, 201)
	id := fmt.Sprint(c["campaign_id"])
	var sum int64
	for u := 1; u <= 3; u++ {
		a := g.call(t, "POST", "/v1/campaigns/"+id+"/grab", "", as(u), 200)
		if a["payout"] != "received" {
			t.Fatalf("grab = %v", a)
		}
		sum += decimalFen(t, a["amount"])
	}
	for u := 1; u <= 3; u++ {
		enginetest.WaitFor(t, "the award transferred", func() bool {
			aw := g.call(t, "GET", "/v1/campaigns/"+id+"/awards", "", as(u), 200)["awards"].([]any)
			return len(aw) == 1 && aw[0].(map[string]any)["payout"] == "transferred"
		})
	}
	g.call(t, "POST", "/v1/campaigns/"+id+"/grab", "", as(4), 409)
	// The writer counts awards against the budget moments after the grabs.
	var v map[string]any
	enginetest.WaitFor(t, "the awards counted", func() bool {
		v = g.call(t, "GET", "/v1/admin/campaigns/"+id, "", adminHeaders, 200)
		return v["used_amount"] == "1.00"
	})
	if sum != 100 || v["used_amount"] != "1.00" || v["status"] != "sold_out" {
		t.Fatalf("Σ %d, campaign %v", sum, v)
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// An expired packet is closed and its remainder refunded by grabd's own
// refund job.
func TestEmbeddedRefund(t *testing.T) {
	g := startEmbedded(t, "GRAB_PACKET_TTL", "2s", "GRAB_REFUND_INTERVAL", "50ms") // long enough to pay before it expires on a loaded machine
	id := g.sendPacket(t)
	won := g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200)
	var d map[string]any
	enginetest.WaitFor(t, "the packet refunded", func() bool {
		d = g.call(t, "GET", "/v1/packets/"+id, "", as(1), 200)
		return d["status"] == "refunded"
	})
	amount := decimalFen(t, won["amount"])
	if got := decimalFen(t, d["refunded_amount"]); got != 1000-amount {
		t.Fatalf("refunded %d fen, want 1000 - %d", got, amount)
	}
	// 50.00 deposited, 10.00 sent, the part not grabbed back.
	if b := g.call(t, "GET", "/v1/balance", "", as(1), 200); decimalFen(t, b["balance"]) != 4000+1000-amount {
		t.Fatalf("sender balance = %v", b)
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// awaitPaid waits until the trade is paid.
func (g *grabd) awaitPaid(t *testing.T, tradeNo, what string) {
	t.Helper()
	enginetest.WaitFor(t, what, func() bool {
		return g.call(t, "GET", "/v1/payments/"+tradeNo, "", as(1), 200)["pay_status"] == "paid"
	})
}

// decimalFen reads an API amount ("12.34") as fen.
func decimalFen(t *testing.T, v any) int64 {
	t.Helper()
	s, ok := v.(string)
	var yuan, cents int64
	if n, err := fmt.Sscanf(s, "%d.%02d", &yuan, &cents); !ok || err != nil || n != 2 {
		t.Fatalf("amount %v is not a decimal string", v)
	}
	return yuan*100 + cents
}

// A bad configuration exits 2 with a message, before anything starts.
// -h prints every flag with its variable and exits 0, as the other
// commands do, rather than "flag: help requested" and 2.
func TestMainHelp(t *testing.T) {
	for _, arg := range []string{"-h", "-help", "--help"} {
		var stderr bytes.Buffer
		code := Main(context.Background(), []string{arg}, envOf(nil), &stderr)
		out := stderr.String()
		if code != 0 || !strings.HasPrefix(out, "Usage of grabd:\n") {
			t.Fatalf("%s: code %d, stderr %q", arg, code, out)
		}
		for _, want := range []string{"-log-flush", "(GRAB_LOG_FLUSH)", "-payout-workers", "(GRAB_PAYOUT_WORKERS)",
			"-addr", "-alipay-app-id", "(default 100ms)"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: usage lacks %q:\n%s", arg, want, out)
			}
		}
		if strings.Contains(out, "help requested") {
			t.Errorf("%s: %q", arg, out)
		}
	}
}

func TestMainBadConfigExits2(t *testing.T) {
	var stderr bytes.Buffer
	code := Main(context.Background(), nil, envOf(map[string]string{"REDIS_ADDR": "127.0.0.1:6379"}), &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "set both REDIS_ADDR and MYSQL_DSN, or neither for the embedded mode") {
		t.Fatalf("code %d, stderr %q", code, stderr.String())
	}
}

// The embedded mode pays through the built-in provider simulator: the trade
// settles by itself, its signed notification comes back over HTTP, and the
// packet opens with grabs credited at once.
func TestEmbeddedThirdPartyPayment(t *testing.T) {
	g := startEmbedded(t)
	g.call(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3]}`, adminHeaders, 200)
	p := g.call(t, "POST", "/v1/packets", `{"kind":"group_equal","group_id":7,"count":2,"amount":"1.50"}`, as(1), 201)
	id := fmt.Sprint(p["packet_id"])
	trade := g.call(t, "POST", "/v1/packets/"+id+"/pay", `{"method":"wechat"}`, as(1), 200)
	if trade["status"] != "unpaid" || trade["amount"] != "3.00" {
		t.Fatalf("trade = %v", trade)
	}
	enginetest.WaitFor(t, "the simulated payment to settle", func() bool {
		return g.call(t, "GET", "/v1/packets/"+id, "", as(1), 200)["pay_status"] == "paid"
	})
	if r := g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200); r["credited"] != true || r["amount"] != "1.50" {
		t.Fatalf("grab = %v", r)
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// A restart mid-payment settles: the simulator keeps its trades in the data
// directory, as a real provider keeps them while grabd restarts, and the
// pending trade succeeds after the restart.
func TestEmbeddedPaymentSettlesAcrossARestart(t *testing.T) {
	dir := t.TempDir()
	g := startEmbedded(t, "GRAB_DATA_DIR", dir)
	g.call(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3]}`, adminHeaders, 200)
	p := g.call(t, "POST", "/v1/packets", `{"kind":"group_equal","group_id":7,"count":2,"amount":"1.50"}`, as(1), 201)
	id := fmt.Sprint(p["packet_id"])
	trade := g.call(t, "POST", "/v1/packets/"+id+"/pay", `{"method":"alipay"}`, as(1), 200)
	tradeNo := fmt.Sprint(trade["trade_no"])
	if err := g.stop(t); err != nil { // before the simulator's payer pays (a second)
		t.Fatalf("Run returned %v", err)
	}
	r, err := os.ReadFile(filepath.Join(dir, "paysim.json"))
	if err != nil || !strings.Contains(string(r), `"TradeNo":"`+tradeNo+`"`) || !strings.Contains(string(r), `"Outcome":0`) {
		t.Fatalf("the simulator's trades on disk: %s, %v; want trade %s still pending", r, err, tradeNo)
	}

	g = startEmbedded(t, "GRAB_DATA_DIR", dir)
	g.awaitPaid(t, tradeNo, "the payment to settle after the restart")
	if r := g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200); r["credited"] != true || r["amount"] != "1.50" {
		t.Fatalf("grab = %v", r)
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// GRAB_PAY_PROVIDER=gateway pays through the company gateway at GRAB_PAY_URL
// (here its simulator): the trade is created there, signed, with grabd's
// notify URL for the channel; the gateway's signed notification settles it.
func TestEmbeddedGatewayPayment(t *testing.T) {
	secret := "gateway-secret"
	sim := gatewaysim.New([]byte(secret), gatewaysim.Options{AutoComplete: 50 * time.Millisecond,
		Resend: []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond}})
	defer sim.Close()
	gw := httptest.NewServer(nethttp.StripPrefix("/pay", sim))
	defer gw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0") // grabd's port, known before it starts: the gateway notifies it
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	g := startEmbedded(t, "GRAB_ADDR", addr, "GRAB_PAY_PROVIDER", "gateway", "GRAB_PAY_URL", gw.URL+"/pay",
		"GRAB_PAY_NOTIFY_BASE", "http://"+addr, "GRAB_PAY_SECRET", secret)
	g.call(t, "PUT", "/v1/admin/groups/7/members", `{"user_ids":[1,2,3]}`, adminHeaders, 200)
	p := g.call(t, "POST", "/v1/packets", `{"kind":"group_equal","group_id":7,"count":2,"amount":"1.50"}`, as(1), 201)
	id := fmt.Sprint(p["packet_id"])
	trade := g.call(t, "POST", "/v1/packets/"+id+"/pay", `{"method":"unionpay"}`, as(1), 200)
	tradeNo := fmt.Sprint(trade["trade_no"])
	rec, ok := sim.Trade(tradeNo)
	if !ok || rec.Channel != "unionpay" || rec.Amount != 300 || rec.NotifyURL != "http://"+addr+"/v1/payments/notify/unionpay" {
		t.Fatalf("the gateway holds %+v, %v", rec, ok)
	}
	g.awaitPaid(t, tradeNo, "the gateway payment to settle")
	if r := g.call(t, "POST", "/v1/packets/"+id+"/grab", "", as(2), 200); r["credited"] != true || r["amount"] != "1.50" {
		t.Fatalf("grab = %v", r)
	}
	if sim.Unauthorized() != 0 {
		t.Fatalf("the gateway refused %d of grabd's requests", sim.Unauthorized())
	}
	if err := g.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// The embedded simulators notify grabd at the address it listens on, or at
// loopback when it listens on every address.
func TestSelfURL(t *testing.T) {
	for _, c := range []struct {
		addr *net.TCPAddr
		want string
	}{
		{&net.TCPAddr{Port: 8080}, "http://127.0.0.1:8080"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 8080}, "http://127.0.0.1:8080"},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 8080}, "http://127.0.0.1:8080"},
		{&net.TCPAddr{IP: net.IPv6loopback, Port: 18088}, "http://[::1]:18088"},
		{&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}, "http://127.0.0.1:9"},
	} {
		if got := selfURL(c.addr); got != c.want {
			t.Errorf("selfURL(%v) = %s, want %s", c.addr, got, c.want)
		}
	}
}
