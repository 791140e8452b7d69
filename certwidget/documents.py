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
only; see :func:`pdf_text` for how other characters are shown.
"""

from __future__ import annotations

import datetime as dt
import io
import unicodedata
from dataclasses import dataclass
from typing import Literal

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos
from PIL import Image

from . import catalog
from .uploads import image_dimensions, sniff_media_type

__all__ = [
    "DocumentError",
    "FilledCertificate",
    "Purchaser",
    "TaxIdType",
    "pdf_text",
    "render_certificate_pdf",
    "verify_signature_png",
]

TaxIdType = Literal["state", "fein", "foreign"]

_TAX_ID_LABELS: dict[str, str] = {
    "state": "State-issued tax ID / permit number",
    "fein": "Federal employer identification number (FEIN)",
    "foreign": "Foreign tax ID number",
}

ATTESTATION = (
    "I declare that the information on this certificate is correct and complete to the best of "
    "my knowledge and belief. I am authorized to sign for the purchaser, and I understand that the "
    "purchaser is liable for any tax, interest and penalties due if it was not eligible to claim "
    "this exemption."
)

# A drawn signature from the widget's canvas is a few tens of kilobytes; anything far larger is
# not a signature, and decoding it would only cost time.
MAX_SIGNATURE_BYTES = 1024 * 1024
MAX_SIGNATURE_SIDE = 4096

# Long values wrap; a value longer than two lines is cut (with an ellipsis) and every value is
# capped in characters, which keeps the certificate on one page whatever a buyer pastes.
_MAX_FIELD_CHARS = 300
_MAX_ROW_LINES = 2

# The built-in fonts are encoded as Windows-1252: Latin-1 plus the typographic characters buyers
# paste (dashes, curly quotes, the euro sign), all of which pypdf extracts back faithfully.
_ENCODING = "windows-1252"


class DocumentError(ValueError):
    """The certificate cannot be rendered from what was given (e.g. a corrupt signature image)."""


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
class FilledCertificate:
    """Everything printed on a filled-in certificate.

    ``signature`` is either the PNG bytes of a drawn signature or, as a ``str``, a typed name.
    ``reference`` is the submission's id (its idempotency key), printed in the footer so a
    reviewer can find the record the PDF came from.
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
        text.encode(_ENCODING)
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
    if isinstance(cert.signature, bytes):
        _check_signature_png(cert.signature)
    elif not cert.signature.strip():
        raise DocumentError("the typed signature is empty")

    pdf = _Certificate(reference=pdf_text(cert.reference, limit=80))
    pdf.add_page()

    pdf.set_font("helvetica", style="B", size=18)
    pdf.cell(0, 10, "Certificate of Exemption", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("helvetica", size=9)
    pdf.set_text_color(90, 90, 90)
    pdf.multi_cell(
        0,
        4.5,
        "Sales and use tax exemption certificate, laid out after the Streamlined Sales Tax "
        "Certificate of Exemption (SSTGB Form F0003). Not all states allow all exemptions; the "
        "purchaser is responsible for being eligible for the exemption claimed in each state.",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_text_color(0, 0, 0)

    pdf.section("1. States under whose laws exemption is claimed")
    pdf.row("States", ", ".join(f"{z.code} ({z.name})" for z in zones))

    pdf.section("2. Purchaser")
    p = cert.purchaser
    pdf.row("Name", p.name)
    pdf.row("Address", p.line1)
    pdf.row("", " ".join(part for part in (p.city, p.region, p.postal_code) if part))
    pdf.row("Country", p.country)
    pdf.row("Email", p.email)
    pdf.row("Seller", cert.seller_name or "Not named (blanket certificate for any seller)")

    pdf.section("3. Reason for exemption")
    pdf.row("Reason", f"{reason.code}. {reason.form_label or reason.name}")
    pdf.row(_TAX_ID_LABELS.get(cert.tax_id_type, "Identification number"), cert.exemption_number)
    pdf.row("Exempt percentage", f"{cert.exempt_percentage:g}%")
    pdf.row(
        "Expires",
        cert.expiration_date.isoformat() if cert.expiration_date else "No expiration stated",
    )

    pdf.section("4. Signature")
    pdf.set_font("helvetica", size=10)
    pdf.multi_cell(0, 5, ATTESTATION, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.signature(cert.signature)
    pdf.row("Print name", cert.signer_name)
    pdf.row("Date signed", cert.signed_date.isoformat())

    return bytes(pdf.output())


def verify_signature_png(data: bytes) -> None:
    """Raise DocumentError unless ``data`` is a PNG the certificate can show, fully decoded.

    Intake calls this before acknowledging a submission, so the PDF rendered later, at
    delivery, cannot fail on the signature.
    """
    _check_signature_png(data)
    try:
        with Image.open(io.BytesIO(data)) as image:
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


class _Certificate(FPDF):
    """An FPDF page with the certificate's few building blocks."""

    LABEL_WIDTH = 62.0

    def __init__(self, *, reference: str) -> None:
        super().__init__(format="letter", unit="mm")
        self.reference = reference
        self.core_fonts_encoding = _ENCODING
        # fpdf replaces "{nb}" anywhere in the page text with the page count; a buyer's text
        # must come out exactly as typed, so the alias is switched off.
        self.alias_nb_pages("")
        self.set_margins(18, 16, 18)
        self.set_auto_page_break(True, margin=20)
        self.set_title("Certificate of Exemption")
        self.set_creator("certwidget")

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", size=8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, f"Reference: {self.reference}    Generated by certwidget", align="C")

    def section(self, title: str) -> None:
        self.ln(4)
        self.set_font("helvetica", style="B", size=11)
        self.set_fill_color(235, 238, 242)
        self.cell(0, 7, title, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def row(self, label: str, value: str) -> None:
        self.set_font("helvetica", size=9)
        self.set_text_color(90, 90, 90)
        self.cell(self.LABEL_WIDTH, 6, pdf_text(label))
        self.set_font("helvetica", size=10)
        self.set_text_color(0, 0, 0)
        text = self._fit(pdf_text(value) or "-", _MAX_ROW_LINES)
        self.multi_cell(0, 6, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def _fit(self, text: str, max_lines: int) -> str:
        """``text`` cut at a word, with an ellipsis, so it wraps to at most ``max_lines`` lines."""

        def lines(candidate: str) -> int:
            wrapped = self.multi_cell(0, 6, candidate, dry_run=True, output=MethodReturnValue.LINES)
            assert isinstance(wrapped, list)  # what output=LINES returns
            return len(wrapped)

        if lines(text) <= max_lines:
            return text
        words = text.split(" ")
        # Halving the word count first keeps the number of trial layouts small.
        while len(words) > 1 and lines(" ".join(words[: len(words) // 2]) + "…") > max_lines:
            words = words[: len(words) // 2]
        while len(words) > 1 and lines(" ".join(words) + "…") > max_lines:
            words.pop()
        return " ".join(words) + "…" if len(words) > 1 else text[:40] + "…"

    def signature(self, signature: bytes | str) -> None:
        top = self.get_y()
        left = self.l_margin + self.LABEL_WIDTH
        self.set_font("helvetica", size=9)
        self.set_text_color(90, 90, 90)
        self.cell(self.LABEL_WIDTH, 6, "Signature of authorized purchaser")
        self.set_text_color(0, 0, 0)
        if isinstance(signature, bytes):
            try:
                # Always a BytesIO: fpdf would treat a str as a path or URL to fetch.
                self.image(io.BytesIO(signature), x=left, y=top, w=80, h=22, keep_aspect_ratio=True)
            except Exception as exc:
                # The decoder (Pillow, zlib) fails in many ways on a corrupt image; callers need
                # one clear error rather than whichever one it happened to be.
                raise DocumentError("the signature image could not be decoded as a PNG") from exc
            label = "(drawn signature)"
        else:
            # A script-like look from the built-in fonts, labelled so no one mistakes it for ink.
            self.set_xy(left, top)
            self.set_font("times", style="I", size=22)
            self.cell(0, 14, pdf_text(signature, limit=60))
            label = "(typed signature)"
        self.set_xy(left, top + 22)
        self.set_font("helvetica", size=8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 4, label, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_draw_color(150, 150, 150)
        self.line(left, top + 22, left + 90, top + 22)
        self.set_text_color(0, 0, 0)
        self.ln(2)
