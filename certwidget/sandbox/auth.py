"""Who is calling: HTTP Basic credentials, or a Bearer token the sandbox minted.

Two kinds of caller exist. A *full* caller (Basic auth, or a token from ``POST /auth/token``)
may do everything. An *ecommerce* caller (a token from ``POST /ecommerce/token``) speaks for one
customer: the checkout widget of that buyer, who must not read or write anyone else's data.

    >>> Principal("ecommerce", "7").may_act_for("7")
    True
    >>> Principal("ecommerce", "7").may_act_for("8")
    False
    >>> Principal("full", "sandbox").may_act_for(None)
    True
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass

from anyio import to_thread
from starlette.requests import Request

from certwidget.sandbox.errors import ApiError, forbidden, unauthorized
from certwidget.sandbox.store import SandboxStore, TokenKind

_HOW_TO_AUTHENTICATE = "send HTTP Basic credentials, or a Bearer token from POST /v2/auth/token"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``subject`` is a username (full) or a customer id (ecommerce)."""

    kind: TokenKind
    subject: str

    @property
    def scope(self) -> str:
        """The namespace of this caller's Idempotency-Keys."""
        return f"{self.kind}:{self.subject}"

    def may_act_for(self, customer_id: str | None) -> bool:
        """Whether this caller may act for the customer with this id (None: no customer)."""
        return self.kind == "full" or (customer_id is not None and self.subject == customer_id)

    def require_full(self, action: str) -> None:
        """403 for an ecommerce token on an operation outside its one customer."""
        if self.kind != "full":
            raise forbidden(
                f"An ecommerce token cannot {action}; it may only read its own customer and "
                "that customer's certificates, and create certificates and attachments for it"
            )


class Credentials:
    """The sandbox's one user, checked in constant time."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._username = username.encode()
        self._password = password.encode()

    def check(self, username: str, password: str) -> bool:
        # Both comparisons always run, so timing does not tell which half was wrong.
        user_ok = secrets.compare_digest(username.encode(), self._username)
        password_ok = secrets.compare_digest(password.encode(), self._password)
        return user_ok and password_ok


async def authenticate(
    request: Request, credentials: Credentials, store: SandboxStore
) -> Principal:
    """The caller of ``request``, or a 401 that says how to authenticate."""
    header = request.headers.get("authorization")
    if not header:
        raise unauthorized(f"Authentication is required: {_HOW_TO_AUTHENTICATE}")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        username, password = _decode_basic(value)
        if not credentials.check(username, password):
            raise unauthorized("The username or password is wrong")
        return Principal("full", username)
    if scheme.lower() == "bearer" and value:
        grant = await to_thread.run_sync(store.lookup_token, value)
        if grant is None:
            raise unauthorized(
                "The Bearer token is unknown or has expired; get a new one from POST /v2/auth/token"
            )
        return Principal(grant.kind, grant.subject)
    raise unauthorized(f"Unsupported Authorization header: {_HOW_TO_AUTHENTICATE}")


def _decode_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error) as exc:
        raise _malformed_basic() from exc
    username, colon, password = decoded.partition(":")
    if not colon:
        raise _malformed_basic()
    return username, password


def _malformed_basic() -> ApiError:
    return unauthorized("The Basic credentials are malformed; send base64 of 'username:password'")
