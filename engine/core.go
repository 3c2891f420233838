package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/store"
)

// What the domain services build on. Each is fixed at New.

// Redis is the client the scripts run on.
func (e *Engine) Redis() redis.UniversalClient { return e.rdb }

// DB is the durable record.
func (e *Engine) DB() *store.DB { return e.db }

// Clock is the engine's clock.
func (e *Engine) Clock() Clock { return e.clock }

// Rand is the engine's source of randomness (splits, shuffles).
func (e *Engine) Rand() Rand { return e.rand }

// Log is the engine's logger.
func (e *Engine) Log() *slog.Logger { return e.log }

// Config is the engine's configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Metrics registers a domain's own metrics; nil when metrics are off.
func (e *Engine) Metrics() prometheus.Registerer { return e.reg }

// Pipeline carries concurrent grabs to Redis; nil when each goes on its own
// (Config.GrabPipelines).
func (e *Engine) Pipeline() *lua.GrabPipeline { return e.pipe }

// Lagging reports whether the writer's lag is past Config.LagLimit: a
// domain then refuses new grabs with ErrBusy rather than take money the
// engine cannot yet make durable.
func (e *Engine) Lagging() bool { return e.WriterLag() > e.cfg.LagLimit }

// RequestID tells one grab call from another, so that a re-sent script after
// a lost reply is answered as the original, not as a repeat.
func RequestID() string {
	var b [32]byte // one allocation: the string
	return string(strconv.AppendUint(append(b[:0], requestPrefix...), requestSeq.Add(1), 36))
}

// Request ids are a random per-process prefix and a counter: unique without
// asking the system for randomness on every grab.
var (
	requestPrefix = func() string {
		var b [6]byte
		rand.Read(b[:])
		return hex.EncodeToString(b[:]) + "-"
	}()
	requestSeq atomic.Uint64
)

// LockLoad takes a load lock, waiting for another holder; what names the
// locked thing in the BUSY answer when the wait is too long.
func (e *Engine) LockLoad(ctx context.Context, key, what string) (unlock func(), err error) {
	token := RequestID()
	for wait := 0; ; wait++ {
		ok, err := lua.Lock(ctx, e.rdb, key, token, 10*time.Second)
		if err != nil {
			return nil, err
		}
		if ok {
			return func() { lua.Unlock(context.WithoutCancel(ctx), e.rdb, key, token) }, nil
		}
		if wait > 300 {
			return nil, fmt.Errorf("%w: %s is being loaded", ErrBusy, what)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// CountLoad logs and counts what a load under the load lock did.
func (e *Engine) CountLoad(ctx context.Context, res lua.LoadResult, what string, id int64, status string) {
	switch res {
	case lua.Loaded:
		e.m.rebuilds.Inc()
		e.log.InfoContext(ctx, what+" state rebuilt from the store", "id", id, "status", status)
	case lua.Verified:
		e.m.verified.Inc()
		e.log.InfoContext(ctx, what+" state verified against the store after a Redis dataset change", "id", id, "status", status)
	}
}

// Every runs pass, then waits interval, until ctx ends; a failed pass is
// logged and the next one tries again.
func (e *Engine) Every(ctx context.Context, interval time.Duration, name string, pass func(context.Context) error) error {
	for {
		if err := pass(ctx); err != nil && ctx.Err() == nil {
			e.log.WarnContext(ctx, name+" failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

// Verified counts objects verified against the store after a Redis dataset
// change (grab_state_verifications_total), for a domain that loads its own.
func (e *Engine) Verified() prometheus.Counter { return e.m.verified }
