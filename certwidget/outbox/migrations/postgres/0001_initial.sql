-- The outbox on PostgreSQL, shared by every host of the shop. Tables carry a certwidget_ prefix:
-- the shop may point database= at its own database.
--
-- Times are seconds since the epoch on the *database's* clock (extract(epoch FROM now())), so
-- hosts whose clocks disagree still agree on when a lease runs out or a retry is due.
-- payload and progress are JSON kept as text: exactly what the codec wrote (jsonb would refuse
-- a \u0000 or a lone surrogate escape a buyer's text may carry), and nothing here reads inside.
CREATE TABLE certwidget_submissions (
    id text PRIMARY KEY,
    customer text NOT NULL,
    guest boolean NOT NULL,
    idempotency_key text NOT NULL,
    body_hash text NOT NULL,
    kind text NOT NULL,
    payload text NOT NULL,
    media_type text NOT NULL DEFAULT '',
    filename text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts integer NOT NULL DEFAULT 0,
    unexpected_errors integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL DEFAULT 0,
    lease_until double precision NOT NULL DEFAULT 0,
    -- The token of the claim holding the row ('' for none), as in the SQLite outbox.
    lease_owner text NOT NULL DEFAULT '',
    -- The host (its advisory lock, see certwidget_host_alive) that took the lease; 0: unknown.
    lease_host integer NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    progress text NOT NULL DEFAULT '{}',
    created_at double precision NOT NULL,
    delivered_at double precision,
    UNIQUE (customer, idempotency_key)
);

-- Documents apart from their rows: delivery updates a row several times, and PostgreSQL writes
-- a new version of the row at each update (a TOASTed bytea is kept, but apart it is never
-- touched). Dropped once delivered, as SQLite does.
CREATE TABLE certwidget_documents (
    submission_id text PRIMARY KEY REFERENCES certwidget_submissions (id) ON DELETE CASCADE,
    content bytea NOT NULL
);

-- What is due, in order: a partial index, so delivered rows (nearly all of them) cost nothing.
CREATE INDEX certwidget_submissions_due
    ON certwidget_submissions (next_attempt_at, created_at) WHERE state = 'pending';
CREATE INDEX certwidget_submissions_customer ON certwidget_submissions (customer, created_at);

-- Whether the host that took a lease is still connected. Each PostgresOutbox holds a
-- session-level advisory lock (key 712023001, its host number) on its listening connection;
-- PostgreSQL releases it the moment that connection ends, a SIGKILLed host's included. Its
-- leases are then claimable at once instead of when they run out (a replaced pod's rows are
-- delivered in seconds, not a lease later). Claiming the row of a host that is alive after all
-- (its connection dropped and came back) is safe: its updates are refused by the lease token.
CREATE FUNCTION certwidget_host_alive(host integer) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND granted
            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND classid = 712023001 AND objid = host::oid AND objsubid = 2
    )
$$;

-- A wake-up across hosts: a new submission, or a failed one sent again, notifies every
-- listening host at COMMIT, so the one with a free slot delivers it at once.
CREATE FUNCTION certwidget_notify_due() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('certwidget_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER certwidget_submissions_new
    AFTER INSERT ON certwidget_submissions
    FOR EACH STATEMENT EXECUTE FUNCTION certwidget_notify_due();
CREATE TRIGGER certwidget_submissions_requeued
    AFTER UPDATE OF state ON certwidget_submissions
    FOR EACH ROW WHEN (OLD.state = 'failed' AND NEW.state = 'pending')
    EXECUTE FUNCTION certwidget_notify_due();
