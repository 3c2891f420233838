CREATE TABLE payment (
  trade_no     TEXT NOT NULL PRIMARY KEY,
  packet_id    INTEGER NOT NULL,
  channel      TEXT NOT NULL,
  amount       INTEGER NOT NULL,
  status       TEXT NOT NULL,
  provider_txn TEXT NOT NULL DEFAULT '',
  created_at   DATETIME NOT NULL,
  updated_at   DATETIME NOT NULL
);
CREATE INDEX ix_payment_packet ON payment (packet_id);
CREATE INDEX ix_payment_status ON payment (status, updated_at);

ALTER TABLE packet ADD COLUMN closed_remainder INTEGER NULL;

CREATE INDEX ix_share_uncredited ON packet_share (credited, packet_id);
