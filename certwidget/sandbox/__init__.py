"""The embedded CertCapture-compatible sandbox: the 15 operations of the CertCapture API on SQLite.

It is the middleware's zero-configuration provider and the test double for the CertCapture
client. Run it with ``certwidget sandbox``, or mount it in-process:

    >>> from certwidget.sandbox import create_app
    >>> app = create_app(db_path="certwidget-sandbox.sqlite3")  # doctest: +SKIP
    >>> # GET /v2/openapi.yml serves the spec; everything else takes Basic auth or a token.
"""

from __future__ import annotations

from certwidget.sandbox.app import create_app
from certwidget.sandbox.server import serve
from certwidget.sandbox.store import SandboxStore

__all__ = ["SandboxStore", "create_app", "serve"]
