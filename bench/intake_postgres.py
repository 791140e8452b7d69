"""Certificate intake on PostgreSQL beside SQLite, same run, same load: p99 at 20 concurrent.

The setup of :mod:`bench.intake` (uvicorn, load from another process, 20 keep-alive buyers,
the embedded sandbox as the provider), once with the default SQLite outbox and once with
``database="postgresql://..."`` on a throwaway local cluster (tests/support/postgres.py: fsync
and synchronous_commit on). The sandbox is passed explicitly on PostgreSQL, which refuses
``provider=None``; it is the same sandbox, on its own SQLite file, in both runs. Goal: the
PostgreSQL p99 within 1.5x of SQLite's for each kind.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import psycopg
from starlette.applications import Starlette

from certwidget import CertWidgetMiddleware

from .common import SECRET, Results, fmt_ms, heading, percentile
from .intake import (
    CONCURRENCY,
    FILLED,
    ROUNDS,
    UPLOAD,
    bodies,
    build_app,
    customer,
    measure,
    median_round,
    summary,
)

GOAL_RATIO = 1.5


def run(results: Results) -> None:
    from certwidget.sandbox.embedded import embedded_sandbox
    from tests.support.postgres import PostgresServer

    heading(f"certificate intake, PostgreSQL beside SQLite, {CONCURRENCY} concurrent")
    totals = {FILLED: 60, UPLOAD: 40} if results.quick else {FILLED: 1000, UPLOAD: 1000}
    warmup = CONCURRENCY if results.quick else 2 * CONCURRENCY
    rounds = 1 if results.quick else ROUNDS
    kinds = bodies()
    with tempfile.TemporaryDirectory() as tmp, PostgresServer() as server:
        dsn = server.create_database("bench_intake")

        def build_postgres(folder: Path) -> CertWidgetMiddleware:
            return CertWidgetMiddleware(
                Starlette(),
                secret_key=SECRET,
                customer=customer,
                database=dsn,
                provider=embedded_sandbox(folder / "intake-sandbox.sqlite3"),
            )

        def postgres_pending(app: Any) -> int:
            # The app's pool lives on the server's event loop: count on a connection of our own.
            with psycopg.connect(dsn) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM certwidget_submissions WHERE state = 'pending'"
                ).fetchone()
            return int(row[0]) if row else 0

        (Path(tmp) / "sqlite").mkdir()
        (Path(tmp) / "postgres").mkdir()
        found = {
            "SQLite": measure(Path(tmp) / "sqlite", kinds, totals, warmup, rounds, build=build_app),
            "PostgreSQL": measure(
                Path(tmp) / "postgres",
                kinds,
                totals,
                warmup,
                rounds,
                build=build_postgres,
                pending=postgres_pending,
            ),
        }
    for kind in totals:
        p99s = {}
        all_accepted = True
        for backend, measured in found.items():
            result = median_round(measured[kind])
            rate, p50, p99, answers, accepted = summary(result)
            all_accepted = all_accepted and accepted
            p99s[backend] = p99
            each = ", ".join(fmt_ms(percentile(r["latencies"], 99)) for r in measured[kind])
            results.add(
                f"intake on {backend}: {kind}",
                f"{rate:.1f} submissions/s",
                "-",
                f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)} ({answers}); delivery lag "
                f"{result['lag']:.1f} s; rounds' p99: {each}",
            )
        ratio = p99s["PostgreSQL"] / p99s["SQLite"]
        results.add(
            f"intake p99, PostgreSQL / SQLite: {kind}",
            f"{ratio:.2f}x",
            "SQLite, same run",
            f"{fmt_ms(p99s['PostgreSQL'])} vs {fmt_ms(p99s['SQLite'])}",
            f"<= {GOAL_RATIO}x, all accepted",
            ratio <= GOAL_RATIO and all_accepted,
        )
