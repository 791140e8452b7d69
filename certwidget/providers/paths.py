"""Building URL paths from ids safely: an id is always exactly one path segment."""

from __future__ import annotations

from urllib.parse import quote


def segment(value: str, what: str) -> str:
    """``value`` as one percent-encoded path segment.

    An empty id would address the collection, and ``.`` or ``..`` would be resolved away by
    the HTTP client (``/customers/../certificates`` is ``/certificates``): a buyer named ``..``
    would read everyone's certificates. All three are refused.
    """
    if not value:
        raise ValueError(f"{what} must not be empty")
    if value in (".", ".."):
        raise ValueError(f"{what} must not be {value!r}")
    return quote(value, safe="")
