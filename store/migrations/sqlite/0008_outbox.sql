-- The transactional outbox; see the MySQL migration for what each column means.
CREATE TABLE outbox (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id     TEXT NOT NULL,
  kind         TEXT NOT NULL,
  aggregate    TEXT NOT NULL,
  payload      TEXT NOT NULL,
  at           DATETIME NOT NULL,
  created_at   DATETIME NOT NULL,
  published_at DATETIME NULL,
  UNIQUE (event_id)
);
CREATE INDEX ix_outbox_unpublished ON outbox (published_at, seq);
CREATE INDEX ix_outbox_aggregate ON outbox (published_at, aggregate, seq);
