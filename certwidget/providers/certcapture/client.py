"""An async client for the CertCapture API, and the certificate provider built on it.

:class:`CertCaptureClient` has one typed method per operation of
``shared/specs/certcapture-openapi.yml``; :class:`CertCaptureProvider` implements
:class:`~certwidget.providers.base.CertificateProvider` on top of it.

Usage::

    async with CertCaptureClient(
        "https://sandbox.example/v2", username="sandbox", password="sandbox"
    ) as client:
        customer = await client.create_customer(Customer(customer_code="C-1", name="Acme"))
        cert = await client.create_certificate(
            CertificateCreate(exemption_reason="RESALE", exposure_zone="WA", customer_code="C-1"),
            idempotency_key="order-1001-WA",
        )
        await client.upload_certificate_attachment(
            cert.id, pdf_bytes, filename="cert.pdf", media_type="application/pdf"
        )

Errors all derive from :class:`CertCaptureError` (a
:class:`~certwidget.providers.base.ProviderError`), one subclass per status the API answers.
Failures that are worth retrying later (5xx, connection errors, timeouts) derive from
:class:`CertCaptureUnavailable`, which is also a
:class:`~certwidget.providers.base.ProviderUnavailable`::

    CertCaptureError (ProviderError)
    ├── BadRequest 400, Unauthorized 401, Forbidden 403, NotFound 404, Conflict 409,
    │   PayloadTooLarge 413, UnsupportedMediaType 415
    ├── MalformedResponse          a 2xx whose body is not what the API promises
    └── CertCaptureUnavailable (also ProviderUnavailable)
        ├── ServerError 5xx
        ├── ConnectionFailed       could not connect, connection dropped
        └── TimedOut               connect/read/write/pool timeout

Retries: a call is retried (exponential backoff with jitter) on connection errors, timeouts and
5xx answers **only** when it is idempotent: GET, PUT, DELETE, and a POST that carries an
``Idempotency-Key``. A POST without one is sent exactly once, so a retry can never make a
second certificate or customer.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, Final, NoReturn, TypeVar

import httpx

from certwidget.providers import retrying
from certwidget.providers.base import (
    ApiError,
    AsyncClosing,
    CertificateDraft,
    CertificateStatus,
    CustomerProfile,
    ProviderCertificate,
    ProviderToken,
    ProviderUnavailable,
)
from certwidget.providers.certcapture.models import (
    Attachment,
    AuthToken,
    CertAttribute,
    Certificate,
    CertificateCreate,
    CertificatePage,
    Customer,
    CustomerPage,
    ModelError,
)
from certwidget.providers.paths import segment
from certwidget.providers.pool import ReopeningPool

__all__ = [
    "Attachment",
    "AuthToken",
    "BadRequest",
    "CertAttribute",
    "CertCaptureClient",
    "CertCaptureError",
    "CertCaptureProvider",
    "CertCaptureUnavailable",
    "Certificate",
    "CertificateCreate",
    "CertificatePage",
    "Conflict",
    "ConnectionFailed",
    "Customer",
    "CustomerPage",
    "Forbidden",
    "MalformedResponse",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "TimedOut",
    "Unauthorized",
    "UnsupportedMediaType",
]

logger = logging.getLogger(__name__)

# -- errors -----------------------------------------------------------------------------------


class CertCaptureError(ApiError):
    """The CertCapture API answered with an error (or could not be used at all).

    ``status`` is the HTTP status (``None`` when no answer arrived), ``code`` the API's error code
    (from ``{"error": {"code", "message"}}``, or derived from the status when the body has none),
    ``message`` a human-readable explanation.
    """


class BadRequest(CertCaptureError):
    """400: the request body or parameters were invalid."""


class Unauthorized(CertCaptureError):
    """401: credentials are missing or wrong (or the token expired)."""


class Forbidden(CertCaptureError):
    """403: the credential is valid but may not do this (e.g. an eCommerce token, another buyer)."""


class NotFound(CertCaptureError):
    """404: no such certificate or customer."""


class Conflict(CertCaptureError):
    """409: the resource already exists, or an idempotency key was reused for another request."""


class PayloadTooLarge(CertCaptureError):
    """413: the attachment (or body) is larger than the server accepts."""


class UnsupportedMediaType(CertCaptureError):
    """415: the attachment's media type (or the body's content type) is not accepted."""


class MalformedResponse(CertCaptureError):
    """A successful status whose body is not what the API promises (not JSON, wrong shape)."""


class CertCaptureUnavailable(CertCaptureError, ProviderUnavailable):
    """The API could not be used right now; the same request may well work later."""


class ServerError(CertCaptureUnavailable):
    """5xx: the server failed."""


class ConnectionFailed(CertCaptureUnavailable):
    """No connection could be made, or it broke before an answer arrived (``status`` is None)."""


class TimedOut(CertCaptureUnavailable):
    """Connecting, sending, waiting for the answer, or waiting for a pooled connection timed out."""


_ERRORS_BY_STATUS: Final[Mapping[int, type[CertCaptureError]]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    # Not in the list the API documents, but "slow down" is a come-back-later answer.
    429: CertCaptureUnavailable,
}

# How much of a non-JSON error body goes into the message.
_SNIPPET: Final = 200


def _default_code(response: httpx.Response) -> str:
    phrase = response.reason_phrase or ""
    code = "_".join(phrase.lower().replace("-", " ").split())
    return code or f"http_{response.status_code}"


def error_from_response(response: httpx.Response) -> CertCaptureError:
    """The typed error for a non-2xx answer.

    Reads ``{"error": {"code", "message"}}``; also the hosted API's
    ``{"success": false, "code": ..., "error": "..."}``; anything else (HTML from a proxy, an empty
    body) still gives the right class, a code derived from the status and a message quoting the
    start of the body.
    """
    status = response.status_code
    code: str | None = None
    message: str | None = None
    try:
        data: object = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            message = error.get("message") if isinstance(error.get("message"), str) else None
        elif isinstance(error, str):
            message = error
            code = data.get("code") if isinstance(data.get("code"), str) else None
    if not message:
        reason = f"HTTP {status} {response.reason_phrase}".strip()
        text = " ".join(response.text[:_SNIPPET].split()) if response.content else ""
        message = f"{reason}: {text}" if text else reason
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else CertCaptureError
    return cls(status, code or _default_code(response), message)


def _error_from_exception(exc: httpx.HTTPError, method: str, url: str) -> CertCaptureError:
    if isinstance(exc, httpx.TimeoutException):
        return TimedOut(None, "timeout", f"{method} {url} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.DecodingError):
        return MalformedResponse(None, "malformed_response", f"{method} {url}: {exc}")
    if isinstance(exc, httpx.TransportError):
        detail = str(exc) or type(exc).__name__
        return ConnectionFailed(None, "connection_error", f"{method} {url} failed: {detail}")
    return CertCaptureError(None, "request_error", f"{method} {url} failed: {exc}")


# Retried on failure (see certwidget.providers.retrying); a POST only with an Idempotency-Key.
_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


_ModelT = TypeVar("_ModelT")


# -- the client -------------------------------------------------------------------------------


class CertCaptureClient(AsyncClosing):
    """An async client for the CertCapture API: one pooled connection set, one method per operation.

    Authenticate with exactly one of ``username`` + ``password`` (HTTP Basic) or ``token``
    (Bearer, from :meth:`get_auth_token` or :meth:`generate_ecommerce_token`)::

        client = CertCaptureClient("https://api.certcapture.com/v2", username="u", password="p")
        try:
            page = await client.list_certificates(status="Active", page_size=10)
            for cert in page:
                print(cert.id, cert.exposure_zone)
        finally:
            await client.aclose()

    ``timeout`` is seconds (or an :class:`httpx.Timeout`); ``retries`` is how many further attempts
    an idempotent call gets after the first, waiting about ``backoff * 2**n`` seconds (with jitter)
    before attempt ``n + 1``. ``transport`` replaces the network (``httpx.ASGITransport`` to call an
    in-process app, ``httpx.MockTransport`` in tests). ``client_id`` is sent as ``x-client-id``,
    which the hosted API requires.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float | httpx.Timeout = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
        client_id: str | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required, e.g. 'https://api.certcapture.com/v2'")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if backoff < 0:
            raise ValueError("backoff must be >= 0")
        self._authorization = _authorization(username, password, token)
        self._retries = retries
        self._backoff = backoff
        headers = {"Accept": "application/json", "User-Agent": "certwidget"}
        if client_id is not None:
            headers["x-client-id"] = client_id
        self._http = ReopeningPool(
            base_url=base_url,
            headers=headers,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )
        self._owns_http = True

    # -- lifecycle ---------------------------------------------------------------------------

    def with_token(self, token: str) -> CertCaptureClient:
        """A client for the same server that authenticates with Bearer ``token``.

        It shares this client's connection pool and options; closing it releases nothing, closing
        this client closes the pool for both::

            minted = await client.generate_ecommerce_token("C-1")
            buyer = client.with_token(minted.token)
            await buyer.get_customer("C-1", by_code=True)
        """
        derived = object.__new__(CertCaptureClient)
        derived._authorization = _authorization(None, None, token)
        derived._retries = self._retries
        derived._backoff = self._backoff
        derived._http = self._http
        derived._owns_http = False
        return derived

    @property
    def base_url(self) -> httpx.URL:
        return self._http.base_url

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the connection pool (a client from :meth:`with_token` leaves it to its parent)."""
        if self._owns_http:
            await self._http.aclose()

    # -- certificates ------------------------------------------------------------------------

    async def list_certificates(
        self,
        status: CertificateStatus | None = None,
        customer_id: str | None = None,
        page: int | None = None,
        page_size: int | None = None,
    ) -> CertificatePage:
        """``GET /certificates`` (listCertificates): one page, filtered by status and customer."""
        params = _params(status=status, customerId=customer_id, page=page, pageSize=page_size)
        response = await self._request("GET", "/certificates", params=params)
        return _parse(response, CertificatePage.from_json)

    async def create_certificate(
        self, request: CertificateCreate, *, idempotency_key: str | None = None
    ) -> Certificate:
        """``POST /certificates`` (createCertificate).

        With ``idempotency_key`` the call is retried on failure and the server answers a repeat
        with the certificate it already made; without one it is sent exactly once.
        """
        response = await self._request(
            "POST", "/certificates", json=request.to_json(), idempotency_key=idempotency_key
        )
        return _parse(response, Certificate.from_json)

    async def get_certificate(self, certificate_id: str) -> Certificate:
        """``GET /certificates/{id}`` (getCertificate)."""
        path = f"/certificates/{segment(certificate_id, 'certificate_id')}"
        return _parse(await self._request("GET", path), Certificate.from_json)

    async def update_certificate(
        self,
        certificate_id: str,
        request: CertificateCreate,
        *,
        status: CertificateStatus | None = None,
    ) -> Certificate:
        """``PUT /certificates/{id}`` (updateCertificate): replace the certificate's fields.

        ``status`` is an extension the sandbox accepts (e.g. to revoke); it is left out when None.
        """
        body = request.to_json()
        if status is not None:
            body["status"] = status
        path = f"/certificates/{segment(certificate_id, 'certificate_id')}"
        return _parse(await self._request("PUT", path, json=body), Certificate.from_json)

    async def delete_certificate(self, certificate_id: str) -> None:
        """``DELETE /certificates/{id}`` (deleteCertificate)."""
        path = f"/certificates/{segment(certificate_id, 'certificate_id')}"
        await self._request("DELETE", path)

    async def get_certificate_attachment(self, certificate_id: str) -> Attachment:
        """``GET /certificates/{id}/attachment`` (getCertificateAttachment): the document."""
        path = f"/certificates/{segment(certificate_id, 'certificate_id')}/attachment"
        response = await self._request("GET", path, accept="application/pdf, image/*, */*")
        return Attachment.from_body(response.content, response.headers.get("content-type", ""))

    async def upload_certificate_attachment(
        self, certificate_id: str, content: bytes, *, filename: str, media_type: str
    ) -> None:
        """``POST /certificates/{id}/attachment`` (uploadCertificateAttachment).

        The document goes as the multipart field ``file``.

        Sent once (a POST without an idempotency key is never retried).
        """
        path = f"/certificates/{segment(certificate_id, 'certificate_id')}/attachment"
        files = {"file": (filename, content, media_type)}
        await self._request("POST", path, files=files)

    # -- customers ---------------------------------------------------------------------------

    async def list_customers(
        self, page: int | None = None, page_size: int | None = None
    ) -> CustomerPage:
        """``GET /customers`` (listCustomers)."""
        params = _params(page=page, pageSize=page_size)
        response = await self._request("GET", "/customers", params=params)
        return _parse(response, CustomerPage.from_json)

    async def create_customer(
        self, customer: Customer, *, idempotency_key: str | None = None
    ) -> Customer:
        """``POST /customers`` (createCustomer); the server assigns ``id``, so none is sent."""
        response = await self._request(
            "POST", "/customers", json=_without_id(customer), idempotency_key=idempotency_key
        )
        return _parse(response, Customer.from_json)

    async def get_customer(self, customer_id: str, *, by_code: bool = False) -> Customer:
        """``GET /customers/{customerId}`` (getCustomer): by the server's id, or with
        ``by_code=True`` by the customer code (sent as ``?by=customerCode``, never guessed)."""
        path = f"/customers/{segment(customer_id, 'customer_id')}"
        response = await self._request("GET", path, params=_addressing(by_code))
        return _parse(response, Customer.from_json)

    async def update_customer(
        self, customer_id: str, customer: Customer, *, by_code: bool = False
    ) -> Customer:
        """``PUT /customers/{customerId}`` (updateCustomer): replace the customer's details.

        ``customer_id`` is the server's id, or the customer code with ``by_code=True``.
        """
        path = f"/customers/{segment(customer_id, 'customer_id')}"
        response = await self._request(
            "PUT", path, params=_addressing(by_code), json=_without_id(customer)
        )
        return _parse(response, Customer.from_json)

    async def get_customer_certificates(
        self,
        customer_id: str,
        *,
        by_code: bool = False,
        page: int | None = None,
        page_size: int | None = None,
    ) -> CertificatePage:
        """``GET /customers/{customerId}/certificates`` (getCustomerCertificates): one page.

        ``customer_id`` is the server's id, or the customer code with ``by_code=True``;
        :meth:`all_customer_certificates` reads every page.
        """
        path = f"/customers/{segment(customer_id, 'customer_id')}/certificates"
        params = {**_addressing(by_code), **_params(page=page, pageSize=page_size)}
        response = await self._request("GET", path, params=params)
        return _parse(response, CertificatePage.from_json)

    async def all_customer_certificates(
        self, customer_id: str, *, by_code: bool = False
    ) -> list[Certificate]:
        """Every certificate of the customer: page after page until ``totalCount`` is read.

        Bounded by :data:`MAX_PAGES` pages of :data:`PAGE_SIZE` (what is beyond is logged and
        left unread), and stops at an empty page, so a server whose ``totalCount`` overstates
        what it serves cannot keep the caller reading.
        """

        async def fetch(page: int) -> CertificatePage:
            return await self.get_customer_certificates(
                customer_id, by_code=by_code, page=page, page_size=PAGE_SIZE
            )

        return await _every_page(fetch, f"certificates of customer {customer_id!r}")

    # -- attributes, tokens ------------------------------------------------------------------

    async def list_attributes(self) -> list[CertAttribute]:
        """``GET /attributes`` (listAttributes)."""
        return _parse(await self._request("GET", "/attributes"), _attribute_list)

    async def get_auth_token(self, username: str, password: str) -> AuthToken:
        """``POST /auth/token`` (getAuthToken): trade credentials for a Bearer token.

        The endpoint is open, so no credential of this client is sent::

            minted = await client.get_auth_token("user", "secret")
            bearer = client.with_token(minted.token)
        """
        body = {"username": username, "password": password}
        response = await self._request("POST", "/auth/token", json=body, authenticate=False)
        return _parse(response, AuthToken.from_json)

    async def generate_ecommerce_token(
        self, customer_code: str, *, company_id: int | None = None
    ) -> AuthToken:
        """``POST /ecommerce/token`` (generateEcommerceToken): a Bearer token for one buyer."""
        if not customer_code:
            raise ValueError("customer_code must not be empty")
        body: dict[str, Any] = {"customerCode": customer_code}
        if company_id is not None:
            body["companyId"] = company_id
        response = await self._request("POST", "/ecommerce/token", json=body)
        return _parse(response, AuthToken.from_json)

    # -- the one place requests are sent -----------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: object = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        idempotency_key: str | None = None,
        authenticate: bool = True,
        accept: str | None = None,
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if authenticate:
            headers["Authorization"] = self._authorization
        if idempotency_key is not None:
            if not idempotency_key:
                raise ValueError("idempotency_key must not be empty (pass None for none)")
            headers["Idempotency-Key"] = idempotency_key
        if accept is not None:
            headers["Accept"] = accept
        idempotent = method in _IDEMPOTENT_METHODS or idempotency_key is not None
        attempts = 1 + (self._retries if idempotent else 0)

        return await retrying.send(
            lambda: self._http.client.request(
                method, path, params=params, json=json, files=files, headers=headers
            ),
            attempts=attempts,
            backoff=self._backoff,
            retry_status=lambda status: status >= 500,
            label=f"CertCapture {method} {path}",
            error_from_exception=lambda exc: _error_from_exception(exc, method, path),
            error_from_response=error_from_response,
        )


def _authorization(username: str | None, password: str | None, token: str | None) -> str:
    if token is not None:
        if username is not None or password is not None:
            raise ValueError(
                "give either username and password (Basic) or token (Bearer), not both"
            )
        if not token:
            raise ValueError("token must not be empty")
        return f"Bearer {token}"
    if username is None and password is None:
        raise ValueError("credentials required: username and password (Basic) or token (Bearer)")
    if not username or password is None:
        raise ValueError("Basic auth needs both a non-empty username and a password")
    if ":" in username:
        raise ValueError("a Basic auth username cannot contain ':'")
    userpass = f"{username}:{password}".encode()
    return "Basic " + base64.b64encode(userpass).decode("ascii")


def _params(**values: str | int | None) -> dict[str, str | int]:
    return {key: value for key, value in values.items() if value is not None}


def _addressing(by_code: bool) -> dict[str, str | int]:
    # The path names the id unless it says otherwise: a customer code "1" must never reach the
    # customer whose id is 1 (see the sandbox's openapi.yml, parameter CustomerKey).
    return {"by": "customerCode"} if by_code else {}


#: The page size asked for when reading every page: the API's documented default, which any
#: CertCapture server accepts.
PAGE_SIZE: Final = 50
#: At most this many pages (10,000 certificates at PAGE_SIZE) are read for one list.
MAX_PAGES: Final = 200


async def _every_page(
    fetch: Callable[[int], Awaitable[CertificatePage]], what: str
) -> list[Certificate]:
    items: list[Certificate] = []
    for number in range(1, MAX_PAGES + 1):
        page = await fetch(number)
        items.extend(page)
        if not page.value or len(items) >= page.total_count:
            return items
    logger.warning(
        "CertCapture: read the first %d %s (%d pages); the rest is left unread",
        len(items),
        what,
        MAX_PAGES,
    )
    return items


def _without_id(customer: Customer) -> dict[str, Any]:
    body = customer.to_json()
    body.pop("id", None)
    return body


def _attribute_list(data: object) -> list[CertAttribute]:
    if not isinstance(data, list):
        raise ModelError(f"attributes: expected a JSON array, got {type(data).__name__}")
    return [CertAttribute.from_json(item) for item in data]


def _parse(response: httpx.Response, parse: Callable[[object], _ModelT]) -> _ModelT:
    """Decode a 2xx JSON body with ``parse``; any surprise becomes :class:`MalformedResponse`."""
    try:
        data: object = response.json()
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError, are ValueErrors
        _malformed(response, "body is not JSON")
    try:
        return parse(data)
    except (ValueError, TypeError) as exc:
        _malformed(response, str(exc))


def _malformed(response: httpx.Response, detail: str) -> NoReturn:
    request = response.request
    raise MalformedResponse(
        response.status_code,
        "malformed_response",
        f"malformed response to {request.method} {request.url.path}: {detail}",
    )


# -- the provider -----------------------------------------------------------------------------

_STATUSES: Final[Mapping[str, CertificateStatus]] = {
    "Active": "Active",
    "Pending": "Pending",
    "Expired": "Expired",
    "Revoked": "Revoked",
}


class CertCaptureProvider(AsyncClosing):
    """:class:`~certwidget.providers.base.CertificateProvider` backed by a CertCapture API.

    Give it the server and Basic credentials, and it makes (and closes) its own client::

        provider = CertCaptureProvider(
            "https://api.certcapture.com/v2", username="u", password="p"
        )

    or hand it a client you manage (``aclose`` then leaves the client open)::

        async with CertCaptureClient(url, username="u", password="p") as client:
            provider = CertCaptureProvider(client=client)
    """

    name: str = "certcapture"
    can_mint_tokens: bool = True

    def __init__(
        self,
        base_url: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        client: CertCaptureClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | httpx.Timeout = 10.0,
        retries: int = 3,
        client_id: str | None = None,
    ) -> None:
        if client is not None:
            given = [base_url, username, password, transport, client_id]
            if any(value is not None for value in given):
                raise ValueError("pass either client=... or base_url with credentials, not both")
            self.client = client
            self._owns_client = False
        else:
            if base_url is None:
                raise ValueError("CertCaptureProvider needs base_url (or client=...)")
            self.client = CertCaptureClient(
                base_url,
                username=username,
                password=password,
                transport=transport,
                timeout=timeout,
                retries=retries,
                client_id=client_id,
            )
            self._owns_client = True

    async def mint_token(self, customer_code: str) -> ProviderToken:
        """A widget token for one buyer, through ``/ecommerce/token``."""
        minted = await self.client.generate_ecommerce_token(customer_code)
        return ProviderToken(token=minted.token, expires_at=minted.expires_at)

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        """Find the customer by code, create it when missing, update details that changed.

        The shop's profile wins for every field it fills in; a blank profile field is "unknown" and
        leaves what the provider has. Creating carries an idempotency key derived from the code,
        and a concurrent creation (409) is resolved by reading the winner.
        """
        try:
            existing = await self.client.get_customer(profile.code, by_code=True)
        except NotFound:
            existing = None
        if existing is None:
            wanted = _merge(Customer(customer_code=profile.code), profile)
            try:
                created = await self.client.create_customer(
                    wanted, idempotency_key=_customer_key(profile.code)
                )
            except Conflict:
                created = await self.client.get_customer(profile.code, by_code=True)
            return _customer_id(created)
        if existing.customer_code != profile.code:
            # A server that read the code as an id (or ignored ?by=customerCode) answered
            # another customer: never write the buyer's details over theirs.
            raise CertCaptureError(
                None,
                "customer_mismatch",
                f"asked CertCapture for customerCode {profile.code!r} and got the customer "
                f"with customerCode {existing.customer_code!r}; the server must support "
                "GET /customers/{code}?by=customerCode",
            )
        wanted = _merge(existing, profile)
        if wanted != existing:
            updated = await self.client.update_customer(_customer_id(existing), wanted)
            return _customer_id(updated)
        return _customer_id(existing)

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        """Create one certificate for ``draft.customer_code``; a repeated draft makes no second."""
        request = CertificateCreate(
            exemption_reason=draft.reason,
            exposure_zone=draft.zone,
            exemption_number=draft.exemption_number or None,
            signed_date=draft.signed_date,
            expiration_date=draft.expiration_date,
            exempt_percentage=draft.exempt_percentage,
            customer_code=draft.customer_code,
        )
        cert = await self.client.create_certificate(
            request, idempotency_key=draft.idempotency_key or None
        )
        return _to_provider(cert, default_customer=draft.customer_code)

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        """Upload the certificate's document."""
        await self.client.upload_certificate_attachment(
            certificate_id, content, filename=filename, media_type=media_type
        )

    async def document(self, certificate_id: str) -> Attachment | None:
        """The certificate's attachment (getCertificateAttachment); None when the certificate
        is unknown or has none. Whose it is, the caller checks (``certificates_for``)."""
        try:
            return await self.client.get_certificate_attachment(certificate_id)
        except NotFound:
            return None

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        """Every certificate of the buyer; an unknown buyer has none."""
        try:
            certificates = await self.client.all_customer_certificates(customer_code, by_code=True)
        except NotFound:
            return []
        return [_to_provider(cert, default_customer=customer_code) for cert in certificates]

    async def aclose(self) -> None:
        """Close the client, if this provider made it."""
        if self._owns_client:
            await self.client.aclose()


def _customer_key(code: str) -> str:
    # Hashed so any code (spaces, non-ASCII) makes a valid header, and the key is stable.
    return "certwidget-customer-" + hashlib.sha256(code.encode()).hexdigest()[:32]


def _customer_id(customer: Customer) -> str:
    if not customer.id:
        raise MalformedResponse(None, "malformed_response", "customer without an id")
    return customer.id


def _merge(customer: Customer, profile: CustomerProfile) -> Customer:
    """``customer`` with every non-blank field of ``profile`` written over it."""
    fields = {
        "name": profile.name,
        "line1": profile.line1,
        "city": profile.city,
        "region": profile.region,
        "postal_code": profile.postal_code,
        "country": profile.country,
        "email_address": profile.email,
        "phone_number": profile.phone,
    }
    return replace(customer, **{key: value for key, value in fields.items() if value})


def _to_provider(cert: Certificate, *, default_customer: str) -> ProviderCertificate:
    # An unknown status never exempts an order: read it as Revoked, the one that never does.
    status = _STATUSES.get(cert.status or "", "Revoked")
    customer_code = default_customer
    if cert.customer is not None and cert.customer.customer_code:
        customer_code = cert.customer.customer_code
    return ProviderCertificate(
        id=cert.id,
        zone=cert.exposure_zone or "",
        reason=cert.exemption_reason or "",
        status=status,
        number=cert.certificate_number or "",
        exemption_number=cert.exemption_number or "",
        exempt_percentage=100.0 if cert.exempt_percentage is None else cert.exempt_percentage,
        signed_date=cert.signed_date,
        expiration_date=cert.expiration_date,
        customer_code=customer_code,
    )
