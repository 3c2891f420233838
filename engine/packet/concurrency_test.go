package packet_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine"
)

// 1000 members race for a lucky packet of 100 shares: exactly 100 win, each
// once, every fen is handed out, and the store ends with exactly what Redis
// answered.
func TestThousandGrabbersOneLuckyPacket(t *testing.T) {
	const users, shares, total, sender, deposit = 1000, 100, 10000, 5000, 1_000_000
	e := enginetest.Real(t, func(c *engine.Config) { c.MaxGroupMembers = 2000 })
	e.StartWriter(t)
	ctx := context.Background()
	p := e.SendPacket(t, sender, packet.KindGroupLucky, users, shares, total, deposit)

	results := make([]packet.GrabResult, users+1)
	errs := make([]error, users+1)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for u := 1; u <= users; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[u], errs[u] = e.Packets.Grab(ctx, p.ID, int64(u))
		}()
	}
	close(start)
	wg.Wait()

	winners := map[int64]packet.GrabResult{} // user -> share
	bySeq := map[int]int64{}                 // seq -> user
	var sum int64
	soldOut := 0
	for u := int64(1); u <= users; u++ {
		r, err := results[u], errs[u]
		switch {
		case errors.Is(err, engine.ErrSoldOut):
			soldOut++
		case err != nil:
			t.Fatalf("user %d: unexpected error %v", u, err)
		default:
			if r.Repeat || r.PacketID != p.ID || r.Amount < 1 || r.Amount > engine.DefaultLimits.MaxShare {
				t.Fatalf("user %d: %+v", u, r)
			}
			if other, dup := bySeq[r.Seq]; dup {
				t.Fatalf("seq %d handed to users %d and %d", r.Seq, other, u)
			}
			bySeq[r.Seq] = u
			winners[u] = r
			sum += r.Amount
		}
	}
	if len(winners) != shares || soldOut != users-shares {
		t.Fatalf("%d winners and %d sold out, want %d and %d", len(winners), soldOut, shares, users-shares)
	}
	for seq := 1; seq <= shares; seq++ {
		if _, ok := bySeq[seq]; !ok {
			t.Fatalf("seq %d was never handed out", seq)
		}
	}
	if sum != total {
		t.Fatalf("shares sum to %d fen, want %d", sum, total)
	}

	// Every user asks again: winners get their share back as a repeat, the
	// others are still sold out.
	for u := int64(1); u <= users; u++ {
		r, err := e.Packets.Grab(ctx, p.ID, u)
		w, won := winners[u]
		switch {
		case won && (err != nil || r != packet.GrabResult{PacketID: p.ID, Amount: w.Amount, Seq: w.Seq, Repeat: true, Credited: true}):
			t.Fatalf("repeat by winner %d = %+v, %v; first answer %+v", u, r, err, w)
		case !won && !errors.Is(err, engine.ErrSoldOut):
			t.Fatalf("repeat by loser %d: %+v, %v", u, r, err)
		}
	}

	// The grabbed hash expires with the packet rather than living forever.
	k := e.Keys.Packet(p.ID)
	if ttl := e.Redis.PTTL(ctx, k.Grabbed).Val(); ttl <= 0 {
		t.Fatalf("grabbed hash ttl = %v", ttl)
	}

	e.Drain(t, p.ID, shares)
	rows, err := e.DB.Shares(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	best := 0
	for _, s := range rows {
		w := winners[bySeq[s.Seq]]
		if !s.UserID.Valid || s.UserID.Int64 != bySeq[s.Seq] || int64(s.Amount) != w.Amount || !s.Credited {
			t.Fatalf("store share %d = user %v, %d fen, credited %v; Redis answered user %d, %d fen",
				s.Seq, s.UserID, s.Amount, s.Credited, bySeq[s.Seq], w.Amount)
		}
		if best == 0 || s.Amount > rows[best-1].Amount { // rows are in seq order
			best = s.Seq
		}
	}
	// The last share's event finished the packet in the same transaction
	// that gave the share its owner; best luck is the first of the largest.
	row, err := e.DB.Packet(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != packet.StatusFinished || row.BestSeq != best || !row.FinishedAt.Valid {
		t.Fatalf("packet row: status %s, best_seq %d (want %d), finished_at %v", row.Status, row.BestSeq, best, row.FinishedAt)
	}
	for u := int64(1); u <= users; u++ {
		b, err := e.Packets.Balance(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		if b != winners[u].Amount {
			t.Fatalf("user %d balance %d, won %d", u, b, winners[u].Amount)
		}
	}
	if b, _ := e.Packets.Balance(ctx, sender); b != deposit-total {
		t.Fatalf("sender balance %d, want %d", b, deposit-total)
	}
	tot, err := e.DB.MoneyTotals(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tot.Balances != deposit || tot.Ledger != deposit {
		t.Fatalf("money not conserved: balances %d, ledger %d, deposits %d", tot.Balances, tot.Ledger, deposit)
	}
}
