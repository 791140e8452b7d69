"""What a buyer submitted, as the outbox keeps it until the provider has it.

Intake turns the validated request (:class:`~certwidget.domain.models.CertificateRequest`) and
what the shop and the clock add (who the buyer is, the signing date, the upload's facts) into a
:class:`SubmittedCertificate`, and stores :meth:`SubmittedCertificate.to_record`. Everything after
(the exemption the order gets, delivery, the rendered PDF) reads
:meth:`SubmittedCertificate.from_record` and typed attributes.

The record is this module's own document, not the widget's wire format: snake_case, versioned
(``{"v": 1, ...}``), JSON-able as the outbox protocol asks. It keeps ``zones`` at the top level,
where :attr:`certwidget.outbox.base.Submission.zones` (and a backend that indexes it) reads it.
Rows stored by certwidget before the record existed hold the widget's camelCase body instead
(``exemptionNumber``, ``signedDate``, ...); :meth:`~SubmittedCertificate.from_record` reads those
too, so they still deliver after an upgrade.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from certwidget.domain.models import (
    CertificateRequest,
    CustomerProfile,
    Purchaser,
    Signature,
    TaxIdType,
)

__all__ = ["RECORD_VERSION", "SubmittedCertificate", "UnreadableRecord", "UploadedFile"]

#: The version of the record :meth:`SubmittedCertificate.to_record` writes. A reader meets
#: every version written before it; a change to the record adds a version and its reader.
RECORD_VERSION = 1
_TAX_ID_TYPES: tuple[TaxIdType, ...] = ("state", "fein", "foreign")


class UnreadableRecord(ValueError):
    """A stored record this version of certwidget cannot read."""


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """The facts of an uploaded certificate, kept after delivery drops the file itself."""

    filename: str
    media_type: str
    #: Hex SHA-256 of the file as it was received.
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class SubmittedCertificate:
    """A buyer's certificate as stored: a filled-in form (``signature`` set) or an upload."""

    zones: tuple[str, ...]
    reason: str
    #: The number the buyer entered for every state.
    exemption_number: str = ""
    #: The number for each zone (the buyer's own per state, else ``exemption_number``).
    numbers: Mapping[str, str] = field(default_factory=dict)
    tax_id_type: TaxIdType = "state"
    purchaser: Purchaser | None = None
    #: How it was signed; the drawn signature's PNG is the stored document, not in the record.
    signature: Signature | None = None
    #: None only in rows older certwidget versions stored without one.
    signed_date: dt.date | None = None
    expiration_date: dt.date | None = None
    exempt_percentage: float = 100.0
    #: What the shop said of the buyer when it named them (its number, name and e-mail).
    customer: CustomerProfile | None = None
    upload: UploadedFile | None = None

    @classmethod
    def of(
        cls,
        request: CertificateRequest,
        *,
        signed_date: dt.date,
        customer: CustomerProfile | None = None,
        upload: UploadedFile | None = None,
    ) -> SubmittedCertificate:
        """The validated request as it is stored, with what the shop and the clock add."""
        return cls(
            zones=request.zones,
            reason=request.reason,
            exemption_number=request.exemption_number,
            numbers=dict(request.numbers),
            tax_id_type=request.tax_id_type,
            purchaser=request.purchaser,
            signature=request.signature,
            signed_date=signed_date,
            expiration_date=request.expiration_date,
            exempt_percentage=request.exempt_percentage,
            customer=customer,
            upload=upload,
        )

    def number_for(self, zone: str) -> str:
        """The exemption number to send for ``zone`` ("" if the reason needs none)."""
        return self.numbers.get(zone) or self.exemption_number

    # -- the storage codec -----------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        """The certificate as the outbox stores it (JSON-able; see the module's notes)."""
        purchaser = self.purchaser
        customer = self.customer
        return {
            "v": RECORD_VERSION,
            "zones": list(self.zones),
            "reason": self.reason,
            "exemption_number": self.exemption_number,
            "numbers": dict(self.numbers),
            "tax_id_type": self.tax_id_type,
            "purchaser": (
                {
                    "name": purchaser.name,
                    "line1": purchaser.line1,
                    "city": purchaser.city,
                    "region": purchaser.region,
                    "postal_code": purchaser.postal_code,
                    "country": purchaser.country,
                    "email": purchaser.email,
                }
                if purchaser is not None
                else None
            ),
            # The PNG of a drawn signature is the row's document: bytes stay out of the JSON.
            "signature": (
                {"kind": self.signature.kind, "name": self.signature.name}
                if self.signature is not None
                else None
            ),
            "signed_date": _iso(self.signed_date),
            "expiration_date": _iso(self.expiration_date),
            "exempt_percentage": self.exempt_percentage,
            "customer": (
                {"code": customer.code, "name": customer.name, "email": customer.email}
                if customer is not None
                else None
            ),
            "upload": (
                {
                    "filename": self.upload.filename,
                    "media_type": self.upload.media_type,
                    "sha256": self.upload.sha256,
                    "size": self.upload.size,
                }
                if self.upload is not None
                else None
            ),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SubmittedCertificate:
        """Read what :meth:`to_record` wrote, in any version, or a row stored before it.

        Raises :class:`UnreadableRecord` for a record from a newer certwidget (or none at all).
        """
        version = record.get("v")
        if version is None:
            return _from_wire_era(record)
        if version == 1:
            return _from_v1(record)
        raise UnreadableRecord(
            f"this submission was stored by a newer certwidget (record version {version!r}; "
            f"this one reads up to {RECORD_VERSION}): upgrade certwidget to deliver it"
        )


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _date(value: Any) -> dt.date | None:
    return dt.date.fromisoformat(value) if isinstance(value, str) and value else None


def _tax_id_type(value: Any) -> TaxIdType:
    for known in _TAX_ID_TYPES:
        if value == known:
            return known
    raise UnreadableRecord(f"unknown tax ID type {value!r} in a stored submission")


def _signature(kind: Any, name: Any) -> Signature:
    checked: Literal["drawn", "typed"]
    if kind == "drawn":
        checked = "drawn"
    elif kind == "typed":
        checked = "typed"
    else:
        raise UnreadableRecord(f"unknown signature kind {kind!r} in a stored submission")
    return Signature(checked, str(name or ""))


def _from_v1(record: Mapping[str, Any]) -> SubmittedCertificate:
    purchaser = record["purchaser"]
    signature = record["signature"]
    customer = record["customer"]
    upload = record["upload"]
    return SubmittedCertificate(
        zones=tuple(record["zones"]),
        reason=record["reason"],
        exemption_number=record["exemption_number"],
        numbers=dict(record["numbers"]),
        tax_id_type=_tax_id_type(record["tax_id_type"]),
        purchaser=Purchaser(**purchaser) if purchaser is not None else None,
        signature=_signature(signature["kind"], signature["name"]) if signature else None,
        signed_date=_date(record["signed_date"]),
        expiration_date=_date(record["expiration_date"]),
        exempt_percentage=float(record["exempt_percentage"]),
        customer=CustomerProfile(**customer) if customer is not None else None,
        upload=UploadedFile(**upload) if upload is not None else None,
    )


def _from_wire_era(payload: Mapping[str, Any]) -> SubmittedCertificate:
    """A row stored before the record: the widget's camelCase body as intake kept it.

    Its fields were read with defaults wherever they were used, and rows written by the versions
    before some of them (no ``exemptionNumbers``, ``taxIdType`` or ``customer``) are read the
    same way here, so every such row delivers as it would have.
    """
    purchaser: Mapping[str, Any] | None = payload.get("purchaser") or None
    signature: Mapping[str, Any] | None = payload.get("signature") or None
    customer: Mapping[str, Any] | None = payload.get("customer") or None
    percentage = payload.get("exemptPercentage")
    return SubmittedCertificate(
        zones=tuple(str(zone) for zone in payload.get("zones") or ()),
        reason=str(payload.get("reason") or ""),
        exemption_number=str(payload.get("exemptionNumber") or ""),
        numbers={
            str(zone): str(number)
            for zone, number in (payload.get("exemptionNumbers") or {}).items()
        },
        tax_id_type=_tax_id_type(payload.get("taxIdType") or "state"),
        purchaser=(
            Purchaser(
                name=str(purchaser.get("name") or ""),
                line1=str(purchaser.get("line1") or ""),
                city=str(purchaser.get("city") or ""),
                region=str(purchaser.get("region") or ""),
                postal_code=str(purchaser.get("postalCode") or ""),
                country=str(purchaser.get("country") or "US"),
                email=str(purchaser.get("email") or ""),
            )
            if purchaser is not None
            else None
        ),
        signature=(
            _signature(signature.get("type"), signature.get("name"))
            if signature is not None
            else None
        ),
        signed_date=_date(payload.get("signedDate")),
        expiration_date=_date(payload.get("expirationDate")),
        exempt_percentage=100.0 if percentage is None else float(percentage),
        # Those rows kept the shop's name and e-mail for the buyer, not its customer number
        # (the row's own ``customer`` column holds that).
        customer=(
            CustomerProfile(
                code="",
                name=str(customer.get("name") or ""),
                email=str(customer.get("email") or ""),
            )
            if customer is not None
            else None
        ),
    )
