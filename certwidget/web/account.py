"""The buyer's side after submitting: their certificates (the account view) and a copy of
each document they signed or uploaded (docs/protocol.md, "The buyer's copy").

Only a signed-in buyer gets either, and only their own: a submission counts when the outbox row
names the buyer's customer code, a provider certificate when the provider lists it among that
customer's certificates (and :func:`~certwidget.web.on_file.own_certificates` agrees). Anything
else, whether it exists or not, is the same 404, so ids cannot be probed.

While the outbox holds a submission's document (until delivery drops it) the copy comes from
there; a filled-in certificate not drawn yet is drawn on demand by the middleware's renderer,
exactly as delivery will draw it. Afterwards it comes from the provider's attachment.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from certwidget.documents.certificate import DocumentError
from certwidget.documents.rendering import PDF_MEDIA_TYPE
from certwidget.domain.submission import SubmittedCertificate
from certwidget.outbox.base import Submission
from certwidget.providers.base import (
    DocumentSource,
    ProviderCertificate,
    ProviderError,
)
from certwidget.web.buyers import Buyer
from certwidget.web.http import HTTPProblem
from certwidget.web.on_file import own_certificates
from certwidget.web.runtime import SINGLE_PURCHASE_LOOKBACK, Runtime, reason_name
from certwidget.web.wire import renewal_json

logger = logging.getLogger("certwidget")

#: Renew is offered from this many days before a certificate expires (and once it has).
RENEW_WITHIN_DAYS = 30
#: What a copy may be served as; anything else a provider answers goes out as a plain download.
DOCUMENT_TYPES = {
    "application/pdf": "pdf",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/tiff": "tif",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
NOT_YOURS = (
    "No certificate document with that id is yours to download. Open your account's "
    "certificate list and use its Download link."
)


@dataclass(frozen=True, slots=True)
class Copy:
    """A document as the buyer downloads it."""

    content: bytes
    media_type: str
    filename: str

    def response(self) -> Response:
        media_type = self.media_type if self.media_type in DOCUMENT_TYPES else ""
        return Response(
            self.content,
            media_type=media_type or "application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="{self.filename}"',
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": "no-store",
                # Opened on its own (not downloaded), the document runs nothing.
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Referrer-Policy": "no-referrer",
                "Cross-Origin-Resource-Policy": "same-origin",
            },
        )


def copy_filename(zone: str, reference: str, media_type: str) -> str:
    """``certificate-TX-<number>.pdf``: only characters every file system and header takes."""
    stem = _UNSAFE.sub("_", f"certificate-{zone}-{reference}").strip("._")[:80] or "certificate"
    return f"{stem}.{DOCUMENT_TYPES.get(media_type, 'bin')}"


def _not_yours() -> HTTPProblem:
    return HTTPProblem(404, "document_not_found", NOT_YOURS)


def signed_in(buyer: Buyer) -> None:
    """Guests get neither the list nor copies: a guest is a cookie in one browser, which the
    shop never vouched for, and the account view is for the shop's signed-in buyers."""
    if buyer.guest:
        raise HTTPProblem(
            403,
            "sign_in_required",
            "Sign in to the shop to see and download your exemption certificates.",
        )


class Account:
    """The signed-in buyer's certificates and their documents."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # -- the list --------------------------------------------------------------------------

    async def certificates(self, buyer: Buyer, today: dt.date) -> dict[str, Any]:
        """``GET {prefix}/certificates?view=account``: every certificate of the buyer at the
        provider (expired and revoked ones too) and the submissions not delivered yet."""
        signed_in(buyer)
        runtime = self.runtime
        soon = today + dt.timedelta(days=RENEW_WITHIN_DAYS)
        at_provider = await runtime.on_file.of(buyer.code)
        submissions = await runtime.outbox.for_customer(buyer.code, limit=SINGLE_PURCHASE_LOOKBACK)
        signed: dict[str, SubmittedCertificate] = {}
        single: set[str] = set()
        listed: list[dict[str, Any]] = []
        for submission in submissions:
            try:
                stored = SubmittedCertificate.from_record(submission.payload)
            except ValueError:
                continue  # unreadable: the merchant's tools show it; nothing to list here
            ids = submission.progress.get("certificates", {})
            for certificate_id in ids.values():
                signed.setdefault(str(certificate_id), stored)  # newest first
                if stored.single_purchase:
                    single.add(str(certificate_id))
            if submission.state == "pending":
                listed.extend(_received_json(submission, stored))
        for certificate in at_provider:
            entry = _certificate_json(certificate, today, soon)
            entry["single"] = certificate.id in single
            if entry["single"]:
                entry["renewable"] = False  # it named one order, which is past
            signed_then = signed.get(certificate.id)
            if entry["renewable"] and signed_then is not None:
                # Renewal starts from what the buyer entered then, but the signature.
                entry["prefill"] = renewal_json(signed_then)
            listed.append(entry)
        return {"certificates": listed}

    # -- copies ----------------------------------------------------------------------------

    async def certificate_document(self, buyer: Buyer, certificate_id: str) -> Copy:
        """The document of a certificate at the provider that is the buyer's own."""
        signed_in(buyer)
        for submission in await self.runtime.outbox.for_customer(
            buyer.code, limit=SINGLE_PURCHASE_LOOKBACK
        ):
            ids: dict[str, str] = submission.progress.get("certificates", {})
            zones = [zone for zone, cid in ids.items() if str(cid) == certificate_id]
            if zones and submission.customer == buyer.code:
                held = await self._held(submission, zones[0])
                if held is not None:
                    return held
                break
        return await self._at_provider(buyer, certificate_id)

    async def submission_document(self, buyer: Buyer, submission_id: str, zone: str) -> Copy:
        """The document of one of the buyer's submissions (``zone``: the state whose document,
        for a certificate signed on several forms; default its first state)."""
        signed_in(buyer)
        row = await self.runtime.outbox.get(submission_id)
        if row is None or row.customer != buyer.code or row.guest:
            raise _not_yours()
        zones = row.zones
        zone = zone.upper() or (zones[0] if zones else "")
        if zone not in zones:
            raise HTTPProblem(
                404,
                "document_not_found",
                f"This certificate was not signed for {zone[:10]!r}; ask for one of "
                f"{', '.join(zones)}.",
            )
        held = await self._held(row, zone)
        if held is not None:
            return held
        certificate_id = row.progress.get("certificates", {}).get(zone)
        if certificate_id:
            return await self._at_provider(buyer, str(certificate_id))
        raise HTTPProblem(
            409,
            "document_being_prepared",
            "Your certificate is being prepared; try again in a few seconds.",
            headers={"Retry-After": "5"},
        )

    async def _held(self, row: Submission, zone: str) -> Copy | None:
        """The document while the outbox still holds it; None once delivery dropped it."""
        outbox = self.runtime.outbox
        content = await outbox.document(row.id)
        # Read after the document: if delivery settled the row meanwhile, what was read may be
        # a signature whose PDF the provider now has; ask the provider instead.
        current = await outbox.get(row.id)
        if current is None or current.state == "delivered" or current.customer != row.customer:
            return None
        stored = SubmittedCertificate.from_record(current.payload)
        reference = (current.progress.get("numbers", {}) or {}).get(zone) or current.id[:12]
        if current.kind != "filled":
            if not content:
                return None
            media_type = current.media_type
            return Copy(content, media_type, copy_filename(zone, reference, media_type))
        if current.media_type == PDF_MEDIA_TYPE and content:
            # Drawn already (a certificate from before forms, drawn once for every state).
            return Copy(content, PDF_MEDIA_TYPE, copy_filename(zone, reference, PDF_MEDIA_TYPE))
        form = stored.forms.get(zone) or None
        if form is not None and form not in stored.form_groups():
            form = None
        try:
            pdf = await self.runtime.deliverer.renderer.render(stored, content, current.id, form)
        except DocumentError as exc:
            logger.error("certwidget: could not draw the buyer's copy of %s: %s", row.id, exc)
            raise HTTPProblem(
                409,
                "document_being_prepared",
                "Your certificate is being prepared; try again in a minute.",
                headers={"Retry-After": "60"},
            ) from exc
        return Copy(pdf, PDF_MEDIA_TYPE, copy_filename(zone, reference, PDF_MEDIA_TYPE))

    async def _at_provider(self, buyer: Buyer, certificate_id: str) -> Copy:
        runtime = self.runtime
        provider = runtime.provider
        timeout = runtime.settings.provider_timeout
        try:
            # Asked afresh, not from the on-file cache: a certificate must be the buyer's now.
            listed = await asyncio.wait_for(provider.certificates_for(buyer.code), timeout)
            own = [c for c in own_certificates(listed, buyer.code) if c.id == certificate_id]
            if not own:
                raise _not_yours()
            if not isinstance(provider, DocumentSource):
                raise HTTPProblem(
                    404,
                    "document_not_available",
                    "This shop's certificate service does not hand back documents; ask the "
                    "shop for a copy of your certificate.",
                )
            attachment = await asyncio.wait_for(provider.document(certificate_id), timeout)
        except (TimeoutError, ProviderError) as exc:
            logger.warning(
                "certwidget: document of certificate %s unavailable: %s", certificate_id, exc
            )
            raise HTTPProblem(
                503,
                "provider_unavailable",
                "Your certificate cannot be fetched right now; try again in a few minutes.",
                headers={"Retry-After": "60"},
            ) from exc
        if attachment is None or not attachment.content:
            raise HTTPProblem(
                404,
                "document_not_available",
                "The certificate service holds no document for this certificate; ask the "
                "shop for a copy.",
            )
        certificate = own[0]
        reference = certificate.number or certificate.id
        return Copy(
            attachment.content,
            attachment.media_type,
            copy_filename(certificate.zone, reference, attachment.media_type),
        )


def _certificate_json(
    certificate: ProviderCertificate, today: dt.date, soon: dt.date
) -> dict[str, Any]:
    expiry = certificate.expiration_date
    expired = certificate.status == "Expired" or (expiry is not None and expiry < today)
    expires_soon = not expired and expiry is not None and expiry <= soon
    return {
        "id": certificate.id,
        "number": certificate.number,
        "zone": certificate.zone,
        "reason": certificate.reason,
        "reasonName": reason_name(certificate.reason),
        "exemptionNumber": certificate.exemption_number,
        "status": (
            "Expired"
            if expired and certificate.status in ("Active", "Pending")
            else certificate.status
        ),
        "expirationDate": expiry.isoformat() if expiry else None,
        "expiresSoon": expires_soon,
        "expired": expired,
        "renewable": (expired or expires_soon) and certificate.status != "Revoked",
        "document": f"/certificates/{certificate.id}/document",
    }


def _received_json(submission: Submission, stored: SubmittedCertificate) -> list[dict[str, Any]]:
    """A submission not at the provider yet, one entry per state, as "Received"."""
    created: dict[str, str] = submission.progress.get("certificates", {})
    return [
        {
            "id": None,
            "submission": submission.id,
            "number": "",
            "zone": zone,
            "reason": stored.reason,
            "reasonName": reason_name(stored.reason),
            "exemptionNumber": stored.number_for(zone),
            "status": "Received",
            "expirationDate": (
                expiry.isoformat() if (expiry := stored.expiration_for(zone)) else None
            ),
            "expiresSoon": False,
            "expired": False,
            "renewable": False,
            "single": stored.single_purchase,
            "document": f"/submissions/{submission.id}/document?zone={zone}",
        }
        for zone in stored.zones
        if zone not in created  # already listed from the provider once it is there
    ]
