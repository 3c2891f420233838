package lua_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/engine/enginetest"
	"github.com/grab-engine/grab/lua"
	"github.com/grab-engine/grab/lua/redistest"
)

// Every error here is one a real client got from a real server (or a
// miniredis told to answer like one); none is built by hand.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	type errCase struct {
		name string
		err  error
		want bool
	}
	var cases []errCase
	add := func(name string, err error, want bool) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error to classify", name)
		}
		cases = append(cases, errCase{name, err, want})
	}
	noRetry := func(addr string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
		t.Cleanup(func() { c.Close() })
		return c
	}

	// Nobody listens: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()
	add("connection refused", noRetry(closedAddr).Ping(ctx).Err(), true)
	add("connection refused, wrapped", fmt.Errorf("grab: %w", noRetry(closedAddr).Get(ctx, "k").Err()), true)

	// A server that accepts and never answers: a read timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	slow := redis.NewClient(&redis.Options{Addr: silent.Addr().String(), MaxRetries: -1, ReadTimeout: 50 * time.Millisecond,
		DisableIdentity: true, Protocol: 2})
	t.Cleanup(func() { slow.Close() })
	add("read timeout", slow.Ping(ctx).Err(), true)

	// A server that hangs up on every command: EOF.
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hangup.Close() })
	go func() {
		for {
			c, err := hangup.Accept()
			if err != nil {
				return
			}
			c.Read(make([]byte, 64))
			c.Close()
		}
	}()
	rude := redis.NewClient(&redis.Options{Addr: hangup.Addr().String(), MaxRetries: -1, DisableIdentity: true, Protocol: 2})
	t.Cleanup(func() { rude.Close() })
	add("connection closed by the server", rude.Ping(ctx).Err(), true)

	// A real redis-server: killed under a pooled connection, then gone.
	srv := redistest.StartServer(t, redistest.SlowLoad(50*time.Microsecond)...)
	pooled := noRetry(srv.Addr)
	if err := pooled.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	add("server killed under a pooled connection", pooled.Ping(ctx).Err(), true)
	add("server stopped", noRetry(srv.Addr).Ping(ctx).Err(), true)

	// The same server loading a dataset: LOADING.
	srv.Start()
	srv.Fill(20_000)
	srv.Save()
	srv.Stop()
	srv.StartLoading()
	loading := noRetry(srv.Addr)
	add("LOADING (GET)", loading.Get(ctx, "filler:1").Err(), true)
	add("LOADING (EVALSHA of a script)", redis.NewScript("return 1").Run(ctx, loading, nil).Err(), true)
	add("LOADING (pipeline)", func() error {
		_, err := loading.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "filler:1"); return nil })
		return err
	}(), true)
	srv.WaitLoaded(30 * time.Second)

	// A replica whose master is gone: writes READONLY; reads MASTERDOWN once
	// it may not serve stale data.
	replica := redistest.StartServer(t, "--replicaof", "127.0.0.1", fmt.Sprint(portOf(t, closedAddr)))
	rc := noRetry(replica.Addr)
	add("READONLY", rc.Set(ctx, "k", "v", 0).Err(), true)
	add("READONLY inside a script", redis.NewScript(`return redis.call('SET', KEYS[1], 'v')`).Run(ctx, rc, []string{"k"}).Err(), true)
	if err := rc.ConfigSet(ctx, "replica-serve-stale-data", "no").Err(); err != nil {
		t.Fatal(err)
	}
	add("MASTERDOWN", rc.Get(ctx, "k").Err(), true)

	// A cluster node with no slots: CLUSTERDOWN.
	node := redistest.StartServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	add("CLUSTERDOWN", noRetry(node.Addr).Get(ctx, "k").Err(), true)

	// The pool: no free connection in time, and a closed client.
	held := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 1, PoolTimeout: 50 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { held.Close() })
	blocked := make(chan struct{})
	go func() { defer close(blocked); held.BLPop(ctx, time.Second, "nothing-comes") }()
	var poolErr error
	enginetest.WaitFor(t, "a ping to find the pool's only connection held", func() bool {
		poolErr = held.Ping(ctx).Err()
		return poolErr != nil
	})
	<-blocked
	add("pool timeout", poolErr, true)
	closed := redis.NewClient(&redis.Options{Addr: srv.Addr})
	closed.Close()
	add("closed client", closed.Ping(ctx).Err(), true)

	// What a server says it cannot do now (miniredis answers as told).
	mr := miniredis.RunT(t)
	mc := noRetry(mr.Addr())
	for _, reply := range []string{
		"TRYAGAIN Multiple keys request during rehashing of slot",
		"BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
		"OOM command not allowed when used memory > 'maxmemory'.",
		"ERR max number of clients reached",
		"NOREPLICAS Not enough good replicas to write.",
	} {
		mr.SetError(reply)
		add(reply, mc.Set(ctx, "k", "v", 0).Err(), true)
	}
	mr.SetError("")

	// Errors that will not go away by waiting, and a caller that gave up.
	live := noRetry(srv.Addr)
	add("redis.Nil", live.Get(ctx, "no-such-key").Err(), false)
	live.Set(ctx, "a-string", "v", 0)
	add("WRONGTYPE", live.LPush(ctx, "a-string", "x").Err(), false)
	add("script error", redis.NewScript(`return redis.error_reply('boom')`).Run(ctx, live, nil).Err(), false)
	add("script runtime error", redis.NewScript(`return redis.call('NOSUCHCOMMAND')`).Run(ctx, live, nil).Err(), false)
	live.XGroupCreateMkStream(ctx, "s", "g", "0")
	add("BUSYGROUP", live.XGroupCreateMkStream(ctx, "s", "g", "0").Err(), false)
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	add("context cancelled by the caller", live.Ping(cancelled).Err(), false)
	add("context cancelled while dialing a dead server", noRetry(closedAddr).Ping(cancelled).Err(), false)
	add("unexpected script reply", lua.ErrUnexpectedReply, false)
	add("a plain error", errors.New("LOADING is not a redis reply here"), false)

	for _, c := range cases {
		t.Logf("%-45s %T %q", c.name, c.err, c.err)
		if got := lua.Unavailable(c.err); got != c.want {
			t.Errorf("%s: Unavailable(%T %q) = %v, want %v", c.name, c.err, c.err, got, c.want)
		}
	}
	if lua.Unavailable(nil) {
		t.Error("Unavailable(nil) = true")
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
