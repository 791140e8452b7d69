"""The durable outbox: every acknowledged submission is on disk before the buyer hears "received".

One SQLite file (WAL, ``synchronous=FULL`` so a committed row survives power loss). Each row keeps
what the buyer sent, the document to attach, and how far delivery to the provider has got, so a
retry after a crash resumes where it stopped instead of starting over. Several processes may share
the file: a delivery lease stops two of them from working on one row at once.

    outbox = Outbox("certwidget.sqlite3")
    row, created = outbox.add(new_submission)
    for row in outbox.claim_due(limit=10, lease_seconds=60): ...
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SubmissionState = Literal["pending", "delivered", "failed"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    guest INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    document BLOB,
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
CREATE INDEX IF NOT EXISTS submissions_due ON submissions (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS submissions_customer ON submissions (customer, created_at);
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

    @property
    def zones(self) -> list[str]:
        return list(self.payload.get("zones", []))


_COLUMNS = (
    "id, customer, guest, idempotency_key, body_hash, kind, payload, media_type, filename, "
    "state, attempts, last_error, created_at, delivered_at, progress"
)


def _row(row: sqlite3.Row) -> Submission:
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
    )


class Outbox:
    """SQLite-backed store of submissions; all methods are blocking (run them in a thread)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we answer the buyer; WAL keeps that cheap.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, new: NewSubmission) -> tuple[Submission, bool]:
        """Store a submission; answers (row, True), or (the earlier row, False) for a reused key."""
        with self._transaction() as db:
            existing = db.execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE customer = ? AND idempotency_key = ?",
                (new.customer, new.idempotency_key),
            ).fetchone()
            if existing is not None:
                return _row(existing), False
            submission_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind,"
                " payload, document, media_type, filename, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    submission_id,
                    new.customer,
                    int(new.guest),
                    new.idempotency_key,
                    new.body_hash,
                    new.kind,
                    json.dumps(new.payload),
                    new.document,
                    new.media_type,
                    new.filename,
                    time.time(),
                ),
            )
            row = db.execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE id = ?", (submission_id,)
            ).fetchone()
            return _row(row), True

    def get(self, submission_id: str) -> Submission | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE id = ?", (submission_id,)
            ).fetchone()
        return _row(row) if row is not None else None

    def for_customer(self, customer: str, *, limit: int = 100) -> list[Submission]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE customer = ?"
                " ORDER BY created_at DESC LIMIT ?",
                (customer, limit),
            ).fetchall()
        return [_row(row) for row in rows]

    def document(self, submission_id: str) -> bytes:
        with self._lock:
            row = self._db.execute(
                "SELECT document FROM submissions WHERE id = ?", (submission_id,)
            ).fetchone()
        return bytes(row["document"]) if row is not None and row["document"] else b""

    def set_document(
        self, submission_id: str, document: bytes, *, media_type: str, filename: str
    ) -> None:
        """Replace the stored document (the rendered PDF of a filled-in certificate)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET document = ?, media_type = ?, filename = ? WHERE id = ?",
                (document, media_type, filename, submission_id),
            )

    def claim_due(self, *, limit: int, lease_seconds: float) -> list[Submission]:
        """Lease up to ``limit`` pending submissions whose next attempt is due."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE state = 'pending'"
                " AND next_attempt_at <= ? AND lease_until <= ?"
                " ORDER BY next_attempt_at, created_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE submissions SET lease_until = ? WHERE id = ?",
                [(now + lease_seconds, row["id"]) for row in rows],
            )
        return [_row(row) for row in rows]

    def claim(self, submission_id: str, *, lease_seconds: float) -> Submission | None:
        """Lease one pending submission now, whatever its schedule; None if taken or done."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM submissions WHERE id = ? AND state = 'pending'"
                " AND lease_until <= ?",
                (submission_id, now),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE submissions SET lease_until = ? WHERE id = ?",
                (now + lease_seconds, submission_id),
            )
        return _row(row)

    def renew(self, submission_id: str, *, lease_seconds: float) -> None:
        """Extend the lease of a row this process is delivering."""
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET lease_until = ? WHERE id = ? AND state = 'pending'",
                (time.time() + lease_seconds, submission_id),
            )

    def next_due_in(self) -> float | None:
        """Seconds until the earliest pending submission is due (0 if overdue), None if none."""
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(MAX(next_attempt_at, lease_until)) AS due FROM submissions"
                " WHERE state = 'pending'"
            ).fetchone()
        if row is None or row["due"] is None:
            return None
        return max(0.0, float(row["due"]) - time.time())

    def save_progress(self, submission_id: str, progress: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET progress = ? WHERE id = ?",
                (json.dumps(progress), submission_id),
            )

    def mark_delivered(self, submission_id: str, progress: dict[str, Any]) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET state = 'delivered', progress = ?, delivered_at = ?,"
                " lease_until = 0, last_error = '' WHERE id = ?",
                (json.dumps(progress), time.time(), submission_id),
            )

    def mark_retry(self, submission_id: str, *, error: str, delay: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ?, lease_until = 0 WHERE id = ?",
                (error[:500], time.time() + delay, submission_id),
            )

    def release(self, submission_ids: Sequence[str]) -> None:
        """Give up leases without recording an attempt (a graceful shutdown mid-delivery)."""
        with self._transaction() as db:
            db.executemany(
                "UPDATE submissions SET lease_until = 0 WHERE id = ? AND state = 'pending'",
                [(submission_id,) for submission_id in submission_ids],
            )

    def requeue(self, submission_id: str) -> bool:
        """Send a failed submission again (after fixing what the provider refused)."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE submissions SET state = 'pending', next_attempt_at = 0, lease_until = 0"
                " WHERE id = ? AND state = 'failed'",
                (submission_id,),
            )
            return cursor.rowcount == 1

    def mark_failed(self, submission_id: str, *, error: str) -> None:
        """A permanent refusal by the provider: kept, never retried, visible to the shop."""
        with self._transaction() as db:
            db.execute(
                "UPDATE submissions SET state = 'failed', attempts = attempts + 1,"
                " last_error = ?, lease_until = 0 WHERE id = ?",
                (error[:500], submission_id),
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT state, COUNT(*) AS n FROM submissions GROUP BY state"
            ).fetchall()
        return {row["state"]: int(row["n"]) for row in rows}

    def ids(
        self, states: Sequence[SubmissionState] = ("pending", "delivered", "failed")
    ) -> list[str]:
        marks = ",".join("?" for _ in states)
        with self._lock:
            rows = self._db.execute(
                f"SELECT id FROM submissions WHERE state IN ({marks})",
                tuple(states),
            ).fetchall()
        return [row["id"] for row in rows]
