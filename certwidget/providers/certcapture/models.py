"""Typed models of the CertCapture API's JSON bodies (``shared/specs/certcapture-openapi.yml``).

Each model is a frozen dataclass with ``from_json`` (wire camelCase -> Python) and ``to_json``
(Python -> wire camelCase). Parsing is tolerant where a careful client should be and strict where
it must be:

* unknown fields are ignored, so a newer server does not break an older client;
* a missing optional field, or an explicit ``null``, becomes ``None`` (and ``to_json`` leaves
  ``None`` fields out rather than sending ``null``);
* a field of the wrong JSON type, or a date that does not parse, raises :class:`ModelError`
  (a ``ValueError``); the client turns that into ``MalformedResponse``.

Dates (``format: date``) are :class:`datetime.date`; date-times are *aware*
:class:`datetime.datetime` (a server that leaves out the offset is read as UTC)::

    >>> cert = Certificate.from_json({"id": "7", "signedDate": "2024-05-01", "extra": 1})
    >>> cert.signed_date
    datetime.date(2024, 5, 1)
    >>> cert.status is None
    True
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Self

# A certificate's document is the same for every provider; re-exported where it was first defined.
from certwidget.providers.base import Attachment as Attachment
from certwidget.providers.json_fields import ModelError
from certwidget.providers.json_fields import as_object as _object
from certwidget.providers.json_fields import compact as _compact
from certwidget.providers.json_fields import optional_bool as _bool
from certwidget.providers.json_fields import optional_float as _float
from certwidget.providers.json_fields import optional_int as _int
from certwidget.providers.json_fields import optional_list as _list
from certwidget.providers.json_fields import optional_str as _str
from certwidget.providers.json_fields import required_str as _required_str

__all__ = [
    "Attachment",
    "AuthToken",
    "CertAttribute",
    "Certificate",
    "CertificateCreate",
    "CertificatePage",
    "Customer",
    "CustomerPage",
    "ModelError",
]


# -- small typed readers ----------------------------------------------------------------------


def _date(d: Mapping[str, object], key: str) -> dt.date | None:
    value = _str(d, key)
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ModelError(f"{key}: not an ISO date: {value!r}") from None


def parse_datetime(value: str) -> dt.datetime:
    """Parse an RFC 3339 date-time into an aware datetime (no offset given means UTC)."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ModelError(f"not an ISO date-time: {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed


def _datetime(d: Mapping[str, object], key: str) -> dt.datetime | None:
    value = _str(d, key)
    if value is None:
        return None
    try:
        return parse_datetime(value)
    except ModelError as exc:
        raise ModelError(f"{key}: {exc}") from None


def format_datetime(value: dt.datetime) -> str:
    """RFC 3339 text for a datetime; UTC is written with ``Z``, naive values are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# -- the models -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Customer:
    """``CertCaptureCustomer``. ``id`` is assigned by the server; ``customer_code`` is the shop's.

    >>> Customer(customer_code="C-1", name="Acme").to_json()
    {'customerCode': 'C-1', 'name': 'Acme'}
    """

    id: str | None = None
    customer_code: str | None = None
    name: str | None = None
    line1: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None
    email_address: str | None = None
    phone_number: str | None = None

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "customer")
        return cls(
            id=_str(d, "id"),
            customer_code=_str(d, "customerCode"),
            name=_str(d, "name"),
            line1=_str(d, "line1"),
            city=_str(d, "city"),
            region=_str(d, "region"),
            postal_code=_str(d, "postalCode"),
            country=_str(d, "country"),
            email_address=_str(d, "emailAddress"),
            phone_number=_str(d, "phoneNumber"),
        )

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "id": self.id,
                "customerCode": self.customer_code,
                "name": self.name,
                "line1": self.line1,
                "city": self.city,
                "region": self.region,
                "postalCode": self.postal_code,
                "country": self.country,
                "emailAddress": self.email_address,
                "phoneNumber": self.phone_number,
            }
        )


@dataclass(frozen=True, slots=True)
class CertAttribute:
    """``CertAttribute``: a certificate attribute or custom field."""

    id: int | None = None
    name: str | None = None
    description: str | None = None
    is_system_code: bool | None = None

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "attribute")
        return cls(
            id=_int(d, "id"),
            name=_str(d, "name"),
            description=_str(d, "description"),
            is_system_code=_bool(d, "isSystemCode"),
        )

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "id": self.id,
                "name": self.name,
                "description": self.description,
                "isSystemCode": self.is_system_code,
            }
        )


@dataclass(frozen=True, slots=True)
class Certificate:
    """``Certificate`` as the server answers it.

    ``id`` is required: the spec marks nothing required, but a certificate the server answers
    without its id cannot be addressed again, so that answer is malformed. ``status`` is one of
    ``Active``, ``Expired``, ``Revoked``, ``Pending`` by the spec; it is typed ``str`` so that a
    value a newer server adds is carried through rather than rejected.
    """

    id: str
    certificate_number: str | None = None
    status: str | None = None
    signed_date: dt.date | None = None
    expiration_date: dt.date | None = None
    exemption_number: str | None = None
    exemption_reason: str | None = None
    exempt_percentage: float | None = None
    exposure_zone: str | None = None
    customer: Customer | None = None
    created_date: dt.datetime | None = None
    modified_date: dt.datetime | None = None

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "certificate")
        customer = d.get("customer")
        return cls(
            id=_required_str(d, "id"),
            certificate_number=_str(d, "certificateNumber"),
            status=_str(d, "status"),
            signed_date=_date(d, "signedDate"),
            expiration_date=_date(d, "expirationDate"),
            exemption_number=_str(d, "exemptionNumber"),
            exemption_reason=_str(d, "exemptionReason"),
            exempt_percentage=_float(d, "exemptPercentage"),
            exposure_zone=_str(d, "exposureZone"),
            customer=None if customer is None else Customer.from_json(customer),
            created_date=_datetime(d, "createdDate"),
            modified_date=_datetime(d, "modifiedDate"),
        )

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "id": self.id,
                "certificateNumber": self.certificate_number,
                "status": self.status,
                "signedDate": None if self.signed_date is None else self.signed_date.isoformat(),
                "expirationDate": (
                    None if self.expiration_date is None else self.expiration_date.isoformat()
                ),
                "exemptionNumber": self.exemption_number,
                "exemptionReason": self.exemption_reason,
                "exemptPercentage": self.exempt_percentage,
                "exposureZone": self.exposure_zone,
                "customer": None if self.customer is None else self.customer.to_json(),
                "createdDate": (
                    None if self.created_date is None else format_datetime(self.created_date)
                ),
                "modifiedDate": (
                    None if self.modified_date is None else format_datetime(self.modified_date)
                ),
            }
        )


@dataclass(frozen=True, slots=True)
class CertificateCreate:
    """``CertificateCreateRequest``: the body of ``createCertificate`` and ``updateCertificate``.

    >>> CertificateCreate(exemption_reason="RESALE", exposure_zone="WA",
    ...                   signed_date=dt.date(2024, 5, 1)).to_json()
    {'exemptionReason': 'RESALE', 'exposureZone': 'WA', 'signedDate': '2024-05-01'}
    """

    exemption_reason: str
    exposure_zone: str
    exemption_number: str | None = None
    signed_date: dt.date | None = None
    expiration_date: dt.date | None = None
    exempt_percentage: float | None = None
    customer_code: str | None = None
    attributes: tuple[CertAttribute, ...] | None = None

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "certificate request")
        attributes = _list(d, "attributes")
        return cls(
            exemption_reason=_required_str(d, "exemptionReason"),
            exposure_zone=_required_str(d, "exposureZone"),
            exemption_number=_str(d, "exemptionNumber"),
            signed_date=_date(d, "signedDate"),
            expiration_date=_date(d, "expirationDate"),
            exempt_percentage=_float(d, "exemptPercentage"),
            customer_code=_str(d, "customerCode"),
            attributes=(
                None
                if attributes is None
                else tuple(CertAttribute.from_json(item) for item in attributes)
            ),
        )

    def to_json(self) -> dict[str, Any]:
        return _compact(
            {
                "exemptionReason": self.exemption_reason,
                "exposureZone": self.exposure_zone,
                "exemptionNumber": self.exemption_number,
                "signedDate": None if self.signed_date is None else self.signed_date.isoformat(),
                "expirationDate": (
                    None if self.expiration_date is None else self.expiration_date.isoformat()
                ),
                "exemptPercentage": self.exempt_percentage,
                "customerCode": self.customer_code,
                "attributes": (
                    None
                    if self.attributes is None
                    else [attribute.to_json() for attribute in self.attributes]
                ),
            }
        )


@dataclass(frozen=True, slots=True)
class CertificatePage:
    """``CertificateListResponse``: one page of certificates and the total across all pages.

    Iterating a page iterates its certificates; ``len(page)`` is the number on this page.
    """

    total_count: int
    value: tuple[Certificate, ...]

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "certificate list")
        items = _list(d, "value")
        if items is None:
            raise ModelError("value: missing")
        value = tuple(Certificate.from_json(item) for item in items)
        total = _int(d, "totalCount")
        return cls(total_count=len(value) if total is None else total, value=value)

    def to_json(self) -> dict[str, Any]:
        return {"totalCount": self.total_count, "value": [c.to_json() for c in self.value]}

    def __iter__(self) -> Iterator[Certificate]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)


@dataclass(frozen=True, slots=True)
class CustomerPage:
    """``CustomerListResponse``: one page of customers and the total across all pages."""

    total_count: int
    value: tuple[Customer, ...]

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "customer list")
        items = _list(d, "value")
        if items is None:
            raise ModelError("value: missing")
        value = tuple(Customer.from_json(item) for item in items)
        total = _int(d, "totalCount")
        return cls(total_count=len(value) if total is None else total, value=value)

    def to_json(self) -> dict[str, Any]:
        return {"totalCount": self.total_count, "value": [c.to_json() for c in self.value]}

    def __iter__(self) -> Iterator[Customer]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)


@dataclass(frozen=True, slots=True)
class AuthToken:
    """The answer of ``getAuthToken`` and ``generateEcommerceToken``: a Bearer token and its expiry.

    Both fields are required: a token without an expiry cannot be cached safely.
    """

    token: str
    expires_at: dt.datetime

    @classmethod
    def from_json(cls, data: object) -> Self:
        d = _object(data, "token")
        token = _required_str(d, "token")
        if not token:
            raise ModelError("token: empty")
        expires_at = _datetime(d, "expiresAt")
        if expires_at is None:
            raise ModelError("expiresAt: missing")
        return cls(token=token, expires_at=expires_at)

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "expiresAt": format_datetime(self.expires_at)}
