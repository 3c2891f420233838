// Package storetest gives tests a fresh, migrated store: a database of its
// own on the real MySQL/MariaDB, or an SQLite file.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"

	"github.com/grab-engine/grab/store"
)

// DefaultDSN is used when MYSQL_DSN is not set: the local test server.
const DefaultDSN = "root@tcp(127.0.0.1:3306)/test"

// DSN is the server integration tests use.
func DSN() string {
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		return dsn
	}
	return DefaultDSN
}

// MySQL creates a database of the test's own on the MySQL server of
// MYSQL_DSN, migrates it and drops it when the test ends. An unreachable
// server fails the test: integration tests are never silently skipped.
func MySQL(tb testing.TB) *store.DB {
	tb.Helper()
	return open(tb, createDatabase(tb))
}

// createDatabase makes an empty database, dropped when the test ends, and
// returns the DSN that reaches it.
func createDatabase(tb testing.TB) *mysql.Config {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test: needs MySQL (run without -short)")
	}
	cfg, err := mysql.ParseDSN(DSN())
	if err != nil {
		tb.Fatalf("MYSQL_DSN: %v", err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "grabtest_" + hex.EncodeToString(b[:])
	admin := cfg.Clone()
	admin.DBName = ""
	x, err := sqlx.Open("mysql", admin.FormatDSN())
	if err != nil {
		tb.Fatalf("mysql: %v", err)
	}
	defer x.Close()
	if _, err := x.ExecContext(context.Background(), "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
		tb.Fatalf("mysql at %s is required for integration tests: %v", cfg.Addr, err)
	}
	tb.Cleanup(func() {
		x, err := sqlx.Open("mysql", admin.FormatDSN())
		if err == nil {
			x.Exec("DROP DATABASE IF EXISTS " + name)
			x.Close()
		}
	})
	cfg.DBName = name
	return cfg
}

func open(tb testing.TB, cfg *mysql.Config) *store.DB {
	tb.Helper()
	return openDSN(tb, cfg.FormatDSN())
}

// openDSN opens and migrates the store of dsn; it is closed when the test ends.
func openDSN(tb testing.TB, dsn string) *store.DB {
	tb.Helper()
	ctx := context.Background()
	db, err := store.OpenMySQL(ctx, dsn)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return db
}

// SQLite opens a migrated SQLite store in the test's temporary directory.
func SQLite(tb testing.TB) *store.DB {
	tb.Helper()
	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, filepath.Join(tb.TempDir(), "grab.db"))
	if err != nil {
		tb.Fatalf("sqlite: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		tb.Fatalf("migrate: %v", err)
	}
	return db
}
