"""Delivery leases have owners: an attempt that outlived its lease settles nothing of the row.

Several processes share one outbox file (``uvicorn --workers 4``). When process A's attempt
outlives its lease (a stalled provider call, a paused VM) and process B claims the row, A's
late updates must change nothing of what B does or did, and say so; A's delivery stops there
and logs it. Real SQLite files; two processes are two :class:`Outbox` instances on one file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from certwidget.outbox.base import Submission
from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.sqlite import SQLiteOutbox as Outbox
from certwidget.providers.base import (
    CertificateDraft,
    CustomerProfile,
    ProviderCertificate,
    ProviderToken,
    ProviderUnavailable,
)
from tests.support.outbox import new


def stored(database: Path, submission_id: str) -> dict[str, Any]:
    """The row as another process reads it from the file, lease and all."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        row = db.execute("SELECT * FROM submissions WHERE id = ?", (submission_id,)).fetchone()
    finally:
        db.close()
    return dict(row)


def lapse(database: Path, submission_id: str) -> None:
    """The process holding the lease stalled past it: as far as the file knows, it ran out."""
    db = sqlite3.connect(database, isolation_level=None, timeout=10)
    try:
        db.execute("UPDATE submissions SET lease_until = 0 WHERE id = ?", (submission_id,))
    finally:
        db.close()


def lost_lease_warnings(caplog: pytest.LogCaptureFixture, submission_id: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "certwidget.outbox.delivery"
        and record.levelno == logging.WARNING
        and submission_id in record.getMessage()
        and "lost the lease" in record.getMessage()
    ]


# -- the outbox -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_late_owner_changes_nothing_once_another_process_claimed_the_row(
    tmp_path: Path,
) -> None:
    database = tmp_path / "outbox.sqlite3"
    a, b = Outbox(database), Outbox(database)  # two processes on one file
    row, _ = await a.add(new("k1"))
    mine = await a.claim(row.id, lease_seconds=0.05)
    assert mine is not None and mine.lease_owner
    assert await a.save_progress(row.id, {"customer_id": "cust-a"}, owner=mine.lease_owner)
    await asyncio.sleep(0.1)  # A stalls past its lease
    theirs = await b.claim(row.id, lease_seconds=60)
    assert theirs is not None and theirs.lease_owner not in ("", mine.lease_owner)
    assert theirs.progress == {"customer_id": "cust-a"}  # B resumes where A got
    assert await b.save_progress(row.id, {"customer_id": "cust-b"}, owner=theirs.lease_owner)
    before = stored(database, row.id)

    # A wakes up: every update of its lease is refused, and says so.
    assert await a.renew(row.id, owner=mine.lease_owner, lease_seconds=60) is False
    assert (
        await a.save_progress(row.id, {"customer_id": "cust-late"}, owner=mine.lease_owner) is False
    )
    assert (
        await a.set_document(
            row.id, b"%PDF-late", owner=mine.lease_owner, media_type="image/png", filename="x"
        )
        is False
    )
    assert await a.mark_retry(row.id, owner=mine.lease_owner, error="timed out", delay=30) is False
    assert await a.mark_failed(row.id, owner=mine.lease_owner, error="refused") is False
    assert await a.release({row.id: mine.lease_owner}) == 0
    assert stored(database, row.id) == before
    assert before["lease_owner"] == theirs.lease_owner and before["lease_until"] > time.time()
    assert await a.document(row.id) == b"%PDF-1.4 doc"
    assert await a.claim(row.id, lease_seconds=60) is None  # still B's

    # B carries on and settles it.
    assert await b.renew(row.id, owner=theirs.lease_owner, lease_seconds=60)
    assert await b.mark_delivered(row.id, {"customer_id": "cust-b", "certificates": {"WA": "7"}})
    delivered = stored(database, row.id)
    assert (delivered["state"], delivered["attempts"], delivered["lease_owner"]) == (
        "delivered",
        0,
        "",
    )
    # Settled: neither of them can reopen or recount it.
    assert await a.mark_retry(row.id, owner=mine.lease_owner, error="late", delay=0) is False
    assert await b.mark_retry(row.id, owner=theirs.lease_owner, error="late", delay=0) is False
    assert await b.save_progress(row.id, {}, owner=theirs.lease_owner) is False
    assert stored(database, row.id) == delivered
    await a.close()
    await b.close()


@pytest.mark.anyio
async def test_updates_need_the_token_of_a_claim(tmp_path: Path) -> None:
    # A row nobody claimed is held by nobody, and an empty token holds nothing.
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    row, _ = await outbox.add(new("k1"))
    assert await outbox.renew(row.id, owner="", lease_seconds=60) is False
    assert await outbox.mark_retry(row.id, owner="", error="x", delay=0) is False
    assert await outbox.mark_failed(row.id, owner="guess", error="x") is False
    fetched = await outbox.get(row.id)
    assert fetched == row and fetched is not None and fetched.lease_owner == ""  # not handed out
    await outbox.close()


@pytest.mark.anyio
async def test_release_hands_back_only_the_leases_still_held(tmp_path: Path) -> None:
    # A shutdown releases what this process claimed: never a lease another process took since.
    database = tmp_path / "outbox.sqlite3"
    a, b = Outbox(database), Outbox(database)
    first, _ = await a.add(new("k1"))
    second, _ = await a.add(new("k2"))
    claimed = {row.id: row.lease_owner for row in await a.claim_due(limit=5, lease_seconds=60)}
    assert set(claimed) == {first.id, second.id} and len(set(claimed.values())) == 2
    lapse(database, second.id)
    theirs = await b.claim(second.id, lease_seconds=60)
    assert theirs is not None
    assert await a.release(claimed) == 1
    assert stored(database, first.id)["lease_until"] == 0
    assert stored(database, second.id)["lease_owner"] == theirs.lease_owner
    assert [row.id for row in await b.claim_due(limit=5, lease_seconds=60)] == [first.id]
    await a.close()
    await b.close()


@pytest.mark.anyio
async def test_a_finished_delivery_is_recorded_while_pending_but_never_over_a_settled_row(
    tmp_path: Path,
) -> None:
    database = tmp_path / "outbox.sqlite3"
    a, b = Outbox(database), Outbox(database)

    # Pending, B delivering it again: A's delivery is complete at the provider, so it is
    # recorded, and B's next update is refused (B stops there).
    row, _ = await a.add(new("k1"))
    assert await a.claim(row.id, lease_seconds=60) is not None
    lapse(database, row.id)
    theirs = await b.claim(row.id, lease_seconds=60)
    assert theirs is not None
    assert await a.mark_delivered(row.id, {"certificates": {"WA": "from-a"}}) is True
    assert await b.save_progress(row.id, {}, owner=theirs.lease_owner) is False
    assert await b.mark_retry(row.id, owner=theirs.lease_owner, error="x", delay=0) is False
    assert (stored(database, row.id)["state"], await a.document(row.id)) == ("delivered", b"")

    # B settled it as refused meanwhile: A's late delivery leaves B's record, and the document
    # the shop needs to send it again.
    refused, _ = await a.add(new("k2", document=b"%PDF-refused"))
    mine = await a.claim(refused.id, lease_seconds=60)
    assert mine is not None
    lapse(database, refused.id)
    theirs = await b.claim(refused.id, lease_seconds=60)
    assert theirs is not None
    assert await b.mark_failed(refused.id, owner=theirs.lease_owner, error="invalid number")
    failed = stored(database, refused.id)
    assert await a.mark_delivered(refused.id, {"certificates": {"WA": "from-a"}}) is False
    assert stored(database, refused.id) == failed
    assert await a.document(refused.id) == b"%PDF-refused"

    # The shop sends it again: no lease needed, and the next claim is a new owner.
    assert await a.requeue(refused.id) is True
    again = await a.claim(refused.id, lease_seconds=60)
    assert again is not None and again.lease_owner not in (mine.lease_owner, theirs.lease_owner)
    assert await b.mark_delivered(refused.id, {}) is True
    await a.close()
    await b.close()


_OLD_SCHEMA = """
CREATE TABLE submissions (
    id TEXT PRIMARY KEY, customer TEXT NOT NULL, guest INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL, body_hash TEXT NOT NULL, kind TEXT NOT NULL,
    payload TEXT NOT NULL, media_type TEXT NOT NULL DEFAULT '',
    filename TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
    progress TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, delivered_at REAL,
    UNIQUE (customer, idempotency_key)
);
CREATE TABLE documents (submission_id TEXT PRIMARY KEY, content BLOB NOT NULL);
CREATE INDEX submissions_due_in_order
    ON submissions (state, next_attempt_at, created_at, lease_until);
INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,
    media_type, filename, created_at)
    VALUES ('old-1', 'C-1', 0, 'k1', 'h', 'upload', '{"zones": ["WA"]}', 'application/pdf',
            'old.pdf', 1);
INSERT INTO documents VALUES ('old-1', X'255044462D6F6C64');
"""


@pytest.mark.anyio
async def test_a_file_from_before_lease_owners_gets_the_column_once_and_works(
    tmp_path: Path,
) -> None:
    database = tmp_path / "old.sqlite3"
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_OLD_SCHEMA)
    # An older process holds a lease on a second row, the old way (no owner).
    db.execute(
        "INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,"
        " created_at, lease_until) VALUES ('old-2', 'C-1', 0, 'k2', 'h', 'upload',"
        ' \'{"zones": ["WA"]}\', 2, ?)',
        (time.time() + 60,),
    )
    db.close()

    # The workers of a restarted app open it at once: the column is added once, by one of them.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        outboxes = list(pool.map(Outbox, [database] * 4))
    a, b = outboxes[0], outboxes[1]
    assert stored(database, "old-1")["lease_owner"] == ""
    [mine] = await a.claim_due(limit=5, lease_seconds=60)  # old-2's lease still runs
    assert mine.id == "old-1" and mine.lease_owner and await a.document("old-1") == b"%PDF-old"
    assert await a.save_progress("old-1", {"customer_id": "c"}, owner=mine.lease_owner)
    assert await b.renew("old-1", owner="", lease_seconds=60) is False
    assert await a.mark_delivered("old-1", {"customer_id": "c"})
    # The old process's lease runs out by its time; the next claim takes the row as its own.
    lapse(database, "old-2")
    taken = await b.claim("old-2", lease_seconds=60)
    assert taken is not None and taken.lease_owner
    assert await b.mark_retry("old-2", owner=taken.lease_owner, error="x", delay=0)
    # An older process still on the file adds rows without knowing the column.
    old = sqlite3.connect(database, isolation_level=None)
    old.execute(
        "INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,"
        " created_at) VALUES ('old-3', 'C-1', 0, 'k3', 'h', 'upload', '{}', 3)"
    )
    old.close()
    row, created = await a.add(new("k4"))
    assert created and await a.counts() == {"delivered": 1, "pending": 3}
    for outbox in outboxes:
        await outbox.close()
    # Opened again: nothing to add, nothing lost.
    outbox = Outbox(database)
    assert await outbox.get(row.id) is not None and (await outbox.counts())["pending"] == 3
    await outbox.close()


# -- the deliverer ----------------------------------------------------------------------------


class StallingProvider:
    """Stalls in ``create_certificate`` long enough for another process to claim the row
    (``stall`` runs then, synchronously: the whole process is paused), then does ``then``."""

    name = "stalling"
    can_mint_tokens = False

    def __init__(self, stall: Callable[[], Awaitable[None]], then: str) -> None:
        self.stall = stall
        self.then = then
        self.created: list[str] = []
        self.attached: list[str] = []
        self.cancelled = False

    async def mint_token(self, customer_code: str) -> ProviderToken:
        raise NotImplementedError

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        return "cust-" + profile.code

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        await self.stall()
        if self.then == "unavailable":
            raise ProviderUnavailable("the provider timed out")
        if self.then == "hang":  # a provider call that never answers
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        self.created.append(draft.idempotency_key)
        return ProviderCertificate(
            id="cert-" + draft.zone, zone=draft.zone, reason=draft.reason, status="Pending"
        )

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        self.attached.append(certificate_id)

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        return []

    async def aclose(self) -> None:
        return None


class OtherProcess:
    """Process B: claims the row once A has stalled past its lease; keeps what it saw."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.outbox = Outbox(database)
        self.claimed: Submission | None = None
        self.row_after_claim: dict[str, Any] = {}
        self.submission_id = ""

    async def take_over(self) -> None:
        lapse(self.database, self.submission_id)
        self.claimed = await self.outbox.claim(self.submission_id, lease_seconds=60)
        assert self.claimed is not None
        self.row_after_claim = stored(self.database, self.submission_id)


@pytest.fixture
async def other(tmp_path: Path) -> AsyncIterator[OtherProcess]:
    """Process B, on the outbox file the attempt under test (process A) uses."""
    process = OtherProcess(tmp_path / "outbox.sqlite3")
    yield process
    await process.outbox.close()


async def attempt_while_another_process_takes_over(
    other: OtherProcess,
    then: str,
    caplog: pytest.LogCaptureFixture,
    *,
    lease_seconds: float = 60.0,
) -> tuple[StallingProvider, Submission | None, list[str]]:
    """A delivers (``deliver_now``); mid-delivery it stalls and B claims the row. Asserts what
    every such attempt must leave: the row as B's claim made it (B's lease, nothing of A's),
    pending, and A's warning that it lost the lease. Answers A's provider, what A's attempt
    returned, and A's warnings."""
    outbox = Outbox(other.database)
    try:
        row, _ = await outbox.add(new("k1"))
        other.submission_id = row.id
        provider = StallingProvider(other.take_over, then)
        deliverer = Deliverer(outbox, provider, lease_seconds=lease_seconds)
        try:
            with caplog.at_level(logging.WARNING, logger="certwidget.outbox.delivery"):
                async with asyncio.timeout(10):
                    final = await deliverer.spawn(row.id)
            assert not deliverer._claimed  # settled: nothing for stop() to release
        finally:
            await deliverer.stop()
    finally:
        await outbox.close()
    assert stored(other.database, row.id) == other.row_after_claim
    assert final is not None and final.state == "pending"
    warnings = lost_lease_warnings(caplog, row.id)
    assert warnings
    return provider, final, warnings


@pytest.mark.anyio
async def test_an_attempt_that_lost_its_lease_schedules_no_retry_over_the_new_owner(
    other: OtherProcess, caplog: pytest.LogCaptureFixture
) -> None:
    _, final, _ = await attempt_while_another_process_takes_over(other, "unavailable", caplog)
    # B's lease, B's schedule (checked by the helper), no attempt counted by A.
    assert final is not None
    assert (final.state, final.attempts, final.last_error) == ("pending", 0, "")


@pytest.mark.anyio
async def test_an_attempt_that_lost_its_lease_stops_before_its_next_step(
    other: OtherProcess, caplog: pytest.LogCaptureFixture
) -> None:
    provider, _, _ = await attempt_while_another_process_takes_over(other, "succeed", caplog)
    # A's certificate call went through (idempotent: B makes it again under the same key), but
    # A neither records it over B's progress (checked by the helper), nor attaches, nor marks
    # the row delivered.
    assert provider.created == [f"certwidget-{other.submission_id}-WA"]
    assert provider.attached == []
    # B goes on from where it stands and settles the row.
    assert other.claimed is not None
    assert await other.outbox.mark_delivered(
        other.submission_id, {"certificates": {"WA": "cert-WA"}}
    )


@pytest.mark.anyio
async def test_a_refused_renewal_stops_a_stalled_attempt_at_once(
    other: OtherProcess, caplog: pytest.LogCaptureFixture
) -> None:
    # The provider call never answers: the first renewal after B's claim (a third of the lease
    # later) is refused, and the attempt ends there instead of holding its slot for ever. The
    # helper checks the row is as B left it: A did not extend B's lease.
    provider, _, warnings = await attempt_while_another_process_takes_over(
        other, "hang", caplog, lease_seconds=0.3
    )
    assert provider.cancelled
    assert any("renewing its lease" in message for message in warnings)


@pytest.mark.anyio
async def test_stopping_releases_no_lease_another_process_took(tmp_path: Path) -> None:
    # A shuts down mid-attempt (its lease lapsed while it stalled, and B claimed the row):
    # the row stays B's, not handed to whoever claims next.
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    other = OtherProcess(database)
    row, _ = await outbox.add(new("k1"))
    other.submission_id = row.id
    provider = StallingProvider(other.take_over, "hang")
    deliverer = Deliverer(outbox, provider, lease_seconds=60)
    attempt = deliverer.spawn(row.id)
    for _ in range(200):
        if other.claimed is not None:
            break
        await asyncio.sleep(0.01)
    assert other.claimed is not None and row.id in deliverer._claimed
    await deliverer.stop()
    assert attempt.cancelled() and provider.cancelled
    assert stored(database, row.id) == other.row_after_claim
    assert await outbox.claim(row.id, lease_seconds=60) is None
    await outbox.close()
    await other.outbox.close()
