package bench_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/engine"
	grabhttp "github.com/grab-engine/grab/http"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

// grabbers builds the raw probe, the in-process engine and the HTTP API on
// the real Redis, with room for n grabs (the engine and HTTP share packets,
// so use one of them per call). The writer is not running: these measure the
// grab path, not the store.
func grabbers(tb testing.TB, n int) []bench.Grabber {
	tb.Helper()
	ctx := context.Background()
	packets := n/bench.SharesPerPacket + 1
	rdb, keys := redistest.Real(tb, 16)
	if err := bench.LoadProbe(ctx, rdb, keys, packets); err != nil {
		tb.Fatal(err)
	}
	if err := bench.LoadPackets(ctx, rdb, keys, packets, time.Now().Add(time.Hour)); err != nil {
		tb.Fatal(err)
	}
	cfg := engine.DefaultConfig()
	cfg.Keys = keys
	eng := engine.New(engine.Deps{Redis: rdb, DB: storetest.MySQL(tb), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, cfg)
	srv := httptest.NewServer(grabhttp.New(eng, grabhttp.Config{DevAuth: true}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil))
	tb.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	return []bench.Grabber{bench.Raw{Redis: rdb, Keys: keys}, bench.Engine{Engine: eng}, bench.HTTP{URL: srv.URL, Client: client}}
}

func pick(tb testing.TB, n int, name string) bench.Grabber {
	tb.Helper()
	for _, g := range grabbers(tb, n) {
		if g.Name() == name {
			return g
		}
	}
	tb.Fatalf("no grabber %q", name)
	return nil
}

// Every grab of a run lands: one share per (packet, user), no error, no repeat.
func TestRunGrabsEveryShareOnce(t *testing.T) {
	const n = 2000
	for _, name := range []string{"raw", "engine", "http"} {
		g := pick(t, n, name)
		r := bench.Run(context.Background(), g, 32, n)
		if r.Grabs != n || r.Errors != 0 {
			t.Fatalf("%s: %d grabs, %d errors; want %d, 0", g.Name(), r.Grabs, r.Errors, n)
		}
	}
}

// BenchmarkGrab compares, in one run, the raw probe script (what Redis can do)
// with the engine's grab path in-process and through HTTP, on the same Redis.
// Read the ratios of grabs/s.
func BenchmarkGrab(b *testing.B) {
	for _, name := range []string{"raw", "engine", "http"} {
		b.Run(name, func(b *testing.B) {
			g := pick(b, b.N, name)
			var next atomic.Int64
			b.SetParallelism(16) // many clients in flight, as in a group grab
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if err := g.Grab(ctx, next.Add(1)-1); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grabs/s")
		})
	}
}
