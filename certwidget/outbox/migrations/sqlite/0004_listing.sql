-- Merchant operations list submissions newest first, all of them or one state's (the CLI's
-- `certwidget outbox list|export`): from an index, not a sort of the whole table. A buyer's
-- own are found by submissions_customer (customer, created_at).
CREATE INDEX IF NOT EXISTS submissions_created ON submissions (created_at);
CREATE INDEX IF NOT EXISTS submissions_state_created ON submissions (state, created_at);
