"""``certwidget outbox list|show|retry|export``: exit codes and output, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from certwidget.cli import main
from certwidget.domain.models import CustomerProfile, Purchaser
from certwidget.domain.submission import SubmittedCertificate
from certwidget.outbox import outbox_for
from certwidget.outbox.base import NewSubmission, Outbox, Submission
from certwidget.outbox.delivery import Deliverer
from tests.outbox.test_outbox_contract import RefusesFirstAttach

T = TypeVar("T")


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What the middleware's database= would be: a SQLite path, or a PostgreSQL URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_dsn"))
    return str(tmp_path / "outbox.sqlite3")


def with_outbox(database: str, work: Callable[[Outbox], Awaitable[T]]) -> T:
    """``work`` on the outbox ``database`` names, as the shop's process would do it."""

    async def run() -> T:
        outbox = outbox_for(database)
        await outbox.open()
        try:
            return await work(outbox)
        finally:
            await outbox.close()

    return asyncio.run(run())


def submission(
    key: str, *, customer: str = "C-1", zones: tuple[str, ...] = ("WA",)
) -> NewSubmission:
    record = SubmittedCertificate(
        zones=zones,
        reason="R",
        numbers={zone: f"{zone}-{key}" for zone in zones},
        purchaser=Purchaser(name=f"Buyer {customer}", email=f"{customer.lower()}@example.com"),
        signed_date=dt.date(2025, 5, 1),
        expirations={zone: dt.date(2029, 4, 30) for zone in zones},
        customer=CustomerProfile(code=customer, name=f"Buyer {customer}"),
    ).to_record()
    return NewSubmission(
        customer=customer,
        guest=False,
        idempotency_key=key,
        body_hash="hash-" + key,
        kind="upload",
        payload=record,
        document=b"%PDF-1.4 doc",
        media_type="application/pdf",
        filename="cert.pdf",
    )


def seed(database: str) -> dict[str, Submission]:
    """Four submissions, one in each status, stored a little apart (oldest first)."""

    async def work(outbox: Outbox) -> dict[str, Submission]:
        rows = {}
        for name, customer in (("received", "C-1"), ("pending", "C-2"), ("failed", "C-2")):
            rows[name], _ = await outbox.add(submission(name, customer=customer))
            await asyncio.sleep(0.01)
        rows["delivered"], _ = await outbox.add(submission("delivered", zones=("WA", "OR")))
        for name in ("pending", "failed", "delivered"):
            claimed = await outbox.claim(rows[name].id, lease_seconds=60)
            assert claimed is not None
            if name == "pending":
                await outbox.mark_retry(
                    claimed.id, owner=claimed.lease_owner, error="down", delay=600
                )
            elif name == "failed":
                await outbox.mark_failed(
                    claimed.id, owner=claimed.lease_owner, error="Invalid exemption number"
                )
            else:
                progress = {
                    "customer_id": "cust-9",
                    "certificates": {"WA": "101", "OR": "102"},
                    "numbers": {"WA": "EX-101", "OR": "EX-102"},
                    "attached": ["WA", "OR"],
                }
                await outbox.mark_delivered(claimed.id, progress)
        return {name: row for name, row in rows.items()}

    return with_outbox(database, work)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``certwidget *argv`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- list ---------------------------------------------------------------------------------------


def test_list_prints_a_table_newest_first(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = seed(database)
    code, out, err = run(capsys, "outbox", "list", "--database", database)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "(UTC)"]
    order = [line.split()[0] for line in lines[1:5]]
    assert order == [rows[name].id for name in ("delivered", "failed", "pending", "received")]
    assert "Invalid exemption number" in out and "C-2 (Buyer C-2)" in out and "WA,OR" in out
    assert lines[-1] == "1-4 of 4"


def test_list_json_is_stable_for_scripts(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = seed(database)
    code, out, _ = run(
        capsys, "outbox", "list", "--json", "--state", "failed", "--database", database
    )
    assert code == 0
    listing = json.loads(out)
    assert list(listing) == sorted(listing) == ["limit", "offset", "submissions", "total"]
    assert listing["total"] == 1
    [failed] = listing["submissions"]
    assert list(failed) == sorted(failed)
    assert failed["id"] == rows["failed"].id and failed["status"] == "failed"
    assert failed["customer"] == "C-2" and failed["buyer_name"] == "Buyer C-2"
    assert failed["last_error"] == "Invalid exemption number" and failed["attempts"] == 1
    assert failed["signed_date"] == "2025-05-01" and failed["delivered_at"] is None
    assert dt.datetime.fromisoformat(failed["created_at"]).utcoffset() == dt.timedelta(0)
    assert failed["zones"] == [
        {
            "zone": "WA",
            "exemption_number": "WA-failed",
            "form": "",
            "expiration_date": "2029-04-30",
            "certificate_id": "",
            "certificate_number": "",
            "document_attached": False,
        }
    ]


def test_list_filters_by_state_buyer_and_date(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = seed(database)

    def ids(*filters: str) -> list[str]:
        code, out, err = run(capsys, "outbox", "list", "--json", "--database", database, *filters)
        assert code == 0, err
        return [row["id"] for row in json.loads(out)["submissions"]]

    for state in ("received", "pending", "delivered", "failed"):
        assert ids("--state", state) == [rows[state].id]
    assert ids("--customer", "C-2") == [rows["failed"].id, rows["pending"].id]
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    assert ids("--since", tomorrow) == []
    assert len(ids("--since", yesterday)) == 4
    assert len(ids("--until", dt.datetime.now(dt.UTC).date().isoformat())) == 4  # the whole day
    assert ids("--until", yesterday) == []
    assert ids("--limit", "1", "--offset", "1") == [rows["failed"].id]


def test_list_of_an_empty_outbox_says_so(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    with_outbox(database, lambda outbox: asyncio.sleep(0))  # made, as the shop's first start does
    code, out, _ = run(capsys, "outbox", "list", "--database", database)
    assert code == 0 and out.startswith("no submissions match")


# -- show ---------------------------------------------------------------------------------------


def test_show_prints_a_submission_in_full(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = seed(database)
    code, out, err = run(capsys, "outbox", "show", rows["delivered"].id, "--database", database)
    assert code == 0, err
    assert f"Submission:        {rows['delivered'].id}" in out
    assert "Status:            delivered" in out and "Provider customer: cust-9" in out
    assert (
        "Buyer C-1" in out and "c-1@example.com" in out and "Signed:            2025-05-01" in out
    )
    assert "not held" in out  # a delivered submission's document is dropped
    table = out[out.index("STATE") :].splitlines()
    assert table[1].split() == ["WA", "WA-delivered", "2029-04-30", "101", "EX-101", "yes"]
    assert table[2].split() == ["OR", "OR-delivered", "2029-04-30", "102", "EX-102", "yes"]

    code, out, _ = run(
        capsys, "outbox", "show", rows["failed"].id, "--json", "--database", database
    )
    shown = json.loads(out)
    assert code == 0 and shown["status"] == "failed" and shown["document_size"] == 12
    assert shown["last_error"] == "Invalid exemption number"


def test_show_of_an_unknown_id_exits_1(database: str, capsys: pytest.CaptureFixture[str]) -> None:
    seed(database)
    code, out, err = run(capsys, "outbox", "show", "no-such-id", "--database", database)
    assert code == 1 and out == ""
    assert "no submission 'no-such-id'" in err and "certwidget outbox list" in err


# -- retry --------------------------------------------------------------------------------------


def test_retry_sends_a_failed_submission_again(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = seed(database)
    code, out, err = run(capsys, "outbox", "retry", rows["failed"].id, "--database", database)
    assert code == 0, err
    assert "due again" in out
    again = with_outbox(database, lambda outbox: outbox.get(rows["failed"].id))
    assert again is not None and again.state == "pending" and again.attempts == 1
    assert again.idempotency_key == "failed"
    # A pending one waiting out its backoff is made due now too.
    code, _, err = run(capsys, "outbox", "retry", rows["pending"].id, "--database", database)
    assert code == 0, err


def test_retry_refuses_what_there_is_nothing_to_retry(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = seed(database)
    code, out, err = run(capsys, "outbox", "retry", rows["delivered"].id, "--database", database)
    assert (code, out) == (1, "") and "nothing to retry" in err
    code, _, err = run(capsys, "outbox", "retry", rows["received"].id, "--database", database)
    assert code == 1 and "waiting for its first delivery" in err
    code, _, err = run(capsys, "outbox", "retry", "no-such-id", "--database", database)
    assert code == 1 and "no submission 'no-such-id'" in err
    delivered = with_outbox(database, lambda outbox: outbox.get(rows["delivered"].id))
    assert delivered is not None and delivered.state == "delivered"


def test_a_retried_submission_makes_one_certificate(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    provider = RefusesFirstAttach()

    async def deliver(outbox: Outbox, submission_id: str) -> Submission | None:
        return await Deliverer(outbox, provider, lease_seconds=60).deliver_now(submission_id)

    async def refused(outbox: Outbox) -> Submission | None:
        row, _ = await outbox.add(submission("k1"))
        return await deliver(outbox, row.id)

    failed = with_outbox(database, refused)
    assert failed is not None and failed.state == "failed" and failed.last_error == "not a PDF"
    code, _, err = run(capsys, "outbox", "retry", failed.id, "--database", database)
    assert code == 0, err
    delivered = with_outbox(database, lambda outbox: deliver(outbox, failed.id))
    assert delivered is not None and delivered.state == "delivered"
    assert provider.created == {f"certwidget-{failed.id}-WA": 1}, "a second certificate was made"
    assert sum(provider.attached.values()) == 1


# -- export -------------------------------------------------------------------------------------


def test_export_csv_has_a_row_per_submission_and_state(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from certwidget.outbox.admin import EXPORT_COLUMNS

    rows = seed(database)
    code, out, err = run(capsys, "outbox", "export", "--format", "csv", "--database", database)
    assert code == 0, err
    reader = csv.DictReader(io.StringIO(out, newline=""))
    assert tuple(reader.fieldnames or ()) == EXPORT_COLUMNS
    exported = list(reader)
    assert [(row["submission_id"], row["zone"]) for row in exported] == [
        (rows["delivered"].id, "WA"),
        (rows["delivered"].id, "OR"),
        (rows["failed"].id, "WA"),
        (rows["pending"].id, "WA"),
        (rows["received"].id, "WA"),
    ]
    oregon = exported[1]
    assert oregon["status"] == "delivered" and oregon["buyer_code"] == "C-1"
    assert oregon["buyer_name"] == "Buyer C-1" and oregon["reason"] == "R"
    assert (oregon["exemption_number"], oregon["certificate_id"], oregon["certificate_number"]) == (
        "OR-delivered",
        "102",
        "EX-102",
    )
    assert (oregon["signed_date"], oregon["expiration_date"]) == ("2025-05-01", "2029-04-30")
    assert oregon["delivered_at"] and oregon["provider_customer_id"] == "cust-9"
    assert exported[2]["last_error"] == "Invalid exemption number"


def test_export_jsonl_to_a_file(
    database: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rows = seed(database)
    target = tmp_path / "audit.jsonl"
    code, out, err = run(
        capsys, "outbox", "export", "--format", "jsonl", "--state", "delivered",
        "--output", str(target), "--database", database,
    )  # fmt: skip
    assert code == 0 and out == "" and "exported 1 submissions" in err
    [line] = target.read_text("utf-8").splitlines()
    exported = json.loads(line)
    assert exported["id"] == rows["delivered"].id and list(exported) == sorted(exported)
    assert [zone["certificate_id"] for zone in exported["zones"]] == ["101", "102"]
    assert not list(tmp_path.glob("*.partial"))
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    code, out, _ = run(
        capsys, "outbox", "export", "--format", "jsonl", "--since", tomorrow, "--database", database
    )
    assert code == 0 and out == ""


def test_export_to_an_unwritable_place_exits_1(
    database: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    seed(database)
    target = tmp_path / "no-such-dir" / "audit.csv"
    code, _, err = run(
        capsys,
        "outbox",
        "export",
        "--format",
        "csv",
        "--output",
        str(target),
        "--database",
        database,
    )
    assert code == 1 and f"cannot write {target}" in err


# -- errors -------------------------------------------------------------------------------------


def test_a_missing_sqlite_file_exits_1_and_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CERTWIDGET_DATABASE", raising=False)
    code, out, err = run(capsys, "outbox", "list")
    assert code == 1 and out == ""
    assert "no outbox at .certwidget/certwidget.sqlite3" in err and "--database" in err
    assert not (tmp_path / ".certwidget").exists()
    code, _, err = run(capsys, "outbox", "show", "x", "--database", "sqlite:///elsewhere.sqlite3")
    assert code == 1 and "no outbox at elsewhere.sqlite3" in err
    assert not (tmp_path / "elsewhere.sqlite3").exists()


def test_a_sqlite_file_that_is_no_outbox_is_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "sandbox.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE certificates (id INTEGER)")
    before = other.read_bytes()
    code, _, err = run(capsys, "outbox", "list", "--database", str(other))
    assert code == 1 and "not a certwidget outbox" in err
    assert other.read_bytes() == before
    garbage = tmp_path / "notes.txt"
    garbage.write_text("hello, not a database " * 100)
    code, _, err = run(capsys, "outbox", "list", "--database", str(garbage))
    assert code == 1 and "cannot be read as SQLite" in err


def test_the_database_comes_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    database = str(tmp_path / "outbox.sqlite3")
    rows = seed(database)
    monkeypatch.setenv("CERTWIDGET_DATABASE", database)
    code, out, _ = run(capsys, "outbox", "list", "--json")
    assert code == 0 and json.loads(out)["total"] == len(rows)


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    database = str(tmp_path / "outbox.sqlite3")
    seed(database)
    for argv, says in [
        (["outbox", "list", "--state", "lost", "--database", database], "invalid choice"),
        (["outbox", "list", "--since", "May 1st", "--database", database], "expected a date"),
        (["outbox", "list", "--limit", "-1", "--database", database], "whole number"),
        (["outbox", "export", "--database", database], "--format"),
        (["outbox", "show", "--database", database], "id"),
        (["outbox"], "COMMAND"),
        (["outbox", "list", "--database", "mysql://shop@db/shop"], "mysql:// is not supported"),
    ]:
        code, _, err = run(capsys, *argv)
        assert code == 2 and says in err, (argv, err)


def test_an_unreachable_postgresql_exits_1_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://shop:s3cret@127.0.0.1:1/shop"
    code, _, err = run(capsys, "outbox", "list", "--database", url)
    assert code == 1 and "cannot connect to PostgreSQL at shop@127.0.0.1:1/shop" in err
    assert "s3cret" not in err


def test_a_postgresql_database_without_an_outbox_is_left_alone(
    postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "outbox", "list", "--database", postgres_dsn)
    assert code == 1 and "holds no certwidget outbox" in err

    async def tables() -> list[Any]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(postgres_dsn) as conn:
            cursor = await conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'certwidget%%'"
            )
            return await cursor.fetchall()

    assert asyncio.run(tables()) == []


def test_the_installed_command_exits_with_the_codes(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("certwidget")
    command = (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "import sys; from certwidget.cli import main; sys.exit(main())"]
    )
    env = {**os.environ, "CERTWIDGET_DATABASE": str(tmp_path / "missing.sqlite3")}
    missing = subprocess.run([*command, "outbox", "list"], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and "no outbox at" in missing.stderr
    usage = subprocess.run([*command, "outbox", "retry"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
    helped = subprocess.run([*command, "outbox", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0
    for word in ("list", "show", "retry", "export", "CERTWIDGET_DATABASE", "Exit codes"):
        assert word in helped.stdout
