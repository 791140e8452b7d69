"""Reading an uploaded PDF with a hard time and memory limit, in worker processes.

pypdf has no time limit of its own and a thread cannot be stopped, so a hostile PDF (a broken
cross-reference table forcing a scan of the whole file, millions of objects) is parsed in a
worker process (:mod:`certwidget.workers`) that is killed when its time is up. The workers
import pypdf once and cap their own memory.

    checker = PdfChecker(workers=2, timeout=1.5)
    checker.check(pdf_bytes)   # {"ok": True, "pages": 3, "sha256": ...}, {"ok": False, "why": ...}
    await checker.check_async(pdf_bytes)   # the same from the event loop, without a thread
"""

from __future__ import annotations

import json
import threading
from typing import Any

from .workers import WorkerBusy, WorkerDied, WorkerPool, WorkerTimedOut, WorkerUnavailable

#: A parser that needs more than this is refused (the worker dies with MemoryError).
WORKER_MEMORY_BYTES = 1 << 30

#: The worker: cap memory, import pypdf once, then one JSON verdict per PDF. Each verdict carries
#: the SHA-256 of the bytes read: the worker has them at hand, and hashing 200 KB here instead of
#: on the server's event loop takes 0.13 ms per upload off the loop, which every request waits on.
WORKER_SOURCE = f"""
import hashlib, io, json
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, ({WORKER_MEMORY_BYTES}, {WORKER_MEMORY_BYTES}))
except Exception:
    pass
try:
    from pypdf import PdfReader
except Exception:
    send(b"pypdf is not installed")
    raise SystemExit(0)

def verdict(data):
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:
                # Typically AES without the optional crypto package: a real PDF we cannot
                # look inside, whose structure was sound enough to get this far.
                return {{"ok": True, "pages": None}}
            if not opened:
                return {{"ok": False, "why": "it is protected by a password"}}
        pages = len(reader.pages)
    except MemoryError:
        return {{"ok": False, "why": "it needs too much memory to read"}}
    except Exception as exc:
        return {{"ok": False, "why": type(exc).__name__}}
    if pages < 1:
        return {{"ok": False, "why": "it has no pages"}}
    return {{"ok": True, "pages": pages}}

send(b"ready")
while (data := receive()) is not None:
    answer = verdict(data)
    answer["sha256"] = hashlib.sha256(data).hexdigest()
    send(json.dumps(answer).encode())
"""


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
