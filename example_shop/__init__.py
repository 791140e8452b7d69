"""A drop-in FastAPI storefront that collects exemption certificates with certwidget.

Run it with ``certwidget demo`` (or ``make demo``); read ``app.py`` to copy from it.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
