package lua_test

// The stock scripts and stock_load.lua on their own: a product not verified under
// the shard's epoch runs nothing, every record written reaches the stream
// with its rank (script writes, typed reader reads), and a verification
// takes MySQL's SKUs and records only where MySQL is ahead. On miniredis
// and on the real Redis.

import (
	"context"
	"reflect"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
)

const stockNow = 1_700_000_000_000

// stockRedises runs f on miniredis and on the real Redis.
func stockRedises(t *testing.T, f func(t *testing.T, c *redis.Client, keys lua.Keys)) {
	t.Run("miniredis", func(t *testing.T) {
		_, c := redistest.Mini(t)
		f(t, c, lua.NewKeys("grab", 4))
	})
	t.Run("redis", func(t *testing.T) {
		c, keys := redistest.Real(t, 4)
		f(t, c, keys)
	})
}

// verifyEmpty marks a product verified under its shard's epoch with nothing
// from MySQL, as the engine does for a product new to both.
func verifyEmpty(t *testing.T, c *redis.Client, k lua.StockKeys) string {
	t.Helper()
	epoch, err := lua.EnsureEpoch(context.Background(), c, k.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	if res, _, err := lua.FinishStockLoad(context.Background(), c, k, epoch, nil); err != nil || res != lua.Loaded {
		t.Fatalf("finish = %v, %v; want Loaded", res, err)
	}
	return epoch
}

func runStock(t *testing.T, c *redis.Client, k lua.StockKeys, op lua.StockOp) lua.StockReply {
	t.Helper()
	op.NowMs, op.ActivityID, op.ProductID = stockNow, 1, 2
	r, err := lua.Stock(context.Background(), lua.Direct(c), k, op)
	if err != nil {
		t.Fatalf("%s %s: %v", op.Op, op.ID, err)
	}
	return r
}

func hs(sku, qty int64) []lua.StockItem {
	return []lua.StockItem{{SKU: sku, Scope: "high_seas", Qty: qty}}
}

func TestStockScriptVerifiesFirst(t *testing.T) {
	stockRedises(t, func(t *testing.T, c *redis.Client, keys lua.Keys) {
		ctx := context.Background()
		k := keys.Stock(1, 2)
		// No epoch key, no mark: nothing runs, nothing is written.
		if r := runStock(t, c, k, lua.StockOp{Op: "submit", ID: "v:s", Items: hs(1, 10)}); r.Code != lua.StockVerify {
			t.Fatalf("submit before verification = %+v", r)
		}
		if n, _ := c.Exists(ctx, k.Record, k.SKU(1), k.Events).Result(); n != 0 {
			t.Fatalf("%d keys written by a refused op", n)
		}
		verifyEmpty(t, c, k)
		if r := runStock(t, c, k, lua.StockOp{Op: "submit", ID: "v:s", Items: hs(1, 10)}); r.Code != lua.StockOK {
			t.Fatalf("submit after verification = %+v", r)
		}
		st, verify, err := lua.ReadStockSKU(ctx, c, k, 1)
		if err != nil || verify {
			t.Fatalf("read = %v, %v", verify, err)
		}
		want := lua.StockSKUState{Status: "on", Version: 1, Scopes: map[string]lua.StockCounters{"high_seas": {Total: 10, Available: 10}}}
		if !reflect.DeepEqual(st, want) {
			t.Fatalf("SKU %+v, want %+v", st, want)
		}
		// Another dataset (a restart's new run id): every op and read verifies again.
		if err := c.Set(ctx, k.Epoch, "another-run-id", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if r := runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:1", Items: hs(1, 1)}); r.Code != lua.StockVerify {
			t.Fatalf("deduct under another epoch = %+v", r)
		}
		if _, verify, _ := lua.ReadStockSKU(ctx, c, k, 1); !verify {
			t.Fatal("SKU read under another epoch did not ask for verification")
		}
		if _, verify, _ := lua.ReadStockRecord(ctx, c, k, "v:s"); !verify {
			t.Fatal("record read under another epoch did not ask for verification")
		}
	})
}

// Every record a stock script sets is in the stream as t=srec with its rank, and
// ReadStockRecord reads what the script wrote.
func TestStockRecordsReachTheStream(t *testing.T) {
	stockRedises(t, func(t *testing.T, c *redis.Client, keys lua.Keys) {
		ctx := context.Background()
		k := keys.Stock(1, 2)
		verifyEmpty(t, c, k)
		ops := []lua.StockOp{
			{Op: "submit", ID: "v:s", Items: hs(1, 10)},
			{Op: "submit", ID: "v:again", Items: hs(1, 5)}, // refused: its answer is a record too
			{Op: "deduct", ID: "o:1", Items: hs(1, 3)},
			{Op: "deduct", ID: "o:big", Items: hs(1, 100)}, // refused: x
			{Op: "try", ID: "t:g/b", Items: hs(1, 2)},
			{Op: "rollback", ID: "v:never"}, // a tombstone
		}
		for _, op := range ops {
			runStock(t, c, k, op)
		}
		for _, id := range []string{"o:1", "t:g/b"} {
			rec, _, err := lua.ReadStockRecord(ctx, c, k, id)
			if err != nil {
				t.Fatal(err)
			}
			_, items, _ := lua.ParseStockRecord(rec)
			op := map[string]string{"o:1": "return", "t:g/b": "confirm"}[id]
			runStock(t, c, k, lua.StockOp{Op: op, ID: id, Items: items, Seen: rec})
		}
		want := map[string][2]string{ // ref -> value, rank
			"v:s":     {"submit###1|high_seas|10", "1"},
			"v:again": {"submit#ALREADY_SUBMITTED#1#", "1"},
			"o:1":     {"r#1|high_seas|3", "2"},
			"o:big":   {"x#OUT_OF_STOCK#", "1"},
			"t:g/b":   {"f#1|high_seas|2", "2"},
			"v:never": {"rollback###", "2"},
		}
		entries, err := c.XRange(ctx, k.Events, "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		// A record rides on its op's last stock event (rv), or, when the
		// op changed no SKU, is an entry of its own (t=srec).
		last := map[string][2]string{}
		n, alone := 0, 0
		for _, m := range entries {
			v := m.Values
			val, ok := v["rv"]
			if v["t"] == "srec" {
				val, ok = v["val"], true
				alone++
			}
			if !ok {
				continue
			}
			n++
			if v["a"] != "1" || v["p"] != "2" || v["at"] != strconv.Itoa(stockNow) {
				t.Fatalf("record entry %v", v)
			}
			last[v["ref"].(string)] = [2]string{val.(string), strconv.Itoa(lua.StockRecordRank(val.(string)))}
		}
		if !reflect.DeepEqual(last, want) {
			t.Fatalf("records in the stream %v\nwant %v", last, want)
		}
		if n != len(want)+2 { // o:1 and t:g/b were written twice: d then r, t then f
			t.Fatalf("%d records in the stream, want %d", n, len(want)+2)
		}
		if alone != 3 { // v:again, o:big and v:never changed no SKU
			t.Fatalf("%d t=srec entries, want 3", alone)
		}
		if len(entries) != 8 { // five stock events, each with its op's record, and the three
			t.Fatalf("%d entries in the stream, want 8", len(entries))
		}
		for ref, v := range want {
			rec, verify, err := lua.ReadStockRecord(ctx, c, k, ref)
			if err != nil || verify || rec != v[0] {
				t.Fatalf("record %s = %q (verify %v, %v), want %q", ref, rec, verify, err, v[0])
			}
		}
	})
}

// A verification takes a SKU from MySQL only when MySQL's version is newer
// (or Redis lacks it), and a record only when MySQL's rank is higher (or
// Redis lacks it); the product is then verified under the epoch, and later
// changes continue from MySQL's version.
func TestStockLoadTakesWhatMySQLHasNewer(t *testing.T) {
	stockRedises(t, func(t *testing.T, c *redis.Client, keys lua.Keys) {
		ctx := context.Background()
		k := keys.Stock(1, 2)
		verifyEmpty(t, c, k)
		runStock(t, c, k, lua.StockOp{Op: "submit", ID: "v:s", Items: []lua.StockItem{{SKU: 1, Scope: "high_seas", Qty: 10},
			{SKU: 2, Scope: "high_seas", Qty: 10}}})
		runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:1", Items: hs(2, 1)})
		runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:2", Items: hs(2, 1)})
		runStock(t, c, k, lua.StockOp{Op: "try", ID: "t:g/b", Items: hs(1, 1)})
		// SKU 1 is at version 2 in Redis, SKU 2 at version 3; Redis knows o:1, o:2, t:g/b.
		epoch := "epoch-2"
		if err := c.Set(ctx, k.Epoch, epoch, 0).Err(); err != nil {
			t.Fatal(err)
		}
		// Read under an epoch that has moved since: nothing is written.
		if res, _, err := lua.LoadStockRecords(ctx, c, k, "epoch-1", []lua.StockRecordEntry{{Ref: "o:9", Value: "d#1|high_seas|1", Rank: 1}}); err != nil || res != lua.Moved {
			t.Fatalf("records under a moved epoch = %v, %v", res, err)
		}
		if res, _, err := lua.FinishStockLoad(ctx, c, k, "epoch-1", nil); err != nil || res != lua.Moved {
			t.Fatalf("finish under a moved epoch = %v, %v", res, err)
		}
		recs := []lua.StockRecordEntry{
			{Ref: "o:1", Value: "r#2|high_seas|1", Rank: 2},   // returned: MySQL ahead
			{Ref: "o:2", Value: "d#2|high_seas|1", Rank: 1},   // same
			{Ref: "o:3", Value: "x#OUT_OF_STOCK#", Rank: 1},   // Redis lost it
			{Ref: "t:g/b", Value: "t#1|high_seas|1", Rank: 1}, // same
		}
		res, set, err := lua.LoadStockRecords(ctx, c, k, epoch, recs)
		if err != nil || res != lua.Verified || set != 2 {
			t.Fatalf("records = %v, %d, %v; want Verified, 2", res, set, err)
		}
		// Redis is still refused until the finish.
		if r := runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:4", Items: hs(1, 1)}); r.Code != lua.StockVerify {
			t.Fatalf("deduct between records and finish = %+v", r)
		}
		// A lower rank never replaces a higher one.
		if _, _, err := lua.LoadStockRecords(ctx, c, k, epoch, []lua.StockRecordEntry{{Ref: "o:1", Value: "d#2|high_seas|1", Rank: 1}}); err != nil {
			t.Fatal(err)
		}
		skus := []lua.StockSnapshot{
			{SKU: 1, Status: "on", Version: 1, Scopes: map[string]lua.StockCounters{"high_seas": {Total: 10, Available: 10}}}, // older: Redis keeps its own
			{SKU: 2, Status: "on", Version: 5, Scopes: map[string]lua.StockCounters{"high_seas": {Total: 10, Available: 9, Sold: 1},
				"pool:7": {Total: 2, Available: 2}}}, // newer
			{SKU: 3, Status: "off", Version: 4, Scopes: map[string]lua.StockCounters{"high_seas": {Total: 4, Sold: 4}}}, // Redis lacks it
			{SKU: 4, Status: "", Version: 3}, // a submit rolled back
		}
		res, taken, err := lua.FinishStockLoad(ctx, c, k, epoch, skus)
		if err != nil || res != lua.Verified || taken != 3 {
			t.Fatalf("finish = %v, %d, %v; want Verified, 3", res, taken, err)
		}
		if res, _, err := lua.FinishStockLoad(ctx, c, k, epoch, skus); err != nil || res != lua.Fresh {
			t.Fatalf("second finish = %v, %v; want Fresh", res, err)
		}
		wantSKU := map[int64]lua.StockSKUState{
			1: {Status: "on", Version: 2, Scopes: map[string]lua.StockCounters{"high_seas": {Total: 10, Available: 9, Reserved: 1}}},
			2: {Status: "on", Version: 5, Scopes: map[string]lua.StockCounters{"high_seas": {Total: 10, Available: 9, Sold: 1}, "pool:7": {Total: 2, Available: 2}}},
			3: {Status: "off", Version: 4, Scopes: map[string]lua.StockCounters{"high_seas": {Total: 4, Sold: 4}}},
			4: {Status: "", Version: 3, Scopes: map[string]lua.StockCounters{}},
		}
		for sku, want := range wantSKU {
			st, verify, err := lua.ReadStockSKU(ctx, c, k, sku)
			if err != nil || verify || !reflect.DeepEqual(st, want) {
				t.Fatalf("SKU %d = %+v (verify %v, %v)\nwant %+v", sku, st, verify, err, want)
			}
		}
		wantRec := map[string]string{"o:1": "r#2|high_seas|1", "o:2": "d#2|high_seas|1", "o:3": "x#OUT_OF_STOCK#", "t:g/b": "t#1|high_seas|1"}
		for ref, want := range wantRec {
			if rec, _, _ := lua.ReadStockRecord(ctx, c, k, ref); rec != want {
				t.Fatalf("record %s = %q, want %q", ref, rec, want)
			}
		}
		// Replays answer from the records MySQL gave back; new changes go on from version 5.
		if r := runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:3", Items: hs(2, 1)}); r.Code != lua.StockOutOfStock || !r.Replay {
			t.Fatalf("replayed refusal = %+v", r)
		}
		if r := runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:1", Items: hs(2, 1)}); r.Code != lua.StockOrderClosed {
			t.Fatalf("deduct of a returned order = %+v", r)
		}
		if r := runStock(t, c, k, lua.StockOp{Op: "deduct", ID: "o:5", Items: hs(2, 1)}); r.Code != lua.StockOK {
			t.Fatalf("new deduct = %+v", r)
		}
		if st, _, _ := lua.ReadStockSKU(ctx, c, k, 2); st.Version != 6 || st.Scopes["high_seas"].Sold != 2 {
			t.Fatalf("SKU 2 after a new deduct: %+v, want version 6, sold 2", st)
		}
	})
}

func TestStockScopesRoundTrip(t *testing.T) {
	in := map[string]lua.StockCounters{"high_seas": {Total: 10, Available: 4, Reserved: 3, Sold: 3}, "pool:12": {Total: 1, Sold: 1}}
	s := lua.EncodeStockScopes(in)
	if s != "high_seas=10,4,3,3;pool:12=1,0,0,1" {
		t.Fatalf("encoded %q", s)
	}
	out, err := lua.ParseStockScopes(s)
	if err != nil || !reflect.DeepEqual(out, in) {
		t.Fatalf("parsed %+v, %v", out, err)
	}
	for _, bad := range []string{"high_seas", "high_seas=1,2,3", "=1,1,1,1", "high_seas=1,x,0,0"} {
		if _, err := lua.ParseStockScopes(bad); err == nil {
			t.Fatalf("%q parsed", bad)
		}
	}
}
