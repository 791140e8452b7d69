"""The durable outbox: every acknowledged submission is on disk before the buyer hears "received".

One SQLite file (WAL). Each row keeps what the buyer sent and how far delivery to the provider
has got, so a retry after a crash resumes where it stopped instead of starting over; the document
to attach is kept beside it, in its own table (SQLite rewrites a whole row on every update, and
delivery updates its row several times). Several processes may share the file: a delivery lease
stops two of them from working on one row at once, and each claim takes it under a token of its
own, so an attempt that outlived its lease cannot settle a row someone else has claimed since.

Writes go through one writer thread that commits what is waiting in one transaction (group
commit): twenty buyers submitting at once cost one ``fsync``, not twenty, and nobody hears back
before the transaction holding their row is committed. Each write runs in its own savepoint, so
one that fails (a bug, a constraint) fails alone. Commits that hold a new submission or a final
state (delivered, failed, sent again) are durable (``synchronous=FULL``: on disk, surviving a
power cut, before anyone is answered); delivery bookkeeping (leases, progress, the rendered PDF,
the next retry) is committed without its own ``fsync``: a process crash keeps it, and a power cut
can only lose the latest of it, which delivery redoes (every step at the provider is idempotent).
Reads use their own connection, so they never wait for a commit's ``fsync``.

    outbox = Outbox("certwidget.sqlite3")
    row, created = outbox.add(new_submission)          # blocking (run it in a thread), or
    row, created = await outbox.add_async(new_submission)
    for row in outbox.claim_due(limit=10, lease_seconds=60):
        ...
        outbox.mark_retry(row.id, owner=row.lease_owner, error="...", delay=30)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

T = TypeVar("T")

SubmissionState = Literal["pending", "delivered", "failed"]

# Documents live in their own table: SQLite rewrites every column of a row when one changes, so
# a 200 KB upload in the submissions row would be written again at each lease and progress note.
_SCHEMA = """
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
    unexpected_errors INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_owner TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    progress TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (customer, idempotency_key)
);
CREATE TABLE IF NOT EXISTS documents (
    submission_id TEXT PRIMARY KEY,
    content BLOB NOT NULL
);
-- What is due, in order, with its lease, from the index alone: finding the next rows to
-- deliver never reads the rows of a backlog.
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
"""


@dataclass(frozen=True, slots=True)
class NewSubmission:
    customer: str
    guest: bool
    idempotency_key: str
    body_hash: str
    kind: Literal["filled", "upload"]
    payload: dict[str, Any]
    document: bytes
    media_type: str
    filename: str


@dataclass(slots=True)
class Submission:
    """A stored submission and its delivery progress."""

    id: str
    customer: str
    guest: bool
    idempotency_key: str
    body_hash: str
    kind: str
    payload: dict[str, Any]
    media_type: str
    filename: str
    state: SubmissionState
    attempts: int
    last_error: str
    created_at: float
    delivered_at: float | None
    #: Delivery progress: {"customer_id": ..., "certificates": {zone: id}, "attached": [zone, ...]}
    progress: dict[str, Any] = field(default_factory=dict)
    #: Attempts that ended in an error no retry is known to cure (a bug, an encoding error):
    #: delivery gives the row up as failed after a few (outages and refusals do not count).
    unexpected_errors: int = 0
    #: The token of the lease :meth:`Outbox.claim` or :meth:`Outbox.claim_due` took on the row,
    #: which the updates that extend or settle it must show; empty for rows read otherwise.
    lease_owner: str = field(default="", compare=False)

    @property
    def zones(self) -> list[str]:
        return list(self.payload.get("zones", []))


_COLUMNS = (
    "id, customer, guest, idempotency_key, body_hash, kind, payload, media_type, filename, "
    "state, attempts, last_error, created_at, delivered_at, progress, unexpected_errors"
)


def _row(row: sqlite3.Row, lease_owner: str = "") -> Submission:
    return Submission(
        id=row["id"],
        customer=row["customer"],
        guest=bool(row["guest"]),
        idempotency_key=row["idempotency_key"],
        body_hash=row["body_hash"],
        kind=row["kind"],
        payload=json.loads(row["payload"]),
        media_type=row["media_type"],
        filename=row["filename"],
        state=row["state"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        progress=json.loads(row["progress"]),
        unexpected_errors=row["unexpected_errors"],
        lease_owner=lease_owner,
    )


# What a delivered submission no longer needs: its document. Driven from the documents table,
# which holds only what is not delivered yet: cheap at every start however many submissions the
# file has seen.
_DROP_DELIVERED_DOCUMENTS = (
    "DELETE FROM documents"
    " WHERE (SELECT state FROM submissions WHERE id = documents.submission_id) = 'delivered'"
)
# Files from before documents had their own table keep them inline in `submissions.document`.
_COPY_INLINE_DOCUMENTS = (
    "INSERT OR IGNORE INTO documents (submission_id, content)"
    " SELECT id, document FROM submissions"
    " WHERE document IS NOT NULL AND length(document) > 0 AND state != 'delivered'"
)
_DROP_DELIVERED_INLINE_DOCUMENTS = (
    "UPDATE submissions SET document = NULL WHERE state = 'delivered' AND document IS NOT NULL"
)
# Files from before leases had owners. Rows get '' (no claim holds them): a lease an older
# process took keeps running out by its time as before, and the next claim stamps its token.
_ADD_LEASE_OWNER = "ALTER TABLE submissions ADD COLUMN lease_owner TEXT NOT NULL DEFAULT ''"
# Files from before unexpected errors were counted: every row starts with none.
_ADD_UNEXPECTED_ERRORS = (
    "ALTER TABLE submissions ADD COLUMN unexpected_errors INTEGER NOT NULL DEFAULT 0"
)

# Whether the caller still holds the lease it claimed: the row is pending and no claim has
# taken it since (a claim writes its own token; settling or releasing writes ''). A lease that
# ran out unclaimed is still the caller's: nobody else is working on the row. The bound token
# is never '' (every claim makes one), so a row nobody claimed is held by nobody.
_HELD = "id = ? AND state = 'pending' AND lease_owner = ? AND lease_owner != ''"

#: The most writes committed in one transaction.
MAX_BATCH = 64
# The page size a new outbox file is made with, and how much WAL a commit checkpoints at once.
PAGE_SIZE = 16 * 1024
CHECKPOINT_BYTES = 4 * 1024 * 1024


@dataclass(slots=True)
class _Write:
    op: Callable[[sqlite3.Connection], Any]
    durable: bool
    future: concurrent.futures.Future[Any]
    #: The new submission ``op`` stores, when that is what it does: a batch of nothing else is
    #: stored by one statement (:func:`_add_all`).
    new: NewSubmission | None = None


class Outbox:
    """SQLite-backed store of submissions.

    The methods block (run them in a thread), except the ``*_async`` ones. Writes are committed
    by the outbox's writer thread, grouped with whatever else is waiting; a method returns once
    the transaction holding its write is committed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._read_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        # Documents (uploads up to 10 MB, rendered PDFs) are most of what is written: with
        # 16 KB pages a 200 KB upload is 13 WAL frames instead of 50, and its commit costs 40%
        # less CPU. Only a new file takes it; an existing one keeps its page size.
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        # SQLite's default checkpoints every 1,000 pages: keep that at 4 MB whatever the page
        # size, so the commit that runs a checkpoint is never held up by more than 4 MB.
        page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._db.execute(f"PRAGMA wal_autocheckpoint={max(1, CHECKPOINT_BYTES // page_size)}")
        # FULL: a commit is on disk before we answer the buyer; WAL keeps that cheap.
        self._db.execute("PRAGMA synchronous=FULL")
        self._synchronous_full = True
        self._db.executescript(_SCHEMA)
        self._upgrade()
        self._reader = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._reader.row_factory = sqlite3.Row
        self._reader.execute("PRAGMA query_only=ON")
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._closed = False

    def reopen(self) -> None:
        """Open the file again after :meth:`close`: the app is being served again."""
        with self._writer_lock:
            if self._closed:
                self._open()

    def _upgrade(self) -> None:
        """At open, in one transaction: documents of delivered submissions (which earlier
        versions kept) are dropped; a file made before documents had their own table gets the
        inline documents of its undelivered submissions copied there. The old column keeps its
        copy, so an older certwidget process still sharing this file (during an upgrade one
        process at a time) reads its documents as before. A file made before leases had owners
        gets the column; an older process still on it claims and settles without looking at it,
        as it always did, until it is upgraded too. So does a file made before unexpected
        delivery errors were counted (an older process never counts them: its rows retry).
        """
        # The columns are read under the write lock: processes opening an older file at once
        # add the missing column once, the first to get the lock, and the others see it.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(submissions)")}
            self._legacy_document_column = "document" in columns
            statements = [] if "lease_owner" in columns else [_ADD_LEASE_OWNER]
            if "unexpected_errors" not in columns:
                statements.append(_ADD_UNEXPECTED_ERRORS)
            statements.append(_DROP_DELIVERED_DOCUMENTS)
            if self._legacy_document_column:
                statements += [_COPY_INLINE_DOCUMENTS, _DROP_DELIVERED_INLINE_DOCUMENTS]
            for statement in statements:
                self._db.execute(statement)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- the writer ------------------------------------------------------------------------

    def _submit(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        durable: bool,
        new: NewSubmission | None = None,
    ) -> concurrent.futures.Future[T]:
        write = _Write(op, durable, concurrent.futures.Future(), new)
        with self._writer_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("Cannot operate on a closed outbox.")
            if self._writer is None or not self._writer.is_alive():
                # First write, or the writer died of something no write should raise
                # (KeyboardInterrupt, SystemExit): a new one, so no caller waits forever.
                self._writer = threading.Thread(
                    target=self._write_loop, name="certwidget-outbox", daemon=True
                )
                self._writer.start()
            # Under the lock: close() queues its stop after every write already accepted.
            self._queue.put(write)
        return write.future

    def _write(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        durable: bool,
        new: NewSubmission | None = None,
    ) -> T:
        return self._submit(op, durable=durable, new=new).result()

    async def _write_async(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        durable: bool,
        new: NewSubmission | None = None,
    ) -> T:
        return await asyncio.wrap_future(self._submit(op, durable=durable, new=new))

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            # Everything that arrived while the last transaction was committing goes in one.
            while len(batch) < MAX_BATCH:
                try:
                    write = self._queue.get_nowait()
                except queue.Empty:
                    break
                if write is None:
                    stop = True
                    break
                batch.append(write)
            self._commit(batch)

    def _commit(self, batch: list[_Write]) -> None:
        # A caller that gave up before its turn (a cancelled request) writes nothing.
        live = [write for write in batch if write.future.set_running_or_notify_cancel()]
        if not live:
            return
        db = self._db
        try:
            durable = any(write.durable for write in live)
            if durable != self._synchronous_full:
                db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._synchronous_full = durable
            # New submissions alone, the usual batch under load, are stored by one statement.
            adds = [write.new for write in live if write.new is not None]
            outcomes = _add_all(db, adds) if len(adds) == len(live) else _run_together(db, live)
            if outcomes is None:
                # One of them failed and all were undone: again, each in a savepoint of its
                # own, so only the failing one fails.
                outcomes = _run_isolated(db, live)
        except BaseException as exc:
            # Nothing of the batch is stored: every caller hears so, nobody is acknowledged.
            for write in live:
                write.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for write, (ok, value) in zip(live, outcomes, strict=True):
            if ok:
                write.future.set_result(value)
            else:
                write.future.set_exception(value)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    def close(self) -> None:
        """Commit what was already accepted, stop the writer and close the file."""
        with self._writer_lock:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
            if writer is not None:
                self._queue.put(None)
        if writer is not None:
            writer.join()
        self._db.close()
        with self._read_lock:
            self._reader.close()

    # -- submissions -----------------------------------------------------------------------

    def add(self, new: NewSubmission) -> tuple[Submission, bool]:
        """Store a submission; answers (row, True), or (the earlier row, False) for a reused key.

        Returns once the row is durably on disk.
        """
        return self._write(functools.partial(_add, new), durable=True, new=new)

    async def add_async(self, new: NewSubmission) -> tuple[Submission, bool]:
        """:meth:`add` without blocking the event loop (nor taking a thread of its pool)."""
        return await self._write_async(functools.partial(_add, new), durable=True, new=new)

    def get(self, submission_id: str) -> Submission | None:
        rows = self._read(f"SELECT {_COLUMNS} FROM submissions WHERE id = ?", (submission_id,))
        return _row(rows[0]) if rows else None

    def for_customer(self, customer: str, *, limit: int = 100) -> list[Submission]:
        rows = self._read(
            f"SELECT {_COLUMNS} FROM submissions WHERE customer = ?"
            " ORDER BY created_at DESC LIMIT ?",
            (customer, limit),
        )
        return [_row(row) for row in rows]

    def document(self, submission_id: str) -> bytes:
        rows = self._read("SELECT content FROM documents WHERE submission_id = ?", (submission_id,))
        if rows:
            return bytes(rows[0]["content"])
        if self._legacy_document_column:
            # A row an older certwidget added to this file after it was upgraded here (several
            # processes on one file, upgraded one at a time): its document is still inline.
            rows = self._read("SELECT document FROM submissions WHERE id = ?", (submission_id,))
            if rows and rows[0]["document"]:
                return bytes(rows[0]["document"])
        return b""

    def set_document(
        self, submission_id: str, document: bytes, *, owner: str, media_type: str, filename: str
    ) -> bool:
        """Replace the stored document (the rendered PDF of a filled-in certificate) of a row
        the caller holds the lease on; answers whether it did (False: the lease was lost).

        Not durable on its own: if a power cut loses it, the signature it replaced is still
        there and delivery renders the PDF again.
        """

        def op(db: sqlite3.Connection) -> bool:
            # The row first, to learn whether the lease is still held: a document written for
            # a row another process has delivered since would outlive it, and one written
            # while another attempt renders would replace that attempt's.
            held = db.execute(
                f"UPDATE submissions SET media_type = ?, filename = ? WHERE {_HELD}",
                (media_type, filename, submission_id, owner),
            ).rowcount
            if held:
                db.execute(
                    "INSERT OR REPLACE INTO documents (submission_id, content) VALUES (?, ?)",
                    (submission_id, document),
                )
            return held == 1

        return self._write(op, durable=False)

    def claim_due(self, *, limit: int, lease_seconds: float) -> list[Submission]:
        """Lease up to ``limit`` pending submissions whose next attempt is due.

        Each row comes back with the token of its lease (``lease_owner``), which the updates
        that extend or settle the lease must show.
        """

        def op(db: sqlite3.Connection) -> list[Submission]:
            now = time.time()
            due = db.execute(
                "SELECT rowid FROM submissions INDEXED BY submissions_due_in_order"
                " WHERE state = 'pending' AND next_attempt_at <= ? AND lease_until <= ?"
                " ORDER BY next_attempt_at, created_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            rows = [
                db.execute(
                    f"SELECT {_COLUMNS} FROM submissions WHERE rowid = ?", (rowid,)
                ).fetchone()
                for (rowid,) in due
            ]
            leases = [(row, _new_owner()) for row in rows]
            db.executemany(
                "UPDATE submissions SET lease_until = ?, lease_owner = ? WHERE id = ?",
                [(now + lease_seconds, owner, row["id"]) for row, owner in leases],
            )
            return [_row(row, owner) for row, owner in leases]

        return self._write(op, durable=False)

    def claim(self, submission_id: str, *, lease_seconds: float) -> Submission | None:
        """Lease one pending submission now, whatever its schedule; None if taken or done.

        The row comes back with the token of its lease, as from :meth:`claim_due`.
        """

        def op(db: sqlite3.Connection) -> Submission | None:
            now = time.time()
            row = db.execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE id = ? AND state = 'pending'"
                " AND lease_until <= ?",
                (submission_id, now),
            ).fetchone()
            if row is None:
                return None
            owner = _new_owner()
            db.execute(
                "UPDATE submissions SET lease_until = ?, lease_owner = ? WHERE id = ?",
                (now + lease_seconds, owner, submission_id),
            )
            return _row(row, owner)

        return self._write(op, durable=False)

    def renew(self, submission_id: str, *, owner: str, lease_seconds: float) -> bool:
        """Extend the lease the caller holds on a row it is delivering; answers whether it
        still held it (False: the row was claimed by someone else since, or settled)."""
        changed = self._execute(
            f"UPDATE submissions SET lease_until = ? WHERE {_HELD}",
            (time.time() + lease_seconds, submission_id, owner),
            durable=False,
        )
        return changed == 1

    def next_due_in(self) -> float | None:
        """Seconds until the earliest pending submission is due (0 if overdue), None if none."""
        rows = self._read(
            "SELECT MIN(MAX(next_attempt_at, lease_until)) AS due FROM submissions"
            " WHERE state = 'pending'"
        )
        if not rows or rows[0]["due"] is None:
            return None
        return max(0.0, float(rows[0]["due"]) - time.time())

    def save_progress(self, submission_id: str, progress: dict[str, Any], *, owner: str) -> bool:
        """Record how far delivery got (not durable on its own: every step is idempotent), if
        the caller still holds the lease; answers whether it did."""
        changed = self._execute(
            f"UPDATE submissions SET progress = ? WHERE {_HELD}",
            (json.dumps(progress), submission_id, owner),
            durable=False,
        )
        return changed == 1

    def mark_delivered(self, submission_id: str, progress: dict[str, Any]) -> bool:
        """The provider holds the certificate and its document now: the row stays (it answers
        ``exemption_for`` and idempotent replays), the document goes, so the file does not
        grow by every upload for ever. Answers whether it recorded that: False if the row was
        settled already, which it leaves as it was.

        It asks for no lease: every step at the provider is done, and each is idempotent there,
        so a row still pending is delivered whoever holds its lease now (that attempt's next
        update is refused and it stops). A row another process settled meanwhile keeps what
        that process recorded: its own delivery, or a refusal (failed, its document kept for
        :meth:`requeue`).
        """
        legacy = self._legacy_document_column

        def op(db: sqlite3.Connection) -> bool:
            changed = db.execute(
                "UPDATE submissions SET state = 'delivered', progress = ?, delivered_at = ?,"
                " lease_until = 0, lease_owner = '', last_error = ''"
                " WHERE id = ? AND state = 'pending'",
                (json.dumps(progress), time.time(), submission_id),
            ).rowcount
            if changed:
                db.execute("DELETE FROM documents WHERE submission_id = ?", (submission_id,))
                if legacy:
                    db.execute(
                        "UPDATE submissions SET document = NULL WHERE id = ?", (submission_id,)
                    )
            return changed == 1

        return self._write(op, durable=True)

    def mark_retry(
        self,
        submission_id: str,
        *,
        owner: str,
        error: str,
        delay: float,
        unexpected: bool = False,
    ) -> bool:
        """An attempt that failed for now: another after ``delay`` seconds, if the caller still
        holds the lease; answers whether it did (a row claimed since is the new owner's).
        ``unexpected`` counts the attempt in ``unexpected_errors``."""
        changed = self._execute(
            "UPDATE submissions SET attempts = attempts + 1,"
            " unexpected_errors = unexpected_errors + ?, last_error = ?,"
            f" next_attempt_at = ?, lease_until = 0, lease_owner = '' WHERE {_HELD}",
            (int(unexpected), _storable(error), time.time() + delay, submission_id, owner),
            durable=False,
        )
        return changed == 1

    def release(self, leases: Mapping[str, str]) -> int:
        """Give up leases without recording an attempt (a graceful shutdown mid-delivery).

        ``leases`` maps each submission id to the token of the caller's lease on it; a lease
        someone else has claimed since stays theirs. Answers how many were given up.
        """

        def op(db: sqlite3.Connection) -> int:
            return db.executemany(
                f"UPDATE submissions SET lease_until = 0, lease_owner = '' WHERE {_HELD}",
                list(leases.items()),
            ).rowcount

        return self._write(op, durable=False)

    def requeue(self, submission_id: str) -> bool:
        """Send a failed submission again (after fixing what the provider refused).

        A shop's decision, not an attempt's: it needs no lease.
        """
        changed = self._execute(
            "UPDATE submissions SET state = 'pending', next_attempt_at = 0, lease_until = 0,"
            " lease_owner = '', unexpected_errors = 0 WHERE id = ? AND state = 'failed'",
            (submission_id,),
            durable=True,
        )
        return changed == 1

    def mark_failed(
        self, submission_id: str, *, owner: str, error: str, unexpected: bool = False
    ) -> bool:
        """A delivery no retry can cure (the provider's refusal, or an unexpected error seen too
        often): kept, never retried until :meth:`requeue`, visible to the shop; if the
        caller still holds the lease. Answers whether it did. ``unexpected`` counts the attempt
        in ``unexpected_errors``."""
        changed = self._execute(
            "UPDATE submissions SET state = 'failed', attempts = attempts + 1,"
            " unexpected_errors = unexpected_errors + ?,"
            f" last_error = ?, lease_until = 0, lease_owner = '' WHERE {_HELD}",
            (int(unexpected), _storable(error), submission_id, owner),
            durable=True,
        )
        return changed == 1

    def _execute(self, sql: str, params: Sequence[Any], *, durable: bool) -> int:
        """One statement in the writer; answers the number of rows it changed."""

        def op(db: sqlite3.Connection) -> int:
            return db.execute(sql, params).rowcount

        return self._write(op, durable=durable)

    def counts(self) -> dict[str, int]:
        rows = self._read("SELECT state, COUNT(*) AS n FROM submissions GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}

    def ids(
        self, states: Sequence[SubmissionState] = ("pending", "delivered", "failed")
    ) -> list[str]:
        marks = ",".join("?" for _ in states)
        rows = self._read(f"SELECT id FROM submissions WHERE state IN ({marks})", tuple(states))
        return [row["id"] for row in rows]


def _run_together(db: sqlite3.Connection, live: list[_Write]) -> list[tuple[bool, Any]] | None:
    """Every write in one transaction, no savepoints; None (all undone) if one of several failed.

    The usual batch (nothing fails) costs two statements per write fewer than savepoints would.
    Every SQLite call gives up the GIL, and winning it back from a busy event loop is what a
    commit waits for most.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        values = [write.op(db) for write in live]
    except Exception as exc:
        if db.in_transaction:  # SQLite may have rolled back already (IOERR)
            db.execute("ROLLBACK")
        # Alone in its transaction, a write's failure is its own: nothing else to redo.
        return [(False, exc)] if len(live) == 1 else None
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return [(True, value) for value in values]


def _run_isolated(db: sqlite3.Connection, live: list[_Write]) -> list[tuple[bool, Any]]:
    """Each write in a savepoint of its own, in one transaction: a failure undoes only its write."""
    outcomes: list[tuple[bool, Any]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for write in live:
            db.execute("SAVEPOINT write")
            try:
                value = write.op(db)
            except Exception as exc:
                db.execute("ROLLBACK TO write")
                db.execute("RELEASE write")
                outcomes.append((False, exc))
            else:
                db.execute("RELEASE write")
                outcomes.append((True, value))
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return outcomes


_INSERT_NEW = (
    "INSERT INTO new_submission_v1 (id, customer, guest, idempotency_key, body_hash, kind,"
    " payload, media_type, filename, created_at, document) VALUES "
)
_NEW_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


def _add(new: NewSubmission, db: sqlite3.Connection) -> tuple[Submission, bool]:
    submission, values = _new_row(new)
    # One statement on the usual path (see new_submission_v1 in the schema); a reused key (the
    # UNIQUE constraint) inserts nothing, and the earlier row is read back.
    before = db.total_changes
    db.execute(_INSERT_NEW + _NEW_VALUES, values)
    if db.total_changes == before:
        return _earlier(db, new), False
    return submission, True


def _add_all(db: sqlite3.Connection, news: list[NewSubmission]) -> list[tuple[bool, Any]] | None:
    """New submissions stored by one INSERT statement, which SQLite commits by itself, atomically.

    One statement for the batch, where BEGIN, an INSERT each and COMMIT were two more than the
    batch: each statement gives up the GIL, and winning it back from a busy event loop is what
    the writer waits for. None (nothing stored) if the statement failed: the caller stores them
    again one by one, so only a failing one fails.
    """
    try:
        rows = [_new_row(new) for new in news]
    except Exception:
        return None
    before = db.total_changes
    try:
        db.execute(
            _INSERT_NEW + ", ".join([_NEW_VALUES] * len(rows)),
            [value for _, values in rows for value in values],
        )
    except Exception:
        if db.in_transaction:  # SQLite rolls a failed statement back; be sure of it
            db.execute("ROLLBACK")
        return None
    # The trigger stores a row, and a document when there is one, for each key not used before.
    if db.total_changes - before == sum(1 + bool(new.document) for new in news):
        return [(True, (submission, True)) for submission, _ in rows]
    # A key was used before (a retried submission, perhaps twice in this batch): its answer is
    # the earlier row.
    ids = [submission.id for submission, _ in rows]
    found = db.execute(f"SELECT id FROM submissions WHERE id IN ({', '.join('?' * len(ids))})", ids)
    stored = {row[0] for row in found}
    outcomes: list[tuple[bool, Any]] = []
    for new, (submission, _) in zip(news, rows, strict=True):
        try:
            outcome = (submission, True) if submission.id in stored else (_earlier(db, new), False)
        except Exception as exc:
            outcomes.append((False, exc))
        else:
            outcomes.append((True, outcome))
    return outcomes


def _new_row(new: NewSubmission) -> tuple[Submission, tuple[Any, ...]]:
    """The submission ``new`` becomes, and the values that store it (in _INSERT_NEW's order)."""
    payload = json.dumps(new.payload)
    submission = Submission(
        id=uuid.uuid4().hex,
        customer=new.customer,
        guest=new.guest,
        idempotency_key=new.idempotency_key,
        body_hash=new.body_hash,
        kind=new.kind,
        payload=json.loads(payload),  # what a read of the row answers
        media_type=new.media_type,
        filename=new.filename,
        state="pending",
        attempts=0,
        last_error="",
        created_at=time.time(),
        delivered_at=None,
    )
    values = (
        submission.id,
        new.customer,
        int(new.guest),
        new.idempotency_key,
        new.body_hash,
        new.kind,
        payload,
        new.media_type,
        new.filename,
        submission.created_at,
        new.document or None,
    )
    return submission, values


def _storable(error: str) -> str:
    """``error`` cut to 500 characters, with any lone surrogate (an exception's message may
    quote the very text that failed to encode) escaped: SQLite cannot bind one, and a retry
    or a failure that could not be recorded would leave its row leased."""
    return error[:500].encode("utf-8", "backslashreplace").decode("utf-8")


def _new_owner() -> str:
    """A fresh lease token.

    One per claim, not one per process: two attempts at one row in one process (the background
    loop's, and ``deliver_now``'s after the first outlived its lease) must not pass for each
    other either. Claims are batched writes already; a token costs no statement.
    """
    return uuid.uuid4().hex


def _earlier(db: sqlite3.Connection, new: NewSubmission) -> Submission:
    """The submission stored before under ``new``'s customer and idempotency key."""
    existing = db.execute(
        f"SELECT {_COLUMNS} FROM submissions WHERE customer = ? AND idempotency_key = ?",
        (new.customer, new.idempotency_key),
    ).fetchone()
    if existing is None:
        raise sqlite3.IntegrityError("the submission was neither stored nor found stored")
    return _row(existing)
