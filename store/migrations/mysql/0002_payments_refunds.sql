-- Third-party payments: one row per trade. status only moves forward:
-- unpaid -> awaiting_settlement -> paid | failed (paid and failed are final).
CREATE TABLE payment (
  trade_no     VARCHAR(64) NOT NULL PRIMARY KEY,
  packet_id    BIGINT NOT NULL,
  channel      VARCHAR(16) NOT NULL,
  amount       DECIMAL(12,2) NOT NULL,
  status       VARCHAR(24) NOT NULL,
  provider_txn VARCHAR(64) NOT NULL DEFAULT '',
  created_at   DATETIME(3) NOT NULL,
  updated_at   DATETIME(3) NOT NULL,
  KEY ix_payment_packet (packet_id),
  KEY ix_payment_status (status, updated_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- What the close script took from Redis when the packet expired: the amount to refund
-- once the packet is paid. NULL until the packet is closed.
ALTER TABLE packet ADD COLUMN closed_remainder DECIMAL(12,2) NULL;

-- Reconciliation looks for grabbed shares not yet credited.
CREATE INDEX ix_share_uncredited ON packet_share (credited, packet_id);
