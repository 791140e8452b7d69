"""The outbox: every acknowledged submission, stored durably, and its delivery to the provider.

``base`` is the seam (the :class:`Outbox` protocol and its records); ``sqlite`` the default
backend, ``postgres`` the one several hosts share, ``memory`` one for tests; ``delivery`` works
any of them. :func:`outbox_for` picks the backend a ``database=`` value names.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from certwidget.outbox.base import NewSubmission, Outbox, Submission, SubmissionState

__all__ = [
    "NewSubmission",
    "Outbox",
    "Submission",
    "SubmissionState",
    "is_postgres",
    "outbox_for",
    "sqlite_path",
]

_POSTGRES_SCHEMES = ("postgresql", "postgres")


def _scheme(database: str | os.PathLike[str]) -> str:
    # Only a str may be a URL; "C:\\..." has a drive, not a scheme: a URL needs "://".
    if not isinstance(database, str) or "://" not in database:
        return ""
    return urlsplit(database).scheme.lower()


def is_postgres(database: str | os.PathLike[str]) -> bool:
    """Whether ``database`` is a ``postgresql://`` (or ``postgres://``) URL."""
    return _scheme(database) in _POSTGRES_SCHEMES


def sqlite_path(database: str | os.PathLike[str]) -> Path:
    """The SQLite file ``database`` names: a path, or a ``sqlite:///path`` URL (three slashes
    and a relative path, four for an absolute one, as SQLAlchemy writes them).

    Any other URL is refused: it would otherwise become a file named after the URL.
    """
    scheme = _scheme(database)
    if not scheme:
        return Path(database)
    if scheme == "sqlite":
        parts = urlsplit(str(database))
        if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise ValueError(
                f"database={database!r}: write a SQLite URL as sqlite:///relative/path.sqlite3 "
                "or sqlite:////absolute/path.sqlite3"
            )
        return Path(unquote(parts.path[1:]))
    raise ValueError(
        f"database= must be a SQLite file path, a sqlite:/// URL or a postgresql:// URL; "
        f"{scheme}:// is not supported"
    )


def outbox_for(database: str | os.PathLike[str]) -> Outbox:
    """The outbox ``database=`` names: PostgreSQL for a ``postgresql://`` URL (it connects at
    ``open()``), else the SQLite file."""
    if is_postgres(database):
        try:
            from certwidget.outbox.postgres import PostgresOutbox
        except ImportError as exc:
            raise ImportError(
                "database='postgresql://...' needs psycopg: pip install 'certwidget[postgres]'"
            ) from exc
        return PostgresOutbox(str(database))
    from certwidget.outbox.sqlite import SQLiteOutbox

    return SQLiteOutbox(sqlite_path(database))
