-- SQLite keeps money as INTEGER fen: its DECIMAL would be a float.
CREATE TABLE account (
  user_id    INTEGER NOT NULL PRIMARY KEY,
  balance    INTEGER NOT NULL DEFAULT 0,
  updated_at DATETIME NOT NULL
);

CREATE TABLE ledger (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  kind       TEXT NOT NULL,
  ref        TEXT NOT NULL,
  user_id    INTEGER NOT NULL,
  amount     INTEGER NOT NULL,
  created_at DATETIME NOT NULL,
  UNIQUE (kind, ref)
);
CREATE INDEX ix_ledger_user ON ledger (user_id);

CREATE TABLE group_member (
  group_id INTEGER NOT NULL,
  user_id  INTEGER NOT NULL,
  PRIMARY KEY (group_id, user_id)
);

CREATE TABLE packet (
  id              INTEGER PRIMARY KEY AUTOINCREMENT,
  kind            TEXT NOT NULL,
  sender_id       INTEGER NOT NULL,
  group_id        INTEGER NULL,
  to_user_id      INTEGER NULL,
  share_count     INTEGER NOT NULL,
  total           INTEGER NOT NULL,
  greeting        TEXT NOT NULL,
  status          TEXT NOT NULL,
  pay_status      TEXT NOT NULL,
  pay_method      TEXT NOT NULL DEFAULT '',
  created_at      DATETIME NOT NULL,
  paid_at         DATETIME NULL,
  expires_at      DATETIME NULL,
  finished_at     DATETIME NULL,
  refunded_amount INTEGER NOT NULL DEFAULT 0,
  best_seq        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX ix_packet_status_expiry ON packet (status, expires_at);

CREATE TABLE packet_share (
  packet_id  INTEGER NOT NULL,
  seq        INTEGER NOT NULL,
  amount     INTEGER NOT NULL,
  user_id    INTEGER NULL,
  grabbed_at DATETIME NULL,
  credited   INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (packet_id, seq),
  UNIQUE (packet_id, user_id)
);
