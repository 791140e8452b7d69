"""Reading an uploaded PDF with a hard time and memory limit, in long-lived worker processes.

pypdf has no time limit of its own and a thread cannot be stopped, so a hostile PDF (a broken
cross-reference table forcing a scan of the whole file, millions of objects) is parsed in a
separate process that is killed when its time is up. Starting a Python process per upload
costs more than the parse (hundreds of milliseconds on a busy machine, and twenty at once would
all run out of time), so the workers are started once, import pypdf once, and serve one PDF at a
time; a worker that runs out of time is killed and replaced. Waiting for a free worker does not
count against an upload's time: only its own parse does.

The workers are plain ``python -I -c`` subprocesses, not ``multiprocessing`` children: those
re-import the shop's ``__main__`` module, which breaks a ``main.py`` that calls
``uvicorn.run(app)`` without an ``if __name__ == "__main__"`` guard.

    checker = PdfChecker(workers=2, timeout=1.5)
    checker.check(pdf_bytes)   # {"ok": True, "pages": 3}, {"ok": False, "why": ...}
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

logger = logging.getLogger("certwidget.uploads")

#: A parser that needs more than this is refused (the worker dies with MemoryError).
WORKER_MEMORY_BYTES = 1 << 30
_START_TIMEOUT = 60.0
_READY = b"ready\n"
_FRAME = struct.Struct(">I")

#: The worker: cap memory, import pypdf once, then one JSON verdict line per framed PDF.
WORKER_SOURCE = f"""
import io, json, struct, sys
try:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, ({WORKER_MEMORY_BYTES}, {WORKER_MEMORY_BYTES}))
except Exception:
    pass
try:
    from pypdf import PdfReader
except Exception:
    sys.stdout.write(json.dumps({{"ok": None, "why": "pypdf is not installed"}}) + "\\n")
    sys.stdout.flush()
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

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
stdout.write(b"ready\\n"); stdout.flush()
while True:
    head = stdin.read(4)
    if len(head) < 4:
        break
    (size,) = struct.unpack(">I", head)
    data = stdin.read(size)
    stdout.write(json.dumps(verdict(data)).encode() + b"\\n"); stdout.flush()
"""


class CheckTimedOut(Exception):
    """The PDF took longer than the time limit to read."""


class CheckUnavailable(Exception):
    """No worker could be started (the host forbids processes, or pypdf is missing)."""


def _read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """One line from a worker's stdout, or None when the deadline passes first."""
    remaining = deadline - time.monotonic()
    if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
        return None
    return stream.readline()


class _Worker:
    def __init__(self, source: str) -> None:
        # The command is fixed (this interpreter, our own source); uploads only go to stdin.
        self.process = subprocess.Popen(  # noqa: S603
            [sys.executable, "-I", "-c", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        hello = _read_line(self.stdout, time.monotonic() + _START_TIMEOUT)
        if hello != _READY:
            self.kill()
            why = "the PDF check worker did not start"
            if hello:
                with contextlib.suppress(ValueError, AttributeError):
                    why = str(json.loads(hello).get("why", why))
            raise CheckUnavailable(why)

    def ask(self, data: bytes, timeout: float) -> dict[str, Any] | None:
        """The worker's verdict, or None when it did not answer in time."""
        self.stdin.write(_FRAME.pack(len(data)) + data)
        self.stdin.flush()
        line = _read_line(self.stdout, time.monotonic() + timeout)
        if line is None:
            return None
        if not line:
            raise EOFError("the PDF check worker died")
        verdict: dict[str, Any] = json.loads(line)
        return verdict

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        self.stdin.close()
        self.stdout.close()


class PdfChecker:
    """A small pool of PDF-reading worker processes; ``check`` blocks (run it in a thread).

    ``worker_source`` is replaceable so tests can stand in a parser that hangs or dies.
    """

    def __init__(
        self, *, workers: int = 2, timeout: float = 1.5, worker_source: str = WORKER_SOURCE
    ) -> None:
        self.timeout = timeout
        self._source = worker_source
        self._size = workers
        self._started = 0
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle.empty() and self._started < self._size:
                self._started += 1
                try:
                    return _Worker(self._source)
                except BaseException:
                    self._started -= 1
                    raise
        return self._idle.get()

    def check(self, data: bytes, timeout: float | None = None) -> dict[str, Any]:
        """The verdict on ``data``; raises CheckTimedOut or CheckUnavailable."""
        try:
            worker = self._take()
        except OSError as exc:
            raise CheckUnavailable(f"could not start the PDF check: {exc}") from exc
        try:
            verdict = worker.ask(data, self.timeout if timeout is None else timeout)
        except (EOFError, OSError, ValueError):
            # The worker died (its memory cap, or killed from outside): replace it.
            self._replace(worker)
            return {"ok": False, "why": "it needs too much memory to read"}
        if verdict is None:
            self._replace(worker)
            raise CheckTimedOut
        self._idle.put(worker)
        return verdict

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
