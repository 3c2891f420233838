package paytest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/grab-engine/grab/engine/packet"

	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/channel"
	"github.com/grab-engine/grab/store"
)

// Channel is a native payment channel (Alipay, WeChat Pay) as the tests
// drive it: its notifications, made by its simulator in its own format and
// posted by the test to grabd's notify URL, and its answers.
type Channel struct {
	Name string // channel.Alipay, channel.Wechat
	// Notice makes the channel's genuine notification that the trade
	// succeeded (or failed), as the channel formats and signs it, without
	// sending it.
	Notice func(t testing.TB, pay packet.Payment, success bool) Notice
	// Acked reports whether grabd's answer is the channel's acknowledgment.
	Acked func(status int, body []byte) bool
	// Refusal reports whether grabd's answer is a refusal in the channel's
	// format (the channel sends the notification again).
	Refusal func(status int, body []byte) bool
	// Forget makes the channel have no record of the trade: one the payer
	// never opened, or the channel lost.
	Forget func(t testing.TB, pay packet.Payment)
}

// Notice is a notification as it is posted: its headers and raw body.
type Notice struct {
	Header http.Header
	Body   []byte
}

// Post posts n to grabd's notify URL for ch.
func (e *Env) Post(t testing.TB, ch Channel, n Notice) (int, []byte) {
	t.Helper()
	return e.Do(t, http.MethodPost, NotifyPath(ch.Name), n.Header, n.Body)
}

// Deliver posts n and checks grabd acknowledged it the channel's way.
func (e *Env) Deliver(t testing.TB, ch Channel, n Notice) {
	t.Helper()
	if status, body := e.Post(t, ch, n); !ch.Acked(status, body) {
		t.Fatalf("%s notification answered %d %q, want the channel's acknowledgment", ch.Name, status, body)
	}
}

// Refusal is a notification grabd must refuse.
type Refusal struct {
	Name   string
	Notice Notice
	Status int    // the status docs/api.md gives the refusal
	Code   string // the code the refusal names
}

// Refuse is a Refusal.
func Refuse(name string, n Notice, status int, code string) Refusal {
	return Refusal{Name: name, Notice: n, Status: status, Code: code}
}

// Refused proves that refusals change nothing and the genuine notification
// still settles: once the writer has written the grabs won of p (paid on
// ch and returned), every refusal is answered with its status and code in
// the channel's refusal format and leaves p's trades, status, shares and
// every balance exactly as they were; each AMOUNT_MISMATCH is counted; then
// genuine is acknowledged, the grabs are credited and money is conserved.
func (e *Env) Refused(t testing.TB, ch Channel, p packet.Packet, won map[int64]int64, refusals []Refusal, genuine Notice) {
	t.Helper()
	e.NothingCredited(t, p, won)
	before := e.Snapshot(t, p)
	mismatches := 0.0
	for _, r := range refusals {
		status, body := e.Post(t, ch, r.Notice)
		if status != r.Status || !ch.Refusal(status, body) || ch.Acked(status, body) || !strings.Contains(string(body), r.Code) {
			t.Fatalf("%s: answered %d %q, want a %s refusal %d naming %s", r.Name, status, body, ch.Name, r.Status, r.Code)
		}
		e.Unchanged(t, p, before, r.Name)
		if r.Code == "AMOUNT_MISMATCH" {
			mismatches++
		}
	}
	if n := e.Anomalies(t, "amount_mismatch"); n != mismatches {
		t.Fatalf("amount_mismatch counted %v, want %v", n, mismatches)
	}
	e.Deliver(t, ch, genuine)
	e.Credited(t, p.SenderID, won)
	e.Conserved(t, p.Total)
}

// Orders are the distinct orders of the sender's return, the success
// notification and its duplicate, and two (alike) rounds of grabs: 5!/2.
func Orders() [][]string {
	var out [][]string
	seen := map[string]bool{}
	for _, o := range permutations([]string{"return", "notify", "duplicate", "grab", "grab"}) {
		if key := strings.Join(o, ","); !seen[key] {
			seen[key] = true
			out = append(out, o)
		}
	}
	return out
}

func permutations(items []string) [][]string {
	if len(items) <= 1 {
		return [][]string{append([]string(nil), items...)}
	}
	var out [][]string
	for i := range items {
		rest := append(append([]string(nil), items[:i]...), items[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]string{items[i]}, p...))
		}
	}
	return out
}

// Play plays one order of Orders on p, an unpaid packet of its sender with
// a trade started: "return" calls ret (told whether a notification came
// before it), "notify" and "duplicate" call notify, and each "grab" is two
// grabs by the next members, refused NOT_OPEN until the return or a
// notification opened the packet. It returns the grabs won, by user.
func Play(t testing.TB, packets *packet.Service, p packet.Packet, order []string, ret func(notified bool), notify func()) map[int64]int64 {
	t.Helper()
	opened, notified := false, false
	won := map[int64]int64{}
	next := p.SenderID + 1
	for _, step := range order {
		switch step {
		case "return":
			ret(notified)
			opened = true
		case "notify", "duplicate":
			notify()
			opened, notified = true, true
		case "grab":
			for range 2 {
				r, err := packets.Grab(context.Background(), p.ID, next)
				switch {
				case !opened && errors.Is(err, engine.ErrNotOpen):
				case opened && err == nil:
					won[next] = r.Amount
				default:
					t.Fatalf("%v: grab by %d (opened %v) = %+v, %v", order, next, opened, r, err)
				}
				next++
			}
		}
	}
	return won
}

// InAnyOrder plays every order of Orders on its own packet of 4.00 in 4
// shares paid on ch: the return over the API, the channel's genuine success
// notification posted to grabd twice, two grabs per round. Each ends the
// same way: the packet paid and open, every grab it accepted credited
// exactly once, the sender's balance untouched; and money is conserved.
func (e *Env) InAnyOrder(t testing.TB, ch Channel) {
	t.Helper()
	ctx := context.Background()
	orders := Orders()
	if len(orders) != 60 {
		t.Fatalf("%d orders, want 5!/2 = 60", len(orders))
	}
	var channelIn int64
	for i, order := range orders {
		sender := int64(1000 * (i + 1))
		p := e.Packet(t, sender, 6, 4, 400)
		pay, err := e.Packets.PayByProvider(ctx, p.ID, sender, ch.Name)
		if err != nil {
			t.Fatal(err)
		}
		notice := ch.Notice(t, pay, true)
		won := Play(t, e.Packets, p, order, func(notified bool) {
			want := store.PaymentAwaitingSettlement
			if notified {
				want = store.PaymentPaid // a return never moves a settled payment back
			}
			if got := e.Return(t, pay.TradeNo, sender); got != want {
				t.Fatalf("%v: return answered %s, want %s", order, got, want)
			}
		}, func() { e.Deliver(t, ch, notice) })
		e.Written(t, p, len(won))
		e.Credited(t, sender, won)
		v := e.View(t, p)
		if v.PayStatus != "paid" || (v.Status != packet.StatusOpen && v.Status != packet.StatusFinished) || len(v.Grabs) != len(won) {
			t.Fatalf("%v: packet %s/%s with %d grabs, want paid and open with %d", order, v.Status, v.PayStatus, len(v.Grabs), len(won))
		}
		for _, g := range v.Grabs {
			if !g.Credited || g.Amount != won[g.UserID] {
				t.Fatalf("%v: grab %+v, want credited %d", order, g, won[g.UserID])
			}
		}
		channelIn += 400
	}
	e.Conserved(t, channelIn)
}

// OutcomesThePacketCannotTake plays, in ch's genuine notifications (each
// posted more than once), the outcomes a packet cannot take as they are,
// with senders from base on: a success after a failure credits the sender
// once and the packet stays pay_failed; a failure after a success moves
// nothing; a success for a packet paid by balance meanwhile, and one after
// the trade was given up, credit the sender once. Each is counted, every
// notification is acknowledged, and money is conserved to the fen.
func (e *Env) OutcomesThePacketCannotTake(t testing.TB, ch Channel, base int64) {
	t.Helper()
	ctx := context.Background()
	balance := func(u, want int64, what string) {
		t.Helper()
		if b, err := e.Packets.Balance(ctx, u); err != nil || b != want {
			t.Fatalf("%s: balance of %d = %d, %v; want %d", what, u, b, err, want)
		}
	}
	deliver := func(n Notice, times int) {
		t.Helper()
		for range times {
			e.Deliver(t, ch, n)
		}
	}
	counted := func(kind string, want float64) {
		t.Helper()
		if got := e.Anomalies(t, kind); got != want {
			t.Fatalf("anomaly %s counted %v, want %v", kind, got, want)
		}
	}
	status := func(p packet.Packet, status, payStatus, what string) {
		t.Helper()
		if v := e.View(t, p); v.Status != status || v.PayStatus != payStatus {
			t.Fatalf("%s: packet %s/%s, want %s/%s", what, v.Status, v.PayStatus, status, payStatus)
		}
	}

	// failed, then success: the sender is credited 3.00 once; the grab is not.
	p1 := e.Packet(t, base, 2, 2, 300)
	pay1, won1 := e.PayAndGrab(t, p1, ch.Name, 1)
	deliver(ch.Notice(t, pay1, false), 2)
	status(p1, packet.StatusPayFailed, "failed", "after the failure")
	deliver(ch.Notice(t, pay1, true), 3)
	balance(base, 300, "a success after a failure")
	status(p1, packet.StatusPayFailed, "failed", "after a success that followed a failure")
	e.Written(t, p1, len(won1))
	balance(base+1, 0, "the grab of a failed trade")
	counted("credited_back", 1)

	// success, then failed: nothing moves; the grab is credited once.
	p2 := e.Packet(t, base+10, 2, 2, 300)
	pay2, won2 := e.PayAndGrab(t, p2, ch.Name, 1)
	deliver(ch.Notice(t, pay2, true), 2)
	deliver(ch.Notice(t, pay2, false), 1)
	status(p2, packet.StatusOpen, "paid", "a failure after a success")
	e.Credited(t, base+10, won2)
	counted("failure_after_success", 1)

	// Paid by balance while the trade was open: the trade's money goes back.
	p3 := e.Packet(t, base+20, 2, 2, 300)
	pay3, err := e.Packets.PayByProvider(ctx, p3.ID, base+20, ch.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.Deposit(ctx, base+20, 1000, "funds-"+pay3.TradeNo); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Packets.PayByBalance(ctx, p3.ID, base+20); err != nil {
		t.Fatal(err)
	}
	deliver(ch.Notice(t, pay3, true), 2)
	balance(base+20, 1000, "paid 3.00 by balance, 3.00 back from the channel")
	status(p3, packet.StatusOpen, "paid", "paid by balance")
	counted("credited_back", 2)

	// Given up (the channel gave no outcome in time), then the money arrives.
	p4 := e.Packet(t, base+30, 2, 2, 300)
	pay4, won4 := e.PayAndGrab(t, p4, ch.Name, 1)
	e.Clock.Add(e.Cfg.SettleGiveUp + time.Second)
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.PayStatus(t, pay4.TradeNo, base+30); got != store.PaymentFailed {
		t.Fatalf("trade %s past the give-up bound, want failed", got)
	}
	counted("given_up", 1)
	deliver(ch.Notice(t, pay4, true), 2)
	balance(base+30, 300, "a success after the give-up")
	status(p4, packet.StatusPayFailed, "failed", "a success after the give-up")
	e.Written(t, p4, len(won4))
	balance(base+31, 0, "the grab of a given-up trade")
	counted("credited_back", 3)

	e.Conserved(t, 4*300) // every trade was paid at the channel
}

// UnknownTrades proves that a trade ch has no record of ends as failed:
// (a) after the sender's return, at the reconciler's first query (the
// channel's signed "not exist"); (b) before any return (the payer never
// opened it), it stays pending until SettleGiveUp, then ends failed. Each
// packet ends pay_failed, nothing is credited, each give-up is counted.
func (e *Env) UnknownTrades(t testing.TB, ch Channel, provider channel.Provider, base int64) {
	t.Helper()
	ctx := context.Background()
	p1 := e.Packet(t, base, 2, 2, 500)
	pay1, won := e.PayAndGrab(t, p1, ch.Name, 1)
	p2 := e.Packet(t, base+10, 2, 2, 500)
	pay2, err := e.Packets.PayByProvider(ctx, p2.ID, base+10, ch.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, pay := range []packet.Payment{pay1, pay2} {
		ch.Forget(t, pay)
		if _, err := provider.QueryTrade(ctx, pay.TradeNo); !errors.Is(err, channel.ErrTradeUnknown) {
			t.Fatalf("query of a trade %s has no record of: %v, want ErrTradeUnknown", ch.Name, err)
		}
	}
	ended := func(p packet.Packet, pay packet.Payment, what string) {
		t.Helper()
		if got := e.PayStatus(t, pay.TradeNo, p.SenderID); got != store.PaymentFailed {
			t.Fatalf("%s: trade %s, want failed", what, got)
		}
		if v := e.View(t, p); v.Status != packet.StatusPayFailed {
			t.Fatalf("%s: packet %s, want pay_failed", what, v.Status)
		}
	}

	e.Clock.Add(e.Cfg.SettleTimeout + time.Second)
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	ended(p1, pay1, "unknown after the return")
	if _, err := e.Packets.Grab(ctx, p1.ID, base+2); !errors.Is(err, engine.ErrNotOpen) {
		t.Fatalf("grab after the give-up = %v, want ErrNotOpen", err)
	}
	e.NothingCredited(t, p1, won)
	if got := e.PayStatus(t, pay2.TradeNo, base+10); got != store.PaymentUnpaid {
		t.Fatalf("unknown before any return: trade %s, want unpaid (the payer may still open it)", got)
	}
	if v := e.View(t, p2); v.Status != packet.StatusUnpaid {
		t.Fatalf("unknown before any return: packet %s, want unpaid", v.Status)
	}
	if got := e.Anomalies(t, "given_up"); got != 1 {
		t.Fatalf("given_up counted %v, want 1", got)
	}

	e.Clock.Add(e.Cfg.SettleGiveUp)
	if _, err := e.Packets.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	ended(p2, pay2, "unknown past the give-up bound")
	if got := e.Anomalies(t, "given_up"); got != 2 {
		t.Fatalf("given_up counted %v, want 2", got)
	}
	e.NothingCredited(t, p2, nil)
	e.Conserved(t, 0)
}
