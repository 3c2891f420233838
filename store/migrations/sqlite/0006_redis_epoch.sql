-- The Redis dataset epoch per shard; see the MySQL migration.
CREATE TABLE redis_epoch (
  epoch_key  TEXT NOT NULL PRIMARY KEY,
  epoch      TEXT NOT NULL,
  updated_at DATETIME NOT NULL
);
