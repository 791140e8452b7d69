"""What only the PostgreSQL outbox does: migrations under a lock, a clear error when it cannot
connect, reconnecting after a restart, waking other hosts, and freeing a dead host's leases.
(What every backend does is in tests/outbox/test_outbox_contract.py.)"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import psycopg
import pytest

from certwidget.outbox.postgres import (
    OutboxConnectionError,
    OutboxSchemaError,
    PostgresOutbox,
    migrations,
)
from tests.support.outbox import new
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.anyio


async def fetch(dsn: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(query.encode())
        return await cursor.fetchall()


async def test_hosts_starting_at_once_apply_each_migration_once(postgres_dsn: str) -> None:
    hosts = [PostgresOutbox(postgres_dsn) for _ in range(6)]
    await asyncio.gather(*(host.open() for host in hosts))
    try:
        versions = await fetch(postgres_dsn, "SELECT version FROM certwidget_schema_version")
        assert sorted(v for (v,) in versions) == [n for n, _, _ in migrations()]
        row, _ = await hosts[0].add(new("k1"))
        assert await hosts[5].get(row.id) == row
    finally:
        await asyncio.gather(*(host.close() for host in hosts))


async def test_a_database_from_a_newer_certwidget_is_refused(postgres_dsn: str) -> None:
    outbox = PostgresOutbox(postgres_dsn)
    await outbox.open()
    await outbox.close()
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("INSERT INTO certwidget_schema_version VALUES (99, 'future')")
    with pytest.raises(OutboxSchemaError, match="newer certwidget"):
        await PostgresOutbox(postgres_dsn).open()


async def test_no_database_at_startup_is_a_clear_error_without_the_password(
    postgres_server: PostgresServer,
) -> None:
    dsn = postgres_server.dsn_for("no_such_database")
    with pytest.raises(OutboxConnectionError) as raised:
        await PostgresOutbox(dsn).open()
    message = str(raised.value)
    assert f"127.0.0.1:{postgres_server.port}/no_such_database" in message
    assert "no_such_database" in message and "Check that the server runs" in message
    assert postgres_server.password not in message


async def test_commits_are_durable_even_where_the_database_default_is_not(
    postgres_dsn: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        name = conn.info.dbname
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off'.encode())
    outbox = PostgresOutbox(postgres_dsn)
    await outbox.open()
    try:
        assert outbox._pool is not None
        async with outbox._pool.connection() as conn:
            cursor = await conn.execute("SHOW synchronous_commit")
            assert await cursor.fetchone() == {"synchronous_commit": "on"}
    finally:
        await outbox.close()


async def test_a_restarted_database_is_reconnected_to_and_keeps_what_was_acknowledged(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    outbox = PostgresOutbox(postgres_dsn, poll_seconds=0.2)
    await outbox.open()
    try:
        before, _ = await outbox.add(new("k1", document=b"%PDF-kept"))
        postgres_server.restart()
        # The pooled connections all died: the first statement finds that and retries.
        _, created = await outbox.add(new("k2"))
        assert created
        assert await outbox.get(before.id) == before
        assert await outbox.document(before.id) == b"%PDF-kept"
        assert await outbox.counts() == {"pending": 2}
        # The listener reconnected too, and holds the host lock again.
        for _ in range(100):
            if outbox._host:
                break
            await asyncio.sleep(0.05)
        assert outbox._host
    finally:
        await outbox.close()


async def test_a_commit_on_one_host_wakes_the_others(postgres_dsn: str) -> None:
    # A poll far slower than the test: only the NOTIFY can wake it in time.
    a, b = PostgresOutbox(postgres_dsn), PostgresOutbox(postgres_dsn, poll_seconds=60)
    await a.open()
    await b.open()
    woken = asyncio.Event()
    b.on_new_submission(woken.set)
    try:
        await asyncio.sleep(0.1)
        woken.clear()  # (b wakes once when it starts listening)
        await a.add(new("k1"))
        async with asyncio.timeout(2):
            await woken.wait()
    finally:
        await a.close()
        await b.close()


async def test_a_dead_hosts_leases_are_claimable_at_once(postgres_dsn: str) -> None:
    a, b = PostgresOutbox(postgres_dsn), PostgresOutbox(postgres_dsn)
    await a.open()
    await b.open()
    try:
        row, _ = await a.add(new("k1"))
        [mine] = await a.claim_due(limit=5, lease_seconds=600)
        assert await b.claim_due(limit=5, lease_seconds=60) == []  # a is alive: its lease holds
        await a.close()  # the host goes away (a SIGKILL drops its connection the same way)
        # The server lets go of a's lock once its backend has seen the connection close, a
        # moment after the client did: far sooner than the 600 s lease, but not in the same
        # instant, so b asks until then.
        claimed: list[Any] = []
        deadline = time.monotonic() + 10
        while not claimed and time.monotonic() < deadline:
            claimed = await b.claim_due(limit=5, lease_seconds=60)
            if not claimed:
                await asyncio.sleep(0.05)
        [theirs] = claimed
        assert theirs.id == row.id and theirs.lease_owner != mine.lease_owner
        assert await b.next_due_in() is not None
    finally:
        await a.close()
        await b.close()


async def test_a_lost_listening_connection_is_logged_and_reopened(
    postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = PostgresOutbox(postgres_dsn, poll_seconds=0.2)
    await outbox.open()
    try:
        host = outbox._host
        async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%%' AND pid != pg_backend_pid()"
            )
        with caplog.at_level(logging.WARNING, "certwidget.outbox.postgres"):
            for _ in range(100):
                await asyncio.sleep(0.05)
                if outbox._host and "lost the outbox's listening connection" in caplog.text:
                    break
        assert "lost the outbox's listening connection" in caplog.text
        assert outbox._host and host
    finally:
        await outbox.close()
