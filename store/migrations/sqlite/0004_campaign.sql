-- Campaign red packets (seed 000); see the MySQL migration for what each table means.
CREATE TABLE campaign (
  id            INTEGER PRIMARY KEY AUTOINCREMENT,
  ref           TEXT NULL,
  name          TEXT NOT NULL,
  budget        INTEGER NOT NULL,
  used_amount   INTEGER NOT NULL DEFAULT 0,
  award_count   INTEGER NOT NULL,
  awarded_count INTEGER NOT NULL DEFAULT 0,
  starts_at     DATETIME NOT NULL,
  ends_at       DATETIME NOT NULL,
  status        TEXT NOT NULL,
  created_at    DATETIME NOT NULL,
  UNIQUE (ref)
);

CREATE TABLE campaign_rule (
  campaign_id    INTEGER NOT NULL PRIMARY KEY,
  award_min      INTEGER NOT NULL,
  award_max      INTEGER NOT NULL,
  per_user_limit INTEGER NOT NULL,
  acc_amount     INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE campaign_share (
  campaign_id INTEGER NOT NULL,
  seq         INTEGER NOT NULL,
  amount      INTEGER NOT NULL,
  PRIMARY KEY (campaign_id, seq)
);

CREATE TABLE campaign_award (
  campaign_id     INTEGER NOT NULL,
  seq             INTEGER NOT NULL,
  user_id         INTEGER NOT NULL,
  amount          INTEGER NOT NULL,
  status          TEXT NOT NULL,
  out_trade_no    TEXT NOT NULL,
  attempts        INTEGER NOT NULL DEFAULT 0,
  transfer_id     TEXT NOT NULL DEFAULT '',
  last_error      TEXT NOT NULL DEFAULT '',
  awarded_at      DATETIME NOT NULL,
  updated_at      DATETIME NOT NULL,
  transferring_at DATETIME NULL,
  transferred_at  DATETIME NULL,
  counted         INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (campaign_id, seq),
  UNIQUE (out_trade_no)
);
CREATE INDEX ix_award_user ON campaign_award (user_id, campaign_id);
CREATE INDEX ix_award_transferring ON campaign_award (status, transferring_at);
CREATE INDEX ix_award_received ON campaign_award (status, awarded_at);
