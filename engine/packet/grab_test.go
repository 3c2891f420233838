package packet_test

import (
	"context"
	"errors"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine"
)

func TestGrabLifecycle(t *testing.T) {
	for name, setup := range map[string]func(testing.TB, ...func(*engine.Config)) *enginetest.Env{
		"unit": enginetest.Unit, "real": enginetest.Real,
	} {
		t.Run(name, func(t *testing.T) {
			e := setup(t)
			e.StartWriter(t)
			ctx := context.Background()
			p := e.GroupPacket(t, packet.KindGroupLucky, 5, 3, 1000)
			if p.Status != packet.StatusOpen {
				t.Fatalf("status after pay = %q", p.Status)
			}
			var sum int64
			for u := int64(1); u <= 3; u++ {
				r, err := e.Packets.Grab(ctx, p.ID, u)
				if err != nil {
					t.Fatalf("grab by %d: %v", u, err)
				}
				if r.Seq != int(u) || r.Repeat {
					t.Fatalf("grab by %d = %+v", u, r)
				}
				sum += r.Amount
				again, err := e.Packets.Grab(ctx, p.ID, u)
				if err != nil || !again.Repeat || again.Amount != r.Amount || again.Seq != r.Seq {
					t.Fatalf("repeat by %d = %+v, %v", u, again, err)
				}
			}
			if sum != 1000 {
				t.Fatalf("sum = %d", sum)
			}
			if _, err := e.Packets.Grab(ctx, p.ID, 4); !errors.Is(err, engine.ErrSoldOut) {
				t.Fatalf("4th grab: %v", err)
			}
			if _, err := e.Packets.Grab(ctx, p.ID, 99); !errors.Is(err, engine.ErrForbidden) {
				t.Fatalf("outsider grab: %v", err)
			}
			view, err := e.Packets.GetPacket(ctx, p.ID, 2)
			if err != nil {
				t.Fatal(err)
			}
			if view.Status != packet.StatusFinished || len(view.Grabs) != 3 || view.MyGrab == nil || view.RemainingCount != 0 {
				t.Fatalf("view = %+v", view)
			}
			e.Drain(t, p.ID, 3)
			var credited int64
			for u := int64(2); u <= 3; u++ {
				b, _ := e.Packets.Balance(ctx, u)
				credited += b
			}
			b1, _ := e.Packets.Balance(ctx, 1)
			if b1+credited != 10_000_000 {
				t.Fatalf("money not conserved: sender %d + others %d", b1, credited)
			}
		})
	}
}
