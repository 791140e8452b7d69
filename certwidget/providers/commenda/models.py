"""Typed models of the Commenda sales-tax API's customers, files and exemption certificates.

The shapes follow the seed page ``shared/specs/commenda-customers.txt`` (``GET
/api/v1/customers/{id}``): every answer is an envelope ``{"data": ..., "message": "..."}``;
fields are snake_case; ``issued_at`` and ``expiring_at`` are ISO 8601 dates, ``created_at`` is
unix seconds. Like the CertCapture models, each is a frozen dataclass with ``from_json`` (raises
:class:`ModelError` on a body of the wrong shape) and, where the client sends it, ``to_json``::

    >>> cert = ExemptionCertificate.from_json(
    ...     {"id": "c1", "issued_at": "2024-05-01", "jurisdiction": "WA", "status": "VALID",
    ...      "verification_status": "VERIFICATION_COMPLETED", "type": "PURPOSE_WHOLESALE",
    ...      "created_at": 1727284490})
    >>> cert.issued_at, cert.expiring_at, cert.created_at.year
    (datetime.date(2024, 5, 1), None, 2024)

The reason mapping between the SST form's reasons (the catalog's A-M) and Commenda's
certificate ``type`` lives here as data, in :data:`TYPE_BY_REASON`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

from certwidget.providers.json_fields import ModelError, required_str
from certwidget.providers.json_fields import as_object as _object
from certwidget.providers.json_fields import compact as _compact
from certwidget.providers.json_fields import optional_str as _str


def _required_str(d: Mapping[str, object], key: str) -> str:
    # Commenda ids and codes are never empty: an empty one is as missing as an absent one.
    return required_str(d, key, allow_empty=False)


__all__ = [
    "COUNTRY_US",
    "REASON_BY_TYPE",
    "TYPE_BY_REASON",
    "CommendaCustomer",
    "CommendaFile",
    "ExemptionCertificate",
    "ExemptionCertificateCreate",
    "ModelError",
    "unwrap",
]

# -- the mapping tables (data, with their source) ---------------------------------------------

#: SST reason code -> Commenda certificate ``type``. Source: the seed page lists exactly two
#: types, ``PURPOSE_WHOLESALE`` and ``ENTITY_TYPE_NONPROFIT`` ("Request additional types from
#: the Commenda team as required"). Wholesale is a purchase for resale (SST reason G); nonprofit
#: is the entity-type exemption of a charitable organization (SST reason E). Every other reason
#: is refused rather than guessed: religious (F) or educational (M) bodies are not always
#: nonprofits in a state's eyes, and a certificate filed under the wrong type could wrongly
#: exempt (or fail to exempt) a sale.
TYPE_BY_REASON: Final[Mapping[str, str]] = {
    "G": "PURPOSE_WHOLESALE",
    "E": "ENTITY_TYPE_NONPROFIT",
}
#: The reverse of :data:`TYPE_BY_REASON`, for reading certificates back.
REASON_BY_TYPE: Final[Mapping[str, str]] = {value: key for key, value in TYPE_BY_REASON.items()}

#: Certificates are for US exposure zones only; the seed's ``country`` is ISO 3166 alpha-2.
COUNTRY_US: Final = "US"


# -- small typed readers ----------------------------------------------------------------------


def _unix(d: Mapping[str, object], key: str) -> dt.datetime | None:
    """A unix-seconds timestamp as an aware UTC datetime."""
    value = d.get(key)
    if value is None:
        return None
    # bool is an int in Python but not in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f"{key}: expected unix seconds, got {type(value).__name__}")
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise ModelError(f"{key}: not a unix timestamp: {value!r}") from None


def _date(d: Mapping[str, object], key: str) -> dt.date | None:
    """An ISO 8601 date; a full date-time, or unix seconds, is read as its (UTC) date.

    The seed documents dates ("2023-12-25") but calls the field "ISO 8601 formatted", which also
    admits a date-time; being lenient here costs nothing and survives either answer.
    """
    value = d.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = _unix(d, key)
        return None if moment is None else moment.date()
    if not isinstance(value, str):
        raise ModelError(f"{key}: expected an ISO date, got {type(value).__name__}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ModelError(f"{key}: not an ISO date: {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    return moment.date()


def unwrap(body: object) -> Mapping[str, object]:
    """The ``data`` object of an envelope ``{"data": {...}, "message": "..."}``.

    >>> unwrap({"data": {"id": "x"}, "message": "ok"})
    {'id': 'x'}
    """
    envelope = _object(body, "response")
    if "data" not in envelope:
        raise ModelError("data: missing (expected the envelope {'data': ..., 'message': ...})")
    message = envelope.get("message")
    if message is not None and not isinstance(message, str):
        raise ModelError(f"message: expected a string, got {type(message).__name__}")
    return _object(envelope["data"], "data")


# -- the models -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExemptionCertificate:
    """One exemption certificate as Commenda answers it (the seed's certificate object).

    ``status`` (``VALID``/``INVALID``), ``verification_status``
    (``PENDING_VERIFICATION``/``VERIFICATION_COMPLETED``) and ``type`` are typed ``str`` so that
    a value a newer API adds is carried through rather than rejected; the provider decides what
    an unknown value means (never an exemption).
    """

    id: str
    issued_at: dt.date | None = None
    expiring_at: dt.date | None = None
    country: str | None = None
    jurisdiction: str | None = None
    status: str | None = None
    verification_status: str | None = None
    type: str | None = None
    customer_id: str | None = None
    file_id: str | None = None
    created_at: dt.datetime | None = None

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "exemption certificate")
        return cls(
            id=_required_str(d, "id"),
            issued_at=_date(d, "issued_at"),
            expiring_at=_date(d, "expiring_at"),
            country=_str(d, "country"),
            jurisdiction=_str(d, "jurisdiction"),
            status=_str(d, "status"),
            verification_status=_str(d, "verification_status"),
            type=_str(d, "type"),
            customer_id=_str(d, "customer_id"),
            file_id=_str(d, "file_id") or None,
            created_at=_unix(d, "created_at"),
        )

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "id": self.id,
                "issued_at": None if self.issued_at is None else self.issued_at.isoformat(),
                "expiring_at": None if self.expiring_at is None else self.expiring_at.isoformat(),
                "country": self.country,
                "jurisdiction": self.jurisdiction,
                "status": self.status,
                "verification_status": self.verification_status,
                "type": self.type,
                "customer_id": self.customer_id,
                "file_id": self.file_id,
                "created_at": (
                    None if self.created_at is None else int(self.created_at.timestamp())
                ),
            }
        )


@dataclass(frozen=True, slots=True)
class ExemptionCertificateCreate:
    """The body of ``POST /exemption-certificates``, as the published flow names its fields.

    >>> body = ExemptionCertificateCreate(issued_at=dt.date(2024, 5, 1), jurisdiction="WA",
    ...     type="PURPOSE_WHOLESALE", customer_id="b6d0").to_json()
    >>> body["issued_at"], body["country"], "file_id" in body
    ('2024-05-01', 'US', False)
    """

    issued_at: dt.date
    jurisdiction: str
    type: str
    customer_id: str
    country: str = COUNTRY_US
    file_id: str | None = None
    expiring_at: dt.date | None = None

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "issued_at": self.issued_at.isoformat(),
                "country": self.country,
                "jurisdiction": self.jurisdiction,
                "type": self.type,
                "customer_id": self.customer_id,
                "file_id": self.file_id,
                "expiring_at": None if self.expiring_at is None else self.expiring_at.isoformat(),
            }
        )

    def matches(self, cert: ExemptionCertificate) -> bool:
        """Whether ``cert`` is what creating this request made (ignoring the file)."""
        return (
            cert.customer_id == self.customer_id
            and (cert.country or COUNTRY_US) == self.country
            and cert.jurisdiction == self.jurisdiction
            and cert.type == self.type
            and cert.issued_at == self.issued_at
            and cert.expiring_at == self.expiring_at
        )


@dataclass(frozen=True, slots=True)
class CommendaCustomer:
    """A customer (the seed's ``data`` object) with its exemption certificates.

    ``to_json`` is the body of ``POST /customers``: the seed's own customer fields, of which a
    client may choose ``id`` and ``name`` (the server sets the rest).
    """

    id: str
    name: str | None = None
    corporation_id: str | None = None
    created_at: dt.datetime | None = None
    exemption_certificates: tuple[ExemptionCertificate, ...] = ()

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "customer")
        certificates = d.get("exemption_certificates")
        if certificates is None:
            certificates = []
        if not isinstance(certificates, list):
            raise ModelError(
                f"exemption_certificates: expected an array, got {type(certificates).__name__}"
            )
        return cls(
            id=_required_str(d, "id"),
            name=_str(d, "name"),
            corporation_id=_str(d, "corporation_id"),
            created_at=_unix(d, "created_at"),
            exemption_certificates=tuple(
                ExemptionCertificate.from_json(item) for item in certificates
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return _compact({"id": self.id, "name": self.name})


@dataclass(frozen=True, slots=True)
class CommendaFile:
    """An uploaded file (the answer of ``POST /files``); only ``id`` is certain to be there."""

    id: str
    file_name: str | None = None
    content_type: str | None = None
    size: int | None = None
    created_at: dt.datetime | None = None

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "file")
        size = d.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
            raise ModelError(f"size: expected an integer, got {type(size).__name__}")
        return cls(
            id=_required_str(d, "id"),
            file_name=_str(d, "file_name"),
            content_type=_str(d, "content_type"),
            size=size,
            created_at=_unix(d, "created_at"),
        )
