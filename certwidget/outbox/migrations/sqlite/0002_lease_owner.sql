-- Leases have owners: each claim stamps a token of its own, and an attempt that outlived its
-- lease cannot settle a row another claim holds. Rows get '' (no claim holds them): a lease an
-- older process took keeps running out by its time, and the next claim stamps its token.
ALTER TABLE submissions ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
