"""Long-lived worker processes that answer one framed request at a time, with a time limit.

CPU-heavy or hostile work (reading an uploaded PDF, rendering a certificate PDF) runs outside
the server's interpreter: it cannot hold the GIL against the event loop, and a worker that runs
out of time is killed and replaced. Workers start on first use and then stay, because starting
a Python process costs more than the work. Waiting for a free worker does not count against a
request's time limit: only its own work does.

The workers are plain ``python -c`` subprocesses, not ``multiprocessing`` children: those
re-import the shop's ``__main__`` module, which breaks a ``main.py`` that calls
``uvicorn.run(app)`` without an ``if __name__ == "__main__"`` guard.

Protocol: each message is a 4-byte big-endian length and that many bytes. The worker says
:data:`READY` once started, then answers every request with one message.

    pool = WorkerPool(source, workers=2)
    answer = pool.call(b"request", timeout=1.5)   # raises WorkerTimedOut, WorkerUnavailable
"""

from __future__ import annotations

import queue
import select
import struct
import subprocess
import sys
import threading
import time
from typing import IO

READY = b"ready"
_FRAME = struct.Struct(">I")
_START_TIMEOUT = 60.0

#: Helpers every worker source can use: ``receive()`` and ``send(data)``.
PROTOCOL_SOURCE = """
import struct as _struct, sys as _sys
_stdin, _stdout = _sys.stdin.buffer, _sys.stdout.buffer

def receive():
    head = _stdin.read(4)
    if len(head) < 4:
        return None
    return _stdin.read(_struct.unpack(">I", head)[0])

def send(data):
    _stdout.write(_struct.pack(">I", len(data)) + data)
    _stdout.flush()
"""


class WorkerTimedOut(Exception):
    """The worker did not answer within the time limit (it has been killed)."""


class WorkerUnavailable(Exception):
    """No worker could be started, or the worker said it cannot do the work."""


class WorkerBusy(WorkerUnavailable):
    """Every worker stayed busy for the whole wait: try again later."""


class WorkerDied(Exception):
    """The worker exited while working (a memory cap, a crash)."""


def _read_exactly(stream: IO[bytes], size: int, deadline: float) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            return None
        chunk = stream.read1(size)  # type: ignore[attr-defined]
        if not chunk:
            raise WorkerDied("the worker exited")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_message(stream: IO[bytes], deadline: float) -> bytes | None:
    head = _read_exactly(stream, _FRAME.size, deadline)
    if head is None:
        return None
    (size,) = _FRAME.unpack(head)
    return _read_exactly(stream, size, deadline)


class _Worker:
    def __init__(self, source: str) -> None:
        # The command is fixed (this interpreter, our own source); requests only go to stdin.
        self.process = subprocess.Popen(  # noqa: S603
            # -I: the shop's working directory and PYTHON* variables cannot shadow a module.
            [sys.executable, "-I", "-c", PROTOCOL_SOURCE + source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin: IO[bytes] = self.process.stdin
        self.stdout: IO[bytes] = self.process.stdout
        try:
            hello = _read_message(self.stdout, time.monotonic() + _START_TIMEOUT)
        except WorkerDied:
            hello = None
        if hello != READY:
            self.kill()
            why = hello.decode("utf-8", "replace") if hello else "the worker did not start"
            raise WorkerUnavailable(why)

    def call(self, request: bytes, timeout: float) -> bytes | None:
        self.stdin.write(_FRAME.pack(len(request)) + request)
        self.stdin.flush()
        return _read_message(self.stdout, time.monotonic() + timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        self.stdin.close()
        self.stdout.close()


class WorkerPool:
    """Up to ``workers`` processes running ``source``; ``call`` blocks (run it in a thread)."""

    def __init__(self, source: str, *, workers: int = 2) -> None:
        self._source = source
        self._size = workers
        self._started = 0
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()

    def _take(self, deadline: float) -> _Worker:
        # Poll rather than block on the queue: a worker killed for its time frees a slot
        # without putting anything in the queue, and a waiter must notice and start one.
        while True:
            with self._lock:
                if self._idle.empty() and self._started < self._size:
                    self._started += 1
                    try:
                        return _Worker(self._source)
                    except BaseException:
                        self._started -= 1
                        raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerBusy("every worker stayed busy")
            try:
                return self._idle.get(timeout=min(remaining, 0.05))
            except queue.Empty:
                continue

    def call(self, request: bytes, *, timeout: float, wait: float = 30.0) -> bytes:
        """The answer to ``request``; raises WorkerTimedOut, WorkerDied or WorkerUnavailable.

        ``timeout`` bounds the work; ``wait`` bounds the wait for a free worker before it.
        """
        try:
            worker = self._take(time.monotonic() + wait)
        except OSError as exc:
            raise WorkerUnavailable(f"could not start a worker: {exc}") from exc
        try:
            answer = worker.call(request, timeout)
        except (WorkerDied, OSError) as exc:
            self._replace(worker)
            raise WorkerDied(str(exc)) from exc
        if answer is None:
            self._replace(worker)
            raise WorkerTimedOut
        self._idle.put(worker)
        return answer

    def warm(self) -> None:
        """Start one worker now if none runs (blocking), so the first request does not wait."""
        with self._lock:
            if self._started:
                return
            self._started += 1
        try:
            worker = _Worker(self._source)
        except (WorkerUnavailable, OSError):
            with self._lock:
                self._started -= 1
            return
        self._idle.put(worker)

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
