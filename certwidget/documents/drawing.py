"""The filled-in certificate drawn with fpdf2: one letter-size page, laid out after the form.

Only :func:`certwidget.documents.certificate.render_certificate_pdf` imports this module,
when it draws, in the renderer's worker processes (see ``rendering``) or where a caller
renders directly. fpdf2 brings fontTools, Pillow's plugins and more: some 29,000 objects that
would otherwise sit in the serving process, where every full garbage collection walks them
all while buyers wait.
"""

from __future__ import annotations

import io

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos

from certwidget.documents.certificate import ENCODING, DocumentError, FilledCertificate, pdf_text
from certwidget.domain import forms as form_data
from certwidget.domain.catalog import Reason, Zone
from certwidget.domain.forms import Form

__all__ = ["draw_certificate", "draw_form"]

# Fields that another row already shows (a zone's number is printed with its state), or that
# stand for the signature block as a whole.
_SHOWN_WITH_OTHERS = frozenset({"number_state", "signature", "name", "title", "date"})
_EXPIRY_WORDS = {
    "none": "the form sets none",
    "end_of_year": "31 December of the year issued",
    "fixed_date": "the date on the Department-issued certificate",
}

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

# Long values wrap; one longer than two lines is cut at a word, with an ellipsis.
_MAX_ROW_LINES = 2


def draw_certificate(cert: FilledCertificate, zones: list[Zone], reason: Reason) -> bytes:
    """The PDF of ``cert``, already checked by ``render_certificate_pdf``; ``zones`` and
    ``reason`` are its codes looked up in the catalog."""
    pdf = _CertificatePage(reference=pdf_text(cert.reference, limit=80))
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


def draw_form(cert: FilledCertificate, form: Form, zones: list[Zone], reason: Reason) -> bytes:
    """The PDF of ``cert`` on ``form``: its title and number, its parts in the form's order
    (each with the values the form asks there), its certification, and one signature block.

    A multi-state form (SST, MTC) lists every zone with that zone's own number and expiry; a
    state's own form is drawn for the zones that take it (normally one).
    """
    pdf = _CertificatePage(reference=pdf_text(cert.reference, limit=80), title=form.title)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    pdf.set_font("helvetica", style="B", size=15)
    pdf.multi_cell(0, 7, pdf_text(form.title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("helvetica", style="B", size=10)
    pdf.cell(
        0, 6, pdf_text(f"Form {form.number}  -  {form.issuer}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT
    )
    pdf.set_font("helvetica", size=8)
    pdf.set_text_color(90, 90, 90)
    pdf.multi_cell(
        0,
        3.8,
        "Completed electronically after the form's structure; the form's own wording is in "
        "substance. States under whose laws the claim is made: "
        + ", ".join(f"{z.code} ({z.name})" for z in zones),
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_text_color(0, 0, 0)
    values = _FormValues(cert, form, zones, reason)
    signed = False
    for part in form.parts:
        signing = "signature" in part.fields
        if signing and signed:
            continue  # a form with two signing sides (01-339) is signed once
        pdf.section(_heading(part.title), small=True)
        for field in part.fields:
            if field in _SHOWN_WITH_OTHERS:
                continue
            for label, value in values.rows(field):
                pdf.row(label, value)
        if signing:
            pdf.certification(form.certification)
            pdf.signature(cert.signature)
            pdf.row("Print name", cert.signer_name)
            if form.asks("title"):
                pdf.row("Title", cert.signer_title)
            pdf.row("Date signed", cert.signed_date.isoformat())
            signed = True
    pdf.section("Term of this certificate", small=True)
    for label, value in values.rows("term"):
        pdf.row(label, value)
    return bytes(pdf.output())


def _heading(title: str) -> str:
    """A part's title up to its first explanation, so the heading stays one line."""
    text = pdf_text(title, limit=200)
    cuts = [at for at in (text.find(mark) for mark in (": ", "; ", " (")) if 0 < at <= 90]
    if cuts:
        return text[: min(cuts)]
    return text if len(text) <= 90 else text[:89] + "…"


class _FormValues:
    """The rows each of a form's fields prints, from the filled certificate."""

    def __init__(self, cert: FilledCertificate, form: Form, zones: list[Zone], reason: Reason):
        self.cert, self.form, self.zones, self.reason = cert, form, zones, reason

    def _number(self, zone: Zone) -> str:
        numbers = self.cert.numbers
        if numbers is None:
            return self.cert.exemption_number
        return numbers.get(zone.code, "")

    def _expiry(self, zone: Zone) -> str:
        cert = self.cert
        date = (
            cert.expirations.get(zone.code)
            if cert.expirations is not None
            else cert.expiration_date
        )
        rule = form_data.expiry_rule(self.form, zone.code)
        why = (
            f"{rule.years} years after signing"
            if rule.kind == "years"
            else _EXPIRY_WORDS.get(rule.kind, "")
        )
        if date is None:
            return f"No expiration ({why})" if rule.kind != "fixed_date" else "Not stated"
        return f"{date.isoformat()} ({why})"

    def rows(self, field: str) -> list[tuple[str, str]]:
        cert, form = self.cert, self.form
        purchaser = cert.purchaser
        seller = cert.seller
        single = cert.purchase_kind == "single"
        if field == "single_or_blanket":
            if not (form.offers_single and form.offers_blanket):
                kind = "Single purchase" if form.offers_single else "Blanket certificate"
                return [("Certificate", f"{kind} (the only kind this form offers)")]
            ticks = ("[X]", "[ ]") if single else ("[ ]", "[X]")
            return [("Certificate", f"{ticks[0]} Single purchase   {ticks[1]} Blanket")]
        if field == "order_reference":
            return [("Invoice / order no.", cert.order_reference if single else "- (blanket)")]
        if field == "purchaser":
            return [("Purchaser", purchaser.name)]
        if field == "purchaser_address":
            place = " ".join(
                p for p in (purchaser.city, purchaser.region, purchaser.postal_code) if p
            )
            return [("Address", ", ".join(p for p in (purchaser.line1, place) if p))]
        if field == "purchaser_phone":
            return [("Phone", "")]
        if field == "seller":
            name = seller.name if seller is not None else cert.seller_name
            return [("Seller", name or "Not named by the shop")]
        if field == "seller_address":
            return [("Seller's address", seller.address if seller is not None else "")]
        if field == "business_type":
            found = form.business_type(cert.business_type) if cert.business_type else None
            shown = f"{found.code}  {found.label}" if found else "Not stated"
            return [("Type of business", shown)]
        if field == "business_description":
            return [("Business / items sold", cert.business_description)]
        if field == "property_description":
            return [("Property purchased", cert.property_description)]
        if field == "reason":
            label = form.reason_label(self.reason.code)
            return [("Reason for exemption", f"{self.reason.code}. {label}")]
        if field == "reason_detail":
            if "reason" in form.fields:
                return []  # the reason row already says it in the form's words
            return [("Claimed for", form.reason_label(self.reason.code))]
        if field == "exemption_number":
            label = form.number_label or "Identification number"
            if len(self.zones) == 1:
                return [(_short(label), self._number(self.zones[0]))]
            return [(f"{z.code} ({z.name})", self._number(z) or "-") for z in self.zones]
        if field == "out_of_state_number":
            return [("Other state's registration", "")]
        if field == "resale_percentage":
            return [("Share for resale", f"{cert.exempt_percentage:g}%")]
        if field == "effective_date":
            return [("Effective date", "As on the Department's certificate")]
        if field == "expiration_date":
            return [(f"Expires ({z.code})", self._expiry(z)) for z in self.zones]
        if field == "term":
            rows = [("Certificate", "Single purchase" if single else "Blanket")]
            rows += [(f"Expires ({z.code})", self._expiry(z)) for z in self.zones]
            if cert.exempt_percentage < 100:
                rows.append(("Exempt percentage", f"{cert.exempt_percentage:g}%"))
            return rows
        return []


def _short(label: str) -> str:
    """A form's number label, up to its explanation, short enough for the label column."""
    at = label.find(" (")
    label = label[:at] if at > 0 else label
    return label if len(label) <= 34 else label[:33].rstrip() + "…"


class _CertificatePage(FPDF):
    """An FPDF page with the certificate's few building blocks."""

    LABEL_WIDTH = 62.0

    def __init__(self, *, reference: str, title: str = "Certificate of Exemption") -> None:
        super().__init__(format="letter", unit="mm")
        self.reference = reference
        self.core_fonts_encoding = ENCODING
        # fpdf replaces "{nb}" anywhere in the page text with the page count; a buyer's text
        # must come out exactly as typed, so the alias is switched off.
        self.alias_nb_pages("")
        self.set_margins(18, 16, 18)
        self.set_auto_page_break(True, margin=20)
        self.set_title(pdf_text(title))
        self.set_creator("certwidget")

    def footer(self) -> None:
        self.set_y(-15)
        self.set_font("helvetica", size=8)
        self.set_text_color(90, 90, 90)
        self.cell(0, 5, f"Reference: {self.reference}    Generated by certwidget", align="C")

    def section(self, title: str, *, small: bool = False) -> None:
        self.ln(2 if small else 4)
        self.set_font("helvetica", style="B", size=9.5 if small else 11)
        self.set_fill_color(235, 238, 242)
        self.cell(0, 6 if small else 7, title, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(0.5 if small else 1)

    def certification(self, text: str) -> None:
        self.set_font("helvetica", size=8.5)
        self.multi_cell(0, 4, pdf_text(text, limit=1200), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(2)

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
