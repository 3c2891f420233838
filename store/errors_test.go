package store_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/store"
	"github.com/grab-engine/grab/store/storetest"
)

// Every MySQL/MariaDB error number the writer may meet: retried (the store
// refuses every event alike) or parked after bisecting (the event's own
// values). Must-show 5 of issue 12.
func TestClassifyMySQLNumbers(t *testing.T) {
	retry, park, unknown := store.FaultStore, store.FaultEvent, store.FaultUnknown
	for _, tc := range []struct {
		number uint16
		state  string
		want   store.Fault
		why    string
	}{
		{1290, "HY000", retry, "read-only (--read-only, super_read_only)"},
		{1836, "HY000", retry, "read-only mode"},
		{1792, "25006", retry, "read-only transaction"},
		{1223, "HY000", retry, "global read lock held"},
		{1205, "HY000", retry, "lock wait timeout"},
		{1213, "40001", retry, "deadlock"},
		{1206, "HY000", retry, "lock table full"},
		{1637, "HY000", retry, "too many concurrent transactions"},
		{1040, "08004", retry, "too many connections"},
		{1203, "42000", retry, "too many connections of the user"},
		{1226, "42000", retry, "user resource limit"},
		{1045, "28000", retry, "access denied (password rotated)"},
		{1142, "42000", retry, "command denied (grant revoked)"},
		{1021, "HY000", retry, "disk full"},
		{1114, "HY000", retry, "table full"},
		{1030, "HY000", retry, "storage engine error"},
		{1146, "42S02", retry, "table missing mid-migration"},
		{1054, "42S22", retry, "column missing mid-migration"},
		{1053, "08S01", retry, "server shutdown in progress"},
		{1077, "HY000", retry, "normal shutdown"},
		{1079, "HY000", retry, "shutdown complete"},
		{2006, "HY000", retry, "server has gone away"},
		{2013, "HY000", retry, "lost connection during query"},
		{1152, "08S01", retry, "aborted connection"},
		{1158, "08S01", retry, "net read error"},
		{1317, "70100", retry, "query interrupted"},
		{3024, "HY000", retry, "max_execution_time (MySQL)"},
		{1969, "70100", retry, "max_statement_time (MariaDB)"},
		{1105, "HY000", retry, "unknown error (proxies)"},
		{1180, "HY000", retry, "error during commit"},
		{1181, "HY000", retry, "error during rollback"},
		{1927, "70100", retry, "connection killed"},
		{4031, "HY000", retry, "disconnected for inactivity (MySQL 8)"},
		{1047, "08S01", retry, "Galera node not ready"},

		{1062, "23000", park, "duplicate key escaped"},
		{1586, "23000", park, "duplicate key with name"},
		{1264, "22003", park, "out of range"},
		{1690, "22003", park, "arithmetic out of range"},
		{1265, "01000", park, "data truncated"},
		{1366, "22007", park, "incorrect value for column"},
		{1292, "22007", park, "incorrect datetime"},
		{1406, "22001", park, "data too long"},
		{1048, "23000", park, "column cannot be null"},
		{1452, "23000", park, "foreign key: no parent"},
		{1451, "23000", park, "foreign key: has children"},
		{3819, "HY000", park, "check constraint (MySQL)"},
		{4025, "23000", park, "check constraint (MariaDB)"},
		{1153, "08S01", park, "statement larger than max_allowed_packet"},

		// Numbers outside the table: the SQLSTATE class decides, else unknown.
		{9999, "08S01", retry, "unnamed connection exception"},
		{9998, "40001", retry, "unnamed serialization failure"},
		{9997, "22012", park, "unnamed data exception"},
		{9996, "23000", park, "unnamed integrity violation"},
		{1064, "42000", unknown, "syntax error: the program's, not the event's nor the store's"},
		{9995, "HY000", unknown, "anything else"},
	} {
		t.Run(fmt.Sprintf("%d", tc.number), func(t *testing.T) {
			me := &mysql.MySQLError{Number: tc.number, Message: tc.why}
			copy(me.SQLState[:], tc.state)
			for _, err := range []error{me, fmt.Errorf("store: apply: %w", me)} {
				if got := store.Classify(err); got != tc.want {
					t.Fatalf("Classify(%v) = %v, want %v (%s)", err, got, tc.want, tc.why)
				}
				if got := store.Transient(err); got != (tc.want == retry) {
					t.Fatalf("Transient(%v) = %v", err, got)
				}
			}
		})
	}
}

// What the driver, database/sql, the network and the store itself return.
func TestClassifyOtherErrors(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	timeout := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name string
		err  error
		want store.Fault
	}{
		{"driver.ErrBadConn", driver.ErrBadConn, store.FaultStore},
		{"mysql.ErrInvalidConn", mysql.ErrInvalidConn, store.FaultStore},
		{"mysql.ErrMalformPkt", mysql.ErrMalformPkt, store.FaultStore},
		{"sql.ErrConnDone", sql.ErrConnDone, store.FaultStore},
		{"io.EOF", io.EOF, store.FaultStore},
		{"io.ErrUnexpectedEOF", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), store.FaultStore},
		{"connection refused", refused, store.FaultStore},
		{"read timeout", timeout, store.FaultStore},
		{"reset", syscall.ECONNRESET, store.FaultStore},
		{"the attempt's own deadline", fmt.Errorf("apply: %w", context.DeadlineExceeded), store.FaultStore},
		{"statement too large", mysql.ErrPktTooLarge, store.FaultEvent},
		{"store.ErrConflict", fmt.Errorf("%w: over the budget", store.ErrConflict), store.FaultEvent},
		{"store.ErrNotFound", store.ErrNotFound, store.FaultEvent},
		{"store.ErrDuplicate", store.ErrDuplicate, store.FaultEvent},
		{"nil", nil, store.FaultUnknown},
		{"a plain error", errors.New("something else"), store.FaultUnknown},
		{"cancelled", context.Canceled, store.FaultUnknown},
	} {
		if got := store.Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// SQLite, as the embedded store meets it: BUSY while another connection
// writes is the store's; a constraint is the event's.
func TestClassifySQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "busy.db")
	open := func() *sqlx.DB {
		x, err := sqlx.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)&_pragma=journal_mode(WAL)&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		x.SetMaxOpenConns(1)
		t.Cleanup(func() { x.Close() })
		return x
	}
	a, b := open(), open()
	ctx := context.Background()
	if _, err := a.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL CHECK (v <> ''))"); err != nil {
		t.Fatal(err)
	}
	tx, err := a.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (1, 'x')"); err != nil {
		t.Fatal(err)
	}
	_, busy := b.ExecContext(ctx, "INSERT INTO t VALUES (2, 'y')")
	if busy == nil || store.Classify(busy) != store.FaultStore {
		t.Fatalf("a write while another holds the lock: %v, classified %v; want store-wide", busy, store.Classify(busy))
	}
	tx.Commit()
	for _, stmt := range []string{"INSERT INTO t VALUES (1, 'z')", "INSERT INTO t VALUES (3, NULL)", "INSERT INTO t VALUES (4, '')"} {
		_, err := b.ExecContext(ctx, stmt)
		if err == nil || store.Classify(err) != store.FaultEvent {
			t.Fatalf("%s: %v, classified %v; want the event's", stmt, err, store.Classify(err))
		}
	}
}

// The numbers the table names are the ones the server really gives: the
// event's own values on the shared server, read-only and a lock wait on a
// private one (as an unprivileged user, the only kind read_only stops).
func TestClassifyLiveMariaDB(t *testing.T) {
	ctx := context.Background()
	check := func(t *testing.T, what string, err error, want store.Fault) {
		t.Helper()
		if err == nil || store.Classify(err) != want {
			t.Fatalf("%s: %v, classified %v; want %v", what, err, store.Classify(err), want)
		}
	}
	t.Run("event", func(t *testing.T) {
		x := storetest.MySQL(t).SQL()
		if _, err := x.ExecContext(ctx, `CREATE TABLE cls (id INT PRIMARY KEY, n TINYINT NOT NULL, s VARCHAR(3) NOT NULL,
			p INT NULL, CHECK (n >= 0), FOREIGN KEY (p) REFERENCES cls (id))`); err != nil {
			t.Fatal(err)
		}
		if _, err := x.ExecContext(ctx, "INSERT INTO cls VALUES (1, 1, 'a', NULL)"); err != nil {
			t.Fatal(err)
		}
		for what, stmt := range map[string]string{
			"duplicate":   "INSERT INTO cls VALUES (1, 1, 'b', NULL)",
			"range":       "INSERT INTO cls VALUES (2, 1000, 'b', NULL)",
			"too long":    "INSERT INTO cls VALUES (3, 1, 'abcd', NULL)",
			"null":        "INSERT INTO cls VALUES (4, NULL, 'b', NULL)",
			"bad value":   "INSERT INTO cls VALUES (5, 'x', 'b', NULL)",
			"foreign key": "INSERT INTO cls VALUES (6, 1, 'b', 99)",
			"check":       "INSERT INTO cls VALUES (7, -1, 'b', NULL)",
		} {
			_, err := x.ExecContext(ctx, stmt)
			check(t, what, err, store.FaultEvent)
		}
	})
	t.Run("store", func(t *testing.T) {
		m := storetest.StartMariaDB(t)
		db := m.Open(t)
		x := db.SQL()
		if _, err := x.ExecContext(ctx, "CREATE TABLE cls (id INT PRIMARY KEY, n INT NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		if _, err := x.ExecContext(ctx, "INSERT INTO cls VALUES (1, 1)"); err != nil {
			t.Fatal(err)
		}

		// A row lock held past the session's innodb_lock_wait_timeout.
		tx, err := x.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE cls SET n = 2 WHERE id = 1"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = x.ExecContext(ctx, "UPDATE cls SET n = 3 WHERE id = 1")
		check(t, "lock wait", err, store.FaultStore)
		if waited := time.Since(start); waited > time.Duration(store.InnoDBLockWaitTimeout+3)*time.Second {
			t.Fatalf("the lock wait took %v; the session's innodb_lock_wait_timeout is %ds", waited, store.InnoDBLockWaitTimeout)
		}
		tx.Rollback()

		m.SetReadOnly(true)
		_, err = x.ExecContext(ctx, "UPDATE cls SET n = 4 WHERE id = 1")
		check(t, "read-only", err, store.FaultStore)
		var n int
		if err := x.GetContext(ctx, &n, "SELECT n FROM cls WHERE id = 1"); err != nil || n != 1 {
			t.Fatalf("a read-only server still reads: %d, %v", n, err)
		}
		m.SetReadOnly(false)

		m.Stop()
		_, err = x.ExecContext(ctx, "UPDATE cls SET n = 5 WHERE id = 1")
		check(t, "stopped", err, store.FaultStore)
		m.Start()
		if _, err := x.ExecContext(ctx, "UPDATE cls SET n = 6 WHERE id = 1"); err != nil {
			t.Fatalf("after a restart: %v", err)
		}
	})
}

// The session variables OpenMySQL sets on every connection.
func TestSessionLockTimeouts(t *testing.T) {
	db := storetest.MySQL(t)
	var v struct {
		InnoDB int `db:"innodb"`
		MDL    int `db:"mdl"`
	}
	if err := db.SQL().GetContext(context.Background(), &v,
		"SELECT @@SESSION.innodb_lock_wait_timeout AS innodb, @@SESSION.lock_wait_timeout AS mdl"); err != nil {
		t.Fatal(err)
	}
	if v.InnoDB != store.InnoDBLockWaitTimeout || v.MDL != store.LockWaitTimeout {
		t.Fatalf("session lock timeouts = %+v, want %d and %d", v, store.InnoDBLockWaitTimeout, store.LockWaitTimeout)
	}
}
