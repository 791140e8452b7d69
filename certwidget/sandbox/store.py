"""The sandbox's SQLite store: customers, certificates, attachments, tokens, idempotency keys,
and the Commenda dialect's uploaded files.

One connection in WAL mode, shared by threads behind a lock: the sandbox is a test double and a
demo server, so one writer at a time is plenty, and WAL lets another process (a second sandbox
on the same file, the ``sqlite3`` shell) read while it writes. Every method is blocking; the HTTP
layer calls them in a worker thread so the event loop never waits on the disk.

Records come back already shaped as the CertCapture API shows them (camelCase keys, string ids),
so the endpoints only decide *who* may see *what*.

    >>> store = SandboxStore(":memory:")
    >>> customer = store.create_customer({"customerCode": "C-1", "name": "Acme"})
    >>> customer["id"], customer["customerCode"]
    ('1', 'C-1')
    >>> store.close()
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from certwidget.sandbox.errors import ApiError

#: The customer fields besides ``customerCode``, named as the API names them.
CUSTOMER_FIELDS = (
    "name",
    "line1",
    "city",
    "region",
    "postalCode",
    "country",
    "emailAddress",
    "phoneNumber",
)

#: The attribute list every sandbox starts with (CertCapture ships a similar system list).
SEED_ATTRIBUTES = (
    (1, "Resale", "Purchaser resells the goods in the regular course of business", True),
    (2, "Manufacturing", "Goods become a component of a product manufactured for sale", True),
    (3, "Direct pay", "Purchaser holds a direct pay permit and remits the tax itself", True),
    (4, "Agricultural production", "Goods are used directly in farming or ranching", True),
    (5, "Nonprofit organization", "Purchaser is a qualifying charitable organization", True),
    (6, "Government", "Purchaser is a federal, state or local government agency", True),
)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS customers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customerCode TEXT NOT NULL UNIQUE,
    {", ".join(f'"{name}" TEXT' for name in CUSTOMER_FIELDS)},
    createdDate TEXT NOT NULL,
    modifiedDate TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER REFERENCES customers(id),
    status TEXT NOT NULL,
    exemptionNumber TEXT,
    exemptionReason TEXT NOT NULL,
    exposureZone TEXT NOT NULL,
    signedDate TEXT,
    expirationDate TEXT,
    exemptPercentage REAL NOT NULL,
    attributes TEXT NOT NULL,
    createdDate TEXT NOT NULL,
    modifiedDate TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_by_customer ON certificates(customer_id);
CREATE TABLE IF NOT EXISTS attachments (
    certificate_id INTEGER PRIMARY KEY REFERENCES certificates(id) ON DELETE CASCADE,
    media_type TEXT NOT NULL,
    filename TEXT NOT NULL,
    content BLOB NOT NULL,
    uploaded TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    expires TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    operation TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (scope, operation, key)
);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    filename TEXT NOT NULL,
    content BLOB NOT NULL,
    uploaded TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS certificate_files (
    certificate_id INTEGER PRIMARY KEY REFERENCES certificates(id) ON DELETE CASCADE,
    file_id TEXT NOT NULL REFERENCES files(id)
);
CREATE TABLE IF NOT EXISTS attributes (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    isSystemCode INTEGER NOT NULL
);
"""

# A certificate past its expiration date reads as Expired whatever was stored, unless it was
# revoked: computed in SQL so the status filter and the page agree.
_EFFECTIVE_STATUS = (
    "CASE WHEN c.status != 'Revoked' AND c.expirationDate IS NOT NULL"
    " AND c.expirationDate < :today THEN 'Expired' ELSE c.status END"
)

# The SQL below is composed from this module's constants only (never from client input, which
# is always bound as a parameter), hence the S608 exemptions.
_CERTIFICATE_SELECT = f"""
SELECT c.*, {_EFFECTIVE_STATUS} AS effective_status,
       u.id AS u_id, u.customerCode AS u_customerCode,
       {", ".join(f'u."{name}" AS "u_{name}"' for name in CUSTOMER_FIELDS)}
FROM certificates AS c LEFT JOIN customers AS u ON u.id = c.customer_id
"""  # noqa: S608
_CUSTOMER_COLUMNS = ", ".join(f'"{name}"' for name in CUSTOMER_FIELDS)
_CUSTOMER_ASSIGNMENTS = ", ".join(f'"{name}" = ?' for name in CUSTOMER_FIELDS)
_INSERT_CUSTOMER = (
    f"INSERT INTO customers (customerCode, {_CUSTOMER_COLUMNS}, createdDate, modifiedDate) "  # noqa: S608
    f"VALUES (?, {', '.join('?' * len(CUSTOMER_FIELDS))}, ?, ?)"
)
_UPDATE_CUSTOMER = (
    f"UPDATE customers SET customerCode = ?, {_CUSTOMER_ASSIGNMENTS}, "  # noqa: S608
    "modifiedDate = ? WHERE id = ?"
)

TokenKind = Literal["full", "ecommerce"]
#: How a reference names a customer: its id (what the API assigned) or its customerCode.
CustomerKey = Literal["id", "customerCode"]

#: The certificate columns the Commenda dialect's PATCH may set.
_PATCHABLE = frozenset({"status", "expirationDate"})


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso_datetime(moment: dt.datetime) -> str:
    """An RFC 3339 UTC timestamp, as the API shows ``createdDate`` and ``expiresAt``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row_id(ref: str) -> int | None:
    """The integer row id in a path segment, or None when it cannot be one."""
    # isascii: str.isdigit() also accepts digits such as "²" that int() rejects.
    if ref.isascii() and ref.isdigit() and len(ref) < 19:
        return int(ref)
    return None


def _digest(token: str) -> str:
    # Only a digest is stored, so a copied database file does not hand out live tokens.
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a Bearer token stands for: full rights of a user, or one customer's widget."""

    kind: TokenKind
    #: The username for a full token, the customer's id for an ecommerce token.
    subject: str
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An ``Idempotency-Key`` in the scope of the credentials that sent it."""

    scope: str
    key: str
    #: A digest of the request body: the same key with another body is a client bug.
    fingerprint: str


@dataclass(frozen=True, slots=True)
class CertificateFields:
    """A checked certificate body. On update, ``None`` customer or status keeps the stored one."""

    exemption_reason: str
    exposure_zone: str
    exemption_number: str | None = None
    signed_date: dt.date | None = None
    expiration_date: dt.date | None = None
    exempt_percentage: float = 100.0
    customer_id: int | None = None
    attributes: list[dict[str, Any]] = field(default_factory=list)
    status: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    content: bytes
    media_type: str
    filename: str


class SandboxStore:
    """The sandbox's data on one SQLite file (or ``":memory:"``); safe to share across threads."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        #: Replaceable so tests can move time forward (token expiry, Expired certificates).
        self.clock = clock
        self._lock = threading.RLock()
        # isolation_level=None: transactions are opened explicitly (BEGIN IMMEDIATE) below.
        self._db = sqlite3.connect(
            os.fspath(path), check_same_thread=False, isolation_level=None, timeout=10
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # WAL + NORMAL survives a crash of the process; only a power cut may lose the last
        # commits, which is fine for a sandbox and keeps each write free of an fsync.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            # executescript commits on its own; the statements are idempotent.
            self._db.executescript(_SCHEMA)
        with self._write() as db:
            db.executemany("INSERT OR IGNORE INTO attributes VALUES (?, ?, ?, ?)", SEED_ATTRIBUTES)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so another process writing the same file
        # makes us wait (up to the timeout) instead of failing halfway through.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _now(self) -> str:
        return iso_datetime(self.clock())

    def _today(self) -> str:
        return self.clock().astimezone(dt.UTC).date().isoformat()

    # -- tokens --------------------------------------------------------------------------------

    def issue_token(self, kind: TokenKind, subject: str, ttl: int) -> tuple[str, dt.datetime]:
        """A new random Bearer token for ``subject``, valid for ``ttl`` seconds."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + dt.timedelta(seconds=ttl)
        with self._write() as db:
            # Expired tokens are useless; dropping them here keeps the table small.
            db.execute("DELETE FROM tokens WHERE expires <= ?", (iso_datetime(now),))
            db.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?)",
                (_digest(token), kind, subject, iso_datetime(expires)),
            )
        return token, expires.replace(microsecond=0)

    def lookup_token(self, token: str) -> TokenGrant | None:
        """What ``token`` grants, or ``None`` if it is unknown or expired."""
        with self._read() as db:
            row = db.execute(
                "SELECT kind, subject, expires FROM tokens WHERE digest = ?", (_digest(token),)
            ).fetchone()
        if row is None:
            return None
        expires = dt.datetime.fromisoformat(row["expires"])
        if expires <= self.clock():
            return None
        return TokenGrant(kind=row["kind"], subject=row["subject"], expires_at=expires)

    # -- idempotency ---------------------------------------------------------------------------

    def _replay(
        self, db: sqlite3.Connection, operation: str, idem: Idempotency | None
    ) -> dict[str, Any] | None:
        if idem is None:
            return None
        row = db.execute(
            "SELECT fingerprint, body FROM idempotency WHERE scope=? AND operation=? AND key=?",
            (idem.scope, operation, idem.key),
        ).fetchone()
        if row is None:
            return None
        if row["fingerprint"] != idem.fingerprint:
            raise ApiError(
                409,
                "idempotency_key_reused",
                f"Idempotency-Key {idem.key!r} was already used with a different request body; "
                "use a new key for a new request",
            )
        body: dict[str, Any] = json.loads(row["body"])
        return body

    def _remember(
        self,
        db: sqlite3.Connection,
        operation: str,
        idem: Idempotency | None,
        body: dict[str, Any],
    ) -> None:
        if idem is not None:
            db.execute(
                "INSERT INTO idempotency VALUES (?, ?, ?, ?, ?)",
                (idem.scope, operation, idem.key, idem.fingerprint, json.dumps(body)),
            )

    # -- customers -----------------------------------------------------------------------------

    @staticmethod
    def _customer(row: sqlite3.Row, prefix: str = "") -> dict[str, Any]:
        customer = {"id": str(row[f"{prefix}id"]), "customerCode": row[f"{prefix}customerCode"]}
        for name in CUSTOMER_FIELDS:
            if row[f"{prefix}{name}"] is not None:
                customer[name] = row[f"{prefix}{name}"]
        return customer

    def _find_customer_row(
        self, db: sqlite3.Connection, ref: str, *, by: CustomerKey
    ) -> sqlite3.Row | None:
        # One lookup per form, never a fallback from one to the other: shop customer numbers
        # are often digits, and a code "1" must never reach the customer whose id is 1.
        if by == "customerCode":
            row: sqlite3.Row | None = db.execute(
                "SELECT * FROM customers WHERE customerCode = ?", (ref,)
            ).fetchone()
            return row
        row_id = _row_id(ref)
        if row_id is None:
            return None
        found: sqlite3.Row | None = db.execute(
            "SELECT * FROM customers WHERE id = ?", (row_id,)
        ).fetchone()
        return found

    def find_customer(self, ref: str, *, by: CustomerKey = "id") -> dict[str, Any] | None:
        """The customer whose id (``by="id"``) or customerCode (``by="customerCode"``) is
        ``ref``; the two are never mixed."""
        with self._read() as db:
            row = self._find_customer_row(db, ref, by=by)
        return None if row is None else self._customer(row)

    def create_customer(
        self, fields: dict[str, str | None], *, idempotency: Idempotency | None = None
    ) -> dict[str, Any]:
        """Create a customer from ``customerCode`` and any of :data:`CUSTOMER_FIELDS`."""
        with self._write() as db:
            replayed = self._replay(db, "createCustomer", idempotency)
            if replayed is not None:
                return replayed
            code = fields["customerCode"]
            self._check_code_free(db, code, None)
            now = self._now()
            values = [fields.get(name) for name in CUSTOMER_FIELDS]
            cursor = db.execute(_INSERT_CUSTOMER, (code, *values, now, now))
            row = db.execute("SELECT * FROM customers WHERE id = ?", (cursor.lastrowid,)).fetchone()
            customer = self._customer(row)
            self._remember(db, "createCustomer", idempotency, customer)
            return customer

    @staticmethod
    def _check_code_free(db: sqlite3.Connection, code: str | None, own_id: int | None) -> None:
        row = db.execute("SELECT id FROM customers WHERE customerCode = ?", (code,)).fetchone()
        if row is not None and row["id"] != own_id:
            raise ApiError(
                409,
                "conflict",
                f"A customer with customerCode {code!r} already exists (id {row['id']}); "
                "update it with PUT /customers/{id} instead",
            )

    def update_customer(
        self, ref: str, fields: dict[str, str | None], *, by: CustomerKey = "id"
    ) -> dict[str, Any] | None:
        """Replace a customer's fields; a missing ``customerCode`` keeps the current one.

        ``ref`` is the id, or with ``by="customerCode"`` the code (see :meth:`find_customer`).
        """
        with self._write() as db:
            row = self._find_customer_row(db, ref, by=by)
            if row is None:
                return None
            code = fields.get("customerCode") or row["customerCode"]
            self._check_code_free(db, code, row["id"])
            values = [fields.get(name) for name in CUSTOMER_FIELDS]
            db.execute(_UPDATE_CUSTOMER, (code, *values, self._now(), row["id"]))
            updated = db.execute("SELECT * FROM customers WHERE id = ?", (row["id"],)).fetchone()
            return self._customer(updated)

    def list_customers(self, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        with self._read() as db:
            total = db.execute("SELECT COUNT(*) FROM customers").fetchone()[0]
            rows = db.execute(
                "SELECT * FROM customers ORDER BY id LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return total, [self._customer(row) for row in rows]

    # -- certificates --------------------------------------------------------------------------

    def _certificate(self, row: sqlite3.Row) -> dict[str, Any]:
        certificate: dict[str, Any] = {
            "id": str(row["id"]),
            "certificateNumber": f"CERT-{row['id']:06d}",
            "status": row["effective_status"],
            "exemptionReason": row["exemptionReason"],
            "exposureZone": row["exposureZone"],
            "exemptPercentage": row["exemptPercentage"],
            "attributes": json.loads(row["attributes"]),
            "createdDate": row["createdDate"],
            "modifiedDate": row["modifiedDate"],
        }
        for name in ("exemptionNumber", "signedDate", "expirationDate"):
            if row[name] is not None:
                certificate[name] = row[name]
        if row["u_id"] is not None:
            certificate["customer"] = self._customer(row, prefix="u_")
        return certificate

    def _certificate_by_id(self, db: sqlite3.Connection, ref: str) -> dict[str, Any] | None:
        row_id = _row_id(ref)
        if row_id is None:
            return None
        row = db.execute(
            f"{_CERTIFICATE_SELECT} WHERE c.id = :id", {"id": row_id, "today": self._today()}
        ).fetchone()
        return None if row is None else self._certificate(row)

    def get_certificate(self, ref: str) -> dict[str, Any] | None:
        with self._read() as db:
            return self._certificate_by_id(db, ref)

    def create_certificate(
        self, fields: CertificateFields, *, idempotency: Idempotency | None = None
    ) -> dict[str, Any]:
        """Create a certificate; it starts ``Pending`` unless ``fields.status`` says otherwise."""
        with self._write() as db:
            replayed = self._replay(db, "createCertificate", idempotency)
            if replayed is not None:
                self._check_not_deleted(db, replayed, idempotency)
                return replayed
            certificate = self._insert_certificate(db, fields)
            self._remember(db, "createCertificate", idempotency, certificate)
            return certificate

    def _check_not_deleted(
        self, db: sqlite3.Connection, replayed: dict[str, Any], idem: Idempotency | None
    ) -> None:
        """A replay must not answer 201 with the id of a certificate deleted since.

        Refused (409) rather than created anew: the certificate was deleted on purpose (by
        the merchant, or a reviewer), and a client's retry must not bring it back unseen.
        """
        exists = db.execute(
            "SELECT 1 FROM certificates WHERE id = ?", (int(replayed["id"]),)
        ).fetchone()
        if exists is None and idem is not None:
            raise ApiError(
                409,
                "idempotency_key_spent",
                f"Idempotency-Key {idem.key!r} created certificate {replayed['id']}, which has "
                "since been deleted; send a new Idempotency-Key to create another certificate",
            )

    def _insert_certificate(
        self, db: sqlite3.Connection, fields: CertificateFields
    ) -> dict[str, Any]:
        now = self._now()
        cursor = db.execute(
            "INSERT INTO certificates (customer_id, status, exemptionNumber, exemptionReason,"
            " exposureZone, signedDate, expirationDate, exemptPercentage, attributes,"
            " createdDate, modifiedDate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (fields.customer_id, fields.status or "Pending", *self._columns(fields), now, now),
        )
        certificate = self._certificate_by_id(db, str(cursor.lastrowid))
        assert certificate is not None
        return certificate

    @staticmethod
    def _columns(fields: CertificateFields) -> tuple[Any, ...]:
        return (
            fields.exemption_number,
            fields.exemption_reason,
            fields.exposure_zone,
            fields.signed_date and fields.signed_date.isoformat(),
            fields.expiration_date and fields.expiration_date.isoformat(),
            fields.exempt_percentage,
            json.dumps(fields.attributes),
        )

    def update_certificate(self, ref: str, fields: CertificateFields) -> dict[str, Any] | None:
        """Replace a certificate's fields (the id, number and createdDate stay)."""
        with self._write() as db:
            current = self._certificate_by_id(db, ref)
            if current is None:
                return None
            db.execute(
                "UPDATE certificates SET customer_id = COALESCE(?, customer_id),"
                " status = COALESCE(?, status), exemptionNumber = ?, exemptionReason = ?,"
                " exposureZone = ?, signedDate = ?, expirationDate = ?, exemptPercentage = ?,"
                " attributes = ?, modifiedDate = ? WHERE id = ?",
                (
                    fields.customer_id,
                    fields.status,
                    *self._columns(fields),
                    self._now(),
                    int(current["id"]),
                ),
            )
            return self._certificate_by_id(db, ref)

    def delete_certificate(self, ref: str) -> bool:
        """Delete a certificate and its attachment; ``False`` if there was none."""
        row_id = _row_id(ref)
        if row_id is None:
            return False
        with self._write() as db:
            db.execute("DELETE FROM attachments WHERE certificate_id = ?", (row_id,))
            return db.execute("DELETE FROM certificates WHERE id = ?", (row_id,)).rowcount > 0

    def list_certificates(
        self,
        *,
        status: str | None = None,
        customer_id: int | None = None,
        limit: int,
        offset: int,
    ) -> tuple[int, list[dict[str, Any]]]:
        """One page of certificates, filtered by effective status and customer."""
        where = []
        params: dict[str, Any] = {"today": self._today(), "limit": limit, "offset": offset}
        if status is not None:
            where.append(f"{_EFFECTIVE_STATUS} = :status")
            params["status"] = status
        if customer_id is not None:
            where.append("c.customer_id = :customer")
            params["customer"] = customer_id
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._read() as db:
            count = f"SELECT COUNT(*) FROM certificates AS c{clause}"  # noqa: S608
            total = db.execute(count, params).fetchone()[0]
            rows = db.execute(
                f"{_CERTIFICATE_SELECT}{clause} ORDER BY c.id LIMIT :limit OFFSET :offset", params
            ).fetchall()
        return total, [self._certificate(row) for row in rows]

    # -- attachments ---------------------------------------------------------------------------

    def put_attachment(self, ref: str, attachment: Attachment) -> dict[str, Any] | None:
        """Store (or replace) a certificate's document; ``None`` if the certificate is unknown."""
        with self._write() as db:
            certificate = self._certificate_by_id(db, ref)
            if certificate is None:
                return None
            row_id, now = int(certificate["id"]), self._now()
            db.execute(
                "INSERT OR REPLACE INTO attachments VALUES (?, ?, ?, ?, ?)",
                (row_id, attachment.media_type, attachment.filename, attachment.content, now),
            )
            db.execute("UPDATE certificates SET modifiedDate = ? WHERE id = ?", (now, row_id))
        return {
            "certificateId": certificate["id"],
            "fileName": attachment.filename,
            "mediaType": attachment.media_type,
            "size": len(attachment.content),
            "uploadedDate": now,
        }

    def get_attachment(self, ref: str) -> Attachment | None:
        row_id = _row_id(ref)
        if row_id is None:
            return None
        with self._read() as db:
            row = db.execute(
                "SELECT content, media_type, filename FROM attachments WHERE certificate_id = ?",
                (row_id,),
            ).fetchone()
        if row is None:
            return None
        return Attachment(bytes(row["content"]), row["media_type"], row["filename"])

    # -- files (the Commenda dialect) ----------------------------------------------------------
    #
    # Commenda uploads a document on its own (POST /files) and then names it in a certificate's
    # file_id. Linking a file also stores it as the certificate's CertCapture attachment, so a
    # document given through either dialect is the document the other one serves.

    def create_file(self, attachment: Attachment) -> dict[str, Any]:
        """Store an uploaded file under a new UUID; answers its id, name, type, size, time."""
        file_id, now = str(uuid.uuid4()), self._now()
        with self._write() as db:
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                (file_id, attachment.media_type, attachment.filename, attachment.content, now),
            )
        return {
            "id": file_id,
            "fileName": attachment.filename,
            "mediaType": attachment.media_type,
            "size": len(attachment.content),
            "uploadedDate": now,
        }

    def get_file(self, file_id: str) -> Attachment | None:
        with self._read() as db:
            row = db.execute(
                "SELECT content, media_type, filename FROM files WHERE id = ?", (file_id,)
            ).fetchone()
        if row is None:
            return None
        return Attachment(bytes(row["content"]), row["media_type"], row["filename"])

    def _link_file(self, db: sqlite3.Connection, certificate_id: int, file_id: str) -> None:
        row = db.execute(
            "SELECT media_type, filename, content FROM files WHERE id = ?", (file_id,)
        ).fetchone()
        if row is None:
            raise ApiError(422, "unknown_file", f"There is no file with id {file_id!r}")
        now = self._now()
        db.execute(
            "INSERT OR REPLACE INTO certificate_files VALUES (?, ?)", (certificate_id, file_id)
        )
        db.execute(
            "INSERT OR REPLACE INTO attachments VALUES (?, ?, ?, ?, ?)",
            (certificate_id, row["media_type"], row["filename"], row["content"], now),
        )
        db.execute("UPDATE certificates SET modifiedDate = ? WHERE id = ?", (now, certificate_id))

    def create_certificate_with_file(
        self,
        fields: CertificateFields,
        file_id: str | None,
        *,
        operation: str,
        idempotency: Idempotency | None = None,
    ) -> dict[str, Any]:
        """Create a certificate and link ``file_id`` to it, in one transaction.

        A replayed Idempotency-Key answers the certificate as it is *now* (a file may have been
        linked since), not as it was created.
        """
        with self._write() as db:
            replayed = self._replay(db, operation, idempotency)
            if replayed is not None:
                self._check_not_deleted(db, replayed, idempotency)
                current = self._certificate_by_id(db, str(replayed["id"]))
                assert current is not None
                return current
            certificate = self._insert_certificate(db, fields)
            if file_id is not None:
                self._link_file(db, int(certificate["id"]), file_id)
            self._remember(db, operation, idempotency, {"id": certificate["id"]})
            return certificate

    def patch_certificate(
        self, ref: str, changes: dict[str, str | None], *, file_id: str | None = None
    ) -> dict[str, Any] | None:
        """Set some of ``status`` and ``expirationDate`` and link ``file_id``, atomically.

        Answers the updated certificate, or ``None`` if there is none with that id.
        """
        unknown = set(changes) - _PATCHABLE
        if unknown:
            raise ValueError(f"cannot patch {sorted(unknown)}")
        with self._write() as db:
            current = self._certificate_by_id(db, ref)
            if current is None:
                return None
            row_id = int(current["id"])
            if file_id is not None:
                self._link_file(db, row_id, file_id)
            if changes:
                # Column names come from _PATCHABLE (checked above), values are bound.
                assignments = ", ".join(f'"{name}" = ?' for name in changes)
                db.execute(
                    f"UPDATE certificates SET {assignments}, modifiedDate = ? WHERE id = ?",  # noqa: S608
                    (*changes.values(), self._now(), row_id),
                )
            return self._certificate_by_id(db, ref)

    def stored_details(self, certificate_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """Each certificate's stored status (not the date-derived ``Expired``) and linked file.

        The Commenda dialect needs both: its ``verification_status`` follows what a reviewer
        decided, which an expiry date does not change.
        """
        ids = [row_id for ref in certificate_ids if (row_id := _row_id(ref)) is not None]
        if not ids:
            return {}
        with self._read() as db:
            rows = db.execute(
                "SELECT c.id, c.status, f.file_id FROM certificates AS c"  # noqa: S608
                " LEFT JOIN certificate_files AS f ON f.certificate_id = c.id"
                f" WHERE c.id IN ({', '.join('?' * len(ids))})",
                ids,
            ).fetchall()
        return {str(row["id"]): (row["status"], row["file_id"]) for row in rows}

    def customer_created(self, code: str) -> str | None:
        """When the customer with this code was created (RFC 3339), or None if there is none."""
        with self._read() as db:
            row = db.execute(
                "SELECT createdDate FROM customers WHERE customerCode = ?", (code,)
            ).fetchone()
        return None if row is None else str(row["createdDate"])

    # -- attributes ----------------------------------------------------------------------------

    def list_attributes(self) -> list[dict[str, Any]]:
        with self._read() as db:
            rows = db.execute("SELECT * FROM attributes ORDER BY id").fetchall()
        return [
            {
                "id": row["id"],
                "name": row["name"],
                "description": row["description"],
                "isSystemCode": bool(row["isSystemCode"]),
            }
            for row in rows
        ]
