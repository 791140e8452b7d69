"""The filled-in certificate PDF: one page, every value shown literally, bad signatures refused."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import pkgutil
import statistics
import struct
import subprocess
import sys
import time
import zlib
from typing import Any

import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader

import certwidget
from certwidget.documents.certificate import (
    DocumentError,
    FilledCertificate,
    Purchaser,
    pdf_text,
    render_certificate_pdf,
)


def _signature_png(size: tuple[int, int] = (400, 120)) -> bytes:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    ImageDraw.Draw(image).line((10, size[1] - 20, size[0] - 10, 20), fill=(0, 0, 0, 255), width=4)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _cert(**changes: Any) -> FilledCertificate:
    cert = FilledCertificate(
        zones=("WA", "TX"),
        reason="G",
        exemption_number="602123456",
        tax_id_type="state",
        purchaser=Purchaser(
            name="Acme Resale LLC",
            line1="1 Main St",
            city="Seattle",
            region="WA",
            postal_code="98101",
            email="ap@acme.test",
        ),
        signer_name="Ann Buyer",
        signature="Ann Buyer",
        signed_date=dt.date(2025, 3, 1),
        reference="sub_0123456789",
        seller_name="Widget Shop Inc.",
        expiration_date=dt.date(2028, 3, 1),
    )
    return dataclasses.replace(cert, **changes)


def _pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def test_the_certificate_is_one_page_with_every_fact_on_it() -> None:
    pdf = render_certificate_pdf(_cert())
    (text,) = _pages(pdf)
    for expected in (
        "Certificate of Exemption",
        "WA (Washington), TX (Texas)",
        "Acme Resale LLC",
        "1 Main St",
        "Seattle WA 98101",
        "ap@acme.test",
        "Widget Shop Inc.",
        "G. Resale",
        "602123456",
        "100%",
        "2028-03-01",
        "2025-03-01",
        "I declare that the information on this certificate is correct and complete",
        "Reference: sub_0123456789",
    ):
        assert expected in text, expected


def test_markup_in_any_field_is_shown_literally() -> None:
    markup = "<script>alert(1)</script> **bold** <b>x</b> --strike--"
    pdf = render_certificate_pdf(
        _cert(
            purchaser=Purchaser(name=markup, line1=markup, email=markup),
            exemption_number=markup,
            signer_name=markup,
            signature=markup,
            seller_name=markup,
        )
    )
    (text,) = _pages(pdf)
    assert text.count("<script>alert(1)</script>") >= 5
    assert "**bold** <b>x</b> --strike--" in text


def test_the_page_count_alias_is_not_substituted_in_buyer_text() -> None:
    (text,) = _pages(render_certificate_pdf(_cert(reference="{nb}", signer_name="{nb} pages")))
    assert "Reference: {nb}" in text
    assert "{nb} pages" in text


def test_text_outside_the_builtin_fonts_is_replaced_not_fatal() -> None:
    name = "Zoë Ñandú — 東京"
    (text,) = _pages(render_certificate_pdf(_cert(purchaser=Purchaser(name=name), signature=name)))
    assert "Zoë Ñandú — ??" in text


def test_pdf_text_keeps_windows_1252_and_strips_accents_it_cannot_show() -> None:
    # Curly quotes, an en dash, the euro sign and a fraction are all in Windows-1252.
    typographic = "\u201cQuotes\u201d \u2013 \u20ac \u00bd"
    assert pdf_text(typographic) == typographic
    assert pdf_text("Őrség Čapek") == "Orség Capek"
    assert pdf_text("東京") == "??"
    assert pdf_text("line\nbreak\ttab\u202eRLO") == "line break tab RLO"
    assert pdf_text("x" * 500, limit=10) == "x" * 9 + "…"


def test_a_typed_signature_is_labelled_as_typed() -> None:
    (text,) = _pages(render_certificate_pdf(_cert(signature="Ann Q. Buyer")))
    assert "Ann Q. Buyer" in text
    assert "(typed signature)" in text


def test_a_drawn_signature_is_embedded_as_an_image() -> None:
    pdf = render_certificate_pdf(_cert(signature=_signature_png()))
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 1
    assert len(reader.pages[0].images) >= 1
    assert "(drawn signature)" in reader.pages[0].extract_text()


def _corrupt_idat(png: bytes) -> bytes:
    at = png.index(b"IDAT") + 4
    return png[:at] + b"\x00garbage" * 4 + png[at + 32 :]


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (_corrupt_idat(_signature_png()), "could not be decoded"),
        (_signature_png()[:60], "could not be decoded"),
        (b"\x89PNG\r\n\x1a\n" + b"junk" * 10, "not a valid PNG"),
        (b"GIF89a" + b"\x00" * 40, "not a PNG"),
        (b"", "not a PNG"),
    ],
    ids=["corrupt-data", "truncated", "no-header-chunk", "gif", "empty"],
)
def test_a_corrupt_signature_png_raises_a_document_error(signature: bytes, message: str) -> None:
    with pytest.raises(DocumentError, match=message):
        render_certificate_pdf(_cert(signature=signature))


def test_an_oversized_signature_image_is_refused_before_decoding() -> None:
    with pytest.raises(DocumentError, match="pixels"):
        render_certificate_pdf(_cert(signature=_signature_png((5000, 50))))


def test_an_empty_typed_signature_is_refused() -> None:
    with pytest.raises(DocumentError, match="empty"):
        render_certificate_pdf(_cert(signature="   "))


def test_unknown_zones_and_reasons_are_document_errors() -> None:
    with pytest.raises(DocumentError, match="ZZ"):
        render_certificate_pdf(_cert(zones=("WA", "ZZ")))
    with pytest.raises(DocumentError, match="reason"):
        render_certificate_pdf(_cert(reason="Q"))
    with pytest.raises(DocumentError, match="at least one"):
        render_certificate_pdf(_cert(zones=()))


def test_document_error_is_a_value_error() -> None:
    assert issubclass(DocumentError, ValueError)


def test_long_values_keep_the_certificate_on_one_page() -> None:
    long = "word " * 400
    pdf = render_certificate_pdf(
        _cert(
            purchaser=Purchaser(name=long, line1=long, city=long, region=long, email=long),
            seller_name=long,
            exemption_number=long,
            signer_name=long,
            signature=long,
        )
    )
    assert len(_pages(pdf)) == 1


def test_rendering_is_fast() -> None:
    cert = _cert(signature=_signature_png())
    render_certificate_pdf(cert)  # warm up imports and font metrics
    timings = []
    for _ in range(7):
        start = time.perf_counter()
        render_certificate_pdf(cert)
        timings.append(time.perf_counter() - start)
    # Typically ~15 ms; the bound leaves room for a loaded CI machine.
    assert statistics.median(timings) < 0.1


def test_the_examples_in_the_docstrings_hold() -> None:
    import doctest

    import certwidget.documents.certificate

    assert doctest.testmod(certwidget.documents.certificate).failed == 0


def test_serving_imports_no_pdf_library_only_the_processes_that_draw_or_read_do() -> None:
    # fpdf2 (with fontTools) and pypdf are tens of thousands of objects, and every full
    # garbage collection in the serving process walks them all while buyers wait: the
    # server had about 69,000 objects and 50 ms pauses with fpdf2 imported, 42,000 and 25 ms
    # without (this machine).
    # Every module of the package, the embedded sandbox's too, but the drawing itself.
    modules = [
        module.name
        for module in pkgutil.walk_packages(certwidget.__path__, "certwidget.")
        if module.name != "certwidget.documents.drawing"
    ]
    assert "certwidget.sandbox.app" in modules and "certwidget.web.intake" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('fpdf', 'fontTools', 'pypdf') if m in sys.modules))\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert found.strip() == "[]"


def test_a_signature_declaring_millions_of_pixels_is_refused_from_its_header() -> None:
    from certwidget.documents.certificate import MAX_SIGNATURE_PIXELS, verify_signature_png
    from tests.web.test_hostile_documents import hostile_signature

    with pytest.raises(DocumentError, match="4096 x 4096 pixels"):
        verify_signature_png(hostile_signature())
    # The widget's pad at 3x (672 x 160 CSS pixels) fits with room to spare.
    assert MAX_SIGNATURE_PIXELS >= 2016 * 480 * 2
    verify_signature_png(_signature_png((2016, 480)))


def test_a_signature_is_decoded_from_its_pixel_chunks_only() -> None:
    from certwidget.documents.certificate import verify_signature_png

    png = _signature_png()
    end = png.rindex(b"IEND") - 4
    bomb = zlib.compress(b"x" * 2_000_000)
    text = b"Comment\x00\x00" + bomb
    chunk = struct.pack(">I", len(text)) + b"zTXt" + text
    chunk += struct.pack(">I", zlib.crc32(b"zTXt" + text) & 0xFFFFFFFF)
    verify_signature_png(png[:end] + chunk + png[end:])  # the text is never inflated
    with pytest.raises(DocumentError, match="could not be decoded"):
        verify_signature_png(png[: end + 6])  # cut inside IEND
