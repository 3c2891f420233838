package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/go-sql-driver/mysql"
	"github.com/jmoiron/sqlx"
)

// SQL is the connection pool, for tools that run statements of their own:
// the bench harness's naive MySQL-lock baseline and its invariant audit read
// and write the tables directly, as a DBA would, not through the store.
func (db *DB) SQL() *sqlx.DB { return db.x }

// CreateScratchMySQL creates an empty database named prefix_<random> on the
// server of dsn, migrates it and opens it. drop closes it and drops the
// database. The bench uses it so its audit sees only what its run wrote.
func CreateScratchMySQL(ctx context.Context, dsn, prefix string) (db *DB, drop func(context.Context) error, err error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, nil, fmt.Errorf("store: bad MYSQL_DSN: %w", err)
	}
	var b [5]byte
	rand.Read(b[:])
	name := prefix + "_" + hex.EncodeToString(b[:])
	admin := cfg.Clone()
	admin.DBName = ""
	x, err := sqlx.Open("mysql", admin.FormatDSN())
	if err != nil {
		return nil, nil, err
	}
	defer x.Close()
	if _, err := x.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4"); err != nil {
		return nil, nil, fmt.Errorf("store: create database %s: %w", name, err)
	}
	dropDB := func(ctx context.Context) error {
		x, err := sqlx.Open("mysql", admin.FormatDSN())
		if err != nil {
			return err
		}
		defer x.Close()
		_, err = x.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name)
		return err
	}
	cfg.DBName = name
	if db, err = OpenMySQL(ctx, cfg.FormatDSN()); err != nil {
		dropDB(ctx)
		return nil, nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		dropDB(ctx)
		return nil, nil, err
	}
	return db, func(ctx context.Context) error { db.Close(); return dropDB(ctx) }, nil
}
