package grab_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab"
	"github.com/grab-engine/grab/engine"
	"github.com/grab-engine/grab/engine/campaign"
	"github.com/grab-engine/grab/engine/money"
	"github.com/grab-engine/grab/engine/packet"
	"github.com/grab-engine/grab/engine/stock"
	"github.com/grab-engine/grab/engine/transfer"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// start builds grab on miniredis and a SQLite file, as a unit test of an
// embedding service would, and runs its writer and jobs until stop.
func start(d grab.Deps) (g *grab.Grab, stop func()) {
	ctx := context.Background()
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "grab-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := store.OpenSQLite(ctx, filepath.Join(dir, "grab.db"))
	if err != nil {
		log.Fatal(err)
	}
	if err := db.Migrate(ctx); err != nil { // every constructor needs the schema
		log.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	d.Redis, d.DB, d.Log = rdb, db, slog.New(slog.DiscardHandler)
	g = grab.New(d, engine.Config{Keys: lua.NewKeys("example", 4)}) // zero fields take engine.DefaultConfig's
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx) }()
	return g, func() {
		cancel()
		<-done // the writer has drained
		rdb.Close()
		db.Close()
		mr.Close()
		os.RemoveAll(dir)
	}
}

// A red packet: the sender tops up, sends 3 equal shares of 5.00 to a
// group and pays from the balance; two members grab. Grabs answer from
// Redis; WaitDurable waits for the writer to credit them in the store.
func Example() {
	g, stop := start(grab.Deps{})
	defer stop()
	ctx := context.Background()

	must(g.Packets.Deposit(ctx, 1, 10_000, "top-up-1")) // 100.00
	must(g.Packets.SetGroupMembers(ctx, 7, []int64{1, 2, 3}))
	p := must(g.Packets.CreatePacket(ctx, packet.NewPacket{SenderID: 1, Kind: packet.KindGroupEqual, GroupID: 7,
		Count: 3, Amount: 500})) // group_equal: the amount of each share
	must(g.Packets.PayByBalance(ctx, p.ID, 1))
	for _, user := range []int64{2, 3} {
		r := must(g.Packets.Grab(ctx, p.ID, user))
		fmt.Printf("user %d grabbed share %d: %s\n", user, r.Seq, money.Format(r.Amount))
	}
	if err := g.Engine.WaitDurable(ctx); err != nil {
		log.Fatal(err)
	}
	for _, user := range []int64{1, 2, 3} {
		fmt.Printf("balance of %d: %s\n", user, money.Format(must(g.Packets.Balance(ctx, user))))
	}
	// Output:
	// user 2 grabbed share 1: 5.00
	// user 3 grabbed share 2: 5.00
	// balance of 1: 85.00
	// balance of 2: 5.00
	// balance of 3: 5.00
}

// A flash sale: an activity's SKU gets 5 units; orders deduct them, each
// once however often it is retried, and the sixth unit is refused.
func Example_flashSale() {
	g, stop := start(grab.Deps{})
	defer stop()
	ctx := context.Background()
	const activity, product, sku = 1, 42, 420

	if err := g.Stock.Submit(ctx, "voucher-1", activity, product, []stock.SKUStock{{SKU: sku, Stock: 5}}); err != nil {
		log.Fatal(err)
	}
	deduct := func(order string, qty int64) error {
		return g.Stock.Deduct(ctx, order, []stock.Item{{Scope: stock.ScopeHighSeas, ActivityID: activity, ProductID: product, SKU: sku, Qty: qty}})
	}
	fmt.Println("order-1:", deduct("order-1", 2))
	fmt.Println("order-1 again:", deduct("order-1", 2)) // a retry: answered as the first, nothing more taken
	fmt.Println("order-2:", deduct("order-2", 3))
	fmt.Println("order-3 sold out:", errors.Is(deduct("order-3", 1), stock.ErrOutOfStock))
	v := must(g.Stock.SKU(ctx, activity, product, sku))
	fmt.Printf("available %d, sold %d\n", v.HighSeas.Available, v.HighSeas.Sold)
	// Output:
	// order-1: <nil>
	// order-1 again: <nil>
	// order-2: <nil>
	// order-3 sold out: true
	// available 0, sold 5
}

// wallet is a transfer service in memory: idempotent by out-trade-no, as
// the real one is. A production embedder passes transfer.NewClient.
type wallet struct {
	mu      sync.Mutex
	applied map[string]transfer.Transfer
}

func (w *wallet) Transfer(_ context.Context, t transfer.Transfer) (transfer.Result, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, dup := w.applied[t.OutTradeNo]
	if !dup {
		w.applied[t.OutTradeNo] = t
	}
	return transfer.Result{Outcome: transfer.Succeeded, TransferID: "W-" + t.OutTradeNo, Amount: t.Amount, Duplicate: dup}, nil
}

func (w *wallet) QueryTransfer(_ context.Context, no string) (transfer.Result, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t, ok := w.applied[no]
	if !ok {
		return transfer.Result{Outcome: transfer.Unknown}, nil
	}
	return transfer.Result{Outcome: transfer.Succeeded, TransferID: "W-" + no, Amount: t.Amount}, nil
}

// A campaign: a budget of 10.00 pre-split into 4 awards of 2.00 to 3.00;
// each winner's award is paid out through the transfer service once.
func Example_campaign() {
	w := &wallet{applied: map[string]transfer.Transfer{}}
	g, stop := start(grab.Deps{Campaigns: campaign.Deps{Transfer: w}})
	defer stop()
	ctx := context.Background()

	now := time.Now()
	c, _ := must2(g.Campaigns.CreateCampaign(ctx, campaign.NewCampaign{Name: "spring", Budget: 1_000, AwardCount: 4,
		AwardMin: 200, AwardMax: 300, StartsAt: now.Add(-time.Minute), EndsAt: now.Add(time.Hour)}))
	var won int64
	for user := int64(1); user <= 5; user++ {
		a, err := g.Campaigns.GrabCampaign(ctx, c.ID, user)
		switch {
		case errors.Is(err, engine.ErrSoldOut):
			fmt.Printf("user %d: sold out\n", user)
		case err != nil:
			log.Fatal(err)
		default:
			won += a.Amount
			fmt.Printf("user %d: award %d, %s\n", user, a.Seq, a.Payout)
		}
	}
	// The grab answered from Redis; the writer records each award and the
	// payout pool pays it moments later.
	for user := int64(1); user <= 4; user++ {
		for {
			mine := must(g.Campaigns.MyAwards(ctx, c.ID, user))
			if len(mine) == 1 && mine[0].Payout == campaign.PayoutTransferred {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	w.mu.Lock()
	fmt.Println("won in all:", money.Format(won), "transfers:", len(w.applied))
	w.mu.Unlock()
	// Output:
	// user 1: award 1, received
	// user 2: award 2, received
	// user 3: award 3, received
	// user 4: award 4, received
	// user 5: sold out
	// won in all: 10.00 transfers: 4
}

func must[T any](v T, err error) T {
	if err != nil {
		log.Fatal(err)
	}
	return v
}

func must2[T, U any](v T, u U, err error) (T, U) {
	if err != nil {
		log.Fatal(err)
	}
	return v, u
}
