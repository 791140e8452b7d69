"""Helpers for a shop's own tests and demos: a returning buyer with a certificate on file.

    from certwidget import CustomerProfile
    from certwidget.providers import embedded_sandbox
    from certwidget.testing import seed_certificate

    provider = embedded_sandbox(tmp_path / "sandbox.sqlite3")
    buyer = CustomerProfile(code="C-100", name="Acme Resale", region="WA")
    await seed_certificate(
        provider, buyer, zone="WA", reason="G", exemption_number="603123456",  # G: resale
        expiration_date=date(2030, 1, 1),
    )

A certificate created through the widget waits for review at the provider; this one is marked
reviewed and valid at once (Active), as a reviewer at the provider would, so the buyer's next
checkout finds it on file. The embedded sandbox accepts that review in both dialects.
"""

from __future__ import annotations

import datetime as dt

from certwidget.providers.base import CertificateDraft, CertificateProvider, CustomerProfile

__all__ = ["seed_certificate"]


async def seed_certificate(
    provider: CertificateProvider,
    customer: CustomerProfile,
    *,
    zone: str,
    reason: str,
    exemption_number: str,
    expiration_date: dt.date,
    signed_date: dt.date | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Put an Active certificate on file for ``customer``; returns the provider's id.

    ``provider`` is a CertCapture or Commenda provider (the embedded sandbox in either dialect).
    The customer is created (or updated) first. ``signed_date`` defaults to today; a repeated
    ``idempotency_key`` (default: from the customer, zone and number) makes no second
    certificate.
    """
    # Imported here: each names a client (and httpx), which `certwidget.testing` need not load.
    from certwidget.providers.certcapture.client import CertCaptureProvider
    from certwidget.providers.commenda.provider import CommendaProvider

    if not isinstance(provider, CertCaptureProvider | CommendaProvider):
        raise TypeError(
            "seed_certificate writes to a CertCaptureProvider or a CommendaProvider (e.g. "
            f"certwidget.providers.embedded_sandbox(path)), not {type(provider).__name__}"
        )
    signed = signed_date or dt.date.today()
    draft = CertificateDraft(
        customer_code=customer.code,
        zone=zone,
        reason=reason,
        exemption_number=exemption_number,
        signed_date=signed,
        expiration_date=expiration_date,
        idempotency_key=idempotency_key or f"seed-{customer.code}-{zone}-{exemption_number}",
    )
    await provider.ensure_customer(customer)
    created = await provider.create_certificate(draft)
    if isinstance(provider, CertCaptureProvider):
        from certwidget.providers.certcapture.models import CertificateCreate

        review = CertificateCreate(
            exemption_reason=reason,
            exposure_zone=zone,
            exemption_number=exemption_number,
            customer_code=customer.code,
            signed_date=signed,
            expiration_date=expiration_date,
            exempt_percentage=draft.exempt_percentage,
        )
        # The sandbox takes a status with the update, as a reviewer at the provider sets it.
        await provider.client.update_certificate(created.id, review, status="Active")
        return created.id
    # Commenda reviews a certificate's document, so it gets the PDF the buyer would have signed.
    await provider.attach_document(
        created.id,
        _filled_pdf(draft, customer),
        media_type="application/pdf",
        filename=f"{customer.code}-{zone}.pdf",
    )
    # Verified and valid reads as Active (new certificates start INVALID, PENDING_VERIFICATION).
    await provider.client.update_exemption_certificate(
        created.id, status="VALID", verification_status="VERIFICATION_COMPLETED"
    )
    return created.id


def _filled_pdf(draft: CertificateDraft, customer: CustomerProfile) -> bytes:
    from certwidget.documents.certificate import (
        FilledCertificate,
        Purchaser,
        render_certificate_pdf,
    )

    name = customer.name or customer.code
    return render_certificate_pdf(
        FilledCertificate(
            zones=(draft.zone,),
            reason=draft.reason,
            exemption_number=draft.exemption_number,
            tax_id_type="state",
            purchaser=Purchaser(
                name=name,
                line1=customer.line1,
                city=customer.city,
                region=customer.region,
                postal_code=customer.postal_code,
                country=customer.country,
                email=customer.email,
            ),
            signer_name=name,
            signature=name,
            signed_date=draft.signed_date or dt.date.today(),
            reference=draft.idempotency_key,
            expiration_date=draft.expiration_date,
        )
    )
