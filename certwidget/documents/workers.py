"""Long-lived worker processes that answer one framed request at a time, with a time limit.

CPU-heavy or hostile work (reading an uploaded PDF, rendering a certificate PDF) runs outside
the server's interpreter: it cannot hold the GIL against the event loop, and a worker that runs
out of time is killed and replaced. Workers start on first use and then stay, because starting
a Python process costs more than the work. Waiting for a free worker does not count against a
request's time limit: only its own work does.

The workers are plain ``python -c`` subprocesses, not ``multiprocessing`` children: those
re-import the shop's ``__main__`` module, which breaks a ``main.py`` that calls
``uvicorn.run(app)`` without an ``if __name__ == "__main__"`` guard.

Protocol: each message, both ways through the worker's stdin and stdout pipes, is a 4-byte
big-endian length and that many bytes. The worker says :data:`READY` once started, then answers
every request with one message.

    pool = WorkerPool(source, workers=2)
    answer = pool.call(b"request", timeout=1.5)   # raises WorkerTimedOut, WorkerUnavailable
    answer = await pool.call_async(b"request", timeout=1.5)   # the same, on the event loop

``call_async`` talks to the worker through the event loop (its pipes are non-blocking, and
the loop waits on them as on any socket): no thread is handed the request and none has to hand
the answer back, so a busy loop does not make every check wait twice for the GIL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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


class _Reader:
    """Collects one framed message from bytes as they arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._size: int | None = None

    def feed(self, data: bytes) -> bytes | None:
        """Adds ``data``; answers the message once it is complete (never more than one)."""
        if not data:
            raise WorkerDied("the worker exited")
        self._buffer += data
        if self._size is None and len(self._buffer) >= _FRAME.size:
            (self._size,) = _FRAME.unpack_from(self._buffer)
        if self._size is not None and len(self._buffer) >= _FRAME.size + self._size:
            return bytes(self._buffer[_FRAME.size : _FRAME.size + self._size])
        return None

    def wanted(self) -> int:
        if self._size is None:
            return _FRAME.size - len(self._buffer)
        return _FRAME.size + self._size - len(self._buffer)


def _read_message(fd: int, deadline: float) -> bytes | None:
    reader = _Reader()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            return None
        try:
            chunk = os.read(fd, max(reader.wanted(), 65536))
        except BlockingIOError:
            continue
        message = reader.feed(chunk)
        if message is not None:
            return message


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


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
        # Raw, non-blocking descriptors: the same worker serves blocking callers (select) and
        # the event loop (add_reader); the answer is read exactly, so nothing is left buffered.
        self.stdin_fd, self.stdout_fd = self.stdin.fileno(), self.stdout.fileno()
        os.set_blocking(self.stdin_fd, False)
        os.set_blocking(self.stdout_fd, False)
        try:
            hello = _read_message(self.stdout_fd, time.monotonic() + _START_TIMEOUT)
        except WorkerDied:
            hello = None
        if hello != READY:
            self.kill()
            why = hello.decode("utf-8", "replace") if hello else "the worker did not start"
            raise WorkerUnavailable(why)

    def framed(self, request: bytes) -> bytes:
        """What goes down the pipe for ``request``: its length, then its bytes."""
        return _FRAME.pack(len(request)) + request

    def call(self, request: bytes, timeout: float) -> bytes | None:
        _write_all(self.stdin_fd, self.framed(request))
        return _read_message(self.stdout_fd, time.monotonic() + timeout)

    async def call_async(
        self,
        request: bytes,
        timeout: float,  # noqa: ASYNC109 - the work's limit: the worker is killed past it
        *,
        free: Callable[[_Worker], None],
        broken: Callable[[_Worker], None],
    ) -> bytes | None:
        """:meth:`call` on the running event loop; None when ``timeout`` ran out.

        The worker's fate is settled once, by whichever comes first, in the loop callback that
        learns it: ``free(worker)`` as soon as its answer is read (so the next caller has it
        one loop turn later, not after this caller's task has run again), ``broken(worker)``
        when it died, ran out of time, or this caller was cancelled mid-exchange.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bytes | None] = loop.create_future()
        reader = _Reader()
        settled = False
        timer: asyncio.TimerHandle | None = None
        pending = memoryview(b"")  # the request's bytes not yet in the pipe

        def settle(fate: Callable[[_Worker], None]) -> None:
            nonlocal settled
            settled = True
            if timer is not None:
                timer.cancel()
            loop.remove_reader(self.stdout_fd)
            loop.remove_writer(self.stdin_fd)
            fate(self)

        def fail(exc: BaseException) -> None:
            if not settled:
                settle(broken)
                done.set_exception(exc)

        def out_of_time() -> None:
            if not settled:
                settle(broken)
                done.set_result(None)

        def write() -> None:
            nonlocal pending
            try:
                pending = pending[os.write(self.stdin_fd, pending) :]
            except BlockingIOError:
                return
            except OSError as exc:
                fail(WorkerDied(str(exc)))
                return
            if not pending:
                loop.remove_writer(self.stdin_fd)

        def read() -> None:
            try:
                chunk = os.read(self.stdout_fd, max(reader.wanted(), 65536))
            except BlockingIOError:
                return
            except OSError as exc:
                fail(WorkerDied(str(exc)))
                return
            try:
                message = reader.feed(chunk)
            except WorkerDied as exc:
                fail(exc)
                return
            if message is not None and not settled:
                settle(free)
                done.set_result(message)

        try:
            pending = memoryview(self.framed(request))
            # What fits the pipe is written at once; the rest when the worker has read some.
            with contextlib.suppress(BlockingIOError):
                pending = pending[os.write(self.stdin_fd, pending) :]
            timer = loop.call_later(timeout, out_of_time)
            if pending:
                loop.add_writer(self.stdin_fd, write)
            loop.add_reader(self.stdout_fd, read)
        except BaseException as exc:
            # Whatever stopped the exchange from starting, the worker's slot must come back.
            settle(broken)
            if isinstance(exc, OSError):
                raise WorkerDied(str(exc)) from exc
            raise
        try:
            return await done
        except asyncio.CancelledError:
            # Cancelled mid-exchange: the worker may still be reading or answering. (Once
            # settled, it is someone else's already, or replaced.)
            if not settled:
                settle(broken)
            raise

    def kill(self) -> None:
        # Never raises: a pool that replaces a worker must get its slot back whatever happens.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.process.kill()
            self.process.wait(timeout=5)  # after SIGKILL: at once, unless the host is wedged
        for pipe in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


def _wake_with_none(handed: asyncio.Future[_Worker | None]) -> None:
    if not handed.done():
        handed.set_result(None)


class WorkerPool:
    """Up to ``workers`` processes running ``source``; ``call`` blocks (run it in a thread)."""

    def __init__(self, source: str, *, workers: int = 2) -> None:
        self._source = source
        self._size = workers
        self._started = 0
        self._closed = False
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._lock = threading.Lock()
        #: Event-loop callers waiting for a worker, served first when one is handed back.
        self._waiters: collections.deque[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[_Worker | None]]
        ]
        self._waiters = collections.deque()

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
        self._give_back(worker)
        return answer

    async def call_async(
        self,
        request: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 - the work's limit: the worker is killed past it
        wait: float = 30.0,
    ) -> bytes:
        """:meth:`call` for the event loop: no thread waits on the worker; same errors.

        Starting a worker (rare: the first calls, or after one was killed) runs in a thread.
        """
        try:
            worker = await self._take_async(time.monotonic() + wait)
        except OSError as exc:
            raise WorkerUnavailable(f"could not start a worker: {exc}") from exc
        answer = await worker.call_async(
            request, timeout, free=self._give_back, broken=self._replace
        )
        if answer is None:
            raise WorkerTimedOut
        return answer

    async def _take_async(self, deadline: float) -> _Worker:
        loop = asyncio.get_running_loop()
        while True:
            start = False
            handed: asyncio.Future[_Worker | None] | None = None
            with self._lock:
                # First come, first served: nobody overtakes a caller already waiting.
                if not self._waiters and not self._idle.empty():
                    return self._idle.get_nowait()
                if self._started < self._size:
                    self._started += 1
                    start = True
                else:
                    handed = loop.create_future()
                    self._waiters.append((loop, handed))
            if start:
                from anyio import to_thread

                starting = asyncio.ensure_future(to_thread.run_sync(_Worker, self._source))
                try:
                    return await asyncio.shield(starting)
                except asyncio.CancelledError:
                    # The start goes on in its thread: the worker it makes is the pool's, for
                    # the next caller, not an orphan outside the count.
                    try:
                        started = await starting
                    except BaseException:
                        self._start_failed()
                    else:
                        self._give_back(started)
                    raise
                except BaseException:
                    self._start_failed()
                    raise
            assert handed is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                handed.cancel()  # a worker handed on from now on skips us
                raise WorkerBusy("every worker stayed busy")
            # Handed a worker, or None when a slot freed (a worker was killed), or after a
            # quarter second: a blocking caller may have taken a worker from the idle queue
            # meanwhile, so look again. A timer, not wait_for(shield(...)): the worker
            # reaches this task one loop turn after it is handed, not three.
            timer = loop.call_later(min(remaining, 0.25), _wake_with_none, handed)
            try:
                worker = await handed
            except BaseException:
                # Gone before a worker reached us: one handed meanwhile goes to the next.
                if not handed.done():
                    handed.cancel()
                elif not handed.cancelled() and (got := handed.result()) is not None:
                    self._give_back(got)
                raise
            finally:
                timer.cancel()
            if worker is not None:
                return worker

    def _start_failed(self) -> None:
        with self._lock:
            self._started -= 1
        self._hand_on(None)  # the slot is free: a waiter may start a worker

    def _give_back(self, worker: _Worker) -> None:
        """A worker is free again: to the longest-waiting event-loop caller, else idle."""
        if self._closed:
            self._retire(worker)  # the pool was closed while it worked
        elif not self._hand_on(worker):
            self._idle.put(worker)

    def _hand_on(self, worker: _Worker | None) -> bool:
        """Pass ``worker`` (or a wake-up, for None) to the first live waiter; False if none."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:  # a blocking caller's thread
            running = None
        while True:
            with self._lock:
                if not self._waiters:
                    return False
                loop, handed = self._waiters.popleft()
            if handed.done() or loop.is_closed():
                continue
            if loop is running:
                # On the waiter's own loop (the usual case: an upload handing its worker to the
                # next): at once. Through call_soon_threadsafe the worker idled a loop turn
                # longer, and the loop woke itself with a write to its own pipe.
                handed.set_result(worker)
                return True
            try:
                loop.call_soon_threadsafe(self._deliver, handed, worker)
            except RuntimeError:  # the loop closed meanwhile
                continue
            return True

    def _deliver(self, handed: asyncio.Future[_Worker | None], worker: _Worker | None) -> None:
        # On the waiter's loop: if it gave up meanwhile, the worker goes to the next one.
        if handed.done():
            if worker is not None:
                self._give_back(worker)
        else:
            handed.set_result(worker)

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
        self._give_back(worker)

    def _replace(self, worker: _Worker) -> None:
        self._retire(worker)
        self._hand_on(None)  # a slot is free: a waiter may start a new worker

    def close(self) -> None:
        """Stop the idle workers now; busy ones are stopped when they are handed back."""
        self._closed = True
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            self._retire(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._started -= 1
