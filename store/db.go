// Package store is the durable record: MySQL in production, an SQLite file in
// the embedded mode. It owns the schema, its migrations and every SQL statement.
//
// With SetOutbox(true) every change the rest of the company hears of also
// writes its event.Message to the outbox table, in the change's own
// transaction; RelayOutbox hands those rows to a publisher and marks them
// published, PurgeOutbox deletes them after a retention (docs/events.md).
package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
	"github.com/shopspring/decimal"
	"modernc.org/sqlite" // the embedded mode's driver
)

// Sentinel errors of the store.
var (
	ErrNotFound   = errors.New("store: not found")
	ErrDuplicate  = errors.New("store: duplicate key")
	ErrConflict   = errors.New("store: conflicting write")
	ErrNoFunds    = errors.New("store: insufficient balance")
	ErrWrongState = errors.New("store: row not in the expected state")
)

//go:embed migrations
var migrations embed.FS

type dialect int

const (
	dialectMySQL dialect = iota
	dialectSQLite
)

// DB is the store. Its methods are safe for concurrent use.
type DB struct {
	x       *sqlx.DB
	dialect dialect
	outbox  atomic.Bool // SetOutbox
}

// Session defaults OpenMySQL gives every connection, unless the DSN sets them.
const (
	// InnoDBLockWaitTimeout bounds a wait for a row lock, in seconds (the
	// server's default is 50). Every transaction of the store is short (a
	// writer batch commits in milliseconds), so a wait this long is a cycle
	// InnoDB's deadlock detector cannot see: one that runs through a
	// metadata lock, as when SET GLOBAL read_only=ON waits for a running
	// insert that waits for the writer's row lock, while the writer's next
	// statement waits for the global read lock the SET asked for. The
	// waiter gets 1205, its transaction is retried, and the cycle is gone.
	InnoDBLockWaitTimeout = 2
	// LockWaitTimeout bounds a wait for a metadata lock, in seconds: the
	// global read lock of SET GLOBAL read_only or FLUSH TABLES WITH READ
	// LOCK, a table's lock during DDL (MariaDB's default is a day, MySQL's a
	// year). It also bounds a migration's wait for the tables it alters, so a
	// DDL stuck behind a long transaction gives up rather than queue every
	// statement on its table behind it.
	LockWaitTimeout = 5
	// DialTimeout bounds connecting, so a server that drops packets (rather
	// than refusing) is retried in seconds, not after the OS gives up.
	DialTimeout = 5 * time.Second
)

// OpenMySQL connects to MySQL/MariaDB with a plain go-sql-driver DSN; it adds
// the parameters the store relies on (UTC times, client-side interpolation)
// and, unless the DSN sets them, bounded lock waits (InnoDBLockWaitTimeout,
// LockWaitTimeout) and a dial timeout. The driver sets the session
// variables on every connection it opens.
func OpenMySQL(ctx context.Context, dsn string) (*DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("store: bad MYSQL_DSN: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.InterpolateParams = true // one round trip per statement
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	if _, ok := cfg.Params["innodb_lock_wait_timeout"]; !ok {
		cfg.Params["innodb_lock_wait_timeout"] = strconv.Itoa(InnoDBLockWaitTimeout)
	}
	if _, ok := cfg.Params["lock_wait_timeout"]; !ok {
		cfg.Params["lock_wait_timeout"] = strconv.Itoa(LockWaitTimeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DialTimeout
	}
	x, err := sqlx.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, err
	}
	x.SetMaxOpenConns(64)
	x.SetMaxIdleConns(64)
	x.SetConnMaxLifetime(time.Hour)
	if err := x.PingContext(ctx); err != nil {
		x.Close()
		return nil, fmt.Errorf("store: mysql: %w", err)
	}
	return &DB{x: x, dialect: dialectMySQL}, nil
}

// OpenSQLite opens (creating if needed) the SQLite file of the embedded mode.
func OpenSQLite(ctx context.Context, path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	dsn := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	x, err := sqlx.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	// SQLite has one writer; a single connection serialises everything cleanly.
	x.SetMaxOpenConns(1)
	if err := x.PingContext(ctx); err != nil {
		x.Close()
		return nil, fmt.Errorf("store: sqlite: %w", err)
	}
	return &DB{x: x, dialect: dialectSQLite}, nil
}

// Close closes the connection pool.
func (db *DB) Close() error { return db.x.Close() }

// Ping checks that the database answers.
func (db *DB) Ping(ctx context.Context) error { return db.x.PingContext(ctx) }

// migrationFiles are the dialect's embedded migrations, in order.
func (db *DB) migrationFiles() ([]string, error) {
	dir := "migrations/mysql"
	if db.dialect == dialectSQLite {
		dir = "migrations/sqlite"
	}
	names, err := fs.Glob(migrations, dir+"/*.sql")
	sort.Strings(names)
	return names, err
}

// ErrNotMigrated: the database lacks migrations this build embeds; run
// Migrate first.
var ErrNotMigrated = errors.New("store: the database is not migrated; run store.DB.Migrate first")

// Migrated reports whether every embedded migration is applied: nil, or
// ErrNotMigrated saying how many are. Other errors are the database's.
func (db *DB) Migrated(ctx context.Context) error {
	names, err := db.migrationFiles()
	if err != nil {
		return err
	}
	var n int
	if err := db.x.GetContext(ctx, &n, "SELECT COUNT(*) FROM schema_migrations"); err != nil {
		if Transient(err) {
			return err
		}
		n = 0 // no such table: nothing applied
	}
	if n < len(names) {
		return fmt.Errorf("%w (%d of %d applied)", ErrNotMigrated, n, len(names))
	}
	return nil
}

// Migrate applies, in order, every embedded migration not yet recorded in
// schema_migrations. It is safe to run from several processes at once.
func (db *DB) Migrate(ctx context.Context) error {
	conn, err := db.x.Connx(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if db.dialect == dialectMySQL {
		var got sql.NullInt64
		if err := conn.GetContext(ctx, &got, "SELECT GET_LOCK('grab_migrate', 60)"); err != nil || got.Int64 != 1 {
			return fmt.Errorf("store: migration lock: %v", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK('grab_migrate')")
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INT NOT NULL PRIMARY KEY, name VARCHAR(255) NOT NULL, applied_at DATETIME NOT NULL)`); err != nil {
		return err
	}
	names, err := db.migrationFiles()
	if err != nil {
		return err
	}
	for _, name := range names {
		base := filepath.Base(name)
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("store: migration %s has no version prefix", base)
		}
		var n int
		if err := conn.GetContext(ctx, &n, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", version); err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		// MySQL commits DDL implicitly, so statements run one by one; each
		// migration is written to be re-runnable only as a whole file.
		for _, stmt := range splitStatements(string(body)) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("store: migration %s: %w", base, err)
			}
		}
		if _, err := conn.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
			version, base, time.Now().UTC()); err != nil {
			return err
		}
	}
	return nil
}

func splitStatements(body string) []string {
	var out []string
	var b strings.Builder
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		b.WriteString(line)
		b.WriteString("\n")
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			if s := strings.TrimSpace(b.String()); s != ";" {
				out = append(out, strings.TrimSuffix(s, ";"))
			}
			b.Reset()
		}
	}
	if s := strings.TrimSpace(b.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// money is the SQL argument for an amount in fen: a DECIMAL string for MySQL,
// the integer itself for SQLite.
func (db *DB) money(fen int64) any {
	if db.dialect == dialectSQLite {
		return fen
	}
	return decimal.New(fen, -2).StringFixed(2)
}

// insertIgnore is the dialect's INSERT that skips rows violating a unique key.
func (db *DB) insertIgnore() string {
	if db.dialect == dialectSQLite {
		return "INSERT OR IGNORE"
	}
	return "INSERT IGNORE"
}

// Fen scans a money column of either dialect into fen.
type Fen int64

// Scan implements sql.Scanner.
func (f *Fen) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*f = 0
	case int64:
		*f = Fen(x)
	case []byte:
		return f.parse(string(x))
	case string:
		return f.parse(x)
	default:
		return fmt.Errorf("store: cannot scan %T as money", v)
	}
	return nil
}

func (f *Fen) parse(s string) error {
	d, err := decimal.NewFromString(s)
	if err != nil {
		return fmt.Errorf("store: money %q: %w", s, err)
	}
	*f = Fen(d.Shift(2).IntPart())
	return nil
}

func isDuplicate(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// isRetryable reports a transaction that lost a lock race (a deadlock, a
// lock wait timeout; SQLite's BUSY or LOCKED) and may simply be run again.
func isRetryable(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1213 || me.Number == 1205 // deadlock, lock wait timeout
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()&0xff == sqliteBusy || se.Code()&0xff == sqliteLocked
	}
	return err != nil && strings.Contains(err.Error(), "SQLITE_BUSY")
}

// lockRaceBudget is how long inTx goes on re-running a transaction that lost
// lock races. A lock wait timeout alone takes InnoDBLockWaitTimeout, so a
// request waits at most about this plus one wait; past it the error goes to
// the caller, which classifies it as store-wide (Transient): the writer
// retries the batch with its backoff, and a request answers BUSY.
const lockRaceBudget = 3 * time.Second

// inTx runs fn in a transaction, retrying it when it lost a lock race.
//
// Lock order. Store transactions are short (no remote call inside one) and
// take their row locks in a fixed order. The writer's ApplyEvents, one
// applier after another (store/events.go): the batch's packet_share rows
// (claimShares, in stream order), then packet rows (finishPacket, then
// closePacket), then campaign_award rows (applyAwards, in stream order), then
// campaign and campaign_rule rows in campaign id order, then stock_change,
// stock_sku and stock_scope rows (applyStock); once every applier ran,
// account rows in user id order with their ledger rows (creditMany), then
// the packets it refunds, then stock_record rows. The campaign receive path
// (BeginPayout) locks one award row and nothing else, so it cannot close a
// cycle with the writer. Settle and ReconcilePacket lock a packet row before
// its shares, the reverse of the writer's shares-then-packet: InnoDB sees
// such a cycle at once (1213) and the loser is re-run here. A cycle that runs through a
// metadata lock (SET GLOBAL read_only waiting for a running statement, a
// DDL) is invisible to the deadlock detector: the session timeouts set by
// OpenMySQL end it, and the loser gets 1205.
func (db *DB) inTx(ctx context.Context, fn func(tx *sqlx.Tx) error) error {
	return db.inTxWith(ctx, nil, fn)
}

// inTxWith is inTx for a transaction begun with opts (nil: the defaults).
func (db *DB) inTxWith(ctx context.Context, opts *sql.TxOptions, fn func(tx *sqlx.Tx) error) error {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := db.tryTx(ctx, opts, fn)
		if err == nil || !isRetryable(err) || attempt >= 5 || time.Since(start) > lockRaceBudget {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}

func (db *DB) tryTx(ctx context.Context, opts *sql.TxOptions, fn func(tx *sqlx.Tx) error) error {
	tx, err := db.x.BeginTxx(ctx, opts)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}
