"""Intake: ``POST {prefix}/certificates`` validated, stored durably, then delivered.

The order of events is the promise made to the buyer: nothing is acknowledged before the
submission (and its document) is committed to the outbox on disk (concurrent submissions share
one commit: see certwidget.outbox.sqlite). With ``deliver_wait`` set, delivery to the
provider is tried at once for that long, so most buyers get the provider's reference in the
answer (201); otherwise (and by default) the answer is 202 and the background deliverer
delivers it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from certwidget.documents import uploads
from certwidget.documents.certificate import DocumentError, verify_signature_png
from certwidget.domain.models import CertificateRequest, CustomerProfile, Exemption, Seller
from certwidget.domain.submission import SubmittedCertificate, UploadedFile
from certwidget.domain.validation import (
    InvalidSubmission,
    validate_filled,
    validate_upload_fields,
)
from certwidget.outbox.base import NewSubmission, Submission
from certwidget.web.buyers import Buyer
from certwidget.web.http import HTTPProblem, json_response, read_body
from certwidget.web.multipart import MultipartError, parse_form
from certwidget.web.runtime import Runtime

logger = logging.getLogger("certwidget")

MAX_JSON_BYTES = 2 * 1024 * 1024
# Multipart framing and the other fields ride on top of the file's own cap.
MAX_MULTIPART_BYTES = uploads.MAX_UPLOAD_BYTES + 64 * 1024
MAX_IDEMPOTENCY_KEY = 200


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key", "").strip()
    if not key:
        raise HTTPProblem(
            400,
            "missing_idempotency_key",
            "Send an Idempotency-Key header (a random id made once per certificate, reused "
            "on retries) so a retried submission never makes a second certificate.",
        )
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise HTTPProblem(
            400,
            "bad_idempotency_key",
            f"The Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} printable characters.",
        )
    return key


def _submitted(
    request: CertificateRequest,
    buyer: Buyer,
    today: dt.date,
    document: uploads.UploadedDocument | None,
    seller: Seller | None,
) -> SubmittedCertificate:
    """The validated request as the outbox keeps it, with who the shop says the buyer is."""
    profile = buyer.profile
    # Only a shop that named the buyer adds to what delivery sends: a bare customer number (or
    # a guest) has nothing to add to the purchaser the buyer entered.
    known = (
        CustomerProfile(code=profile.code, name=profile.name, email=profile.email)
        if profile.name
        else None
    )
    upload = (
        UploadedFile(
            filename=document.filename,
            media_type=document.media_type,
            sha256=document.sha256.hex(),
            size=len(document.content),
        )
        if document is not None
        else None
    )
    return SubmittedCertificate.of(
        request, signed_date=today, customer=known, upload=upload, seller=seller
    )


async def _filled(
    runtime: Runtime, request: Request
) -> tuple[CertificateRequest, str, bytes | None]:
    body = await read_body(request, limit=MAX_JSON_BYTES)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and integers past Python's digit limit;
        # RecursionError is what deeply nested arrays raise.
        raise HTTPProblem(
            400, "malformed_json", f"The body is not valid JSON: {exc}."[:300]
        ) from exc
    if (
        isinstance(data, dict)
        and data.get("purchaseKind") == "single"
        and not runtime.takes_single_purchase
    ):
        # Without the shop's name for the order, "this order only" could not be held to.
        message = "This shop takes blanket certificates only; choose blanket."
        raise InvalidSubmission({"purchaseKind": message})
    # The shop names the order a single-purchase certificate is for; the wire cannot.
    reference = (
        (await runtime.order_reference(request) or "") if runtime.takes_single_purchase else None
    )
    validated = validate_filled(data, order_reference=reference)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return validated, hashlib.sha256(canonical).hexdigest(), None


async def _uploaded(
    runtime: Runtime, request: Request
) -> tuple[CertificateRequest, str, uploads.UploadedDocument]:
    body = await read_body(request, limit=MAX_MULTIPART_BYTES)
    try:
        form = parse_form(
            body, request.headers.get("content-type", ""), max_files=1, max_fields=200
        )
    except MultipartError as exc:
        raise HTTPProblem(
            400, "malformed_multipart", f"The upload could not be read as a form: {exc}."
        ) from exc
    del body  # the parts are their own copies: keep one, not two, while the check runs
    file = form.file("file")
    if file is None:
        raise HTTPProblem(
            422,
            "invalid_fields",
            "Choose the certificate file to upload.",
            fields={"file": "Choose the certificate file to upload (PDF, PNG, JPEG or TIFF)."},
        )
    content = file.content
    fields = {
        "zones": form.getlist("zones"),
        "reason": form.get("reason"),
        "exemptionNumber": form.get("exemptionNumber"),
    }
    validated = validate_upload_fields(fields)
    try:
        document = await uploads.check_upload_async(
            content,
            filename=file.filename or "certificate",
            declared_type=file.content_type,
            limiter=runtime.upload_checks,
        )
    except uploads.UploadRejected as exc:
        retry = {"Retry-After": "10"} if exc.status == 503 else None
        raise HTTPProblem(
            exc.status, exc.code, exc.message, fields={"file": exc.message}, headers=retry
        ) from exc
    described = json.dumps(fields, sort_keys=True).encode()
    digest = hashlib.sha256(described + document.sha256).hexdigest()
    return validated, digest, document


async def receive_certificate(runtime: Runtime, request: Request, buyer: Buyer) -> Response:
    """Handle ``POST {prefix}/certificates`` for an authenticated, same-origin buyer."""
    key = _idempotency_key(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    document: uploads.UploadedDocument | None = None
    try:
        if media_type == "application/json":
            validated, body_hash, _ = await _filled(runtime, request)
        elif media_type == "multipart/form-data":
            validated, body_hash, document = await _uploaded(runtime, request)
        else:
            raise HTTPProblem(
                415,
                "unsupported_media_type",
                "Send a filled-in certificate as application/json or an uploaded one as "
                "multipart/form-data.",
            )
    except InvalidSubmission as exc:
        raise HTTPProblem(422, "invalid_fields", exc.message, fields=exc.fields) from exc

    if not validated.zones:
        return json_response({"notNeeded": True, "zones": list(validated.not_needed)})
    refused = runtime.provider_refusal(validated.reason, validated.exempt_percentage)
    if refused:
        raise HTTPProblem(422, "invalid_fields", " ".join(refused.values()), fields=refused)

    certificate = _submitted(validated, buyer, dt.date.today(), document, runtime.settings.seller)
    if document is None:
        # The PDF is rendered at delivery from what is stored here (certwidget.documents.rendering);
        # the drawn signature is checked now, so that rendering cannot fail after "received".
        signature = validated.signature
        png = signature.png if signature is not None and signature.kind == "drawn" else b""
        if png:
            try:
                await to_thread.run_sync(verify_signature_png, png)
            except DocumentError as exc:
                message = "The drawn signature could not be read; draw it again."
                raise HTTPProblem(
                    422, "invalid_fields", message, fields={"signature.image": message}
                ) from exc
        content, stored_type, filename = png, "image/png" if png else "", ""
    else:
        content, stored_type, filename = document.content, document.media_type, document.filename

    new = NewSubmission(
        customer=buyer.code,
        guest=buyer.guest,
        idempotency_key=key,
        body_hash=body_hash,
        kind="upload" if document is not None else "filled",
        payload=certificate.to_record(),
        document=content,
        media_type=stored_type,
        filename=filename,
    )
    # On disk (committed with whatever else arrived meanwhile) before anything is answered.
    submission, created = await runtime.outbox.add(new)
    if not created and submission.body_hash != body_hash:
        raise HTTPProblem(
            409,
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different certificate. Make a new key "
            "for a new certificate.",
        )
    if not created and submission.state == "failed":
        if submission.unexpected_errors:
            # Not the buyer's doing (certwidget.outbox.delivery gave it up after unexpected errors),
            # and the details, for the shop, are in its log and the outbox.
            raise HTTPProblem(
                422,
                "certificate_undeliverable",
                "This certificate could not be delivered to the tax service because of an "
                "error on the shop's side. Please contact the shop, or fill in a new one.",
            )
        raise HTTPProblem(
            422,
            "certificate_refused",
            f"This certificate was refused: {submission.last_error}. Fill in a new one.",
        )
    if created:
        runtime.deliverer.events.received(submission)
        runtime.ensure_started()
        submission = await _deliver_briefly(runtime, submission)
    # The row stored (for a retried key, the earlier one): what the buyer hears is what it holds.
    stored = SubmittedCertificate.from_record(submission.payload)
    exemptions = runtime.submission_exemptions(submission, stored)
    response = _answer(submission, stored, exemptions, validated.not_needed)
    runtime.remember_submission(response, request, submission)
    if created:
        await runtime.notify(request, exemptions)
    return response


async def _deliver_briefly(runtime: Runtime, submission: Submission) -> Submission:
    """Give delivery ``deliver_wait`` seconds; past that the background deliverer takes over."""
    if runtime.settings.deliver_wait <= 0:
        # Nobody waits for this attempt: the background deliverer starts it at once, in turn.
        runtime.deliverer.wake()
        return submission
    attempt = runtime.deliverer.spawn(submission.id)
    try:
        done = await asyncio.wait_for(asyncio.shield(attempt), runtime.settings.deliver_wait)
    except TimeoutError:
        runtime.deliverer.wake()
        return submission
    except Exception:
        # Stored already: the background deliverer will try again; say why this one failed.
        logger.exception("certwidget: immediate delivery of %s failed", submission.id)
        runtime.deliverer.wake()
        return submission
    if done is None or done.state != "delivered":
        runtime.deliverer.wake()
    return done or submission


def _answer(
    submission: Submission,
    stored: SubmittedCertificate,
    exemptions: list[Exemption],
    not_needed: tuple[str, ...],
) -> JSONResponse:
    delivered = submission.state == "delivered"
    return json_response(
        {
            "submission": {
                "id": submission.id,
                "status": "delivered" if delivered else "received",
                "zones": submission.zones,
                "reason": stored.reason,
                "notNeededZones": list(not_needed),
            },
            "exemptions": [exemption.to_json() for exemption in exemptions],
        },
        status=201 if delivered else 202,
    )
