package lua

import "testing"

func TestPacketKeys(t *testing.T) {
	k := NewKeys("grab", 16)
	got := k.Packet(123)
	want := PacketKeys{
		State:    "grab:{g:11}:pk:123",
		Shares:   "grab:{g:11}:pk:123:shares",
		Grabbed:  "grab:{g:11}:pk:123:grabbed",
		Eligible: "grab:{g:11}:pk:123:eligible",
		Events:   "grab:{g:11}:events",
		Epoch:    "grab:{g:11}:epoch",
		LoadLock: "grab:{g:11}:pk:123:loadlock",
	}
	if got != want {
		t.Fatalf("Packet(123) = %+v\nwant %+v", got, want)
	}
	// Every grab builds its packet's keys: they cost one allocation.
	if n := testing.AllocsPerRun(100, func() { k.Packet(123) }); n != 1 {
		t.Fatalf("Packet allocates %v times, want 1", n)
	}
	if n := testing.AllocsPerRun(100, func() { k.Campaign(123) }); n != 1 {
		t.Fatalf("Campaign allocates %v times, want 1", n)
	}
	if got := NewKeys("a-namespace-much-longer-than-the-usual-few-letters-of-grab-or-a-test", 1).Packet(-5); got.Epoch !=
		"a-namespace-much-longer-than-the-usual-few-letters-of-grab-or-a-test:{g:00}:epoch" ||
		got.State != "a-namespace-much-longer-than-the-usual-few-letters-of-grab-or-a-test:{g:00}:pk:-5" {
		t.Fatalf("long namespace: %+v", got)
	}
	if s := k.Events(7); s != "grab:{g:07}:events" {
		t.Fatalf("Events(7) = %q", s)
	}
	if s := k.DeadLetters(0); s != "grab:{g:00}:dead" {
		t.Fatalf("DeadLetters(0) = %q", s)
	}
}

func TestCampaignKeys(t *testing.T) {
	got := NewKeys("grab", 16).Campaign(123)
	want := CampaignKeys{
		State:    "grab:{g:11}:cp:123",
		Awards:   "grab:{g:11}:cp:123:awards",
		Users:    "grab:{g:11}:cp:123:users",
		Awarded:  "grab:{g:11}:cp:123:awarded",
		Events:   "grab:{g:11}:events",
		Epoch:    "grab:{g:11}:epoch",
		LoadLock: "grab:{g:11}:cp:123:loadlock",
	}
	if got != want {
		t.Fatalf("Campaign(123) = %+v\nwant %+v", got, want)
	}
	if s := NewKeys("grab", 16).Campaign(7).State; s != "grab:{g:07}:cp:7" {
		t.Fatalf("Campaign(7).State = %q", s)
	}
}

func TestDefaults(t *testing.T) {
	k := NewKeys("", 0)
	if k.NS != "grab" || k.Shards != 16 {
		t.Fatalf("defaults = %+v", k)
	}
}

// Each builder, pinned for a namespace and shard count other than the
// defaults: the shard is the id modulo Shards, two digits at least.
func TestKeysOtherNamespaceAndShards(t *testing.T) {
	k := NewKeys("t1", 4)
	if s := k.Packet(123).State; s != "t1:{g:03}:pk:123" {
		t.Errorf("Packet(123).State = %q", s)
	}
	if s := k.Campaign(5).Users; s != "t1:{g:01}:cp:5:users" {
		t.Errorf("Campaign(5).Users = %q", s)
	}
	wide := NewKeys("grab", 100)
	if s := wide.Packet(123).Events; s != "grab:{g:23}:events" {
		t.Errorf("100 shards: Packet(123).Events = %q", s)
	}
	if s := wide.Events(99); s != "grab:{g:99}:events" {
		t.Errorf("Events(99) = %q", s)
	}
	if s, want := wide.Shard(123), 23; s != want {
		t.Errorf("Shard(123) = %d, want %d", s, want)
	}
}

func TestShardKeys(t *testing.T) {
	k := NewKeys("grab", 16)
	for got, want := range map[string]string{
		k.Events(12):      "grab:{g:12}:events",
		k.Epoch(3):        "grab:{g:03}:epoch",
		k.DeadLetters(15): "grab:{g:15}:dead",
		k.StockOrders(2):  "grab:{g:02}:sorders",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestProbeKeys(t *testing.T) {
	got := NewKeys("grab", 16).Probe(42)
	want := ProbeKeys{Shares: "grab:{g:10}:probe:42:shares", Grabbed: "grab:{g:10}:probe:42:grabbed",
		Events: "grab:{g:10}:probe:42:events"}
	if got != want {
		t.Fatalf("Probe(42) = %+v\nwant %+v", got, want)
	}
}

// A product's stock keys sit on its StockShard, a hash of both ids.
func TestStockKeys(t *testing.T) {
	for _, c := range []struct {
		ns     string
		shards int
		shard  int
		tag    string
	}{{"grab", 16, 10, "grab:{g:10}"}, {"t1", 4, 2, "t1:{g:02}"}, {"grab", 100, 38, "grab:{g:38}"}} {
		k := NewKeys(c.ns, c.shards)
		if s := k.StockShard(7, 9); s != c.shard {
			t.Errorf("%s/%d: StockShard(7, 9) = %d, want %d", c.ns, c.shards, s, c.shard)
		}
		got := k.Stock(7, 9)
		want := StockKeys{Record: c.tag + ":stk:7:9:rec", Events: c.tag + ":events", Epoch: c.tag + ":epoch",
			LoadLock: c.tag + ":stk:7:9:loadlock", Orders: c.tag + ":sorders", base: c.tag + ":stk:7:9"}
		if got != want {
			t.Errorf("Stock(7, 9) = %+v\nwant %+v", got, want)
		}
		if s := got.SKU(3); s != c.tag+":stk:7:9:sku:3" {
			t.Errorf("SKU(3) = %q", s)
		}
	}
}

// Keys of an order or voucher across products carry their own hash tag.
func TestStockCrossProductKeys(t *testing.T) {
	k := NewKeys("grab", 16)
	for got, want := range map[string]string{
		k.StockOrder("o1"):   "grab:{so:o1}",
		k.StockVoucher("v1"): "grab:{sv:v1}",
		k.StockPending():     "grab:{so}:pending",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
