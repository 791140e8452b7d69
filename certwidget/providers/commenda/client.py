"""An async client for Commenda's sales-tax API: customers, files, exemption certificates.

It speaks the API of ``shared/specs/commenda-customers.txt`` (Bearer auth, the envelope
``{"data": ..., "message": "..."}``); :mod:`certwidget.providers.commenda.provider`
builds the provider on it and re-exports everything here.

Usage::

    async with CommendaClient("https://api.commenda.io/api/v1", token="...") as client:
        customer = await client.get_customer("b6d009b0-d174-463f-b030-94643c28e209")
        upload = await client.upload_file(pdf_bytes, "cert.pdf", "application/pdf")
        cert = await client.create_exemption_certificate(
            ExemptionCertificateCreate(
                issued_at=dt.date(2024, 5, 1), jurisdiction="WA", type="PURPOSE_WHOLESALE",
                customer_id=customer.id, file_id=upload.id,
            )
        )

Errors all derive from :class:`CommendaError` (a
:class:`~certwidget.providers.base.ProviderError`), one subclass per status; failures worth
retrying later derive from :class:`CommendaUnavailable`, also a
:class:`~certwidget.providers.base.ProviderUnavailable`::

    CommendaError (ProviderError)
    ├── BadRequest 400, Unauthorized 401, Forbidden 403, NotFound 404, Conflict 409,
    │   PayloadTooLarge 413, UnsupportedMediaType 415, UnprocessableEntity 422
    ├── UnsupportedCertificate     a draft Commenda cannot hold (reason, percentage, zone)
    ├── MalformedResponse          a 2xx whose body is not the promised envelope
    └── CommendaUnavailable (also ProviderUnavailable)
        ├── ServerError 5xx (and 429)
        ├── ConnectionFailed       could not connect, connection dropped
        └── TimedOut               connect/read/write/pool timeout

Retries: GET, PUT, DELETE and PATCH (this client only ever PATCHes absolute values, so a
repeat changes nothing) are retried with exponential backoff and jitter on connection errors,
timeouts, 429 and 5xx answers. A POST is sent exactly once: the seed documents no idempotency
keys, so a blind retry could make a second certificate. The provider instead makes creation
safe to repeat (see
:meth:`~certwidget.providers.commenda.provider.CommendaProvider.create_certificate`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn, TypeVar

import httpx

from certwidget.providers import retrying
from certwidget.providers.base import ApiError, AsyncClosing, Attachment, ProviderUnavailable
from certwidget.providers.commenda.models import (
    CommendaCustomer,
    CommendaFile,
    ExemptionCertificate,
    ExemptionCertificateCreate,
    unwrap,
)
from certwidget.providers.paths import segment
from certwidget.providers.pool import ReopeningPool

__all__ = [
    "BadRequest",
    "CommendaClient",
    "CommendaError",
    "CommendaUnavailable",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "MalformedResponse",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "TimedOut",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedCertificate",
    "UnsupportedMediaType",
    "error_from_response",
]

logger = logging.getLogger(__name__)

# -- errors -----------------------------------------------------------------------------------


class CommendaError(ApiError):
    """The Commenda API answered with an error (or could not be used at all).

    ``status`` is the HTTP status (``None`` when no answer arrived), ``code`` a machine code (the
    body's ``error``, snake_cased, or derived from the status), ``message`` the explanation.
    """


class BadRequest(CommendaError):
    """400: the request was malformed."""


class Unauthorized(CommendaError):
    """401: the API token is missing, wrong or expired."""


class Forbidden(CommendaError):
    """403: the token is valid but may not do this."""


class NotFound(CommendaError):
    """404: no such customer, file or certificate."""


class Conflict(CommendaError):
    """409: the resource already exists (e.g. a customer id that is taken)."""


class PayloadTooLarge(CommendaError):
    """413: the file is larger than the API accepts."""


class UnsupportedMediaType(CommendaError):
    """415: the file's type (or the body's content type) is not accepted."""


class UnprocessableEntity(CommendaError):
    """422: the body is well-formed but a field is invalid (unknown customer, jurisdiction...)."""


class UnsupportedCertificate(CommendaError):
    """A certificate Commenda cannot hold (reason, percentage, zone); raised before sending."""


class MalformedResponse(CommendaError):
    """A successful status whose body is not the promised ``{"data", "message"}`` envelope."""


class CommendaUnavailable(CommendaError, ProviderUnavailable):
    """The API could not be used right now; the same request may well work later."""


class ServerError(CommendaUnavailable):
    """5xx (or 429, "slow down"): the server failed or is overloaded."""


class ConnectionFailed(CommendaUnavailable):
    """No connection could be made, or it broke before an answer arrived."""


class TimedOut(CommendaUnavailable):
    """Connecting, sending, waiting for the answer, or for a pooled connection timed out."""


_ERRORS_BY_STATUS: Final[Mapping[int, type[CommendaError]]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: UnprocessableEntity,
    429: ServerError,
}

_SNIPPET: Final = 200


def _snake(text: str) -> str:
    return "_".join(text.lower().replace("-", " ").split())


def error_from_response(response: httpx.Response) -> CommendaError:
    """The typed error for a non-2xx answer.

    Reads ``{"message": "...", "error": "..."}`` (the sandbox's dialect; ``message`` may also be a
    list of strings, as NestJS-style validation answers it) and the nested
    ``{"error": {"code", "message"}}``; any other body still gives the right class, a code from
    the status and a message quoting the start of the body.
    """
    status = response.status_code
    code: str | None = None
    message: str | None = None
    try:
        data: object = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        raw_message = data.get("message")
        if isinstance(raw_message, str):
            message = raw_message
        elif isinstance(raw_message, list) and all(isinstance(m, str) for m in raw_message):
            message = "; ".join(raw_message)
        error = data.get("error")
        if isinstance(error, str) and error:
            code = _snake(error)
        elif isinstance(error, dict):
            if isinstance(error.get("code"), str):
                code = error["code"]
            if message is None and isinstance(error.get("message"), str):
                message = error["message"]
    if not message:
        reason = f"HTTP {status} {response.reason_phrase}".strip()
        text = " ".join(response.text[:_SNIPPET].split()) if response.content else ""
        message = f"{reason}: {text}" if text else reason
    cls = _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else CommendaError
    return cls(status, code or _snake(response.reason_phrase or "") or f"http_{status}", message)


def _error_from_exception(exc: httpx.HTTPError, method: str, url: str) -> CommendaError:
    if isinstance(exc, httpx.TimeoutException):
        return TimedOut(None, "timeout", f"{method} {url} timed out ({type(exc).__name__})")
    if isinstance(exc, httpx.DecodingError):
        return MalformedResponse(None, "malformed_response", f"{method} {url}: {exc}")
    if isinstance(exc, httpx.TransportError):
        detail = str(exc) or type(exc).__name__
        return ConnectionFailed(None, "connection_error", f"{method} {url} failed: {detail}")
    return CommendaError(None, "request_error", f"{method} {url} failed: {exc}")


# Retried on failure (see certwidget.providers.retrying).
# PATCH is not idempotent in general; here it only ever sets absolute values (file_id, status),
# so sending it twice leaves the certificate as sending it once does.
_IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})


_ModelT = TypeVar("_ModelT")


def _parse(response: httpx.Response, parse: Callable[[object], _ModelT]) -> _ModelT:
    """Decode a 2xx envelope with ``parse``; any surprise becomes :class:`MalformedResponse`."""
    try:
        body: object = response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        _malformed(response, "body is not JSON")
    try:
        return parse(unwrap(body))
    except (ValueError, TypeError) as exc:
        _malformed(response, str(exc))


def _malformed(response: httpx.Response, detail: str) -> NoReturn:
    request = response.request
    raise MalformedResponse(
        response.status_code,
        "malformed_response",
        f"malformed response to {request.method} {request.url.path}: {detail}",
    )


# -- the client -------------------------------------------------------------------------------


class CommendaClient(AsyncClosing):
    """An async client for the Commenda API: Bearer auth, one pooled connection set.

    ``base_url`` includes the version prefix (``https://<host>/api/v1``). ``timeout`` is seconds
    (or an :class:`httpx.Timeout`); ``retries`` is how many further attempts an idempotent call
    gets, waiting about ``backoff * 2**n`` seconds (with jitter) before attempt ``n + 1``;
    ``transport`` replaces the network (``httpx.ASGITransport`` for an in-process app,
    ``httpx.MockTransport`` in tests)::

        client = CommendaClient("https://api.commenda.io/api/v1", token="sk_...")
        try:
            customer = await client.get_customer(customer_id)
        finally:
            await client.aclose()
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        timeout: float | httpx.Timeout = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise ValueError("base_url is required, e.g. 'https://api.commenda.io/api/v1'")
        if not token:
            raise ValueError("token is required: Commenda authenticates with a Bearer token")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if backoff < 0:
            raise ValueError("backoff must be >= 0")
        self._authorization = f"Bearer {token}"
        self._retries = retries
        self._backoff = backoff
        self._http = ReopeningPool(
            base_url=base_url,
            headers={"Accept": "application/json", "User-Agent": "certwidget"},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    @property
    def base_url(self) -> httpx.URL:
        return self._http.base_url

    @property
    def is_closed(self) -> bool:
        return self._http.is_closed

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- customers ---------------------------------------------------------------------------

    async def get_customer(self, customer_id: str) -> CommendaCustomer:
        """``GET /customers/{id}`` (the seed): the customer with its exemption certificates."""
        path = f"/customers/{segment(customer_id, 'customer_id')}"
        return _parse(await self._request("GET", path), CommendaCustomer.from_json)

    async def create_customer(self, *, name: str, id: str | None = None) -> CommendaCustomer:
        """``POST /customers`` with the seed customer's own fields (inferred; sent once).

        ``id`` asks for that id (the provider derives a stable one from the shop's customer
        code); without it the server assigns one.
        """
        body = CommendaCustomer(id=id or "", name=name).to_json()
        if not id:
            body.pop("id", None)
        response = await self._request("POST", "/customers", json=body)
        return _parse(response, CommendaCustomer.from_json)

    # -- files -------------------------------------------------------------------------------

    async def upload_file(self, content: bytes, filename: str, media_type: str) -> CommendaFile:
        """``POST /files``: upload a certificate document (multipart field ``file``); sent once."""
        files = {"file": (filename, content, media_type)}
        response = await self._request("POST", "/files", files=files)
        return _parse(response, CommendaFile.from_json)

    async def get_file(self, file_id: str) -> Attachment:
        """``GET /files/{id}``: the document's bytes and media type (inferred)."""
        path = f"/files/{segment(file_id, 'file_id')}"
        response = await self._request("GET", path, accept="application/pdf, image/*, */*")
        return Attachment.from_body(response.content, response.headers.get("content-type", ""))

    # -- exemption certificates --------------------------------------------------------------

    async def create_exemption_certificate(
        self, request: ExemptionCertificateCreate, *, idempotency_key: str | None = None
    ) -> ExemptionCertificate:
        """``POST /exemption-certificates`` (the published flow); sent exactly once.

        ``idempotency_key`` goes out as an ``Idempotency-Key`` header: the sandbox answers a
        repeat with the certificate it already made; the seed does not say that Commenda does,
        so the key never makes this call retried.
        """
        response = await self._request(
            "POST",
            "/exemption-certificates",
            json=request.to_json(),
            idempotency_key=idempotency_key,
        )
        return _parse(response, ExemptionCertificate.from_json)

    async def get_exemption_certificate(self, certificate_id: str) -> ExemptionCertificate:
        """``GET /exemption-certificates/{id}`` (inferred)."""
        path = f"/exemption-certificates/{segment(certificate_id, 'certificate_id')}"
        return _parse(await self._request("GET", path), ExemptionCertificate.from_json)

    async def update_exemption_certificate(
        self,
        certificate_id: str,
        *,
        file_id: str | None = None,
        status: str | None = None,
        verification_status: str | None = None,
        expiring_at: dt.date | None = None,
    ) -> ExemptionCertificate:
        """``PATCH /exemption-certificates/{id}`` (inferred): set the given fields only.

        ``file_id`` links an uploaded document. ``status`` and ``verification_status`` are what
        Commenda's reviewers set; the sandbox accepts them so tests and demos can play reviewer.
        """
        body: dict[str, Any] = {
            key: value
            for key, value in (
                ("file_id", file_id),
                ("status", status),
                ("verification_status", verification_status),
                ("expiring_at", None if expiring_at is None else expiring_at.isoformat()),
            )
            if value is not None
        }
        if not body:
            raise ValueError("nothing to update: give file_id, status, verification_status...")
        path = f"/exemption-certificates/{segment(certificate_id, 'certificate_id')}"
        response = await self._request("PATCH", path, json=body)
        return _parse(response, ExemptionCertificate.from_json)

    # -- the one place requests are sent -----------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
        idempotency_key: str | None = None,
        accept: str | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": self._authorization}
        if idempotency_key is not None:
            if not idempotency_key:
                raise ValueError("idempotency_key must not be empty (pass None for none)")
            headers["Idempotency-Key"] = idempotency_key
        if accept is not None:
            headers["Accept"] = accept
        attempts = 1 + (self._retries if method in _IDEMPOTENT_METHODS else 0)

        return await retrying.send(
            lambda: self._http.client.request(
                method, path, json=json, files=files, headers=headers
            ),
            attempts=attempts,
            backoff=self._backoff,
            retry_status=lambda status: status >= 500 or status == 429,
            label=f"Commenda {method} {path}",
            error_from_exception=lambda exc: _error_from_exception(exc, method, path),
            error_from_response=error_from_response,
        )
