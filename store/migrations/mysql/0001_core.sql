CREATE TABLE account (
  user_id    BIGINT NOT NULL PRIMARY KEY,
  balance    DECIMAL(12,2) NOT NULL DEFAULT 0,
  updated_at DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Every movement of money, signed. (kind, ref) is unique, so each movement is applied once.
CREATE TABLE ledger (
  id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  kind       VARCHAR(16) NOT NULL,
  ref        VARCHAR(64) NOT NULL,
  user_id    BIGINT NOT NULL,
  amount     DECIMAL(12,2) NOT NULL,
  created_at DATETIME(3) NOT NULL,
  UNIQUE KEY uq_ledger_kind_ref (kind, ref),
  KEY ix_ledger_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE group_member (
  group_id BIGINT NOT NULL,
  user_id  BIGINT NOT NULL,
  PRIMARY KEY (group_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE packet (
  id              BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  kind            VARCHAR(16) NOT NULL,
  sender_id       BIGINT NOT NULL,
  group_id        BIGINT NULL,
  to_user_id      BIGINT NULL,
  share_count     INT NOT NULL,
  total           DECIMAL(12,2) NOT NULL,
  greeting        VARCHAR(64) NOT NULL,
  status          VARCHAR(24) NOT NULL,
  pay_status      VARCHAR(24) NOT NULL,
  pay_method      VARCHAR(16) NOT NULL DEFAULT '',
  created_at      DATETIME(3) NOT NULL,
  paid_at         DATETIME(3) NULL,
  expires_at      DATETIME(3) NULL,
  finished_at     DATETIME(3) NULL,
  refunded_amount DECIMAL(12,2) NOT NULL DEFAULT 0,
  best_seq        INT NOT NULL DEFAULT 0,
  KEY ix_packet_status_expiry (status, expires_at),
  KEY ix_packet_sender (sender_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per pre-split share; user_id stays NULL until the share is grabbed.
CREATE TABLE packet_share (
  packet_id  BIGINT NOT NULL,
  seq        INT NOT NULL,
  amount     DECIMAL(12,2) NOT NULL,
  user_id    BIGINT NULL,
  grabbed_at DATETIME(3) NULL,
  credited   TINYINT NOT NULL DEFAULT 0,
  PRIMARY KEY (packet_id, seq),
  UNIQUE KEY uq_share_packet_user (packet_id, user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
