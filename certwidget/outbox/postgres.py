"""The outbox on PostgreSQL: one store for every host of a shop behind a load balancer.

    CertWidgetMiddleware(app, ..., provider=CertCaptureProvider(...),
                         database="postgresql://certwidget:secret@db.internal:5432/shop")

Install with ``pip install 'certwidget[postgres]'``. The driver is psycopg 3 with
``psycopg_pool``: it is typed (mypy strict checks our calls), it has an async API beside the
sync one (the CLI can use the same DSN), and its pool is maintained by the driver's authors and
can check connections, which is what surviving a database restart needs.

Design, in the terms of :mod:`certwidget.outbox.base`:

- **Durability.** Every statement runs in autocommit, one transaction each (the new submission
  and its document are one statement), with ``synchronous_commit`` on: :meth:`add` answers after
  PostgreSQL has the COMMIT in its WAL on disk, so the buyer hears "received" only then.
- **Leases.** :meth:`claim_due` picks due rows with ``FOR UPDATE SKIP LOCKED`` (hosts claiming
  at once take different rows, none waits) and stamps each with a fresh token; every later
  update shows the token and is refused once another claim took the row, as with SQLite.
  Each host also holds a session advisory lock on its listening connection and stamps its
  number on the rows it leases: when a host dies, PostgreSQL drops the lock with its connection,
  and its leased rows are claimable at once rather than when the lease runs out.
- **Wake-up across hosts.** A trigger NOTIFYs ``certwidget_outbox`` when a submission is
  committed (or a failed one is sent again); every host LISTENs on its own connection and wakes
  its delivery loop. If that connection is down, or a notification is missed, the host polls
  every ``poll_seconds`` instead.
- **Migrations.** The numbered files in ``migrations/postgres/``, applied at :meth:`open` in one
  transaction under ``pg_advisory_xact_lock``, recorded in ``certwidget_schema_version``: hosts
  starting at once wait for each other, and the later ones find nothing left to do.
- **Reconnects.** A statement that fails because its connection died (the database restarted)
  has the pool check its idle connections, then runs once more on a fresh one. Every statement
  is safe to run twice: a repeated write finds its work done and answers as a late one would
  (an add answers the stored row; an update answers False, the lease gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import resources
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

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
logger = logging.getLogger("certwidget.outbox.postgres")

#: The channel the trigger notifies (see migrations/postgres/0001_initial.sql).
CHANNEL = "certwidget_outbox"
# Advisory lock keys: one (bigint) serializes migrations; hosts hold (HOST_LOCK_SPACE, number).
_MIGRATION_LOCK = 712_023_000
_HOST_LOCK_SPACE = 712_023_001
#: Seconds a startup waits for PostgreSQL before saying it cannot connect.
CONNECT_TIMEOUT = 10.0

# The database's clock, in seconds: every host compares leases and schedules against it.
_NOW = "extract(epoch FROM now())::float8"
_COLUMNS = (
    "id, customer, guest, idempotency_key, body_hash, kind, payload, media_type, filename, "
    "state, attempts, last_error, created_at, delivered_at, progress, unexpected_errors"
)
# Whether the caller still holds the lease it claimed (as in sqlite.py): the row is pending and
# no claim has taken it since. The bound token is never '' (every claim makes one).
_HELD = "id = %(id)s AND state = 'pending' AND lease_owner = %(owner)s AND lease_owner != ''"
# A lease nobody is working under any more: run out, or its host's connection is gone.
_LAPSED = f"(lease_until <= {_NOW} OR (lease_host != 0 AND NOT certwidget_host_alive(lease_host)))"


class OutboxSchemaError(RuntimeError):
    """The database's outbox schema is newer than this certwidget knows."""


class OutboxConnectionError(RuntimeError):
    """PostgreSQL could not be reached at startup; the message says where and what to check."""


@functools.cache
def migrations() -> tuple[tuple[int, str, str], ...]:
    """The numbered scripts in ``migrations/postgres/``: (number, name, SQL), in order."""
    folder = resources.files("certwidget.outbox").joinpath("migrations", "postgres")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, name = entry.name.removesuffix(".sql").partition("_")
            found.append((int(number), name, entry.read_text("utf-8")))
    found.sort()
    if [number for number, _, _ in found] != list(range(1, len(found) + 1)):
        raise OutboxSchemaError(f"the PostgreSQL migrations are not numbered 1, 2, 3...: {found}")
    return tuple(found)


def describe(dsn: str) -> str:
    """``user@host:port/dbname`` of a DSN, without its password (for messages and logs)."""
    try:
        params = pg_conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an unparsable PostgreSQL URL)"
    host = params.get("host") or "localhost"
    return f"{params.get('user') or '(default user)'}@{host}:{params.get('port') or 5432}/" + str(
        params.get("dbname") or "(default database)"
    )


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Each new pooled connection: a COMMIT must be on disk before it returns. A database whose
    default is ``synchronous_commit = off`` gets ``on`` for our sessions; a stricter setting
    (``remote_apply`` for a replica) is left as it is."""
    await conn.execute(
        "SELECT set_config('synchronous_commit', 'on', false)"
        " WHERE current_setting('synchronous_commit') = 'off'"
    )


class PostgresOutbox:
    """The :class:`~certwidget.outbox.base.Outbox` on a PostgreSQL database (``postgresql://``).

    Nothing connects until :meth:`open` (the app's startup), which fails with
    :class:`OutboxConnectionError` if the database cannot be reached.
    """

    def __init__(self, dsn: str, *, max_connections: int = 10, poll_seconds: float = 5.0) -> None:
        self.dsn = dsn
        self._max_connections = max_connections
        self._poll_seconds = poll_seconds
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wake_callbacks: list[Callable[[], None]] = []
        # This host's number while its advisory lock is held (0 while it is not).
        self._host = 0

    def __repr__(self) -> str:
        return f"PostgresOutbox({describe(self.dsn)!r})"

    def on_new_submission(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the event loop) when any host commits a submission that may be
        due now, and every ``poll_seconds`` besides. The middleware passes its delivery loop's
        ``wake``."""
        self._wake_callbacks.append(callback)

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, bring the schema up to date, start listening; idempotent."""
        if self._pool is not None:
            return
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
            )
        except psycopg.Error as exc:
            raise OutboxConnectionError(
                f"certwidget could not connect to PostgreSQL at {describe(self.dsn)}: "
                f"{str(exc).strip()}. Check that the server runs and accepts connections from "
                "this host (listen_addresses, pg_hba.conf, a firewall), and the user, password "
                "and database name in database=."
            ) from exc
        async with conn:
            await self._migrate(conn)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[DictRow]] = AsyncConnectionPool(
            self.dsn,
            min_size=1,
            max_size=self._max_connections,
            kwargs={"autocommit": True, "row_factory": dict_row},
            configure=_configure,
            open=False,
            name="certwidget-outbox",
        )
        await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        self._pool = pool
        ready = asyncio.Event()
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(ready), name="certwidget-outbox-listener"
        )
        # The host lock is taken before the first claim, so this host's leases are covered.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await ready.wait()

    async def close(self) -> None:
        """Stop listening (which releases this host's lock) and close the pool."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @staticmethod
    async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
        """The migrations the database lacks, in one transaction, one host at a time."""
        known = migrations()
        latest = known[-1][0]
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS certwidget_schema_version ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT max(version) FROM certwidget_schema_version")
            found = await cursor.fetchone()
            version = int(found[0]) if found is not None and found[0] is not None else 0
            if version > latest:
                raise OutboxSchemaError(
                    f"the outbox at {describe(conn.info.dsn)} was made by a newer certwidget "
                    f"(schema {version}; this one knows up to {latest}): upgrade certwidget"
                )
            for number, name, script in known[version:]:
                # A script is several statements (functions hold semicolons of their own):
                # sent whole, which psycopg allows for a statement without parameters.
                await conn.execute(script.encode())
                await conn.execute(
                    "INSERT INTO certwidget_schema_version (version, name) VALUES (%s, %s)",
                    (number, name),
                )
                logger.info("certwidget: applied outbox migration %04d_%s", number, name)

    async def _listen(self, ready: asyncio.Event) -> None:
        """Hold this host's lock and LISTEN on a connection of its own; reconnect when it drops.

        Wakes the delivery loop on each notification, after every (re)connection (what was
        committed meanwhile went unheard), and every ``poll_seconds`` besides.
        """
        delay = 0.1
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
                )
                self._host = await self._take_host_lock(conn)
                await conn.execute(f"LISTEN {CHANNEL}")
                ready.set()
                delay = 0.1
                self._wake()
                while True:
                    async for _ in conn.notifies(timeout=self._poll_seconds, stop_after=1):
                        pass
                    self._wake()  # a notification, or the poll: either way look for due rows
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._host = 0
                ready.set()  # the startup goes on: delivery polls meanwhile
                logger.warning(
                    "certwidget: lost the outbox's listening connection to %s (%s); "
                    "reconnecting in %.1f s",
                    describe(self.dsn),
                    str(exc).strip() or type(exc).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._poll_seconds)
            finally:
                self._host = 0
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    @staticmethod
    async def _take_host_lock(conn: psycopg.AsyncConnection[Any]) -> int:
        """A host number no live host holds, locked by this session until it ends."""
        while True:
            number = secrets.randbelow(2**31 - 2) + 1
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (_HOST_LOCK_SPACE, number)
            )
            got = await cursor.fetchone()
            if got is not None and got[0]:
                return number

    def _wake(self) -> None:
        for callback in self._wake_callbacks:
            try:
                callback()
            except Exception:
                logger.exception("certwidget: an outbox wake-up callback failed")

    # -- running statements ----------------------------------------------------------------

    async def _run(self, work: Callable[[psycopg.AsyncConnection[DictRow]], Awaitable[T]]) -> T:
        """``work`` on a pooled connection; once more on a fresh one if the first was dead."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("Cannot operate on a closed outbox (open() it again).")
        try:
            async with pool.connection() as conn:
                return await work(conn)
        except psycopg.OperationalError:
            # The database restarted (or a connection was cut): every idle connection may be
            # dead too. Check them, so the retry gets a live one, and run the work once more.
            await pool.check()
            async with pool.connection() as conn:
                return await work(conn)

    async def _rows(self, query: LiteralString, params: Mapping[str, Any]) -> list[DictRow]:
        async def work(conn: psycopg.AsyncConnection[DictRow]) -> list[DictRow]:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

        return await self._run(work)

    async def _changed(self, query: LiteralString, params: Mapping[str, Any]) -> int:
        async def work(conn: psycopg.AsyncConnection[DictRow]) -> int:
            cursor = await conn.execute(query, params)
            return cursor.rowcount

        return await self._run(work)

    # -- the Outbox protocol ---------------------------------------------------------------

    async def add(self, new: NewSubmission) -> tuple[Submission, bool]:
        payload = json.dumps(new.payload)  # TypeError for what is not JSON, before any write
        submission_id = new_submission_id()
        params = {
            "id": submission_id,
            "customer": new.customer,
            "guest": new.guest,
            "key": new.idempotency_key,
            "hash": new.body_hash,
            "kind": new.kind,
            "payload": payload,
            "media_type": new.media_type,
            "filename": new.filename,
            "document": new.document or b"",
        }
        # One statement, one transaction: the row and its document are committed together, or
        # (a key used before) neither is, and the earlier row is read back.
        rows = await self._rows(
            "WITH inserted AS ("
            " INSERT INTO certwidget_submissions (id, customer, guest, idempotency_key,"
            " body_hash, kind, payload, media_type, filename, created_at)"
            " VALUES (%(id)s, %(customer)s, %(guest)s, %(key)s, %(hash)s, %(kind)s,"
            f" %(payload)s, %(media_type)s, %(filename)s, {_NOW})"
            " ON CONFLICT (customer, idempotency_key) DO NOTHING"
            f" RETURNING {_COLUMNS}"
            "), document AS ("
            " INSERT INTO certwidget_documents (submission_id, content)"
            " SELECT id, %(document)s FROM inserted WHERE length(%(document)s) > 0"
            f") SELECT {_COLUMNS} FROM inserted",
            params,
        )
        if rows:
            return Submission.from_row(rows[0]), True
        earlier = await self._rows(
            f"SELECT {_COLUMNS} FROM certwidget_submissions"
            " WHERE customer = %(customer)s AND idempotency_key = %(key)s",
            params,
        )
        if not earlier:
            raise psycopg.IntegrityError("the submission was neither stored nor found stored")
        # A retry after the connection died mid-answer lands here too, with the row it stored:
        # durable either way, and answered as a replay.
        return Submission.from_row(earlier[0]), False

    async def get(self, submission_id: str) -> Submission | None:
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM certwidget_submissions WHERE id = %(id)s",
            {"id": submission_id},
        )
        return Submission.from_row(rows[0]) if rows else None

    async def for_customer(self, customer: str, *, limit: int = 100) -> list[Submission]:
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM certwidget_submissions WHERE customer = %(customer)s"
            " ORDER BY created_at DESC LIMIT %(limit)s",
            {"customer": customer, "limit": max(0, limit)},
        )
        return [Submission.from_row(row) for row in rows]

    async def document(self, submission_id: str) -> bytes:
        rows = await self._rows(
            "SELECT content FROM certwidget_documents WHERE submission_id = %(id)s",
            {"id": submission_id},
        )
        return bytes(rows[0]["content"]) if rows else b""

    async def set_document(
        self, submission_id: str, document: bytes, *, owner: str, media_type: str, filename: str
    ) -> bool:
        rows = await self._rows(
            "WITH held AS ("
            " UPDATE certwidget_submissions SET media_type = %(media_type)s,"
            f" filename = %(filename)s WHERE {_HELD} RETURNING id"
            "), stored AS ("
            " INSERT INTO certwidget_documents (submission_id, content)"
            " SELECT id, %(document)s FROM held"
            " ON CONFLICT (submission_id) DO UPDATE SET content = EXCLUDED.content"
            ") SELECT id FROM held",
            {
                "id": submission_id,
                "owner": owner,
                "media_type": media_type,
                "filename": filename,
                "document": bytes(document),
            },
        )
        return bool(rows)

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[Submission]:
        if limit <= 0:
            return []
        rows = await self._rows(
            "WITH due AS ("
            " SELECT id FROM certwidget_submissions"
            f" WHERE state = 'pending' AND next_attempt_at <= {_NOW} AND {_LAPSED}"
            " ORDER BY next_attempt_at, created_at LIMIT %(limit)s"
            # Hosts claiming at once skip each other's rows instead of waiting for them.
            " FOR UPDATE SKIP LOCKED"
            ") UPDATE certwidget_submissions AS s"
            f" SET lease_until = {_NOW} + %(lease)s, lease_host = %(host)s,"
            # A fresh token per row and per claim (see base.new_lease_owner).
            " lease_owner = replace(gen_random_uuid()::text, '-', '')"
            f" FROM due WHERE s.id = due.id RETURNING s.next_attempt_at, s.lease_owner,"
            f" {', '.join('s.' + column for column in _COLUMNS.split(', '))}",
            {"limit": limit, "lease": lease_seconds, "host": self._host},
        )
        # RETURNING keeps no order: oldest schedule first, as the contract says.
        rows.sort(key=lambda row: (row["next_attempt_at"], row["created_at"]))
        return [Submission.from_row(row, row["lease_owner"]) for row in rows]

    async def claim(self, submission_id: str, *, lease_seconds: float) -> Submission | None:
        owner = new_lease_owner()
        rows = await self._rows(
            "UPDATE certwidget_submissions"
            f" SET lease_until = {_NOW} + %(lease)s, lease_owner = %(owner)s,"
            " lease_host = %(host)s"
            f" WHERE id = %(id)s AND state = 'pending' AND {_LAPSED}"
            f" RETURNING {_COLUMNS}",
            {"id": submission_id, "lease": lease_seconds, "owner": owner, "host": self._host},
        )
        return Submission.from_row(rows[0], owner) if rows else None

    async def renew(self, submission_id: str, *, owner: str, lease_seconds: float) -> bool:
        changed = await self._changed(
            f"UPDATE certwidget_submissions SET lease_until = {_NOW} + %(lease)s,"
            f" lease_host = %(host)s WHERE {_HELD}",
            {"id": submission_id, "owner": owner, "lease": lease_seconds, "host": self._host},
        )
        return changed == 1

    async def next_due_in(self) -> float | None:
        rows = await self._rows(
            "SELECT min(CASE WHEN lease_host != 0 AND NOT certwidget_host_alive(lease_host)"
            " THEN next_attempt_at ELSE greatest(next_attempt_at, lease_until) END)"
            f" - {_NOW} AS due FROM certwidget_submissions WHERE state = 'pending'",
            {},
        )
        due = rows[0]["due"] if rows else None
        return None if due is None else max(0.0, float(due))

    async def save_progress(
        self, submission_id: str, progress: dict[str, Any], *, owner: str
    ) -> bool:
        changed = await self._changed(
            f"UPDATE certwidget_submissions SET progress = %(progress)s WHERE {_HELD}",
            {"id": submission_id, "owner": owner, "progress": json.dumps(progress)},
        )
        return changed == 1

    async def mark_delivered(self, submission_id: str, progress: dict[str, Any]) -> bool:
        rows = await self._rows(
            "WITH settled AS ("
            " UPDATE certwidget_submissions SET state = 'delivered', progress = %(progress)s,"
            f" delivered_at = {_NOW}, lease_until = 0, lease_owner = '', lease_host = 0,"
            " last_error = '' WHERE id = %(id)s AND state = 'pending' RETURNING id"
            # What a delivered submission no longer needs: its document (the file would
            # otherwise grow by every upload for ever).
            "), dropped AS ("
            " DELETE FROM certwidget_documents WHERE submission_id IN (SELECT id FROM settled)"
            ") SELECT id FROM settled",
            {"id": submission_id, "progress": json.dumps(progress)},
        )
        return bool(rows)

    async def mark_retry(
        self,
        submission_id: str,
        *,
        owner: str,
        error: str,
        delay: float,
        unexpected: bool = False,
    ) -> bool:
        changed = await self._changed(
            "UPDATE certwidget_submissions SET attempts = attempts + 1,"
            " unexpected_errors = unexpected_errors + %(unexpected)s, last_error = %(error)s,"
            f" next_attempt_at = {_NOW} + %(delay)s, lease_until = 0, lease_owner = '',"
            f" lease_host = 0 WHERE {_HELD}",
            {
                "id": submission_id,
                "owner": owner,
                "unexpected": int(unexpected),
                "error": storable_error(error),
                "delay": delay,
            },
        )
        return changed == 1

    async def mark_failed(
        self, submission_id: str, *, owner: str, error: str, unexpected: bool = False
    ) -> bool:
        changed = await self._changed(
            "UPDATE certwidget_submissions SET state = 'failed', attempts = attempts + 1,"
            " unexpected_errors = unexpected_errors + %(unexpected)s, last_error = %(error)s,"
            f" lease_until = 0, lease_owner = '', lease_host = 0 WHERE {_HELD}",
            {
                "id": submission_id,
                "owner": owner,
                "unexpected": int(unexpected),
                "error": storable_error(error),
            },
        )
        return changed == 1

    async def release(self, leases: Mapping[str, str]) -> int:
        if not leases:
            return 0
        ids, owners = list(leases), list(leases.values())
        # One statement for them all: a shutdown hands its leases back in one round trip.
        return await self._changed(
            "UPDATE certwidget_submissions AS s SET lease_until = 0, lease_owner = '',"
            " lease_host = 0 FROM unnest(%(ids)s::text[], %(owners)s::text[]) AS l(id, owner)"
            " WHERE s.id = l.id AND s.state = 'pending' AND s.lease_owner = l.owner"
            " AND s.lease_owner != ''",
            {"ids": ids, "owners": owners},
        )

    async def requeue(self, submission_id: str) -> bool:
        changed = await self._changed(
            "UPDATE certwidget_submissions SET state = 'pending', next_attempt_at = 0,"
            " lease_until = 0, lease_owner = '', lease_host = 0, unexpected_errors = 0"
            " WHERE id = %(id)s AND state = 'failed'",
            {"id": submission_id},
        )
        return changed == 1

    async def retry(self, submission_id: str) -> RetryResult:
        # One statement: the row is due again only if it is failed or stuck when it runs, so a
        # claim racing it either holds the row (and the retry refuses) or finds it due. The
        # NOTIFY wakes a host now; the trigger fires only for failed -> pending.
        rows = await self._rows(
            "WITH retried AS ("
            " UPDATE certwidget_submissions SET state = 'pending', next_attempt_at = 0,"
            " lease_until = 0, lease_owner = '', lease_host = 0, unexpected_errors = 0"
            " WHERE id = %(id)s AND (state = 'failed' OR (state = 'pending'"
            f" AND {_LAPSED} AND (attempts > 0 OR lease_until > 0)))"
            " RETURNING id"
            ") SELECT id, pg_notify(%(channel)s, '') FROM retried",
            {"id": submission_id, "channel": CHANNEL},
        )
        if rows:
            return "retried"
        # Why not: read after the fact, which only words the refusal.
        found = await self._rows(
            f"SELECT state, attempts, {_LAPSED} AS lapsed FROM certwidget_submissions"
            " WHERE id = %(id)s",
            {"id": submission_id},
        )
        if not found:
            return "not_found"
        if found[0]["state"] == "delivered":
            return "delivered"
        if not found[0]["lapsed"]:
            return "leased"
        return "queued"

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
        # Every filter is always in the statement, off when its parameter is NULL: one fixed
        # (LiteralString) query, no SQL assembled from input. The count rides along as a
        # window over the same snapshot; a page past the end asks for it again.
        params = {
            "status": state,
            "customer": customer,
            "since": since,
            "until": until,
            "limit": max(0, limit),
            "offset": max(0, offset),
        }
        where = (
            " WHERE (%(status)s::text IS NULL"
            " OR (%(status)s = 'received' AND state = 'pending' AND attempts = 0)"
            " OR (%(status)s = 'pending' AND state = 'pending' AND attempts > 0)"
            " OR (%(status)s IN ('delivered', 'failed') AND state = %(status)s))"
            " AND (%(customer)s::text IS NULL OR customer = %(customer)s)"
            " AND (%(since)s::float8 IS NULL OR created_at >= %(since)s)"
            " AND (%(until)s::float8 IS NULL OR created_at < %(until)s)"
        )
        rows = await self._rows(
            f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM certwidget_submissions"
            + where
            + " ORDER BY created_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            params,
        )
        if rows:
            return int(rows[0]["total"]), [Submission.from_row(row) for row in rows]
        counted = await self._rows(
            "SELECT count(*) AS total FROM certwidget_submissions" + where, params
        )
        return int(counted[0]["total"]), []

    async def counts(self) -> dict[str, int]:
        rows = await self._rows(
            "SELECT state, count(*) AS n FROM certwidget_submissions GROUP BY state", {}
        )
        return {row["state"]: int(row["n"]) for row in rows}

    async def ids(self, states: Sequence[SubmissionState] = ALL_STATES) -> list[str]:
        rows = await self._rows(
            "SELECT id FROM certwidget_submissions WHERE state = ANY(%(states)s)",
            {"states": list(states)},
        )
        return [row["id"] for row in rows]
