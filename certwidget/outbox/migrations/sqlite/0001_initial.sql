-- The outbox as certwidget first kept it. Every statement is IF NOT EXISTS: a file from before
-- migrations were numbered (user_version 0, its tables already there) runs this too, which adds
-- only what it lacks (the documents table, the index in order, the view).
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    guest INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    media_type TEXT NOT NULL DEFAULT '',
    filename TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    progress TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (customer, idempotency_key)
);

-- Documents live in their own table: SQLite rewrites every column of a row when one changes, so
-- a 200 KB upload in the submissions row would be written again at each lease and progress note.
CREATE TABLE IF NOT EXISTS documents (
    submission_id TEXT PRIMARY KEY,
    content BLOB NOT NULL
);

-- What is due, in order, with its lease, from the index alone: finding the next rows to deliver
-- never reads the rows of a backlog. (submissions_due is the narrower index of older files.)
DROP INDEX IF EXISTS submissions_due;
CREATE INDEX IF NOT EXISTS submissions_due_in_order
    ON submissions (state, next_attempt_at, created_at, lease_until);
CREATE INDEX IF NOT EXISTS submissions_customer ON submissions (customer, created_at);

-- A new submission and its document in one statement: each statement the writer thread runs
-- hands the GIL back, and winning it again from a busy event loop can take a switch interval
-- (5 ms), so two statements per submission made a batch of twenty wait 200 ms. The trigger
-- stores the document only when the row is new (a reused key inserts nothing).
CREATE VIEW IF NOT EXISTS new_submission_v1 AS
    SELECT id, customer, guest, idempotency_key, body_hash, kind, payload, media_type, filename,
        created_at, NULL AS document
    FROM submissions;
CREATE TRIGGER IF NOT EXISTS new_submission_v1_insert INSTEAD OF INSERT ON new_submission_v1
BEGIN
    INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,
        media_type, filename, created_at)
    VALUES (NEW.id, NEW.customer, NEW.guest, NEW.idempotency_key, NEW.body_hash, NEW.kind,
        NEW.payload, NEW.media_type, NEW.filename, NEW.created_at)
    ON CONFLICT (customer, idempotency_key) DO NOTHING;
    INSERT INTO documents (submission_id, content)
    SELECT NEW.id, NEW.document WHERE changes() > 0 AND length(NEW.document) > 0;
END;
