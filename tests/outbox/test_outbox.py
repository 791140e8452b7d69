"""What only the SQLite outbox does, against real files: group commit, durability, migrations.

Writes from many callers are committed together (one transaction, one fsync); each caller hears
back only once the transaction holding its write is committed, and a write that fails fails
alone. The schema is brought up to date at open, from the numbered migrations, whatever
certwidget made the file. What every backend does is in tests/outbox/test_outbox_contract.py.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from certwidget.outbox.base import NewSubmission
from certwidget.outbox.sqlite import (
    OutboxSchemaError,
    SQLiteOutbox,
    _add,
    _statements,
    _Write,
    migrations,
)
from tests.support.outbox import new

Outbox = SQLiteOutbox


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


@pytest.mark.anyio
async def test_concurrent_adds_are_all_on_disk_when_answered(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    seen_on_disk: dict[str, bool] = {}

    async def submit(n: int) -> None:
        row, created = await outbox.add(new(f"key-{n}", document=b"%PDF-" + bytes([n]) * 1000))
        assert created
        # Answered means committed: another connection sees the row and its document.
        stored = await asyncio.to_thread(on_disk, database)
        seen_on_disk[row.idempotency_key] = row.idempotency_key in stored

    await asyncio.gather(*(submit(n) for n in range(60)))
    assert len(seen_on_disk) == 60 and all(seen_on_disk.values())
    stored = on_disk(database)
    assert {key: state for key, (state, _) in stored.items()} == {
        f"key-{n}": "pending" for n in range(60)
    }
    assert stored["key-7"][1] == b"%PDF-" + bytes([7]) * 1000
    await outbox.close()


@pytest.mark.anyio
async def test_add_is_durable_and_keeps_idempotency_within_one_batch(
    tmp_path: Path,
) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    # Twenty at once, half of them the same key twice (a double click): one row per key.
    answers = await asyncio.gather(*(outbox.add(new(f"key-{n % 10}")) for n in range(20)))
    by_key: dict[str, set[str]] = {}
    for row, _ in answers:
        by_key.setdefault(row.idempotency_key, set()).add(row.id)
    assert all(len(ids) == 1 for ids in by_key.values())
    assert Counter(created for _, created in answers) == {True: 10, False: 10}
    assert len(on_disk(database)) == 10
    assert await outbox.document(answers[0][0].id) == b"%PDF-1.4 doc"
    await outbox.close()


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


@pytest.mark.anyio
async def test_a_failing_write_fails_alone_and_the_rest_of_its_batch_commits(
    tmp_path: Path,
) -> None:
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
    await outbox.close()


@pytest.mark.anyio
async def test_a_batch_where_nothing_fails_runs_without_savepoints(tmp_path: Path) -> None:
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
    await outbox.close()


def adding(submission: NewSubmission) -> _Write:
    """The write Outbox.add queues for ``submission``."""
    op = functools.partial(_add, submission)
    return _Write(op, durable=True, future=concurrent.futures.Future(), new=submission)


@pytest.mark.anyio
async def test_a_batch_of_new_submissions_is_one_statement_with_each_answer_right(
    tmp_path: Path,
) -> None:
    # Under load a batch is nothing but new submissions: one INSERT, which SQLite commits by
    # itself, stores them all. A key used before and a key twice in the batch still answer
    # their earlier row, and only new rows get a document.
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    earlier, _ = await outbox.add(new("used-before", document=b"%PDF-first"))
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
    await outbox.close()


@pytest.mark.anyio
async def test_in_a_batch_of_new_submissions_one_that_cannot_be_stored_fails_alone(
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
    await outbox.close()


@pytest.mark.anyio
async def test_a_failing_write_alone_in_its_batch_leaves_nothing_and_the_next_commits(
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
    await outbox.close()


def written(n: int) -> _Write:
    return _Write(lambda db: "written", durable=True, future=concurrent.futures.Future())


def added(n: int) -> _Write:
    return adding(new(f"key-{n}"))


@pytest.mark.anyio
@pytest.mark.parametrize("make", [written, added])
async def test_a_batch_that_cannot_commit_acknowledges_nobody(
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
    _, created = await outbox.add(new("key-0"))
    assert created and list(on_disk(database)) == ["key-0"]
    await outbox.close()


@pytest.mark.anyio
async def test_close_commits_every_write_already_accepted(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    futures = [outbox._submit(lambda db, n=n: n, durable=True) for n in range(5)]
    pending = [asyncio.ensure_future(outbox.add(new(f"key-{n}"))) for n in range(30)]
    await asyncio.sleep(0)  # every add is handed to the writer
    await outbox.close()
    assert [future.result() for future in futures] == list(range(5))
    assert all(created for _, created in await asyncio.gather(*pending))
    assert len(on_disk(database)) == 30
    with pytest.raises(sqlite3.ProgrammingError):
        await outbox.add(new("too-late"))


def page_size_and_journal(database: Path) -> tuple[int, str]:
    """What the file says (wal_autocheckpoint is per connection: the tests read the outbox's)."""
    db = sqlite3.connect(database)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        return int(page_size), str(db.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        db.close()


@pytest.mark.anyio
async def test_a_new_file_has_16_kb_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    # Big pages make documents cheap to commit; checkpoints stay at 4 MB of WAL either way.
    fresh = Outbox(tmp_path / "new.sqlite3")
    await fresh.add(new("k1", document=b"%PDF-" + bytes(200 * 1024)))
    assert page_size_and_journal(tmp_path / "new.sqlite3") == (16384, "wal")
    assert fresh._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 256
    await fresh.close()

    old_file = tmp_path / "old.sqlite3"
    db = sqlite3.connect(old_file)
    db.execute("CREATE TABLE unrelated (x)")  # a file made before: 4 KB pages
    db.close()
    old = Outbox(old_file)
    await old.add(new("k1"))
    assert page_size_and_journal(old_file) == (4096, "wal")
    assert old._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1024
    assert await old.get((await old.add(new("k1")))[0].id) is not None
    await old.close()


@pytest.mark.anyio
async def test_a_delivered_submission_keeps_its_row_and_drops_its_document(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    outbox = Outbox(database)
    delivered, _ = await outbox.add(new("k1", document=b"%PDF-1.4 delivered"))
    await outbox.add(new("k2", document=b"%PDF-1.4 waiting"))
    await outbox.mark_delivered(delivered.id, {"certificates": {"WA": "7"}})
    assert on_disk(database) == {
        "k1": ("delivered", None),
        "k2": ("pending", b"%PDF-1.4 waiting"),
    }
    row = await outbox.get(delivered.id)
    assert row is not None and row.progress == {"certificates": {"WA": "7"}}
    # A replay of the delivered submission is still answered from its row.
    again, created = await outbox.add(new("k1", document=b"%PDF-1.4 delivered"))
    assert not created and again.id == delivered.id and again.state == "delivered"
    await outbox.close()

    # A version that kept documents after delivery left one behind: dropped when opened.
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("UPDATE submissions SET state = 'delivered' WHERE idempotency_key = 'k2'")
    db.close()
    assert on_disk(database)["k2"] == ("delivered", b"%PDF-1.4 waiting")
    await Outbox(database).close()
    assert on_disk(database)["k2"] == ("delivered", None)


@pytest.mark.anyio
async def test_a_file_from_before_keeps_its_documents(tmp_path: Path) -> None:
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
    assert await outbox.document("old-1") == b"%PDF-old"
    # Delivered before the upgrade: the provider has it, so its document is not kept.
    assert await outbox.document("old-0") == b"" and await outbox.get("old-0") is not None
    [due] = await outbox.claim_due(limit=5, lease_seconds=60)
    assert due.id == "old-1" and due.filename == "old.pdf"
    row, created = await outbox.add(new("k2"))
    assert created and await outbox.document(row.id) == b"%PDF-1.4 doc"
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
    assert await outbox.document("old-2") == b"%PDF-2"
    await outbox.close()
    # Opened again (another process, a restart): nothing copied twice, nothing is lost.
    outbox = Outbox(database)
    assert await outbox.document("old-1") == b"%PDF-old"
    assert await outbox.document("old-2") == b"%PDF-2"
    assert await outbox.counts() == {"pending": 3, "delivered": 1}
    await outbox.close()


# -- migrations -----------------------------------------------------------------------------

# The schema the certwidget before numbered migrations made a new file with (it added the
# lease_owner and unexpected_errors columns to older files at open, and kept user_version 0).
PREVIOUS_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    guest INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    body_hash TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    media_type TEXT NOT NULL DEFAULT '',
    filename TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    unexpected_errors INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_owner TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    progress TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    delivered_at REAL,
    UNIQUE (customer, idempotency_key)
);
CREATE TABLE IF NOT EXISTS documents (
    submission_id TEXT PRIMARY KEY,
    content BLOB NOT NULL
);
-- What is due, in order, with its lease, from the index alone: finding the next rows to
-- deliver never reads the rows of a backlog.
DROP INDEX IF EXISTS submissions_due;
CREATE INDEX IF NOT EXISTS submissions_due_in_order
    ON submissions (state, next_attempt_at, created_at, lease_until);
CREATE INDEX IF NOT EXISTS submissions_customer ON submissions (customer, created_at);
-- A new submission and its document in one statement: each statement the writer thread runs
-- hands the GIL back, and winning it again from a busy event loop can take a switch interval
-- (5 ms), so two statements per submission made a batch of twenty wait 200 ms. The trigger
-- stores the document only when the row is new (a reused key inserts nothing).
CREATE VIEW IF NOT EXISTS new_submission_v1 AS
    SELECT id, customer, guest, idempotency_key, body_hash, kind, payload, media_type, filename,
        created_at, NULL AS document
    FROM submissions;
CREATE TRIGGER IF NOT EXISTS new_submission_v1_insert INSTEAD OF INSERT ON new_submission_v1
BEGIN
    INSERT INTO submissions (id, customer, guest, idempotency_key, body_hash, kind, payload,
        media_type, filename, created_at)
    VALUES (NEW.id, NEW.customer, NEW.guest, NEW.idempotency_key, NEW.body_hash, NEW.kind,
        NEW.payload, NEW.media_type, NEW.filename, NEW.created_at)
    ON CONFLICT (customer, idempotency_key) DO NOTHING;
    INSERT INTO documents (submission_id, content)
    SELECT NEW.id, NEW.document WHERE changes() > 0 AND length(NEW.document) > 0;
END;
"""


def user_version(database: Path) -> int:
    db = sqlite3.connect(database)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def columns(database: Path) -> list[str]:
    db = sqlite3.connect(database)
    try:
        return [row[1] for row in db.execute("PRAGMA table_info(submissions)")]
    finally:
        db.close()


LATEST = len(migrations())
ALL_COLUMNS = {
    "id", "customer", "guest", "idempotency_key", "body_hash", "kind", "payload", "media_type",
    "filename", "state", "attempts", "unexpected_errors", "next_attempt_at", "lease_until",
    "lease_owner", "last_error", "progress", "created_at", "delivered_at",
}  # fmt: skip


def test_migrations_are_numbered_files_and_a_trigger_is_one_statement() -> None:
    found = migrations()
    assert [migration.number for migration in found] == list(range(1, LATEST + 1))
    assert found[0].name == "initial" and LATEST >= 3
    [trigger] = [sql for sql in found[0].statements if "CREATE TRIGGER" in sql]
    assert trigger.endswith("END;") and trigger.count("INSERT INTO") == 2
    assert _statements("SELECT 1; -- a note; with a semicolon\nSELECT 2;\n") == (
        "SELECT 1;",
        "-- a note; with a semicolon\nSELECT 2;",
    )


@pytest.mark.anyio
async def test_a_new_file_gets_every_migration_once_however_many_processes_open_it(
    tmp_path: Path,
) -> None:
    database = tmp_path / "outbox.sqlite3"
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        outboxes = list(pool.map(Outbox, [database] * 4))
    assert user_version(database) == LATEST
    assert set(columns(database)) == ALL_COLUMNS
    row, _ = await outboxes[0].add(new("k1"))
    assert await outboxes[3].get(row.id) == row
    for outbox in outboxes:
        await outbox.close()
    await Outbox(database).close()  # opened again: nothing to do
    assert user_version(database) == LATEST


def previous_file(database: Path, *, drop: Sequence[str] = ()) -> None:
    """A file the previous certwidget made, with a pending row (and without ``drop``, columns
    it had added at open to a file older still)."""
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    schema = PREVIOUS_SCHEMA
    for column in drop:
        schema = re.sub(rf"\n    {column} [^\n]*,", "", schema)
    db.executescript(schema)
    db.execute(
        "INSERT INTO new_submission_v1 (id, customer, guest, idempotency_key, body_hash, kind,"
        " payload, media_type, filename, created_at, document) VALUES ('old-1', 'C-1', 0, 'k1',"
        " 'h', 'upload', '{\"zones\": [\"WA\"]}', 'application/pdf', 'old.pdf', 1, X'2550')"
    )
    db.close()
    assert user_version(database) == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    "drop",
    [(), ("unexpected_errors",), ("unexpected_errors", "lease_owner")],
    ids=["previous", "before-unexpected-errors", "before-lease-owners"],
)
async def test_a_file_from_before_numbered_migrations_opens_and_upgrades(
    tmp_path: Path, drop: tuple[str, ...]
) -> None:
    database = tmp_path / "old.sqlite3"
    previous_file(database, drop=drop)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        outboxes = list(pool.map(Outbox, [database] * 3))  # a restarted app's workers
    outbox = outboxes[0]
    assert user_version(database) == LATEST
    assert set(columns(database)) == ALL_COLUMNS
    old = await outbox.get("old-1")
    assert old is not None and (old.state, old.unexpected_errors) == ("pending", 0)
    assert await outbox.document("old-1") == b"%P"
    [claimed] = await outbox.claim_due(limit=5, lease_seconds=60)
    assert claimed.id == "old-1" and claimed.lease_owner
    assert await outbox.mark_retry(
        "old-1", owner=claimed.lease_owner, error="bug", delay=0, unexpected=True
    )
    row, created = await outboxes[1].add(new("k2"))
    assert created and await outbox.counts() == {"pending": 2}
    for each in outboxes:
        await each.close()
    again = Outbox(database)
    retried = await again.get("old-1")
    assert retried is not None and retried.unexpected_errors == 1
    assert await again.get(row.id) is not None
    await again.close()


@pytest.mark.anyio
async def test_a_file_from_a_newer_certwidget_is_refused_with_what_to_do(tmp_path: Path) -> None:
    database = tmp_path / "outbox.sqlite3"
    await Outbox(database).close()
    db = sqlite3.connect(database)
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.close()
    with pytest.raises(OutboxSchemaError, match=r"newer certwidget.*upgrade certwidget"):
        Outbox(database)
