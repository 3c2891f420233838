package lua

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// A Redis dataset can come back older than MySQL: AOF everysec after an OS
// crash, a failover to a lagging replica, a restore from a backup. A script
// running on such a dataset would grant shares MySQL already holds. So every
// object (packet, campaign, stock product) records the epoch of the dataset it
// was last loaded or verified under, each script compares it with its shard's
// epoch key (Keys.Epoch), and a mismatch answers "verify" instead of running.
//
// The epoch is "<run id>:<token>". The run id changes with every start of a
// redis-server process and differs between a master and its replicas; the
// random token changes whenever the key had to be set anew, so a dataset
// flushed in place (FLUSHALL, same run id) gets a new epoch too. It is
// stamped (epoch.lua) on every new connection before any command of the caller runs on
// it (go-redis's OnConnect), so the first script a restarted or failed-over
// server runs already sees the new epoch. A DEBUG RELOAD keeps the run id: an
// operator who reloads an older RDB in place must restart the server instead.

// ErrNoEpoch means a shard's epoch key is missing (the dataset was lost or
// rolled back past it): stamp it with StampEpoch, then verify.
var ErrNoEpoch = errors.New("lua: dataset epoch missing")

// WatchDataset makes c stamp every shard's epoch on each new connection,
// before the connection serves anything (chained after any OnConnect the
// client already has). It supports *redis.Client and *redis.ClusterClient;
// for a cluster, call it before the client first connects, or pass
// StampOnConnect as ClusterOptions.OnConnect yourself. Other clients are left
// alone: their scripts still verify objects whose epoch key is missing.
func WatchDataset(c redis.UniversalClient, k Keys) {
	if _, done := watched.LoadOrStore(c, true); done {
		return // one stamp per connection is enough
	}
	switch c := c.(type) {
	case *redis.Client:
		o := c.Options()
		o.OnConnect = StampOnConnect(k, o.OnConnect)
	case *redis.ClusterClient:
		o := c.Options()
		o.OnConnect = StampOnConnect(k, o.OnConnect)
	}
}

// watched holds the clients WatchDataset has hooked.
var watched sync.Map

// StampOnConnect is an OnConnect hook that stamps every shard's epoch on
// the new connection's server, then runs next (if any).
func StampOnConnect(k Keys, next func(context.Context, *redis.Conn) error) func(context.Context, *redis.Conn) error {
	return func(ctx context.Context, cn *redis.Conn) error {
		if err := stamp(ctx, cn, k); err != nil {
			return err
		}
		if next != nil {
			return next(ctx, cn)
		}
		return nil
	}
}

// stamp sets every shard's epoch to the server's run id. Keys another cluster node owns answer MOVED, and a
// replica answers READONLY: those shards are not this server's to stamp.
func stamp(ctx context.Context, c redis.Cmdable, k Keys) error {
	id, err := runID(ctx, c)
	if err != nil {
		return err
	}
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for s := 0; s < k.Shards; s++ {
			epochScript.Eval(ctx, p, []string{k.Epoch(s)}, id, newToken())
		}
		return nil
	})
	if err == nil {
		return nil
	}
	for _, cmd := range cmds {
		if e := cmd.Err(); e != nil && !notOurs(e) {
			return e
		}
	}
	return nil
}
func notOurs(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "MOVED ") || strings.HasPrefix(s, "ASK ") || strings.HasPrefix(s, "READONLY")
}

// runID is the server's run_id. A server that has none (miniredis, which
// always starts empty) gets a random one per connection's first stamp: its
// epoch keys are new with every dataset anyway.
func runID(ctx context.Context, c redis.Cmdable) (string, error) {
	info, err := c.Info(ctx, "server").Result()
	if err != nil && !strings.Contains(err.Error(), "not supported") {
		return "", err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok && v != "" {
			return v, nil
		}
	}
	return anonymousRunID, nil
}

// anonymousRunID stands for the run id of a server without one, for the
// life of this process: it must not change between connections to the same
// dataset, or every new connection would force a verification.
var anonymousRunID = func() string {
	var b [20]byte
	rand.Read(b[:])
	return "anon-" + hex.EncodeToString(b[:])
}()

// stampKey sets a missing epoch key to the run id of a server that answers
// c. On a cluster that may be another node's run id: the owner's own stamp,
// on its next new connection, then only costs one more verification.
func stampKey(ctx context.Context, c redis.Cmdable, key string) error {
	id, err := runID(ctx, c)
	if err != nil {
		return err
	}
	return epochScript.Run(ctx, c, []string{key}, id, newToken()).Err()
}

// newToken tells two stamps of one run id apart: a dataset flushed in place
// keeps its run id, and must still get a new epoch.
func newToken() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

var epochScript = register("epoch.lua")

// StateEpoch reports whether an object's state hash exists and, if so,
// whether it was loaded or verified under the shard's current epoch (its
// "ep" field equals the epoch key): then it needs no verification.
func StateEpoch(ctx context.Context, c redis.Cmdable, stateKey, epochKey string) (exists, fresh bool, err error) {
	var ep *redis.SliceCmd
	var cur *redis.StringCmd
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		ep = p.HMGet(ctx, stateKey, stateEpoch, stateStatus)
		cur = p.Get(ctx, epochKey)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return false, false, err
	}
	v := ep.Val()
	if len(v) != 2 {
		return false, false, nil
	}
	have, _ := v[0].(string)
	exists = v[1] != nil
	return exists, exists && cur.Err() == nil && have != "" && have == cur.Val(), nil
}

// EnsureEpoch returns the shard's current epoch (key is Keys.Epoch), stamping
// it first if it is missing.
func EnsureEpoch(ctx context.Context, c redis.Cmdable, key string) (string, error) {
	ep, err := c.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		if err := stampKey(ctx, c, key); err != nil {
			return "", err
		}
		ep, err = c.Get(ctx, key).Result()
	}
	return ep, err
}
