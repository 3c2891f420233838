// Command grabbench measures the grab path against a real Redis: the raw
// probe script (what Redis itself can do) beside the engine in-process.
//
//	grabbench -redis 127.0.0.1:6379 -mysql 'root@tcp(127.0.0.1:3306)/test' -grabs 200000 -c 64
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/bench"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "grabbench:", err)
		os.Exit(1)
	}
}

func run() error {
	redisAddr := flag.String("redis", envOr("REDIS_ADDR", "127.0.0.1:6379"), "Redis address")
	mysqlDSN := flag.String("mysql", envOr("MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"), "MySQL DSN (the engine needs a store, the grab path does not touch it)")
	grabs := flag.Int64("grabs", 200_000, "grabs per engine")
	workers := flag.Int("c", 64, "concurrent grabbers")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: *workers + 8})
	defer rdb.Close()
	db, err := store.OpenMySQL(ctx, *mysqlDSN)
	if err != nil {
		return err
	}
	defer db.Close()

	keys := lua.NewKeys(fmt.Sprintf("grabbench%d", time.Now().UnixNano()), 16)
	defer cleanup(context.WithoutCancel(ctx), rdb, keys)
	packets := int(*grabs/bench.SharesPerPacket) + 1
	if err := bench.LoadProbe(ctx, rdb, keys, packets); err != nil {
		return err
	}
	if err := bench.LoadPackets(ctx, rdb, keys, packets, time.Now().Add(time.Hour)); err != nil {
		return err
	}
	cfg := engine.DefaultConfig()
	cfg.Keys = keys
	eng := engine.New(engine.Deps{Redis: rdb, DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, cfg)

	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "engine\tgrabs\terrors\tseconds\tgrabs/s\t")
	var raw float64
	for _, g := range []bench.Grabber{bench.Raw{Redis: rdb, Keys: keys}, bench.Engine{Engine: eng}} {
		r := bench.Run(ctx, g, *workers, *grabs)
		if g.Name() == "raw" {
			raw = r.PerSecond()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.0f\t\n", r.Engine, r.Grabs, r.Errors, r.Elapsed.Seconds(), r.PerSecond())
		if g.Name() != "raw" && raw > 0 {
			defer fmt.Printf("%s vs raw: %.2fx\n", g.Name(), r.PerSecond()/raw)
		}
	}
	return tw.Flush()
}

func cleanup(ctx context.Context, rdb *redis.Client, keys lua.Keys) {
	iter := rdb.Scan(ctx, 0, keys.NS+":*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
