package lua

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var flashProbeScript = register("flashsale_probe.lua")

// Flash-sale probe codes.
const (
	flashProbeDeducted   = 0
	flashProbeOutOfStock = 1
)

// OpenFlashProbe queues on p what the flash-sale probe needs of a SKU: its
// hash with stock units available and nothing reserved or sold, and its
// event stream; both expire after ttl, so an interrupted run leaves nothing
// for long. The caller runs p.Exec.
func OpenFlashProbe(ctx context.Context, p redis.Pipeliner, k FlashProbeKeys, stock int64, ttl time.Duration) {
	p.HSet(ctx, k.SKU, "t", stock, "a", stock, "r", 0, "s", 0)
	p.XAdd(ctx, &redis.XAddArgs{Stream: k.Events, Values: []any{"op", "open"}})
	p.Expire(ctx, k.SKU, ttl)
	p.Expire(ctx, k.Events, ttl)
}

func flashProbeKeys(k FlashProbeKeys) []string { return []string{k.SKU, k.Events} }

// FlashProbe runs flashsale_probe.lua: it deducts qty of the SKU for
// orderID and reports whether it did (false: out of stock). Each call is a
// round trip of its own (Script.Run).
func FlashProbe(ctx context.Context, c redis.Scripter, k FlashProbeKeys, orderID string, qty, nowMs int64) (bool, error) {
	v, err := flashProbeScript.Run(ctx, c, flashProbeKeys(k), orderID, qty, nowMs).Slice()
	if err != nil {
		return false, err
	}
	code, err := onlyCode(v, "flash-sale probe", flashProbeDeducted, flashProbeOutOfStock)
	return code == flashProbeDeducted, err
}

// ReadFlashProbe reads a SKU's counters as the flash-sale probe keeps
// them; a field that is missing reads as 0.
func ReadFlashProbe(ctx context.Context, c redis.Cmdable, k FlashProbeKeys) (StockCounters, error) {
	v, err := c.HMGet(ctx, k.SKU, "t", "a", "r", "s").Result()
	if err != nil {
		return StockCounters{}, err
	}
	var n [4]int64
	for i, x := range v {
		s, ok := x.(string)
		if !ok {
			continue
		}
		if n[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return StockCounters{}, fmt.Errorf("%w: flash-sale probe %s field %d = %q", ErrUnexpectedReply, k.SKU, i, s)
		}
	}
	return StockCounters{Total: n[0], Available: n[1], Reserved: n[2], Sold: n[3]}, nil
}
