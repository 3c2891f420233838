package lua

import (
	"context"
	"io/fs"
	"os"
	"slices"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// Every .lua file of the package is part of a registered script, so Preload
// loads it.
func TestEveryLuaFileIsRegistered(t *testing.T) {
	files, err := fs.Glob(sources, "*.lua")
	if err != nil || len(files) == 0 {
		t.Fatalf("embedded .lua files = %v, %v", files, err)
	}
	var registered []string
	for _, s := range scripts {
		registered = append(registered, s.files...)
	}
	for _, f := range files {
		if !slices.Contains(registered, f) {
			t.Errorf("%s is in no registered script", f)
		}
	}
	if n := len(scripts); n != 17 {
		t.Errorf("%d scripts registered, want 17", n)
	}
}

// Preload loads every registered script, on miniredis and on the real Redis
// (SCRIPT LOAD touches no key), after which each is in the script cache.
func TestPreloadLoadsEveryScript(t *testing.T) {
	t.Run("miniredis", func(t *testing.T) {
		m := miniredis.RunT(t)
		preloadAll(t, redis.NewClient(&redis.Options{Addr: m.Addr()}))
	})
	t.Run("redis", func(t *testing.T) {
		if testing.Short() {
			t.Skip("integration test: needs Redis (run without -short)")
		}
		addr := os.Getenv("REDIS_ADDR")
		if addr == "" {
			addr = "127.0.0.1:6379"
		}
		preloadAll(t, redis.NewClient(&redis.Options{Addr: addr}))
	})
}

func preloadAll(t *testing.T, c *redis.Client) {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	if err := Preload(ctx, c); err != nil {
		t.Fatalf("Preload: %v", err)
	}
	for _, s := range scripts {
		ok, err := s.Exists(ctx, c).Result()
		if err != nil || len(ok) != 1 || !ok[0] {
			t.Errorf("%v not in the script cache after Preload: %v, %v", s.files, ok, err)
		}
	}
}
