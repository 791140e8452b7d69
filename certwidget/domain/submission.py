"""What a buyer submitted, as the outbox keeps it until the provider has it.

Intake turns the validated request (:class:`~certwidget.domain.models.CertificateRequest`) and
what the shop and the clock add (who the buyer is, the signing date, the upload's facts) into a
:class:`SubmittedCertificate`, and stores :meth:`SubmittedCertificate.to_record`. Everything after
(the exemption the order gets, delivery, the rendered PDF) reads
:meth:`SubmittedCertificate.from_record` and typed attributes.

The record is this module's own document, not the widget's wire format: snake_case, versioned
(``{"v": 2, ...}``), JSON-able as the outbox protocol asks. Version 2 added the forms per state,
the seller, business type and descriptions, single purchase or blanket, and the expiration
date per state; version 1 records read with those empty (their one ``expiration_date`` then
stands for every state, as it did). It keeps ``zones`` at the top level,
where :attr:`certwidget.outbox.base.Submission.zones` (and a backend that indexes it) reads it.
Rows stored by certwidget before the record existed hold the widget's camelCase body instead
(``exemptionNumber``, ``signedDate``, ...); :meth:`~SubmittedCertificate.from_record` reads those
too, so they still deliver after an upgrade.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from certwidget.domain import forms as form_data
from certwidget.domain.models import (
    CertificateRequest,
    CustomerProfile,
    PurchaseKind,
    Purchaser,
    Seller,
    Signature,
    TaxIdType,
)

__all__ = ["RECORD_VERSION", "SubmittedCertificate", "UnreadableRecord", "UploadedFile"]

#: The version of the record :meth:`SubmittedCertificate.to_record` writes. A reader meets
#: every version written before it; a change to the record adds a version and its reader.
RECORD_VERSION = 2
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
    #: The number for each zone, as validation allotted it (a state-issued number is never
    #: carried from one state to another; see :meth:`number_for`).
    numbers: Mapping[str, str] = field(default_factory=dict)
    tax_id_type: TaxIdType = "state"
    purchaser: Purchaser | None = None
    #: How it was signed; the drawn signature's PNG is the stored document, not in the record.
    signature: Signature | None = None
    #: None only in rows older certwidget versions stored without one.
    signed_date: dt.date | None = None
    #: The date the buyer typed (a Department-issued certificate's own date), if any.
    expiration_date: dt.date | None = None
    exempt_percentage: float = 100.0
    #: What the shop said of the buyer when it named them (its number, name and e-mail).
    customer: CustomerProfile | None = None
    upload: UploadedFile | None = None
    #: The form filled in for each zone (``certwidget.domain.forms`` ids; empty for an upload).
    forms: Mapping[str, str] = field(default_factory=dict)
    #: When the certificate ends in each zone (None: no expiry), computed at signing from the
    #: form's and the state's rule; see :meth:`expiration_for`.
    expirations: Mapping[str, dt.date | None] = field(default_factory=dict)
    #: The shop, as the certificate names it (the middleware's ``seller=``); None if unset.
    seller: Seller | None = None
    #: The business-type code on each form that asks one, by form id.
    business_types: Mapping[str, str] = field(default_factory=dict)
    business_description: str = ""
    property_description: str = ""
    purchase_kind: PurchaseKind = "blanket"
    order_reference: str = ""
    signer_title: str = ""

    @classmethod
    def of(
        cls,
        request: CertificateRequest,
        *,
        signed_date: dt.date,
        customer: CustomerProfile | None = None,
        upload: UploadedFile | None = None,
        seller: Seller | None = None,
    ) -> SubmittedCertificate:
        """The validated request as it is stored, with what the shop and the clock add.

        The expiration date of each zone is computed here, from the signing date and the
        zone's form (:func:`certwidget.domain.forms.expiration_for`).
        """
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
            forms=dict(request.forms),
            expirations={
                zone: _expiration(request.forms.get(zone), zone, signed_date, request)
                for zone in request.zones
            },
            seller=seller,
            business_types=dict(request.business_types),
            business_description=request.business_description,
            property_description=request.property_description,
            purchase_kind=request.purchase_kind,
            order_reference=request.order_reference,
            signer_title=request.signer_title,
        )

    def number_for(self, zone: str) -> str:
        """The exemption number to send for ``zone`` ("" if the reason needs none).

        Only the number validation allotted to the zone: the buyer's one number is never
        carried to a state it was not given for. Records from before forms (version 1, and
        rows older still) send the one number for a zone without its own, as they did.
        """
        if zone in self.numbers or self.forms:
            return self.numbers.get(zone, "")
        return self.exemption_number

    def expiration_for(self, zone: str) -> dt.date | None:
        """When the certificate for ``zone`` ends (None: no expiry).

        Records from before version 2 have one date for every zone.
        """
        if zone in self.expirations:
            return self.expirations[zone]
        return self.expiration_date

    def form_for(self, zone: str) -> form_data.Form | None:
        """The form filled in for ``zone`` (None for an upload, or a record from before forms)."""
        form_id = self.forms.get(zone)
        return form_data.form(form_id) if form_id else None

    def form_groups(self) -> dict[str, tuple[str, ...]]:
        """The zones of each form filled in, by form id, in the order of ``zones``.

        One PDF is drawn per form and attached to its zones' certificates. Empty for an upload
        and for records from before forms (those render one certificate for every zone).
        """
        groups: dict[str, list[str]] = {}
        for zone in self.zones:
            form_id = self.forms.get(zone)
            if form_id:
                groups.setdefault(form_id, []).append(zone)
        return {form_id: tuple(zones) for form_id, zones in groups.items()}

    @property
    def single_purchase(self) -> bool:
        """A certificate for this one order: it exempts only this checkout, never later ones."""
        return self.purchase_kind == "single"

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
            "forms": dict(self.forms),
            "expirations": {zone: _iso(date) for zone, date in self.expirations.items()},
            "seller": (
                {
                    "name": self.seller.name,
                    "line1": self.seller.line1,
                    "city": self.seller.city,
                    "region": self.seller.region,
                    "postal_code": self.seller.postal_code,
                    "country": self.seller.country,
                }
                if self.seller is not None
                else None
            ),
            "business_types": dict(self.business_types),
            "business_description": self.business_description,
            "property_description": self.property_description,
            "purchase_kind": self.purchase_kind,
            "order_reference": self.order_reference,
            "signer_title": self.signer_title,
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
        if version == 2:
            return _from_v2(record)
        raise UnreadableRecord(
            f"this submission was stored by a newer certwidget (record version {version!r}; "
            f"this one reads up to {RECORD_VERSION}): upgrade certwidget to deliver it"
        )


def _expiration(
    form_id: str | None, zone: str, signed: dt.date, request: CertificateRequest
) -> dt.date | None:
    """The zone's expiration date: by the form's rule, or the typed one where the rule says so.

    A date the buyer typed for a form whose rule computes one only ever shortens the term (the
    earlier date stands): it is the buyer's own word that the certificate ends then.
    """
    typed = request.expiration_date
    if not form_id:
        return typed  # an upload: the document's own date, as the buyer read it
    chosen = form_data.form(form_id)
    if form_data.expiry_rule(chosen, zone).kind == "fixed_date":
        return typed
    computed = form_data.expiration_for(chosen, zone, signed)
    dates = [d for d in (computed, typed) if d is not None]
    return min(dates) if dates else None


def _purchase_kind(value: Any) -> PurchaseKind:
    if value == "single":
        return "single"
    if value == "blanket":
        return "blanket"
    raise UnreadableRecord(f"unknown purchase kind {value!r} in a stored submission")


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


def _from_v2(record: Mapping[str, Any]) -> SubmittedCertificate:
    v1 = _from_v1(record)
    seller = record["seller"]
    return dataclasses.replace(
        v1,
        forms={str(zone): str(form_id) for zone, form_id in record["forms"].items()},
        expirations={str(zone): _date(date) for zone, date in record["expirations"].items()},
        seller=Seller(**seller) if seller is not None else None,
        business_types={str(k): str(v) for k, v in record["business_types"].items()},
        business_description=str(record["business_description"]),
        property_description=str(record["property_description"]),
        purchase_kind=_purchase_kind(record["purchase_kind"]),
        order_reference=str(record["order_reference"]),
        signer_title=str(record["signer_title"]),
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
