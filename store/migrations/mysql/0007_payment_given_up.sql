-- A trade grab ended as failed because no outcome came (the channel did not
-- know it, or nothing came within GRAB_SETTLE_GIVE_UP), as against one the
-- channel reported failed: the sender sees which (GET /v1/payments/{no}).
ALTER TABLE payment ADD COLUMN given_up TINYINT(1) NOT NULL DEFAULT 0;
