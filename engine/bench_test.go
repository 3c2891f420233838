package engine_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/lua"
)

// BenchmarkGrab measures packet.Service.Grab on the real Redis: goroutines grab
// shared packets of 100 shares, each grab by a user who has not grabbed
// that packet, and a packet sold out is replaced by a fresh one. Packets are
// loaded straight into Redis, and the writer is off: this measures the hot
// path alone (one script round trip), not MySQL.
func BenchmarkGrab(b *testing.B) {
	const shares = 100
	e := enginetest.Real(b)
	ctx := context.Background()

	var (
		mu     sync.Mutex
		nextID atomic.Int64
		cur    atomic.Pointer[benchPacket]
	)
	nextID.Store(1_000_000)
	// refill replaces the sold-out packet old, unless another goroutine did.
	refill := func(old *benchPacket) error {
		mu.Lock()
		defer mu.Unlock()
		if cur.Load() != old {
			return nil
		}
		p := &benchPacket{id: nextID.Add(1)}
		k := e.Keys.Packet(p.id)
		st := lua.PacketState{Status: packet.StatusOpen, Credit: true,
			ExpiresAtMs: e.Clock.Now().Add(time.Hour).UnixMilli(), KeepUntilMs: e.Clock.Now().Add(2 * time.Hour).UnixMilli()}
		for i := range shares {
			st.Shares = append(st.Shares, lua.Share{Seq: i + 1, Amount: 100})
			st.Eligible = append(st.Eligible, int64(i+1))
		}
		if _, err := lua.Load(ctx, e.Redis, k, st); err != nil {
			return err
		}
		// With the writer off the streams only grow; keep them short.
		e.Redis.XTrimMaxLenApprox(ctx, k.Events, 1000, 0)
		cur.Store(p)
		return nil
	}
	if err := refill(nil); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			for {
				p := cur.Load()
				err := engine.ErrSoldOut // every user of this packet has grabbed it
				if user := p.nextUser.Add(1); user <= shares {
					_, err = e.Packets.Grab(ctx, p.id, user)
				}
				if errors.Is(err, engine.ErrSoldOut) {
					if err = refill(p); err == nil {
						continue
					}
				}
				if err != nil {
					b.Error(err)
					return
				}
				break
			}
		}
	})
}

type benchPacket struct {
	id       int64
	nextUser atomic.Int64
}
