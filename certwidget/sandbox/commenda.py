"""The sandbox's Commenda dialect: customers, files and exemption certificates under ``/api/v1``.

It serves the API of ``shared/specs/commenda-customers.txt`` over the same store as the
CertCapture dialect, so a certificate made through one is visible through the other:

- A Commenda customer ``id`` is the sandbox customer's ``customerCode``.
- A certificate's ``jurisdiction`` is its ``exposureZone``, ``issued_at``/``expiring_at`` its
  ``signedDate``/``expirationDate``; ``type`` maps to the SST reason by
  :data:`~certwidget.providers.commenda.models.TYPE_BY_REASON`. A CertCapture certificate whose
  reason has no Commenda type is not shown here.
- ``status``/``verification_status``, as the seed shows a certificate awaiting review: Pending
  is INVALID + PENDING_VERIFICATION (where new certificates start, as in the seed's example:
  "every exemption certificate needs to be validated by Commenda before they can be used"),
  Active is VALID + VERIFICATION_COMPLETED (approved), Revoked is INVALID +
  VERIFICATION_COMPLETED (rejected or revoked). A PATCH that would leave VALID +
  PENDING_VERIFICATION is refused (422): the store has no such state, and a reviewer either
  approves (both fields) or rejects. A certificate past its date keeps the status its reviewer
  gave it; its ``expiring_at`` says it lapsed (the store's date-derived ``Expired`` is not a
  verdict).
- A file linked to a certificate is also its CertCapture attachment.

Answers are the envelope ``{"data": ..., "message": "..."}``; errors are
``{"message": "<sentence>", "error": "<machine code>"}``. Authentication is
``Authorization: Bearer <token>`` with the configured API token or a token from
``POST /v2/auth/token``; a widget (ecommerce) token is refused (403).

Beyond the seed (inferred, and documented in the README): ``POST /customers``, ``POST /files``,
``GET /files/{id}``, ``POST``/``GET``/``PATCH /exemption-certificates[/{id}]``; the sandbox
honours an ``Idempotency-Key`` on ``POST /exemption-certificates``, and its PATCH also takes
``status`` and ``verification_status`` so tests and demos can play Commenda's reviewer.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from anyio import to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from certwidget.domain import catalog
from certwidget.providers.commenda.models import COUNTRY_US, REASON_BY_TYPE, TYPE_BY_REASON
from certwidget.sandbox.auth import Principal
from certwidget.sandbox.errors import ApiError
from certwidget.sandbox.routing import path_param, route
from certwidget.sandbox.store import CertificateFields, Idempotency, SandboxStore
from certwidget.sandbox.uploads import attachment_response, read_upload
from certwidget.sandbox.validation import read_json_object, strict_date

T = TypeVar("T")

#: Where the dialect is mounted in the sandbox app.
PREFIX: Final = "/api/v1"
#: The one corporation of the sandbox (the seed's customers carry a ``corporation_id``).
CORPORATION_ID: Final = str(uuid.uuid5(uuid.NAMESPACE_URL, "certwidget-sandbox-corporation"))

_BEARER_CHALLENGE: Final = 'Bearer realm="certwidget-sandbox"'
_HOW: Final = (
    "send Authorization: Bearer <token>, with the sandbox's Commenda API token or a token "
    "from POST /v2/auth/token"
)
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x21-\x7e]{1,255}")
_CUSTOMER_ID: Final = re.compile(r"[\x21-\x7e]{1,255}")
_CREATE_OPERATION: Final = "commenda:createExemptionCertificate"
_PAGE: Final = 1000

# The store's status <-> Commenda's (status, verification_status).
_TO_COMMENDA: Final[Mapping[str, tuple[str, str]]] = {
    "Active": ("VALID", "VERIFICATION_COMPLETED"),
    "Pending": ("INVALID", "PENDING_VERIFICATION"),
    "Expired": ("VALID", "VERIFICATION_COMPLETED"),
    "Revoked": ("INVALID", "VERIFICATION_COMPLETED"),
}
_STATUSES: Final = ("VALID", "INVALID")
_VERIFICATION: Final = ("PENDING_VERIFICATION", "VERIFICATION_COMPLETED")


def _store_status(status: str, verification: str) -> str:
    if verification == "PENDING_VERIFICATION":
        if status == "VALID":
            raise _invalid(
                "status VALID needs verification_status VERIFICATION_COMPLETED: Commenda "
                "verifies a certificate before it may be used, so one awaiting verification is "
                "INVALID here; send both VALID and VERIFICATION_COMPLETED to approve it"
            )
        return "Pending"
    return "Active" if status == "VALID" else "Revoked"


def _unix(timestamp: str) -> int:
    return int(dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def _invalid(message: str) -> ApiError:
    return ApiError(422, "validation_error", message)


def _envelope(data: Any, message: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"data": data, "message": message}, status_code=status)


# -- reading request bodies -------------------------------------------------------------------


def _string(body: Mapping[str, Any], field: str, *, required: bool) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise _invalid(f"{field} is required")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise _invalid(f"{field} must be a non-empty string")
    return value


def _date(body: Mapping[str, Any], field: str, *, required: bool) -> dt.date | None:
    value = _string(body, field, required=required)
    if value is None:
        return None
    date = strict_date(value)
    if date is None:
        raise _invalid(f"{field} must be an ISO 8601 date (YYYY-MM-DD), got {value[:40]!r}")
    return date


def _choice(body: Mapping[str, Any], field: str, allowed: tuple[str, ...]) -> str | None:
    value = _string(body, field, required=False)
    if value is not None and value not in allowed:
        raise _invalid(f"{field} must be one of {', '.join(allowed)}, got {value[:40]!r}")
    return value


def _jurisdiction(body: Mapping[str, Any]) -> str:
    value = _string(body, "jurisdiction", required=True)
    assert value is not None
    code = value.strip().upper()
    if code in (catalog.SST, catalog.MTC):
        return code
    try:
        return catalog.zone(code).code
    except catalog.UnknownZone:
        raise _invalid(
            f"jurisdiction must be a 2-letter US state code, SST or MTC, got {value[:40]!r}"
        ) from None


class _CommendaApi:
    def __init__(self, store: SandboxStore, api_token: str | None) -> None:
        self.store = store
        self._api_token = api_token

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # SQLite calls block; run them in a worker thread so the event loop keeps serving.
        return await to_thread.run_sync(functools.partial(call, *args, **kwargs))

    async def _caller(self, request: Request) -> Principal:
        scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise ApiError(
                401,
                "unauthorized",
                f"Authentication is required: {_HOW}",
                headers={"WWW-Authenticate": _BEARER_CHALLENGE},
            )
        if self._api_token is not None and secrets.compare_digest(
            value.encode(), self._api_token.encode()
        ):
            return Principal("full", "commenda")
        grant = await self._db(self.store.lookup_token, value)
        if grant is None:
            raise ApiError(
                401,
                "unauthorized",
                f"The Bearer token is unknown or has expired: {_HOW}",
                headers={"WWW-Authenticate": _BEARER_CHALLENGE},
            )
        if grant.kind != "full":
            raise ApiError(
                403, "forbidden", "A widget (ecommerce) token cannot use the Commenda API"
            )
        return Principal(grant.kind, grant.subject)

    # -- shaping records -----------------------------------------------------------------------

    def _certificate(
        self, cert: Mapping[str, Any], details: tuple[str, str | None] | None
    ) -> dict[str, Any] | None:
        """A store certificate in Commenda's shape, or None when Commenda has no type for it.

        ``details`` is the stored status and linked file (:meth:`SandboxStore.stored_details`):
        a lapsed certificate keeps the status a reviewer gave it; ``expiring_at`` says it lapsed.
        """
        kind = TYPE_BY_REASON.get(str(cert["exemptionReason"]).strip().upper())
        if kind is None:
            return None
        stored, file_id = details or (cert["status"], None)
        status, verification = _TO_COMMENDA.get(stored, ("INVALID", "PENDING_VERIFICATION"))
        customer = cert.get("customer") or {}
        return {
            "id": cert["id"],
            "expiring_at": cert.get("expirationDate"),
            # Commenda certificates always have an issue date; a CertCapture one may not.
            "issued_at": cert.get("signedDate") or cert["createdDate"][:10],
            "country": COUNTRY_US,
            "jurisdiction": cert["exposureZone"],
            "status": status,
            "verification_status": verification,
            "type": kind,
            "customer_id": customer.get("customerCode"),
            "file_id": file_id,
            "created_at": _unix(cert["createdDate"]),
        }

    async def _one_certificate(self, cert: Mapping[str, Any]) -> dict[str, Any]:
        details = await self._db(self.store.stored_details, [cert["id"]])
        shaped = self._certificate(cert, details.get(cert["id"]))
        if shaped is None:
            raise ApiError(
                404,
                "not_found",
                f"Exemption certificate {cert['id']!r} has a reason with no Commenda type "
                f"(Commenda knows {', '.join(REASON_BY_TYPE)})",
            )
        return shaped

    async def _customer(self, code: str) -> dict[str, Any] | None:
        customer = await self._db(self.store.find_customer, code, by="customerCode")
        if customer is None:
            return None
        created = await self._db(self.store.customer_created, code)
        certificates: list[dict[str, Any]] = []
        offset = 0
        while True:
            total, page = await self._db(
                self.store.list_certificates,
                customer_id=int(customer["id"]),
                limit=_PAGE,
                offset=offset,
            )
            certificates += page
            offset += _PAGE
            if offset >= total:
                break
        details = await self._db(self.store.stored_details, [c["id"] for c in certificates])
        shaped = (self._certificate(c, details.get(c["id"])) for c in certificates)
        return {
            "id": customer["customerCode"],
            "corporation_id": CORPORATION_ID,
            "name": customer.get("name", ""),
            "created_at": _unix(created) if created else None,
            "exemption_certificates": [c for c in shaped if c is not None],
        }

    async def _existing_certificate(self, ref: str) -> dict[str, Any]:
        cert = await self._db(self.store.get_certificate, ref)
        if cert is None:
            raise ApiError(404, "not_found", f"There is no exemption certificate with id {ref!r}")
        return cert

    # -- customers -----------------------------------------------------------------------------

    async def get_customer(self, request: Request) -> Response:
        await self._caller(request)
        ref = path_param(request, "id")
        customer = await self._customer(ref)
        if customer is None:
            raise ApiError(404, "not_found", f"There is no customer with id {ref!r}")
        return _envelope(customer, "Successfully fetched customer.")

    async def create_customer(self, request: Request) -> Response:
        await self._caller(request)
        body = await read_json_object(request)
        name = _string(body, "name", required=True)
        code = _string(body, "id", required=False) or str(uuid.uuid4())
        if not _CUSTOMER_ID.fullmatch(code):
            raise _invalid("id must be 1 to 255 visible ASCII characters (a UUID is usual)")
        if await self._db(self.store.find_customer, code, by="customerCode") is not None:
            raise ApiError(409, "conflict", f"A customer with id {code!r} already exists")
        await self._db(self.store.create_customer, {"customerCode": code, "name": name})
        customer = await self._customer(code)
        return _envelope(customer, "Successfully created customer.", 201)

    # -- files ---------------------------------------------------------------------------------

    async def upload_file(self, request: Request) -> Response:
        await self._caller(request)
        stored = await self._db(self.store.create_file, await read_upload(request))
        data = {
            "id": stored["id"],
            "file_name": stored["fileName"],
            "content_type": stored["mediaType"],
            "size": stored["size"],
            "created_at": _unix(stored["uploadedDate"]),
        }
        return _envelope(data, "Successfully uploaded file.", 201)

    async def get_file(self, request: Request) -> Response:
        await self._caller(request)
        ref = path_param(request, "id")
        stored = await self._db(self.store.get_file, ref)
        if stored is None:
            raise ApiError(404, "not_found", f"There is no file with id {ref!r}")
        return attachment_response(stored)

    # -- exemption certificates ----------------------------------------------------------------

    async def create_certificate(self, request: Request) -> Response:
        caller = await self._caller(request)
        body = await read_json_object(request)
        idempotency = self._idempotency(request, caller, body)
        issued = _date(body, "issued_at", required=True)
        expires = _date(body, "expiring_at", required=False)
        if issued and expires and expires < issued:
            raise _invalid("expiring_at must not be before issued_at")
        country = _string(body, "country", required=True)
        if country != COUNTRY_US:
            raise _invalid(f"country must be {COUNTRY_US!r}: the sandbox holds US certificates")
        jurisdiction = _jurisdiction(body)
        kind = _choice(body, "type", tuple(REASON_BY_TYPE))
        if kind is None:
            raise _invalid(f"type is required: one of {', '.join(REASON_BY_TYPE)}")
        code = _string(body, "customer_id", required=True)
        assert code is not None
        customer = await self._db(self.store.find_customer, code, by="customerCode")
        if customer is None:
            raise _invalid(
                f"customer_id {code!r} does not match any customer; "
                f"create it first with POST {PREFIX}/customers"
            )
        file_id = _string(body, "file_id", required=False)
        fields = CertificateFields(
            exemption_reason=REASON_BY_TYPE[kind],
            exposure_zone=jurisdiction,
            signed_date=issued,
            expiration_date=expires,
            customer_id=int(customer["id"]),
        )
        cert = await self._db(
            self.store.create_certificate_with_file,
            fields,
            file_id,
            operation=_CREATE_OPERATION,
            idempotency=idempotency,
        )
        shaped = await self._one_certificate(cert)
        return _envelope(shaped, "Successfully created exemption certificate.", 201)

    def _idempotency(
        self, request: Request, caller: Principal, body: dict[str, Any]
    ) -> Idempotency | None:
        key = request.headers.get("idempotency-key")
        if key is None:
            return None
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise ApiError(
                400, "invalid_request", "Idempotency-Key must be 1 to 255 visible ASCII characters"
            )
        fingerprint = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return Idempotency(scope=caller.scope, key=key, fingerprint=fingerprint)

    async def get_certificate(self, request: Request) -> Response:
        await self._caller(request)
        cert = await self._existing_certificate(path_param(request, "id"))
        return _envelope(await self._one_certificate(cert), "Successfully fetched certificate.")

    async def update_certificate(self, request: Request) -> Response:
        await self._caller(request)
        body = await read_json_object(request)
        known = {"file_id", "status", "verification_status", "expiring_at"}
        unknown = sorted(set(body) - known)
        if unknown:
            raise _invalid(
                f"cannot update {', '.join(unknown)}; send only {', '.join(sorted(known))}"
            )
        if not body:
            raise _invalid(f"send at least one of {', '.join(sorted(known))}")
        ref = path_param(request, "id")
        current = await self._existing_certificate(ref)
        shown = await self._one_certificate(current)  # 404 if Commenda cannot show it
        changes: dict[str, str | None] = {}
        status = _choice(body, "status", _STATUSES)
        verification = _choice(body, "verification_status", _VERIFICATION)
        if status is not None or verification is not None:
            now_status, now_verification = shown["status"], shown["verification_status"]
            changes["status"] = _store_status(
                status or now_status, verification or now_verification
            )
        if "expiring_at" in body:
            expires = _date(body, "expiring_at", required=False)
            changes["expirationDate"] = None if expires is None else expires.isoformat()
        file_id = _string(body, "file_id", required=False)
        updated = await self._db(self.store.patch_certificate, ref, changes, file_id=file_id)
        if updated is None:
            raise ApiError(404, "not_found", f"There is no exemption certificate with id {ref!r}")
        shaped = await self._one_certificate(updated)
        return _envelope(shaped, "Successfully updated exemption certificate.")


# -- errors in this dialect's shape -----------------------------------------------------------


def _error(status: int, code: str, message: str, headers: Mapping[str, str] | None) -> Response:
    return JSONResponse({"message": message, "error": code}, status_code=status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    # As in the other dialect: a 413 may come before the whole body was read.
    headers = {**exc.headers, "Connection": "close"} if exc.status == 413 else exc.headers
    return _error(exc.status, exc.code, exc.message, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, "not_found", f"There is no {request.url.path} in the API", exc.headers)
    if exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        return _error(405, "method_not_allowed", message, exc.headers)
    return _error(exc.status_code, "http_error", str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    return _error(500, "internal_error", "The sandbox failed; see its log for the cause", None)


def create_commenda_app(store: SandboxStore, *, api_token: str | None = None) -> Starlette:
    """The Commenda dialect over ``store``, to mount at :data:`PREFIX`.

    ``api_token`` is a fixed Bearer token this dialect accepts besides the sandbox's own tokens
    from ``POST /v2/auth/token``.
    """
    api = _CommendaApi(store, api_token)
    app = Starlette(
        routes=[
            route("/customers", POST=api.create_customer),
            route("/customers/{id}", GET=api.get_customer),
            route("/files", POST=api.upload_file),
            route("/files/{id}", GET=api.get_file),
            route("/exemption-certificates", POST=api.create_certificate),
            route(
                "/exemption-certificates/{id}",
                GET=api.get_certificate,
                PATCH=api.update_certificate,
            ),
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
    )
    app.router.redirect_slashes = False
    return app
