"""Hostile signatures and uploads over HTTP against uvicorn: refused with a message, in bounded
memory, while real documents are still accepted (issue 22, points 7 and 8)."""

from __future__ import annotations

import base64
import io
import os
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from PIL import Image

from tests.conftest import free_port
from tests.support import files
from tests.support.files import pdf, png
from tests.support.shop import as_buyer, build, filled

ROOT = Path(__file__).resolve().parents[2]

# The shop of tests.support.shop (embedded sandbox), served by uvicorn in its own process so
# that its memory can be measured alone.
SERVER_SCRIPT = """
import sys
from pathlib import Path
import uvicorn
sys.path.insert(0, {root!r})
from tests.support.shop import build
app = build(Path({data!r}))
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", lifespan="on")
"""


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def hostile_signature() -> bytes:
    """A 130 KB PNG declaring 4096 x 4096 16-bit RGBA: 128 MiB of pixels once inflated."""
    row = b"\x00" + b"\x00" * (4096 * 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(4096)) + compressor.flush()
    header = struct.pack(">IIBBBBB", 4096, 4096, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", data)
        + _chunk(b"IEND", b"")
    )


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def shop_process(tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    script = SERVER_SCRIPT.format(root=str(ROOT), data=str(tmp_path), port=port)
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                httpx.get(url + "/checkout", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the shop did not start"
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


async def _mint(http: httpx.AsyncClient, code: str) -> str:
    response = await http.post(
        "/certwidget/ecommerce/token", json={"zones": []}, headers=as_buyer(code)
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def _signed(image: bytes) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    return filled(signature={"type": "drawn", "image": url})


@pytest.mark.anyio
async def test_twenty_hostile_signatures_at_once_are_refused_in_bounded_memory(
    shop_process: tuple[str, int],
) -> None:
    url, pid = shop_process
    hostile = _signed(hostile_signature())
    assert len(hostile["signature"]["image"]) < 200_000  # small on the wire
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        token = await _mint(http, "C-SIG")
        # Warm up: one real signature makes the server import and allocate what it keeps.
        warm = await http.post(
            "/certwidget/certificates",
            json=filled(),
            headers={**as_buyer("C-SIG", token), "idempotency-key": uuid.uuid4().hex},
        )
        assert warm.status_code in (201, 202), warm.text
        before = _rss(pid)
        answers: list[httpx.Response] = []

        async def send() -> None:
            answers.append(
                await http.post(
                    "/certwidget/certificates",
                    json=hostile,
                    headers={**as_buyer("C-SIG", token), "idempotency-key": uuid.uuid4().hex},
                )
            )

        async with anyio.create_task_group() as group:
            for _ in range(20):
                group.start_soon(send)
        grown = _rss(pid) - before
    assert [a.status_code for a in answers] == [422] * 20
    for answer in answers:
        error = answer.json()["error"]
        assert "signature.image" in error["fields"], error
        assert error["message"]
    assert grown < 100 * 1024 * 1024, f"the server grew by {grown / 1_048_576:.0f} MB"


# -- uploads -----------------------------------------------------------------------------------


def _png_header_only() -> bytes:
    """68 bytes: a PNG declaring 9000 x 9000 pixels, with a token of image data."""
    header = struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00"))
        + _chunk(b"IEND", b"")
    )


def _tiny_jpeg() -> bytes:
    """23 bytes: SOI and a frame header for a 1 x 1 picture, and nothing else."""
    frame = b"\xff\xc0\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00"
    return b"\xff\xd8" + frame + b"\x00" * 8


def _tiff_header() -> bytes:
    """34 bytes: a TIFF directory naming a 100 x 100 image whose pixels are nowhere."""
    entries = struct.pack("<HHIHH", 256, 3, 1, 100, 0) + struct.pack("<HHIHH", 257, 3, 1, 100, 0)
    return b"II*\x00\x08\x00\x00\x00" + b"\x02\x00" + entries


def _png_with_junk() -> bytes:
    """A real 1 x 1 PNG followed by 9 MB of bytes nobody sees."""
    out = io.BytesIO()
    Image.new("RGB", (1, 1)).save(out, "PNG")
    return out.getvalue() + os.urandom(9 * 1024 * 1024)


def _pdf_with(catalog_extra: bytes, *extra_objects: bytes) -> bytes:
    """A one-page PDF whose catalog carries ``catalog_extra`` (objects 6, 7... are extra)."""
    return files.pdf(
        "Certificate", catalog_extra=catalog_extra, extra_objects=extra_objects, version=b"1.7"
    )


def _pdf_bomb() -> bytes:
    """A PDF of about 200 KB whose one extra stream inflates to 200 MB."""
    compressor = zlib.compressobj(9)
    block = b"\x00" * (1 << 20)
    data = b"".join(compressor.compress(block) for _ in range(200)) + compressor.flush()
    bomb = b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
    return _pdf_with(b"/PieceInfo 6 0 R", bomb)


HOSTILE_UPLOADS = {
    "png-header-only": (_png_header_only, "decoded"),
    "jpeg-23-bytes": (_tiny_jpeg, "could not be read"),
    "tiff-header-only": (_tiff_header, "decoded"),
    "png-with-9mb-junk": (_png_with_junk, "bytes that are not part of it"),
    "pdf-javascript": (
        lambda: _pdf_with(b"/Names << /JavaScript 6 0 R >>", b"<< /Names [(a) 7 0 R] >>"),
        "JavaScript",
    ),
    "pdf-open-action-js": (
        lambda: _pdf_with(b"/OpenAction << /S /JavaScript /JS (app.alert(1)) >>"),
        "JavaScript",
    ),
    "pdf-launch": (
        lambda: _pdf_with(b"/OpenAction << /S /Launch /F (calc.exe) >>"),
        "launches a program",
    ),
    "pdf-open-action-uri": (
        lambda: _pdf_with(b"/OpenAction << /S /URI /URI (http://evil.test/) >>"),
        "action run when it is opened",
    ),
    "pdf-embedded-file": (
        lambda: _pdf_with(
            b"/Names << /EmbeddedFiles << /Names [(x.exe) 6 0 R] >> >>",
            b"<< /Type /Filespec /F (x.exe) >>",
        ),
        "embedded files",
    ),
    "pdf-file-attachment": (
        lambda: _pdf_with(b"", b"<< /Type /Annot /Subtype /FileAttachment /FS (x.exe) >>"),
        "attached file",
    ),
    "pdf-inflating-to-200mb": (_pdf_bomb, "inflate to more than 64 MB"),
}


@pytest.fixture
def served_shop(tmp_path: Path, live_server_factory: Any) -> str:
    return str(live_server_factory(build(tmp_path)).url)


async def _upload(http: httpx.AsyncClient, token: str, name: str, content: bytes) -> httpx.Response:
    return await http.post(
        "/certwidget/certificates",
        data={"zones": ["WA"], "reason": "G", "exemptionNumber": "603123456"},
        files={"file": (name, content, "application/octet-stream")},
        headers={**as_buyer("C-UP", token), "idempotency-key": uuid.uuid4().hex},
    )


@pytest.mark.anyio
@pytest.mark.parametrize("sample", sorted(HOSTILE_UPLOADS))
async def test_a_hostile_upload_is_refused_with_a_message(served_shop: str, sample: str) -> None:
    build_content, says = HOSTILE_UPLOADS[sample]
    async with httpx.AsyncClient(base_url=served_shop, timeout=30) as http:
        token = await _mint(http, "C-UP")
        answer = await _upload(http, token, "certificate", build_content())
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text)
    error = answer.json()["error"]
    assert says in error["message"], error
    assert error["fields"]["file"] == error["message"]


@pytest.mark.anyio
async def test_real_documents_are_still_accepted(served_shop: str) -> None:
    photo = io.BytesIO()
    Image.new("RGB", (1200, 1600), (240, 240, 230)).save(photo, "JPEG", quality=85)
    tiff = io.BytesIO()
    Image.new("L", (850, 1100), 255).save(tiff, "TIFF", compression="tiff_lzw")
    # A destination opening at page 1 is what many PDF writers add: harmless, and kept.
    fitted = _pdf_with(b"/OpenAction [3 0 R /Fit]")
    documents = {
        "cert.pdf": pdf(),
        "fitted.pdf": fitted,
        "sig.png": png(),
        "photo.jpg": photo.getvalue(),
        "scan.tif": tiff.getvalue(),
    }
    async with httpx.AsyncClient(base_url=served_shop, timeout=30) as http:
        token = await _mint(http, "C-UP")
        answers = {name: await _upload(http, token, name, c) for name, c in documents.items()}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(documents, 201)
