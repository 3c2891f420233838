-- Activity SKU stock, as the writer last saw it in Redis. version is the SKU's
-- change counter in Redis: a snapshot only replaces an older one, so events
-- applied twice or out of order leave the newest state.
CREATE TABLE stock_sku (
  activity_id BIGINT NOT NULL,
  product_id  BIGINT NOT NULL,
  sku_id      BIGINT NOT NULL,
  status      VARCHAR(8) NOT NULL,
  version     BIGINT NOT NULL,
  updated_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (activity_id, product_id, sku_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per SKU and scope (high_seas, pool:<id>); available + reserved + sold = total.
CREATE TABLE stock_scope (
  activity_id BIGINT NOT NULL,
  product_id  BIGINT NOT NULL,
  sku_id      BIGINT NOT NULL,
  scope       VARCHAR(32) NOT NULL,
  total       BIGINT NOT NULL,
  available   BIGINT NOT NULL,
  reserved    BIGINT NOT NULL,
  sold        BIGINT NOT NULL,
  PRIMARY KEY (activity_id, product_id, sku_id, scope)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The change log: every change of a SKU, once, with the voucher, order or TCC
-- branch (ref) that made it.
CREATE TABLE stock_change (
  activity_id BIGINT NOT NULL,
  product_id  BIGINT NOT NULL,
  sku_id      BIGINT NOT NULL,
  version     BIGINT NOT NULL,
  op          VARCHAR(16) NOT NULL,
  ref         VARCHAR(80) NOT NULL,
  detail      VARCHAR(128) NOT NULL,
  created_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (activity_id, product_id, sku_id, version),
  KEY ix_stock_change_ref (ref)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
