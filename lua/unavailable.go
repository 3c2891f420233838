package lua

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
)

// unavailableReplies are the prefixes of the error replies with which a Redis
// server says it cannot serve the command now, though it may in a moment:
//
//	LOADING      the dataset is being loaded into memory (after a restart)
//	MASTERDOWN   a replica lost its master (replica-serve-stale-data no)
//	READONLY     a write reached a replica, e.g. during a failover
//	CLUSTERDOWN  the cluster cannot serve the slot
//	TRYAGAIN     a multi-key command during a slot migration
//	BUSY         a script or module command runs past its time limit
//	NOREPLICAS   not enough replicas to accept a write (min-replicas-to-write)
//	OOM          maxmemory reached under noeviction: writes wait for memory
//	ERR max number of clients reached
//
// A script's own error (a bug, a wrong type) is not here: it will not go away.
var unavailableReplies = []string{
	"LOADING ", "MASTERDOWN ", "READONLY ", "CLUSTERDOWN ", "TRYAGAIN ", "BUSY ", "NOREPLICAS ", "OOM ",
	"ERR max number of clients reached",
}

// Unavailable reports whether err means Redis cannot serve now but may soon:
// it is unreachable (refused, reset, closed connection, timed out, no free
// connection in the pool), restarting, loading its dataset, failing over, or
// shedding load. The caller should answer "busy, retry later", not "internal
// error". It is false for nil, redis.Nil, script and reply errors, and for a
// context the caller cancelled.
func Unavailable(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	if errors.Is(err, context.Canceled) {
		return false // the caller gave up (even mid-dial); nothing is wrong with Redis
	}
	// Network failures and timeouts: a net.Error is every dial, read or write
	// failure on a connection (refused, reset, broken pipe, i/o timeout,
	// unknown host).
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, net.ErrClosed), errors.Is(err, os.ErrDeadlineExceeded),
		errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, redis.ErrClosed):
		return true
	case errors.Is(err, context.DeadlineExceeded):
		// A deadline passed before Redis answered: it is too slow right now.
		return true
	}
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := strings.TrimPrefix(re.Error(), "ERR ") // KVRocks and others prefix ERR
	for _, p := range unavailableReplies {
		if strings.HasPrefix(msg, p) || strings.HasPrefix(re.Error(), p) {
			return true
		}
	}
	// A script that called redis.call on a server that refused the write
	// (READONLY after a failover, OOM) fails with the reply inside its message.
	for _, p := range []string{"-READONLY ", "-OOM ", "-MASTERDOWN ", "-LOADING ", "-CLUSTERDOWN ", "-TRYAGAIN "} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
