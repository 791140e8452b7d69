"""The sandbox's HTTP API: the 15 CertCapture operations under ``/v2``, plus the served spec,
and the Commenda dialect mounted at ``/api/v1``.

Endpoints only authenticate, check scope, validate and shape answers; the data lives in
:class:`~certwidget.sandbox.store.SandboxStore`, called in a worker thread.

    >>> app = create_app(db_path="sandbox.sqlite3")  # doctest: +SKIP
    >>> uvicorn.run(app, port=8765)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from anyio import to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount

from certwidget.sandbox.auth import Credentials, Principal, authenticate
from certwidget.sandbox.commenda import PREFIX as COMMENDA_PREFIX
from certwidget.sandbox.commenda import create_commenda_app
from certwidget.sandbox.errors import (
    ApiError,
    bad_request,
    forbidden,
    handle_api_error,
    handle_http_exception,
    handle_unexpected,
    not_found,
    unauthorized,
)
from certwidget.sandbox.routing import EncodedSegments, path_param, route
from certwidget.sandbox.store import (
    CUSTOMER_FIELDS,
    CertificateFields,
    CustomerKey,
    Idempotency,
    SandboxStore,
    iso_datetime,
)
from certwidget.sandbox.uploads import attachment_response, read_upload
from certwidget.sandbox.validation import (
    CERTIFICATE_STATUSES,
    Page,
    customer_code,
    optional_string,
    parse_attributes,
    parse_date,
    parse_optional_int,
    parse_percentage,
    parse_reason,
    parse_zone,
    read_json_object,
    required_string,
    status_filter,
)

T = TypeVar("T")

SPEC_PATH = Path(__file__).with_name("openapi.yml")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _fingerprint(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _listing(total: int, items: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"totalCount": total, "value": items})


def _customer_key(request: Request) -> CustomerKey:
    """What ``{customerId}`` in the path is: the id (the default) or, with
    ``?by=customerCode``, the customer code. Never a guess between the two: a shop's customer
    number "1" must not reach the customer whose id is 1."""
    by = request.query_params.get("by", "id")
    if by == "id":
        return "id"
    if by == "customerCode":
        return "customerCode"
    raise bad_request(f"by must be id or customerCode, got {by[:40]!r}")


def _customer_ref(request: Request) -> tuple[str, CustomerKey]:
    return path_param(request, "customerId"), _customer_key(request)


def _no_customer(ref: str, by: CustomerKey) -> ApiError:
    if by == "customerCode":
        return not_found(f"There is no customer with customerCode {ref!r}")
    return not_found(
        f"There is no customer with id {ref!r}; to address a customer by its customerCode, "
        "add ?by=customerCode"
    )


class _SandboxApi:
    """The endpoint functions, sharing the store, the credentials and the token lifetime."""

    def __init__(self, store: SandboxStore, credentials: Credentials, token_ttl: int) -> None:
        self.store = store
        self.credentials = credentials
        self.token_ttl = token_ttl
        self.spec = SPEC_PATH.read_bytes()

    async def _db(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # SQLite calls block; run them in a worker thread so the event loop keeps serving.
        return await to_thread.run_sync(functools.partial(call, *args, **kwargs))

    async def _caller(self, request: Request) -> Principal:
        return await authenticate(request, self.credentials, self.store)

    def _idempotency(
        self, request: Request, caller: Principal, body: dict[str, Any]
    ) -> Idempotency | None:
        key = request.headers.get("idempotency-key")
        if key is None:
            return None
        if not _IDEMPOTENCY_KEY.fullmatch(key):
            raise bad_request(
                "Idempotency-Key must be 1 to 255 visible ASCII characters "
                "(a UUID is a good choice)"
            )
        return Idempotency(scope=caller.scope, key=key, fingerprint=_fingerprint(body))

    async def _own_customer(self, caller: Principal, request: Request) -> dict[str, Any]:
        """The customer the path names (by id, or by code with ``?by=customerCode``), if the
        caller may see it."""
        ref, by = _customer_ref(request)
        customer = await self._db(self.store.find_customer, ref, by=by)
        if not caller.may_act_for(customer["id"] if customer else None):
            # An ecommerce token learns nothing about other customers, not even whether they exist.
            raise forbidden("An ecommerce token may only read its own customer")
        if customer is None:
            raise _no_customer(ref, by)
        return customer

    async def _own_certificate(self, caller: Principal, ref: str) -> dict[str, Any]:
        certificate = await self._db(self.store.get_certificate, ref)
        owner = (certificate or {}).get("customer", {}).get("id")
        if not caller.may_act_for(owner):
            raise forbidden("An ecommerce token may only use its own customer's certificates")
        if certificate is None:
            raise not_found(f"There is no certificate with id {ref!r}")
        return certificate

    # -- the spec ------------------------------------------------------------------------------

    async def openapi(self, request: Request) -> Response:
        return Response(self.spec, media_type="application/yaml")

    # -- authentication ------------------------------------------------------------------------

    async def auth_token(self, request: Request) -> Response:
        body = await read_json_object(request)
        username = optional_string(body, "username")
        password = optional_string(body, "password")
        if username is None or password is None:
            raise bad_request("username and password are both required")
        if not self.credentials.check(username, password):
            raise unauthorized("The username or password is wrong")
        token, expires = await self._db(self.store.issue_token, "full", username, self.token_ttl)
        return JSONResponse({"token": token, "expiresAt": iso_datetime(expires)})

    async def ecommerce_token(self, request: Request) -> Response:
        caller = await self._caller(request)
        caller.require_full("mint ecommerce tokens")
        body = await read_json_object(request)
        code = required_string(body, "customerCode")
        parse_optional_int(body, "companyId")  # accepted for compatibility; one company here
        customer = await self._db(self.store.find_customer, code, by="customerCode")
        if customer is None:
            raise not_found(
                f"There is no customer with customerCode {code!r}; "
                "create it first with POST /v2/customers"
            )
        token, expires = await self._db(
            self.store.issue_token, "ecommerce", customer["id"], self.token_ttl
        )
        return JSONResponse({"token": token, "expiresAt": iso_datetime(expires)})

    # -- certificates --------------------------------------------------------------------------

    async def list_certificates(self, request: Request) -> Response:
        caller = await self._caller(request)
        page, status = Page(request), status_filter(request)
        by_id = request.query_params.get("customerId")
        by_code = request.query_params.get("customerCode")
        if by_id is not None and by_code is not None:
            raise bad_request("give customerId (the customer's id) or customerCode, not both")
        ref = by_code if by_code is not None else by_id
        by: CustomerKey = "customerCode" if by_code is not None else "id"
        customer_id: int | None = None
        if ref is None:
            caller.require_full(
                "list all certificates; add customerCode=<its customer code> to list its own"
            )
        else:
            customer = await self._db(self.store.find_customer, ref, by=by)
            if not caller.may_act_for(customer["id"] if customer else None):
                raise forbidden("An ecommerce token may only list its own customer's certificates")
            if customer is None:
                # A filter that matches no customer matches no certificate.
                return _listing(0, [])
            customer_id = int(customer["id"])
        total, items = await self._db(
            self.store.list_certificates,
            status=status,
            customer_id=customer_id,
            limit=page.size,
            offset=page.offset,
        )
        return _listing(total, items)

    async def _certificate_fields(
        self, caller: Principal, body: dict[str, Any], *, update: bool
    ) -> CertificateFields:
        reason = parse_reason(body, "exemptionReason")
        zone = parse_zone(body, "exposureZone")
        number = optional_string(body, "exemptionNumber")
        signed = parse_date(body, "signedDate")
        expires = parse_date(body, "expirationDate")
        percentage = parse_percentage(body, "exemptPercentage")
        attributes = parse_attributes(body)
        status = optional_string(body, "status") if update else None
        if status is not None and status not in CERTIFICATE_STATUSES:
            allowed = ", ".join(CERTIFICATE_STATUSES)
            raise bad_request(f"status must be one of {allowed}, got {status!r}")
        code = optional_string(body, "customerCode")
        customer_id: int | None = None
        if code is not None:
            customer = await self._db(self.store.find_customer, code, by="customerCode")
            if not caller.may_act_for(customer["id"] if customer else None):
                raise forbidden(
                    "An ecommerce token may only create certificates for its own customer"
                )
            if customer is None:
                raise bad_request(
                    f"customerCode {code!r} does not match any customer; "
                    "create the customer first with POST /v2/customers"
                )
            customer_id = int(customer["id"])
        elif caller.kind != "full":
            customer_id = int(caller.subject)
        return CertificateFields(
            exemption_reason=reason,
            exposure_zone=zone,
            exemption_number=number,
            signed_date=signed,
            expiration_date=expires,
            exempt_percentage=100.0 if percentage is None else percentage,
            customer_id=customer_id,
            attributes=attributes,
            status=status,
        )

    async def create_certificate(self, request: Request) -> Response:
        caller = await self._caller(request)
        body = await read_json_object(request)
        idempotency = self._idempotency(request, caller, body)
        fields = await self._certificate_fields(caller, body, update=False)
        certificate = await self._db(self.store.create_certificate, fields, idempotency=idempotency)
        return JSONResponse(certificate, status_code=201)

    async def get_certificate(self, request: Request) -> Response:
        caller = await self._caller(request)
        ref = path_param(request, "certificateId")
        return JSONResponse(await self._own_certificate(caller, ref))

    async def update_certificate(self, request: Request) -> Response:
        caller = await self._caller(request)
        caller.require_full("update certificates")
        body = await read_json_object(request)
        fields = await self._certificate_fields(caller, body, update=True)
        ref = path_param(request, "certificateId")
        certificate = await self._db(self.store.update_certificate, ref, fields)
        if certificate is None:
            raise not_found(f"There is no certificate with id {ref!r}")
        return JSONResponse(certificate)

    async def delete_certificate(self, request: Request) -> Response:
        caller = await self._caller(request)
        caller.require_full("delete certificates")
        ref = path_param(request, "certificateId")
        if not await self._db(self.store.delete_certificate, ref):
            raise not_found(f"There is no certificate with id {ref!r}")
        return Response(status_code=204)

    async def get_attachment(self, request: Request) -> Response:
        caller = await self._caller(request)
        ref = path_param(request, "certificateId")
        await self._own_certificate(caller, ref)
        attachment = await self._db(self.store.get_attachment, ref)
        if attachment is None:
            raise not_found(
                f"Certificate {ref!r} has no attachment; "
                f"upload one with POST /v2/certificates/{ref}/attachment"
            )
        return attachment_response(attachment)

    async def upload_attachment(self, request: Request) -> Response:
        caller = await self._caller(request)
        ref = path_param(request, "certificateId")
        # Scope and existence first: a refused upload should not cost reading 10 MB.
        await self._own_certificate(caller, ref)
        attachment = await read_upload(request)
        stored = await self._db(self.store.put_attachment, ref, attachment)
        if stored is None:
            raise not_found(f"There is no certificate with id {ref!r}")
        return JSONResponse(stored)

    # -- customers -----------------------------------------------------------------------------

    @staticmethod
    def _customer_fields(body: dict[str, Any], *, create: bool) -> dict[str, str | None]:
        fields = {name: optional_string(body, name) for name in CUSTOMER_FIELDS}
        optional_string(body, "id")  # read-only: type-checked like the rest, then ignored
        if create or "customerCode" in body:
            fields["customerCode"] = customer_code(body, "customerCode")
        return fields

    async def list_customers(self, request: Request) -> Response:
        caller = await self._caller(request)
        caller.require_full("list customers")
        page = Page(request)
        total, items = await self._db(
            self.store.list_customers, limit=page.size, offset=page.offset
        )
        return _listing(total, items)

    async def create_customer(self, request: Request) -> Response:
        caller = await self._caller(request)
        caller.require_full("create customers")
        body = await read_json_object(request)
        idempotency = self._idempotency(request, caller, body)
        fields = self._customer_fields(body, create=True)
        customer = await self._db(self.store.create_customer, fields, idempotency=idempotency)
        return JSONResponse(customer, status_code=201)

    async def get_customer(self, request: Request) -> Response:
        caller = await self._caller(request)
        return JSONResponse(await self._own_customer(caller, request))

    async def update_customer(self, request: Request) -> Response:
        caller = await self._caller(request)
        caller.require_full("update customers")
        body = await read_json_object(request)
        fields = self._customer_fields(body, create=False)
        ref, by = _customer_ref(request)
        customer = await self._db(self.store.update_customer, ref, fields, by=by)
        if customer is None:
            raise _no_customer(ref, by)
        return JSONResponse(customer)

    async def customer_certificates(self, request: Request) -> Response:
        caller = await self._caller(request)
        page, status = Page(request), status_filter(request)
        customer = await self._own_customer(caller, request)
        total, items = await self._db(
            self.store.list_certificates,
            status=status,
            customer_id=int(customer["id"]),
            limit=page.size,
            offset=page.offset,
        )
        return _listing(total, items)

    # -- attributes ----------------------------------------------------------------------------

    async def list_attributes(self, request: Request) -> Response:
        caller = await self._caller(request)
        caller.require_full("list attributes")
        return JSONResponse(await self._db(self.store.list_attributes))


def create_app(
    *,
    db_path: str | os.PathLike[str],
    username: str = "sandbox",
    password: str = "sandbox",  # noqa: S107 - the sandbox's documented default login
    token_ttl: int = 3600,
    commenda_token: str | None = None,
) -> Starlette:
    """The sandbox as an ASGI app, its data in the SQLite file ``db_path``.

    ``app.state.store`` is the :class:`SandboxStore`, for tests and demos that seed data.
    The Commenda dialect (:mod:`certwidget.sandbox.commenda`) is mounted at ``/api/v1`` over
    the same store; it takes Bearer tokens from ``/v2/auth/token`` and ``commenda_token``.

        >>> app = create_app(db_path=tmp_path / "sandbox.sqlite3")  # doctest: +SKIP
        >>> uvicorn.run(app, port=8765)  # doctest: +SKIP
    """
    if token_ttl < 1:
        raise ValueError(f"token_ttl must be at least 1 second, got {token_ttl}")
    store = SandboxStore(db_path)
    api = _SandboxApi(store, Credentials(username, password), token_ttl)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    routes = [
        route("/v2/openapi.yml", GET=api.openapi),
        route("/v2/certificates", GET=api.list_certificates, POST=api.create_certificate),
        route(
            "/v2/certificates/{certificateId}",
            GET=api.get_certificate,
            PUT=api.update_certificate,
            DELETE=api.delete_certificate,
        ),
        route(
            "/v2/certificates/{certificateId}/attachment",
            GET=api.get_attachment,
            POST=api.upload_attachment,
        ),
        route("/v2/customers", GET=api.list_customers, POST=api.create_customer),
        route("/v2/customers/{customerId}", GET=api.get_customer, PUT=api.update_customer),
        route("/v2/customers/{customerId}/certificates", GET=api.customer_certificates),
        route("/v2/attributes", GET=api.list_attributes),
        route("/v2/auth/token", POST=api.auth_token),
        route("/v2/ecommerce/token", POST=api.ecommerce_token),
        Mount(COMMENDA_PREFIX, app=create_commenda_app(store, api_token=commenda_token)),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        # Before routing: a customer code with "/" (sent as %2F) stays one path segment.
        middleware=[Middleware(EncodedSegments)],
        exception_handlers={
            ApiError: handle_api_error,
            HTTPException: handle_http_exception,
            Exception: handle_unexpected,
        },
    )
    # "/v2/certificates/" is a 404, not a redirect a client would have to follow.
    app.router.redirect_slashes = False
    app.state.store = store
    return app
