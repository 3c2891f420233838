package lua

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

var stockLoadScript = register("stock_load.lua")

// StockRecordEntry is one record of an activity product as MySQL keeps it:
// the op id ("v:<voucher>", "o:<order>", "t:<gid>/<branch>"), the value
// a stock script wrote, and its rank (1 first, 2 terminal; lua.StockRecordRank).
type StockRecordEntry struct {
	Ref   string
	Value string
	Rank  int
}

// StockSnapshot is one SKU of an activity product as MySQL keeps it.
type StockSnapshot struct {
	SKU     int64
	Status  string // on, off, rev; "" once its submit was rolled back
	Version int64
	Scopes  map[string]StockCounters // by scope: "high_seas", "pool:<id>"
}

// StockLoadChunk is how many records LoadStockRecords should be given at
// most per call: one call is one script run, which blocks Redis meanwhile.
const StockLoadChunk = 256

// LoadStockRecords runs stock_load.lua's records step: each record MySQL
// has at a higher rank than Redis's (or that Redis lacks) is set. epoch is
// the dataset epoch MySQL was read under. It answers Verified with the
// number of records set; Fresh when the product is verified under the
// current epoch already (a verification ran meanwhile; nothing changed,
// stop); Moved when the epoch is no longer epoch (nothing changed; read
// MySQL again under the new one). Call it with StockLoadChunk records at
// most, under the product's load lock, then FinishStockLoad.
func LoadStockRecords(ctx context.Context, c redis.Scripter, k StockKeys, epoch string, recs []StockRecordEntry) (LoadResult, int, error) {
	args := make([]any, 0, 2+3*len(recs))
	args = append(args, "records", epoch)
	for _, r := range recs {
		args = append(args, r.Ref, r.Value, r.Rank)
	}
	return runStockLoad(ctx, c, stockLoadKeys(k, nil), args)
}

// FinishStockLoad runs stock_load.lua's finish step: every SKU MySQL has at
// a newer version than Redis's (or that Redis lacks) takes MySQL's state,
// then the product is marked verified under epoch, so the stock scripts run on it
// again. It answers Loaded (Redis had nothing of the product) or Verified,
// with the number of SKUs taken from MySQL; Fresh or Moved as
// LoadStockRecords does. Run it under the load lock, after every record.
func FinishStockLoad(ctx context.Context, c redis.Scripter, k StockKeys, epoch string, skus []StockSnapshot) (LoadResult, int, error) {
	args := make([]any, 0, 2+3*len(skus))
	args = append(args, "finish", epoch)
	for _, s := range skus {
		args = append(args, s.Status, s.Version, EncodeStockScopes(s.Scopes))
	}
	return runStockLoad(ctx, c, stockLoadKeys(k, skus), args)
}

// stockLoadKeys are stock_load.lua's keys: the record hash, the epoch, and
// (finish) each SKU's hash.
func stockLoadKeys(k StockKeys, skus []StockSnapshot) []string {
	keys := make([]string, 0, 2+len(skus))
	keys = append(keys, k.Record, k.Epoch)
	for _, s := range skus {
		keys = append(keys, k.SKU(s.SKU))
	}
	return keys
}

func runStockLoad(ctx context.Context, c redis.Scripter, keys []string, args []any) (LoadResult, int, error) {
	v, err := stockLoadScript.Run(ctx, c, keys, args...).Int64Slice()
	if err != nil {
		return 0, 0, err
	}
	switch {
	case len(v) == 1 && (v[0] == int64(Fresh) || v[0] == int64(Moved)):
		return LoadResult(v[0]), 0, nil
	case len(v) == 2 && (v[0] == int64(Loaded) || v[0] == int64(Verified)):
		return LoadResult(v[0]), int(v[1]), nil
	}
	return 0, 0, fmt.Errorf("%w: stock_load.lua answered %v", ErrUnexpectedReply, v)
}

// EncodeStockScopes is the scopes' form in stock events and stock_load.lua:
// "scope=t,a,r,s;…", sorted by scope.
func EncodeStockScopes(scopes map[string]StockCounters) string {
	parts := make([]string, 0, len(scopes))
	for scope, c := range scopes {
		parts = append(parts, scope+"="+strconv.FormatInt(c.Total, 10)+","+strconv.FormatInt(c.Available, 10)+","+
			strconv.FormatInt(c.Reserved, 10)+","+strconv.FormatInt(c.Sold, 10))
	}
	slices.Sort(parts)
	return strings.Join(parts, ";")
}

// ParseStockScopes reads EncodeStockScopes's form (a stock event's snap).
func ParseStockScopes(s string) (map[string]StockCounters, error) {
	out := map[string]StockCounters{}
	if s == "" {
		return out, nil
	}
	for _, part := range strings.Split(s, ";") {
		scope, counts, ok := strings.Cut(part, "=")
		f := strings.Split(counts, ",")
		if !ok || scope == "" || len(f) != 4 {
			return nil, fmt.Errorf("%w: stock scopes %q", ErrUnexpectedReply, part)
		}
		var c [4]int64
		for i := range f {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: stock scopes %q", ErrUnexpectedReply, part)
			}
			c[i] = n
		}
		out[scope] = StockCounters{Total: c[0], Available: c[1], Reserved: c[2], Sold: c[3]}
	}
	return out, nil
}
