"""certwidget: an embeddable tax-exemption-certificate collector for Starlette and FastAPI shops."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
