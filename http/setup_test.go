package http_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	nethttp "net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

const adminToken = "test-admin-token"

var jwtSecret = []byte("test-secret-of-enough-length-32b")

// env is the real handler over an engine on miniredis and SQLite.
type env struct {
	h nethttp.Handler
	*grab.Grab
	db *store.DB
}

// devAuth turns on X-User-Id.
func devAuth(c *grabhttp.Config) { c.DevAuth = true }

func setup(tb testing.TB, opts ...func(*grabhttp.Config)) *env {
	tb.Helper()
	return setupWith(tb, nil, opts...)
}

// setupWith is setup with a payment provider for the engine (nil: balance
// payments only).
func setupWith(tb testing.TB, provider channel.Provider, opts ...func(*grabhttp.Config)) *env {
	tb.Helper()
	return setupDeps(tb, func(d *grab.Deps) { d.Payments.Provider = provider }, opts...)
}

// setupDeps is setup with the engine's collaborators adjusted by deps.
func setupDeps(tb testing.TB, deps func(*grab.Deps), opts ...func(*grabhttp.Config)) *env {
	tb.Helper()
	return setupMode(tb, engine.PayoutSync, deps, opts...)
}

// setupMode is setupDeps with campaign payouts in payoutMode.
func setupMode(tb testing.TB, payoutMode string, deps func(*grab.Deps), opts ...func(*grabhttp.Config)) *env {
	tb.Helper()
	_, rdb := redistest.Mini(tb)
	db := storetest.SQLite(tb)
	cfg := engine.DefaultConfig()
	cfg.Keys = lua.NewKeys("grab", 4)
	cfg.Writer.Block = 50 * time.Millisecond
	cfg.Writer.MonitorEvery = 50 * time.Millisecond
	// Tests but TestCampaignAsyncPayout read a campaign grab's answer as its payout (sync).
	cfg.PayoutMode = payoutMode
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	d := grab.Deps{Deps: engine.Deps{Redis: rdb, DB: db, Log: log, Metrics: reg}}
	if deps != nil {
		deps(&d)
	}
	g := grab.New(d, cfg)
	hc := grabhttp.Config{JWTSecret: jwtSecret, AdminToken: adminToken}
	for _, o := range opts {
		o(&hc)
	}
	h := grabhttp.New(g, hc, log, reg)
	return &env{h: h, Grab: g, db: db}
}

// startWriter runs the engine's writer until the test ends.
func (e *env) startWriter(tb testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Engine.RunWriter(ctx); close(done) }()
	tb.Cleanup(func() { cancel(); <-done })
}

// auth is a set of request headers.
type auth map[string]string

func admin() auth { return auth{"Authorization": "Bearer " + adminToken} }

func user(id int64) auth {
	return auth{"Authorization": "Bearer " + token(jwt.SigningMethodHS256, jwtSecret, strconv.FormatInt(id, 10), time.Hour)}
}

func token(method jwt.SigningMethod, key any, sub string, ttl time.Duration) string {
	claims := jwt.MapClaims{"sub": sub}
	if ttl != 0 {
		claims["exp"] = time.Now().Add(ttl).Unix()
	}
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		panic(err)
	}
	return s
}

type response struct {
	status int
	header nethttp.Header
	body   []byte
}

// do sends a request through the handler. body "" sends no body.
func (e *env) do(tb testing.TB, method, path, body string, h auth) response {
	tb.Helper()
	var r io.Reader
	if body != "" {
		r = bytes.NewBufferString(body)
	}
	req := httptest.NewRequest(method, path, r)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// object decodes a JSON object response, keeping numbers exact.
func (r response) object(tb testing.TB) map[string]any {
	tb.Helper()
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		tb.Fatalf("response %d is not a JSON object: %v: %s", r.status, err, r.body)
	}
	return m
}

// errorCode returns the code of an error response, failing on any other shape.
func (r response) errorCode(tb testing.TB) string {
	tb.Helper()
	var body struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Error == nil || body.Error.Code == "" || body.Error.Message == "" {
		tb.Fatalf("not an error body (status %d): %s", r.status, r.body)
	}
	return body.Error.Code
}

// money reads the users' balances and the store's money totals.
func (e *env) money(t *testing.T, users ...int64) (map[int64]int64, store.Totals) {
	t.Helper()
	ctx := context.Background()
	balances := map[int64]int64{}
	for _, u := range users {
		b, err := e.Packets.Balance(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		balances[u] = b
	}
	totals, err := e.db.MoneyTotals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return balances, totals
}

// rejectCase is a request the API must refuse with status and code.
type rejectCase struct {
	name         string
	method, path string
	body         string
	auth         auth
	status       int
	code         string
}

// runRejects runs each case as a subtest: never a 5xx, the case's status and
// code in a JSON error body, and snapshot equal before and after it.
func (e *env) runRejects(t *testing.T, cases []rejectCase, snapshot func(t *testing.T) any) {
	t.Helper()
	before := snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(t, c.method, c.path, c.body, c.auth)
			if r.status >= 500 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if r.status != c.status {
				t.Fatalf("status = %d, want %d: %s", r.status, c.status, r.body)
			}
			if code := r.errorCode(t); code != c.code {
				t.Fatalf("code = %s, want %s: %s", code, c.code, r.body)
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Fatalf("content type %q", ct)
			}
			if after := snapshot(t); !reflect.DeepEqual(before, after) {
				t.Fatalf("state changed:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}
