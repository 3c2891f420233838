package store

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// An applier makes one kind of event durable. Applying must be idempotent:
// a batch is replayed whole after a crash between commit and ack, so an
// event already applied applies again as a no-op (and is not rejected).
type applier interface {
	// accepts reports whether ev is of the applier's kind and type.
	accepts(ev event.Event) bool
	// apply applies the batch's events of the applier's kind, in stream
	// order, in b's transaction; ok[i] is false for an event that
	// contradicts MySQL and was left unapplied.
	apply(ctx context.Context, b *batch, evs []event.Event) (ok []bool, err error)
	// contradiction says what a rejected event of this kind contradicts.
	contradiction() error
}

// appliers in the order a batch applies their kinds. A packet's grabs come
// before its close in the stream (the close script takes back only what is
// still unowned), so claiming every grab of the batch before any close keeps
// stream order where it matters; campaigns and stock live in tables of
// their own, so their order against the others does not. t=srec records go
// before the records stock events carry, as ApplyEvents always wrote them.
var appliers = []applier{grabApplier, closeApplier, awardApplier, stockRecordApplier, stockApplier}

// kindApplier is the applier of the events of type T, which apply takes
// already typed.
type kindApplier[T event.Event] struct {
	applyKind func(ctx context.Context, b *batch, evs []T) (ok []bool, err error)
	why       string // what a rejected event contradicts
}

// accepts takes only a T: a *T is of T's kind too, but no applier's type.
func (a kindApplier[T]) accepts(ev event.Event) bool { _, ok := ev.(T); return ok }

func (a kindApplier[T]) apply(ctx context.Context, b *batch, evs []event.Event) ([]bool, error) {
	typed := make([]T, len(evs))
	for i, ev := range evs {
		typed[i] = ev.(T)
	}
	return a.applyKind(ctx, b, typed)
}

func (a kindApplier[T]) contradiction() error { return errors.New("contradicts the store: " + a.why) }

// applierOf is ev's applier; false for an event no applier accepts.
func applierOf(ev event.Event) (applier, bool) {
	i := slices.IndexFunc(appliers, func(a applier) bool { return a.accepts(ev) })
	if i < 0 {
		return nil, false
	}
	return appliers[i], true
}

// Contradiction says why ApplyEvents rejected ev, for the person who reads
// the parked event.
func Contradiction(ev event.Event) error {
	if a, ok := applierOf(ev); ok {
		return a.contradiction()
	}
	return fmt.Errorf("contradicts the store: no applier for %s events of type %T", ev.Kind(), ev)
}

// batch is one ApplyEventsUnder transaction, as its appliers share it.
type batch struct {
	db *DB
	tx *sqlx.Tx
	// settle is the batch's account work, run in order once every applier
	// has applied its events: packet rows are locked in stream order first,
	// accounts after (creditMany sorts them), as a settlement does.
	settle []func(context.Context) error
	// records are the stock records the batch's events set, upserted last
	// in one statement (applyStockRecords).
	records []event.StockRecord
	// out are the messages the batch appends to the outbox, in one
	// statement once everything else is written.
	out outboxRows
}

// ApplyGrabs is ApplyEvents for a batch of grabs only.
func (db *DB) ApplyGrabs(ctx context.Context, grabs []event.Grab) (rejected []int, err error) {
	events := make([]event.Event, len(grabs))
	for i, g := range grabs {
		events[i] = g
	}
	return db.ApplyEvents(ctx, events)
}

// ApplyEvents makes a batch of a stream's events durable in one transaction,
// in stream order: each grabbed share gets its owner, finished packets are
// marked, closed packets are marked expired with their remainder, awards
// are recorded and counted, stock changes logged and records kept; then
// credited grabs reach the balance through the ledger and closed packets
// that are paid are refunded (each once, however often the batch is
// replayed).
//
// It returns the indexes of events that contradict MySQL, ascending, left
// unapplied for the caller to park (Contradiction says why): a grab whose
// share belongs to someone else, whose user holds another share of the
// packet or whose amount is not the share's; a close of an unknown packet,
// or of more than the packet has unowned; an award that is not its
// campaign's share, is another user's, or would take the campaign past its
// budget (see applyAwards); a stock change MySQL logged otherwise (see
// applyStock); an event of a kind no applier knows.
func (db *DB) ApplyEvents(ctx context.Context, events []event.Event) (rejected []int, err error) {
	return db.ApplyEventsUnder(ctx, nil, events)
}

// ApplyEventsUnder is ApplyEvents for a batch read under a Redis dataset
// epoch: it applies nothing and answers ErrSuperseded when Redis has moved
// past that epoch (see EpochGuard). The epoch row is locked first, then
// packet rows in stream order, accounts last.
func (db *DB) ApplyEventsUnder(ctx context.Context, g *EpochGuard, events []event.Event) (rejected []int, err error) {
	err = db.inTx(ctx, func(tx *sqlx.Tx) error {
		rejected = rejected[:0]
		if err := db.checkEpoch(ctx, tx, g); err != nil {
			return err
		}
		b := &batch{db: db, tx: tx}
		bad := make([]bool, len(events))
		for i, ev := range events {
			_, known := applierOf(ev)
			bad[i] = !known
		}
		for _, a := range appliers {
			var evs []event.Event
			var at []int // evs[j] is events[at[j]]
			for i, ev := range events {
				if a.accepts(ev) {
					evs, at = append(evs, ev), append(at, i)
				}
			}
			if len(evs) == 0 {
				continue
			}
			ok, err := a.apply(ctx, b, evs)
			if err != nil {
				return err
			}
			for j, i := range at {
				bad[i] = !ok[j]
			}
		}
		for _, settle := range b.settle {
			if err := settle(ctx); err != nil {
				return err
			}
		}
		if err := db.applyStockRecords(ctx, tx, b.records); err != nil {
			return err
		}
		if err := db.writeOutbox(ctx, tx, b.out); err != nil {
			return err
		}
		for i := range bad {
			if bad[i] {
				rejected = append(rejected, i)
			}
		}
		return nil
	})
	return rejected, err
}
