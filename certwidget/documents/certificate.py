"""The filled-in certificate as a one-page PDF, attached to the certificate at the provider.

The layout follows the Streamlined Sales Tax Certificate of Exemption (states, purchaser, reason,
identification number, signature and attestation), so a reviewer reads it like the paper form.

>>> import datetime as dt
>>> pdf = render_certificate_pdf(FilledCertificate(
...     zones=("WA",), reason="G", exemption_number="602123456", tax_id_type="state",
...     purchaser=Purchaser(name="Acme Resale LLC", line1="1 Main St", city="Seattle",
...                         region="WA", postal_code="98101", email="ap@acme.test"),
...     signer_name="Ann Buyer", signature="Ann Buyer", signed_date=dt.date(2025, 3, 1),
...     reference="sub_123"))
>>> pdf[:5]
b'%PDF-'

Every value is placed as plain text with fpdf's ``cell``/``multi_cell`` (markdown off, page-number
alias off), so nothing a buyer types is interpreted. The built-in PDF fonts cover Windows-1252
only; see :func:`pdf_text` for how other characters are shown. This module checks and describes
the certificate; the drawing itself is in ``drawing``, imported only when one is drawn.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
import unicodedata
from dataclasses import dataclass

from certwidget.documents.uploads import image_dimensions, png_chunks, sniff_media_type
from certwidget.domain import catalog
from certwidget.domain import forms as form_data
from certwidget.domain.models import PurchaseKind, Purchaser, Seller, TaxIdType

__all__ = [
    "DocumentError",
    "FilledCertificate",
    "Purchaser",
    "Seller",
    "TaxIdType",
    "pdf_text",
    "render_certificate_pdf",
    "verify_signature_png",
]

# A drawn signature from the widget's canvas is a few tens of kilobytes; anything far larger is
# not a signature, and decoding it would only cost time.
MAX_SIGNATURE_BYTES = 1024 * 1024
MAX_SIGNATURE_SIDE = 4096
# The widget's pad (static/certwidget.js, .cw-pad in certwidget.css) is at most 42em x 10em CSS
# pixels, 672 x 160 at the default 16 px font, drawn at the screen's devicePixelRatio: 430,000
# pixels at 2x, 970,000 at 3x. Twice that leaves room for a larger font or browser zoom; a PNG
# declaring more is refused from its header, before a byte of it is inflated.
MAX_SIGNATURE_PIXELS = 2_000_000
# Decoding holds 4 bytes a pixel (8 MB at the limit); at most this many decode at once, so a
# burst of hostile signatures costs a bounded few tens of MB whatever its size.
_DECODES = threading.BoundedSemaphore(2)
# The chunks that carry a PNG's pixels. Everything else (text, colour profiles) is ignored by
# the decode check: compressed text alone may inflate to 64 MB in Pillow.
_PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})

# Every value is capped in characters (and wraps to at most two lines, see drawing),
# which keeps the certificate on one page whatever a buyer pastes.
_MAX_FIELD_CHARS = 300

# The built-in fonts are encoded as Windows-1252: Latin-1 plus the typographic characters buyers
# paste (dashes, curly quotes, the euro sign), all of which pypdf extracts back faithfully.
ENCODING = "windows-1252"


class DocumentError(ValueError):
    """The certificate cannot be rendered from what was given (e.g. a corrupt signature image)."""


@dataclass(frozen=True, slots=True)
class FilledCertificate:
    """Everything printed on a filled-in certificate.

    ``signature`` is either the PNG bytes of a drawn signature or, as a ``str``, a typed name.
    ``reference`` is the submission's id (its idempotency key), printed in the footer so a
    reviewer can find the record the PDF came from.

    ``form`` names the form drawn (a ``certwidget.domain.forms`` id): its title and number,
    its parts in its order and its certification, for the ``zones`` that take it. Without one,
    the generic certificate laid out after the SST form is drawn (certificates signed before
    forms, which must come out as they were signed).
    """

    zones: tuple[str, ...]
    reason: str
    exemption_number: str
    tax_id_type: TaxIdType
    purchaser: Purchaser
    signer_name: str
    signature: bytes | str
    signed_date: dt.date
    reference: str
    seller_name: str = ""
    expiration_date: dt.date | None = None
    exempt_percentage: float = 100.0
    form: str = ""
    seller: Seller | None = None
    #: The number for each zone (a form with a line per state prints each).
    numbers: dict[str, str] | None = None
    #: The expiration date for each zone (None: no expiry).
    expirations: dict[str, dt.date | None] | None = None
    business_type: str = ""
    business_description: str = ""
    property_description: str = ""
    purchase_kind: PurchaseKind = "blanket"
    order_reference: str = ""
    signer_title: str = ""


def pdf_text(value: str, *, limit: int = _MAX_FIELD_CHARS) -> str:
    """``value`` as the built-in PDF fonts can show it.

    Characters outside Windows-1252 are decomposed and their accents dropped when that yields a
    showable letter ("Ő" becomes "O"), and replaced with "?" otherwise ("東京" becomes "??"), so
    the PDF never fails to render and never silently drops a character. Control characters become
    spaces (every field is one line) and the result is cut at ``limit`` characters.

    >>> pdf_text("Zoë Ñandú — 東京 Łódź")
    'Zoë Ñandú — ?? ?ódz'
    """
    out: list[str] = []
    for ch in unicodedata.normalize("NFC", value):
        if unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"}:
            out.append(" ")
        elif _showable(ch):
            out.append(ch)
        else:
            base = "".join(
                c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c)
            )
            out.append(base if base and _showable(base) else "?")
    text = " ".join("".join(out).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _showable(text: str) -> bool:
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def render_certificate_pdf(cert: FilledCertificate) -> bytes:
    """The certificate as PDF bytes; raises :class:`DocumentError` when it cannot be rendered."""
    if not cert.zones:
        raise DocumentError("a certificate must cover at least one state")
    try:
        zones = [catalog.zone(code) for code in cert.zones]
        reason = catalog.reason(cert.reason)
    except KeyError as exc:  # UnknownZone / UnknownReason carry a readable message
        raise DocumentError(str(exc)) from None
    form: form_data.Form | None = None
    if cert.form:
        try:
            form = form_data.form(cert.form)
        except KeyError as exc:
            raise DocumentError(str(exc)) from None
        if reason.code not in form.reasons:
            raise DocumentError(f"the {form.number} has no reason {reason.code!r}")
    if isinstance(cert.signature, bytes):
        _check_signature_png(cert.signature)
    elif not cert.signature.strip():
        raise DocumentError("the typed signature is empty")

    # fpdf2 (with fontTools) is imported here, not with this module: the serving process only
    # validates, and every full garbage collection there would walk its ~29,000 objects.
    from certwidget.documents.drawing import draw_certificate, draw_form

    if form is not None:
        return draw_form(cert, form, zones, reason)
    return draw_certificate(cert, zones, reason)


def verify_signature_png(data: bytes) -> None:
    """Raise DocumentError unless ``data`` is a PNG the certificate can show, fully decoded.

    Its size and pixel count are checked from the header first, so a small file declaring a
    huge image is refused without inflating anything; then its pixels are decoded, at most two
    signatures at a time.

    Intake calls this before acknowledging a submission, so the PDF rendered later, at
    delivery, cannot fail on the signature.
    """
    _check_signature_png(data)
    try:
        # Only the pixel chunks are decoded; their CRCs are checked by Pillow as it reads.
        pixels = b"".join(
            data[start - 8 : stop + 4]
            for kind, start, stop in png_chunks(data)
            if kind in _PIXEL_CHUNKS
        )
    except ValueError as exc:
        raise DocumentError(f"the signature image could not be decoded as a PNG: {exc}") from None
    # Imported at the first signature, not with the package: most processes never decode one.
    from PIL import Image

    with _DECODES:
        try:
            with Image.open(io.BytesIO(data[:8] + pixels), formats=["PNG"]) as image:
                image.load()
        except Exception as exc:  # Pillow raises many types for a corrupt image
            raise DocumentError("the signature image could not be decoded as a PNG") from exc


def _check_signature_png(data: bytes) -> None:
    if len(data) > MAX_SIGNATURE_BYTES:
        raise DocumentError(
            f"the signature image is {len(data)} bytes; at most {MAX_SIGNATURE_BYTES} are accepted"
        )
    if sniff_media_type(data[:16]) != "image/png":
        raise DocumentError("the drawn signature is not a PNG image")
    try:
        width, height = image_dimensions(data, "image/png")
    except ValueError as exc:
        raise DocumentError(f"the signature image is not a valid PNG: {exc}") from None
    if width > MAX_SIGNATURE_SIDE or height > MAX_SIGNATURE_SIDE:
        raise DocumentError(
            f"the signature image is {width} x {height} pixels; "
            f"at most {MAX_SIGNATURE_SIDE} on a side are accepted"
        )
    if width * height > MAX_SIGNATURE_PIXELS:
        raise DocumentError(
            f"the signature image is {width} x {height} pixels; "
            f"at most {MAX_SIGNATURE_PIXELS:,} pixels are accepted"
        )
