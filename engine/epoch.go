package engine

import (
	"context"

	"github.com/grab-engine/grab/lua"
)

// AdoptEpoch is the first step of every load or verification of an object
// from MySQL: it returns the shard's current dataset epoch (key is a
// lua.Keys.Epoch) and records it in MySQL as the one the shard is now served
// from. Recording it waits for any writer batch read under an older epoch to
// commit, and refuses those that come later (store.EpochGuard), so the MySQL
// view read next already has every change that can still reach MySQL.
//
// Each process records an epoch once per shard: a shard's epoch changes only
// when its Redis restarts or fails over.
func (e *Engine) AdoptEpoch(ctx context.Context, key string) (string, error) {
	epoch, err := lua.EnsureEpoch(ctx, e.rdb, key)
	if err != nil {
		return "", err
	}
	if v, ok := e.adopted.Load(key); ok && v.(string) == epoch {
		return epoch, nil
	}
	if err := e.db.AdoptEpoch(ctx, key, epoch); err != nil {
		return "", err
	}
	e.adopted.Store(key, epoch)
	return epoch, nil
}
