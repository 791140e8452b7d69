"""Checks on an uploaded certificate document, by its content rather than its name or label.

A buyer may upload a PDF, PNG, JPEG or TIFF of at most :data:`MAX_UPLOAD_BYTES`. What the file
*is* comes from its first bytes (the browser's ``Content-Type`` and the file name are only
claims). An image must have a sane size header, nothing past its end marker, and must decode in
full; a PDF must open with pypdf and carry no JavaScript, launch actions or attached files, nor
streams that inflate without bound. Both are read by worker processes with a hard time and
memory budget (certwidget.documents.pdfcheck), so a hostile file cannot tie up or swell the server.

>>> sniff_media_type(b"%PDF-1.7 ...")
'application/pdf'
>>> sanitize_filename("../../etc/scan.PNG", "image/png")
'scan.png'

:func:`check_upload` may block for up to :data:`PDF_CHECK_SECONDS` on a PDF (and
:data:`IMAGE_CHECK_SECONDS` on an image); call it from a
worker thread, never directly on the event loop, or ``await check_upload_async(...)``, which
waits for the PDF reader on the loop itself.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import struct
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

__all__ = [
    "ACCEPTED_TYPES",
    "MAX_UPLOAD_BYTES",
    "PDF_CHECK_SECONDS",
    "UploadRejected",
    "UploadedDocument",
    "check_upload",
    "check_upload_async",
    "image_dimensions",
    "image_end",
    "png_chunks",
    "sanitize_filename",
    "sniff_media_type",
]

from certwidget.documents.pdfcheck import (
    MAX_IMAGE_PIXELS,
    CheckBusy,
    CheckTimedOut,
    CheckUnavailable,
    default_checker,
)

logger = logging.getLogger("certwidget.documents.uploads")

MAX_UPLOAD_BYTES = 10 * 1024 * 1024

# Wall-clock budget for opening a PDF, interpreter start-up included (about 0.3 s of it).
PDF_CHECK_SECONDS = 1.5


# Wall-clock budget for decoding an image in a reader process (interpreter start-up and the
# Pillow import included): a 300 dpi page decodes in about 0.1 s, a 600 dpi one in about 0.5 s.
IMAGE_CHECK_SECONDS = 3.0

# Bytes tolerated after an image's end marker: some scanners and phones pad a file by a few
# bytes, but anything larger is content nobody sees (a payload, another file) and is refused.
MAX_TRAILING_BYTES = 1024

# A PNG splits its pixels into chunks of usually 8-64 KiB; far more chunks than that would only
# make the walk over them slow.
MAX_PNG_CHUNKS = 100_000

MAX_FILENAME_CHARS = 120

# The accepted types, with the extension a stored file gets and the ones that may stay.
ACCEPTED_TYPES: dict[str, tuple[str, ...]] = {
    "application/pdf": (".pdf",),
    "image/png": (".png",),
    "image/jpeg": (".jpg", ".jpeg", ".jpe"),
    "image/tiff": (".tif", ".tiff"),
}
_ACCEPTED_NAMES = "PDF, PNG, JPEG or TIFF"

# Magic numbers, written out by hand rather than taken from a library (puremagic, filetype): we
# accept four formats whose signatures have been fixed for decades, and a dependency would add
# hundreds of signatures we must not accept anyway. PDF readers tolerate junk before "%PDF-",
# but we do not: a file that starts as something else (HTML, an executable) is something else.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),  # little-endian TIFF
    (b"MM\x00*", "image/tiff"),  # big-endian TIFF
)


class UploadRejected(Exception):
    """An upload the widget must refuse; ``status`` and ``code`` go straight into the answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"UploadRejected({self.status}, {self.code!r}, {self.message!r})"


@dataclass(frozen=True, slots=True)
class UploadedDocument:
    """An upload that passed the checks: the bytes, what they are, a safe name for them, and
    their SHA-256 (the idempotency fingerprint of an upload is built on it)."""

    content: bytes
    media_type: str
    filename: str
    sha256: bytes


def sniff_media_type(head: bytes) -> str | None:
    """The media type of a file from its first bytes (16 are plenty), or None if not accepted."""
    for magic, media_type in _MAGIC:
        if head.startswith(magic):
            return media_type
    return None


def check_upload(
    content: bytes,
    *,
    filename: str,
    declared_type: str | None,
    pdf_timeout: float | None = None,
) -> UploadedDocument:
    """Check an uploaded document and return it with its real media type and a safe file name.

    Raises :class:`UploadRejected`: 400 empty, 413 too large, 415 not a PDF/PNG/JPEG/TIFF by
    content, 422 a file of an accepted type that is corrupt, unreadable in time, or absurd;
    503 when every PDF reader stayed busy.
    ``declared_type`` is what the browser claimed; the content decides, the claim only makes a
    better message.
    """
    media_type = _sniff_checked(content, declared_type)
    if media_type == "application/pdf":
        _check_pdf_structure(content)
        _check_pdf_verdict(
            lambda: default_checker().check(
                content, PDF_CHECK_SECONDS if pdf_timeout is None else pdf_timeout
            )
        )
    else:
        _check_image_structure(content, media_type)
        _check_image_verdict(lambda: default_checker().check(content, IMAGE_CHECK_SECONDS))
    return UploadedDocument(
        content, media_type, sanitize_filename(filename, media_type), _sha256(content)
    )


async def check_upload_async(
    content: bytes,
    *,
    filename: str,
    declared_type: str | None,
    pdf_timeout: float | None = None,
    limiter: anyio.CapacityLimiter | None = None,
) -> UploadedDocument:
    """:func:`check_upload` without blocking the event loop; the same checks and answers.

    A PDF is read by the same time-boxed worker processes, but the loop writes it to the worker
    and waits for the verdict itself (no thread in between); the quick structural checks run
    inline. Images are measured in a worker thread (``limiter`` bounds how many). Either way
    the content's SHA-256 is made off the loop: by the PDF's reader, or in the image's thread.
    """
    media_type = _sniff_checked(content, declared_type)
    if media_type == "application/pdf":
        _check_pdf_structure(content)
        timeout = PDF_CHECK_SECONDS if pdf_timeout is None else pdf_timeout
        try:
            verdict = await default_checker().check_async(content, timeout)
        except (CheckTimedOut, CheckBusy, CheckUnavailable, OSError) as exc:
            _check_pdf_verdict(functools.partial(_reraise, exc))  # raises unless unavailable
            verdict = {}  # no reader: the structure alone was checked
        else:
            _check_pdf_verdict(lambda: verdict)
        # The reader hashed the bytes it read, off this loop; without a reader, hash them here.
        digest = verdict.get("sha256")
        sha256 = bytes.fromhex(digest) if isinstance(digest, str) else _sha256(content)
    else:
        # The structure (size header, end marker) is walked in a thread: a PNG may hold many
        # chunks. The pixels are then decoded by a reader process, whose memory is capped and
        # which is killed when its time is up, so a hostile image costs this server nothing.
        call = functools.partial(_check_image_structure, content, media_type)
        await anyio.to_thread.run_sync(call, limiter=limiter)
        try:
            verdict = await default_checker().check_async(content, IMAGE_CHECK_SECONDS)
        except (CheckTimedOut, CheckBusy, CheckUnavailable, OSError) as exc:
            _check_image_verdict(functools.partial(_reraise, exc))  # raises unless unavailable
            verdict = {}
        else:
            _check_image_verdict(lambda: verdict)
        digest = verdict.get("sha256")
        if isinstance(digest, str):
            sha256 = bytes.fromhex(digest)
        else:
            sha256 = await anyio.to_thread.run_sync(_sha256, content, limiter=limiter)
    return UploadedDocument(content, media_type, sanitize_filename(filename, media_type), sha256)


def _reraise(exc: BaseException) -> dict[str, object]:
    raise exc


def _sniff_checked(content: bytes, declared_type: str | None) -> str:
    """The media type by content, after the emptiness and size checks (UploadRejected)."""
    if not content:
        raise UploadRejected(400, "empty_file", "The uploaded file is empty.")
    if len(content) > MAX_UPLOAD_BYTES:
        raise UploadRejected(
            413,
            "file_too_large",
            f"The file is {len(content) / 1_048_576:.1f} MB; upload at most "
            f"{MAX_UPLOAD_BYTES // 1_048_576} MB.",
        )
    media_type = sniff_media_type(content[:16])
    if media_type is None:
        claimed = _printable(declared_type or "", 80)
        said = f" (it was sent as {claimed})" if claimed else ""
        raise UploadRejected(
            415,
            "unsupported_file_type",
            f"The file is not a {_ACCEPTED_NAMES} document{said}; upload one of those.",
        )
    return media_type


def _sha256(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def _check_image_structure(content: bytes, media_type: str) -> None:
    """The quick checks on an image: a sane size header, and nothing hidden past its end."""
    try:
        width, height = image_dimensions(content, media_type)
        if width * height > MAX_IMAGE_PIXELS:
            raise _unreadable(
                f"The image is {width} x {height} pixels, too large to review; "
                "scan it at a lower resolution (300 dpi is plenty)."
            )
        end = image_end(content, media_type)
    except ValueError as exc:
        raise _unreadable(f"The image could not be read ({exc})." + _RESCAN) from None
    if end is not None and len(content) - end > MAX_TRAILING_BYTES:
        raise _unreadable(
            f"The image is followed by {len(content) - end} bytes that are not part of it."
            + _RESCAN
        )


def _reader_verdict(
    read: Callable[[], dict[str, Any]], *, too_slow: str, what: str
) -> dict[str, Any] | None:
    """Run ``read`` (a reader process's verdict on an upload); None when no reader could run.

    A reader that takes too long is the file's doing (a 422 saying ``too_slow``); readers all
    busy is a 503: never let a file through unread because others keep them busy. Failing to
    run the check at all is our problem, not the buyer's: the structural checks made before
    stand, and the upload goes on.
    """
    try:
        return read()
    except CheckTimedOut:
        raise _unreadable(too_slow) from None
    except CheckBusy:
        raise UploadRejected(
            503, "busy", "Too many certificates are being checked right now; try again shortly."
        ) from None
    except (CheckUnavailable, OSError):
        logger.warning("%s check unavailable; structure checked only", what)
        return None


def _check_image_verdict(read: Callable[[], dict[str, Any]]) -> None:
    """Run ``read`` (a reader's verdict on the decoded image) and turn it into an answer."""
    verdict = _reader_verdict(
        read,
        too_slow="The image took too long to decode; it may be damaged or unusually large."
        + _RESCAN,
        what="image",
    )
    if verdict is None:
        return
    if not verdict.get("ok"):
        why = str(verdict.get("why", "it is damaged"))
        raise _unreadable(f"The image could not be decoded: {why}." + _RESCAN)


_RESCAN = " Scan or save it again (PDF, PNG, JPEG or TIFF) and upload the new file."


def sanitize_filename(filename: str, media_type: str) -> str:
    """A file name safe to store and show: base name only, no control or format characters, at
    most 120 characters, ending in an extension that matches the content.

    >>> sanitize_filename("C:\\\\Users\\\\me\\\\cert\\u202egpj.pdf", "application/pdf")
    'certgpj.pdf'
    """
    name = unicodedata.normalize("NFC", filename)
    # Browsers send a base name, but old ones (and scripts) send full Windows or POSIX paths.
    name = re.split(r"[\\/]", name)[-1]
    # Cc: control characters (NUL, newlines: header and log injection); Cf: format characters
    # such as U+202E RIGHT-TO-LEFT OVERRIDE, which make "exe.pdf" display as "fdp.exe";
    # Cs: lone surrogates from undecodable bytes, which cannot be encoded anywhere.
    name = "".join(
        ch for ch in name if unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}
    )
    # Leading dots hide a file on Unix; trailing dots and spaces are dropped by Windows.
    name = name.strip(" .")
    stem, ext = os.path.splitext(name)
    allowed = ACCEPTED_TYPES[media_type]
    if ext.lower() in allowed:
        ext = ext.lower()
    else:
        # The content wins: a PNG named "cert.pdf" becomes "cert.png", and "scan" gets ".pdf".
        if ext.lower() not in {e for exts in ACCEPTED_TYPES.values() for e in exts}:
            stem = name
        ext = allowed[0]
    stem = stem.strip(" .") or "certificate"
    return stem[: MAX_FILENAME_CHARS - len(ext)].rstrip(" .") + ext


def image_dimensions(content: bytes, media_type: str) -> tuple[int, int]:
    """(width, height) from an image's header, read cheaply; ValueError when it makes no sense.

    Only the header is read: PNG's IHDR chunk, JPEG's start-of-frame segment, TIFF's first IFD.
    """
    if media_type == "image/png":
        width, height = _png_size(content)
    elif media_type == "image/jpeg":
        width, height = _jpeg_size(content)
    elif media_type == "image/tiff":
        width, height = _tiff_size(content)
    else:
        raise ValueError(f"not an image type: {media_type}")
    if width <= 0 or height <= 0:
        raise ValueError(f"it claims to be {width} x {height} pixels")
    return width, height


def _png_size(data: bytes) -> tuple[int, int]:
    # The PNG spec requires IHDR to be the first chunk: length 13, then width and height.
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise ValueError("no PNG header chunk")
    width, height = struct.unpack(">II", data[16:24])
    if width > 2**31 - 1 or height > 2**31 - 1:
        raise ValueError("PNG dimensions out of range")
    return int(width), int(height)


# Start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    # Each step moves forward by at least one byte, and the count is capped besides, so a file
    # made of fill bytes cannot keep us walking for long.
    for _ in range(100_000):
        if pos + 4 > len(data):
            break
        if data[pos] != 0xFF:
            raise ValueError("broken JPEG segment structure")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in {0xD9, 0xDA}:  # end of image / start of scan before any frame header
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise ValueError("broken JPEG segment length")
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        pos += 2 + length
    raise ValueError("no JPEG frame header")


def _tiff_size(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise ValueError("truncated TIFF header")
    (ifd,) = struct.unpack(order + "I", data[4:8])
    if ifd < 8 or ifd + 2 > len(data):
        raise ValueError("TIFF directory outside the file")
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    if count == 0 or ifd + 2 + 12 * count > len(data):
        raise ValueError("truncated TIFF directory")
    size: dict[int, int] = {}
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            if kind == 3:  # SHORT, left-justified in the value field
                (value,) = struct.unpack(order + "H", data[entry + 8 : entry + 10])
            elif kind == 4:  # LONG
                (value,) = struct.unpack(order + "I", data[entry + 8 : entry + 12])
            else:
                raise ValueError("TIFF size tag of an unexpected type")
            size[tag] = int(value)
    if 256 not in size or 257 not in size:
        raise ValueError("TIFF without width and height")
    return size[256], size[257]


def image_end(content: bytes, media_type: str) -> int | None:
    """Where an image's data ends (its end marker), or None where the format cannot say.

    A PNG ends with its IEND chunk, a JPEG with its EOI marker (followed, in a multi-picture
    JPEG such as a phone's HDR photo with its gain map, by the further pictures it declares).
    A TIFF places its parts anywhere by offset, so its end is not defined. ValueError when the
    end marker is missing: a truncated file.
    """
    if media_type == "image/png":
        end = 0
        for _kind, _start, stop in png_chunks(content):
            end = stop + 4  # its CRC
        return end
    if media_type == "image/jpeg":
        end, pictures = _jpeg_end(content, 0)
        # A multi-picture JPEG (CIPA MPF, announced in an APP2 segment) appends its further
        # pictures as complete JPEGs; count them as the image's own, and nothing else.
        while pictures and content.startswith(b"\xff\xd8", end):
            end, _ = _jpeg_end(content, end)
            pictures -= 1
        return end
    return None


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """Each chunk of a PNG up to its IEND, as (type, start, end) of its data.

    Only lengths are read (no CRC, no decompression). ValueError when a chunk runs past the
    file, the IEND chunk is missing, or the chunks are absurdly many.
    """
    pos = 8
    for _ in range(MAX_PNG_CHUNKS):
        if pos + 12 > len(data):
            raise ValueError("the PNG ends before its end chunk")
        length, kind = struct.unpack_from(">I4s", data, pos)
        stop = pos + 8 + length
        if length > 2**31 - 1 or stop + 4 > len(data):
            raise ValueError("a PNG chunk runs past the end of the file")
        yield kind, pos + 8, stop
        if kind == b"IEND":
            return
        pos = stop + 4
    raise ValueError(f"the PNG has more than {MAX_PNG_CHUNKS} chunks")


# In a JPEG's entropy-coded data, 0xFF is followed by 0x00 (a stuffed byte) or a restart
# marker; any other byte after it is the next marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_JPEG_SOS, _JPEG_EOI, _JPEG_APP2 = 0xDA, 0xD9, 0xE2


def _jpeg_end(data: bytes, pos: int) -> tuple[int, int]:
    """The offset after the EOI of the JPEG starting at ``pos`` (its SOI), and how many further
    pictures its MPF index declares (0 without one)."""
    pictures = 0
    pos += 2
    for _ in range(100_000):  # each step moves forward: a bounded walk, as in _jpeg_size
        if pos + 2 > len(data):
            break
        if data[pos] != 0xFF:
            raise ValueError("broken JPEG segment structure")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _JPEG_EOI:
            return pos + 2, pictures
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if length < 2:
            raise ValueError("broken JPEG segment length")
        if marker == _JPEG_APP2 and data.startswith(b"MPF\x00", pos + 4):
            pictures = _mpf_pictures(data[pos + 8 : pos + 2 + length])
        pos += 2 + length
        if marker == _JPEG_SOS:
            found = _JPEG_NEXT_MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    raise ValueError("the JPEG ends before its end marker")


def _mpf_pictures(index: bytes) -> int:
    """How many pictures beyond the first an MPF index declares (a TIFF-style directory)."""
    try:
        order = "<" if index[:2] == b"II" else ">"
        (ifd,) = struct.unpack_from(order + "I", index, 4)
        (count,) = struct.unpack_from(order + "H", index, ifd)
        for i in range(count):
            tag, _kind, _n, value = struct.unpack_from(order + "HHII", index, ifd + 2 + 12 * i)
            if tag == 0xB001:  # NumberOfImages
                return max(0, min(int(value), 16) - 1)
    except struct.error:
        pass
    return 0


# The PDF check: a few structural facts read from the ends of the file (instant), then pypdf
# counting pages in a worker process with a time and memory limit (certwidget.documents.pdfcheck).
_PDF_TAIL = 2048
_STARTXREF = re.compile(rb"startxref\s+(\d+)")


def _unreadable(message: str) -> UploadRejected:
    return UploadRejected(422, "unreadable_file", message)


_AGAIN = " Save or export it as a PDF again and upload the new file."


def _check_pdf_structure(content: bytes) -> None:
    """The instant checks: header, end marker and cross-reference offset (2 KB of the tail)."""
    if not re.match(rb"%PDF-[12]\.\d", content):
        raise _unreadable("The PDF header is broken." + _AGAIN)
    tail = content[-_PDF_TAIL:]
    if b"%%EOF" not in tail:
        raise _unreadable("The PDF is incomplete (it has no end marker)." + _AGAIN)
    found = _STARTXREF.findall(tail)
    if not found or int(found[-1]) >= len(content):
        raise _unreadable("The PDF's cross-reference table is missing." + _AGAIN)


def _check_pdf_verdict(read: Callable[[], dict[str, Any]]) -> None:
    """Run ``read`` (the worker's verdict on the PDF) and turn its outcome into an answer."""
    verdict = _reader_verdict(
        read,
        too_slow="The PDF took too long to read; it may be damaged or unusually complex." + _AGAIN,
        what="PDF",
    )
    if verdict is None:
        return
    ok = verdict.get("ok")
    if not ok and verdict.get("refused"):
        raise UploadRejected(
            422,
            "unsafe_file",
            f"The PDF carries {verdict.get('why')}, which a certificate does not need. Print "
            "it to a new PDF (or scan the paper form) and upload that file.",
        )
    if not ok:
        why = str(verdict.get("why", "damaged"))
        detail = why if " " in why else "it is damaged"
        raise _unreadable(f"The PDF could not be read: {detail}." + _AGAIN)


def _check_pdf(content: bytes, timeout: float) -> None:
    _check_pdf_structure(content)
    _check_pdf_verdict(lambda: default_checker().check(content, timeout))


def _printable(text: str, limit: int) -> str:
    cleaned = "".join(ch for ch in text if ch.isprintable())
    return cleaned[:limit]
