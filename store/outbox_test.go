package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/store"
)

// outboxLines is the outbox from its from-th row on (0 for all), one
// "id kind aggregate payload" line per row, in seq order. Every row's time
// must be now, the clock every change of these tests runs at.
func outboxLines(t *testing.T, db *store.DB, from int) []string {
	t.Helper()
	rows, err := db.OutboxRows(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows[min(from, len(rows)):] {
		if !r.Msg.At.Equal(now) {
			t.Fatalf("%s at %v, want %v", r.Msg.ID, r.Msg.At, now)
		}
		out = append(out, fmt.Sprintf("%s %s %s %s", r.Msg.ID, r.Msg.Kind, r.Msg.Aggregate, r.Msg.Payload))
	}
	return out
}

// wantOutbox checks the rows from the from-th on and returns the outbox's
// size: where the next check starts.
func wantOutbox(t *testing.T, db *store.DB, from int, want ...string) int {
	t.Helper()
	got := outboxLines(t, db, from)
	if !slices.Equal(got, want) {
		t.Fatalf("outbox rows from %d:\n%s\nwant:\n%s", from, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	return from + len(got)
}

// unpaidPacket creates an unpaid packet of user 1 with the given shares.
func unpaidPacket(t *testing.T, db *store.DB, shares ...int64) int64 {
	t.Helper()
	var total int64
	for _, s := range shares {
		total += s
	}
	id, err := db.CreatePacket(context.Background(), store.Packet{Kind: "group_lucky", SenderID: 1, GroupID: sql.NullInt64{Int64: 7, Valid: true},
		Count: len(shares), Total: store.Fen(total), Greeting: "hi", Status: "unpaid", PayStatus: "unpaid", CreatedAt: now}, shares)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Without SetOutbox(true) no change writes a row.
func TestOutboxOffWritesNothing(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300)
		apply(t, db, event.Grab{PacketID: id, UserID: 20, Seq: 1, Amount: 500, At: now, Credit: true},
			event.Close{PacketID: id, Remainder: 300, Count: 1, At: now},
			stockEv(1, 10, 0, "submit", "v:s"))
		cp := newCampaign(t, db, 100, 60)
		apply(t, db, awardEvent(cp, 1, 10, 60))
		if _, _, err := db.StartPayment(ctx, unpaidPacket(t, db, 100), "alipay", "T-off", now); err != nil {
			t.Fatal(err)
		}
		if _, _, err := db.Settle(ctx, "T-off", true, "txn", now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		wantOutbox(t, db, 0)
		if n, oldest, err := db.OutboxStats(ctx); n != 0 || !oldest.IsZero() || err != nil {
			t.Fatalf("stats %d, %v, %v", n, oldest, err)
		}
	})
}

// A balance payment writes packet.paid; a batch of grabs one
// packet.grabbed per grab and packet.finished for the last share, in
// stream order; the batch replayed writes nothing more.
func TestOutboxGrabs(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		db.SetOutbox(true)
		id := paidPacket(t, db, 300, 500, 200)
		p := fmt.Sprint(id)
		n := wantOutbox(t, db, 0,
			"paid:"+p+" packet.paid packet:"+p+` {"packet_id":`+p+`,"sender_id":1,"amount":"10.00","method":"balance"}`)
		batch := []event.Event{
			event.Grab{PacketID: id, UserID: 20, Seq: 1, Amount: 300, At: now, Credit: true},
			event.Grab{PacketID: id, UserID: 21, Seq: 2, Amount: 500, At: now, Credit: true},
			event.Grab{PacketID: id, UserID: 22, Seq: 3, Amount: 200, At: now, Credit: true, Finished: true},
		}
		apply(t, db, batch...)
		grabbed := func(seq, user int, amount string, finished bool) string {
			return fmt.Sprintf(`grab:%s:%d packet.grabbed packet:%s {"packet_id":%s,"seq":%d,"user_id":%d,"amount":"%s","credited":true,"finished":%t}`,
				p, seq, p, p, seq, user, amount, finished)
		}
		n = wantOutbox(t, db, n, grabbed(1, 20, "3.00", false), grabbed(2, 21, "5.00", false), grabbed(3, 22, "2.00", true),
			"finished:"+p+" packet.finished packet:"+p+` {"packet_id":`+p+`,"best_seq":2}`)
		apply(t, db, batch...)
		apply(t, db, batch[1])
		wantOutbox(t, db, n)
	})
}

// A close of a paid packet refunds it and writes packet.refunded once,
// however often the close or the refund runs again.
func TestOutboxRefund(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		db.SetOutbox(true)
		id := paidPacket(t, db, 500, 300, 200)
		p := fmt.Sprint(id)
		batch := []event.Event{
			event.Grab{PacketID: id, UserID: 20, Seq: 1, Amount: 500, At: now, Credit: true},
			event.Close{PacketID: id, Remainder: 500, Count: 2, At: now},
		}
		apply(t, db, batch...)
		n := wantOutbox(t, db, 1,
			"grab:"+p+":1 packet.grabbed packet:"+p+` {"packet_id":`+p+`,"seq":1,"user_id":20,"amount":"5.00","credited":true,"finished":false}`,
			"refund:"+p+" packet.refunded packet:"+p+` {"packet_id":`+p+`,"sender_id":1,"amount":"5.00"}`)
		apply(t, db, batch...)
		if err := db.RefundIfSettled(ctx, id, now); err != nil {
			t.Fatal(err)
		}
		wantOutbox(t, db, n)
	})
}

// A settlement writes payment.settled and packet.paid, and packet.credited
// for each grab made while the payment awaited it; settled again, nothing.
func TestOutboxSettlement(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		db.SetOutbox(true)
		id := unpaidPacket(t, db, 100, 200)
		p := fmt.Sprint(id)
		no := "T" + p + "_ob"
		if _, _, err := db.StartPayment(ctx, id, "alipay", no, now); err != nil {
			t.Fatal(err)
		}
		if _, err := db.MarkReturned(ctx, no, now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		apply(t, db, event.Grab{PacketID: id, UserID: 30, Seq: 1, Amount: 100, At: now})
		n := wantOutbox(t, db, 0,
			"grab:"+p+":1 packet.grabbed packet:"+p+` {"packet_id":`+p+`,"seq":1,"user_id":30,"amount":"1.00","credited":false,"finished":false}`)
		for range 2 {
			if _, _, err := db.Settle(ctx, no, true, "txn-1", now, now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := db.ReconcilePacket(ctx, id, now); err != nil {
			t.Fatal(err)
		}
		wantOutbox(t, db, n,
			"settled:"+no+" payment.settled packet:"+p+` {"trade_no":"`+no+`","packet_id":`+p+`,"channel":"alipay","amount":"3.00","provider_txn":"txn-1","credited_back":false}`,
			"paid:"+p+" packet.paid packet:"+p+` {"packet_id":`+p+`,"sender_id":1,"amount":"3.00","method":"alipay","trade_no":"`+no+`"}`,
			"credited:"+p+":1 packet.credited packet:"+p+` {"packet_id":`+p+`,"seq":1,"user_id":30,"amount":"1.00"}`)
	})
}

// A trade superseded by another channel, one the channel failed and one
// given up each write payment.failed with their reason; money that comes
// after all for the given-up one writes payment.settled, credited back.
func TestOutboxPaymentFailures(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		db.SetOutbox(true)
		a, b := unpaidPacket(t, db, 100), unpaidPacket(t, db, 200)
		pa, pb := fmt.Sprint(a), fmt.Sprint(b)
		ta1, ta2, tb := "TA1_"+pa, "TA2_"+pa, "TB_"+pb
		steps := []func() error{
			func() error { _, _, err := db.StartPayment(ctx, a, "alipay", ta1, now); return err },
			func() error { _, _, err := db.StartPayment(ctx, a, "wechat", ta2, now); return err },
			func() error { _, _, err := db.Settle(ctx, ta2, false, "", now, now); return err },
			func() error { _, _, err := db.StartPayment(ctx, b, "alipay", tb, now); return err },
			func() error { _, _, err := db.GiveUp(ctx, tb, now); return err },
			func() error { _, _, err := db.Settle(ctx, tb, true, "late", now, now); return err },
			// Repeats: nothing more.
			func() error { _, _, err := db.Settle(ctx, ta2, false, "", now, now); return err },
			func() error { _, _, err := db.GiveUp(ctx, tb, now); return err },
			func() error { _, _, err := db.Settle(ctx, tb, true, "late", now, now); return err },
		}
		for i, step := range steps {
			if err := step(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		failed := func(no, p, channel, amount, reason string) string {
			return fmt.Sprintf(`failed:%s payment.failed packet:%s {"trade_no":"%s","packet_id":%s,"channel":"%s","amount":"%s","reason":"%s"}`,
				no, p, no, p, channel, amount, reason)
		}
		wantOutbox(t, db, 0, failed(ta1, pa, "alipay", "1.00", "superseded"), failed(ta2, pa, "wechat", "1.00", "channel"),
			failed(tb, pb, "alipay", "2.00", "given_up"),
			"settled:"+tb+" payment.settled packet:"+pb+` {"trade_no":"`+tb+`","packet_id":`+pb+`,"channel":"alipay","amount":"2.00","provider_txn":"","credited_back":true}`)
	})
}

// Each applied stock change writes stock.changed with the SKU's state
// after it; a replay writes nothing, a rejected change nothing.
func TestOutboxStock(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		db.SetOutbox(true)
		apply(t, db, stockEv(1, 10, 0, "submit", "v:s"), stockEv(2, 7, 3, "deduct", "o:1"))
		n := wantOutbox(t, db, 0,
			`stock:1:2:1:1 stock.changed sku:1:2:1 {"activity_id":1,"product_id":2,"sku_id":1,"version":1,"status":"on","op":"submit","ref":"v:s","change":"high_seas:submit:1","scopes":[{"scope":"high_seas","total":10,"available":10,"reserved":0,"sold":0}]}`,
			`stock:1:2:1:2 stock.changed sku:1:2:1 {"activity_id":1,"product_id":2,"sku_id":1,"version":2,"status":"on","op":"deduct","ref":"o:1","change":"high_seas:deduct:2","scopes":[{"scope":"high_seas","total":10,"available":7,"reserved":0,"sold":3}]}`)
		if r := apply(t, db, stockEv(2, 7, 3, "deduct", "o:1"), stockEv(2, 6, 4, "deduct", "o:9")); !slices.Equal(r, []int{1}) {
			t.Fatalf("rejected %v", r)
		}
		wantOutbox(t, db, n)
	})
}

// An award counted writes campaign.awarded once; a payout's 7 -> 4 writes
// payout.transferred and its parking payout.needs_attention, once each.
func TestOutboxCampaign(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		db.SetOutbox(true)
		cp := newCampaign(t, db, 150, 60, 50)
		c := fmt.Sprint(cp)
		apply(t, db, awardEvent(cp, 1, 10, 60))
		apply(t, db, awardEvent(cp, 1, 10, 60))
		if _, started, err := db.BeginPayout(ctx, event.Award{CampaignID: cp, Seq: 1, UserID: 10, Amount: 60, At: now}, true, now); err != nil || !started {
			t.Fatalf("begin payout 1: %v, %v", started, err)
		}
		for i := range 2 {
			if moved, err := db.MarkTransferred(ctx, cp, 1, "tx-1", now); err != nil || moved != (i == 0) {
				t.Fatalf("mark transferred #%d: %v, %v", i, moved, err)
			}
		}
		if _, started, err := db.BeginPayout(ctx, event.Award{CampaignID: cp, Seq: 2, UserID: 11, Amount: 50, At: now}, true, now); err != nil || !started {
			t.Fatalf("begin payout 2: %v, %v", started, err)
		}
		for i := range 2 {
			if moved, err := db.ParkPayout(ctx, cp, 2, 1, "conflict", now); err != nil || moved != (i == 0) {
				t.Fatalf("park #%d: %v, %v", i, moved, err)
			}
		}
		apply(t, db, awardEvent(cp, 2, 11, 50))
		award := func(seq, user int, amount string) string {
			return fmt.Sprintf(`award:%s:%d campaign.awarded campaign:%s {"campaign_id":%s,"seq":%d,"user_id":%d,"amount":"%s"}`,
				c, seq, c, c, seq, user, amount)
		}
		wantOutbox(t, db, 0, award(1, 10, "0.60"),
			"transferred:"+c+":1 payout.transferred campaign:"+c+` {"campaign_id":`+c+`,"seq":1,"user_id":10,"amount":"0.60","out_trade_no":"`+
				store.OutTradeNo(cp, 1)+`","transfer_id":"tx-1"}`,
			"attention:"+c+":2 payout.needs_attention campaign:"+c+` {"campaign_id":`+c+`,"seq":2,"user_id":11,"amount":"0.50","out_trade_no":"`+
				store.OutTradeNo(cp, 2)+`","attempts":1,"reason":"conflict"}`,
			award(2, 11, "0.50"))
	})
}

// testMessages are n messages spread over aggs aggregates ("packet:1"...),
// round robin; their ids ("m:<i>") follow the order they are written in.
func testMessages(n, aggs int) []event.Message {
	ms := make([]event.Message, n)
	for i := range ms {
		ms[i] = event.PacketFinished{PacketID: int64(i%aggs + 1), BestSeq: i}.Message(now)
		ms[i].ID = "m:" + strconv.Itoa(i)
	}
	return ms
}

func ids(ms []event.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// RelayOutbox hands publish the unpublished rows in seq order, up to its
// limit, and marks published exactly the first `done`; a publish error
// marks nothing. OutboxStats counts what is left, PurgeOutbox deletes
// rows published before its time.
func TestRelayOutbox(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		start := time.Now()
		if err := db.AppendOutbox(ctx, testMessages(6, 2)); err != nil {
			t.Fatal(err)
		}
		if err := db.AppendOutbox(ctx, testMessages(6, 2)); err != nil { // the same ids again: no row
			t.Fatal(err)
		}
		pending, oldest, err := db.OutboxStats(ctx)
		if err != nil || pending != 6 || oldest.Before(start.Add(-time.Second)) || oldest.After(time.Now().Add(time.Second)) {
			t.Fatalf("stats %d, %v, %v", pending, oldest, err)
		}
		relay := func(limit, done int, fail error) ([]string, int, error) {
			var got []string
			n, err := db.RelayOutbox(ctx, limit, func(_ context.Context, ms []event.Message) (int, error) {
				got = ids(ms)
				return done, fail
			})
			return got, n, err
		}
		boom := errors.New("nats down")
		if got, n, err := relay(4, 4, boom); !errors.Is(err, boom) || n != 0 || !slices.Equal(got, []string{"m:0", "m:1", "m:2", "m:3"}) {
			t.Fatalf("failed publish: %v, %d, %v", got, n, err)
		}
		if got, n, err := relay(4, 3, nil); err != nil || n != 3 || !slices.Equal(got, []string{"m:0", "m:1", "m:2", "m:3"}) {
			t.Fatalf("partial publish: %v, %d, %v", got, n, err)
		}
		if got, n, err := relay(10, 10, nil); err != nil || n != 3 || !slices.Equal(got, []string{"m:3", "m:4", "m:5"}) {
			t.Fatalf("the rest: %v, %d, %v", got, n, err)
		}
		if got, n, err := relay(10, 10, nil); err != nil || n != 0 || got != nil {
			t.Fatalf("nothing left: %v, %d, %v", got, n, err)
		}
		if pending, oldest, err := db.OutboxStats(ctx); err != nil || pending != 0 || !oldest.IsZero() {
			t.Fatalf("stats %d, %v, %v", pending, oldest, err)
		}
		if n, err := db.PurgeOutbox(ctx, start.Add(-time.Hour)); err != nil || n != 0 {
			t.Fatalf("purge before publishing: %d, %v", n, err)
		}
		if n, err := db.PurgeOutbox(ctx, time.Now().Add(time.Second)); err != nil || n != 6 {
			t.Fatalf("purge: %d, %v", n, err)
		}
		wantOutbox(t, db, 0)
	})
}

// Two relays at once never hold the same row, never publish a row again
// once it is marked, and publish each aggregate's rows in seq order, even
// when publishes fail or ack only part of a claim.
func TestRelayOutboxConcurrent(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const n, aggs = 300, 4
		if err := db.AppendOutbox(ctx, testMessages(n, aggs)); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		inFlight := map[string]bool{}
		marked := map[string]bool{}
		order := map[string][]int{} // per aggregate, the index of each row marked, in publish order
		calls := 0
		var problems []string
		publish := func(_ context.Context, ms []event.Message) (int, error) {
			mu.Lock()
			defer mu.Unlock()
			calls++
			for _, m := range ms {
				if inFlight[m.ID] {
					problems = append(problems, m.ID+" handed to both relays")
				}
				if marked[m.ID] {
					problems = append(problems, m.ID+" handed again after it was marked")
				}
				inFlight[m.ID] = true
			}
			// Give the other relay time to claim while this one holds its rows.
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			for _, m := range ms {
				delete(inFlight, m.ID)
			}
			if calls%7 == 0 {
				return len(ms), errors.New("nats down")
			}
			done := len(ms)
			if calls%3 == 0 {
				done /= 2
			}
			for _, m := range ms[:done] {
				marked[m.ID] = true
				i, _ := strconv.Atoi(strings.TrimPrefix(m.ID, "m:"))
				order[m.Aggregate] = append(order[m.Aggregate], i)
			}
			return done, nil
		}
		var wg sync.WaitGroup
		deadline := time.Now().Add(60 * time.Second)
		for range 2 {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					mu.Lock()
					all := len(marked) == n
					mu.Unlock()
					if all {
						return
					}
					db.RelayOutbox(ctx, 17, publish) // errors are publish's own: the next round retries
				}
			})
		}
		wg.Wait()
		if len(problems) > 0 {
			t.Fatalf("%d problems, first %s", len(problems), problems[0])
		}
		if len(marked) != n {
			t.Fatalf("%d of %d rows published", len(marked), n)
		}
		for agg, idx := range order {
			if !slices.IsSorted(idx) || len(idx) != n/aggs {
				t.Fatalf("%s published out of order or not once each: %v", agg, idx)
			}
		}
		if pending, _, err := db.OutboxStats(ctx); err != nil || pending != 0 {
			t.Fatalf("pending %d, %v", pending, err)
		}
	})
}
