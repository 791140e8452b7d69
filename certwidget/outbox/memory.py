"""An outbox in memory: the same contract as the SQLite one, nothing on disk.

For tests, a shop's among them::

    middleware = CertWidgetMiddleware(app, secret_key=..., outbox=MemoryOutbox())

Nothing survives the process, so it is no place for real submissions. Two instances made with
``MemoryOutbox(shared_with=other)`` share their rows, as two processes share one SQLite file.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

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


@dataclass(slots=True)
class _Row:
    submission: Submission
    next_attempt_at: float = 0.0
    lease_until: float = 0.0
    lease_owner: str = ""


@dataclass(slots=True)
class _Store:
    rows: dict[str, _Row] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    # Its callers may run on several event loops (a test's, and a served app's in a thread).
    lock: threading.Lock = field(default_factory=threading.Lock)


class MemoryOutbox:
    """The :class:`~certwidget.outbox.base.Outbox` in this process's memory."""

    def __init__(self, *, shared_with: MemoryOutbox | None = None) -> None:
        self._store: _Store = shared_with._store if shared_with is not None else _Store()
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryOutbox({len(self._store.rows)} rows)"

    async def open(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("Cannot operate on a closed outbox (open() it again).")

    def _held(self, submission_id: str, owner: str) -> _Row | None:
        """The row, if the caller still holds the lease it claimed on it (see base.py)."""
        row = self._store.rows.get(submission_id)
        if (
            row is None
            or row.submission.state != "pending"
            or not owner
            or row.lease_owner != owner
        ):
            return None
        return row

    @staticmethod
    def _copy(row: _Row, lease_owner: str = "") -> Submission:
        # Callers change what they are handed (delivery marks its copy delivered): never ours.
        return replace(
            row.submission,
            payload=copy.deepcopy(row.submission.payload),
            progress=copy.deepcopy(row.submission.progress),
            lease_owner=lease_owner,
        )

    async def add(self, new: NewSubmission) -> tuple[Submission, bool]:
        self._check_open()
        # As a JSON column would: what is not JSON fails, and what is read back is JSON's.
        payload = json.loads(json.dumps(new.payload))
        store = self._store
        with store.lock:
            existing = store.by_key.get((new.customer, new.idempotency_key))
            if existing is not None:
                return self._copy(store.rows[existing]), False
            submission = Submission(
                id=new_submission_id(),
                customer=new.customer,
                guest=new.guest,
                idempotency_key=new.idempotency_key,
                body_hash=new.body_hash,
                kind=new.kind,
                payload=payload,
                media_type=new.media_type,
                filename=new.filename,
                state="pending",
                attempts=0,
                last_error="",
                created_at=time.time(),
                delivered_at=None,
            )
            row = _Row(submission)
            store.rows[submission.id] = row
            store.by_key[(new.customer, new.idempotency_key)] = submission.id
            if new.document:
                store.documents[submission.id] = bytes(new.document)
            return self._copy(row), True

    async def get(self, submission_id: str) -> Submission | None:
        self._check_open()
        with self._store.lock:
            row = self._store.rows.get(submission_id)
            return self._copy(row) if row is not None else None

    async def for_customer(self, customer: str, *, limit: int = 100) -> list[Submission]:
        self._check_open()
        with self._store.lock:
            rows = [row for row in self._store.rows.values() if row.submission.customer == customer]
            rows.sort(key=lambda row: row.submission.created_at, reverse=True)
            return [self._copy(row) for row in rows[:limit]]

    async def document(self, submission_id: str) -> bytes:
        self._check_open()
        with self._store.lock:
            return self._store.documents.get(submission_id, b"")

    async def set_document(
        self, submission_id: str, document: bytes, *, owner: str, media_type: str, filename: str
    ) -> bool:
        self._check_open()
        with self._store.lock:
            row = self._held(submission_id, owner)
            if row is None:
                return False
            row.submission.media_type, row.submission.filename = media_type, filename
            self._store.documents[submission_id] = bytes(document)
            return True

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[Submission]:
        self._check_open()
        now = time.time()
        with self._store.lock:
            due = [
                row
                for row in self._store.rows.values()
                if row.submission.state == "pending"
                and row.next_attempt_at <= now
                and row.lease_until <= now
            ]
            due.sort(key=lambda row: (row.next_attempt_at, row.submission.created_at))
            claimed = []
            for row in due[: max(0, limit)]:
                row.lease_until, row.lease_owner = now + lease_seconds, new_lease_owner()
                claimed.append(self._copy(row, row.lease_owner))
            return claimed

    async def claim(self, submission_id: str, *, lease_seconds: float) -> Submission | None:
        self._check_open()
        now = time.time()
        with self._store.lock:
            row = self._store.rows.get(submission_id)
            if row is None or row.submission.state != "pending" or row.lease_until > now:
                return None
            row.lease_until, row.lease_owner = now + lease_seconds, new_lease_owner()
            return self._copy(row, row.lease_owner)

    async def renew(self, submission_id: str, *, owner: str, lease_seconds: float) -> bool:
        self._check_open()
        with self._store.lock:
            row = self._held(submission_id, owner)
            if row is None:
                return False
            row.lease_until = time.time() + lease_seconds
            return True

    async def next_due_in(self) -> float | None:
        self._check_open()
        with self._store.lock:
            due = [
                max(row.next_attempt_at, row.lease_until)
                for row in self._store.rows.values()
                if row.submission.state == "pending"
            ]
        return max(0.0, min(due) - time.time()) if due else None

    async def save_progress(
        self, submission_id: str, progress: dict[str, Any], *, owner: str
    ) -> bool:
        self._check_open()
        stored = json.loads(json.dumps(progress))
        with self._store.lock:
            row = self._held(submission_id, owner)
            if row is None:
                return False
            row.submission.progress = stored
            return True

    async def mark_delivered(self, submission_id: str, progress: dict[str, Any]) -> bool:
        self._check_open()
        stored = json.loads(json.dumps(progress))
        with self._store.lock:
            row = self._store.rows.get(submission_id)
            if row is None or row.submission.state != "pending":
                return False
            submission = row.submission
            submission.state, submission.progress = "delivered", stored
            submission.delivered_at, submission.last_error = time.time(), ""
            row.lease_until, row.lease_owner = 0.0, ""
            self._store.documents.pop(submission_id, None)
            return True

    async def mark_retry(
        self,
        submission_id: str,
        *,
        owner: str,
        error: str,
        delay: float,
        unexpected: bool = False,
    ) -> bool:
        self._check_open()
        with self._store.lock:
            row = self._held(submission_id, owner)
            if row is None:
                return False
            submission = row.submission
            submission.attempts += 1
            submission.unexpected_errors += int(unexpected)
            submission.last_error = storable_error(error)
            row.next_attempt_at = time.time() + delay
            row.lease_until, row.lease_owner = 0.0, ""
            return True

    async def mark_failed(
        self, submission_id: str, *, owner: str, error: str, unexpected: bool = False
    ) -> bool:
        self._check_open()
        with self._store.lock:
            row = self._held(submission_id, owner)
            if row is None:
                return False
            submission = row.submission
            submission.state = "failed"
            submission.attempts += 1
            submission.unexpected_errors += int(unexpected)
            submission.last_error = storable_error(error)
            row.lease_until, row.lease_owner = 0.0, ""
            return True

    async def release(self, leases: Mapping[str, str]) -> int:
        self._check_open()
        released = 0
        with self._store.lock:
            for submission_id, owner in leases.items():
                row = self._held(submission_id, owner)
                if row is not None:
                    row.lease_until, row.lease_owner = 0.0, ""
                    released += 1
        return released

    async def requeue(self, submission_id: str) -> bool:
        self._check_open()
        with self._store.lock:
            row = self._store.rows.get(submission_id)
            if row is None or row.submission.state != "failed":
                return False
            row.submission.state, row.submission.unexpected_errors = "pending", 0
            row.next_attempt_at = row.lease_until = 0.0
            row.lease_owner = ""
            return True

    async def retry(self, submission_id: str) -> RetryResult:
        self._check_open()
        now = time.time()
        with self._store.lock:
            row = self._store.rows.get(submission_id)
            if row is None:
                return "not_found"
            submission = row.submission
            if submission.state == "delivered":
                return "delivered"
            if submission.state == "pending":
                if row.lease_until > now:
                    return "leased"
                if not submission.attempts and not row.lease_until:
                    return "queued"
            submission.state, submission.unexpected_errors = "pending", 0
            row.next_attempt_at = row.lease_until = 0.0
            row.lease_owner = ""
            return "retried"

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
        self._check_open()
        with self._store.lock:
            rows = [
                row
                for row in self._store.rows.values()
                if (state is None or row.submission.status == state)
                and (customer is None or row.submission.customer == customer)
                and (since is None or row.submission.created_at >= since)
                and (until is None or row.submission.created_at < until)
            ]
            rows.sort(key=lambda row: (row.submission.created_at, row.submission.id), reverse=True)
            start = max(0, offset)
            return len(rows), [self._copy(row) for row in rows[start : start + max(0, limit)]]

    async def counts(self) -> dict[str, int]:
        self._check_open()
        counts: dict[str, int] = {}
        with self._store.lock:
            for row in self._store.rows.values():
                counts[row.submission.state] = counts.get(row.submission.state, 0) + 1
        return counts

    async def ids(self, states: Sequence[SubmissionState] = ALL_STATES) -> list[str]:
        self._check_open()
        with self._store.lock:
            return [
                submission_id
                for submission_id, row in self._store.rows.items()
                if row.submission.state in states
            ]
