package store

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"
)

// ErrSuperseded: the batch was read from a Redis dataset that is no longer
// current (Redis restarted, or came back older), so it was not applied. Its
// entries are read again from the current dataset if it still has them; if
// it does not, Redis lost them, and verification has already put MySQL's
// view back into Redis.
var ErrSuperseded = errors.New("store: events read under a superseded Redis dataset epoch")

// EpochGuard ties a batch of events to the Redis dataset it was read from.
//
// Why: after Redis restarts, each object is verified against MySQL before it
// serves again. A writer still holding events it read from the old dataset
// must not commit them after such a verification read MySQL, or the object
// would be served from a view that misses them (a share given twice). So the
// batch's transaction locks the shard's epoch row first and checks, while
// holding it, that Redis is still on the batch's epoch; a verification
// adopts the new epoch in that row first (AdoptEpoch), which waits for the
// batch's transaction to end and makes every later old batch fail the check.
type EpochGuard struct {
	Key   string // the shard's epoch key in Redis: the row's name
	Epoch string // the epoch the batch was read under
	// Current reads the shard's epoch from Redis now.
	Current func(ctx context.Context) (string, error)
}

// check runs first in a batch's transaction: it locks the shard's epoch row,
// answers ErrSuperseded when Redis has moved past the batch's epoch, and
// adopts the batch's epoch in the row when it is Redis's current one.
func (db *DB) checkEpoch(ctx context.Context, tx *sqlx.Tx, g *EpochGuard) error {
	if g == nil || g.Epoch == "" {
		return nil
	}
	var stored string
	err := tx.GetContext(ctx, &stored, "SELECT epoch FROM redis_epoch WHERE epoch_key = ?"+db.forUpdate(), g.Key)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	cur, err := g.Current(ctx)
	if err != nil {
		return err
	}
	if cur != g.Epoch {
		return ErrSuperseded
	}
	if stored == g.Epoch {
		return nil
	}
	return db.upsertEpoch(ctx, tx, g.Key, g.Epoch)
}

// AdoptEpoch records that the shard of key is now served from the Redis
// dataset of epoch; it waits for any batch transaction holding the row, so
// once it returns, no batch read under another epoch can commit.
func (db *DB) AdoptEpoch(ctx context.Context, key, epoch string) error {
	return db.inTx(ctx, func(tx *sqlx.Tx) error { return db.upsertEpoch(ctx, tx, key, epoch) })
}

func (db *DB) upsertEpoch(ctx context.Context, tx *sqlx.Tx, key, epoch string) error {
	q := "INSERT INTO redis_epoch (epoch_key, epoch, updated_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE epoch = VALUES(epoch), updated_at = VALUES(updated_at)"
	if db.dialect == dialectSQLite {
		q = "INSERT INTO redis_epoch (epoch_key, epoch, updated_at) VALUES (?, ?, ?) ON CONFLICT (epoch_key) DO UPDATE SET epoch = excluded.epoch, updated_at = excluded.updated_at"
	}
	_, err := tx.ExecContext(ctx, q, key, epoch, time.Now().UTC())
	return err
}
