"""What a merchant reads of the outbox: submissions listed, shown and exported.

A small read model over the :class:`~certwidget.outbox.base.Outbox` protocol, shared by the
command line (``certwidget outbox list|show|retry|export``) and an admin page: each stored row
becomes a :class:`SubmissionView` (the buyer, states, reason, numbers, the provider's
references, dates), read through :meth:`SubmittedCertificate.from_record`, so every version of
the stored record reads the same way.

The JSON of a view (:meth:`SubmissionView.to_json`) is a documented, stable shape for scripts:
snake_case keys, dates as ISO 8601 (``2025-05-01``, times ``2025-05-01T12:00:00+00:00``, UTC),
absent values as ``null``. Keys are only ever added.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from certwidget.domain.submission import SubmittedCertificate, UnreadableRecord
from certwidget.outbox import is_postgres, outbox_for, sqlite_path
from certwidget.outbox.base import Outbox, Submission, SubmissionStatus

__all__ = [
    "DEFAULT_DATABASE",
    "EXPORT_COLUMNS",
    "OutboxUnavailable",
    "SubmissionView",
    "ZoneView",
    "describe_database",
    "export_views",
    "open_existing",
    "view_of",
]

#: The middleware's default ``database=``.
DEFAULT_DATABASE = ".certwidget/certwidget.sqlite3"
#: Rows an export reads per query.
EXPORT_PAGE = 500


class OutboxUnavailable(RuntimeError):
    """The outbox named cannot be opened: missing, not an outbox, or unreachable. The message
    says which and what to check."""


@dataclass(frozen=True, slots=True)
class ZoneView:
    """One state of a submission: what the buyer certified there and what the provider made."""

    zone: str
    exemption_number: str
    #: The form filled in for the state ("" for an upload, or a record from before forms).
    form: str
    expiration_date: dt.date | None
    #: The provider's certificate id and number for this state ("" until delivery made it).
    certificate_id: str
    certificate_number: str
    document_attached: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": self.zone,
            "exemption_number": self.exemption_number,
            "form": self.form,
            "expiration_date": _date(self.expiration_date),
            "certificate_id": self.certificate_id,
            "certificate_number": self.certificate_number,
            "document_attached": self.document_attached,
        }


@dataclass(frozen=True, slots=True)
class SubmissionView:
    """A stored submission, as a merchant or an auditor reads it."""

    id: str
    status: SubmissionStatus
    customer: str
    guest: bool
    buyer_name: str
    buyer_email: str
    kind: str
    reason: str
    zones: tuple[ZoneView, ...]
    signed_date: dt.date | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    attempts: int
    last_error: str
    #: The provider's id for the buyer ("" until delivery made or found it).
    provider_customer_id: str
    purchase_kind: str
    order_reference: str
    filename: str
    media_type: str
    idempotency_key: str
    #: Why the stored record could not be read ("" when it could): the row is still listed.
    record_error: str = ""
    #: Bytes of the document the outbox still holds (None: not looked up; 0: none kept).
    document_size: int | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        """The stable shape scripts read (see the module's notes)."""
        value: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "customer": self.customer,
            "guest": self.guest,
            "buyer_name": self.buyer_name,
            "buyer_email": self.buyer_email,
            "kind": self.kind,
            "reason": self.reason,
            "zones": [zone.to_json() for zone in self.zones],
            "signed_date": _date(self.signed_date),
            "created_at": _time(self.created_at),
            "delivered_at": _time(self.delivered_at),
            "attempts": self.attempts,
            "last_error": self.last_error,
            "provider_customer_id": self.provider_customer_id,
            "purchase_kind": self.purchase_kind,
            "order_reference": self.order_reference,
            "filename": self.filename,
            "media_type": self.media_type,
            "idempotency_key": self.idempotency_key,
            "record_error": self.record_error,
        }
        if self.document_size is not None:
            value["document_size"] = self.document_size
        return value

    def export_rows(self) -> list[dict[str, str]]:
        """The CSV rows of this submission: one per state (an auditor checks a certificate per
        state), in :data:`EXPORT_COLUMNS` order; one with an empty state if it names none."""
        common = {
            "submission_id": self.id,
            "status": self.status,
            "buyer_code": self.customer,
            "buyer_name": self.buyer_name,
            "buyer_email": self.buyer_email,
            "reason": self.reason,
            "kind": self.kind,
            "signed_date": _date(self.signed_date) or "",
            "created_at": _time(self.created_at) or "",
            "delivered_at": _time(self.delivered_at) or "",
            "attempts": str(self.attempts),
            "last_error": self.last_error,
            "provider_customer_id": self.provider_customer_id,
            "order_reference": self.order_reference,
        }
        zones = self.zones or (ZoneView("", "", "", None, "", "", False),)
        return [
            {
                **common,
                "zone": zone.zone,
                "exemption_number": zone.exemption_number,
                "form": zone.form,
                "expiration_date": _date(zone.expiration_date) or "",
                "certificate_id": zone.certificate_id,
                "certificate_number": zone.certificate_number,
            }
            for zone in zones
        ]


#: The columns of a CSV export, in order (see :meth:`SubmissionView.export_rows`).
EXPORT_COLUMNS = (
    "submission_id",
    "status",
    "buyer_code",
    "buyer_name",
    "buyer_email",
    "zone",
    "reason",
    "exemption_number",
    "form",
    "certificate_id",
    "certificate_number",
    "signed_date",
    "expiration_date",
    "created_at",
    "delivered_at",
    "attempts",
    "last_error",
    "provider_customer_id",
    "order_reference",
    "kind",
)


def view_of(submission: Submission, *, document_size: int | None = None) -> SubmissionView:
    """What ``submission`` says to a merchant, its stored record read as the domain reads it."""
    progress = submission.progress
    certificates: Mapping[str, Any] = progress.get("certificates") or {}
    numbers: Mapping[str, Any] = progress.get("numbers") or {}
    attached = set(progress.get("attached") or ())
    record_error = ""
    try:
        certificate: SubmittedCertificate | None = SubmittedCertificate.from_record(
            submission.payload
        )
    except (UnreadableRecord, KeyError, TypeError, ValueError) as exc:
        # A row from a newer certwidget, or a damaged one: still listed, with what it holds.
        certificate, record_error = None, str(exc) or type(exc).__name__
    zone_names = certificate.zones if certificate is not None else tuple(submission.zones)
    zones = tuple(
        ZoneView(
            zone=zone,
            exemption_number=certificate.number_for(zone) if certificate else "",
            form=certificate.forms.get(zone, "") if certificate else "",
            expiration_date=certificate.expiration_for(zone) if certificate else None,
            certificate_id=str(certificates.get(zone, "")),
            certificate_number=str(numbers.get(zone, "")),
            document_attached=zone in attached,
        )
        for zone in zone_names
    )
    purchaser = certificate.purchaser if certificate else None
    profile = certificate.customer if certificate else None
    return SubmissionView(
        id=submission.id,
        status=submission.status,
        customer=submission.customer,
        guest=submission.guest,
        buyer_name=(purchaser.name if purchaser else "") or (profile.name if profile else ""),
        buyer_email=(purchaser.email if purchaser else "") or (profile.email if profile else ""),
        kind=submission.kind,
        reason=certificate.reason if certificate else str(submission.payload.get("reason", "")),
        zones=zones,
        signed_date=certificate.signed_date if certificate else None,
        created_at=_utc(submission.created_at),
        delivered_at=_utc(submission.delivered_at) if submission.delivered_at else None,
        attempts=submission.attempts,
        last_error=submission.last_error,
        provider_customer_id=str(progress.get("customer_id") or ""),
        purchase_kind=certificate.purchase_kind if certificate else "",
        order_reference=certificate.order_reference if certificate else "",
        filename=submission.filename,
        media_type=submission.media_type,
        idempotency_key=submission.idempotency_key,
        record_error=record_error,
        document_size=document_size,
    )


async def export_views(
    outbox: Outbox,
    *,
    state: SubmissionStatus | None = None,
    customer: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> AsyncIterator[SubmissionView]:
    """Every matching submission, newest first, read a page at a time.

    The end of the range is fixed when the export starts (now, unless ``until`` is earlier):
    submissions arriving meanwhile would shift the pages and repeat a row.
    """
    now = dt.datetime.now(dt.UTC).timestamp()
    end = now if until is None else min(until, now)
    offset = 0
    while True:
        _, page = await outbox.list_submissions(
            state=state,
            customer=customer,
            since=since,
            until=end,
            limit=EXPORT_PAGE,
            offset=offset,
        )
        for submission in page:
            yield view_of(submission)
        if len(page) < EXPORT_PAGE:
            return
        offset += len(page)


def describe_database(database: str | os.PathLike[str]) -> str:
    """``database`` for a message: a PostgreSQL URL without its password."""
    if is_postgres(database):
        from certwidget.outbox.postgres import describe

        return "postgresql://" + describe(str(database))
    return str(database)


async def open_existing(database: str | os.PathLike[str]) -> Outbox:
    """Open the outbox ``database`` names (as the middleware's ``database=``), which must exist
    already: a merchant's command that mistyped a path must not leave an empty outbox there,
    nor add outbox tables to some other database.

    Raises :class:`OutboxUnavailable` (missing, not an outbox, unreachable) and ``ValueError``
    (a URL of a kind ``database=`` does not take).
    """
    if is_postgres(database):
        await _check_postgres(str(database))
    else:
        _check_sqlite(database)
    # OutboxSchemaError (a file or database from a newer certwidget) and the connection errors
    # are RuntimeErrors whose messages already say what to do.
    try:
        outbox = outbox_for(database)  # SQLite opens (and brings its schema up to date) here
    except (sqlite3.Error, RuntimeError, OSError) as exc:
        raise OutboxUnavailable(f"cannot open the outbox {database}: {exc}") from exc
    try:
        await outbox.open()
    except (sqlite3.Error, RuntimeError, OSError) as exc:
        await outbox.close()
        raise OutboxUnavailable(str(exc)) from exc
    return outbox


def _check_sqlite(database: str | os.PathLike[str]) -> None:
    path = sqlite_path(database)
    if not path.is_file():
        raise OutboxUnavailable(
            f"no outbox at {path}: the file does not exist. Pass the path the middleware's "
            "database= uses (--database PATH, or CERTWIDGET_DATABASE), from the directory the "
            "shop runs in if it is relative."
        )
    try:
        # Read-only: looking must not change the file.
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'submissions'"
            ).fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise OutboxUnavailable(f"{path} cannot be read as SQLite: {exc}") from exc
    if found is None:
        raise OutboxUnavailable(
            f"{path} is a SQLite file but not a certwidget outbox (it has no submissions "
            "table): pass the file the middleware's database= names."
        )


async def _check_postgres(dsn: str) -> None:
    try:
        import psycopg
    except ImportError as exc:
        raise OutboxUnavailable(
            "a postgresql:// database needs psycopg: pip install 'certwidget[postgres]'"
        ) from exc
    from certwidget.outbox.postgres import CONNECT_TIMEOUT, describe

    try:
        conn = await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT)
        )
    except psycopg.Error as exc:
        raise OutboxUnavailable(
            f"cannot connect to PostgreSQL at {describe(dsn)}: {str(exc).strip()}\n"
            "Check that the server runs and accepts connections from here, and the user, "
            "password and database name in the URL."
        ) from exc
    async with conn:
        cursor = await conn.execute("SELECT to_regclass('certwidget_submissions') IS NOT NULL")
        found = await cursor.fetchone()
    if not found or not found[0]:
        raise OutboxUnavailable(
            f"the database {describe(dsn)} holds no certwidget outbox (no "
            "certwidget_submissions table): pass the URL the middleware's database= uses."
        )


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).replace(microsecond=0)


def _date(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
