package lua_test

import (
	"slices"
	"testing"
	"time"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
)

func TestFlashProbeKeys(t *testing.T) {
	got := lua.NewKeys("grab", 16).FlashProbe(12, 3)
	want := lua.FlashProbeKeys{SKU: "grab:{fs:12:3}", Events: "grab:{fs:12:3}:events"}
	if got != want {
		t.Fatalf("FlashProbe(12, 3) = %+v\nwant %+v", got, want)
	}
}

// A SKU of 3 sells 3 and turns the fourth order away; its counters add up
// and its stream holds the open and one event per deduct.
func TestFlashProbeSellsTheStockOnce(t *testing.T) {
	ctx := t.Context()
	c, keys := redistest.Real(t, 4)
	k := keys.FlashProbe(1, 1)
	p := c.Pipeline()
	lua.OpenFlashProbe(ctx, p, k, 3, time.Minute)
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	var got []bool
	for _, order := range []string{"o1", "o2", "o3", "o4"} {
		ok, err := lua.FlashProbe(ctx, c, k, order, 1, 1_700_000_000_000)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ok)
	}
	if want := []bool{true, true, true, false}; !slices.Equal(got, want) {
		t.Fatalf("deducts %v; want %v", got, want)
	}
	counters, err := lua.ReadFlashProbe(ctx, c, k)
	if err != nil || counters != (lua.StockCounters{Total: 3, Available: 0, Reserved: 0, Sold: 3}) {
		t.Fatalf("counters %+v, %v; want 3 sold of 3", counters, err)
	}
	if n, err := c.XLen(ctx, k.Events).Result(); err != nil || n != 4 {
		t.Fatalf("stream holds %d entries (%v); want the open and 3 deducts", n, err)
	}
	if ttl, err := c.TTL(ctx, k.SKU).Result(); err != nil || ttl <= 0 {
		t.Fatalf("SKU ttl %v, %v; want it to expire", ttl, err)
	}
}
