"""Who the buyer is: the shop says so, or a guest gets a stable code bound to a signed cookie.

The shop's ``customer(request)`` callable (sync or async) is the only authority. It may answer a
customer number (``"C-42"``), a :class:`CustomerProfile`, a mapping with the same fields
(``code``/``customerCode``, ``name``, ``email``, ``line1``, ``city``, ``region``,
``postalCode``, ``country``, ``phone``), or None for a guest.
"""

from __future__ import annotations

import inspect
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from starlette.requests import HTTPConnection

from certwidget.providers.base import CustomerProfile
from certwidget.web.tokens import GUEST_COOKIE_SALT, Signed, TokenRejected

CustomerLike: TypeAlias = str | CustomerProfile | Mapping[str, Any] | None
CustomerCallable: TypeAlias = Callable[[HTTPConnection], CustomerLike | Awaitable[CustomerLike]]

GUEST_COOKIE = "certwidget_guest"
GUEST_COOKIE_MAX_AGE = 60 * 60 * 24 * 90
# Any printable, space-free text up to 100 characters: shops use numbers, e-mail addresses
# (o'brien@...), UUIDs, "ACME/EU". The provider clients percent-encode it as one path segment
# wherever it reaches a URL. Control characters (C0, DEL, C1) and lone surrogates are not
# printable and cannot be encoded as UTF-8 for that URL: refused at the first request.
_CODE = re.compile(r"^[^\s\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,100}$")


class CustomerError(ValueError):
    """The shop's ``customer(request)`` answered something certwidget cannot use."""


@dataclass(frozen=True, slots=True)
class Buyer:
    code: str
    guest: bool
    profile: CustomerProfile
    #: A new guest cookie value the response must set, when this request created the guest.
    set_guest_cookie: str | None = None


def _profile(value: CustomerLike) -> CustomerProfile | None:
    if value is None:
        return None
    if isinstance(value, CustomerProfile):
        profile = value
    elif isinstance(value, str):
        profile = CustomerProfile(code=value)
    elif isinstance(value, Mapping):
        code = value.get("code") or value.get("customerCode") or value.get("customer_code")
        profile = CustomerProfile(
            code=str(code or ""),
            name=str(value.get("name") or ""),
            line1=str(value.get("line1") or ""),
            city=str(value.get("city") or ""),
            region=str(value.get("region") or ""),
            postal_code=str(value.get("postalCode") or value.get("postal_code") or ""),
            country=str(value.get("country") or "US"),
            email=str(value.get("email") or ""),
            phone=str(value.get("phone") or ""),
        )
    else:
        raise CustomerError(
            "customer(request) must return a customer number (str), a CustomerProfile, "
            f"a mapping or None, not {type(value).__name__}"
        )
    if not _CODE.match(profile.code) or profile.code in (".", ".."):
        raise CustomerError(
            f"customer(request) returned the customer number {profile.code[:120]!r}: use 1-100 "
            "printable characters without spaces"
        )
    return profile


class BuyerResolver:
    """Turns a request into a :class:`Buyer` using the shop's callable and the guest cookie."""

    def __init__(self, customer: CustomerCallable | None, keys: list[bytes]) -> None:
        self._customer = customer
        self._guest = Signed(keys, salt=GUEST_COOKIE_SALT, max_age=GUEST_COOKIE_MAX_AGE)

    async def signed_in(self, connection: HTTPConnection) -> CustomerProfile | None:
        if self._customer is None:
            return None
        value = self._customer(connection)
        # Plain answers (the usual case) skip the awaitable test, which is costly on every page.
        if (
            value is not None
            and not isinstance(value, str | Mapping | CustomerProfile)
            and inspect.isawaitable(value)
        ):
            value = await value
        return _profile(value)

    async def resolve(self, connection: HTTPConnection, *, create_guest: bool) -> Buyer | None:
        """The buyer; a guest only if the guest cookie is present or ``create_guest``."""
        profile = await self.signed_in(connection)
        if profile is not None:
            return Buyer(code=profile.code, guest=False, profile=profile)
        cookie = connection.cookies.get(GUEST_COOKIE)
        if cookie:
            try:
                code = str(self._guest.loads(cookie))
            except TokenRejected:
                code = ""
            if _CODE.match(code):
                return Buyer(code=code, guest=True, profile=CustomerProfile(code=code))
        if not create_guest:
            return None
        code = "guest-" + secrets.token_hex(10)
        return Buyer(
            code=code,
            guest=True,
            profile=CustomerProfile(code=code),
            set_guest_cookie=self._guest.dumps(code),
        )
