-- Attempts that ended in an error no retry is known to cure: delivery gives a row up as failed
-- after a few. Every existing row starts with none (an older process never counts them).
ALTER TABLE submissions ADD COLUMN unexpected_errors INTEGER NOT NULL DEFAULT 0;
