"""The default outbox: one SQLite file, durable before the buyer hears "received".

One file (WAL). Each row keeps what the buyer sent and how far delivery to the provider has got,
so a retry after a crash resumes where it stopped instead of starting over; the document to
attach is kept beside it, in its own table (SQLite rewrites a whole row on every update, and
delivery updates its row several times). Several processes may share the file: a delivery lease
stops two of them from working on one row at once, and each claim takes it under a token of its
own, so an attempt that outlived its lease cannot settle a row someone else has claimed since.

Writes go through one writer thread that commits what is waiting in one transaction (group
commit): twenty buyers submitting at once cost one ``fsync``, not twenty, and nobody hears back
before the transaction holding their row is committed. A write that fails (a bug, a constraint)
fails alone: the rest of its batch is committed without it. Commits that hold a new submission
or a final state (delivered, failed, sent again) are durable (``synchronous=FULL``: on disk,
surviving a power cut, before anyone is answered); delivery bookkeeping (leases, progress, the
rendered PDF, the next retry) is committed without its own ``fsync``: a process crash keeps it,
and a power cut can only lose the latest of it, which delivery redoes (every step at the
provider is idempotent).
Reads use their own connection, in a worker thread, so they never wait for a commit's ``fsync``.

The schema is the numbered SQL files in ``migrations/sqlite/``, applied in order at open and
recorded in the file's ``PRAGMA user_version``, under the write lock, so processes opening one
file at once apply each once.

    outbox = SQLiteOutbox("certwidget.sqlite3")
    row, created = await outbox.add(new_submission)
    for row in await outbox.claim_due(limit=10, lease_seconds=60):
        ...
        await outbox.mark_retry(row.id, owner=row.lease_owner, error="...", delay=30)
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from anyio import to_thread

from certwidget.outbox.base import (
    ALL_STATES,
    NewSubmission,
    RetryResult,
    Submission,
    SubmissionState,
    SubmissionStatus,
    new_lease_owner,
    new_submission_id,
    storable_error,
)

T = TypeVar("T")


class OutboxSchemaError(RuntimeError):
    """The file's schema is newer than this certwidget knows."""


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    statements: tuple[str, ...]


def _statements(script: str) -> tuple[str, ...]:
    """``script`` split into statements (a trigger's body keeps its own semicolons), so each
    runs inside the caller's transaction: ``executescript`` would commit it first."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return tuple(statements)


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """The numbered migrations in ``migrations/sqlite/``, in order."""
    folder = resources.files("certwidget.outbox").joinpath("migrations", "sqlite")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append(Migration(int(number), name, _statements(entry.read_text("utf-8"))))
    found.sort(key=lambda migration: migration.number)
    if [migration.number for migration in found] != list(range(1, len(found) + 1)):
        raise OutboxSchemaError(f"the outbox migrations are not numbered 1, 2, 3...: {found}")
    return tuple(found)


# Files from before migrations were numbered (user_version 0) got their columns added at open;
# the last of these each has tells how far it got: (column, the migration that adds it).
_LEGACY_COLUMNS = (("lease_owner", 2), ("unexpected_errors", 3))

# What a delivered submission no longer needs: its document. Driven from the documents table,
# which holds only what is not delivered yet: cheap at every open however many submissions the
# file has seen. Not a migration: an older process still on the file may leave some behind.
_DROP_DELIVERED_DOCUMENTS = (
    "DELETE FROM documents"
    " WHERE (SELECT state FROM submissions WHERE id = documents.submission_id) = 'delivered'"
)
# Files from before documents had their own table keep them inline in `submissions.document`
# (and an older process still on the file goes on writing them there).
_COPY_INLINE_DOCUMENTS = (
    "INSERT OR IGNORE INTO documents (submission_id, content)"
    " SELECT id, document FROM submissions"
    " WHERE document IS NOT NULL AND length(document) > 0 AND state != 'delivered'"
)
_DROP_DELIVERED_INLINE_DOCUMENTS = (
    "UPDATE submissions SET document = NULL WHERE state = 'delivered' AND document IS NOT NULL"
)

_COLUMNS = (
    "id, customer, guest, idempotency_key, body_hash, kind, payload, media_type, filename, "
    "state, attempts, last_error, created_at, delivered_at, progress, unexpected_errors"
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


def _switch_to_wal(db: sqlite3.Connection, *, patience: float = 30.0) -> None:
    """Put the file in WAL mode, waiting out other processes doing the same.

    Switching a new file to WAL takes the file's exclusive lock, and while another process
    holds it SQLite answers "database is locked" at once instead of calling the busy handler
    (the connection's ``timeout``): several hosts starting together on one new file would
    fail. Asked again shortly, the switch finds the file in WAL mode already.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SQLiteOutbox:
    """The :class:`~certwidget.outbox.base.Outbox` on one SQLite file (made if missing).

    The file is opened (and its schema brought up to date) when the outbox is made. Writes are
    committed by the outbox's writer thread, grouped with whatever else is waiting; a method
    returns once the transaction holding its write is committed. Reads run in a worker thread.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._read_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._open()

    def __repr__(self) -> str:
        return f"SQLiteOutbox({str(self.path)!r})"

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
        _switch_to_wal(self._db)
        # SQLite's default checkpoints every 1,000 pages: keep that at 4 MB whatever the page
        # size, so the commit that runs a checkpoint is never held up by more than 4 MB.
        page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        self._db.execute(f"PRAGMA wal_autocheckpoint={max(1, CHECKPOINT_BYTES // page_size)}")
        # FULL: a commit is on disk before we answer the buyer; WAL keeps that cheap.
        self._db.execute("PRAGMA synchronous=FULL")
        self._synchronous_full = True
        self._upgrade()
        self._reader = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._reader.row_factory = sqlite3.Row
        self._reader.execute("PRAGMA query_only=ON")
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._closed = False

    def _upgrade(self) -> None:
        """At open, in one transaction under the write lock (processes opening the file at once
        wait for each other, and the later ones find nothing left to do): the migrations the
        file lacks, then the documents' housekeeping.

        Documents of delivered submissions (which earlier versions kept) are dropped; a file
        made before documents had their own table gets the inline documents of its undelivered
        submissions copied there. The old column keeps its copy, so an older certwidget process
        still sharing this file (during an upgrade one process at a time) reads its documents
        as before. Columns added since (lease owners, unexpected errors) are ignored by such a
        process, as they always were, until it is upgraded too.
        """
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            stored = version = int(db.execute("PRAGMA user_version").fetchone()[0])
            known = migrations()
            latest = known[-1].number
            if version > latest:
                raise OutboxSchemaError(
                    f"{self.path} was made by a newer certwidget (outbox schema {version}; "
                    f"this one knows up to {latest}): upgrade certwidget, or point database= "
                    "at another file"
                )
            if version == 0 and _columns(db):
                version = self._baseline(db)
            for migration in known[version:]:
                for statement in migration.statements:
                    db.execute(statement)
            if stored != latest:
                db.execute(f"PRAGMA user_version = {latest}")
            self._legacy_document_column = "document" in _columns(db)
            db.execute(_DROP_DELIVERED_DOCUMENTS)
            if self._legacy_document_column:
                db.execute(_COPY_INLINE_DOCUMENTS)
                db.execute(_DROP_DELIVERED_INLINE_DOCUMENTS)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @staticmethod
    def _baseline(db: sqlite3.Connection) -> int:
        """A file from before migrations were numbered: the first (all ``IF NOT EXISTS``) adds
        what it lacks; the columns it has tell which of the later ones it has had already."""
        for statement in migrations()[0].statements:
            db.execute(statement)
        columns = _columns(db)
        version = 1
        for column, number in _LEGACY_COLUMNS:
            if column not in columns:
                break
            version = number
        return version

    async def open(self) -> None:
        """Open the file again after :meth:`close` (the app is served again); else nothing."""
        if self._closed:
            await to_thread.run_sync(self._reopen)

    def _reopen(self) -> None:
        with self._writer_lock:
            if self._closed:
                self._open()

    async def close(self) -> None:
        """Commit what was already accepted, stop the writer and close the file."""
        await to_thread.run_sync(self._close)

    def _close(self) -> None:
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

    async def _write(
        self,
        op: Callable[[sqlite3.Connection], T],
        *,
        durable: bool,
        new: NewSubmission | None = None,
    ) -> T:
        # The writer thread answers through the future: no worker thread waits on it. A caller
        # cancelled before its write's turn writes nothing (see _commit).
        return await asyncio.wrap_future(self._submit(op, durable=durable, new=new))

    async def _execute(self, sql: str, params: Sequence[Any], *, durable: bool) -> int:
        """One statement in the writer; answers the number of rows it changed."""

        def op(db: sqlite3.Connection) -> int:
            return db.execute(sql, params).rowcount

        return await self._write(op, durable=durable)

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
            # Bookkeeping alone (leases, progress) skips the fsync: a power cut loses at most
            # the latest of it, which delivery redoes. The switch is one cheap PRAGMA, made only
            # when a batch differs from the last.
            if durable != self._synchronous_full:
                db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._synchronous_full = durable
            # Three ways to commit, cheapest first: new submissions alone (the usual batch
            # under load) in one statement; any batch between BEGIN and COMMIT; and, only when
            # one write of that batch failed, each write again in a savepoint of its own, so
            # only the failing one fails.
            adds = [write.new for write in live if write.new is not None]
            outcomes = _add_all(db, adds) if len(adds) == len(live) else _run_together(db, live)
            if outcomes is None:
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

    # -- reads -----------------------------------------------------------------------------

    def _read_now(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._read_lock:
            return self._reader.execute(sql, params).fetchall()

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await to_thread.run_sync(self._read_now, sql, params)

    # -- submissions -----------------------------------------------------------------------

    async def add(self, new: NewSubmission) -> tuple[Submission, bool]:
        """Store a submission; answers (row, True), or (the earlier row, False) for a reused key.

        Returns once the row is durably on disk.
        """
        return await self._write(functools.partial(_add, new), durable=True, new=new)

    async def get(self, submission_id: str) -> Submission | None:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM submissions WHERE id = ?", (submission_id,)
        )
        return Submission.from_row(rows[0]) if rows else None

    async def for_customer(self, customer: str, *, limit: int = 100) -> list[Submission]:
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM submissions WHERE customer = ?"
            " ORDER BY created_at DESC LIMIT ?",
            (customer, limit),
        )
        return [Submission.from_row(row) for row in rows]

    async def document(self, submission_id: str) -> bytes:
        return await to_thread.run_sync(self._document, submission_id)

    def _document(self, submission_id: str) -> bytes:
        rows = self._read_now(
            "SELECT content FROM documents WHERE submission_id = ?", (submission_id,)
        )
        if rows:
            return bytes(rows[0]["content"])
        if self._legacy_document_column:
            # A row an older certwidget added to this file after it was upgraded here (several
            # processes on one file, upgraded one at a time): its document is still inline.
            rows = self._read_now("SELECT document FROM submissions WHERE id = ?", (submission_id,))
            if rows and rows[0]["document"]:
                return bytes(rows[0]["document"])
        return b""

    async def set_document(
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

        return await self._write(op, durable=False)

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[Submission]:
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
            leases = [(row, new_lease_owner()) for row in rows]
            db.executemany(
                "UPDATE submissions SET lease_until = ?, lease_owner = ? WHERE id = ?",
                [(now + lease_seconds, owner, row["id"]) for row, owner in leases],
            )
            return [Submission.from_row(row, owner) for row, owner in leases]

        return await self._write(op, durable=False)

    async def claim(self, submission_id: str, *, lease_seconds: float) -> Submission | None:
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
            owner = new_lease_owner()
            db.execute(
                "UPDATE submissions SET lease_until = ?, lease_owner = ? WHERE id = ?",
                (now + lease_seconds, owner, submission_id),
            )
            return Submission.from_row(row, owner)

        return await self._write(op, durable=False)

    async def renew(self, submission_id: str, *, owner: str, lease_seconds: float) -> bool:
        """Extend the lease the caller holds on a row it is delivering; answers whether it
        still held it (False: the row was claimed by someone else since, or settled)."""
        changed = await self._execute(
            f"UPDATE submissions SET lease_until = ? WHERE {_HELD}",
            (time.time() + lease_seconds, submission_id, owner),
            durable=False,
        )
        return changed == 1

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending submission is due (0 if overdue), None if none."""
        rows = await self._read(
            "SELECT MIN(MAX(next_attempt_at, lease_until)) AS due FROM submissions"
            " WHERE state = 'pending'"
        )
        if not rows or rows[0]["due"] is None:
            return None
        return max(0.0, float(rows[0]["due"]) - time.time())

    async def save_progress(
        self, submission_id: str, progress: dict[str, Any], *, owner: str
    ) -> bool:
        """Record how far delivery got (not durable on its own: every step is idempotent), if
        the caller still holds the lease; answers whether it did."""
        changed = await self._execute(
            f"UPDATE submissions SET progress = ? WHERE {_HELD}",
            (json.dumps(progress), submission_id, owner),
            durable=False,
        )
        return changed == 1

    async def mark_delivered(self, submission_id: str, progress: dict[str, Any]) -> bool:
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

        return await self._write(op, durable=True)

    async def mark_retry(
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
        changed = await self._execute(
            "UPDATE submissions SET attempts = attempts + 1,"
            " unexpected_errors = unexpected_errors + ?, last_error = ?,"
            f" next_attempt_at = ?, lease_until = 0, lease_owner = '' WHERE {_HELD}",
            (int(unexpected), storable_error(error), time.time() + delay, submission_id, owner),
            durable=False,
        )
        return changed == 1

    async def release(self, leases: Mapping[str, str]) -> int:
        """Give up leases without recording an attempt (a graceful shutdown mid-delivery).

        ``leases`` maps each submission id to the token of the caller's lease on it; a lease
        someone else has claimed since stays theirs. Answers how many were given up.
        """
        items = list(leases.items())

        def op(db: sqlite3.Connection) -> int:
            return db.executemany(
                f"UPDATE submissions SET lease_until = 0, lease_owner = '' WHERE {_HELD}", items
            ).rowcount

        return await self._write(op, durable=False)

    async def requeue(self, submission_id: str) -> bool:
        """Send a failed submission again (after fixing what the provider refused).

        A shop's decision, not an attempt's: it needs no lease.
        """
        changed = await self._execute(
            "UPDATE submissions SET state = 'pending', next_attempt_at = 0, lease_until = 0,"
            " lease_owner = '', unexpected_errors = 0 WHERE id = ? AND state = 'failed'",
            (submission_id,),
            durable=True,
        )
        return changed == 1

    async def retry(self, submission_id: str) -> RetryResult:
        """A merchant's retry (see :meth:`Outbox.retry`): a failed or stuck row is due now.

        Read and changed in one write transaction, so an attempt claiming the row meanwhile
        is either seen (``leased``) or finds the row due again.
        """

        def op(db: sqlite3.Connection) -> RetryResult:
            now = time.time()
            row = db.execute(
                "SELECT state, attempts, lease_until FROM submissions WHERE id = ?",
                (submission_id,),
            ).fetchone()
            if row is None:
                return "not_found"
            if row["state"] == "delivered":
                return "delivered"
            if row["state"] == "pending":
                if row["lease_until"] > now:
                    return "leased"
                if not row["attempts"] and not row["lease_until"]:
                    return "queued"
            db.execute(
                "UPDATE submissions SET state = 'pending', next_attempt_at = 0, lease_until = 0,"
                " lease_owner = '', unexpected_errors = 0 WHERE id = ?",
                (submission_id,),
            )
            return "retried"

        return await self._write(op, durable=True)

    async def list_submissions(
        self,
        *,
        state: SubmissionStatus | None = None,
        customer: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[Submission]]:
        where, params = _filters(state, customer, since, until)
        return await to_thread.run_sync(
            self._list_now, where, params, max(0, limit), max(0, offset)
        )

    def _list_now(
        self, where: str, params: list[Any], limit: int, offset: int
    ) -> tuple[int, list[Submission]]:
        with self._read_lock:
            db = self._reader
            # One snapshot for the count and the page: a commit between them cannot make the
            # page disagree with the total.
            db.execute("BEGIN")
            try:
                total = int(
                    db.execute(
                        f"SELECT COUNT(*) FROM submissions WHERE {where}", params
                    ).fetchone()[0]
                )
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM submissions WHERE {where}"
                    " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                    [*params, limit, offset],
                ).fetchall()
            finally:
                db.execute("COMMIT")
        return total, [Submission.from_row(row) for row in rows]

    async def mark_failed(
        self, submission_id: str, *, owner: str, error: str, unexpected: bool = False
    ) -> bool:
        """A delivery no retry can cure (the provider's refusal, or an unexpected error seen too
        often): kept, never retried until :meth:`requeue`, visible to the shop; if the
        caller still holds the lease. Answers whether it did. ``unexpected`` counts the attempt
        in ``unexpected_errors``."""
        changed = await self._execute(
            "UPDATE submissions SET state = 'failed', attempts = attempts + 1,"
            " unexpected_errors = unexpected_errors + ?,"
            f" last_error = ?, lease_until = 0, lease_owner = '' WHERE {_HELD}",
            (int(unexpected), storable_error(error), submission_id, owner),
            durable=True,
        )
        return changed == 1

    async def counts(self) -> dict[str, int]:
        rows = await self._read("SELECT state, COUNT(*) AS n FROM submissions GROUP BY state")
        return {row["state"]: int(row["n"]) for row in rows}

    async def ids(self, states: Sequence[SubmissionState] = ALL_STATES) -> list[str]:
        marks = ",".join("?" for _ in states)
        rows = await self._read(
            f"SELECT id FROM submissions WHERE state IN ({marks})", tuple(states)
        )
        return [row["id"] for row in rows]


# The stored conditions each status stands for (see base.SubmissionStatus).
_STATUS_SQL: dict[str, str] = {
    "received": "state = 'pending' AND attempts = 0",
    "pending": "state = 'pending' AND attempts > 0",
    "delivered": "state = 'delivered'",
    "failed": "state = 'failed'",
}


def _filters(
    status: SubmissionStatus | None,
    customer: str | None,
    since: float | None,
    until: float | None,
) -> tuple[str, list[Any]]:
    """The WHERE clause (and its parameters) of :meth:`SQLiteOutbox.list_submissions`."""
    clauses = ["1"]
    params: list[Any] = []
    if status is not None:
        clauses.append(_STATUS_SQL[status])
    if customer is not None:
        clauses.append("customer = ?")
        params.append(customer)
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(since)
    if until is not None:
        clauses.append("created_at < ?")
        params.append(until)
    return " AND ".join(clauses), params


def _columns(db: sqlite3.Connection) -> set[str]:
    """The columns of ``submissions`` (none: the file has no outbox yet)."""
    return {row["name"] for row in db.execute("PRAGMA table_info(submissions)")}


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
        id=new_submission_id(),
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


def _earlier(db: sqlite3.Connection, new: NewSubmission) -> Submission:
    """The submission stored before under ``new``'s customer and idempotency key."""
    existing = db.execute(
        f"SELECT {_COLUMNS} FROM submissions WHERE customer = ? AND idempotency_key = ?",
        (new.customer, new.idempotency_key),
    ).fetchone()
    if existing is None:
        raise sqlite3.IntegrityError("the submission was neither stored nor found stored")
    return Submission.from_row(existing)
