package storetest

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/store"
)

// MariaDB is a mariadbd process of the test's own, on a free loopback port,
// for faults the shared server must never see: read-only, a stop, a crash.
// The store reaches it as a user without global privileges (no SUPER, no
// READ ONLY ADMIN), as grabd runs in production: MariaDB lets root write
// through read_only, so a test as root would prove nothing.
type MariaDB struct {
	tb     testing.TB
	dir    string
	Addr   string // 127.0.0.1:port
	server string // the mariadbd binary
	args   []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Names of what StartMariaDB creates.
const (
	mariaDatabase = "grab"
	mariaUser     = "grab"
	mariaPassword = "grab-test"
)

// StartMariaDB initialises a data directory in the test's temporary
// directory, starts mariadbd on it, and creates the database "grab" and a
// user with every privilege on it and none beyond. It is killed when the
// test ends. It takes about a second. Skipped under -short; a missing
// mariadbd fails the test.
func StartMariaDB(tb testing.TB) *MariaDB {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: starts mariadbd (run without -short)")
	}
	// The driver logs every connection a stop or a crash breaks; those are expected.
	mysql.SetLogger(log.New(io.Discard, "", 0))
	install := lookBinary(tb, "mariadb-install-db", "mysql_install_db")
	server := lookBinary(tb, "mariadbd", "mysqld")
	dir, err := os.MkdirTemp("", "grab-mariadb-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	out, err := exec.Command(install, "--no-defaults", "--datadir="+data, "--auth-root-authentication-method=normal",
		"--skip-test-db", "--skip-name-resolve").CombinedOutput()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", install, err, out)
	}
	port := freePort(tb)
	m := &MariaDB{tb: tb, dir: dir, Addr: fmt.Sprintf("127.0.0.1:%d", port), server: server}
	m.args = []string{"--no-defaults", "--datadir=" + data, fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1",
		"--socket=" + filepath.Join(dir, "mysqld.sock"), "--pid-file=" + filepath.Join(dir, "mysqld.pid"),
		"--log-error=" + filepath.Join(dir, "error.log"), "--skip-name-resolve", "--skip-log-bin",
		"--innodb-buffer-pool-size=64M", "--innodb-flush-log-at-trx-commit=2", "--max-connections=500"}
	if os.Geteuid() == 0 {
		m.args = append(m.args, "--user=root") // mariadbd refuses to run as root unless told to
	}
	m.Start()
	tb.Cleanup(m.Kill)
	m.exec(context.Background(),
		"CREATE DATABASE "+mariaDatabase+" CHARACTER SET utf8mb4",
		fmt.Sprintf("CREATE USER '%s'@'%%' IDENTIFIED BY '%s'", mariaUser, mariaPassword),
		fmt.Sprintf("GRANT ALL PRIVILEGES ON %s.* TO '%s'@'%%'", mariaDatabase, mariaUser))
	return m
}

func lookBinary(tb testing.TB, names ...string) string {
	tb.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		for _, dir := range []string{"/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin", "/usr/bin"} {
			if p := filepath.Join(dir, name); fileExists(p) {
				return p
			}
		}
	}
	tb.Fatalf("%s is required for this test (the mariadb-server package)", names[0])
	return ""
}

func fileExists(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }

func freePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// DSN reaches the database as the unprivileged user.
func (m *MariaDB) DSN() string {
	c := mysql.NewConfig()
	c.User, c.Passwd, c.Net, c.Addr, c.DBName = mariaUser, mariaPassword, "tcp", m.Addr, mariaDatabase
	return c.FormatDSN()
}

func (m *MariaDB) rootDSN() string {
	c := mysql.NewConfig()
	c.User, c.Net, c.Addr = "root", "tcp", m.Addr
	c.Timeout = 2 * time.Second
	return c.FormatDSN()
}

// Open opens the store on the database as the unprivileged user and
// migrates it; it is closed when the test ends.
func (m *MariaDB) Open(tb testing.TB) *store.DB {
	tb.Helper()
	return openDSN(tb, m.DSN())
}

// SetReadOnly sets the server's global read_only, as a failover tool does
// to the old primary: the unprivileged user's writes are refused with 1290.
// It returns once the server answered.
func (m *MariaDB) SetReadOnly(on bool) {
	m.tb.Helper()
	v := "OFF"
	if on {
		v = "ON"
	}
	m.exec(context.Background(), "SET GLOBAL read_only = "+v)
}

// Exec runs statements as root on a connection of its own (no database
// selected), failing the test on the first error.
func (m *MariaDB) Exec(statements ...string) {
	m.tb.Helper()
	m.exec(context.Background(), statements...)
}

func (m *MariaDB) exec(ctx context.Context, statements ...string) {
	m.tb.Helper()
	x, err := sqlx.Open("mysql", m.rootDSN())
	if err != nil {
		m.tb.Fatal(err)
	}
	defer x.Close()
	for _, s := range statements {
		if _, err := x.ExecContext(ctx, s); err != nil {
			m.tb.Fatalf("mariadb %s: %s: %v", m.Addr, s, err)
		}
	}
}

// Start starts the server (again) and waits until it answers.
func (m *MariaDB) Start() {
	m.tb.Helper()
	m.mu.Lock()
	if m.cmd != nil {
		m.mu.Unlock()
		m.tb.Fatal("mariadbd is running already")
	}
	cmd := exec.Command(m.server, m.args...)
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		m.mu.Unlock()
		m.tb.Fatalf("mariadbd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m.cmd, m.done = cmd, done
	m.mu.Unlock()

	x, err := sqlx.Open("mysql", m.rootDSN())
	if err != nil {
		m.tb.Fatal(err)
	}
	defer x.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := x.PingContext(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-done:
			m.tb.Fatalf("mariadbd on %s exited at start: %v\n%s", m.Addr, err, m.errorLog())
		default:
		}
		if time.Now().After(deadline) {
			m.tb.Fatalf("mariadbd on %s did not answer: %v\n%s", m.Addr, err, m.errorLog())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Stop shuts the server down cleanly (SIGTERM) and waits for it to exit:
// open connections get a shutdown error, new ones are refused.
func (m *MariaDB) Stop() { m.tb.Helper(); m.signal(syscall.SIGTERM, 60*time.Second) }

// Kill stops the server at once (SIGKILL), as a crash would; InnoDB
// recovers at the next Start.
func (m *MariaDB) Kill() { m.signal(syscall.SIGKILL, 30*time.Second) }

func (m *MariaDB) signal(sig syscall.Signal, wait time.Duration) {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.cmd, m.done = nil, nil
	m.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(wait):
		cmd.Process.Kill()
		<-done
		m.tb.Errorf("mariadbd on %s did not stop on %v; killed", m.Addr, sig)
	}
}

func (m *MariaDB) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(m.dir, "error.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}
