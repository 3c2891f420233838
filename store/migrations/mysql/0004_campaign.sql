-- Campaign red packets (seed 000): a platform budget pre-split into awards, grabbed like packet
-- shares and paid out through an external transfer service.
--
-- used_amount is the seed's activity detail, campaign_rule.acc_amount its random-rule detail
-- (accActruleAmt). Both are kept by the writer alone: each award's amount is added exactly once, by
-- the writer transaction that marks its row counted, and never past budget. The receive path may
-- create an award's row first (uncounted) but never takes the campaign's row lock, so a burst of
-- receives does not queue on one hot row, nor hold up the writer.
CREATE TABLE campaign (
  id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  ref           VARCHAR(64) NULL,
  name          VARCHAR(64) NOT NULL,
  budget        DECIMAL(12,2) NOT NULL,
  used_amount   DECIMAL(12,2) NOT NULL DEFAULT 0,
  award_count   INT NOT NULL,
  awarded_count INT NOT NULL DEFAULT 0,
  starts_at     DATETIME(3) NOT NULL,
  ends_at       DATETIME(3) NOT NULL,
  status        VARCHAR(16) NOT NULL,
  created_at    DATETIME(3) NOT NULL,
  UNIQUE KEY uq_campaign_ref (ref)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE campaign_rule (
  campaign_id    BIGINT NOT NULL PRIMARY KEY,
  award_min      DECIMAL(12,2) NOT NULL,
  award_max      DECIMAL(12,2) NOT NULL,
  per_user_limit INT NOT NULL,
  acc_amount     DECIMAL(12,2) NOT NULL DEFAULT 0
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The pre-split, one row per award in hand-out order: what Redis is rebuilt from, and what every
-- award event is checked against.
CREATE TABLE campaign_share (
  campaign_id BIGINT NOT NULL,
  seq         INT NOT NULL,
  amount      DECIMAL(12,2) NOT NULL,
  PRIMARY KEY (campaign_id, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per granted award and its payout: received -> transferring (the seed's 7, committed
-- before the remote call) -> transferred (4); needs_attention after too many attempts or a
-- conflict at the service. out_trade_no is the number the transfer service is idempotent by.
CREATE TABLE campaign_award (
  campaign_id     BIGINT NOT NULL,
  seq             INT NOT NULL,
  user_id         BIGINT NOT NULL,
  amount          DECIMAL(12,2) NOT NULL,
  status          VARCHAR(16) NOT NULL,
  out_trade_no    VARCHAR(64) NOT NULL,
  attempts        INT NOT NULL DEFAULT 0,
  transfer_id     VARCHAR(64) NOT NULL DEFAULT '',
  last_error      VARCHAR(255) NOT NULL DEFAULT '',
  awarded_at      DATETIME(3) NOT NULL,
  updated_at      DATETIME(3) NOT NULL,
  transferring_at DATETIME(3) NULL,
  transferred_at  DATETIME(3) NULL,
  counted         TINYINT NOT NULL DEFAULT 0,
  PRIMARY KEY (campaign_id, seq),
  UNIQUE KEY uq_award_out_trade_no (out_trade_no),
  KEY ix_award_user (user_id, campaign_id),
  KEY ix_award_transferring (status, transferring_at),
  KEY ix_award_received (status, awarded_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
