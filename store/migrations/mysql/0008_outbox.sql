-- The transactional outbox: one row per event for the rest of the company, written in the same
-- transaction as the change it reports, relayed to NATS JetStream (store.DB.RelayOutbox) and
-- deleted a retention after it was published (store.DB.PurgeOutbox).
--
-- seq is the relay's order (per aggregate, commit order); event_id is deterministic from the
-- change, so a replayed batch inserts nothing (INSERT IGNORE). published_at NULL: not yet
-- published. Relays claim rows by that status, never by "seq greater than the last one": seqs
-- commit out of order.
CREATE TABLE outbox (
  seq          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  event_id     VARCHAR(128) NOT NULL,
  kind         VARCHAR(32) NOT NULL,
  aggregate    VARCHAR(128) NOT NULL,
  payload      TEXT NOT NULL,
  at           DATETIME(6) NOT NULL,
  created_at   DATETIME(6) NOT NULL,
  published_at DATETIME(6) NULL,
  UNIQUE KEY uq_outbox_event (event_id),
  KEY ix_outbox_unpublished (published_at, seq),
  KEY ix_outbox_aggregate (published_at, aggregate, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
