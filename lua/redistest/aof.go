package redistest

import (
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// StartAOFServer starts redis-server with an append-only file fsynced on
// every write, so the file's size marks a point in the dataset's history
// that RollBack can return to. It is stopped when the test ends.
func StartAOFServer(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	return StartServer(tb, append([]string{"--appendonly", "yes", "--appendfsync", "always",
		"--auto-aof-rewrite-percentage", "0"}, extra...)...)
}

// AOFSize is the size of the server's current append-only file: the point
// RollBack returns to. Every write acknowledged before the call is in it.
func (s *Server) AOFSize() int64 {
	s.tb.Helper()
	fi, err := os.Stat(s.incrAOF())
	if err != nil {
		s.tb.Fatalf("aof: %v", err)
	}
	return fi.Size()
}

// RollBack crashes the server (SIGKILL) and starts it again from its
// append-only file cut back to size, as an OS crash with appendfsync
// everysec, a failover to a lagging replica or a restore from a backup would
// bring it back: every write after that point is gone, and it has a new run
// id.
func (s *Server) RollBack(size int64) {
	s.tb.Helper()
	s.Kill()
	if err := os.Truncate(s.incrAOF(), size); err != nil {
		s.tb.Fatalf("aof: %v", err)
	}
	s.Start()
}

// incrAOF is the newest incremental file of Redis 7's multi-part AOF
// (appendonlydir/<name>.<seq>.incr.aof); auto-rewrite is off, so it is the
// only one that grows.
func (s *Server) incrAOF() string {
	dir := ""
	for i, a := range s.args {
		if a == "--dir" && i+1 < len(s.args) {
			dir = s.args[i+1]
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "appendonlydir", "*.incr.aof"))
	if len(files) == 0 {
		s.tb.Fatalf("no incremental AOF under %s", dir)
	}
	sort.Strings(files)
	return files[len(files)-1]
}
