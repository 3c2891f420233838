package http_test

import (
	"context"
	"io"
	"log/slog"
	nethttp "net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/packet"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

// BenchmarkGrabHandler measures what grabd's handler adds to a packet grab:
// POST /v1/packets/{id}/grab through the whole gin chain (X-User-Id auth,
// the access log at info to a discarding handler, the request metrics, the
// hand-written answer), on the real Redis, with no network between client
// and handler and no writer. Each packet's 1,000 shares go to users 1..1000
// in turn; then the next packet. allocs/op is the handler's and the engine's
// per request.
func BenchmarkGrabHandler(b *testing.B) {
	const shares = 1000
	rdb, keys := redistest.Real(b, 4)
	cfg := engine.DefaultConfig()
	cfg.Keys = keys
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	reg := prometheus.NewRegistry()
	g := grab.New(grab.Deps{Deps: engine.Deps{Redis: rdb, DB: storetest.SQLite(b), Log: log, Metrics: reg}}, cfg)
	h := grabhttp.New(g, grabhttp.Config{DevAuth: true}, log, reg)

	ctx := context.Background()
	now := time.Now()
	st := lua.PacketState{Status: packet.StatusOpen, Credit: true,
		ExpiresAtMs: now.Add(time.Hour).UnixMilli(), KeepUntilMs: now.Add(2 * time.Hour).UnixMilli()}
	for i := range shares {
		st.Shares = append(st.Shares, lua.Share{Seq: i + 1, Amount: 100})
		st.Eligible = append(st.Eligible, int64(i+1))
	}
	packets := b.N/shares + 1
	paths := make([]string, packets)
	for p := range packets {
		id := int64(1_000_000 + p)
		if _, err := lua.Load(ctx, rdb, keys.Packet(id), st); err != nil {
			b.Fatal(err)
		}
		paths[p] = "/v1/packets/" + strconv.FormatInt(id, 10) + "/grab"
	}
	users := make([]string, shares)
	for u := range users {
		users[u] = strconv.Itoa(u + 1)
	}

	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		r := httptest.NewRequest(nethttp.MethodPost, paths[i/shares], nil)
		r.Header.Set("X-User-Id", users[i%shares])
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != nethttp.StatusOK {
			b.Fatalf("grab %d: %d %s", i, w.Code, w.Body)
		}
	}
}
