"""The PDF of a filled-in certificate, rendered from what the outbox stored.

Rendering takes most of a submission's CPU time (fpdf2, about 20 ms), and the buyer does not
need the PDF to hear "received": the validated fields and the drawn signature are on disk
first, and the PDF is made at delivery, from exactly those, before it is attached.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from anyio import CapacityLimiter, to_thread

from certwidget.documents.certificate import (
    DocumentError,
    FilledCertificate,
    render_certificate_pdf,
)
from certwidget.documents.workers import WorkerDied, WorkerPool, WorkerTimedOut, WorkerUnavailable
from certwidget.domain.submission import SubmittedCertificate

PDF_MEDIA_TYPE = "application/pdf"
PDF_FILENAME = "certificate.pdf"
RENDER_TIMEOUT = 30.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

# Rendering is pure CPU (fpdf2, about 20 ms): in worker processes it runs on another core
# instead of holding the server's GIL while buyers wait for their answers.
RENDER_SOURCE = f"""
import json, sys
sys.path.insert(0, {_PACKAGE_ROOT!r})
from certwidget.documents.rendering import render_record
import certwidget.documents.drawing  # fpdf2: imported while warming up, not at the first render
send(b"ready")
while (data := receive()) is not None:
    size = int.from_bytes(data[:4], "big")
    job = json.loads(data[4 : 4 + size])
    try:
        send(b"\\x00" + render_record(
            job["record"], data[4 + size :], job["reference"], job.get("form")
        ))
    except Exception as exc:
        send(b"\\x01" + repr(exc).encode())
"""
_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def printed_number(numbers: dict[str, str], fallback: str) -> str:
    """One number for the form, or each state's when they differ."""
    distinct = set(numbers.values())
    if len(distinct) <= 1:
        return next(iter(distinct), fallback)
    return "; ".join(f"{zone}: {number}" for zone, number in numbers.items())


def render_stored(
    certificate: SubmittedCertificate,
    signature_png: bytes,
    reference: str,
    form: str | None = None,
) -> bytes:
    """Render a stored filled-in certificate with its drawn signature (the row's document).

    ``form`` picks the form (one of ``certificate.form_groups()``): its PDF covers the zones
    that took that form. A record from before forms has none: it is drawn on the generic
    certificate it was signed on, for every zone.

    Raises DocumentError when the record cannot be drawn (an upload's, or one without a date).
    """
    purchaser, signature = certificate.purchaser, certificate.signature
    if purchaser is None or signature is None or certificate.signed_date is None:
        raise DocumentError(
            "only a filled-in certificate (purchaser, signature and signing date) can be rendered"
        )
    if form:
        groups = certificate.form_groups()
        if form not in groups:
            raise DocumentError(f"this certificate has no state on form {form!r}")
        zones = groups[form]
        return render_certificate_pdf(
            FilledCertificate(
                zones=zones,
                reason=certificate.reason,
                exemption_number=printed_number({z: certificate.number_for(z) for z in zones}, ""),
                tax_id_type=certificate.tax_id_type,
                purchaser=purchaser,
                signer_name=signature.name or purchaser.name,
                signature=signature_png if signature.kind == "drawn" else signature.name,
                signed_date=certificate.signed_date,
                reference=reference,
                exempt_percentage=certificate.exempt_percentage,
                form=form,
                seller=certificate.seller,
                numbers={z: certificate.number_for(z) for z in zones},
                expirations={z: certificate.expiration_for(z) for z in zones},
                business_type=certificate.business_types.get(form, ""),
                business_description=certificate.business_description,
                property_description=certificate.property_description,
                purchase_kind=certificate.purchase_kind,
                order_reference=certificate.order_reference,
                signer_title=certificate.signer_title,
            )
        )
    return render_certificate_pdf(
        FilledCertificate(
            zones=certificate.zones,
            reason=certificate.reason,
            exemption_number=printed_number(
                dict(certificate.numbers), certificate.exemption_number
            ),
            tax_id_type=certificate.tax_id_type,
            purchaser=purchaser,
            signer_name=signature.name or purchaser.name,
            signature=signature_png if signature.kind == "drawn" else signature.name,
            signed_date=certificate.signed_date,
            reference=reference,
            expiration_date=certificate.expiration_date,
            exempt_percentage=certificate.exempt_percentage,
        )
    )


def render_record(
    record: dict[str, Any], signature_png: bytes, reference: str, form: str | None = None
) -> bytes:
    """:func:`render_stored` from the stored record: what a render worker receives."""
    return render_stored(SubmittedCertificate.from_record(record), signature_png, reference, form)


logger = logging.getLogger("certwidget.outbox.delivery")


def _render_pool() -> WorkerPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WorkerPool(RENDER_SOURCE, workers=1)
        return _pool


def warm_renderer() -> None:
    """Start the render worker in the background (it imports certwidget: about a second)."""
    threading.Thread(target=_render_pool().warm, name="certwidget-warm", daemon=True).start()


def render_in_worker(
    certificate: SubmittedCertificate,
    signature_png: bytes,
    reference: str,
    form: str | None = None,
) -> bytes:
    """:func:`render_stored` in a worker process; in this process if none can run.

    Blocks: call it from a thread. Raises DocumentError when the stored fields cannot be drawn.
    """
    job = json.dumps(
        {"record": certificate.to_record(), "reference": reference, "form": form}
    ).encode()
    try:
        answer = _render_pool().call(
            len(job).to_bytes(4, "big") + job + signature_png, timeout=RENDER_TIMEOUT
        )
    except (WorkerUnavailable, WorkerDied, WorkerTimedOut) as exc:
        logger.warning("certwidget: rendering in this process (%s)", exc or type(exc).__name__)
        return render_stored(certificate, signature_png, reference, form)
    if answer[:1] != b"\x00":
        raise DocumentError(answer[1:].decode("utf-8", "replace"))
    return answer[1:]


@runtime_checkable
class CertificateRenderer(Protocol):
    """Draws a filled-in certificate's PDF at delivery: the document seam.

    The middleware takes one as ``renderer=``; the default is :class:`WorkerRenderer`.
    ``form`` names one form family of the certificate (None: the certificate as a whole, as
    records from before form families were drawn).
    """

    def warm(self) -> None:
        """Get ready in the background (e.g. start a worker), without blocking."""
        ...

    async def render(
        self,
        certificate: SubmittedCertificate,
        signature_png: bytes,
        reference: str,
        form: str | None = None,
    ) -> bytes:
        """The PDF; raises :class:`DocumentError` when the stored fields cannot be drawn."""
        ...


class WorkerRenderer:
    """Renders in a worker process (see :func:`render_in_worker`), waited on from a thread.

    Only a few threads wait on the worker at once, so renders cannot take every thread of
    anyio's pool from the requests that need one.
    """

    def __init__(self, *, waiting_threads: int = 2) -> None:
        self._limiter = CapacityLimiter(waiting_threads)

    def warm(self) -> None:
        warm_renderer()

    async def render(
        self,
        certificate: SubmittedCertificate,
        signature_png: bytes,
        reference: str,
        form: str | None = None,
    ) -> bytes:
        return await to_thread.run_sync(
            lambda: render_in_worker(certificate, signature_png, reference, form),
            limiter=self._limiter,
        )


class InProcessRenderer:
    """Renders in a thread of this process: for tests, or where no process may be started."""

    def warm(self) -> None:
        return None

    async def render(
        self,
        certificate: SubmittedCertificate,
        signature_png: bytes,
        reference: str,
        form: str | None = None,
    ) -> bytes:
        return await to_thread.run_sync(
            lambda: render_stored(certificate, signature_png, reference, form)
        )
