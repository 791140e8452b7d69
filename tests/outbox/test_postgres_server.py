"""The test PostgreSQL cluster itself: it starts, isolates tests, survives restarts and crashes,
and leaves nothing behind. The PostgreSQL backend's tests stand on these guarantees."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest

from tests.support.postgres import BIN_ENV, PostgresServer, PostgresUnavailable

ROOT = Path(__file__).resolve().parents[2]


async def scalar(dsn: str, query: LiteralString) -> object:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(query)
        row = await cursor.fetchone()
        assert row is not None
        return row[0]


@pytest.mark.anyio
async def test_cluster_is_durable_and_reachable_only_on_loopback(postgres_dsn: str) -> None:
    assert postgres_dsn.startswith("postgresql://postgres:")
    assert "@127.0.0.1:" in postgres_dsn
    async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
        settings = {}
        for name in ("fsync", "synchronous_commit", "full_page_writes", "listen_addresses"):
            cursor = await conn.execute("SELECT current_setting(%s)", [name])
            row = await cursor.fetchone()
            assert row is not None
            settings[name] = row[0]
        version = conn.info.server_version
    assert settings == {
        "fsync": "on",
        "synchronous_commit": "on",
        "full_page_writes": "on",
        "listen_addresses": "127.0.0.1",
    }
    assert version >= 150000


@pytest.mark.anyio
async def test_each_database_is_isolated(
    postgres_server: PostgresServer,
    postgres_dsn: str,
) -> None:
    other = postgres_server.create_database("isolation_other")
    try:
        async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
            await conn.execute("CREATE TABLE outbox (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO outbox VALUES (1)")
        assert await scalar(postgres_dsn, "SELECT count(*) FROM outbox") == 1
        assert await scalar(other, "SELECT to_regclass('outbox') IS NULL") is True
    finally:
        postgres_server.drop_database("isolation_other")


@pytest.mark.anyio
async def test_committed_rows_survive_a_restart_and_clients_reconnect(
    postgres_server: PostgresServer,
    postgres_dsn: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
        await conn.execute("CREATE TABLE outbox (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO outbox SELECT generate_series(1, 100)")
        await conn.commit()
        port = postgres_server.port

        postgres_server.restart()

        # The old connection is dead (what a backend's reconnect logic will see) ...
        with pytest.raises(psycopg.OperationalError):
            await conn.execute("SELECT 1")
    # ... and a new one, on the same DSN, finds every committed row.
    assert postgres_server.port == port
    assert await scalar(postgres_dsn, "SELECT count(*) FROM outbox") == 100


@pytest.mark.anyio
async def test_committed_rows_survive_a_crash_and_uncommitted_ones_do_not(
    postgres_server: PostgresServer,
    postgres_dsn: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True) as conn:
        await conn.execute("CREATE TABLE outbox (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO outbox VALUES (1)")
    pending = await psycopg.AsyncConnection.connect(postgres_dsn)
    await pending.execute("INSERT INTO outbox VALUES (2)")  # never committed

    postgres_server.kill()
    assert not postgres_server.running
    postgres_server.start()  # crash recovery replays the WAL

    assert await scalar(postgres_dsn, "SELECT array_agg(id) FROM outbox") == [1]
    with pytest.raises(psycopg.OperationalError):
        await pending.commit()
    await pending.close()


def test_a_server_removes_its_directory_and_processes(tmp_path: Path) -> None:
    with PostgresServer() as server:
        root, pid = server.root, server._process.pid if server._process else 0
        assert root is not None and root.is_dir() and pid
    assert not root.exists()
    assert not _alive(pid)


def test_the_cluster_dies_with_a_killed_test_session() -> None:
    # pytest killed by a CI timeout must not leave a postmaster running: the kernel signals it
    # (PR_SET_PDEATHSIG) when its parent dies.
    script = (
        "import time\n"
        "from tests.support.postgres import PostgresServer\n"
        "s = PostgresServer().start()\n"
        "print(s._process.pid, s.root, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pid_text, root = parent.stdout.readline().split()
    pid = int(pid_text)
    try:
        assert _alive(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        # Its temp dir outlives it (nothing is left to remove it): remove it here.
        subprocess.run(["rm", "-rf", root], check=True)


def test_missing_postgresql_fails_with_how_to_fix_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BIN_ENV, "/nonexistent/bin")
    with pytest.raises(PostgresUnavailable) as raised:
        PostgresServer()
    message = str(raised.value)
    assert "apt-get install postgresql" in message
    assert BIN_ENV in message


def _alive(pid: int) -> bool:
    """True while the process runs; a zombie (dead, not yet reaped) counts as dead."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
