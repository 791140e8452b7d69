"""Reading an uploaded PDF or image with a hard time and memory limit, in worker processes.

pypdf has no time limit of its own and a thread cannot be stopped, so a hostile PDF (a broken
cross-reference table forcing a scan of the whole file, millions of objects) is parsed in a
worker process (:mod:`certwidget.documents.workers`) that is killed when its time is up. The workers
import pypdf once and cap their own memory. They also refuse a PDF that carries JavaScript,
launch actions or attached files, or whose compressed streams inflate past a limit, and decode
uploaded images in full (Pillow, with an explicit pixel limit), so a decompression bomb costs a
worker that is killed, never the server.

    checker = PdfChecker(workers=2, timeout=1.5)
    checker.check(pdf_bytes)   # {"ok": True, "pages": 3, "sha256": ...}, {"ok": False, "why": ...}
    await checker.check_async(pdf_bytes)   # the same from the event loop, without a thread
"""

from __future__ import annotations

import json
import threading
from typing import Any

from certwidget.documents.workers import (
    WorkerBusy,
    WorkerDied,
    WorkerPool,
    WorkerTimedOut,
    WorkerUnavailable,
)

#: A parser that needs more than this is refused (the worker dies with MemoryError).
WORKER_MEMORY_BYTES = 1 << 30

#: An uploaded image is decoded only up to this many pixels a page. Above Pillow's default
#: decompression-bomb threshold (~89 Mpx) a reviewer's viewer may refuse it; a 600 dpi scan of
#: a letter page is about 34 Mpx. Set explicitly in the worker, not left to Pillow's default.
MAX_IMAGE_PIXELS = 89_478_485

#: Pages (frames) of a multi-page TIFF or picture of a multi-picture JPEG that are decoded.
MAX_IMAGE_PAGES = 100

#: What a PDF's compressed streams may inflate to, in total. Page contents, fonts and forms of
#: a certificate are a few MB at most; scanned pages kept losslessly are larger (a 300 dpi RGB
#: letter page is 25 MB), so images have their own, larger allowance. Streams are inflated in
#: 1 MiB steps and the count stops at the limit: a 2 MB file that would inflate to 2 GiB costs
#: 64 MB of work, not 2 GiB of memory.
MAX_PDF_CONTENT_INFLATED = 64 << 20
MAX_PDF_IMAGE_INFLATED = 256 << 20

#: The worker: cap memory, import pypdf once, then one JSON verdict per request (a PDF, or an
#: image, told apart by their first bytes). Each verdict carries the SHA-256 of the bytes read:
#: the worker has them at hand, and hashing 200 KB here instead of on the server's event loop
#: takes 0.13 ms per upload off the loop, which every request waits on.
WORKER_SOURCE = (
    f"""
WORKER_MEMORY_BYTES = {WORKER_MEMORY_BYTES}
MAX_IMAGE_PIXELS = {MAX_IMAGE_PIXELS}
MAX_IMAGE_PAGES = {MAX_IMAGE_PAGES}
MAX_PDF_CONTENT_INFLATED = {MAX_PDF_CONTENT_INFLATED}
MAX_PDF_IMAGE_INFLATED = {MAX_PDF_IMAGE_INFLATED}
"""
    + r"""
import hashlib, io, json, warnings, zlib
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
except Exception:
    pass
try:
    from pypdf import PdfReader
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, StreamObject
except Exception:
    send(b"pypdf is not installed")
    raise SystemExit(0)

class Refused(Exception):
    "The PDF carries something a certificate does not need (JavaScript, an attached file...)."

# Keys and (key, value) pairs that make a PDF run or carry something besides its pages.
ACTIVE_KEYS = {
    "/JS": "JavaScript",
    "/JavaScript": "JavaScript",
    "/EmbeddedFiles": "embedded files",
    "/EF": "embedded files",
}
ACTIVE_VALUES = {
    ("/S", "/JavaScript"): "JavaScript",
    ("/S", "/Launch"): "an action that launches a program",
    ("/Subtype", "/FileAttachment"): "an attached file",
    ("/Type", "/EmbeddedFile"): "embedded files",
}
FLATE = {"/FlateDecode", "/Fl"}
EXPANDING = {"/LZWDecode", "/LZW", "/RunLengthDecode", "/RL"}
STEP = 1 << 20

def check_active(obj):
    # The object's own dictionaries and arrays; indirect objects are each visited on their own.
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, DictionaryObject):
            for key, value in item.items():
                if key in ACTIVE_KEYS:
                    raise Refused(ACTIVE_KEYS[key])
                if isinstance(value, str) and (key, value) in ACTIVE_VALUES:
                    raise Refused(ACTIVE_VALUES[(key, value)])
                if key == "/OpenAction":
                    # Opening at a page and zoom (a destination, or a GoTo) is harmless and
                    # common; any other action run on opening is not.
                    action = value.get_object()
                    kind = action.get("/S") if isinstance(action, DictionaryObject) else "/GoTo"
                    if kind != "/GoTo":
                        named = ACTIVE_VALUES.get(("/S", kind)) if isinstance(kind, str) else None
                        raise Refused(named or "an action run when it is opened")
                if isinstance(value, (DictionaryObject, ArrayObject)):
                    stack.append(value)
        elif isinstance(item, ArrayObject):
            stack.extend(x for x in item if isinstance(x, (DictionaryObject, ArrayObject)))

def inflated_size(stream, limit):
    filters = stream.get("/Filter")
    filters = filters.get_object() if filters is not None else None
    if not filters:
        return 0
    if not isinstance(filters, list):
        filters = [filters]
    first = filters[0]
    if first in FLATE:
        # Inflate in steps of 1 MiB, counting, never holding more than a step.
        inflater = zlib.decompressobj()
        pending = stream._data
        total = 0
        try:
            while pending and total <= limit and not inflater.eof:
                total += len(inflater.decompress(pending, STEP))
                pending = inflater.unconsumed_tail
        except zlib.error:
            pass  # pypdf reads what it can of a broken stream; so does a viewer
        return total
    if any(f in EXPANDING or f in FLATE for f in filters):
        try:
            return len(stream.get_data())  # pypdf caps each of these at 75 MB
        except Exception:
            return 0
    return 0

def check_objects(reader):
    numbers = [(n, g) for g, table in reader.xref.items() for n in table]
    numbers += [(n, 0) for n in reader.xref_objStm]
    budgets = {False: MAX_PDF_CONTENT_INFLATED, True: MAX_PDF_IMAGE_INFLATED}
    for number, generation in numbers:
        try:
            obj = IndirectObject(number, generation, reader).get_object()
        except Exception:
            continue  # an object pypdf cannot read is one a viewer cannot show either
        check_active(obj)
        if isinstance(obj, StreamObject):
            image = obj.get("/Subtype") == "/Image"
            budgets[image] -= inflated_size(obj, budgets[image])
            if budgets[image] < 0:
                limit = (MAX_PDF_IMAGE_INFLATED if image else MAX_PDF_CONTENT_INFLATED) >> 20
                what = "images" if image else "contents"
                raise Refused(f"compressed {what} that inflate to more than {limit} MB")

def pdf_verdict(data):
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:
                # Typically AES without the optional crypto package: a real PDF we cannot
                # look inside, whose structure was sound enough to get this far.
                return {"ok": True, "pages": None}
            if not opened:
                return {"ok": False, "why": "it is protected by a password"}
        pages = len(reader.pages)
        if pages < 1:
            return {"ok": False, "why": "it has no pages"}
        check_objects(reader)
    except Refused as exc:
        return {"ok": False, "why": str(exc), "refused": True}
    except MemoryError:
        return {"ok": False, "why": "it needs too much memory to read"}
    except Exception as exc:
        return {"ok": False, "why": type(exc).__name__}
    return {"ok": True, "pages": pages}

IMAGE_FORMATS = {b"\x89P": ["PNG"], b"\xff\xd8": ["JPEG", "MPO"], b"II": ["TIFF"], b"MM": ["TIFF"]}

def image_verdict(data):
    # Pillow is imported at the first image, not at start-up (most uploads are PDFs).
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS.get(data[:2], [])) as image:
            pages = getattr(image, "n_frames", 1)
            if pages > MAX_IMAGE_PAGES:
                return {"ok": False, "why": f"it has {pages} pages; at most {MAX_IMAGE_PAGES}"}
            for page in range(pages):
                image.seek(page)
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    return {"ok": False, "why": f"a page is {width} x {height} pixels, too many"}
                image.load()
    except MemoryError:
        return {"ok": False, "why": "it needs too much memory to decode"}
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return {"ok": False, "why": "it has too many pixels to review"}
    except Exception:
        return {"ok": False, "why": "it is damaged or incomplete"}
    return {"ok": True, "pages": pages}

send(b"ready")
while (data := receive()) is not None:
    answer = pdf_verdict(data) if data[:5] == b"%PDF-" else image_verdict(data)
    answer["sha256"] = hashlib.sha256(data).hexdigest()
    send(json.dumps(answer).encode())
"""
)


class CheckTimedOut(Exception):
    """The PDF took longer than the time limit to read."""


class CheckUnavailable(Exception):
    """No worker could be started (the host forbids processes, or pypdf is missing)."""


class CheckBusy(Exception):
    """Every worker is busy (a burst of uploads): the upload should be tried again shortly."""


class PdfChecker:
    """A small pool of PDF-reading workers; ``check`` blocks (run it in a thread).

    ``worker_source`` is replaceable so tests can stand in a parser that hangs or dies.
    """

    def __init__(
        self, *, workers: int = 2, timeout: float = 1.5, worker_source: str = WORKER_SOURCE
    ) -> None:
        self.timeout = timeout
        #: How long an upload waits for a free worker before it is answered "busy" (503).
        self.wait = 5.0
        self._pool = WorkerPool(worker_source, workers=workers)

    def check(self, data: bytes, timeout: float | None = None) -> dict[str, Any]:
        """The verdict on ``data``; raises CheckTimedOut or CheckUnavailable."""
        try:
            answer = self._pool.call(
                data, timeout=self.timeout if timeout is None else timeout, wait=self.wait
            )
        except _WORKER_ERRORS as exc:
            return _after_worker_error(exc)
        return _verdict(answer)

    async def check_async(
        self,
        data: bytes,
        timeout: float | None = None,  # noqa: ASYNC109 - the work's limit: the worker is killed
    ) -> dict[str, Any]:
        """:meth:`check` awaited on the event loop (the worker's pipes are watched by the loop)."""
        try:
            answer = await self._pool.call_async(
                data, timeout=self.timeout if timeout is None else timeout, wait=self.wait
            )
        except _WORKER_ERRORS as exc:
            return _after_worker_error(exc)
        return _verdict(answer)

    def close(self) -> None:
        self._pool.close()


_default: PdfChecker | None = None
_default_lock = threading.Lock()


def default_checker() -> PdfChecker:
    """The process-wide checker (its workers start on the first PDF)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PdfChecker(workers=4)
        return _default


_WORKER_ERRORS = (WorkerTimedOut, WorkerBusy, WorkerUnavailable, WorkerDied)


def _after_worker_error(exc: Exception) -> dict[str, Any]:
    """The pool's errors as this module's, the same for the blocking and the awaited check."""
    if isinstance(exc, WorkerTimedOut):
        raise CheckTimedOut from None
    if isinstance(exc, WorkerBusy):
        raise CheckBusy(str(exc)) from exc
    if isinstance(exc, WorkerUnavailable):
        raise CheckUnavailable(str(exc)) from exc
    # The worker died reading it (its memory cap, or a crash in the parser): unreadable.
    return {"ok": False, "why": "it needs too much memory to read"}


def _verdict(answer: bytes) -> dict[str, Any]:
    verdict: dict[str, Any] = json.loads(answer)
    return verdict
