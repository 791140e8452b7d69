"""The outbox contract: what every backend behind certwidget.outbox.base.Outbox must do.

Each test runs once per backend, through the ``outbox_backend`` fixture: a function that opens
a handle on one store, as many times as a test asks (two handles are two processes sharing the
store). To add a backend, add its name to ``BACKENDS`` and a branch to ``_opener`` answering a
function that opens a handle, e.g. for PostgreSQL::

    BACKENDS = ["sqlite", "memory", "postgres"]
    ...
    if name == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")
        return lambda: PostgresOutbox(dsn)

What only the SQLite file does (group commit, fsync, migrations, older files) is in
tests/outbox/test_outbox.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import certwidget.documents.rendering as rendering
from certwidget.outbox.base import MAX_ERROR_CHARS, Outbox
from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.memory import MemoryOutbox
from certwidget.outbox.postgres import PostgresOutbox
from certwidget.outbox.sqlite import SQLiteOutbox
from certwidget.providers.base import ProviderError
from tests.support.outbox import SlowProvider, new

BACKENDS = ["sqlite", "memory", "postgres"]

Open = Callable[[], Awaitable[Outbox]]


def _opener(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Outbox]:
    """A function making a new handle on the one store this test uses."""
    if name == "sqlite":
        return lambda: SQLiteOutbox(tmp_path / "outbox.sqlite3")
    if name == "memory":
        first = MemoryOutbox()
        return lambda: MemoryOutbox(shared_with=first)
    if name == "postgres":
        dsn = request.getfixturevalue("postgres_dsn")  # a fresh database (tests/support)
        return lambda: PostgresOutbox(dsn)
    raise ValueError(f"no such outbox backend: {name}")


@pytest.fixture(params=BACKENDS)
async def outbox_backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Open]:
    make = _opener(request.param, request, tmp_path)
    handles: list[Outbox] = []

    async def open_handle() -> Outbox:
        outbox = make()
        await outbox.open()
        handles.append(outbox)
        return outbox

    yield open_handle
    for outbox in handles:
        await outbox.close()


pytestmark = pytest.mark.anyio

LAPSE = 0.05  # a lease short enough to run out within a test


class RefusesFirstAttach(SlowProvider):
    """Makes the certificate, then refuses its document once (as a provider refuses a file
    it cannot read): the row fails with the certificate already made."""

    def __init__(self) -> None:
        super().__init__(seconds=0)
        self.refused = False

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        if not self.refused:
            self.refused = True
            raise ProviderError("not a PDF", status=422)
        await super().attach_document(
            certificate_id, content, media_type=media_type, filename=filename
        )


async def lapsed() -> None:
    await asyncio.sleep(LAPSE * 2)


# -- storing ----------------------------------------------------------------------------------


async def test_a_backend_is_an_outbox(outbox_backend: Open) -> None:
    assert isinstance(await outbox_backend(), Outbox)


async def test_a_new_submission_is_pending_with_its_document(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    row, created = await outbox.add(new("k1", document=b"%PDF-1", note="é"))
    assert created and row.state == "pending" and row.attempts == 0 and row.unexpected_errors == 0
    assert row.payload == {"zones": ["WA"], "reason": "G", "note": "é"} and row.zones == ["WA"]
    assert (row.customer, row.idempotency_key, row.body_hash) == ("C-1", "k1", "hash-k1")
    assert row.lease_owner == "" and row.delivered_at is None and row.progress == {}
    assert await outbox.get(row.id) == row
    assert await outbox.document(row.id) == b"%PDF-1"
    assert await outbox.get("no-such-id") is None
    assert await outbox.document("no-such-id") == b""
    assert await outbox.counts() == {"pending": 1} and await outbox.ids() == [row.id]


async def test_a_reused_key_answers_the_first_row_and_stores_nothing_new(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    first, created = await outbox.add(new("k-1"))
    again, created_again = await outbox.add(new("k-1", document=b"%PDF-other"))
    assert created and not created_again
    assert again.id == first.id
    assert await outbox.ids() == [first.id]
    assert await outbox.document(first.id) == b"%PDF-1.4 doc"
    # Keys are per customer: another customer's same key is another submission.
    other, created_other = await outbox.add(new("k-1", customer="C-2"))
    assert created_other and other.id != first.id


async def test_concurrent_adds_keep_one_row_per_key(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    # Twenty at once, half of them the same key twice (a double click): one row per key.
    answers = await asyncio.gather(*(outbox.add(new(f"key-{n % 10}")) for n in range(20)))
    by_key: dict[str, set[str]] = {}
    for row, _ in answers:
        by_key.setdefault(row.idempotency_key, set()).add(row.id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert Counter(created for _, created in answers) == {True: 10, False: 10}
    assert await outbox.counts() == {"pending": 10}


async def test_a_payload_that_is_not_json_is_refused_and_stores_nothing(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    with pytest.raises(TypeError):
        await outbox.add(new("k1", note={1, 2}))
    assert await outbox.counts() == {}


async def test_for_customer_answers_their_rows_newest_first(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    older, _ = await outbox.add(new("k1"))
    await asyncio.sleep(0.01)
    newer, _ = await outbox.add(new("k2"))
    await outbox.add(new("k3", customer="C-2"))
    assert [row.id for row in await outbox.for_customer("C-1")] == [newer.id, older.id]
    assert [row.id for row in await outbox.for_customer("C-1", limit=1)] == [newer.id]
    assert await outbox.for_customer("nobody") == []


async def test_ids_and_counts_by_state(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    done, _ = await outbox.add(new("k1"))
    waiting, _ = await outbox.add(new("k2"))
    assert await outbox.mark_delivered(done.id, {})
    assert await outbox.counts() == {"pending": 1, "delivered": 1}
    assert await outbox.ids(["delivered"]) == [done.id]
    assert await outbox.ids(["pending", "failed"]) == [waiting.id]
    assert sorted(await outbox.ids()) == sorted([done.id, waiting.id])


# -- leases -----------------------------------------------------------------------------------


async def test_claim_due_leases_each_due_row_once_oldest_first(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    rows = [(await outbox.add(new(f"k{n}")))[0] for n in range(3)]
    first = await outbox.claim_due(limit=2, lease_seconds=60)
    assert [row.id for row in first] == [rows[0].id, rows[1].id]
    assert all(row.lease_owner for row in first) and len({r.lease_owner for r in first}) == 2
    second = await outbox.claim_due(limit=5, lease_seconds=60)
    assert [row.id for row in second] == [rows[2].id]
    assert await outbox.claim_due(limit=5, lease_seconds=60) == []
    assert await outbox.claim(rows[0].id, lease_seconds=60) is None  # leased
    # A lease that ran out is claimable again, under a new token.
    assert await outbox.release({row.id: row.lease_owner for row in first}) == 2
    again = await outbox.claim(rows[0].id, lease_seconds=60)
    assert again is not None and again.lease_owner not in ("", first[0].lease_owner)


async def test_next_due_in_follows_schedules_and_leases(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    assert await outbox.next_due_in() is None
    row, _ = await outbox.add(new("k1"))
    assert await outbox.next_due_in() == 0
    [claimed] = await outbox.claim_due(limit=1, lease_seconds=60)
    due = await outbox.next_due_in()
    assert due is not None and 50 < due <= 60  # when the lease runs out
    assert await outbox.mark_retry(row.id, owner=claimed.lease_owner, error="down", delay=30)
    due = await outbox.next_due_in()
    assert due is not None and 20 < due <= 30
    assert await outbox.claim_due(limit=1, lease_seconds=60) == []  # not due yet
    # claim() takes a row whatever its schedule (a buyer waiting on it).
    assert await outbox.claim(row.id, lease_seconds=60) is not None
    await outbox.mark_delivered(row.id, {})
    assert await outbox.next_due_in() is None


async def test_updates_need_the_token_of_a_claim(outbox_backend: Open) -> None:
    # A row nobody claimed is held by nobody, and an empty token holds nothing.
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1"))
    assert await outbox.renew(row.id, owner="", lease_seconds=60) is False
    assert await outbox.mark_retry(row.id, owner="", error="x", delay=0) is False
    assert await outbox.mark_failed(row.id, owner="guess", error="x") is False
    assert await outbox.save_progress(row.id, {"x": 1}, owner="") is False
    assert (
        await outbox.set_document(row.id, b"x", owner="", media_type="a/b", filename="x") is False
    )
    assert await outbox.release({row.id: ""}) == 0
    fetched = await outbox.get(row.id)
    assert fetched == row and fetched is not None and fetched.lease_owner == ""  # not handed out


async def test_the_lease_holder_records_progress_and_its_rendered_document(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1", document=b"signature"))
    claimed = await outbox.claim(row.id, lease_seconds=60)
    assert claimed is not None
    owner = claimed.lease_owner
    assert await outbox.renew(row.id, owner=owner, lease_seconds=60)
    progress = {"customer_id": "c", "certificates": {"WA": "7"}, "attached": []}
    assert await outbox.save_progress(row.id, progress, owner=owner)
    assert await outbox.set_document(
        row.id, b"%PDF-rendered", owner=owner, media_type="application/pdf", filename="c.pdf"
    )
    stored = await outbox.get(row.id)
    assert stored is not None and stored.progress == progress
    assert (stored.media_type, stored.filename) == ("application/pdf", "c.pdf")
    assert await outbox.document(row.id) == b"%PDF-rendered"
    # What a caller does to its copy changes nothing stored.
    stored.progress["certificates"]["WA"] = "changed"
    stored.payload["zones"].append("OR")
    again = await outbox.get(row.id)
    assert again is not None and again.progress == progress and again.zones == ["WA"]


async def test_retries_and_failures_are_counted_and_requeue_renews_the_budget(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1"))
    claimed = await outbox.claim(row.id, lease_seconds=60)
    assert claimed is not None
    assert await outbox.mark_retry(
        row.id, owner=claimed.lease_owner, error="bug", delay=0, unexpected=True
    )
    retried = await outbox.get(row.id)
    assert retried is not None
    assert (retried.state, retried.attempts, retried.unexpected_errors) == ("pending", 1, 1)
    assert retried.last_error == "bug"
    claimed = await outbox.claim(row.id, lease_seconds=60)
    assert claimed is not None
    assert await outbox.mark_failed(
        row.id, owner=claimed.lease_owner, error="gave up", unexpected=True
    )
    failed = await outbox.get(row.id)
    assert failed is not None
    assert (failed.state, failed.attempts, failed.unexpected_errors) == ("failed", 2, 2)
    assert failed.last_error == "gave up"
    assert await outbox.claim(row.id, lease_seconds=60) is None  # failed: never retried
    assert await outbox.claim_due(limit=5, lease_seconds=60) == []
    assert await outbox.document(row.id) == b"%PDF-1.4 doc"  # kept, to be sent again
    assert await outbox.requeue(row.id)
    again = await outbox.get(row.id)
    assert again is not None
    assert (again.state, again.attempts, again.unexpected_errors) == ("pending", 2, 0)
    assert await outbox.requeue(row.id) is False  # only a failed row is sent again
    assert [due.id for due in await outbox.claim_due(limit=5, lease_seconds=60)] == [row.id]


async def test_requeue_gives_a_failed_row_its_unexpected_error_budget_again(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1"))
    claimed = await outbox.claim(row.id, lease_seconds=60)
    assert claimed is not None
    # An exception's message may hold the lone surrogate that failed: stored escaped.
    assert await outbox.mark_retry(
        row.id, owner=claimed.lease_owner, error="bad \ud800", delay=0, unexpected=True
    )
    claimed = await outbox.claim(row.id, lease_seconds=60)
    assert claimed is not None and claimed.unexpected_errors == 1
    assert claimed.last_error == "bad \\ud800"
    assert await outbox.mark_failed(
        row.id, owner=claimed.lease_owner, error="gave up", unexpected=True
    )
    failed = await outbox.get(row.id)
    assert failed is not None and (failed.state, failed.unexpected_errors) == ("failed", 2)
    assert await outbox.requeue(row.id)
    again = await outbox.get(row.id)
    assert again is not None and (again.state, again.unexpected_errors) == ("pending", 0)


async def test_an_error_is_kept_cut_short_and_storable(outbox_backend: Open) -> None:
    # A message may quote the very text that could not be encoded (a lone surrogate).
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1"))
    claimed = await outbox.claim(row.id, lease_seconds=60)
    assert claimed is not None
    error = "Ada \ud800 " + "x" * 1000
    assert await outbox.mark_retry(row.id, owner=claimed.lease_owner, error=error, delay=0)
    stored = await outbox.get(row.id)
    assert stored is not None and stored.last_error.startswith("Ada \\ud800 xx")
    assert len(stored.last_error) <= MAX_ERROR_CHARS + len("\\ud800")
    stored.last_error.encode()


async def test_a_delivered_submission_keeps_its_row_and_drops_its_document(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    delivered, _ = await outbox.add(new("k1", document=b"%PDF-1.4 delivered"))
    waiting, _ = await outbox.add(new("k2", document=b"%PDF-1.4 waiting"))
    assert await outbox.mark_delivered(delivered.id, {"certificates": {"WA": "7"}})
    assert await outbox.document(delivered.id) == b""
    assert await outbox.document(waiting.id) == b"%PDF-1.4 waiting"
    row = await outbox.get(delivered.id)
    assert row is not None and row.progress == {"certificates": {"WA": "7"}}
    assert row.state == "delivered" and row.delivered_at is not None and row.last_error == ""
    # A replay of the delivered submission is still answered from its row.
    again, created = await outbox.add(new("k1", document=b"%PDF-1.4 delivered"))
    assert not created and again.id == delivered.id and again.state == "delivered"
    assert await outbox.mark_delivered(delivered.id, {}) is False  # settled already


async def test_a_late_owner_changes_nothing_once_another_process_claimed_the_row(
    outbox_backend: Open,
) -> None:
    a, b = await outbox_backend(), await outbox_backend()  # two processes on one store
    row, _ = await a.add(new("k1"))
    mine = await a.claim(row.id, lease_seconds=LAPSE)
    assert mine is not None and mine.lease_owner
    assert await a.save_progress(row.id, {"customer_id": "cust-a"}, owner=mine.lease_owner)
    await lapsed()  # A stalls past its lease
    theirs = await b.claim(row.id, lease_seconds=60)
    assert theirs is not None and theirs.lease_owner not in ("", mine.lease_owner)
    assert theirs.progress == {"customer_id": "cust-a"}  # B resumes where A got
    assert await b.save_progress(row.id, {"customer_id": "cust-b"}, owner=theirs.lease_owner)
    before = await b.get(row.id)

    # A wakes up: every update of its lease is refused, and says so.
    owner = mine.lease_owner
    assert await a.renew(row.id, owner=owner, lease_seconds=60) is False
    assert await a.save_progress(row.id, {"customer_id": "late"}, owner=owner) is False
    assert (
        await a.set_document(row.id, b"%PDF-late", owner=owner, media_type="i/p", filename="x")
        is False
    )
    assert await a.mark_retry(row.id, owner=owner, error="timed out", delay=30) is False
    assert await a.mark_failed(row.id, owner=owner, error="refused") is False
    assert await a.release({row.id: owner}) == 0
    assert await a.get(row.id) == before
    assert await a.document(row.id) == b"%PDF-1.4 doc"
    assert await a.claim(row.id, lease_seconds=60) is None  # still B's

    # B carries on and settles it.
    assert await b.renew(row.id, owner=theirs.lease_owner, lease_seconds=60)
    assert await b.mark_delivered(row.id, {"customer_id": "cust-b", "certificates": {"WA": "7"}})
    delivered = await a.get(row.id)
    assert delivered is not None and (delivered.state, delivered.attempts) == ("delivered", 0)
    # Settled: neither of them can reopen or recount it.
    assert await a.mark_retry(row.id, owner=owner, error="late", delay=0) is False
    assert await b.mark_retry(row.id, owner=theirs.lease_owner, error="late", delay=0) is False
    assert await b.save_progress(row.id, {}, owner=theirs.lease_owner) is False
    assert await a.get(row.id) == delivered


async def test_release_hands_back_only_the_leases_still_held(outbox_backend: Open) -> None:
    # A shutdown releases what this process claimed: never a lease another process took since.
    a, b = await outbox_backend(), await outbox_backend()
    first, _ = await a.add(new("k1"))
    second, _ = await a.add(new("k2"))
    claimed = {row.id: row.lease_owner for row in await a.claim_due(limit=5, lease_seconds=60)}
    assert set(claimed) == {first.id, second.id} and len(set(claimed.values())) == 2
    # A's lease on the second ran out (A stalled) and B took it.
    assert await a.release({second.id: claimed[second.id]}) == 1
    theirs = await b.claim(second.id, lease_seconds=60)
    assert theirs is not None
    assert await a.release(claimed) == 1
    assert [row.id for row in await b.claim_due(limit=5, lease_seconds=60)] == [first.id]
    assert await a.claim(second.id, lease_seconds=60) is None  # still B's


async def test_a_finished_delivery_is_recorded_while_pending_but_never_over_a_settled_row(
    outbox_backend: Open,
) -> None:
    a, b = await outbox_backend(), await outbox_backend()

    # Pending, B delivering it again: A's delivery is complete at the provider, so it is
    # recorded, and B's next update is refused (B stops there).
    row, _ = await a.add(new("k1"))
    assert await a.claim(row.id, lease_seconds=LAPSE) is not None
    await lapsed()
    theirs = await b.claim(row.id, lease_seconds=60)
    assert theirs is not None
    assert await a.mark_delivered(row.id, {"certificates": {"WA": "from-a"}}) is True
    assert await b.save_progress(row.id, {}, owner=theirs.lease_owner) is False
    assert await b.mark_retry(row.id, owner=theirs.lease_owner, error="x", delay=0) is False
    settled = await a.get(row.id)
    assert settled is not None and settled.state == "delivered"
    assert await a.document(row.id) == b""

    # B settled it as refused meanwhile: A's late delivery leaves B's record, and the document
    # the shop needs to send it again.
    refused, _ = await a.add(new("k2", document=b"%PDF-refused"))
    mine = await a.claim(refused.id, lease_seconds=LAPSE)
    assert mine is not None
    await lapsed()
    theirs = await b.claim(refused.id, lease_seconds=60)
    assert theirs is not None
    assert await b.mark_failed(refused.id, owner=theirs.lease_owner, error="invalid number")
    failed = await b.get(refused.id)
    assert await a.mark_delivered(refused.id, {"certificates": {"WA": "from-a"}}) is False
    assert await a.get(refused.id) == failed
    assert await a.document(refused.id) == b"%PDF-refused"

    # The shop sends it again: no lease needed, and the next claim is a new owner.
    assert await a.requeue(refused.id) is True
    again = await a.claim(refused.id, lease_seconds=60)
    assert again is not None and again.lease_owner not in (mine.lease_owner, theirs.lease_owner)
    assert await b.mark_delivered(refused.id, {}) is True


# -- merchant operations: listing and retrying ------------------------------------------------


async def _stored(outbox: Outbox, count: int, **options: Any) -> list[str]:
    """``count`` rows stored a little apart, so their order by time is certain; their ids."""
    ids = []
    for _ in range(count):
        row, _ = await outbox.add(new(uuid.uuid4().hex, **options))
        ids.append(row.id)
        await asyncio.sleep(0.01)
    return ids


async def test_list_submissions_answers_the_newest_first_with_the_total(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    assert await outbox.list_submissions() == (0, [])
    ids = await _stored(outbox, 5)
    total, rows = await outbox.list_submissions()
    assert total == 5 and [row.id for row in rows] == ids[::-1]
    assert await outbox.list_submissions(limit=2) == (5, rows[:2])
    assert await outbox.list_submissions(limit=2, offset=2) == (5, rows[2:4])
    assert await outbox.list_submissions(limit=2, offset=4) == (5, rows[4:])
    assert await outbox.list_submissions(offset=9) == (5, [])


async def test_list_submissions_filters_by_status_buyer_and_time(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    [received] = await _stored(outbox, 1)
    pending, failed, delivered = await _stored(outbox, 3, customer="C-2")
    for row_id, settle in ((pending, "retry"), (failed, "fail"), (delivered, "deliver")):
        claimed = await outbox.claim(row_id, lease_seconds=60)
        assert claimed is not None
        if settle == "retry":
            await outbox.mark_retry(row_id, owner=claimed.lease_owner, error="down", delay=60)
        elif settle == "fail":
            await outbox.mark_failed(row_id, owner=claimed.lease_owner, error="refused")
        else:
            await outbox.mark_delivered(row_id, {})

    async def ids(**filters: Any) -> list[str]:
        total, rows = await outbox.list_submissions(**filters)
        assert total == len(rows)
        return [row.id for row in rows]

    assert await ids(state="received") == [received]
    assert await ids(state="pending") == [pending]
    assert await ids(state="failed") == [failed]
    assert await ids(state="delivered") == [delivered]
    assert [row.status for row in (await outbox.list_submissions())[1]] == [
        "delivered", "failed", "pending", "received",
    ]  # fmt: skip
    assert await ids(customer="C-2") == [delivered, failed, pending]
    assert await ids(customer="C-2", state="failed") == [failed]
    assert await ids(customer="nobody") == []
    stored = {row.id: row.created_at for row in (await outbox.list_submissions())[1]}
    assert await ids(since=stored[failed]) == [delivered, failed]  # since is inclusive
    assert await ids(until=stored[failed]) == [pending, received]  # until is not
    assert await ids(since=stored[pending], until=stored[delivered]) == [failed, pending]
    total, page = await outbox.list_submissions(customer="C-2", limit=1, offset=1)
    assert total == 3 and [row.id for row in page] == [failed]


async def test_retry_sends_a_failed_row_again_with_its_key_and_progress(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1"))
    claimed = await outbox.claim(row.id, lease_seconds=60)
    assert claimed is not None
    progress = {"customer_id": "cust-1", "certificates": {"WA": "cert-1"}, "attached": []}
    assert await outbox.save_progress(row.id, progress, owner=claimed.lease_owner)
    assert await outbox.mark_failed(row.id, owner=claimed.lease_owner, error="bad", unexpected=True)
    assert await outbox.retry(row.id) == "retried"
    again = await outbox.get(row.id)
    assert again is not None
    assert (again.state, again.status, again.attempts, again.unexpected_errors) == (
        "pending", "pending", 1, 0,
    )  # fmt: skip
    assert (again.idempotency_key, again.progress) == ("k1", progress)
    assert await outbox.document(row.id) == b"%PDF-1.4 doc"
    assert [due.id for due in await outbox.claim_due(limit=5, lease_seconds=60)] == [row.id]


async def test_retry_makes_a_stuck_row_due_now(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    # Waiting out an hour's backoff after a failed attempt.
    waiting, _ = await outbox.add(new("k1"))
    claimed = await outbox.claim(waiting.id, lease_seconds=60)
    assert claimed is not None
    assert await outbox.mark_retry(waiting.id, owner=claimed.lease_owner, error="x", delay=3600)
    assert await outbox.claim_due(limit=5, lease_seconds=60) == []
    assert await outbox.retry(waiting.id) == "retried"
    assert [due.id for due in await outbox.claim_due(limit=5, lease_seconds=60)] == [waiting.id]
    # Leased by an attempt that died before its first attempt was counted.
    abandoned, _ = await outbox.add(new("k2"))
    dead = await outbox.claim(abandoned.id, lease_seconds=LAPSE)
    assert dead is not None
    await lapsed()
    assert await outbox.retry(abandoned.id) == "retried"
    # The dead attempt's lease is gone: it can settle nothing now.
    assert (
        await outbox.mark_retry(abandoned.id, owner=dead.lease_owner, error="x", delay=0) is False
    )
    assert await outbox.claim(abandoned.id, lease_seconds=60) is not None


async def test_retry_refuses_what_there_is_nothing_to_retry(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    assert await outbox.retry("no-such-id") == "not_found"
    received, _ = await outbox.add(new("k1"))
    assert await outbox.retry(received.id) == "queued"
    claimed = await outbox.claim(received.id, lease_seconds=60)
    assert claimed is not None
    assert await outbox.retry(received.id) == "leased"  # an attempt is working on it
    assert await outbox.save_progress(received.id, {}, owner=claimed.lease_owner)  # still held
    assert await outbox.mark_delivered(received.id, {"certificates": {"WA": "c-1"}})
    assert await outbox.retry(received.id) == "delivered"
    done = await outbox.get(received.id)
    assert done is not None and done.state == "delivered"
    # requeue (a failed row only) is unchanged: it refuses both as before.
    assert await outbox.requeue(received.id) is False


async def test_a_retried_row_is_delivered_once(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    provider = RefusesFirstAttach()
    deliverer = Deliverer(outbox, provider, lease_seconds=60)
    row, _ = await outbox.add(new("k1"))
    failed = await deliverer.deliver_now(row.id)
    assert failed is not None and failed.state == "failed" and failed.last_error == "not a PDF"
    assert await outbox.retry(row.id) == "retried"
    delivered = await deliverer.deliver_now(row.id)
    assert delivered is not None and delivered.state == "delivered"
    assert provider.created == {f"certwidget-{row.id}-WA": 1}, "a second certificate was made"
    assert sum(provider.attached.values()) == 1
    assert await outbox.retry(row.id) == "delivered"


async def test_a_closed_outbox_opens_again(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1"))
    await outbox.close()
    await outbox.open()
    await outbox.open()  # idempotent
    assert await outbox.get(row.id) is not None


# -- delivery over any backend ----------------------------------------------------------------


@pytest.fixture
def no_renderer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendering, "warm_renderer", lambda: None)


async def test_a_backlog_is_delivered_once_each_and_no_lease_lapses_waiting_for_a_slot(
    outbox_backend: Open,
) -> None:
    outbox = await outbox_backend()
    provider = SlowProvider(seconds=0.15)
    # A lease of 0.3 s: two rounds of waiting for one of the 2 slots would outlast it.
    deliverer = Deliverer(outbox, provider, concurrency=2, lease_seconds=0.3)
    for n in range(12):
        await outbox.add(new(f"key-{n}", customer=f"C-{n}"))
    deliverer.start()
    try:
        for _ in range(200):
            if await outbox.counts() == {"delivered": 12}:
                break
            await asyncio.sleep(0.05)
        assert await outbox.counts() == {"delivered": 12}
    finally:
        await deliverer.stop()
    assert len(provider.created) == 12
    assert set(provider.created.values()) == {1}, "a certificate was created twice"
    assert set(provider.attached.values()) == {1}
    assert provider.most_active <= 2


async def test_deliver_now_leases_only_once_a_slot_is_free(outbox_backend: Open) -> None:
    outbox = await outbox_backend()
    provider = SlowProvider(seconds=0.15)
    deliverer = Deliverer(outbox, provider, concurrency=1, lease_seconds=0.3)
    rows = [(await outbox.add(new(f"key-{n}", customer=f"C-{n}")))[0] for n in range(5)]
    deliverer.start()  # the background loop competes for the same rows and the same slot
    try:
        # Five buyers waiting for their delivery at once, one slot: all delivered, each once.
        done = await asyncio.gather(*(deliverer.deliver_now(row.id) for row in rows))
        assert [row.state if row else None for row in done] == ["delivered"] * 5
    finally:
        await deliverer.stop()
    assert set(provider.created.values()) == {1} and len(provider.created) == 5


async def test_stopping_while_a_claim_runs_hands_the_claimed_row_back(
    outbox_backend: Open, monkeypatch: pytest.MonkeyPatch, no_renderer: None
) -> None:
    outbox = await outbox_backend()
    row, _ = await outbox.add(new("k1"))
    claim_due = outbox.claim_due

    async def slow_claim_due(**options: Any) -> Any:
        await asyncio.sleep(0.3)  # a busy store: the claim is still running when stop() comes
        return await claim_due(**options)

    monkeypatch.setattr(outbox, "claim_due", slow_claim_due)
    deliverer = Deliverer(outbox, object(), lease_seconds=60)  # type: ignore[arg-type]
    deliverer.start()
    await asyncio.sleep(0.1)
    await deliverer.stop()
    await asyncio.sleep(0.5)  # long enough for a claim left running to finish
    # Not left leased for a minute: another process (or a restart) can take it at once.
    assert [again.id for again in await claim_due(limit=5, lease_seconds=60)] == [row.id]


# -- the middleware takes an outbox -----------------------------------------------------------


async def test_the_middleware_stores_in_the_outbox_it_is_given(tmp_path: Path) -> None:
    from tests.support.shop import as_buyer, build, client, filled, mint

    outbox = MemoryOutbox()
    shop = build(tmp_path, outbox=outbox)
    assert shop.runtime.outbox is outbox
    try:
        async with client(shop) as http:
            token = await mint(http, "C-1")
            response = await http.post(
                "/certwidget/certificates",
                json=filled(),
                headers={**as_buyer("C-1", token), "idempotency-key": "k1"},
            )
            assert response.status_code == 201, response.text
        assert await outbox.counts() == {"delivered": 1}
        assert not (tmp_path / "certwidget.sqlite3").exists()  # database= names no outbox now
    finally:
        await shop.runtime.shutdown()


def test_the_middleware_refuses_an_outbox_that_is_not_one(tmp_path: Path) -> None:
    from tests.support.shop import build

    with pytest.raises(TypeError, match="outbox must implement"):
        build(tmp_path, outbox=object())
