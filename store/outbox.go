package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/event"
)

// SetOutbox turns the transactional outbox on or off (off by default:
// without GRAB_NATS_URL no outbox rows are written). When on, every change
// the rest of the company hears of appends its messages (event.Message) to
// the outbox table in the transaction that makes the change: a writer
// batch (grabs, finished packets, awards, stock changes, refunds), a
// balance payment, a settlement, a refund, a payout's 7 -> 4 and its
// parking. Message ids are deterministic from the change and the insert
// skips an id the table holds, so a replay adds no row.
func (db *DB) SetOutbox(on bool) { db.outbox.Store(on) }

// outboxOn reports whether changes append their messages.
func (db *DB) outboxOn() bool { return db.outbox.Load() }

// outboxRows are the messages one transaction appends, written together
// by writeOutbox.
type outboxRows []event.Message

// outboxChunk bounds the rows of one INSERT, well under any placeholder
// or packet limit (a writer batch is a few hundred events).
const outboxChunk = 1000

// writeOutbox inserts ms in tx, in order (seq follows it), skipping ids
// the table holds already: one statement per outboxChunk rows.
func (db *DB) writeOutbox(ctx context.Context, tx *sqlx.Tx, ms outboxRows) error {
	created := time.Now().UTC()
	for start := 0; start < len(ms); start += outboxChunk {
		part := ms[start:min(start+outboxChunk, len(ms))]
		var q strings.Builder
		q.WriteString(db.insertIgnore() + " INTO outbox (event_id, kind, aggregate, payload, at, created_at) VALUES ")
		args := make([]any, 0, 6*len(part))
		for i, m := range part {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, ?)")
			args = append(args, m.ID, m.Kind, m.Aggregate, string(m.Payload), m.At.UTC(), created)
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// outboxRow is a row of the outbox table as the relay reads it.
type outboxRow struct {
	Seq       int64     `db:"seq"`
	ID        string    `db:"event_id"`
	Kind      string    `db:"kind"`
	Aggregate string    `db:"aggregate"`
	Payload   string    `db:"payload"`
	At        time.Time `db:"at"`
}

// RelayOutbox claims up to limit unpublished rows, oldest seq first, with
// FOR UPDATE SKIP LOCKED (MySQL; SQLite has one writer, so a plain select),
// drops any claimed row whose aggregate has an older unpublished row this
// claim does not hold (another relay has it: per-aggregate order), calls
// publish with the rest in seq order, marks the first `done` of them
// published in the same transaction and commits. It returns how many it
// marked. publish runs inside the transaction: a crash after publishing
// and before the commit leaves the rows unpublished, and they are
// published again (JetStream drops the duplicate by its Msg-Id). An error
// from publish marks nothing and is returned.
//
// Per-aggregate order holds among rows committed when the claim reads: the
// changes of one aggregate lock one row of it (a packet's, a campaign
// award's or a SKU's), so they commit in seq order.
func (db *DB) RelayOutbox(ctx context.Context, limit int, publish func(context.Context, []event.Message) (done int, err error)) (int, error) {
	var marked int
	err := db.inTxWith(ctx, db.relayTxOptions(), func(tx *sqlx.Tx) error {
		marked = 0
		rows, err := db.claimOutbox(ctx, tx, limit)
		if err != nil || len(rows) == 0 {
			return err
		}
		msgs := make([]event.Message, len(rows))
		for i, r := range rows {
			msgs[i] = event.Message{ID: r.ID, Kind: r.Kind, Aggregate: r.Aggregate, At: r.At.UTC(), Payload: []byte(r.Payload)}
		}
		done, err := publish(ctx, msgs)
		if err != nil {
			return err
		}
		done = max(0, min(done, len(rows)))
		if done == 0 {
			return nil
		}
		seqs := make([]int64, done)
		for i := range seqs {
			seqs[i] = rows[i].Seq
		}
		q, args, err := sqlx.In("UPDATE outbox SET published_at = ? WHERE seq IN (?)", time.Now().UTC(), seqs)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return err
		}
		marked = done
		return nil
	})
	if err != nil {
		return 0, err
	}
	return marked, nil
}

// relayTxOptions: on MySQL the relay's transaction reads committed, so
// its claim locks the rows it returns and no gap: a writer appending rows
// meanwhile never waits for a relay that is publishing.
func (db *DB) relayTxOptions() *sql.TxOptions {
	if db.dialect == dialectSQLite {
		return nil
	}
	return &sql.TxOptions{Isolation: sql.LevelReadCommitted}
}

// claimOutbox locks up to limit unpublished rows (skipping rows another
// relay holds) and returns them in seq order, less those an older
// unpublished row of their aggregate, held elsewhere, must go before.
func (db *DB) claimOutbox(ctx context.Context, tx *sqlx.Tx, limit int) ([]outboxRow, error) {
	lock := ""
	if db.dialect == dialectMySQL {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	var rows []outboxRow
	if err := tx.SelectContext(ctx, &rows, `SELECT seq, event_id, kind, aggregate, payload, at FROM outbox
		WHERE published_at IS NULL ORDER BY seq LIMIT ?`+lock, limit); err != nil || len(rows) == 0 {
		return nil, err
	}
	if db.dialect == dialectSQLite {
		return rows, nil // one writer: no row is held elsewhere
	}
	oldest, err := oldestElsewhere(ctx, tx, rows)
	if err != nil {
		return nil, err
	}
	kept := rows[:0]
	for _, r := range rows {
		if o, ok := oldest[r.Aggregate]; !ok || r.Seq < o {
			kept = append(kept, r)
		}
	}
	return kept, nil
}

// oldestElsewhere is, per aggregate of the claim, the lowest seq of an
// unpublished row the claim does not hold: one another relay has locked,
// or one committed after the claim read. A plain read (of what is
// committed now), so it sees rows other relays have locked.
func oldestElsewhere(ctx context.Context, tx *sqlx.Tx, claim []outboxRow) (map[string]int64, error) {
	seqs := make([]int64, len(claim))
	var aggs []string
	seen := map[string]bool{}
	for i, r := range claim {
		seqs[i] = r.Seq
		if !seen[r.Aggregate] {
			seen[r.Aggregate] = true
			aggs = append(aggs, r.Aggregate)
		}
	}
	q, args, err := sqlx.In(`SELECT aggregate, MIN(seq) AS seq FROM outbox
		WHERE published_at IS NULL AND aggregate IN (?) AND seq < ? AND seq NOT IN (?) GROUP BY aggregate`,
		aggs, claim[len(claim)-1].Seq, seqs)
	if err != nil {
		return nil, err
	}
	var found []struct {
		Aggregate string `db:"aggregate"`
		Seq       int64  `db:"seq"`
	}
	if err := tx.SelectContext(ctx, &found, q, args...); err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(found))
	for _, f := range found {
		out[f.Aggregate] = f.Seq
	}
	return out, nil
}

// purgeChunk bounds the rows one DELETE of PurgeOutbox removes on MySQL,
// so a large purge holds its locks briefly and does not stall the writer.
const purgeChunk = 5000

// PurgeOutbox deletes rows published before `before`; it returns how many.
func (db *DB) PurgeOutbox(ctx context.Context, before time.Time) (int64, error) {
	q := "DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?"
	if db.dialect == dialectSQLite {
		res, err := db.x.ExecContext(ctx, q, before.UTC())
		if err != nil {
			return 0, err
		}
		return res.RowsAffected()
	}
	var total int64
	for {
		res, err := db.x.ExecContext(ctx, q+" LIMIT ?", before.UTC(), purgeChunk)
		if err != nil {
			return total, err
		}
		n, err := res.RowsAffected()
		total += n
		if err != nil || n < purgeChunk {
			return total, err
		}
	}
}

// OutboxStats is the outbox's size (unpublished rows) and the time of its
// oldest unpublished row (zero when none): when the store wrote the row
// with the lowest seq, so now minus it is how far the relay lags.
func (db *DB) OutboxStats(ctx context.Context) (pending int64, oldest time.Time, err error) {
	if err := db.x.GetContext(ctx, &pending, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"); err != nil || pending == 0 {
		return 0, time.Time{}, err
	}
	var at []time.Time
	if err := db.x.SelectContext(ctx, &at, "SELECT created_at FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1"); err != nil {
		return 0, time.Time{}, err
	}
	if len(at) == 1 {
		oldest = at[0].UTC()
	}
	return pending, oldest, nil
}
