"""Reading an uploaded PDF with a hard time and memory limit, in long-lived worker processes.

pypdf has no time limit of its own and a thread cannot be stopped, so a hostile PDF (a broken
cross-reference table forcing a scan of the whole file, millions of objects) is parsed in a
separate process that is killed when its time is up. Starting a Python process per upload
costs more than the parse (hundreds of milliseconds on a busy machine, and twenty at once would
all run out of time), so the workers are started once, import pypdf once, and serve one PDF at a
time; a worker that runs out of time is killed and replaced. Waiting for a free worker does not
count against an upload's time: only its own parse does.

    checker = PdfChecker(workers=2, timeout=1.5)
    checker.check(pdf_bytes)   # {"ok": True, "pages": 3}, {"ok": False, "why": ...}
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import queue
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

logger = logging.getLogger("certwidget.uploads")

#: A parser that needs more than this is refused (the worker dies with MemoryError).
WORKER_MEMORY_BYTES = 1 << 30
_START_TIMEOUT = 60.0
_READY = "ready"


class CheckTimedOut(Exception):
    """The PDF took longer than the time limit to read."""


class CheckUnavailable(Exception):
    """No worker could be started (the host forbids processes, or pypdf is missing)."""


def _verdict(data: bytes) -> dict[str, Any]:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:
                # Typically AES without the optional crypto package: a real PDF we cannot look
                # inside, whose structure was sound enough to get this far.
                return {"ok": True, "pages": None}
            if not opened:
                return {"ok": False, "why": "it is protected by a password"}
        pages = len(reader.pages)
    except Exception as exc:  # any parser failure means "unreadable", whatever its type
        return {"ok": False, "why": type(exc).__name__}
    if pages < 1:
        return {"ok": False, "why": "it has no pages"}
    return {"ok": True, "pages": pages}


def _worker_main(conn: Connection) -> None:  # pragma: no cover - runs in the child process
    """A worker's life: cap memory, import pypdf once, then read one PDF per message."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
    except (ImportError, ValueError, OSError):
        pass
    try:
        import pypdf  # noqa: F401 - imported once here, not per upload
    except ImportError:
        conn.send({"ok": None, "why": "pypdf is not installed"})
        return
    serve(conn, _verdict)


def serve(conn: Connection, verdict: Callable[[bytes], dict[str, Any]]) -> None:
    """Say ready, then answer one verdict per PDF received until the pipe closes."""
    conn.send(_READY)
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
            conn.send(verdict(data))
        except MemoryError:
            conn.send({"ok": False, "why": "it needs too much memory to read"})


class _Worker:
    def __init__(self, context: Any, main: Callable[[Connection], None]) -> None:
        parent, child = context.Pipe()
        self.conn: Connection = parent
        self.process: BaseProcess = context.Process(
            target=main, args=(child,), daemon=True, name="certwidget-pdfcheck"
        )
        self.process.start()
        child.close()
        if not self.conn.poll(_START_TIMEOUT):
            self.kill()
            raise CheckUnavailable("the PDF check worker did not start")
        hello = self.conn.recv()
        if hello != _READY:
            self.kill()
            raise CheckUnavailable(str(hello.get("why", "PDF check unavailable")))

    def kill(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class PdfChecker:
    """A small pool of PDF-reading worker processes; ``check`` blocks (run it in a thread)."""

    def __init__(
        self,
        *,
        workers: int = 2,
        timeout: float = 1.5,
        worker_main: Callable[[Connection], None] = _worker_main,
    ) -> None:
        # ``worker_main`` is replaceable so tests can stand in a parser that hangs or dies; it
        # must be importable by name (the workers are spawned, not forked).
        self._main = worker_main
        self.timeout = timeout
        self._size = workers
        self._started = 0
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        # spawn: forking a process that runs threads (uvicorn, anyio's pool) can deadlock.
        self._context = multiprocessing.get_context("spawn")

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle.empty() and self._started < self._size:
                self._started += 1
                try:
                    return _Worker(self._context, self._main)
                except BaseException:
                    self._started -= 1
                    raise
        return self._idle.get()

    def check(self, data: bytes, timeout: float | None = None) -> dict[str, Any]:
        """The verdict on ``data``; raises CheckTimedOut or CheckUnavailable."""
        worker = self._take()
        try:
            worker.conn.send_bytes(data)
            if worker.conn.poll(self.timeout if timeout is None else timeout):
                verdict: dict[str, Any] = worker.conn.recv()
                self._idle.put(worker)
                return verdict
        except (EOFError, OSError, BrokenPipeError):
            # The worker died (its memory cap, or killed from outside): replace it.
            self._replace(worker)
            return {"ok": False, "why": "it needs too much memory to read"}
        self._replace(worker)
        raise CheckTimedOut

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._started -= 1

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().kill()
            except queue.Empty:
                break
        with self._lock:
            self._started = 0


_default: PdfChecker | None = None
_default_lock = threading.Lock()


def default_checker() -> PdfChecker:
    """The process-wide checker (its workers start on the first PDF)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PdfChecker()
        return _default
