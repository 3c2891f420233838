package store_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/grab-engine/grab/event"
	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// dialects runs a test on SQLite (unit) and on the real MySQL (integration).
func dialects(t *testing.T, test func(t *testing.T, db *store.DB)) {
	t.Run("sqlite", func(t *testing.T) { test(t, storetest.SQLite(t)) })
	t.Run("mysql", func(t *testing.T) { test(t, storetest.MySQL(t)) })
}

var now = time.Date(2026, 5, 20, 13, 14, 0, 0, time.UTC)

// paidPacket funds user 1, creates a packet of the given shares and pays it.
func paidPacket(t *testing.T, db *store.DB, shares ...int64) int64 {
	t.Helper()
	ctx := context.Background()
	var total int64
	for _, s := range shares {
		total += s
	}
	if _, err := db.Deposit(ctx, 1, 100_000, "seed-1", now); err != nil {
		t.Fatal(err)
	}
	id, err := db.CreatePacket(ctx, store.Packet{Kind: "group_lucky", SenderID: 1, GroupID: sql.NullInt64{Int64: 7, Valid: true},
		Count: len(shares), Total: store.Fen(total), Greeting: "hi", Status: "unpaid", PayStatus: "unpaid", CreatedAt: now}, shares)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.PayByBalance(ctx, id, now, now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	return id
}

type snapshot struct {
	totals   store.Totals
	balances map[int64]int64
	owners   map[int]int64
}

func snap(t *testing.T, db *store.DB, packetID int64, users ...int64) snapshot {
	t.Helper()
	ctx := context.Background()
	s := snapshot{balances: map[int64]int64{}, owners: map[int]int64{}}
	var err error
	if s.totals, err = db.MoneyTotals(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if s.balances[u], err = db.Balance(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	shares, err := db.Shares(ctx, packetID)
	if err != nil {
		t.Fatal(err)
	}
	for _, sh := range shares {
		s.owners[sh.Seq] = sh.UserID.Int64
	}
	return s
}

// Applying the same events again, as a redelivery does, changes nothing.
func TestApplyGrabsIdempotent(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300, 200)
		events := []event.Grab{
			{PacketID: id, UserID: 20, Seq: 1, Amount: 500, At: now, Credit: true},
			{PacketID: id, UserID: 10, Seq: 2, Amount: 300, At: now, Credit: true},
			{PacketID: id, UserID: 30, Seq: 3, Amount: 200, At: now, Credit: true, Finished: true},
		}
		rejected, err := db.ApplyGrabs(ctx, events)
		if err != nil || len(rejected) != 0 {
			t.Fatalf("first apply: rejected %v, %v", rejected, err)
		}
		first := snap(t, db, id, 1, 10, 20, 30)
		if first.balances[20] != 500 || first.balances[10] != 300 || first.balances[30] != 200 || first.balances[1] != 100_000-1000 {
			t.Fatalf("balances after apply = %v", first.balances)
		}
		if first.totals.Balances != 100_000 || first.totals.Ledger != 100_000 {
			t.Fatalf("totals = %+v, want 100000 each", first.totals)
		}
		for i := 0; i < 2; i++ {
			rejected, err := db.ApplyGrabs(ctx, events)
			if err != nil || len(rejected) != 0 {
				t.Fatalf("replay: rejected %v, %v", rejected, err)
			}
			if again := snap(t, db, id, 1, 10, 20, 30); !equalSnap(again, first) {
				t.Fatalf("replay changed the store: %+v, was %+v", again, first)
			}
		}
		// A batch that carries the same event twice (a redelivery landing in
		// the batch of its original) changes nothing either.
		if _, err := db.ApplyGrabs(ctx, append(events, events...)); err != nil {
			t.Fatal(err)
		}
		if again := snap(t, db, id, 1, 10, 20, 30); !equalSnap(again, first) {
			t.Fatalf("doubled batch changed the store: %+v", again)
		}
		// A replay of part of the batch, out of order, changes nothing either.
		if _, err := db.ApplyGrabs(ctx, []event.Grab{events[2], events[0]}); err != nil {
			t.Fatal(err)
		}
		if again := snap(t, db, id, 1, 10, 20, 30); !equalSnap(again, first) {
			t.Fatalf("partial replay changed the store: %+v", again)
		}
		p, err := db.Packet(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if p.Status != "finished" || p.BestSeq != 1 || !p.FinishedAt.Valid {
			t.Fatalf("packet = %s, best %d, finished %v", p.Status, p.BestSeq, p.FinishedAt)
		}
	})
}

func equalSnap(a, b snapshot) bool {
	if a.totals != b.totals || len(a.balances) != len(b.balances) || len(a.owners) != len(b.owners) {
		return false
	}
	for k, v := range a.balances {
		if b.balances[k] != v {
			return false
		}
	}
	for k, v := range a.owners {
		if b.owners[k] != v {
			return false
		}
	}
	return true
}

// Events that contradict the store are returned unapplied; the rest of the
// batch is applied.
// The first delivery of a batch that holds an event twice credits it once.
func TestApplyGrabsDuplicateInOneBatch(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300, 200)
		ev := event.Grab{PacketID: id, UserID: 20, Seq: 1, Amount: 500, At: now, Credit: true}
		if rejected, err := db.ApplyGrabs(ctx, []event.Grab{ev, ev, ev}); err != nil || len(rejected) != 0 {
			t.Fatalf("apply: rejected %v, %v", rejected, err)
		}
		if got := snap(t, db, id, 20); got.balances[20] != 500 || got.totals.Balances != got.totals.Ledger {
			t.Fatalf("balance %d, totals %+v; want 500 credited once", got.balances[20], got.totals)
		}
	})
}

func TestApplyGrabsRejectsContradictions(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300, 200, 100)
		events := []event.Grab{
			{PacketID: id, UserID: 20, Seq: 1, Amount: 500, At: now, Credit: true},     // good
			{PacketID: id, UserID: 21, Seq: 1, Amount: 500, At: now, Credit: true},     // seq 1 is user 20's
			{PacketID: id, UserID: 20, Seq: 2, Amount: 300, At: now, Credit: true},     // user 20 holds seq 1
			{PacketID: id, UserID: 22, Seq: 3, Amount: 999, At: now, Credit: true},     // seq 3 is 200 fen
			{PacketID: id, UserID: 23, Seq: 9, Amount: 100, At: now, Credit: true},     // no seq 9
			{PacketID: id + 1, UserID: 24, Seq: 1, Amount: 100, At: now, Credit: true}, // no such packet
			{PacketID: id, UserID: 25, Seq: 4, Amount: 100, At: now, Credit: false},    // good, uncredited
		}
		rejected, err := db.ApplyGrabs(ctx, events)
		if err != nil {
			t.Fatal(err)
		}
		if want := []int{1, 2, 3, 4, 5}; !equalInts(rejected, want) {
			t.Fatalf("rejected %v, want %v", rejected, want)
		}
		s := snap(t, db, id, 20, 21, 22, 23, 24, 25)
		if want := (map[int64]int64{20: 500, 21: 0, 22: 0, 23: 0, 24: 0, 25: 0}); !equalBalances(s.balances, want) {
			t.Fatalf("balances = %v, want %v", s.balances, want)
		}
		if want := (map[int]int64{1: 20, 2: 0, 3: 0, 4: 25}); len(s.owners) != 4 || s.owners[1] != 20 || s.owners[2] != 0 || s.owners[3] != 0 || s.owners[4] != 25 {
			t.Fatalf("owners = %v, want %v", s.owners, want)
		}
		if s.totals.Balances != s.totals.Ledger || s.totals.Balances != 100_000-1100+500 {
			t.Fatalf("totals = %+v", s.totals)
		}
		shares, _ := db.Shares(ctx, id)
		if shares[0].Credited != true || shares[3].Credited != false {
			t.Fatalf("credited flags = %v, %v", shares[0].Credited, shares[3].Credited)
		}
	})
}

// A batch of independent grabs with one bad among them: the bad one is
// rejected and every other is applied, as when claimed one by one.
func TestApplyGrabsOneBadAmongMany(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 500, 300, 200, 100, 50)
		if _, err := db.ApplyGrabs(ctx, []event.Grab{{PacketID: id, UserID: 20, Seq: 1, Amount: 500, At: now, Credit: true}}); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			bad  event.Grab
		}{
			{"user holds another share", event.Grab{PacketID: id, UserID: 20, Seq: 3, Amount: 200, At: now, Credit: true}},
			{"share is someone else's", event.Grab{PacketID: id, UserID: 21, Seq: 1, Amount: 500, At: now, Credit: true}},
			{"amount is not the share's", event.Grab{PacketID: id, UserID: 22, Seq: 3, Amount: 201, At: now, Credit: true}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := snap(t, db, id, 20, 21, 22)
				rejected, err := db.ApplyGrabs(ctx, []event.Grab{tc.bad})
				if err != nil || !equalInts(rejected, []int{0}) {
					t.Fatalf("alone: rejected %v, %v", rejected, err)
				}
				if after := snap(t, db, id, 20, 21, 22); !equalSnap(after, before) {
					t.Fatalf("a rejected grab changed the store: %+v, was %+v", after, before)
				}
			})
		}
		batch := []event.Grab{
			{PacketID: id, UserID: 30, Seq: 2, Amount: 300, At: now, Credit: true},
			{PacketID: id, UserID: 20, Seq: 3, Amount: 200, At: now, Credit: true}, // user 20 holds seq 1
			{PacketID: id, UserID: 40, Seq: 4, Amount: 100, At: now, Credit: true},
			{PacketID: id, UserID: 50, Seq: 5, Amount: 51, At: now, Credit: true}, // seq 5 is 50 fen
		}
		rejected, err := db.ApplyGrabs(ctx, batch)
		if err != nil || !equalInts(rejected, []int{1, 3}) {
			t.Fatalf("rejected %v, %v; want [1 3]", rejected, err)
		}
		s := snap(t, db, id, 20, 30, 40, 50)
		if s.owners[1] != 20 || s.owners[2] != 30 || s.owners[3] != 0 || s.owners[4] != 40 || s.owners[5] != 0 {
			t.Fatalf("owners = %v", s.owners)
		}
		if want := (map[int64]int64{20: 500, 30: 300, 40: 100, 50: 0}); !equalBalances(s.balances, want) {
			t.Fatalf("balances = %v, want %v", s.balances, want)
		}
		// The good grabs again with the bad ones: nothing more changes.
		if rejected, err := db.ApplyGrabs(ctx, batch); err != nil || !equalInts(rejected, []int{1, 3}) {
			t.Fatalf("replay: rejected %v, %v", rejected, err)
		}
		if again := snap(t, db, id, 20, 30, 40, 50); !equalSnap(again, s) {
			t.Fatalf("replay changed the store: %+v, was %+v", again, s)
		}
	})
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalBalances(a, b map[int64]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Best luck is the first (lowest seq) of the largest shares.
func TestFinishSetsBestSeq(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		id := paidPacket(t, db, 100, 700, 200, 700)
		var events []event.Grab
		for seq, amount := range []int64{100, 700, 200, 700} {
			events = append(events, event.Grab{PacketID: id, UserID: int64(10 + seq), Seq: seq + 1, Amount: amount,
				At: now, Credit: true, Finished: seq == 3})
		}
		if _, err := db.ApplyGrabs(ctx, events); err != nil {
			t.Fatal(err)
		}
		p, _ := db.Packet(ctx, id)
		if p.Status != "finished" || p.BestSeq != 2 {
			t.Fatalf("status %s, best_seq %d; want finished, 2", p.Status, p.BestSeq)
		}
	})
}

func TestDepositAndPay(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		if b, err := db.Deposit(ctx, 5, 1050, "r1", now); err != nil || b != 1050 {
			t.Fatalf("deposit = %d, %v", b, err)
		}
		if b, err := db.Deposit(ctx, 5, 1050, "r1", now); err != nil || b != 1050 {
			t.Fatalf("same deposit again = %d, %v", b, err)
		}
		if _, err := db.Deposit(ctx, 5, 1051, "r1", now); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("conflicting amount: err = %v", err)
		}
		if _, err := db.Deposit(ctx, 6, 1050, "r1", now); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("conflicting user: err = %v", err)
		}
		id, err := db.CreatePacket(ctx, store.Packet{Kind: "single", SenderID: 5, ToUserID: sql.NullInt64{Int64: 6, Valid: true},
			Count: 1, Total: 1051, Greeting: "hi", Status: "unpaid", PayStatus: "unpaid", CreatedAt: now}, []int64{1051})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.PayByBalance(ctx, id, now, now.Add(time.Hour)); !errors.Is(err, store.ErrNoFunds) {
			t.Fatalf("pay short by a fen: err = %v", err)
		}
		if p, _ := db.Packet(ctx, id); p.Status != "unpaid" || p.PaidAt.Valid {
			t.Fatalf("a refused payment left the packet %s", p.Status)
		}
		if _, err := db.Deposit(ctx, 5, 1, "r2", now); err != nil {
			t.Fatal(err)
		}
		p, err := db.PayByBalance(ctx, id, now, now.Add(time.Hour))
		if err != nil || p.Status != "open" || p.PayStatus != "paid" || !p.ExpiresAt.Time.Equal(now.Add(time.Hour)) {
			t.Fatalf("pay = %+v, %v", p, err)
		}
		if _, err := db.PayByBalance(ctx, id, now, now.Add(time.Hour)); !errors.Is(err, store.ErrWrongState) {
			t.Fatalf("pay twice: err = %v", err)
		}
		if _, err := db.PayByBalance(ctx, id+100, now, now.Add(time.Hour)); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("pay unknown: err = %v", err)
		}
		if b, _ := db.Balance(ctx, 5); b != 0 {
			t.Fatalf("balance after paying everything = %d", b)
		}
		if tot, _ := db.MoneyTotals(ctx); tot.Balances != 0 || tot.Ledger != 0 {
			t.Fatalf("totals = %+v", tot)
		}
	})
}

// Money round-trips through DECIMAL(12,2) without a float in between.
func TestMoneyExact(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		for i, fen := range []int64{1, 10, 99, 1999, 123456789, 99_999_999_99} {
			if b, err := db.Deposit(ctx, int64(100+i), fen, "m"+string(rune('a'+i)), now); err != nil || b != fen {
				t.Fatalf("deposit %d fen reads back %d, %v", fen, b, err)
			}
		}
	})
}

func TestMigrateTwice(t *testing.T) {
	dialects(t, func(t *testing.T, db *store.DB) {
		if err := db.Migrate(context.Background()); err != nil {
			t.Fatalf("second migrate: %v", err)
		}
	})
}
