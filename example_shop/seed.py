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
from certwidget.providers import CertCaptureProvider, CertificateProvider, CommendaProvider
from certwidget.testing import seed_certificate

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
        profile = CustomerProfile(
            code=buyer.code,
            name=buyer.name,
            email=buyer.email,
            line1=buyer.line1,
            city=buyer.city,
            region=buyer.region,
            postal_code=buyer.postal_code,
        )
        await provider.ensure_customer(profile)
        if not buyer.certificates or await provider.certificates_for(buyer.code):
            continue
        if not isinstance(provider, CertCaptureProvider | CommendaProvider):
            logger.warning("example shop: cannot seed certificates into %s", provider.name)
            continue
        for spec in buyer.certificates:
            expires = today + dt.timedelta(days=int(spec["expires_in_days"]))
            # Marked Active, as a reviewer at the provider would (the sandbox lets the demo).
            await seed_certificate(
                provider,
                profile,
                zone=spec["zone"],
                reason=spec["reason"],
                exemption_number=spec["number"],
                signed_date=expires - dt.timedelta(days=365),
                expiration_date=expires,
                idempotency_key=f"demo-seed-{buyer.code}-{spec['zone']}",
            )
