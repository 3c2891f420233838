package packet_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine"
)

// A packet takes grabs until the instant it expires, by the engine's clock.
func TestGrabExpiry(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	p := e.GroupPacket(t, packet.KindGroupEqual, 5, 3, 100)
	if p.ExpiresAt == nil || !p.ExpiresAt.Equal(e.Clock.Now().Add(24*time.Hour)) {
		t.Fatalf("expires_at = %v, want now + 24h", p.ExpiresAt)
	}
	e.Clock.Add(24*time.Hour - time.Millisecond)
	if r, err := e.Packets.Grab(ctx, p.ID, 2); err != nil || r.Seq != 1 || r.Amount != 100 {
		t.Fatalf("grab a millisecond before expiry = %+v, %v", r, err)
	}
	e.Clock.Add(time.Millisecond)
	if _, err := e.Packets.Grab(ctx, p.ID, 3); !errors.Is(err, engine.ErrExpired) {
		t.Fatalf("grab at expiry: err = %v, want ErrExpired", err)
	}
	// A grab made before expiry is still the user's to see.
	if r, err := e.Packets.Grab(ctx, p.ID, 2); err != nil || !r.Repeat || r.Seq != 1 {
		t.Fatalf("repeat after expiry = %+v, %v", r, err)
	}
	view, err := e.Packets.GetPacket(ctx, p.ID, 3)
	if err != nil || view.Status != packet.StatusExpired {
		t.Fatalf("view after expiry: status %q, %v", view.Status, err)
	}
}

// Only the recipient of a single packet can grab it; not the sender, not others.
func TestGrabSingleOnlyRecipient(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	if _, err := e.Packets.Deposit(ctx, 1, 10000, "seed-1"); err != nil {
		t.Fatal(err)
	}
	p, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: 1, Kind: packet.KindSingle, ToUserID: 2, Amount: 520})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.PayByBalance(ctx, p.ID, 1); err != nil {
		t.Fatal(err)
	}
	for _, u := range []int64{1, 3} {
		if _, err := e.Packets.Grab(ctx, p.ID, u); !errors.Is(err, engine.ErrForbidden) {
			t.Fatalf("grab by %d: err = %v, want ErrForbidden", u, err)
		}
	}
	r, err := e.Packets.Grab(ctx, p.ID, 2)
	if err != nil || r != (packet.GrabResult{PacketID: p.ID, Amount: 520, Seq: 1, Credited: true}) {
		t.Fatalf("grab by the recipient = %+v, %v", r, err)
	}
}

func TestGrabRefusals(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	if _, err := e.Packets.SetGroupMembers(ctx, 7, []int64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	unpaid, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: 1, Kind: packet.KindGroupLucky, GroupID: 7, Count: 2, Amount: 100})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		packetID int64
		userID   int64
		want     error
	}{
		{"unpaid packet", unpaid.ID, 2, engine.ErrNotOpen},
		{"unpaid packet, not a member", unpaid.ID, 99, engine.ErrForbidden},
		{"unknown packet", unpaid.ID + 1000, 2, engine.ErrNotFound},
		{"packet id zero", 0, 2, engine.ErrNotFound},
		{"negative packet id", -1, 2, engine.ErrNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := e.Packets.Grab(ctx, c.packetID, c.userID); !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

func TestPayByBalance(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	if _, err := e.Packets.SetGroupMembers(ctx, 7, []int64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.Deposit(ctx, 1, 999, "seed-1"); err != nil {
		t.Fatal(err)
	}
	send := func(amount int64) packet.Packet {
		t.Helper()
		p, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: 1, Kind: packet.KindGroupLucky, GroupID: 7, Count: 2, Amount: amount})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("insufficient balance changes nothing", func(t *testing.T) {
		p := send(1000)
		before, _ := e.DB.MoneyTotals(ctx)
		if _, err := e.Packets.PayByBalance(ctx, p.ID, 1); !errors.Is(err, engine.ErrInsufficientBalance) {
			t.Fatalf("err = %v, want ErrInsufficientBalance", err)
		}
		if b, _ := e.Packets.Balance(ctx, 1); b != 999 {
			t.Fatalf("balance = %d, want 999", b)
		}
		if after, _ := e.DB.MoneyTotals(ctx); after != before {
			t.Fatalf("totals %+v, were %+v", after, before)
		}
		if row, _ := e.DB.Packet(ctx, p.ID); row.Status != packet.StatusUnpaid || row.PayStatus != "unpaid" {
			t.Fatalf("packet is %s/%s, want unpaid", row.Status, row.PayStatus)
		}
		if _, err := e.Packets.Grab(ctx, p.ID, 2); !errors.Is(err, engine.ErrNotOpen) {
			t.Fatalf("grab: err = %v, want ErrNotOpen", err)
		}
	})
	t.Run("a user without an account", func(t *testing.T) {
		p, err := e.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: 3, Kind: packet.KindGroupLucky, GroupID: 7, Count: 2, Amount: 100})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Packets.PayByBalance(ctx, p.ID, 3); !errors.Is(err, engine.ErrInsufficientBalance) {
			t.Fatalf("err = %v, want ErrInsufficientBalance", err)
		}
	})
	t.Run("only the sender pays", func(t *testing.T) {
		p := send(100)
		if _, err := e.Packets.PayByBalance(ctx, p.ID, 2); !errors.Is(err, engine.ErrForbidden) {
			t.Fatalf("err = %v, want ErrForbidden", err)
		}
	})
	t.Run("pay twice", func(t *testing.T) {
		p := send(100)
		if _, err := e.Packets.PayByBalance(ctx, p.ID, 1); err != nil {
			t.Fatal(err)
		}
		before, _ := e.Packets.Balance(ctx, 1)
		if _, err := e.Packets.PayByBalance(ctx, p.ID, 1); !errors.Is(err, engine.ErrNotPayable) {
			t.Fatalf("second pay: err = %v, want ErrNotPayable", err)
		}
		if b, _ := e.Packets.Balance(ctx, 1); b != before {
			t.Fatalf("balance %d after a refused second pay, was %d", b, before)
		}
	})
	t.Run("unknown packet", func(t *testing.T) {
		if _, err := e.Packets.PayByBalance(ctx, 12345, 1); !errors.Is(err, engine.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
}

func TestDepositIdempotentByRef(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if b, err := e.Packets.Deposit(ctx, 5, 1234, "top-up-1"); err != nil || b != 1234 {
			t.Fatalf("deposit #%d = %d, %v; want 1234", i+1, b, err)
		}
	}
	if b, err := e.Packets.Deposit(ctx, 5, 100, "top-up-2"); err != nil || b != 1334 {
		t.Fatalf("second ref = %d, %v; want 1334", b, err)
	}
	for name, c := range map[string]struct {
		user, amount int64
	}{"other amount": {5, 999}, "other user": {6, 1234}} {
		if _, err := e.Packets.Deposit(ctx, c.user, c.amount, "top-up-1"); !errors.Is(err, engine.ErrIdempotencyConflict) {
			t.Fatalf("%s: err = %v, want ErrIdempotencyConflict", name, err)
		}
	}
	if b, _ := e.Packets.Balance(ctx, 5); b != 1334 {
		t.Fatalf("balance = %d, want 1334", b)
	}
	if b, _ := e.Packets.Balance(ctx, 6); b != 0 {
		t.Fatalf("user 6 balance = %d, want 0", b)
	}
	if tot, _ := e.DB.MoneyTotals(ctx); tot.Balances != 1334 || tot.Ledger != 1334 {
		t.Fatalf("totals = %+v, want 1334 each", tot)
	}
	for _, bad := range []struct {
		user, amount int64
		ref          string
	}{{0, 1, "r"}, {5, 0, "r"}, {5, -1, "r"}, {5, packet.MaxDeposit + 1, "r"}, {5, 1, ""}} {
		if _, err := e.Packets.Deposit(ctx, bad.user, bad.amount, bad.ref); !errors.Is(err, engine.ErrInvalidArgument) {
			t.Fatalf("Deposit(%d, %d, %q): err = %v, want ErrInvalidArgument", bad.user, bad.amount, bad.ref, err)
		}
	}
}

// After Redis loses a packet, the first grab rebuilds it from the store:
// grabs the writer made durable are repeats, and a rebuild never reopens a
// packet past its expiry.
func TestRebuildFromStore(t *testing.T) {
	e := enginetest.Unit(t)
	e.StartWriter(t)
	ctx := context.Background()
	p := e.GroupPacket(t, packet.KindGroupLucky, 5, 3, 300)
	first, err := e.Packets.Grab(ctx, p.ID, 2)
	if err != nil {
		t.Fatal(err)
	}
	e.Drain(t, p.ID, 1)

	e.Redis.FlushAll(ctx)
	if r, err := e.Packets.Grab(ctx, p.ID, 2); err != nil || r != (packet.GrabResult{PacketID: p.ID, Amount: first.Amount, Seq: 1, Repeat: true, Credited: true}) {
		t.Fatalf("grab by the earlier grabber after the loss = %+v, %v; want %+v as a repeat", r, err, first)
	}
	second, err := e.Packets.Grab(ctx, p.ID, 3)
	if err != nil || second.Seq != 2 || second.Repeat {
		t.Fatalf("a new grab after the rebuild = %+v, %v; want seq 2", second, err)
	}
	e.Drain(t, p.ID, 2)

	e.Redis.FlushAll(ctx)
	e.Clock.Add(24 * time.Hour)
	if _, err := e.Packets.Grab(ctx, p.ID, 4); !errors.Is(err, engine.ErrExpired) {
		t.Fatalf("grab past expiry after a rebuild: err = %v, want ErrExpired", err)
	}
	if r, err := e.Packets.Grab(ctx, p.ID, 3); err != nil || !r.Repeat || r.Seq != 2 || r.Amount != second.Amount {
		t.Fatalf("earlier grabber past expiry = %+v, %v", r, err)
	}
	if b, _ := e.Packets.Balance(ctx, 3); b != second.Amount {
		t.Fatalf("balance %d, want %d", b, second.Amount)
	}
}

// A grabber who leaves the group still sees the packet they hold a share of;
// someone who was never in it does not.
func TestViewAfterLeavingTheGroup(t *testing.T) {
	e := enginetest.Unit(t)
	ctx := context.Background()
	p := e.GroupPacket(t, packet.KindGroupEqual, 3, 2, 100)
	if _, err := e.Packets.Grab(ctx, p.ID, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.SetGroupMembers(ctx, 7, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	v, err := e.Packets.GetPacket(ctx, p.ID, 3)
	if err != nil || v.MyGrab == nil || v.MyGrab.Amount != 100 {
		t.Fatalf("view by a former member who grabbed = %+v, %v", v.MyGrab, err)
	}
	if _, err := e.Packets.GetPacket(ctx, p.ID, 99); !errors.Is(err, engine.ErrForbidden) {
		t.Fatalf("view by an outsider: err = %v, want ErrForbidden", err)
	}
}
