"""The ``certwidget`` command: ``certwidget demo``, ``certwidget sandbox`` and ``certwidget
outbox list|show|retry|export`` (merchant operations over the stored submissions).

$ certwidget sandbox --port 8765 --db ./certwidget-sandbox.sqlite3
certwidget sandbox: http://127.0.0.1:8765/v2
$ certwidget outbox list --state failed --database postgresql://shop@db/shop
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from certwidget.outbox.base import Outbox


def _add_sandbox(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        help="run the embedded CertCapture-compatible sandbox API",
        description="Serve the CertCapture-compatible sandbox (SQLite-backed) under uvicorn.",
    )
    sandbox.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    sandbox.add_argument("--port", type=int, default=8765, help="port to listen on")
    sandbox.add_argument(
        "--db",
        default="./certwidget-sandbox.sqlite3",
        help="SQLite file holding the sandbox's data (created if missing)",
    )
    sandbox.add_argument("--username", default="sandbox", help="Basic auth username")
    sandbox.add_argument("--password", default="sandbox", help="Basic auth password")
    sandbox.set_defaults(run=_run_sandbox)


def _run_sandbox(args: argparse.Namespace) -> int:
    # Imported here so `certwidget --help` does not load uvicorn and the sandbox.
    from certwidget.sandbox import serve

    try:
        serve(
            host=args.host,
            port=args.port,
            db_path=args.db,
            username=args.username,
            password=args.password,
        )
    except sqlite3.Error as exc:
        # A missing directory or an unwritable or corrupt file: say which file, not a traceback.
        print(f"certwidget sandbox: cannot use the database {args.db!r}: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from certwidget.demo import PROVIDERS

    demo = commands.add_parser(
        "demo",
        help="run the example shop with the embedded sandbox, in one process",
        description="Serve the example storefront with certwidget and the embedded sandbox.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on")
    demo.add_argument(
        "--provider", choices=PROVIDERS, default="sandbox", help="which provider dialect to use"
    )
    demo.add_argument(
        "--data-dir", default=".certwidget-demo", help="where the demo keeps its SQLite files"
    )
    demo.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from certwidget.demo import run_demo

    run_demo(host=args.host, port=args.port, provider=args.provider, data_dir=args.data_dir)
    return 0


# -- certwidget outbox ---------------------------------------------------------------------

# Exit codes: argparse exits 2 for a usage error; these are the others.
EXIT_OK = 0
EXIT_FAILED = 1  # not found, cannot connect, refused
EXIT_USAGE = 2

_OUTBOX_DESCRIPTION = """\
See, retry and export what buyers submitted: every certificate the middleware stored in its
outbox, and how its delivery to the provider went.

Statuses: received (stored; waiting for, or in, its first delivery), pending (an attempt
failed for now; another is scheduled), delivered (the provider has it), failed (the provider
refused it, or an error kept recurring: it waits for you to fix the cause and retry it).

--database takes what the middleware's database= takes: a SQLite path (default
.certwidget/certwidget.sqlite3, relative to where you run this), sqlite:///path, or a
postgresql:// URL; or set CERTWIDGET_DATABASE. The outbox must exist already: nothing is
created. Dates are ISO (2025-05-01, or 2025-05-01T09:30:00+02:00), in UTC unless they say
otherwise; --until DATE runs to the end of that day.

Exit codes: 0 done; 1 not found, cannot connect or refused (the message says why); 2 usage.
--json (list, show) and export --format jsonl print keys sorted, dates ISO 8601, times in UTC;
keys are only ever added. See README.md, "Merchant operations"."""


def _add_outbox(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbox = commands.add_parser(
        "outbox",
        help="list, show, retry and export stored submissions (merchant operations)",
        description=_OUTBOX_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = outbox.add_subparsers(dest="action", required=True, metavar="COMMAND")
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--database",
        metavar="DATABASE",
        help="the outbox: a SQLite path, sqlite:///path or postgresql:// URL (default: "
        "$CERTWIDGET_DATABASE, else .certwidget/certwidget.sqlite3)",
    )

    listing = actions.add_parser(
        "list",
        parents=[database],
        help="list submissions, newest first",
        description="List submissions, newest first, with their status and last error.",
    )
    _add_filters(listing)
    listing.add_argument("--limit", type=_count, default=50, help="how many (default 50)")
    listing.add_argument("--offset", type=_count, default=0, help="skip this many first")
    listing.add_argument("--json", action="store_true", help="print JSON for scripts")
    listing.set_defaults(run=_run_outbox, work=_list)

    show = actions.add_parser(
        "show",
        parents=[database],
        help="show one submission in full",
        description="Show one submission: buyer, states, reason, numbers, the provider's "
        "references, dates, attempts and the last error.",
    )
    show.add_argument("id", help="the submission id (from list)")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    show.set_defaults(run=_run_outbox, work=_show)

    retry = actions.add_parser(
        "retry",
        parents=[database],
        help="send a failed or stuck submission again",
        description="Make a failed submission (or a pending one waiting out its backoff, or "
        "one whose delivery attempt died) due again now; the running shop delivers it within "
        "seconds. It keeps its id and idempotency key, and delivery resumes where it stopped, "
        "so it can never make a second certificate. Fix what the provider refused first "
        "(see show). A delivered submission is refused: nothing to retry.",
    )
    retry.add_argument("id", help="the submission id (from list)")
    retry.set_defaults(run=_run_outbox, work=_retry)

    export = actions.add_parser(
        "export",
        parents=[database],
        help="export submissions for an audit (CSV or JSON Lines)",
        description="Export submissions, newest first: CSV has one row per submission and "
        "state (columns: " + ", ".join(_export_columns()) + "); JSON Lines one object per "
        "submission, as show --json prints it.",
    )
    export.add_argument("--format", choices=("csv", "jsonl"), required=True)
    _add_filters(export)
    export.add_argument(
        "--output", metavar="FILE", help="write to FILE (replaced if it exists) instead of stdout"
    )
    export.set_defaults(run=_run_outbox, work=_export)


def _export_columns() -> tuple[str, ...]:
    from certwidget.outbox.admin import EXPORT_COLUMNS

    return EXPORT_COLUMNS


def _add_filters(parser: argparse.ArgumentParser) -> None:
    from certwidget.outbox.base import ALL_STATUSES

    parser.add_argument("--state", choices=ALL_STATUSES, help="only submissions in this status")
    parser.add_argument("--customer", metavar="CODE", help="only this buyer's (the shop's code)")
    parser.add_argument(
        "--since", metavar="DATE", type=_since, help="only those stored from DATE on"
    )
    parser.add_argument(
        "--until", metavar="DATE", type=_until, help="only those stored up to DATE (inclusive)"
    )


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}")
    return value


def _moment(text: str) -> tuple[float, bool]:
    """``text`` as epoch seconds, and whether it was a date alone (a day, read in UTC)."""
    import datetime as dt

    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp(), True
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a date such as 2025-05-01 or 2025-05-01T09:30:00+02:00, got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp(), False


def _since(text: str) -> float:
    return _moment(text)[0]


def _until(text: str) -> float:
    moment, whole_day = _moment(text)
    return moment + 86_400 if whole_day else moment


def _run_outbox(args: argparse.Namespace) -> int:
    import asyncio
    import os

    from certwidget.outbox.admin import DEFAULT_DATABASE

    database = args.database or os.environ.get("CERTWIDGET_DATABASE") or DEFAULT_DATABASE
    prefix = f"certwidget outbox {args.action}"
    try:
        result: int = asyncio.run(_with_outbox(database, args))
    except _Refused as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:  # a database URL of a kind database= does not take
        print(f"{prefix}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return result


class _Refused(Exception):
    """What ends a command with exit code 1; the message says why, and what to do."""


async def _with_outbox(database: str, args: argparse.Namespace) -> int:
    from certwidget.outbox.admin import OutboxUnavailable, open_existing

    try:
        outbox = await open_existing(database)
    except OutboxUnavailable as exc:
        raise _Refused(str(exc)) from exc
    try:
        result: int = await args.work(outbox, database, args)
    finally:
        await outbox.close()
    return result


async def _list(outbox: Outbox, database: str, args: argparse.Namespace) -> int:
    from certwidget.outbox.admin import view_of

    total, rows = await outbox.list_submissions(
        state=args.state,
        customer=args.customer,
        since=args.since,
        until=args.until,
        limit=args.limit,
        offset=args.offset,
    )
    views = [view_of(row) for row in rows]
    if args.json:
        _print_json(
            {
                "total": total,
                "limit": args.limit,
                "offset": args.offset,
                "submissions": [view.to_json() for view in views],
            }
        )
        return EXIT_OK
    if not views:
        print(f"no submissions match (of {total} matching, from {args.offset} on)")
        return EXIT_OK
    table = [
        (
            view.id,
            view.created_at.strftime("%Y-%m-%d %H:%M"),
            view.status,
            _cut(view.customer + (f" ({view.buyer_name})" if view.buyer_name else ""), 30),
            ",".join(zone.zone for zone in view.zones),
            view.reason,
            str(view.attempts),
            _cut(view.last_error.replace("\n", " "), 60),
        )
        for view in views
    ]
    header = ("ID", "CREATED (UTC)", "STATUS", "BUYER", "STATES", "REASON", "TRIES", "LAST ERROR")
    _print_table(header, table)
    shown_to = args.offset + len(views)
    more = f"; --offset {shown_to} for more" if shown_to < total else ""
    print(f"\n{args.offset + 1}-{shown_to} of {total}{more}")
    return EXIT_OK


async def _show(outbox: Outbox, database: str, args: argparse.Namespace) -> int:
    from certwidget.outbox.admin import describe_database, view_of

    row = await outbox.get(args.id)
    if row is None:
        raise _Refused(
            f"no submission {args.id!r} in {describe_database(database)} "
            "(`certwidget outbox list` shows the ids)"
        )
    view = view_of(row, document_size=len(await outbox.document(row.id)))
    if args.json:
        _print_json(view.to_json())
        return EXIT_OK
    fields = [
        ("Submission", view.id),
        ("Status", view.status),
        ("Buyer", view.customer + (" (guest)" if view.guest else "")),
        ("Name", view.buyer_name),
        ("E-mail", view.buyer_email),
        ("Kind", view.kind + (f" ({view.purchase_kind})" if view.purchase_kind else "")),
        ("Reason", view.reason),
        ("Order", view.order_reference),
        ("Signed", _text(view.signed_date)),
        ("Created", _text(view.created_at)),
        ("Delivered", _text(view.delivered_at)),
        ("Attempts", str(view.attempts)),
        ("Last error", view.last_error),
        ("Provider customer", view.provider_customer_id),
        (
            "Document",
            f"{view.filename} ({view.media_type}, {view.document_size} bytes held)"
            if view.document_size
            else "not held (delivered, or none stored)",
        ),
        ("Idempotency key", view.idempotency_key),
        ("Record", f"unreadable: {view.record_error}" if view.record_error else ""),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        if value:
            print(f"{name + ':':<{width + 1}} {value}")
    if view.zones:
        print()
        _print_table(
            ("STATE", "NUMBER", "FORM", "EXPIRES", "CERTIFICATE", "CERT NUMBER", "ATTACHED"),
            [
                (
                    zone.zone,
                    zone.exemption_number,
                    zone.form,
                    _text(zone.expiration_date) or "never",
                    zone.certificate_id,
                    zone.certificate_number,
                    "yes" if zone.document_attached else "no",
                )
                for zone in view.zones
            ],
        )
    return EXIT_OK


_RETRY_REFUSALS = {
    "not_found": "no submission {id!r} in {database} (`certwidget outbox list` shows the ids)",
    "delivered": "submission {id} is delivered: the provider has it, there is nothing to retry",
    "leased": "submission {id} is being delivered right now; see how it ends with "
    "`certwidget outbox show {id}`",
    "queued": "submission {id} has not failed: it is waiting for its first delivery, which "
    "the running shop makes on its own",
}


async def _retry(outbox: Outbox, database: str, args: argparse.Namespace) -> int:
    from certwidget.outbox.admin import describe_database

    result = await outbox.retry(args.id)
    if result != "retried":
        raise _Refused(
            _RETRY_REFUSALS[result].format(id=args.id, database=describe_database(database))
        )
    print(
        f"submission {args.id} is due again: the running shop delivers it within seconds "
        "(same idempotency key, so no second certificate). Check with "
        f"`certwidget outbox show {args.id}`."
    )
    return EXIT_OK


async def _export(outbox: Outbox, database: str, args: argparse.Namespace) -> int:
    import contextlib
    import csv
    import io
    import json

    import anyio

    from certwidget.outbox.admin import EXPORT_COLUMNS, export_views

    views = export_views(
        outbox, state=args.state, customer=args.customer, since=args.since, until=args.until
    )
    # A submission at a time, as the rows are read: an export of years holds one page at once.
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS)
    if args.format == "csv":
        writer.writeheader()
    count = 0

    async def chunks() -> AsyncIterator[str]:
        nonlocal count
        if buffer.tell():
            yield buffer.getvalue()
        async for view in views:
            count += 1
            if args.format == "csv":
                buffer.seek(0)
                buffer.truncate()
                writer.writerows(view.export_rows())
                yield buffer.getvalue()
            else:
                yield json.dumps(view.to_json(), sort_keys=True, ensure_ascii=False) + "\n"

    if not args.output:
        async for chunk in chunks():
            sys.stdout.write(chunk)
        return EXIT_OK
    # Written beside the target and renamed at the end: a failed export leaves no half file
    # an auditor could take for the whole.
    target = anyio.Path(args.output)
    partial = target.with_name(target.name + ".partial")
    try:
        file = await anyio.open_file(partial, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise _Refused(f"cannot write {args.output}: {exc.strerror or exc}") from exc
    try:
        async with file:
            async for chunk in chunks():
                await file.write(chunk)
        await partial.replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            await partial.unlink()
        raise
    print(f"exported {count} submissions to {args.output}", file=sys.stderr)
    return EXIT_OK


def _print_json(value: object) -> None:
    import json

    print(json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: object) -> str:
    return "" if value is None else str(getattr(value, "isoformat", lambda: value)())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certwidget")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_demo(commands)
    _add_sandbox(commands)
    _add_outbox(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.run(args)
    return result
