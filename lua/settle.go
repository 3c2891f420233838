package lua

import (
	"context"

	"github.com/redis/go-redis/v9"
)

var settleScript = register("settle.lua")

// Settle runs settle.lua: paid opens a packet that awaited settlement and
// credits its later grabs; failed stops its grabs. It reports whether the
// packet's state was in Redis.
func Settle(ctx context.Context, c redis.Scripter, k PacketKeys, paid bool) (bool, error) {
	outcome := "failed"
	if paid {
		outcome = "paid"
	}
	v, err := settleScript.Run(ctx, c, settleKeys(k), outcome).Slice()
	if err != nil {
		return false, err
	}
	code, err := onlyCode(v, "settle", 0, -1)
	return code == 0, err
}

func settleKeys(k PacketKeys) []string { return []string{k.State} }
