-- The Redis dataset epoch (the server's run id) each shard's state in MySQL
-- was last brought in line with. The writer applies a batch only while the
-- epoch it read the batch under is both this row's and Redis's current one;
-- verifying an object after a Redis restart adopts the new epoch here first,
-- so a batch read from a dataset Redis has since lost can no longer commit
-- behind the verification's back (see store/epoch.go).
CREATE TABLE redis_epoch (
  epoch_key  VARCHAR(191) NOT NULL PRIMARY KEY,
  epoch      VARCHAR(64) NOT NULL,
  updated_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
