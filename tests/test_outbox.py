"""The outbox's group commit and the deliverer's leases, against real SQLite files.

Writes from many callers are committed together (one transaction, one fsync); each caller hears
back only once the transaction holding its write is committed, a write that fails fails alone,
and the delivery loop never leases more rows than it can work on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.sqlite import NewSubmission, Outbox, _Write
from certwidget.providers.base import (
    CertificateDraft,
    CustomerProfile,
    ProviderCertificate,
    ProviderToken,
)


def new(
    key: str, *, customer: str = "C-1", document: bytes = b"%PDF-1.4 doc", **payload: Any
) -> NewSubmission:
    return NewSubmission(
        customer=customer,
        guest=False,
        idempotency_key=key,
        body_hash="hash-" + key,
        kind="upload",
        payload={"zones": ["WA"], "reason": "G", **payload},
        document=document,
        media_type="application/pdf",
        filename="cert.pdf",
    )


def on_disk(database: Path) -> dict[str, tuple[str, bytes | None]]:
    """What another process reads from the file: {idempotency key: (state, document)}."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT s.idempotency_key, s.state, d.content FROM submissions AS s"
            " LEFT JOIN documents AS d ON d.submission_id = s.id"
        ).fetchall()
    finally:
        db.close()
    return {key: (state, content) for key, state, content in rows}


def test_concurrent_adds_are_all_on_disk_when_answered(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    seen_on_disk: dict[str, bool] = {}

    def submit(n: int) -> None:
        row, created = outbox.add(new(f"key-{n}", document=b"%PDF-" + bytes([n]) * 1000))
        assert created
        # Answered means committed: another connection sees the row and its document.
        seen_on_disk[row.idempotency_key] = row.idempotency_key in on_disk(database)

    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(submit, range(60)))
    assert len(seen_on_disk) == 60 and all(seen_on_disk.values())
    stored = on_disk(database)
    assert {key: state for key, (state, _) in stored.items()} == {
        f"key-{n}": "pending" for n in range(60)
    }
    assert stored["key-7"][1] == b"%PDF-" + bytes([7]) * 1000
    outbox.close()


@pytest.mark.anyio
async def test_add_async_is_durable_and_keeps_idempotency_within_one_batch(
    tmp_path: Path,
) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    # Twenty at once, half of them the same key twice (a double click): one row per key.
    answers = await asyncio.gather(*(outbox.add_async(new(f"key-{n % 10}")) for n in range(20)))
    by_key: dict[str, set[str]] = {}
    for row, _ in answers:
        by_key.setdefault(row.idempotency_key, set()).add(row.id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert Counter(created for _, created in answers) == {True: 10, False: 10}
    assert len(on_disk(database)) == 10
    assert outbox.document(answers[0][0].id) == b"%PDF-1.4 doc"
    outbox.close()


def insert(key: str) -> Any:
    """A write for the writer: inserts a row keyed ``key``, then fails if the key is "bad"."""

    def op(db: sqlite3.Connection) -> str:
        db.execute(
            "INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind,"
            " payload, created_at) VALUES (?, 'C-1', 0, ?, 'h', 'upload', '{}', 0)",
            (key, key),
        )
        if key == "bad":
            raise ValueError("a bug in one write")
        return key

    return op


def test_a_failing_write_fails_alone_and_the_rest_of_its_batch_commits(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)

    batch = [
        _Write(insert(key), durable=True, future=concurrent.futures.Future())
        for key in ("a", "bad", "b")
    ]
    outbox._commit(batch)  # one transaction, as the writer runs it
    assert batch[0].future.result() == "a"
    with pytest.raises(ValueError, match="a bug in one write"):
        batch[1].future.result()
    assert batch[2].future.result() == "b"
    assert sorted(on_disk(database)) == ["a", "b"]  # the failed write left nothing behind
    outbox.close()


def test_a_batch_where_nothing_fails_runs_without_savepoints(tmp_path: Path) -> None:
    # Each statement gives up the GIL and must win it back from the event loop: the usual
    # batch runs only its writes between BEGIN and COMMIT.
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    statements: list[str] = []
    outbox._db.set_trace_callback(statements.append)
    batch = [
        _Write(insert(key), durable=True, future=concurrent.futures.Future())
        for key in ("a", "b", "c")
    ]
    outbox._commit(batch)
    outbox._db.set_trace_callback(None)
    assert [write.future.result() for write in batch] == ["a", "b", "c"]
    assert not [sql for sql in statements if "SAVEPOINT" in sql or "RELEASE" in sql]
    assert [sql.split()[0] for sql in statements] == ["BEGIN", *["INSERT"] * 3, "COMMIT"]
    assert sorted(on_disk(database)) == ["a", "b", "c"]
    outbox.close()


def adding(submission: NewSubmission) -> _Write:
    """The write Outbox.add queues for ``submission``."""
    from certwidget.outbox.sqlite import _add

    op = functools.partial(_add, submission)
    return _Write(op, durable=True, future=concurrent.futures.Future(), new=submission)


def test_a_batch_of_new_submissions_is_one_statement_with_each_answer_right(
    tmp_path: Path,
) -> None:
    # Under load a batch is nothing but new submissions: one INSERT, which SQLite commits by
    # itself, stores them all. A key used before and a key twice in the batch still answer
    # their earlier row, and only new rows get a document.
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    earlier, _ = outbox.add(new("used-before", document=b"%PDF-first"))
    statements: list[str] = []
    outbox._db.set_trace_callback(statements.append)
    batch = [
        adding(new("a", document=b"%PDF-a")),
        adding(new("used-before", document=b"%PDF-second")),
        adding(new("twice", document=b"%PDF-twice-1")),
        adding(new("twice", document=b"%PDF-twice-2")),
        adding(new("no-document", document=b"")),
    ]
    outbox._commit(batch)
    outbox._db.set_trace_callback(None)
    answers = [write.future.result() for write in batch]
    own = [sql.split()[0] for sql in statements if not sql.startswith("--")]
    assert own[0] == "INSERT" and "BEGIN" not in own and "COMMIT" not in own
    assert [created for _, created in answers] == [True, False, True, False, True]
    assert answers[1][0].id == earlier.id
    assert answers[3][0].id == answers[2][0].id
    assert on_disk(database) == {
        "used-before": ("pending", b"%PDF-first"),
        "a": ("pending", b"%PDF-a"),
        "twice": ("pending", b"%PDF-twice-1"),
        "no-document": ("pending", None),
    }
    outbox.close()


def test_in_a_batch_of_new_submissions_one_that_cannot_be_stored_fails_alone(
    tmp_path: Path,
) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    batch = [
        adding(new("a")),
        adding(new("unstorable", note={1, 2})),  # a set is not JSON
        adding(new("b")),
    ]
    outbox._commit(batch)
    assert batch[0].future.result()[1] and batch[2].future.result()[1]
    with pytest.raises(TypeError, match="set"):
        batch[1].future.result()
    assert sorted(on_disk(database)) == ["a", "b"]
    outbox.close()


def test_a_failing_write_alone_in_its_batch_leaves_nothing_and_the_next_commits(
    tmp_path: Path,
) -> None:
    # A lone write runs without a savepoint: its failure must still undo all it did.
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)

    bad = _Write(insert("bad"), durable=True, future=concurrent.futures.Future())
    outbox._commit([bad])
    with pytest.raises(ValueError, match="a bug in one write"):
        bad.future.result()
    good = _Write(insert("good"), durable=True, future=concurrent.futures.Future())
    outbox._commit([good])
    assert good.future.result() == "good"
    assert list(on_disk(database)) == ["good"]
    outbox.close()


def test_a_reused_key_answers_the_first_row_and_stores_nothing_new(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    first, created = outbox.add(new("k-1"))
    again, created_again = outbox.add(new("k-1"))
    assert created and not created_again
    assert again.id == first.id
    assert outbox.ids() == [first.id]
    outbox.close()


def written(n: int) -> _Write:
    return _Write(lambda db: "written", durable=True, future=concurrent.futures.Future())


def added(n: int) -> _Write:
    return adding(new(f"key-{n}"))


@pytest.mark.parametrize("make", [written, added])
def test_a_batch_that_cannot_commit_acknowledges_nobody(
    tmp_path: Path, make: Callable[[int], _Write]
) -> None:
    # Plain writes run between BEGIN and COMMIT; new submissions alone, in one statement.
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    other = sqlite3.connect(database, isolation_level=None, timeout=0)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    outbox._db.execute("PRAGMA busy_timeout = 50")
    try:
        batch = [make(n) for n in range(3)]
        outbox._commit(batch)
        for write in batch:
            with pytest.raises(sqlite3.OperationalError):
                write.future.result()
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert on_disk(database) == {}
    # The writer goes on afterwards.
    _, created = outbox.add(new("key-0"))
    assert created and list(on_disk(database)) == ["key-0"]
    outbox.close()


@pytest.mark.anyio
async def test_close_commits_every_write_already_accepted(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    futures = [outbox._submit(lambda db, n=n: n, durable=True) for n in range(5)]
    pending = [asyncio.ensure_future(outbox.add_async(new(f"key-{n}"))) for n in range(30)]
    await asyncio.sleep(0)  # every add is handed to the writer
    await asyncio.to_thread(outbox.close)
    assert [future.result() for future in futures] == list(range(5))
    assert all(created for _, created in await asyncio.gather(*pending))
    assert len(on_disk(database)) == 30
    with pytest.raises(sqlite3.ProgrammingError):
        outbox.add(new("too-late"))


def page_size_and_journal(database: Path) -> tuple[int, str]:
    """What the file says (wal_autocheckpoint is per connection: the tests read the outbox's)."""
    db = sqlite3.connect(database)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        return int(page_size), str(db.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        db.close()


def test_a_new_file_has_16_kb_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    # Big pages make documents cheap to commit; checkpoints stay at 4 MB of WAL either way.
    fresh = Outbox(tmp_path / "new.sqlite3")
    fresh.add(new("k1", document=b"%PDF-" + bytes(200 * 1024)))
    assert page_size_and_journal(tmp_path / "new.sqlite3") == (16384, "wal")
    assert fresh._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 256
    fresh.close()

    old_file = tmp_path / "old.sqlite3"
    db = sqlite3.connect(old_file)
    db.execute("CREATE TABLE unrelated (x)")  # a file made before: 4 KB pages
    db.close()
    old = Outbox(old_file)
    old.add(new("k1"))
    assert page_size_and_journal(old_file) == (4096, "wal")
    assert old._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1024
    assert old.get(old.add(new("k1"))[0].id) is not None
    old.close()


def test_a_delivered_submission_keeps_its_row_and_drops_its_document(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    delivered, _ = outbox.add(new("k1", document=b"%PDF-1.4 delivered"))
    outbox.add(new("k2", document=b"%PDF-1.4 waiting"))
    outbox.mark_delivered(delivered.id, {"certificates": {"WA": "7"}})
    assert on_disk(database) == {
        "k1": ("delivered", None),
        "k2": ("pending", b"%PDF-1.4 waiting"),
    }
    row = outbox.get(delivered.id)
    assert row is not None and row.progress == {"certificates": {"WA": "7"}}
    # A replay of the delivered submission is still answered from its row.
    again, created = outbox.add(new("k1", document=b"%PDF-1.4 delivered"))
    assert not created and again.id == delivered.id and again.state == "delivered"
    outbox.close()

    # A version that kept documents after delivery left one behind: dropped when opened.
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("UPDATE submissions SET state = 'delivered' WHERE idempotency_key = 'k2'")
    db.close()
    assert on_disk(database)["k2"] == ("delivered", b"%PDF-1.4 waiting")
    Outbox(database).close()
    assert on_disk(database)["k2"] == ("delivered", None)


def test_a_file_from_before_keeps_its_documents(tmp_path: Path) -> None:
    database = tmp_path / "old.sqlite3"
    db = sqlite3.connect(database, isolation_level=None)
    db.executescript(
        """
        CREATE TABLE submissions (
            id TEXT PRIMARY KEY, customer TEXT NOT NULL, guest INTEGER NOT NULL,
            idempotency_key TEXT NOT NULL, body_hash TEXT NOT NULL, kind TEXT NOT NULL,
            payload TEXT NOT NULL, document BLOB, media_type TEXT NOT NULL DEFAULT '',
            filename TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0,
            lease_until REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
            progress TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL, delivered_at REAL,
            UNIQUE (customer, idempotency_key)
        );
        CREATE INDEX submissions_due ON submissions (state, next_attempt_at);
        INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,
            document, media_type, filename, created_at)
            VALUES ('old-1', 'C-1', 0, 'k1', 'h', 'upload', '{"zones": ["WA"]}',
                    X'255044462D6F6C64', 'application/pdf', 'old.pdf', 1);
        INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,
            document, media_type, filename, created_at, state)
            VALUES ('old-0', 'C-1', 0, 'k0', 'h', 'upload', '{"zones": ["WA"]}',
                    X'255044462D30', 'application/pdf', 'done.pdf', 0, 'delivered');
        """
    )
    db.close()
    outbox = Outbox(database)
    assert outbox.document("old-1") == b"%PDF-old"
    # Delivered before the upgrade: the provider has it, so its document is not kept.
    assert outbox.document("old-0") == b"" and outbox.get("old-0") is not None
    [due] = outbox.claim_due(limit=5, lease_seconds=60)
    assert due.id == "old-1" and due.filename == "old.pdf"
    row, created = outbox.add(new("k2"))
    assert created and outbox.document(row.id) == b"%PDF-1.4 doc"
    # An older certwidget process still on this file (an upgrade one process at a time) adds
    # a row the old way, and still reads its own earlier documents; we read its new one.
    old = sqlite3.connect(database, isolation_level=None)
    old.execute(
        "INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,"
        " document, media_type, filename, created_at) VALUES ('old-2', 'C-1', 0, 'k3', 'h',"
        " 'upload', '{}', X'255044462D32', 'application/pdf', 'two.pdf', 2)"
    )
    assert old.execute("SELECT document FROM submissions WHERE id = 'old-1'").fetchone() == (
        b"%PDF-old",
    )
    old.close()
    assert outbox.document("old-2") == b"%PDF-2"
    outbox.close()
    # Opened again (another process, a restart): nothing copied twice, nothing is lost.
    outbox = Outbox(database)
    assert outbox.document("old-1") == b"%PDF-old"
    assert outbox.document("old-2") == b"%PDF-2"
    assert outbox.counts() == {"pending": 3, "delivered": 1}
    outbox.close()


# -- the deliverer's leases -----------------------------------------------------------------


class SlowProvider:
    """Counts deliveries; each takes a while, longer than the lease would last unrenewed."""

    name = "slow"
    can_mint_tokens = False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.created: Counter[str] = Counter()
        self.attached: Counter[str] = Counter()
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    async def mint_token(self, customer_code: str) -> ProviderToken:
        raise NotImplementedError

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        return "cust-" + profile.code

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.active -= 1
        self.created[draft.idempotency_key] += 1
        return ProviderCertificate(
            id=draft.idempotency_key, zone=draft.zone, reason=draft.reason, status="Pending"
        )

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        self.attached[certificate_id] += 1

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        return []

    async def aclose(self) -> None:
        return None


@pytest.mark.anyio
async def test_a_backlog_is_delivered_once_each_and_no_lease_lapses_waiting_for_a_slot(
    tmp_path: Path,
) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    provider = SlowProvider(seconds=0.15)
    # A lease of 0.3 s: two rounds of waiting for one of the 2 slots would outlast it.
    deliverer = Deliverer(outbox, provider, concurrency=2, lease_seconds=0.3)
    for n in range(12):
        await outbox.add_async(new(f"key-{n}", customer=f"C-{n}"))
    deliverer.start()
    try:
        for _ in range(200):
            if outbox.counts() == {"delivered": 12}:
                break
            await asyncio.sleep(0.05)
        assert outbox.counts() == {"delivered": 12}
    finally:
        await deliverer.stop()
        outbox.close()
    assert len(provider.created) == 12
    assert set(provider.created.values()) == {1}, "a certificate was created twice"
    assert set(provider.attached.values()) == {1}
    assert provider.most_active <= 2


@pytest.mark.anyio
async def test_deliver_now_leases_only_once_a_slot_is_free(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    provider = SlowProvider(seconds=0.15)
    deliverer = Deliverer(outbox, provider, concurrency=1, lease_seconds=0.3)
    rows = [(await outbox.add_async(new(f"key-{n}", customer=f"C-{n}")))[0] for n in range(5)]
    deliverer.start()  # the background loop competes for the same rows and the same slot
    try:
        # Five buyers waiting for their delivery at once, one slot: all delivered, each once.
        done = await asyncio.gather(*(deliverer.deliver_now(row.id) for row in rows))
        assert [row.state if row else None for row in done] == ["delivered"] * 5
    finally:
        await deliverer.stop()
        outbox.close()
    assert set(provider.created.values()) == {1} and len(provider.created) == 5


@pytest.mark.anyio
async def test_stopping_while_a_claim_runs_hands_the_claimed_row_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    import certwidget.outbox.delivery as delivery

    monkeypatch.setattr(delivery, "warm_renderer", lambda: None)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    row, _ = outbox.add(
        NewSubmission(
            "C-1", False, "k1", "h", "upload", {"zones": ["WA"]}, b"%PDF", "application/pdf", "c"
        )
    )
    claim_due = outbox.claim_due

    def slow_claim_due(**options: Any) -> Any:
        time.sleep(0.3)  # a busy writer: the claim is still running when stop() comes
        return claim_due(**options)

    monkeypatch.setattr(outbox, "claim_due", slow_claim_due)
    deliverer = Deliverer(outbox, object(), lease_seconds=60)  # type: ignore[arg-type]
    deliverer.start()
    await asyncio.sleep(0.1)
    await deliverer.stop()
    await asyncio.sleep(0.5)  # long enough for a claim left running to finish
    # Not left leased for a minute: another process (or a restart) can take it at once.
    assert [again.id for again in claim_due(limit=5, lease_seconds=60)] == [row.id]
    outbox.close()
