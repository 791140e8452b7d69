"""The middleware's options, checked once at construction with messages a person can act on.

:class:`~certwidget.middleware.CertWidgetMiddleware` hands its keyword options here; what comes
back is plain data the composition root builds the parts from.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.requests import HTTPConnection

from certwidget.domain.models import Seller

InjectRule = Sequence[str] | Callable[[HTTPConnection], bool]
LOCALES = ("en", "es")

_GLOB_CHARS = "*?["
# What browsers send in `Origin`: scheme, host (a name or a bracketed IPv6 address), port.
_ORIGIN = re.compile(r"https?://(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(?P<port>[0-9]{1,5}))?")


def origin(value: object) -> str:
    """An ``allowed_origins`` entry as browsers send ``Origin``: scheme and host lowercased, no
    path (a trailing slash is forgiven); anything else could never match, so it is refused."""
    origin = value.strip().rstrip("/").lower() if isinstance(value, str) else ""
    # Browsers leave a scheme's default port out of Origin: so must we, or it never matches.
    if origin.startswith("http://") and origin.endswith(":80"):
        origin = origin.removesuffix(":80")
    elif origin.startswith("https://") and origin.endswith(":443"):
        origin = origin.removesuffix(":443")
    match = _ORIGIN.fullmatch(origin)
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        raise ValueError(
            f"allowed_origins entries must be origins like 'https://shop.example' or "
            f"'https://shop.example:8443' (scheme, host, optional port; no path), got {value!r}"
        )
    return origin


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in _GLOB_CHARS)


def literal_prefixes(patterns: Sequence[str]) -> tuple[str, ...]:
    """What every path an inject glob matches starts with: one C call rules most paths out."""
    prefixes = []
    for pattern in patterns:
        cut = min((pattern.find(ch) for ch in _GLOB_CHARS if ch in pattern), default=len(pattern))
        prefixes.append(pattern[:cut] if cut < len(pattern) else pattern.rstrip("/") or "/")
    return tuple(prefixes)


def compile_paths(patterns: Sequence[str]) -> re.Pattern[str]:
    """One regex for all inject globs; a plain path also covers the paths below it."""
    parts = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.startswith("/"):
            raise ValueError(f"inject paths must be strings starting with '/', got {pattern!r}")
        if is_glob(pattern):
            parts.append(fnmatch.translate(pattern))  # anchored with its own \Z
        else:
            stem = re.escape(pattern.rstrip("/"))  # "/" leaves "": every path is below it
            parts.append(f"(?s:{stem}(?:/.*)?)\\Z")
    return re.compile("|".join(f"(?:{part})" for part in parts))


@dataclass(frozen=True, slots=True)
class InjectPaths:
    """Which HTML pages get the widget, precomputed so the usual request costs a C call."""

    #: One regex for all globs (None for a predicate or no paths).
    paths: re.Pattern[str] | None
    #: The shop's own ``inject(request) -> bool``, when it gave one.
    predicate: Callable[[HTTPConnection], bool] | None
    #: What every injected path starts with (``startswith`` rules most paths out at once).
    prefixes: tuple[str, ...]
    #: Paths a rule names exactly ("/checkout"): a set lookup instead of the regex.
    exact: frozenset[str]


def inject_paths(inject: InjectRule) -> InjectPaths:
    """The ``inject`` option checked and compiled."""
    if callable(inject):
        return InjectPaths(paths=None, predicate=inject, prefixes=(), exact=frozenset())
    if isinstance(inject, str):
        raise TypeError("inject must be a list of paths, e.g. ['/checkout'], or a predicate")
    patterns = list(inject)
    return InjectPaths(
        paths=compile_paths(patterns) if patterns else None,
        predicate=None,
        prefixes=literal_prefixes(patterns),
        exact=frozenset(p.rstrip("/") or "/" for p in patterns if not is_glob(p)),
    )


def checked_prefix(prefix: object) -> str:
    if not (isinstance(prefix, str) and prefix.startswith("/") and len(prefix) > 1):
        raise ValueError(f"prefix must start with '/' and name a path, got {prefix!r}")
    return prefix.rstrip("/")


def check_callables(**callbacks: object) -> None:
    for name, value in callbacks.items():
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be a callable taking the request, or None")


def check_numbers(
    *, token_max_age: int, deliver_wait: float, retry_backoff: float, provider_timeout: float
) -> None:
    if (
        isinstance(token_max_age, bool)
        or not isinstance(token_max_age, int)
        or not (60 <= token_max_age <= 86400)
    ):
        raise ValueError("token_max_age must be a whole number of seconds from 60 to 86400")
    if not (0 <= deliver_wait <= 30) or not (0 < retry_backoff <= 300):
        raise ValueError(
            "deliver_wait must be 0-30 seconds and retry_backoff more than 0, at most 300"
        )
    if not 0 < provider_timeout <= 60:
        raise ValueError("provider_timeout must be more than 0 and at most 60 seconds")


def checked_locale(locale: str) -> str:
    if locale not in LOCALES:
        raise ValueError(f"locale must be one of {', '.join(LOCALES)}, got {locale!r}")
    return locale


def allowed_origins(values: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        raise TypeError("allowed_origins must be a list of origins, e.g. ['https://shop.example']")
    return tuple(origin(value) for value in values)


_SELLER_KEYS = {
    "name": "name",
    "line1": "line1",
    "city": "city",
    "region": "region",
    "postal_code": "postal_code",
    "postalCode": "postal_code",
    "country": "country",
}


def checked_seller(value: object) -> Seller | None:
    """The ``seller`` option: a :class:`certwidget.Seller`, a mapping of its fields, or None.

    Every certificate names the seller the buyer certifies to, so a name is required and the
    address parts must be one-line text.
    """
    if value is None or isinstance(value, Seller):
        seller = value
    elif isinstance(value, Mapping):
        unknown = sorted(str(k) for k in value if k not in _SELLER_KEYS)
        if unknown:
            raise ValueError(
                f"seller has unknown keys {unknown}: use name, line1, city, region, "
                "postal_code (or postalCode) and country"
            )
        seller = Seller(**{_SELLER_KEYS[str(k)]: v for k, v in value.items()})
    else:
        raise TypeError(
            "seller must be certwidget.Seller(name=..., line1=..., city=..., region=..., "
            f"postal_code=...) or a mapping of those fields, got {type(value).__name__}"
        )
    if seller is None:
        return None
    for name in ("name", "line1", "city", "region", "postal_code", "country"):
        part = getattr(seller, name)
        if not isinstance(part, str) or any(ch in part for ch in "\r\n\x00"):
            raise ValueError(f"seller.{name} must be one line of text, got {part!r}")
    if not seller.name.strip():
        raise ValueError("seller needs the shop's legal name: Seller(name='Example Shop LLC', ...)")
    return seller


def check_hooks(**hooks: object) -> None:
    """Callables the shop passes that take something other than the request alone."""
    for name, value in hooks.items():
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be a function (sync or async), or None")


def checked_on_file_ttl(value: object) -> float:
    """``on_file_ttl``: seconds from 0 (ask the provider every time) to a day."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 86400:
        raise ValueError(
            "on_file_ttl must be seconds from 0 (ask the provider every time) to 86400, "
            f"got {value!r}"
        )
    return float(value)
