"""The PDF of a filled-in certificate, rendered from what the outbox stored.

Rendering takes most of a submission's CPU time (fpdf2, about 20 ms), and the buyer does not
need the PDF to hear "received": the validated fields and the drawn signature are on disk
first, and the PDF is made at delivery, from exactly those, before it is attached.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import Any

from certwidget.documents.certificate import (
    DocumentError,
    FilledCertificate,
    Purchaser,
    TaxIdType,
    render_certificate_pdf,
)
from certwidget.documents.workers import WorkerDied, WorkerPool, WorkerTimedOut, WorkerUnavailable

PDF_MEDIA_TYPE = "application/pdf"
PDF_FILENAME = "certificate.pdf"
RENDER_TIMEOUT = 30.0
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)

# Rendering is pure CPU (fpdf2, about 20 ms): in worker processes it runs on another core
# instead of holding the server's GIL while buyers wait for their answers.
RENDER_SOURCE = f"""
import json, sys
sys.path.insert(0, {_PACKAGE_ROOT!r})
from certwidget.documents.rendering import render_stored
import certwidget.documents.drawing  # fpdf2: imported while warming up, not at the first render
send(b"ready")
while (data := receive()) is not None:
    size = int.from_bytes(data[:4], "big")
    job = json.loads(data[4 : 4 + size])
    try:
        send(b"\\x00" + render_stored(job["payload"], data[4 + size :], job["reference"]))
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


def render_in_worker(payload: dict[str, Any], signature_png: bytes, reference: str) -> bytes:
    """:func:`render_stored` in a worker process; in this process if none can run.

    Blocks: call it from a thread. Raises DocumentError when the stored fields cannot be drawn.
    """
    job = json.dumps({"payload": payload, "reference": reference}).encode()
    try:
        answer = _render_pool().call(
            len(job).to_bytes(4, "big") + job + signature_png, timeout=RENDER_TIMEOUT
        )
    except (WorkerUnavailable, WorkerDied, WorkerTimedOut) as exc:
        logger.warning("certwidget: rendering in this process (%s)", exc or type(exc).__name__)
        return render_stored(payload, signature_png, reference)
    if answer[:1] != b"\x00":
        raise DocumentError(answer[1:].decode("utf-8", "replace"))
    return answer[1:]
