"""The widget's HTTP endpoints under the middleware's prefix (see docs/protocol.md).

Only requests under the prefix get here, so the shop's own routes pay nothing for them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from certwidget.domain import catalog
from certwidget.providers.base import ProviderError, ProviderToken
from certwidget.web.account import Account
from certwidget.web.admin import AdminPages
from certwidget.web.assets import Assets
from certwidget.web.buyers import Buyer, CustomerError
from certwidget.web.http import (
    HTTPProblem,
    bearer_token,
    check_same_origin,
    json_response,
    page_request,
    read_body,
    require_method,
)
from certwidget.web.intake import receive_certificate
from certwidget.web.runtime import Runtime, reason_name
from certwidget.web.snippet import buyer_config
from certwidget.web.tokens import TokenRejected, WidgetClaims, fingerprint
from certwidget.web.wire import forms_json, renewal_json

logger = logging.getLogger("certwidget")

MAX_TOKEN_BODY = 16 * 1024
EXPIRES_SOON_DAYS = 30
MAX_FORM_ZONES = 60


class Endpoints:
    def __init__(
        self, runtime: Runtime, assets: Assets, *, admin: AdminPages | None = None
    ) -> None:
        self.runtime = runtime
        self.assets = assets
        self.prefix = runtime.settings.prefix
        #: The merchant's pages (``{prefix}/admin/``), only when the shop passed
        #: ``admin_authorize``; else those paths are unknown (404) like any other.
        self.admin = admin
        #: The signed-in buyer's certificates and copies of their documents.
        self.account = Account(runtime)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request, scope["path"][len(self.prefix) :])
        except HTTPProblem as problem:
            response = problem.response()
        except CustomerError:
            logger.exception("certwidget: customer(request) answered something unusable")
            response = HTTPProblem(
                400,
                "unusable_customer",
                "Your account cannot be used for exemption certificates here; please contact "
                "the shop.",
            ).response()
        await response(scope, receive, send)

    async def dispatch(self, request: Request, path: str) -> Response:
        method = request.method
        if path.startswith("/static/"):
            require_method(method, "GET", "HEAD")
            return self.assets.response(
                path[len("/static/") :],
                accept_encoding=request.headers.get("accept-encoding", ""),
                if_none_match=request.headers.get("if-none-match"),
            )
        if path == "/ecommerce/token":
            require_method(method, "POST")
            return await self.mint(request)
        if path == "/buyer":
            require_method(method, "GET")
            return await self.buyer(request)
        if path == "/zones":
            require_method(method, "GET", "HEAD")
            return json_response(catalog.zones_json())
        if path == "/reasons":
            require_method(method, "GET", "HEAD")
            return self.reasons(request)
        if path == "/forms":
            require_method(method, "GET", "HEAD")
            return self.forms(request)
        if path == "/certificates":
            require_method(method, "GET", "POST")
            if method == "GET" and request.query_params.get("view") == "account":
                return await self.account_certificates(request)
            if method == "GET":
                return await self.list_certificates(request)
            check_same_origin(request, self.runtime.settings.allowed_origins)
            buyer, _ = await self.authenticate(request)
            with self.runtime.traffic.submission():
                return await receive_certificate(self.runtime, request, buyer)
        if path.startswith("/certificates/") and path.endswith("/use"):
            require_method(method, "POST")
            check_same_origin(request, self.runtime.settings.allowed_origins)
            return await self.use_certificate(request, path[len("/certificates/") : -len("/use")])
        if path.endswith("/document") and path.startswith(("/certificates/", "/submissions/")):
            require_method(method, "GET")
            return await self.document(request, path)
        if self.admin is not None and (path == "/admin" or path.startswith("/admin/")):
            return await self.admin.dispatch(request, path[len("/admin") :])
        raise HTTPProblem(
            404,
            "not_found",
            f"No widget endpoint at {self.prefix}{path[:100]}; see the certwidget README.",
        )

    # -- the buyer a checkout page is for --------------------------------------------------

    async def buyer(self, request: Request) -> Response:
        """Who the shop says is signed in and the order's ship-to state, for the widget to
        pre-fill; asked when it loads, so checkout pages themselves call none of this."""
        runtime = self.runtime
        check_same_origin(request, runtime.settings.allowed_origins)
        page = page_request(request)
        try:
            profile = await runtime.buyers.signed_in(request)
        except CustomerError:
            # The widget still loads, as for a guest: the token request answers the error
            # (400, "contact the shop") when the buyer goes on.
            logger.exception("certwidget: customer(request) answered something unusable")
            profile = None
        return json_response(
            buyer_config(
                profile, await runtime.ship_zone(page), await runtime.order_reference(page)
            )
        )

    # -- tokens ----------------------------------------------------------------------------

    async def mint(self, request: Request) -> Response:
        runtime = self.runtime
        check_same_origin(request, runtime.settings.allowed_origins)
        zones = await self._requested_zones(request)
        buyer = await runtime.buyer(request, create_guest=True)
        assert buyer is not None
        upstream, degraded = "", False
        # Guests get no upstream token (and so no customer at the provider) until they submit a
        # certificate: anonymous token requests must not create provider customers.
        if runtime.provider.can_mint_tokens and not buyer.guest:
            try:
                minted = await asyncio.wait_for(
                    self._upstream(buyer), runtime.settings.provider_timeout
                )
                upstream = fingerprint(minted.token)
            except (ProviderError, TimeoutError) as exc:
                # The widget still works without the provider: certificates are stored and
                # delivered when it is back. Say so, so the widget can tell the buyer.
                logger.warning("certwidget: token mint for %s failed: %s", buyer.code, exc)
                degraded = True
        claims = WidgetClaims(
            customer=buyer.code, guest=buyer.guest, zones=zones, upstream=upstream
        )
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=runtime.settings.token_max_age)
        response = json_response(
            {
                "token": runtime.tokens.issue(claims),
                "expiresAt": expires.isoformat(timespec="seconds").replace("+00:00", "Z"),
                "customerNumber": buyer.code,
                "guest": buyer.guest,
                "zones": list(zones),
                "providerAvailable": not degraded,
            }
        )
        runtime.set_guest_cookie(response, request, buyer)
        return response

    async def _upstream(self, buyer: Buyer) -> ProviderToken:
        provider = self.runtime.provider

        async def mint() -> ProviderToken:
            try:
                return await provider.mint_token(buyer.code)
            except ProviderError as exc:
                if exc.status != 404:
                    raise
            # The provider does not know this buyer yet: create it, then mint. Inside the
            # single flight, so a burst of first visits creates the customer once.
            await provider.ensure_customer(buyer.profile)
            return await provider.mint_token(buyer.code)

        return await self.runtime.upstream.get(buyer.code, mint)

    async def _requested_zones(self, request: Request) -> tuple[str, ...]:
        body = await read_body(request, limit=MAX_TOKEN_BODY)
        if not body.strip():
            return ()
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            message = f"The body is not valid JSON: {exc}."[:300]
            raise HTTPProblem(400, "malformed_json", message) from exc
        raw = data.get("zones", []) if isinstance(data, dict) else None
        if not isinstance(raw, list) or not all(isinstance(z, str) for z in raw) or len(raw) > 60:
            raise HTTPProblem(
                422,
                "invalid_fields",
                'zones must be a list of state codes such as ["WA"].',
                fields={"zones": 'Use a list of state codes such as ["WA"].'},
            )
        try:
            return tuple(dict.fromkeys(catalog.zone(z).code for z in raw))
        except catalog.UnknownZone as exc:
            raise HTTPProblem(422, "invalid_fields", str(exc), fields={"zones": str(exc)}) from exc

    async def authenticate(self, request: Request) -> tuple[Buyer, WidgetClaims]:
        """The buyer a valid widget token was issued to, who must be this request's buyer."""
        try:
            claims = self.runtime.tokens.verify(bearer_token(request))
        except TokenRejected as exc:
            raise HTTPProblem(
                401,
                exc.code,
                exc.message,
                headers={"WWW-Authenticate": 'Bearer realm="certwidget"'},
            ) from exc
        buyer = await self.runtime.buyer(request)
        if buyer is None or buyer.code != claims.customer:
            raise HTTPProblem(
                403,
                "other_buyer",
                "This certificate form was opened for another buyer (signed in or out since?). "
                "Reload the page to continue.",
            )
        return buyer, claims

    # -- catalog ---------------------------------------------------------------------------

    def reasons(self, request: Request) -> Response:
        zone = request.query_params.get("zone")
        try:
            body = catalog.reasons_json(zone or None)
        except catalog.UnknownZone as exc:
            raise HTTPProblem(400, "unknown_zone", str(exc)) from exc
        accepted = self.runtime.accepted_reasons
        if accepted is not None:
            body["reasons"] = [r for r in body["reasons"] if r["code"] in accepted]
        return json_response(body)

    def forms(self, request: Request) -> Response:
        """The form each chosen state takes per reason, what it asks and when it would expire
        if signed today; the shop's seller and review policy (docs/protocol.md)."""
        raw = ",".join(request.query_params.getlist("zones") + request.query_params.getlist("zone"))
        codes = [code.strip() for code in raw.split(",") if code.strip()]
        if not codes or len(codes) > MAX_FORM_ZONES:
            raise HTTPProblem(
                400,
                "bad_zones",
                f"Name 1 to {MAX_FORM_ZONES} states, e.g. {self.prefix}/forms?zones=GA,TX.",
            )
        try:
            zones = list(dict.fromkeys(catalog.zone(code).code for code in codes))
        except catalog.UnknownZone as exc:
            raise HTTPProblem(400, "unknown_zone", str(exc)) from exc
        runtime = self.runtime
        return json_response(
            forms_json(
                zones,
                today=dt.date.today(),
                accepted_reasons=runtime.accepted_reasons,
                seller=runtime.settings.seller,
                exempt_on_submit=runtime.settings.exempt_on_submit,
                single_purchase=runtime.takes_single_purchase,
            )
        )

    # -- certificates on file --------------------------------------------------------------

    async def list_certificates(self, request: Request) -> Response:
        buyer, claims = await self.authenticate(request)
        today = dt.date.today()
        soon = today + dt.timedelta(days=EXPIRES_SOON_DAYS)
        listed = []
        certificates = await self.runtime.certificates_on_file(buyer.code)
        # Renewal (within EXPIRES_SOON_DAYS) starts from what the buyer entered last time.
        renewing = any(
            c.expiration_date is not None and today <= c.expiration_date <= soon
            for c in certificates
        )
        signed = await self.runtime.signed_here(buyer.code) if renewing else {}
        for certificate in certificates:
            if claims.zones and certificate.zone not in claims.zones:
                continue
            if certificate.status in ("Revoked", "Expired"):
                continue
            expiry = certificate.expiration_date
            listed.append(
                {
                    "id": certificate.id,
                    "number": certificate.number,
                    "zone": certificate.zone,
                    "reason": certificate.reason,
                    "reasonName": reason_name(certificate.reason),
                    "exemptionNumber": certificate.exemption_number,
                    "status": certificate.status,
                    "usable": self.runtime.on_file_is_usable(certificate, today),
                    "expirationDate": expiry.isoformat() if expiry else None,
                    "expiresSoon": expiry is not None and today <= expiry <= soon,
                }
            )
            stored = signed.get(certificate.id)
            if stored is not None and listed[-1]["expiresSoon"]:
                listed[-1]["prefill"] = renewal_json(stored)
        return json_response({"certificates": listed})

    # -- the buyer's account view and copies ----------------------------------------------

    async def account_certificates(self, request: Request) -> Response:
        check_same_origin(request, self.runtime.settings.allowed_origins)
        buyer, _ = await self.authenticate(request)
        body = await self.account.certificates(buyer, dt.date.today())
        return json_response(body)

    async def document(self, request: Request, path: str) -> Response:
        """A copy of the buyer's own document. A Bearer token (never a URL that could leak
        through history, logs or a Referer) and the shop's session must both name the buyer."""
        check_same_origin(request, self.runtime.settings.allowed_origins)
        kind, _, rest = path[1:].partition("/")
        item = rest[: -len("/document")]
        if not item or "/" in item or len(item) > 200:
            raise HTTPProblem(404, "document_not_found", "No such certificate document.")
        buyer, _ = await self.authenticate(request)
        if kind == "submissions":
            zone = request.query_params.get("zone", "")[:10]
            copy = await self.account.submission_document(buyer, item, zone)
        else:
            copy = await self.account.certificate_document(buyer, item)
        return copy.response()

    async def use_certificate(self, request: Request, certificate_id: str) -> Response:
        buyer, claims = await self.authenticate(request)
        today = dt.date.today()
        # A multistate (SST/MTC) certificate is one id covering several zones: answer the
        # zones this widget was opened for, never the first covered state that happens to match.
        matching = [
            certificate
            for certificate in await self.runtime.certificates_on_file(buyer.code)
            if certificate.id == certificate_id
            and (not claims.zones or certificate.zone in claims.zones)
        ]
        if not matching:
            raise HTTPProblem(
                404, "certificate_not_found", "No certificate with that id is on file for you."
            )
        usable = [c for c in matching if self.runtime.on_file_is_usable(c, today)]
        if not usable:
            first = matching[0]
            raise HTTPProblem(
                409,
                "certificate_not_usable",
                f"Certificate {first.number or first.id} is {first.status} or expired; "
                "fill in a new one.",
            )
        exemptions = [self.runtime.on_file_exemption(certificate) for certificate in usable]
        await self.runtime.notify(request, exemptions)
        return json_response({"exemptions": [exemption.to_json() for exemption in exemptions]})
