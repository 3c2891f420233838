-- What a replay of a stock op needs after Redis loses it: every record stock.lua keeps per activity
-- product and op id (ref: "v:<voucher>", "o:<order>", "t:<gid>/<branch>") with its value as
-- stock.lua wrote it — a voucher's first answer and what it moved, an order's or TCC branch's
-- marker, a rollback's tombstone. rank orders a record's values: 1 for a first record (a voucher's
-- answer, d, x, t), 2 for a terminal one (rollback, r, f, c); an upsert never lowers it, so
-- replays and reordering leave the more advanced value.
CREATE TABLE stock_record (
  activity_id BIGINT NOT NULL,
  product_id  BIGINT NOT NULL,
  ref         VARCHAR(160) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL, -- ids are case-sensitive
  `value`     TEXT NOT NULL,
  `rank`      TINYINT NOT NULL,
  updated_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (activity_id, product_id, ref),
  KEY ix_stock_record_ref (ref)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A TCC branch's ref is "t:" + gid + "/" + branch id, each id up to 64 characters: 131 in all.
ALTER TABLE stock_change MODIFY ref VARCHAR(160) NOT NULL;
