package engine_test

import (
	"context"
	"sync"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
	"github.com/grab-engine/grab/store/storetest"
)

// On Redis Cluster the grab path, the writer and the rebuild work unchanged:
// every script's keys share one hash tag, so each runs on one node, and
// packets of different shards spread over the nodes.
func TestRedisCluster(t *testing.T) {
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: redistest.StartCluster(t, 3), PoolSize: 64})
	t.Cleanup(func() { rdb.Close() })
	if err := lua.Preload(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	e := enginetest.NewEnv(t, rdb, lua.NewKeys("grab", 16), storetest.MySQL(t))
	e.StartWriter(t)

	nodes := map[string]bool{}
	winners := map[int64]map[int64]packet.GrabResult{} // packet -> user -> share
	for range 4 {
		p := e.GroupPacket(t, packet.KindGroupLucky, 20, 10, 1000)
		node, err := rdb.MasterForKey(ctx, e.Keys.Packet(p.ID).State)
		if err != nil {
			t.Fatal(err)
		}
		nodes[node.Options().Addr] = true

		var mu sync.Mutex
		var wg sync.WaitGroup
		won := map[int64]packet.GrabResult{}
		for u := int64(1); u <= 20; u++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r, err := e.Packets.Grab(ctx, p.ID, u); err == nil {
					mu.Lock()
					won[u] = r
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		var sum int64
		for _, r := range won {
			sum += r.Amount
		}
		if len(won) != 10 || sum != 1000 {
			t.Fatalf("packet %d: %d winners, %d fen; want 10, 1000", p.ID, len(won), sum)
		}
		winners[p.ID] = won
		e.Drain(t, p.ID, 10)
	}
	if len(nodes) < 2 {
		t.Fatalf("4 packets of 4 shards all on one node: %v", nodes)
	}

	// Every node loses its data: a winner's grab rebuilds the packet from the
	// store and answers the same share as a repeat.
	if err := rdb.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.FlushAll(ctx).Err() }); err != nil {
		t.Fatal(err)
	}
	for packetID, won := range winners {
		for u, first := range won {
			r, err := e.Packets.Grab(ctx, packetID, u)
			if err != nil || !r.Repeat || r.Seq != first.Seq || r.Amount != first.Amount {
				t.Fatalf("packet %d, user %d after the loss = %+v, %v; want seq %d again", packetID, u, r, err, first.Seq)
			}
			break
		}
	}
}
