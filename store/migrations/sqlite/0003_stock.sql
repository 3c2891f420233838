-- Activity SKU stock, as the writer last saw it in Redis. version is the SKU's
-- change counter in Redis: a snapshot only replaces an older one, so events
-- applied twice or out of order leave the newest state.
CREATE TABLE stock_sku (
  activity_id INTEGER NOT NULL,
  product_id  INTEGER NOT NULL,
  sku_id      INTEGER NOT NULL,
  status      TEXT NOT NULL,
  version     INTEGER NOT NULL,
  updated_at  DATETIME NOT NULL,
  PRIMARY KEY (activity_id, product_id, sku_id)
);

-- One row per SKU and scope (high_seas, pool:<id>); available + reserved + sold = total.
CREATE TABLE stock_scope (
  activity_id INTEGER NOT NULL,
  product_id  INTEGER NOT NULL,
  sku_id      INTEGER NOT NULL,
  scope       TEXT NOT NULL,
  total       INTEGER NOT NULL,
  available   INTEGER NOT NULL,
  reserved    INTEGER NOT NULL,
  sold        INTEGER NOT NULL,
  PRIMARY KEY (activity_id, product_id, sku_id, scope)
);

-- The change log: every change of a SKU, once, with the voucher, order or TCC
-- branch (ref) that made it.
CREATE TABLE stock_change (
  activity_id INTEGER NOT NULL,
  product_id  INTEGER NOT NULL,
  sku_id      INTEGER NOT NULL,
  version     INTEGER NOT NULL,
  op          TEXT NOT NULL,
  ref         TEXT NOT NULL,
  detail      TEXT NOT NULL,
  created_at  DATETIME NOT NULL,
  PRIMARY KEY (activity_id, product_id, sku_id, version)
);
CREATE INDEX ix_stock_change_ref ON stock_change (ref);
