"""Signed, expiring widget tokens bound to one buyer.

The browser holds a widget token, never a provider credential. The token is an itsdangerous
signature over the buyer the *shop* named, the zones the widget may certify and a fingerprint of
the upstream token minted for that buyer; it expires after ``max_age`` seconds. Keys rotate: pass
``secret_key`` as a list, oldest first; the newest signs, all of them verify.

    tokens = WidgetTokens(["old-key", "new-key"], max_age=1800)
    token = tokens.issue(WidgetClaims(customer="C-42", guest=False, zones=("WA",)))
    tokens.verify(token).customer  # "C-42"
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

#: Salts keep a value signed for one purpose from being accepted for another.
WIDGET_TOKEN_SALT = "certwidget.widget-token.v1"  # noqa: S105 - a salt, not a secret
GUEST_COOKIE_SALT = "certwidget.guest.v1"
CHECKOUT_COOKIE_SALT = "certwidget.checkout.v1"


class TokenRejected(Exception):
    """A widget token that is missing, forged, expired or signed for another purpose."""

    def __init__(self, message: str, *, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True, slots=True)
class WidgetClaims:
    """What a widget token asserts."""

    customer: str
    guest: bool
    zones: tuple[str, ...] = ()
    #: A fingerprint of the upstream (provider) token, never the token itself.
    upstream: str = ""
    issued_at: float = 0.0


def fingerprint(upstream_token: str) -> str:
    """A short, one-way fingerprint of an upstream token, safe to put in a browser token."""
    return hashlib.sha256(upstream_token.encode()).hexdigest()[:20]


def normalize_keys(secret_key: str | bytes | Sequence[str | bytes]) -> list[bytes]:
    """``secret_key`` as a non-empty list of bytes, oldest first; clear errors otherwise."""
    keys: list[str | bytes] = (
        [secret_key] if isinstance(secret_key, str | bytes) else list(secret_key)
    )
    if not keys:
        raise ValueError("secret_key must be a non-empty string or a non-empty list of strings")
    result: list[bytes] = []
    for key in keys:
        if not isinstance(key, str | bytes):
            raise TypeError(f"secret_key entries must be str or bytes, got {type(key).__name__}")
        raw = key.encode() if isinstance(key, str) else key
        if len(raw) < 16:
            raise ValueError(
                "secret_key is too short: use at least 16 random characters, e.g. from "
                "`python -c 'import secrets; print(secrets.token_urlsafe())'`"
            )
        result.append(raw)
    return result


class Signed:
    """A purpose-salted, expiring signer over JSON values; the base of tokens and cookies."""

    def __init__(self, keys: Sequence[bytes], *, salt: str, max_age: int) -> None:
        self._serializer = URLSafeTimedSerializer(list(keys), salt=salt)
        self.max_age = max_age

    def dumps(self, value: Any) -> str:
        return self._serializer.dumps(value)

    def loads(self, signed: str) -> Any:
        """The signed value; raises TokenRejected when forged or expired."""
        try:
            return self._serializer.loads(signed, max_age=self.max_age)
        except SignatureExpired as exc:
            raise _expired() from exc
        except BadSignature as exc:
            raise _invalid() from exc


def _expired() -> TokenRejected:
    return TokenRejected(
        "The certificate form has expired. Reload the page to continue.", code="token_expired"
    )


def _invalid() -> TokenRejected:
    return TokenRejected("The certificate form's token is not valid. Reload the page to continue.")


class WidgetTokens(Signed):
    """Issues and verifies widget tokens."""

    def __init__(self, keys: Sequence[bytes], *, max_age: int = 1800) -> None:
        super().__init__(keys, salt=WIDGET_TOKEN_SALT, max_age=max_age)

    def issue(self, claims: WidgetClaims) -> str:
        return self.dumps(
            {
                "c": claims.customer,
                "g": claims.guest,
                "z": list(claims.zones),
                "u": claims.upstream,
                "t": time.time(),
            }
        )

    def verify(self, token: str) -> WidgetClaims:
        """The token's claims; raises TokenRejected when forged, expired or of another shape."""
        payload = self.loads(token)
        try:
            return WidgetClaims(
                customer=str(payload["c"]),
                guest=bool(payload["g"]),
                zones=tuple(str(zone) for zone in payload["z"]),
                upstream=str(payload["u"]),
                issued_at=float(payload["t"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            # A validly signed but differently shaped payload: a token from another version.
            raise _invalid() from exc
