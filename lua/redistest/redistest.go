// Package redistest gives tests a Redis: the real server of REDIS_ADDR under
// a namespace of the test's own, miniredis, or a redis-server process the
// test starts, stops and restarts itself.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/grab-engine/grab/lua"
)

// DefaultAddr is used when REDIS_ADDR is not set: the local test server.
const DefaultAddr = "127.0.0.1:6379"

// Addr is the server integration tests use.
func Addr() string {
	if a := os.Getenv("REDIS_ADDR"); a != "" {
		return strings.Split(a, ",")[0]
	}
	return DefaultAddr
}

// Namespace returns a key namespace unique to this test.
func Namespace() string {
	var b [5]byte
	rand.Read(b[:])
	return "grabt" + hex.EncodeToString(b[:])
}

// Real connects to the real Redis of REDIS_ADDR and returns keys under a
// namespace of the test's own, deleted when the test ends. An unreachable
// server fails the test: integration tests are never silently skipped.
func Real(tb testing.TB, shards int) (*redis.Client, lua.Keys) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: needs Redis (run without -short)")
	}
	c := redis.NewClient(&redis.Options{Addr: Addr(), PoolSize: 256})
	if err := c.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("redis at %s is required for integration tests: %v", Addr(), err)
	}
	keys := lua.NewKeys(Namespace(), shards)
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, keys.NS+":*", 1000).Iterator()
		for iter.Next(ctx) {
			c.Del(ctx, iter.Val())
		}
		c.Close()
	})
	return c, keys
}

// Mini starts a miniredis for unit tests.
func Mini(tb testing.TB) (*miniredis.Miniredis, *redis.Client) {
	tb.Helper()
	m := miniredis.RunT(tb)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	tb.Cleanup(func() { c.Close() })
	return m, c
}

// Server is a redis-server process of the test's own on a loopback port.
type Server struct {
	tb   testing.TB
	Addr string
	args []string
	cmd  *exec.Cmd
}

// StartServer starts redis-server with no persistence on a free loopback
// port; extra arguments are passed through. It is stopped when the test ends.
func StartServer(tb testing.TB, extra ...string) *Server {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: starts redis-server (run without -short)")
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		tb.Fatalf("redis-server is required for this test: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return startOnPort(tb, port, extra...)
}

func startOnPort(tb testing.TB, port int, extra ...string) *Server {
	tb.Helper()
	s := &Server{tb: tb, Addr: fmt.Sprintf("127.0.0.1:%d", port)}
	s.args = append([]string{"--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", tb.TempDir()}, extra...)
	s.Start()
	tb.Cleanup(s.Kill)
	return s
}

// Start starts the process (again) and waits until it answers.
func (s *Server) Start() {
	s.tb.Helper()
	s.cmd = exec.Command("redis-server", s.args...)
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	for i := 0; i < 200; i++ {
		if c.Ping(context.Background()).Err() == nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	s.tb.Fatalf("redis-server on %s did not come up", s.Addr)
}

// StartLoading starts the process (again) and returns as soon as it accepts
// connections, without waiting for it to load its dataset: until it has, it
// answers commands with LOADING. A server started with SlowLoad and given a
// dataset by Fill and Save loads for long enough to be seen loading.
func (s *Server) StartLoading() {
	s.tb.Helper()
	s.cmd = exec.Command("redis-server", s.args...)
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	for i := 0; i < 200; i++ {
		if err := c.Ping(context.Background()).Err(); err == nil || redis.IsLoadingError(err) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	s.tb.Fatalf("redis-server on %s did not come up", s.Addr)
}

// Loading reports whether the server is loading its dataset (INFO
// persistence, which a loading server answers).
func (s *Server) Loading() bool {
	s.tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(context.Background(), "persistence").Result()
	if err != nil {
		s.tb.Fatalf("redis-server on %s: INFO: %v", s.Addr, err)
	}
	return strings.Contains(info, "\nloading:1") || strings.HasPrefix(info, "loading:1")
}

// WaitLoaded waits until the server has loaded its dataset and answers PING,
// failing the test after timeout.
func (s *Server) WaitLoaded(timeout time.Duration) {
	s.tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(timeout)
	for {
		err := c.Ping(context.Background()).Err()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redis-server on %s still not serving after %v: %v", s.Addr, timeout, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// SlowLoad is StartServer's extra arguments for a server that takes perKey
// to load each key of its dataset at start (Redis's own test knob,
// key-load-delay, in microseconds) and answers clients (LOADING) every KiB of
// the load rather than every 2 MiB. With Fill(n) the load takes about
// n × perKey, and costs no CPU: the server sleeps between keys.
func SlowLoad(perKey time.Duration) []string {
	return []string{"--key-load-delay", fmt.Sprint(max(1, perKey.Microseconds())),
		"--loading-process-events-interval-bytes", "1024"}
}

// Fill adds n small filler keys (filler:<i>) to the dataset.
func (s *Server) Fill(n int) {
	s.tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	ctx := context.Background()
	const batch = 1000
	for i := 0; i < n; i += batch {
		kv := make([]any, 0, 2*batch)
		for j := i; j < min(n, i+batch); j++ {
			kv = append(kv, fmt.Sprintf("filler:%d", j), "x")
		}
		if err := c.MSet(ctx, kv...).Err(); err != nil {
			s.tb.Fatalf("redis-server on %s: fill: %v", s.Addr, err)
		}
	}
}

// Save writes the dataset to the server's RDB file (SAVE), which the next
// Start or StartLoading loads.
func (s *Server) Save() {
	s.tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	defer c.Close()
	if err := c.Save(context.Background()).Err(); err != nil {
		s.tb.Fatalf("redis-server on %s: SAVE: %v", s.Addr, err)
	}
}

// Stop stops the process (SIGKILL) and leaves it stopped: connections to
// its port are refused until Start or StartLoading. Nothing is saved on the
// way down; what Save wrote last is what the next start loads.
func (s *Server) Stop() {
	s.tb.Helper()
	s.Kill()
}

// Kill stops the process at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Restart kills the process and starts an empty one on the same port (or,
// after Save, one that loads what Save wrote).
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	s.Start()
}

// StartCluster starts a Redis Cluster of n masters (no replicas) on loopback
// ports and returns their addresses once every slot is served.
func StartCluster(tb testing.TB, n int) []string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: starts a Redis Cluster (run without -short)")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		tb.Fatalf("redis-cli is required to form a cluster: %v", err)
	}
	var addrs []string
	for _, port := range clusterPorts(tb, n) {
		s := startOnPort(tb, port, "--cluster-enabled", "yes", "--cluster-config-file", fmt.Sprintf("nodes-%d.conf", port),
			"--cluster-node-timeout", "5000")
		addrs = append(addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		ok := false
		for i := 0; i < 400 && !ok; i++ {
			info, _ := c.ClusterInfo(context.Background()).Result()
			ok = strings.Contains(info, "cluster_state:ok")
			if !ok {
				time.Sleep(25 * time.Millisecond)
			}
		}
		c.Close()
		if !ok {
			tb.Fatalf("cluster node %s never reported cluster_state:ok", a)
		}
	}
	return addrs
}

// clusterPorts finds n ports whose cluster bus ports (port + 10000) are free too.
func clusterPorts(tb testing.TB, n int) []int {
	tb.Helper()
	free := func(port int) bool {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		l.Close()
		return true
	}
	var ports []int
	for port := 21000 + int(time.Now().UnixNano()%20000); len(ports) < n && port < 55535; port++ {
		if free(port) && free(port+10000) {
			ports = append(ports, port)
		}
	}
	if len(ports) < n {
		tb.Fatal("no free ports for a cluster")
	}
	return ports
}
