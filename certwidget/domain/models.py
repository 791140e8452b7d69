"""The domain's typed models: who buys, what they certify, and what exempts an order.

Every layer speaks these types. Intake parses the wire format into them once; the outbox stores
them, delivery hands them to a provider, documents draw them, and ``exemption_for`` answers
with an :class:`Exemption`. None of them knows HTTP, JSON field names or a provider's API.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

#: How the buyer's identification number is issued: a state permit, a federal EIN, or foreign.
TaxIdType = Literal["state", "fein", "foreign"]
#: A certificate's status at the provider, in provider-neutral terms.
CertificateStatus = Literal["Active", "Pending", "Expired", "Revoked"]
#: A certificate for this one purchase (it names the order) or a blanket for later ones too.
PurchaseKind = Literal["single", "blanket"]


@dataclass(frozen=True, slots=True)
class Purchaser:
    """The buyer's name and address as entered (or as the shop knows them)."""

    name: str
    line1: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country: str = "US"
    email: str = ""


@dataclass(frozen=True, slots=True)
class Seller:
    """The shop, as every certificate names it: the seller the buyer certifies to.

    Set once by the shop (the middleware's ``seller=`` option), never typed by a buyer.
    """

    name: str
    line1: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country: str = "US"

    @property
    def address(self) -> str:
        """The address on one line, as a form's "seller's address" box shows it."""
        place = " ".join(part for part in (self.region, self.postal_code) if part)
        return ", ".join(part for part in (self.line1, self.city, place) if part)


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    """What the shop knows about the buyer; ``code`` is the shop's stable customer number."""

    code: str
    name: str = ""
    line1: str = ""
    city: str = ""
    region: str = ""
    postal_code: str = ""
    country: str = "US"
    email: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class Signature:
    """How the buyer signed: a drawn signature (its PNG) or a typed name."""

    kind: Literal["drawn", "typed"]
    #: The signer's typed name, or the purchaser's name for a drawn signature.
    name: str
    #: The drawn signature's PNG. Empty for a typed one, and in a stored record: the outbox
    #: keeps the PNG as the submission's document, not in the record.
    png: bytes = b""


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """What the buyer asked for, validated: a filled-in form (``signature`` set) or an upload."""

    zones: tuple[str, ...]
    reason: str
    exemption_number: str
    #: The number to print and send for each zone (a buyer may hold one per state).
    numbers: Mapping[str, str]
    purchaser: Purchaser | None
    signature: Signature | None = None
    tax_id_type: TaxIdType = "state"
    expiration_date: dt.date | None = None
    exempt_percentage: float = 100.0
    #: Zones the buyer named that levy no sales tax: nothing to certify there.
    not_needed: tuple[str, ...] = field(default=())
    #: The form filled in for each zone (a form id of ``certwidget.domain.forms``); empty for
    #: an upload, whose document is the state's own.
    forms: Mapping[str, str] = field(default_factory=dict)
    #: The business-type code given on each form that asks one, by form id (the SST form's
    #: "01"-"20", the MTC's "Wholesaler"...; the lists differ, so each form has its own).
    business_types: Mapping[str, str] = field(default_factory=dict)
    #: What the purchaser sells or does, in its words (Texas, California, New York, MTC).
    business_description: str = ""
    #: What is bought under the certificate (Texas, California, Illinois, MTC).
    property_description: str = ""
    purchase_kind: PurchaseKind = "blanket"
    #: The invoice or order number a single-purchase certificate names.
    order_reference: str = ""
    #: The signer's title (owner, purchasing manager...), asked by most forms.
    signer_title: str = ""


@dataclass(frozen=True, slots=True)
class CertificateDraft:
    """One certificate to create at the provider: one exposure zone, one reason."""

    customer_code: str
    zone: str
    reason: str
    exemption_number: str = ""
    signed_date: dt.date | None = None
    expiration_date: dt.date | None = None
    exempt_percentage: float = 100.0
    # Sent as the provider's idempotency key where it has one, so a retried delivery
    # never makes a second certificate.
    idempotency_key: str = ""
    #: The form filled in for this zone (a ``certwidget.domain.forms`` id; "" for an upload).
    #: Neither CertCapture's nor Commenda's API has a field for it: the PDF carries it.
    form: str = ""
    #: Neither API has a single-purchase flag or an order reference; the PDF carries both.
    purchase_kind: PurchaseKind = "blanket"
    order_reference: str = ""


@dataclass(frozen=True, slots=True)
class ProviderCertificate:
    """A certificate on file at the provider, in provider-neutral terms."""

    id: str
    zone: str
    reason: str
    status: CertificateStatus
    number: str = ""
    exemption_number: str = ""
    exempt_percentage: float = 100.0
    signed_date: dt.date | None = None
    expiration_date: dt.date | None = None
    customer_code: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Exemption:
    """A certificate that exempts an order shipped to ``zone``."""

    zone: str
    reason: str
    reason_name: str
    exempt_percentage: float
    #: "Received" (stored, not yet at the provider), "Pending" or "Active" at the provider.
    status: str
    #: What to print on the order: the provider's certificate number, or our submission id.
    reference: str
    expiration_date: dt.date | None = None
    certificate_id: str | None = None
    submission_id: str | None = None
    source: Literal["submission", "on_file"] = "submission"
    #: Submitted in this checkout but not exempting yet: the shop exempts only certificates
    #: the provider has approved (``exempt_on_submit=False``) and this one is still in review.
    awaiting_review: bool = False

    @property
    def exempting(self) -> bool:
        """Whether the order goes out exempt now (False while the certificate awaits review)."""
        return not self.awaiting_review

    def __bool__(self) -> bool:
        # ``if exemption:`` must never remove tax for a certificate still in review.
        return self.exempting

    @property
    def taxable_fraction(self) -> float:
        """The share of the order that stays taxable (0.0 for a full exemption; all of it
        while the certificate awaits review)."""
        if self.awaiting_review:
            return 1.0
        return max(0.0, 1.0 - self.exempt_percentage / 100.0)

    def to_json(self) -> dict[str, Any]:
        """The exemption as the widget protocol (and a shop's own JSON) spells it."""
        return {
            "zone": self.zone,
            "reason": self.reason,
            "reasonName": self.reason_name,
            "exemptPercentage": self.exempt_percentage,
            "status": self.status,
            "reference": self.reference,
            "expirationDate": self.expiration_date.isoformat() if self.expiration_date else None,
            "source": self.source,
            "awaitingReview": self.awaiting_review,
        }
