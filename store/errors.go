package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/go-sql-driver/mysql"
	"modernc.org/sqlite"
)

// Fault says whose fault an error of the store is, which decides what a
// caller does with it. The writer applies a batch of events in one
// transaction: on FaultStore it keeps the batch and retries it (every other
// batch would fail alike), on FaultEvent it splits the batch to find the
// event at fault and parks only that one, and on FaultUnknown it retries,
// with an error log, as on FaultStore (see Classify for why).
type Fault int

const (
	// FaultUnknown is an error the table below does not know.
	FaultUnknown Fault = iota
	// FaultStore is an error the store would give every statement alike
	// for now: it is read-only, down, unreachable, overloaded, out of
	// space, locked, or mid-migration. The same statement can succeed
	// later, unchanged.
	FaultStore
	// FaultEvent is an error about the values of the statement itself
	// (a duplicate key, a value out of range or too long, a missing
	// parent row, a failed check): the same statement fails again however
	// often it is retried, while other statements succeed.
	FaultEvent
)

func (f Fault) String() string {
	switch f {
	case FaultStore:
		return "store"
	case FaultEvent:
		return "event"
	}
	return "unknown"
}

// Transient reports an error that says the store is unavailable for now
// (FaultStore): read-only during a failover, down or unreachable, out of
// connections, out of space, a lock wait or deadlock lost, a table missing
// mid-migration. Retrying the same call later can succeed, and every other
// call would fail alike meanwhile. The HTTP layer answers it 503 BUSY with
// Retry-After, as it does when the writer lags; the writer keeps the batch
// pending and retries it.
//
// An error Transient does not know is not transient here (a bug is a 500),
// though the writer retries it too: see Classify.
func Transient(err error) bool { return Classify(err) == FaultStore }

// Classify tells whose fault err is, from one table (storeWide and
// eventFaults below, SQLite codes for the embedded store, then the
// driver's and the network's own errors). nil is FaultUnknown.
//
// The default for an error it does not know is FaultUnknown, which the
// writer retries forever (with an error log now and then naming the batch)
// rather than park: parking is for an event that is itself wrong, and an
// error nobody has classified is more likely the store's or the program's
// (a new server error, a proxy's own, a bug that fails every batch alike)
// than the event's. Parking on such an error would drop every answered
// event of every batch into the dead letters; retrying loses nothing, and a
// truly poisonous event then shows as a growing lag, grabs turning BUSY and
// an error log naming its batch, for a person to look at.
func Classify(err error) Fault {
	if err == nil {
		return FaultUnknown
	}
	// The store's own answers about an event's content.
	for _, e := range []error{ErrDuplicate, ErrConflict, ErrNoFunds, ErrWrongState, ErrNotFound} {
		if errors.Is(err, e) {
			return FaultEvent
		}
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		if f, ok := mysqlFaults[me.Number]; ok {
			return f
		}
		// A number the table does not name: the SQL standard's class of its
		// SQLSTATE, where the class says enough.
		switch string(me.SQLState[:2]) {
		case "08", "40": // connection exception; transaction rollback (serialization failure)
			return FaultStore
		case "22", "23": // data exception; integrity constraint violation
			return FaultEvent
		}
		return FaultUnknown
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return sqliteFault(se.Code())
	}
	switch {
	case errors.Is(err, mysql.ErrPktTooLarge):
		// The statement is larger than max_allowed_packet: a smaller batch
		// makes a smaller statement, and an event too large on its own can
		// never be applied.
		return FaultEvent
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, mysql.ErrInvalidConn), errors.Is(err, mysql.ErrMalformPkt),
		errors.Is(err, mysql.ErrPktSync), errors.Is(err, mysql.ErrPktSyncMul), errors.Is(err, mysql.ErrBusyBuffer),
		errors.Is(err, sql.ErrConnDone):
		return FaultStore // go-sql-driver and database/sql: the connection broke
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return FaultStore // the server closed the connection mid-reply
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return FaultStore
	case errors.Is(err, context.DeadlineExceeded):
		// A deadline of the call's own passed (the writer bounds each
		// attempt): the store did not answer in time. A caller whose whole
		// context ended checks that first; this says nothing of the event.
		return FaultStore
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return FaultStore // dial, read or write failed: refused, reset, timed out, no route
	}
	if strings.Contains(err.Error(), "database is locked") {
		return FaultStore // SQLite's BUSY as some wrappers spell it
	}
	return FaultUnknown
}

// mysqlFaults is the table of MySQL/MariaDB error numbers. Names are the
// servers' (perror <n>, or include/mysqld_error.h and errmsg.h).
var mysqlFaults = map[uint16]Fault{
	// --- Store-wide: the store refuses every statement alike for now. ---

	// Read-only, as during a failover or on a replica.
	1290: FaultStore, // ER_OPTION_PREVENTS_STATEMENT: running with --read-only (or super_read_only)
	1836: FaultStore, // ER_READ_ONLY_MODE (MariaDB)
	1792: FaultStore, // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION (a proxy or pooler left the session read-only)
	1223: FaultStore, // ER_CANT_UPDATE_WITH_READLOCK: a global read lock (FLUSH TABLES WITH READ LOCK, a backup)

	// Locks: lost a race or waited too long; the same statement succeeds later.
	1205: FaultStore, // ER_LOCK_WAIT_TIMEOUT: innodb_lock_wait_timeout (rows) or lock_wait_timeout (metadata, global read lock)
	1213: FaultStore, // ER_LOCK_DEADLOCK (also Galera's certification failure)
	1206: FaultStore, // ER_LOCK_TABLE_FULL: too many locks for the buffer pool
	1614: FaultStore, // ER_XA_RBDEADLOCK
	1613: FaultStore, // ER_XA_RBTIMEOUT
	1637: FaultStore, // ER_TOO_MANY_CONCURRENT_TRXS
	3572: FaultStore, // ER_LOCK_NOWAIT (MySQL 8: NOWAIT)
	1020: FaultStore, // ER_CHECKREAD: record changed since last read
	1412: FaultStore, // ER_TABLE_DEF_CHANGED: a table changed under a consistent snapshot
	1615: FaultStore, // ER_NEED_REPREPARE

	// Connections and limits.
	1040: FaultStore, // ER_CON_COUNT_ERROR: too many connections
	1203: FaultStore, // ER_TOO_MANY_USER_CONNECTIONS
	1226: FaultStore, // ER_USER_LIMIT_REACHED: max_questions, max_updates, ...
	1129: FaultStore, // ER_HOST_IS_BLOCKED: too many connection errors
	1043: FaultStore, // ER_HANDSHAKE_ERROR
	1045: FaultStore, // ER_ACCESS_DENIED_ERROR: a password rotated under us; every statement fails
	1044: FaultStore, // ER_DBACCESS_DENIED_ERROR
	1142: FaultStore, // ER_TABLEACCESS_DENIED_ERROR: a grant revoked; every statement on the table fails
	1152: FaultStore, // ER_ABORTING_CONNECTION
	1184: FaultStore, // ER_NEW_ABORTING_CONNECTION
	1158: FaultStore, // ER_NET_READ_ERROR
	1159: FaultStore, // ER_NET_READ_INTERRUPTED
	1160: FaultStore, // ER_NET_ERROR_ON_WRITE
	1161: FaultStore, // ER_NET_WRITE_INTERRUPTED
	1927: FaultStore, // ER_CONNECTION_KILLED (MariaDB: KILL, or a shutdown)
	4031: FaultStore, // MySQL 8 ER_CLIENT_INTERACTION_TIMEOUT: disconnected for inactivity (MariaDB's 4031 is a trigger DDL error the store never runs)
	2002: FaultStore, // CR_CONNECTION_ERROR (client-side numbers, from proxies that pass them on)
	2003: FaultStore, // CR_CONN_HOST_ERROR
	2006: FaultStore, // CR_SERVER_GONE_ERROR
	2013: FaultStore, // CR_SERVER_LOST
	2055: FaultStore, // CR_SERVER_LOST_EXTENDED
	1047: FaultStore, // ER_UNKNOWN_COM_ERROR: Galera's "WSREP has not yet prepared node for application use"
	9001: FaultStore, // ProxySQL: max connect timeout reached while reaching the hostgroup

	// Shutdown, kills and timeouts of the statement, not of its values.
	1053: FaultStore, // ER_SERVER_SHUTDOWN
	1077: FaultStore, // ER_NORMAL_SHUTDOWN
	1079: FaultStore, // ER_SHUTDOWN_COMPLETE
	1317: FaultStore, // ER_QUERY_INTERRUPTED: KILL QUERY, or a shutdown
	1969: FaultStore, // ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
	3024: FaultStore, // ER_QUERY_TIMEOUT (MySQL max_execution_time; unused in MariaDB)
	1180: FaultStore, // ER_ERROR_DURING_COMMIT
	1181: FaultStore, // ER_ERROR_DURING_ROLLBACK
	3101: FaultStore, // ER_TRANSACTION_ROLLBACK_DURING_COMMIT (MySQL group replication)
	// ER_UNKNOWN_ERROR: MySQL itself hardly uses it; proxies and compatible
	// servers (Vitess, TiDB) use it for their own trouble (no healthy
	// backend, a region unavailable). Store-wide: it never names a value.
	1105: FaultStore,

	// Space and resources.
	1021: FaultStore, // ER_DISK_FULL
	1114: FaultStore, // ER_RECORD_FILE_FULL: the table is full
	1026: FaultStore, // ER_ERROR_ON_WRITE
	1030: FaultStore, // ER_GET_ERRNO: the storage engine failed (often out of space)
	1037: FaultStore, // ER_OUTOFMEMORY
	1038: FaultStore, // ER_OUT_OF_SORTMEMORY
	1041: FaultStore, // ER_OUT_OF_RESOURCES
	1135: FaultStore, // ER_CANT_CREATE_THREAD
	1878: FaultStore, // ER_TEMP_FILE_WRITE_FAILURE

	// Schema mid-migration: every statement on the table fails alike until
	// the migration (or the rollback of a deploy) is done.
	1146: FaultStore, // ER_NO_SUCH_TABLE
	1054: FaultStore, // ER_BAD_FIELD_ERROR: unknown column

	// --- Per-event: the statement's own values; bisect and park the culprit. ---
	1062: FaultEvent, // ER_DUP_ENTRY (the store turns the ones it expects into answers; one that escapes is the event's)
	1586: FaultEvent, // ER_DUP_ENTRY_WITH_KEY_NAME
	1022: FaultEvent, // ER_DUP_KEY
	1264: FaultEvent, // ER_WARN_DATA_OUT_OF_RANGE
	1690: FaultEvent, // ER_DATA_OUT_OF_RANGE: arithmetic overflow (a DECIMAL or BIGINT past its range)
	1265: FaultEvent, // WARN_DATA_TRUNCATED (strict mode makes it an error)
	1366: FaultEvent, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: incorrect value for a column
	1292: FaultEvent, // ER_TRUNCATED_WRONG_VALUE: incorrect datetime or number
	1367: FaultEvent, // ER_ILLEGAL_VALUE_FOR_TYPE
	1411: FaultEvent, // ER_WRONG_VALUE_FOR_TYPE
	1300: FaultEvent, // ER_INVALID_CHARACTER_STRING
	1406: FaultEvent, // ER_DATA_TOO_LONG
	1048: FaultEvent, // ER_BAD_NULL_ERROR: column cannot be null
	1263: FaultEvent, // ER_WARN_NULL_TO_NOTNULL
	1365: FaultEvent, // ER_DIVISION_BY_ZERO (strict mode)
	1452: FaultEvent, // ER_NO_REFERENCED_ROW_2: foreign key, parent missing
	1451: FaultEvent, // ER_ROW_IS_REFERENCED_2: foreign key, children present
	1216: FaultEvent, // ER_NO_REFERENCED_ROW
	1217: FaultEvent, // ER_ROW_IS_REFERENCED
	3819: FaultEvent, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
	4025: FaultEvent, // ER_CONSTRAINT_FAILED (MariaDB's check constraint)
	1153: FaultEvent, // ER_NET_PACKET_TOO_LARGE: see mysql.ErrPktTooLarge in Classify
}

// SQLite primary result codes (sqlite3.h); an extended code's low byte is its primary.
const (
	sqliteFull       = 13
	sqliteBusy       = 5
	sqliteLocked     = 6
	sqliteNoMem      = 7
	sqliteReadOnly   = 8
	sqliteInterrupt  = 9
	sqliteIOErr      = 10
	sqliteCantOpen   = 14
	sqliteProtocol   = 15
	sqliteTooBig     = 18
	sqliteConstraint = 19
	sqliteMismatch   = 20
	sqliteRange      = 25
)

// sqliteFault is the embedded store's half of the table.
func sqliteFault(code int) Fault {
	switch code & 0xff {
	case sqliteBusy, sqliteLocked, sqliteNoMem, sqliteReadOnly, sqliteInterrupt, sqliteIOErr, sqliteFull, sqliteCantOpen, sqliteProtocol:
		return FaultStore // another writer holds the file, or the disk or file system refuses
	case sqliteConstraint, sqliteMismatch, sqliteTooBig, sqliteRange:
		return FaultEvent // UNIQUE, CHECK, NOT NULL, FOREIGN KEY; a value of the wrong type or size
	}
	return FaultUnknown
}
