package lua_test

// The events the scripts write, read back: each script runs on miniredis
// (the stock scripts on the real Redis too), its stream entries are read
// with XRANGE and ReadEvent, and every field must be what the script did.
// Entries no script writes are errors.

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
)

const (
	eventsNow     = 1_700_000_000_000
	eventsExpires = eventsNow + 86_400_000
)

var eventsAt = time.UnixMilli(eventsNow).UTC()

// readEvents reads every entry of a stream with ReadEvent, in stream order.
func readEvents(t *testing.T, c *redis.Client, stream string) []event.Event {
	t.Helper()
	entries, err := c.XRange(context.Background(), stream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]event.Event, len(entries))
	for i, m := range entries {
		if out[i], err = lua.ReadEvent(m.Values); err != nil {
			t.Fatalf("entry %s %v: %v", m.ID, m.Values, err)
		}
	}
	return out
}

// loadPacket loads packet 123 (seq 1: 500 fen, seq 2: 300 fen, paid, users
// 10 and 11 eligible) on a miniredis at eventsNow.
func loadPacket(t *testing.T) (*redis.Client, lua.PacketKeys) {
	t.Helper()
	m, c := redistest.Mini(t)
	m.SetTime(eventsAt) // keys expire at an absolute time
	k := lua.NewKeys("grab", 16).Packet(123)
	st := lua.PacketState{Status: "open", ExpiresAtMs: eventsExpires, Credit: true, KeepUntilMs: eventsExpires + 3_600_000,
		Shares: []lua.Share{{Seq: 1, Amount: 500}, {Seq: 2, Amount: 300}}, Eligible: []int64{10, 11}}
	if res, err := lua.Load(context.Background(), c, k, st); err != nil || res != lua.Loaded {
		t.Fatalf("load = %v, %v", res, err)
	}
	return c, k
}

func grab(t *testing.T, c *redis.Client, k lua.PacketKeys, user, nowMs int64) {
	t.Helper()
	if r, err := lua.Grab(context.Background(), c, k, 123, user, nowMs, "r"+string(rune('0'+user%10))); err != nil || r.Code != lua.GrabGranted {
		t.Fatalf("grab by %d = %+v, %v", user, r, err)
	}
}

func TestGrabAndCloseEventsRoundTrip(t *testing.T) {
	t.Run("grabs", func(t *testing.T) {
		c, k := loadPacket(t)
		grab(t, c, k, 10, eventsNow)
		grab(t, c, k, 11, eventsNow+5)
		want := []event.Event{
			event.Grab{PacketID: 123, UserID: 10, Seq: 1, Amount: 500, At: eventsAt, Credit: true},
			event.Grab{PacketID: 123, UserID: 11, Seq: 2, Amount: 300, At: eventsAt.Add(5 * time.Millisecond), Credit: true, Finished: true},
		}
		if got := readEvents(t, c, k.Events); !reflect.DeepEqual(got, want) {
			t.Fatalf("events %+v\nwant %+v", got, want)
		}
	})
	t.Run("close", func(t *testing.T) {
		c, k := loadPacket(t)
		grab(t, c, k, 10, eventsNow)
		if r, err := lua.Close(context.Background(), c, k, 123, eventsExpires); err != nil || r.Code != lua.CloseClosed {
			t.Fatalf("close = %+v, %v", r, err)
		}
		want := []event.Event{
			event.Grab{PacketID: 123, UserID: 10, Seq: 1, Amount: 500, At: eventsAt, Credit: true},
			event.Close{PacketID: 123, Remainder: 300, Count: 1, At: time.UnixMilli(eventsExpires).UTC()},
		}
		if got := readEvents(t, c, k.Events); !reflect.DeepEqual(got, want) {
			t.Fatalf("events %+v\nwant %+v", got, want)
		}
	})
}

func TestAwardEventRoundTrip(t *testing.T) {
	m, c := redistest.Mini(t)
	m.SetTime(eventsAt)
	k := lua.NewKeys("grab", 16).Campaign(77)
	st := lua.CampaignState{Status: "open", StartsAtMs: eventsNow - 60_000, EndsAtMs: eventsNow + 3_600_000, PerUserLimit: 1,
		KeepUntilMs: eventsNow + 7_200_000, Awards: []lua.Share{{Seq: 1, Amount: 500}, {Seq: 2, Amount: 300}}}
	if res, err := lua.LoadCampaign(context.Background(), c, k, st); err != nil || res != lua.Loaded {
		t.Fatalf("load = %v, %v", res, err)
	}
	for i, user := range []int64{10, 11} {
		r, err := lua.CampaignGrab(context.Background(), lua.Direct(c), k, 77, user, eventsNow+int64(i), "r"+string(rune('0'+i)))
		if err != nil || r.Code != lua.GrabGranted {
			t.Fatalf("campaign grab by %d = %+v, %v", user, r, err)
		}
	}
	want := []event.Event{
		event.Award{CampaignID: 77, Seq: 1, UserID: 10, Amount: 500, At: eventsAt},
		event.Award{CampaignID: 77, Seq: 2, UserID: 11, Amount: 300, At: eventsAt.Add(time.Millisecond)},
	}
	if got := readEvents(t, c, k.Events); !reflect.DeepEqual(got, want) {
		t.Fatalf("events %+v\nwant %+v", got, want)
	}
}

// A submit and a deduct each change SKU 1 and carry their record; a deduct
// refused for want of stock changes nothing and sends its record alone.
func TestStockEventsRoundTrip(t *testing.T) {
	stockRedises(t, func(t *testing.T, c *redis.Client, keys lua.Keys) {
		k := keys.Stock(1, 2)
		verifyEmpty(t, c, k)
		runStock(t, c, k, lua.StockOp{Op: "submit", ID: "v:s", Items: hs(1, 10)})
		runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:1", Items: hs(1, 3)})
		runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:big", Items: hs(1, 100)})
		at := time.UnixMilli(stockNow).UTC()
		rec := func(ref, value string, rank int) *event.StockRecord {
			return &event.StockRecord{ActivityID: 1, ProductID: 2, Ref: ref, Value: value, Rank: rank, At: at}
		}
		want := []event.Event{
			event.Stock{ActivityID: 1, ProductID: 2, SKU: 1, Version: 1, Status: "on",
				Scopes: []event.StockScope{{Scope: "high_seas", Total: 10, Available: 10}},
				Op:     "submit", Ref: "v:s", Change: "high_seas:+10", At: at,
				Record: rec("v:s", "submit###1|high_seas|10", 1)},
			event.Stock{ActivityID: 1, ProductID: 2, SKU: 1, Version: 2, Status: "on",
				Scopes: []event.StockScope{{Scope: "high_seas", Total: 10, Available: 7, Sold: 3}},
				Op:     "deduct", Ref: "o:1", Change: "high_seas:deduct:3", At: at,
				Record: rec("o:1", "d#1|high_seas|3", 1)},
			*rec("o:big", "x#OUT_OF_STOCK#", 1),
		}
		if got := readEvents(t, c, k.Events); !reflect.DeepEqual(got, want) {
			t.Fatalf("events\n%+v\nwant\n%+v", got, want)
		}
	})
}

func TestReadEventRejectsMalformedEntries(t *testing.T) {
	grab := map[string]any{"t": "grab", "pk": "1", "u": "2", "seq": "1", "amt": "5", "at": "1", "cr": "1", "fin": "0"}
	cls := map[string]any{"t": "close", "pk": "1", "rem": "5", "n": "2", "at": "1"}
	stock := map[string]any{"t": "stock", "a": "1", "p": "2", "sku": "3", "ver": "4", "st": "on",
		"snap": "high_seas=1,1,0,0", "op": "submit", "ref": "v", "chg": "x", "at": "1"}
	srec := map[string]any{"t": "srec", "a": "1", "p": "2", "ref": "v", "val": "submit###", "at": "1"}
	award := map[string]any{"t": "award", "cp": "1", "u": "2", "seq": "1", "amt": "5", "at": "1"}
	for _, good := range []map[string]any{grab, cls, stock, srec, award} {
		if _, err := lua.ReadEvent(good); err != nil {
			t.Fatalf("%v: %v", good, err)
		}
	}
	// with is base with the fields of kv set; a field set to del is removed.
	const del = "\x00"
	with := func(base map[string]any, kv ...string) map[string]any {
		out := map[string]any{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == del {
				delete(out, kv[i])
			} else {
				out[kv[i]] = kv[i+1]
			}
		}
		return out
	}
	cases := []struct {
		name    string
		values  map[string]any
		wantErr string
	}{
		{"no type", with(grab, "t", del), `unknown event type ""`},
		{"unknown type", with(grab, "t", "refund"), `unknown event type "refund"`},
		{"grab without packet", with(grab, "pk", del), `field "pk"`},
		{"grab with a negative amount", with(grab, "amt", "-5"), "packet, user, seq and amount must be positive"},
		{"grab of seq 0", with(grab, "seq", "0"), "packet, user, seq and amount must be positive"},
		{"grab without time", with(grab, "at", del), `field "at"`},
		{"grab with a fractional amount", with(grab, "amt", "5.5"), `field "amt"`},
		{"close without count", with(cls, "n", del), `field "n"`},
		{"close of less than a fen a share", with(cls, "rem", "1"), "remainder at least a fen a share"},
		{"close of shares for nothing", with(cls, "rem", "0"), "remainder at least a fen a share"},
		{"close of a negative count", with(cls, "n", "-1", "rem", "0"), "remainder at least a fen a share"},
		{"close of a negative packet", with(cls, "pk", "-1"), "packet must be positive"},
		{"stock without version", with(stock, "ver", del), `field "ver"`},
		{"stock of version 0", with(stock, "ver", "0"), "activity, product, SKU and version must be positive"},
		{"stock with a short snapshot", with(stock, "snap", "high_seas=1,1,0"), `stock scopes "high_seas=1,1,0"`},
		{"stock carrying an empty record", with(stock, "rv", ""), "ref and value set"},
		{"stock carrying a record without ref", with(stock, "rv", "submit###", "ref", del), "ref and value set"},
		{"grab with an empty amount", with(grab, "amt", ""), `field "amt"`},
		{"record without ref", with(srec, "ref", del), "ref and value set"},
		{"record without value", with(srec, "val", ""), "ref and value set"},
		{"record of rank 3", with(srec, "rk", "3"), "rank 1 or 2"},
		{"record of a negative product", with(srec, "p", "-2"), "activity and product must be positive"},
		{"award without campaign", with(award, "cp", del), `field "cp"`},
		{"award of user 0", with(award, "u", "0"), "campaign, user, seq and amount must be positive"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := lua.ReadEvent(tc.values)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || ev != nil {
				t.Fatalf("ReadEvent = %+v, %v; want an error with %q", ev, err, tc.wantErr)
			}
		})
	}
}

// An entry written before the scripts stopped sending a record's rank
// carries it as rk, which wins over the rank its value implies.
func TestReadEventTakesAnOldRecordsRank(t *testing.T) {
	ev, err := lua.ReadEvent(map[string]any{"t": "srec", "a": "1", "p": "2", "ref": "o:1", "val": "d#1|high_seas|3",
		"rk": "2", "at": "1"})
	want := event.StockRecord{ActivityID: 1, ProductID: 2, Ref: "o:1", Value: "d#1|high_seas|3", Rank: 2, At: time.UnixMilli(1).UTC()}
	if err != nil || ev != want {
		t.Fatalf("ReadEvent = %+v, %v; want %+v", ev, err, want)
	}
}
