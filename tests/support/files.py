"""Real, valid files made on the fly for tests: PNG signatures, small PDFs, TIFF and JPEG heads."""

from __future__ import annotations

import base64
import struct
import zlib


def png(width: int = 40, height: int = 12) -> bytes:
    """A valid RGBA PNG of a dark stroke on white, like a drawn signature."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            ink = abs(y - height // 2) <= 1 and 2 <= x < width - 2
            row += bytes((20, 20, 60, 255) if ink else (255, 255, 255, 0))
        rows.append(bytes(row))
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def png_data_url(width: int = 40, height: int = 12) -> str:
    return "data:image/png;base64," + base64.b64encode(png(width, height)).decode()


def pdf(
    text: str = "Certificate of Exemption",
    *,
    catalog_extra: bytes = b"",
    extra_objects: tuple[bytes, ...] = (),
    version: bytes = b"1.4",
) -> bytes:
    """A minimal, well-formed one-page PDF with a correct xref table.

    ``catalog_extra`` goes into the document catalog (e.g. ``/OpenAction 6 0 R``) and
    ``extra_objects`` become objects 6, 7, ... for it to point at.
    """
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    catalog = (b"<< /Type /Catalog /Pages 2 0 R", catalog_extra, b">>")
    objects = [
        b" ".join(part for part in catalog if part),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        *extra_objects,
    ]
    out = bytearray(b"%PDF-" + version + b"\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
