-- What a replay of a stock op needs after Redis loses it: every record stock.lua keeps per activity
-- product and op id (ref: "v:<voucher>", "o:<order>", "t:<gid>/<branch>") with its value as
-- stock.lua wrote it — a voucher's first answer and what it moved, an order's or TCC branch's
-- marker, a rollback's tombstone. rank orders a record's values: 1 for a first record (a voucher's
-- answer, d, x, t), 2 for a terminal one (rollback, r, f, c); an upsert never lowers it, so
-- replays and reordering leave the more advanced value.
CREATE TABLE stock_record (
  activity_id INTEGER NOT NULL,
  product_id  INTEGER NOT NULL,
  ref         TEXT NOT NULL,
  `value`     TEXT NOT NULL,
  `rank`      INTEGER NOT NULL,
  updated_at  DATETIME NOT NULL,
  PRIMARY KEY (activity_id, product_id, ref)
);
CREATE INDEX ix_stock_record_ref ON stock_record (ref);
