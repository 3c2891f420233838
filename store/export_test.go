package store

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// OutboxRow is a row of the outbox as tests read it.
type OutboxRow struct {
	Seq       int64
	Msg       event.Message
	Published bool
}

// OutboxRows is the whole outbox, in seq order.
func (db *DB) OutboxRows(ctx context.Context) ([]OutboxRow, error) {
	var rows []struct {
		outboxRow
		Published bool `db:"published"`
	}
	if err := db.x.SelectContext(ctx, &rows, `SELECT seq, event_id, kind, aggregate, payload, at,
		published_at IS NOT NULL AS published FROM outbox ORDER BY seq`); err != nil {
		return nil, err
	}
	out := make([]OutboxRow, len(rows))
	for i, r := range rows {
		out[i] = OutboxRow{Seq: r.Seq, Published: r.Published, Msg: event.Message{ID: r.ID, Kind: r.Kind, Aggregate: r.Aggregate,
			At: r.At.UTC(), Payload: []byte(r.Payload)}}
	}
	return out, nil
}

// AppendOutbox writes ms to the outbox in a transaction of their own.
func (db *DB) AppendOutbox(ctx context.Context, ms []event.Message) error {
	return db.inTx(ctx, func(tx *sqlx.Tx) error { return db.writeOutbox(ctx, tx, ms) })
}
