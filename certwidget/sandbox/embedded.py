"""The embedded sandbox as a provider: the zero-configuration default.

The CertCapture-compatible sandbox app runs in-process; the ordinary CertCapture client talks
to it through httpx's ASGI transport, so the middleware exercises exactly the code path it uses
against a real CertCapture server, with no network and no account.

    provider = embedded_sandbox(".certwidget/certwidget-sandbox.sqlite3")
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import httpx
from starlette.applications import Starlette

from certwidget.providers.certcapture.client import CertCaptureProvider
from certwidget.providers.commenda.provider import CommendaProvider

SANDBOX_BASE_URL = "http://certwidget-sandbox.invalid/v2"
#: The same sandbox's Commenda dialect; the host is never resolved (ASGI transport).
COMMENDA_SANDBOX_URL = "http://certwidget-sandbox.invalid/api/v1"


class EmbeddedSandbox(CertCaptureProvider):
    """The CertCapture provider wired to an in-process sandbox; ``app`` is that sandbox."""

    name = "sandbox"
    #: Certificates delivered here go nowhere real: the middleware shows the widget's
    #: "Sandbox" badge and refuses to run it beside a shared (PostgreSQL) outbox.
    is_sandbox = True

    def __init__(self, app: Starlette, *, username: str, password: str) -> None:
        super().__init__(
            SANDBOX_BASE_URL,
            username=username,
            password=password,
            transport=httpx.ASGITransport(app=app),
            retries=2,
        )
        self.app = app


class EmbeddedCommenda(CommendaProvider):
    """The Commenda provider wired to an in-process sandbox's Commenda dialect."""

    is_sandbox = True


def embedded_sandbox(
    db_path: str | os.PathLike[str], *, username: str = "sandbox", password: str | None = None
) -> EmbeddedSandbox:
    """A CertCapture provider backed by an in-process sandbox on the SQLite file ``db_path``."""
    from certwidget.sandbox import create_app

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    # The in-process sandbox is reachable only through this object, so a random password
    # costs nothing and keeps a guessable credential out of every log and response.
    password = password or secrets.token_urlsafe(24)
    app = create_app(db_path=db_path, username=username, password=password)
    return EmbeddedSandbox(app, username=username, password=password)


def embedded_commenda(db_path: str | os.PathLike[str]) -> CommendaProvider:
    """A :class:`CommendaProvider` backed by an in-process sandbox's Commenda dialect.

    The sandbox is reachable only through this object, so its credentials are random.
    """
    from certwidget.sandbox import create_app

    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    app = create_app(db_path=db_path, password=secrets.token_urlsafe(24), commenda_token=token)
    return EmbeddedCommenda(
        COMMENDA_SANDBOX_URL, token=token, transport=httpx.ASGITransport(app=app), retries=2
    )
