package lua

import (
	"context"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/alicebob/miniredis/v2"
)

// A shard's epoch holds while the dataset does: new connections to the same
// server keep it; a dataset flushed in place (same run id) gets a new one.
func TestEpochChangesWhenTheDatasetIsLostInPlace(t *testing.T) {
	ctx := context.Background()
	m := miniredis.RunT(t)
	k := NewKeys("grab", 4)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c.Close() })
	WatchDataset(c, k)
	first, err := EnsureEpoch(ctx, c, k.Epoch(2))
	if err != nil || !strings.HasPrefix(first, anonymousRunID+":") {
		t.Fatalf("epoch = %q, %v", first, err)
	}
	// Another client, so another first connection: it stamps, and keeps the epoch.
	c2 := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { c2.Close() })
	WatchDataset(c2, k)
	if again, err := EnsureEpoch(ctx, c2, k.Epoch(2)); err != nil || again != first {
		t.Fatalf("epoch after a new connection = %q, %v; want %q", again, err, first)
	}
	m.FlushAll()
	after, err := EnsureEpoch(ctx, c, k.Epoch(2))
	if err != nil || after == first || !strings.HasPrefix(after, anonymousRunID+":") {
		t.Fatalf("epoch after FLUSHALL = %q, %v; was %q", after, err, first)
	}
	// A stamp naming another run id (a restart, or an older AOF) is replaced.
	c.Set(ctx, k.Epoch(3), "another-run:abc", 0)
	if err := stamp(ctx, c, k); err != nil {
		t.Fatal(err)
	}
	if v := c.Get(ctx, k.Epoch(3)).Val(); !strings.HasPrefix(v, anonymousRunID+":") {
		t.Fatalf("epoch of another run id kept: %q", v)
	}
}
