"""Upload checks: the content decides what a file is, and a hostile PDF costs bounded time."""

from __future__ import annotations

import hashlib
import io
import struct
import time

import pytest
from fpdf import FPDF
from PIL import Image
from pypdf import PdfReader, PdfWriter

from certwidget.documents.uploads import (
    MAX_UPLOAD_BYTES,
    UploadRejected,
    check_upload,
    check_upload_async,
    image_dimensions,
    sanitize_filename,
    sniff_media_type,
)


def _pdf(pages: int = 1) -> bytes:
    doc = FPDF()
    doc.set_font("helvetica")
    for n in range(pages):
        doc.add_page()
        doc.cell(text=f"Certificate page {n + 1}")
    return bytes(doc.output())


def _image(kind: str, size: tuple[int, int] = (60, 40)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, kind)
    return out.getvalue()


def _rejected(content: bytes, **kwargs: object) -> UploadRejected:
    options: dict[str, object] = {"filename": "certificate.pdf", "declared_type": None, **kwargs}
    with pytest.raises(UploadRejected) as info:
        check_upload(content, **options)  # type: ignore[arg-type]
    return info.value


def test_sniffing_recognises_the_four_accepted_formats_by_magic_bytes() -> None:
    assert sniff_media_type(_pdf()[:16]) == "application/pdf"
    assert sniff_media_type(_image("PNG")[:16]) == "image/png"
    assert sniff_media_type(_image("JPEG")[:16]) == "image/jpeg"
    assert sniff_media_type(b"II*\x00\x08\x00\x00\x00") == "image/tiff"
    assert sniff_media_type(b"MM\x00*\x00\x00\x00\x08") == "image/tiff"


def test_sniffing_rejects_everything_else() -> None:
    for head in (b"MZ\x90\x00", b"<html>", b"GIF89a", b"PK\x03\x04", b"", b" %PDF-1.7"):
        assert sniff_media_type(head) is None, head


def test_a_pdf_that_opens_is_accepted() -> None:
    doc = check_upload(_pdf(2), filename="cert.pdf", declared_type="application/pdf")
    assert doc.media_type == "application/pdf"
    assert doc.filename == "cert.pdf"
    assert PdfReader(io.BytesIO(doc.content)).pages


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "TIFF"])
def test_images_are_accepted_with_their_real_type(kind: str) -> None:
    content = _image(kind)
    doc = check_upload(content, filename=f"scan.{kind.lower()}", declared_type=None)
    assert doc.media_type == f"image/{kind.lower()}"
    assert doc.content is content


def test_an_empty_file_is_a_400() -> None:
    rejected = _rejected(b"")
    assert (rejected.status, rejected.code) == (400, "empty_file")


def test_a_file_over_ten_megabytes_is_a_413() -> None:
    assert MAX_UPLOAD_BYTES == 10 * 1024 * 1024
    rejected = _rejected(b"%PDF-1.7\n" + b"0" * MAX_UPLOAD_BYTES)
    assert (rejected.status, rejected.code) == (413, "file_too_large")
    assert "10 MB" in rejected.message


def test_an_executable_named_pdf_is_a_415_naming_the_accepted_types() -> None:
    rejected = _rejected(
        b"MZ\x90\x00\x03" + b"\x00" * 100, filename="cert.pdf", declared_type="application/pdf"
    )
    assert (rejected.status, rejected.code) == (415, "unsupported_file_type")
    for name in ("PDF", "PNG", "JPEG", "TIFF"):
        assert name in rejected.message
    assert "application/pdf" in rejected.message


def test_content_wins_over_the_declared_type_and_the_name() -> None:
    doc = check_upload(_image("PNG"), filename="cert.pdf", declared_type="application/pdf")
    assert doc.media_type == "image/png"
    assert doc.filename == "cert.png"


def test_a_pdf_without_an_end_marker_is_a_422() -> None:
    rejected = _rejected(_pdf()[:-200])
    assert (rejected.status, rejected.code) == (422, "unreadable_file")


def test_a_pdf_with_a_broken_header_is_a_422() -> None:
    rejected = _rejected(b"%PDF-x.y\n" + _pdf()[9:])
    assert rejected.status == 422


def test_a_pdf_without_pages_is_a_422() -> None:
    writer = PdfWriter()
    out = io.BytesIO()
    writer.write(out)
    rejected = _rejected(out.getvalue())
    assert rejected.status == 422
    assert "no pages" in rejected.message


def test_a_password_protected_pdf_is_a_422_and_says_why() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(_pdf()))
    writer.encrypt(user_password="secret", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    rejected = _rejected(out.getvalue())
    assert rejected.status == 422
    assert "password" in rejected.message


def test_a_pdf_with_only_an_owner_password_is_accepted() -> None:
    writer = PdfWriter(clone_from=io.BytesIO(_pdf()))
    writer.encrypt(user_password="", owner_password="owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    doc = check_upload(out.getvalue(), filename="c.pdf", declared_type=None)
    assert doc.media_type == "application/pdf"


def _pathological_pdf(size: int) -> bytes:
    # A broken startxref sends pypdf into rebuilding the cross-reference table from the whole
    # file, and a huge count of objects, none of them a catalog, makes it search them all: about
    # six seconds in-process for 10 MB.
    parts = [b"%PDF-1.7\n"]
    total = 0
    number = 1
    while total < size:
        obj = b"%d 0 obj\n<< /Type /Page /Parent 999999 0 R >>\nendobj\n" % number
        parts.append(obj)
        total += len(obj)
        number += 1
    parts.append(b"trailer\n<< /Root 1 0 R >>\nstartxref\n5\n%%EOF\n")
    return b"".join(parts)


def test_a_pathological_ten_megabyte_pdf_is_a_422_in_bounded_time() -> None:
    check_upload(_pdf(), filename="warm.pdf", declared_type=None)  # workers started once
    content = _pathological_pdf(MAX_UPLOAD_BYTES - 4096)
    start = time.monotonic()
    rejected = _rejected(content)
    elapsed = time.monotonic() - start
    assert rejected.status == 422
    assert elapsed < 2.0


def test_deeply_nested_arrays_are_a_422_in_bounded_time() -> None:
    check_upload(_pdf(), filename="warm.pdf", declared_type=None)  # workers started once
    depth = 4_000_000
    content = (
        b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R /X "
        + b"[" * depth
        + b"]" * depth
        + b" >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
        + b"trailer\n<< /Root 1 0 R /Size 3 >>\nstartxref\n9\n%%EOF\n"
    )
    start = time.monotonic()
    rejected = _rejected(content)
    assert rejected.status == 422
    assert time.monotonic() - start < 2.0


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + ihdr + b"\x00" * 4 + b"\x00" * 12


def test_image_dimensions_are_read_from_the_headers() -> None:
    assert image_dimensions(_image("PNG", (61, 41)), "image/png") == (61, 41)
    assert image_dimensions(_image("JPEG", (62, 42)), "image/jpeg") == (62, 42)
    assert image_dimensions(_image("TIFF", (63, 43)), "image/tiff") == (63, 43)
    big_endian = (
        b"MM\x00*\x00\x00\x00\x08"
        + b"\x00\x02"
        + struct.pack(">HHIHH", 256, 3, 1, 64, 0)
        + struct.pack(">HHII", 257, 4, 1, 44)
    )
    assert image_dimensions(big_endian, "image/tiff") == (64, 44)


def test_a_png_claiming_zero_pixels_is_a_422() -> None:
    rejected = _rejected(_png_header(0, 10), filename="x.png")
    assert rejected.status == 422


def test_an_absurdly_large_image_is_a_422() -> None:
    rejected = _rejected(_png_header(100_000, 100_000), filename="x.png")
    assert rejected.status == 422
    assert "100000 x 100000" in rejected.message


def test_a_jpeg_without_a_frame_header_is_a_422() -> None:
    # SOI, an APP0 segment, then start-of-scan: no SOF, so no size.
    content = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xda"
    assert _rejected(content + b"\x00" * 64, filename="x.jpg").status == 422


def test_a_jpeg_of_fill_bytes_is_rejected_quickly() -> None:
    content = b"\xff\xd8" + b"\xff" * (MAX_UPLOAD_BYTES - 2)
    start = time.monotonic()
    assert _rejected(content, filename="x.jpg").status == 422
    assert time.monotonic() - start < 1.0


def test_a_tiff_pointing_outside_itself_is_a_422() -> None:
    assert _rejected(b"II*\x00\xff\xff\x00\x00" + b"\x00" * 16, filename="x.tif").status == 422


def test_filenames_keep_only_the_base_name() -> None:
    assert sanitize_filename("../../etc/passwd.pdf", "application/pdf") == "passwd.pdf"
    assert sanitize_filename("C:\\Users\\me\\cert.pdf", "application/pdf") == "cert.pdf"


def test_filenames_lose_control_and_direction_characters() -> None:
    assert sanitize_filename("a\r\nb\x00c.pdf", "application/pdf") == "abc.pdf"
    # U+202E would make "cert\u202efdp.exe" look like "certexe.pdf" in a list of files.
    assert sanitize_filename("cert\u202efdp.exe", "application/pdf") == "certfdp.exe.pdf"


def test_filenames_get_the_extension_of_their_content() -> None:
    assert sanitize_filename("scan", "image/jpeg") == "scan.jpg"
    assert sanitize_filename("scan.JPEG", "image/jpeg") == "scan.jpeg"
    assert sanitize_filename("scan.tif", "application/pdf") == "scan.pdf"
    assert sanitize_filename(".hidden.pdf", "application/pdf") == "hidden.pdf"


def test_filenames_are_at_most_120_characters_with_their_extension() -> None:
    name = sanitize_filename("x" * 500 + ".pdf", "application/pdf")
    assert len(name) == 120
    assert name.endswith(".pdf")


def test_an_empty_filename_gets_a_neutral_one() -> None:
    assert sanitize_filename("", "application/pdf") == "certificate.pdf"
    assert sanitize_filename("../", "image/png") == "certificate.png"
    assert sanitize_filename(" . ", "image/tiff") == "certificate.tif"


@pytest.mark.anyio
async def test_the_async_check_runs_off_the_event_loop() -> None:
    doc = await check_upload_async(_pdf(), filename="c.pdf", declared_type=None)
    assert doc.media_type == "application/pdf"


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["pdf", "png", "jpeg"])
async def test_every_accepted_upload_carries_the_sha256_of_its_bytes(kind: str) -> None:
    # A PDF's digest comes from the worker that read it, an image's from the thread that
    # measured it, a blocking check's from the caller: all must be the digest of the content.
    content = _pdf(2) if kind == "pdf" else _image(kind)
    expected = hashlib.sha256(content).digest()
    awaited = await check_upload_async(content, filename="c", declared_type=None)
    blocking = check_upload(content, filename="c", declared_type=None)
    assert awaited.sha256 == blocking.sha256 == expected


@pytest.mark.anyio
async def test_without_a_pdf_reader_the_digest_is_made_by_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from certwidget.documents import uploads
    from certwidget.documents.pdfcheck import PdfChecker
    from tests.support import pdfworkers

    checker = PdfChecker(workers=1, worker_source=pdfworkers.WITHOUT_PYPDF)
    monkeypatch.setattr(uploads, "default_checker", lambda: checker)
    try:
        content = _pdf()
        doc = await check_upload_async(content, filename="c.pdf", declared_type=None)
    finally:
        checker.close()
    assert doc.sha256 == hashlib.sha256(content).digest()


def test_the_examples_in_the_docstrings_hold() -> None:
    import doctest

    import certwidget.documents.uploads

    assert doctest.testmod(certwidget.documents.uploads).failed == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"<html>not a document</html>",
        b"%PDF-1.7\nno end marker",
        b"%PDF-1.7\n" + b"junk" * 100 + b"\nstartxref\n5\n%%EOF\n",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    ],
)
async def test_the_async_check_refuses_exactly_as_the_blocking_one(content: bytes) -> None:
    with pytest.raises(UploadRejected) as blocking:
        check_upload(content, filename="c.pdf", declared_type="application/pdf")
    with pytest.raises(UploadRejected) as awaited:
        await check_upload_async(content, filename="c.pdf", declared_type="application/pdf")
    assert repr(awaited.value) == repr(blocking.value)


def test_a_multi_picture_jpeg_is_accepted_with_its_further_pictures() -> None:
    # Phones append a gain map (or a second view) as further JPEGs declared in an MPF index.
    out = io.BytesIO()
    first, second = Image.new("RGB", (64, 48), "white"), Image.new("L", (32, 24), 128)
    first.save(out, "MPO", save_all=True, append_images=[second])
    doc = check_upload(out.getvalue(), filename="photo.jpg", declared_type="image/jpeg")
    assert doc.media_type == "image/jpeg"


def test_a_few_bytes_of_padding_after_an_image_are_tolerated_more_are_not() -> None:
    padded = _image("JPEG") + b"\x00" * 64
    assert check_upload(padded, filename="scan.jpg", declared_type=None).content is padded
    rejected = _rejected(_image("JPEG") + b"\x00" * 5000, filename="scan.jpg")
    assert rejected.status == 422
    assert "5000 bytes that are not part of it" in rejected.message


def test_a_png_whose_pixels_do_not_decode_is_a_422() -> None:
    content = _image("PNG", (300, 200))
    at = content.index(b"IDAT") + 4
    broken = content[:at] + b"\x00garbage" * 4 + content[at + 32 :]
    rejected = _rejected(broken, filename="scan.png")
    assert (rejected.status, rejected.code) == (422, "unreadable_file")
    assert "could not be decoded" in rejected.message
