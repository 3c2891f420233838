package packet_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// atExpiry moves the clock to the packet's expiry instant, plus d.
func atExpiry(t *testing.T, e *enginetest.Env, p packet.Packet, d time.Duration) {
	t.Helper()
	if p.ExpiresAt == nil {
		t.Fatal("packet has no expiry")
	}
	e.Clock.Add(p.ExpiresAt.Add(d).Sub(e.Clock.Now()))
}

// waitStatus waits until the store shows the packet in status.
func waitStatus(t *testing.T, e *enginetest.Env, packetID int64, status string) store.Packet {
	t.Helper()
	var p store.Packet
	enginetest.WaitFor(t, "packet "+status+" in the store", func() bool {
		var err error
		if p, err = e.DB.Packet(context.Background(), packetID); err != nil {
			t.Fatal(err)
		}
		return p.Status == status
	})
	return p
}

// refundEntries lists the sender's ledger entries of kind refund.
func refundEntries(t *testing.T, e *enginetest.Env, sender int64) []store.LedgerEntry {
	t.Helper()
	es, err := e.DB.Ledger(context.Background(), sender)
	if err != nil {
		t.Fatal(err)
	}
	var out []store.LedgerEntry
	for _, l := range es {
		if l.Kind == store.KindRefund {
			out = append(out, l)
		}
	}
	return out
}

// closeEvents counts the close events of a packet still in its stream.
func closeEvents(t *testing.T, e *enginetest.Env, packetID int64) []redis.XMessage {
	t.Helper()
	msgs, err := e.Redis.XRange(context.Background(), e.Keys.Packet(packetID).Events, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []redis.XMessage
	for _, m := range msgs {
		if m.Values["t"] == "close" && m.Values["pk"] == strconv.FormatInt(packetID, 10) {
			out = append(out, m)
		}
	}
	return out
}

// assertRefunded checks a refunded packet to the fen: what was grabbed (the
// answers, equal to the shares the store gives owners) plus the refund is
// the total; grabbers and sender hold exactly their money, refunded once;
// balances, ledger and deposits agree.
func assertRefunded(t *testing.T, e *enginetest.Env, p packet.Packet, won map[int64]int64, deposit int64) {
	t.Helper()
	ctx := context.Background()
	row := waitStatus(t, e, p.ID, packet.StatusRefunded)
	e.Drain(t, p.ID, len(won))
	var grabbed int64
	for _, a := range won {
		grabbed += a
	}
	shares, err := e.DB.Shares(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	var owned int64
	for _, s := range shares {
		if s.UserID.Valid {
			owned += int64(s.Amount)
			if won[s.UserID.Int64] != int64(s.Amount) {
				t.Fatalf("share %d of %d fen belongs to %d, whose grab answered %d", s.Seq, s.Amount, s.UserID.Int64, won[s.UserID.Int64])
			}
		}
	}
	refunded := int64(row.RefundedAmount)
	if owned != grabbed || grabbed+refunded != p.Total || !row.ClosedRemainder.Valid || int64(row.ClosedRemainder.V) != refunded {
		t.Fatalf("grabbed %d (store %d) + refunded %d (closed %+v) != total %d", grabbed, owned, refunded, row.ClosedRemainder, p.Total)
	}
	if r := refundEntries(t, e, p.SenderID); refunded > 0 && (len(r) != 1 || int64(r[0].Amount) != refunded) || refunded == 0 && len(r) != 0 {
		t.Fatalf("refund ledger entries %+v, want one of %d", r, refunded)
	}
	users := []int64{p.SenderID}
	for u := range won {
		users = append(users, u)
	}
	m := e.ReadMoney(t, users...)
	if want := deposit - p.Total + refunded; m.Balances[p.SenderID] != want {
		t.Fatalf("sender balance %d, want %d - %d + %d = %d", m.Balances[p.SenderID], deposit, p.Total, refunded, want)
	}
	for u, a := range won {
		if m.Balances[u] != a {
			t.Fatalf("grabber %d balance %d, won %d", u, m.Balances[u], a)
		}
	}
	if int64(m.Totals.Balances) != deposit || int64(m.Totals.Ledger) != deposit {
		t.Fatalf("totals %+v, want %d each: money was made or lost", m.Totals, deposit)
	}
	v, err := e.Packets.GetPacket(ctx, p.ID, p.SenderID)
	if err != nil || v.Status != packet.StatusRefunded || v.RefundedAmount != refunded {
		t.Fatalf("view = %s, refunded %d, %v", v.Status, v.RefundedAmount, err)
	}
}

// A lucky packet of 100 shares is closed at its expiry instant by a second
// process after exactly 10 grabs have been answered; 190 more grabs follow,
// their clock still a moment before the expiry. Each share is either grabbed
// (its answer came before the close) or refunded, never both, never neither,
// and the close alone stops the later grabs.
func TestCloseAtExpiryAfterGrabs(t *testing.T) {
	const sender, users, count, total, deposit = 1000, 200, 100, 50_000, 1_000_000
	const before = 10 // grabs answered before the close
	e := enginetest.Real(t)
	e.StartWriter(t)
	ctx := context.Background()
	p := e.SendPacket(t, sender, packet.KindGroupLucky, users, count, total, deposit)
	// The grabbers' clock is a moment before the expiry; the closer's is at it.
	atExpiry(t, e, p, -time.Millisecond)
	closer := e.Another(func(d *grab.Deps) { d.Clock = enginetest.NewClock(*p.ExpiresAt) })

	won, errs := grabTogether(e, p.ID, 1, before)
	if len(won) != before || len(errs) != 0 {
		t.Fatalf("before the close: %d grabs won, errors %v; want %d won", len(won), errs, before)
	}
	if closed, err := closer.Packets.CloseExpired(ctx); err != nil || closed != 1 {
		t.Fatalf("close = %d, %v; want 1 packet closed", closed, err)
	}
	late, errs := grabTogether(e, p.ID, before+1, users)
	if len(late) != 0 || len(errs) != users-before {
		t.Fatalf("after the close: %d grabs won %v, %d failed; want none won, %d expired", len(late), late, len(errs), users-before)
	}
	for u, err := range errs {
		if !errors.Is(err, engine.ErrExpired) {
			t.Fatalf("grab by %d after the close: %v, want %v", u, err, engine.ErrExpired)
		}
	}
	assertRefunded(t, e, p, won, deposit)
}

// grabTogether has users from..to grab the packet at once and returns the
// amounts won and the errors, by user.
func grabTogether(e *enginetest.Env, packetID, from, to int64) (won map[int64]int64, errs map[int64]error) {
	won, errs = map[int64]int64{}, map[int64]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for u := from; u <= to; u++ {
		wg.Go(func() {
			r, err := e.Packets.Grab(context.Background(), packetID, u)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[u] = err
			} else {
				won[u] = r.Amount
			}
		})
	}
	wg.Wait()
	return won, errs
}

// Two refund workers close a packet once; a crash between the close in Redis
// and the refund in the store leaves the close event in the stream, and the
// writer refunds it once when it comes back; a replayed close changes nothing.
func TestRefundOnceAcrossWorkersAndCrash(t *testing.T) {
	const sender, deposit = 2000, 10_000
	e := enginetest.Real(t)
	ctx := context.Background()
	p := e.SendPacket(t, sender, packet.KindGroupLucky, 10, 5, 1000, deposit)
	won := map[int64]int64{}
	for u, r := range e.GrabAll(t, p.ID, 1, 2) {
		won[u] = r.Amount
	}
	atExpiry(t, e, p, 0)
	second := e.Another(nil)

	// No writer runs: as if it crashed, or the store is down.
	var n [2]int
	var wg sync.WaitGroup
	for i, w := range []*enginetest.Env{e, second} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if n[i], err = w.Packets.CloseExpired(ctx); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n[0]+n[1] != 1 {
		t.Fatalf("closed %v times, want once", n)
	}
	for _, w := range []*enginetest.Env{e, second} { // later passes find it closed
		if n, err := w.Packets.CloseExpired(ctx); err != nil || n != 0 {
			t.Fatalf("another pass closed %d, %v", n, err)
		}
	}
	events := closeEvents(t, e, p.ID)
	if len(events) != 1 {
		t.Fatalf("%d close events in the stream, want 1", len(events))
	}
	// Closed in Redis, not refunded yet.
	if v, err := e.Packets.GetPacket(ctx, p.ID, sender); err != nil || v.Status != packet.StatusExpired || v.RefundedAmount != 0 {
		t.Fatalf("view before the refund = %s, refunded %d, %v", v.Status, v.RefundedAmount, err)
	}
	if _, err := e.Packets.Grab(ctx, p.ID, 3); !errors.Is(err, engine.ErrExpired) {
		t.Fatalf("grab after the close: err = %v, want ErrExpired", err)
	}
	if r := refundEntries(t, e, sender); len(r) != 0 {
		t.Fatalf("refunded before the writer ran: %+v", r)
	}

	e.StartWriter(t)
	assertRefunded(t, e, p, won, deposit)
	before := e.ReadMoney(t, sender, 1, 2)

	// The same close event again, as a redelivery would bring it.
	stream := e.Keys.Packet(p.ID).Events
	id, err := e.Redis.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: events[0].Values}).Result()
	if err != nil {
		t.Fatal(err)
	}
	enginetest.WaitFor(t, "the replayed close to be applied", func() bool {
		groups, err := e.Redis.XInfoGroups(ctx, stream).Result()
		return err == nil && len(groups) == 1 && groups[0].LastDeliveredID == id && e.Pending(t, stream) == 0
	})
	if after := e.ReadMoney(t, sender, 1, 2); !after.Equal(before) {
		t.Fatalf("a replayed close moved money: %+v, was %+v", after, before)
	}
	if dead := e.Redis.XLen(ctx, e.Keys.DeadLetters(e.Keys.Shard(p.ID))).Val(); dead != 0 {
		t.Fatalf("%d events parked; a replay is not a contradiction", dead)
	}
	assertRefunded(t, e, p, won, deposit)
}

// A packet whose Redis state was lost is rebuilt from the store and closed;
// its refund is exact.
func TestCloseRebuildsLostState(t *testing.T) {
	const sender, deposit = 3000, 10_000
	e := enginetest.Real(t)
	ctx := context.Background()
	p := e.SendPacket(t, sender, packet.KindGroupEqual, 10, 6, 150, deposit)
	won := map[int64]int64{}
	for u, r := range e.GrabAll(t, p.ID, 1, 3) {
		won[u] = r.Amount
	}
	stop := e.RunWriter()
	e.Drain(t, p.ID, 3)
	stop()
	// Redis loses everything of this test: packet keys and streams.
	iter := e.Redis.Scan(ctx, 0, e.Keys.NS+":*", 1000).Iterator()
	for iter.Next(ctx) {
		e.Redis.Del(ctx, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	atExpiry(t, e, p, time.Second)
	if n, err := e.Packets.CloseExpired(ctx); err != nil || n != 1 {
		t.Fatalf("close after the loss = %d, %v; want 1", n, err)
	}
	if hot, err := lua.ReadPacket(ctx, e.Redis, e.Keys.Packet(p.ID)); err != nil || hot.Status != packet.StatusExpired {
		t.Fatalf("rebuilt state is %q, %v; want expired", hot.Status, err)
	}
	if ev := closeEvents(t, e, p.ID); len(ev) != 1 || ev[0].Values["rem"] != "450" || ev[0].Values["n"] != "3" {
		t.Fatalf("close events = %v, want one of 450 fen in 3 shares", ev)
	}
	e.StartWriter(t)
	assertRefunded(t, e, p, won, deposit)
}

// A packet that expires while its third-party payment awaits settlement is
// closed and its remainder recorded, but nothing is refunded until the
// payment succeeds; then it is refunded once.
func TestRefundWaitsForSettlement(t *testing.T) {
	const sender = 4000
	e, _ := payEnv(t)
	e.StartWriter(t)
	ctx := context.Background()
	p, pay := providerPacket(t, e, sender, 4, 4, 400)
	if _, err := e.Packets.PaymentReturn(ctx, pay.TradeNo, sender); err != nil {
		t.Fatal(err)
	}
	won := map[int64]int64{}
	var grabbed int64
	for u, r := range e.GrabAll(t, p.ID, sender+1, sender+2) {
		won[u] = r.Amount
		grabbed += r.Amount
	}
	row, err := e.DB.Packet(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.Clock.Add(row.ExpiresAt.Time.Sub(e.Clock.Now()))
	if n, err := e.Packets.CloseExpired(ctx); err != nil || n != 1 {
		t.Fatalf("close = %d, %v", n, err)
	}
	row = waitStatus(t, e, p.ID, packet.StatusExpired)
	if !row.ClosedRemainder.Valid || int64(row.ClosedRemainder.V) != 400-grabbed || row.RefundedAmount != 0 {
		t.Fatalf("closed remainder %+v, refunded %d; want %d, 0", row.ClosedRemainder, row.RefundedAmount, 400-grabbed)
	}
	if err := e.DB.RefundIfSettled(ctx, p.ID, e.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Packets.CloseExpired(ctx); err != nil || n != 0 {
		t.Fatalf("second pass = %d, %v", n, err)
	}
	if r := refundEntries(t, e, sender); len(r) != 0 {
		t.Fatalf("refunded before the payment settled: %+v", r)
	}
	if v, _ := e.Packets.GetPacket(ctx, p.ID, sender); v.Status != packet.StatusExpired {
		t.Fatalf("view = %s, want expired", v.Status)
	}

	if err := e.Packets.Notify(ctx, channel.Notification{Channel: channel.Alipay, TradeNo: pay.TradeNo, Amount: 400, Success: true}); err != nil {
		t.Fatal(err)
	}
	// Whether or not the settlement refunded it, refunding again and the
	// job's sweep change nothing.
	for range 2 {
		if err := e.DB.RefundIfSettled(ctx, p.ID, e.Clock.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Packets.CloseExpired(ctx); err != nil {
			t.Fatal(err)
		}
	}
	row = waitStatus(t, e, p.ID, packet.StatusRefunded)
	if int64(row.RefundedAmount) != 400-grabbed {
		t.Fatalf("refunded %d, want %d", row.RefundedAmount, 400-grabbed)
	}
	if r := refundEntries(t, e, sender); len(r) != 1 || int64(r[0].Amount) != 400-grabbed {
		t.Fatalf("refund entries %+v", r)
	}
	users := []int64{sender}
	for u := range won {
		users = append(users, u)
	}
	m := e.ReadMoney(t, users...)
	for u, a := range won {
		if m.Balances[u] != a {
			t.Fatalf("grabber %d balance %d, won %d", u, m.Balances[u], a)
		}
	}
	// The provider paid 400: the grabs and the refund, nothing more.
	if m.Balances[sender] != 400-grabbed || m.Totals.Balances != 400 || m.Totals.Ledger != 400 {
		t.Fatalf("sender %d, totals %+v", m.Balances[sender], m.Totals)
	}
}

// The refunder runs its passes on its own, on the unit stack too.
func TestRunRefunder(t *testing.T) {
	const sender, deposit = 5000, 10_000
	e := enginetest.Unit(t, func(c *engine.Config) { c.RefundInterval = 20 * time.Millisecond })
	e.StartWriter(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Packets.RunRefunder(ctx) }()
	p := e.SendPacket(t, sender, packet.KindGroupLucky, 5, 3, 300, deposit)
	won := map[int64]int64{}
	for u, r := range e.GrabAll(t, p.ID, 1, 1) {
		won[u] = r.Amount
	}
	atExpiry(t, e, p, 0)
	assertRefunded(t, e, p, won, deposit)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("RunRefunder returned %v", err)
	}
}
