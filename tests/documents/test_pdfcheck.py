"""The PDF check's worker processes: time limit, dead workers, a missing parser, concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from certwidget.documents import uploads
from certwidget.documents.pdfcheck import CheckTimedOut, CheckUnavailable, PdfChecker
from tests.support import pdfworkers
from tests.support.files import pdf

# The verdict on tests.support.files.pdf(): one page, and the SHA-256 of the bytes the worker read.
READ_ONE_PAGE = {"ok": True, "pages": 1, "sha256": hashlib.sha256(pdf()).hexdigest()}


def test_a_parser_that_hangs_is_killed_at_the_time_limit_and_replaced() -> None:
    checker = PdfChecker(workers=1, timeout=0.5, worker_source=pdfworkers.HANGING)
    try:
        started = time.monotonic()
        with pytest.raises(CheckTimedOut):
            checker.check(pdf())
        # The next check gets a fresh worker, which hangs again: killed again, no leak.
        with pytest.raises(CheckTimedOut):
            checker.check(pdf())
    finally:
        checker.close()
    assert time.monotonic() - started < 15  # two starts plus two half-second limits


def test_a_worker_that_dies_makes_the_pdf_unreadable_not_an_error() -> None:
    checker = PdfChecker(workers=1, worker_source=pdfworkers.DYING)
    try:
        assert checker.check(pdf())["ok"] is False
    finally:
        checker.close()


def test_without_pypdf_the_check_is_unavailable_and_uploads_keep_the_structural_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checker = PdfChecker(workers=1, worker_source=pdfworkers.WITHOUT_PYPDF)
    with pytest.raises(CheckUnavailable):
        checker.check(pdf())
    monkeypatch.setattr(uploads, "default_checker", lambda: checker)
    accepted = uploads.check_upload(pdf(), filename="c.pdf", declared_type=None)
    assert accepted.media_type == "application/pdf"


def test_twenty_uploads_at_once_are_all_read_within_their_own_time_limit() -> None:
    checker = PdfChecker(workers=2, timeout=1.5)
    try:
        checker.check(pdf())  # start one worker before the burst, as a warm server has
        with ThreadPoolExecutor(max_workers=20) as pool:
            verdicts = list(pool.map(lambda _: checker.check(pdf()), range(20)))
    finally:
        checker.close()
    assert all(verdict == READ_ONE_PAGE for verdict in verdicts)


def test_a_shop_script_without_a_main_guard_is_not_run_again_by_the_workers(
    tmp_path: Path,
) -> None:
    # A shop's main.py often serves at import time; a multiprocessing child would re-run it.
    script = tmp_path / "main.py"
    marker = tmp_path / "ran"
    script.write_text(
        "import pathlib, sys\n"
        f"pathlib.Path({str(marker)!r}).open('a').write('x')\n"
        f"sys.path.insert(0, {str(Path(__file__).parents[2])!r})\n"
        "from certwidget.documents.pdfcheck import PdfChecker\n"
        "from tests.support.files import pdf\n"
        "checker = PdfChecker(workers=1)\n"
        "print(checker.check(pdf()))\n"
        "checker.close()\n"
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "'ok': True" in result.stdout
    assert marker.read_text() == "x"


def test_waiters_get_a_new_worker_after_one_is_killed_for_its_time() -> None:
    checker = PdfChecker(workers=1, timeout=0.3, worker_source=pdfworkers.HANGING)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            futures = [pool.submit(checker.check, pdf()) for _ in range(3)]
            outcomes = [type(future.exception(timeout=60)).__name__ for future in futures]
    finally:
        checker.close()
    # Each waits its turn, gets a (new) worker and times out: none is left waiting forever.
    assert outcomes == ["CheckTimedOut"] * 3


# -- the same, awaited on the event loop (what intake uses) -------------------------------


@pytest.mark.anyio
async def test_on_the_loop_a_parser_that_hangs_is_killed_at_the_time_limit_and_replaced() -> None:
    checker = PdfChecker(workers=1, timeout=0.5, worker_source=pdfworkers.HANGING)
    try:
        for _ in range(2):  # the second gets a fresh worker, which hangs again
            with pytest.raises(CheckTimedOut):
                await checker.check_async(pdf())
    finally:
        checker.close()


@pytest.mark.anyio
async def test_on_the_loop_a_worker_that_dies_makes_the_pdf_unreadable() -> None:
    checker = PdfChecker(workers=1, worker_source=pdfworkers.DYING)
    try:
        assert (await checker.check_async(pdf()))["ok"] is False
    finally:
        checker.close()


@pytest.mark.anyio
async def test_on_the_loop_without_pypdf_the_check_is_unavailable() -> None:
    checker = PdfChecker(workers=1, worker_source=pdfworkers.WITHOUT_PYPDF)
    with pytest.raises(CheckUnavailable):
        await checker.check_async(pdf())


@pytest.mark.anyio
async def test_on_the_loop_twenty_at_once_share_two_workers_and_all_are_read() -> None:
    checker = PdfChecker(workers=2, timeout=1.5)
    try:
        verdicts = await asyncio.gather(*(checker.check_async(pdf()) for _ in range(20)))
        # Blocking and awaiting callers share the same workers.
        assert checker.check(pdf()) == READ_ONE_PAGE
    finally:
        checker.close()
    assert all(verdict == READ_ONE_PAGE for verdict in verdicts)


@pytest.mark.anyio
async def test_on_the_loop_a_burst_longer_than_the_wait_is_answered_busy() -> None:
    checker = PdfChecker(workers=1, timeout=2.0, worker_source=pdfworkers.HANGING)
    checker.wait = 0.3
    try:
        outcomes = await asyncio.gather(
            *(checker.check_async(pdf()) for _ in range(2)), return_exceptions=True
        )
    finally:
        checker.close()
    assert sorted(type(outcome).__name__ for outcome in outcomes) == [
        "CheckBusy",
        "CheckTimedOut",
    ]


@pytest.mark.anyio
async def test_a_cancelled_check_replaces_its_worker_and_the_next_one_is_read() -> None:
    checker = PdfChecker(workers=1, timeout=1.5)
    try:
        await checker.check_async(pdf())
        task = asyncio.ensure_future(checker.check_async(pdf("x" * 500_000)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await checker.check_async(pdf()) == READ_ONE_PAGE
    finally:
        checker.close()


@pytest.mark.anyio
async def test_a_caller_cancelled_while_its_worker_starts_leaves_the_worker_to_the_pool() -> None:
    from certwidget.documents.workers import WorkerPool

    slow_start = (
        "import time\ntime.sleep(0.5)\nsend(b'ready')\n"
        "while (d := receive()) is not None:\n    send(d)\n"
    )
    pool = WorkerPool(slow_start, workers=1)
    try:
        caller = asyncio.create_task(pool.call_async(b"first", timeout=5))
        await asyncio.sleep(0.1)  # the worker is starting in a thread
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(1.0)  # the start finishes meanwhile
        assert pool._idle.qsize() == 1 and pool._started == 1  # the pool's, not an orphan
        assert await pool.call_async(b"second", timeout=5) == b"second"
        assert pool._started == 1
    finally:
        pool.close()
