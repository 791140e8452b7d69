"""Seed the demo's buyers and their certificates at the provider, once."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from certwidget import CustomerProfile
from certwidget.documents.certificate import FilledCertificate, Purchaser, render_certificate_pdf
from certwidget.providers.base import CertificateDraft, CertificateProvider
from certwidget.providers.certcapture.client import CertCaptureProvider
from certwidget.providers.certcapture.models import CertificateCreate
from certwidget.providers.commenda.provider import CommendaProvider

logger = logging.getLogger("example_shop")
DATA = Path(__file__).parent / "data"


@dataclass(frozen=True, slots=True)
class Buyer:
    code: str
    name: str
    email: str
    line1: str
    city: str
    region: str
    postal_code: str
    description: str
    certificates: tuple[dict[str, Any], ...]

    def profile(self) -> dict[str, str]:
        """What the shop tells certwidget about its signed-in buyer."""
        return {
            "code": self.code,
            "name": self.name,
            "email": self.email,
            "line1": self.line1,
            "city": self.city,
            "region": self.region,
            "postalCode": self.postal_code,
            "country": "US",
        }


@cache
def buyers() -> dict[str, Buyer]:
    raw = json.loads((DATA / "buyers.json").read_text())["buyers"]
    return {
        item["code"]: Buyer(
            code=item["code"],
            name=item["name"],
            email=item["email"],
            line1=item["line1"],
            city=item["city"],
            region=item["region"],
            postal_code=item["postalCode"],
            description=item["description"],
            certificates=tuple(item["certificates"]),
        )
        for item in raw
    }


async def seed(provider: CertificateProvider, today: dt.date | None = None) -> None:
    """Create the seeded buyers and their Active certificates unless they exist already."""
    today = today or dt.date.today()
    for buyer in buyers().values():
        await provider.ensure_customer(
            CustomerProfile(
                code=buyer.code,
                name=buyer.name,
                email=buyer.email,
                line1=buyer.line1,
                city=buyer.city,
                region=buyer.region,
                postal_code=buyer.postal_code,
            )
        )
        if not buyer.certificates or await provider.certificates_for(buyer.code):
            continue
        for spec in buyer.certificates:
            expires = today + dt.timedelta(days=int(spec["expires_in_days"]))
            await _seed_certificate(provider, buyer, spec, expires)


async def _seed_certificate(
    provider: CertificateProvider, buyer: Buyer, spec: dict[str, Any], expires: dt.date
) -> None:
    code = buyer.code
    signed = expires - dt.timedelta(days=365)
    if isinstance(provider, CertCaptureProvider):
        request = CertificateCreate(
            exemption_reason=spec["reason"],
            exposure_zone=spec["zone"],
            exemption_number=spec["number"],
            customer_code=code,
            signed_date=signed,
            expiration_date=expires,
            exempt_percentage=100.0,
        )
        created = await provider.client.create_certificate(
            request, idempotency_key=f"demo-seed-{code}-{spec['zone']}"
        )
        # The sandbox lets the demo mark its seed Active, as a reviewer at the provider would.
        await provider.client.update_certificate(created.id, request, status="Active")
        return
    if isinstance(provider, CommendaProvider):
        # Through the provider, as the middleware delivers: certificate, then its document.
        cert = await provider.create_certificate(
            CertificateDraft(
                customer_code=code,
                zone=spec["zone"],
                reason=spec["reason"],
                exemption_number=spec["number"],
                signed_date=signed,
                expiration_date=expires,
                idempotency_key=f"demo-seed-{code}-{spec['zone']}",
            )
        )
        document = _seed_document(buyer, spec, signed, expires)
        await provider.attach_document(
            cert.id, document, media_type="application/pdf", filename=f"{code}-{spec['zone']}.pdf"
        )
        # The sandbox's Commenda dialect lets the demo play Commenda's reviewer: verified and
        # valid, the seed reads as Active (new certificates start INVALID + PENDING_VERIFICATION).
        await provider.client.update_exemption_certificate(
            cert.id, status="VALID", verification_status="VERIFICATION_COMPLETED"
        )
        return
    logger.warning("example shop: cannot seed certificates into %s", provider.name)


def _seed_document(buyer: Buyer, spec: dict[str, Any], signed: dt.date, expires: dt.date) -> bytes:
    """The filled certificate PDF a seeded buyer would have signed (Commenda needs a file)."""
    return render_certificate_pdf(
        FilledCertificate(
            zones=(spec["zone"],),
            reason=spec["reason"],
            exemption_number=spec["number"],
            tax_id_type="state",
            purchaser=Purchaser(
                name=buyer.name,
                line1=buyer.line1,
                city=buyer.city,
                region=buyer.region,
                postal_code=buyer.postal_code,
                email=buyer.email,
            ),
            signer_name=buyer.name,
            signature=buyer.name,
            signed_date=signed,
            reference=f"demo-seed-{buyer.code}-{spec['zone']}",
            expiration_date=expires,
        )
    )
