-- Merchant operations list submissions newest first, all of them or one state's (the CLI's
-- `certwidget outbox list|export`): from an index, not a sort of the whole table. A buyer's
-- own are found by certwidget_submissions_customer (customer, created_at).
CREATE INDEX certwidget_submissions_created ON certwidget_submissions (created_at);
CREATE INDEX certwidget_submissions_state_created
    ON certwidget_submissions (state, created_at);
