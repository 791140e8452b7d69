"""The outbox seam: what the middleware asks of the store that keeps submissions until delivered.

Intake stores each submission with :meth:`Outbox.add` before the buyer hears "received";
delivery (:mod:`certwidget.outbox.delivery`) claims due rows under a lease, records its progress
and settles each row as delivered, to be retried, or failed. Every method is a coroutine: a
backend that must block inside (SQLite's ``sqlite3``) runs that off the event loop itself.

Backends: :class:`~certwidget.outbox.sqlite.SQLiteOutbox` (the default, one file, zero
configuration) and :class:`~certwidget.outbox.memory.MemoryOutbox` (tests). A shop may pass any
object with these methods as ``CertWidgetMiddleware(outbox=...)``; the contract it must meet is
``tests/outbox/test_outbox_contract.py``.

Leases: a claim (:meth:`Outbox.claim_due`, :meth:`Outbox.claim`) answers rows stamped with a
fresh token (``Submission.lease_owner``). Every update an attempt makes shows that token and is
refused (answers False) once someone else has claimed the row since, or it was settled, so an
attempt that outlived its lease settles nothing. A lease that ran out unclaimed is still its
owner's: nobody else is working on the row.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

SubmissionState = Literal["pending", "delivered", "failed"]
SubmissionKind = Literal["filled", "upload"]
ALL_STATES: tuple[SubmissionState, ...] = ("pending", "delivered", "failed")
#: Where a submission stands, as a merchant reads it: ``received`` (stored, no attempt has
#: failed yet: it is waiting for, or in, its first delivery), ``pending`` (an attempt failed for
#: now and another is scheduled), ``delivered``, ``failed`` (given up until someone retries it).
#: The first two are both the stored state ``pending``, told apart by ``attempts``.
SubmissionStatus = Literal["received", "pending", "delivered", "failed"]
ALL_STATUSES: tuple[SubmissionStatus, ...] = ("received", "pending", "delivered", "failed")
#: What :meth:`Outbox.retry` did: ``retried`` (the row is due now), or why it refused:
#: ``not_found``; ``delivered`` (nothing to retry); ``leased`` (an attempt holds it right now);
#: ``queued`` (received and due already, no attempt has failed: nothing to hurry).
RetryResult = Literal["retried", "not_found", "delivered", "leased", "queued"]
#: How much of an error message a row keeps.
MAX_ERROR_CHARS = 500


@dataclass(frozen=True, slots=True)
class NewSubmission:
    """What intake stores: the buyer's submission, keyed by customer and idempotency key."""

    customer: str
    guest: bool
    idempotency_key: str
    #: The hash of the body the key came with: a reused key with another body is the caller's
    #: to refuse (intake answers 409), so the stored row keeps it.
    body_hash: str
    kind: SubmissionKind
    #: JSON-serialisable; a backend stores it as JSON and answers what JSON gives back.
    payload: dict[str, Any]
    document: bytes
    media_type: str
    filename: str


class Columns(Protocol):
    """A database row read by column name (``sqlite3.Row``, psycopg's ``dict_row``)."""

    def __getitem__(self, name: str, /) -> Any: ...


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

    @classmethod
    def from_row(cls, row: Columns, lease_owner: str = "") -> Submission:
        """A row of a SQL backend's submissions table, its JSON columns decoded."""
        return cls(
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

    @property
    def zones(self) -> list[str]:
        return list(self.payload.get("zones", []))

    @property
    def status(self) -> SubmissionStatus:
        """Where the submission stands, for a merchant (see :data:`SubmissionStatus`)."""
        if self.state == "pending":
            return "pending" if self.attempts else "received"
        return self.state


@runtime_checkable
class Outbox(Protocol):
    """A durable store of submissions with delivery leases.

    ``add`` answers only once the submission is durable (it survives a crash of this process);
    the other writes say in their documentation what they promise.
    """

    async def open(self) -> None:
        """Make the store ready (create or upgrade its schema); idempotent. Called again after
        :meth:`close` when the app is served again."""

    async def close(self) -> None:
        """Finish the writes already accepted, then release the store's resources."""

    async def add(self, new: NewSubmission) -> tuple[Submission, bool]:
        """Store a submission; answers (row, True), or (the earlier row, False) for a key this
        customer used before (whatever its body: comparing ``body_hash`` is the caller's)."""

    async def get(self, submission_id: str) -> Submission | None: ...

    async def for_customer(self, customer: str, *, limit: int = 100) -> list[Submission]:
        """The customer's submissions, newest first."""

    async def document(self, submission_id: str) -> bytes:
        """The stored document (an upload, a signature, or the rendered PDF); b"" if none (a
        delivered submission keeps none)."""

    async def set_document(
        self, submission_id: str, document: bytes, *, owner: str, media_type: str, filename: str
    ) -> bool:
        """Replace the document of a row the caller holds the lease on; answers whether it did."""

    async def claim_due(self, *, limit: int, lease_seconds: float) -> list[Submission]:
        """Lease up to ``limit`` pending rows whose next attempt is due, oldest schedule first."""

    async def claim(self, submission_id: str, *, lease_seconds: float) -> Submission | None:
        """Lease one pending row now, whatever its schedule; None if leased or settled."""

    async def renew(self, submission_id: str, *, owner: str, lease_seconds: float) -> bool:
        """Extend a lease the caller still holds; answers whether it did."""

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending row is due (0 if overdue), None if none is."""

    async def save_progress(
        self, submission_id: str, progress: dict[str, Any], *, owner: str
    ) -> bool:
        """Record how far delivery got, if the caller still holds the lease."""

    async def mark_delivered(self, submission_id: str, progress: dict[str, Any]) -> bool:
        """Settle a pending row as delivered (no lease needed) and drop its document; False if
        it was settled already, which it leaves as it was."""

    async def mark_retry(
        self,
        submission_id: str,
        *,
        owner: str,
        error: str,
        delay: float,
        unexpected: bool = False,
    ) -> bool:
        """Count a failed attempt and schedule the next in ``delay`` seconds, releasing the
        lease; ``unexpected`` also counts it in ``unexpected_errors``."""

    async def mark_failed(
        self, submission_id: str, *, owner: str, error: str, unexpected: bool = False
    ) -> bool:
        """Settle the row as failed (kept, never retried until :meth:`requeue`)."""

    async def release(self, leases: Mapping[str, str]) -> int:
        """Give up leases ({id: token}) without counting an attempt; answers how many."""

    async def requeue(self, submission_id: str) -> bool:
        """Send a failed row again (no lease needed), its unexpected-error budget renewed."""

    async def retry(self, submission_id: str) -> RetryResult:
        """A merchant's retry: a failed row, or a stuck one (pending after failed attempts and
        waiting for its next, or leased by an attempt whose lease ran out), is due again now,
        its unexpected-error budget renewed, as :meth:`requeue` does. The row keeps its id,
        idempotency key and progress, so delivery resumes and never makes a second certificate.
        Refuses (and changes nothing for) a delivered row, one an attempt holds a live lease
        on, and a received row still waiting for its first attempt."""

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
        """(how many rows match, up to ``limit`` of them after ``offset``), newest first (ties
        by id, so pages do not overlap). ``state`` filters on :attr:`Submission.status`;
        ``since`` (inclusive) and ``until`` (exclusive) on ``created_at``, in epoch seconds."""

    async def counts(self) -> dict[str, int]:
        """How many rows are in each state (states with none are left out)."""

    async def ids(self, states: Sequence[SubmissionState] = ALL_STATES) -> list[str]: ...


def storable_error(error: str) -> str:
    """``error`` cut to :data:`MAX_ERROR_CHARS`, with any lone surrogate escaped: an
    exception's message may quote the very text that failed to encode, and a store that cannot
    keep it would leave the row leased."""
    return error[:MAX_ERROR_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")


def new_lease_owner() -> str:
    """A fresh lease token.

    One per claim, not one per process: two attempts at one row in one process (the background
    loop's, and ``deliver_now``'s after the first outlived its lease) must not pass for each
    other either.
    """
    return uuid.uuid4().hex


def new_submission_id() -> str:
    return uuid.uuid4().hex
