"""The PDF of a filled-in certificate, rendered from what the outbox stored.

Rendering takes most of a submission's CPU time (fpdf2, about 20 ms), and the buyer does not
need the PDF to hear "received": the validated fields and the drawn signature are on disk
first, and the PDF is made at delivery, from exactly those, before it is attached.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .documents import FilledCertificate, Purchaser, TaxIdType, render_certificate_pdf

PDF_MEDIA_TYPE = "application/pdf"
PDF_FILENAME = "certificate.pdf"


def printed_number(numbers: dict[str, str], fallback: str) -> str:
    """One number for the form, or each state's when they differ."""
    distinct = set(numbers.values())
    if len(distinct) <= 1:
        return next(iter(distinct), fallback)
    return "; ".join(f"{zone}: {number}" for zone, number in numbers.items())


def render_stored(payload: dict[str, Any], signature_png: bytes, reference: str) -> bytes:
    """Render the certificate from a stored payload (see ``intake``) and the drawn signature."""
    purchaser = payload["purchaser"]
    signature = payload["signature"]
    tax_id_type: TaxIdType = payload.get("taxIdType") or "state"
    expiration = payload.get("expirationDate")
    return render_certificate_pdf(
        FilledCertificate(
            zones=tuple(payload["zones"]),
            reason=str(payload["reason"]),
            exemption_number=printed_number(
                dict(payload.get("exemptionNumbers") or {}), str(payload.get("exemptionNumber", ""))
            ),
            tax_id_type=tax_id_type,
            purchaser=Purchaser(
                name=purchaser["name"],
                line1=purchaser.get("line1", ""),
                city=purchaser.get("city", ""),
                region=purchaser.get("region", ""),
                postal_code=purchaser.get("postalCode", ""),
                country=purchaser.get("country") or "US",
                email=purchaser.get("email", ""),
            ),
            signer_name=signature.get("name") or purchaser["name"],
            signature=signature_png if signature["type"] == "drawn" else signature["name"],
            signed_date=dt.date.fromisoformat(payload["signedDate"]),
            reference=reference,
            expiration_date=dt.date.fromisoformat(expiration) if expiration else None,
            exempt_percentage=float(payload.get("exemptPercentage", 100.0)),
        )
    )
