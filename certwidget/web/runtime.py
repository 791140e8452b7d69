"""The middleware's shared state: provider, outbox, tokens, buyers and the exemption lookup.

One :class:`Runtime` exists per middleware instance. Requests reach it through
``scope["certwidget"]`` so that ``exemption_for(request, zone)`` works in any route of the shop.
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from anyio import CapacityLimiter
from starlette.requests import HTTPConnection
from starlette.responses import Response

from certwidget.domain import catalog
from certwidget.domain.models import Seller
from certwidget.domain.submission import SubmittedCertificate
from certwidget.outbox.base import Outbox, Submission
from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.traffic import BuyerTraffic
from certwidget.providers.base import CertificateProvider, ProviderCertificate
from certwidget.web.buyers import (
    GUEST_COOKIE,
    GUEST_COOKIE_MAX_AGE,
    Buyer,
    BuyerResolver,
    CustomerError,
)
from certwidget.web.exemptions import Exemption
from certwidget.web.minting import UpstreamTokens
from certwidget.web.on_file import CertificatesOnFile
from certwidget.web.tokens import Signed, TokenRejected, WidgetTokens

logger = logging.getLogger("certwidget")

CHECKOUT_COOKIE = "certwidget_checkout"
# Long enough for a checkout, short enough that a certificate the provider later revokes is
# not relied on for long from the cookie alone (exemption_for also re-checks the provider).
CHECKOUT_COOKIE_MAX_AGE = 60 * 60 * 4
MAX_CHECKOUT_ENTRIES = 8

CertificateHook = Callable[[HTTPConnection, Exemption], Awaitable[None] | None]
ShipZoneCallable = Callable[[HTTPConnection], Awaitable[str | None] | str | None]
OrderReferenceCallable = Callable[[HTTPConnection], Awaitable[object] | object]
#: The longest order reference a certificate prints (the form's box is one line).
MAX_ORDER_REFERENCE = 200
#: How many of a buyer's newest submissions are read for their single-purchase certificates.
SINGLE_PURCHASE_LOOKBACK = 1000


@dataclass(frozen=True, slots=True)
class Settings:
    """Options of :class:`CertWidgetMiddleware`, checked once at construction."""

    prefix: str = "/certwidget"
    accept_pending: bool = False
    #: The shop as every certificate names it (None: the certificate leaves the seller blank).
    seller: Seller | None = None
    #: False: a certificate submitted in the checkout exempts only once the provider approved it.
    exempt_on_submit: bool = True
    token_max_age: int = 1800
    allowed_origins: tuple[str, ...] = ()
    locale: str = "en"
    cookie_secure: bool | None = None
    deliver_wait: float = 0.0
    retry_backoff: float = 1.0
    provider_timeout: float = 5.0
    database: Path = field(default_factory=lambda: Path(".certwidget/certwidget.sqlite3"))


class Runtime:
    """What the endpoints and ``exemption_for`` share, built from parts the middleware (the
    composition root, :func:`certwidget.middleware.compose`) makes and passes in."""

    def __init__(
        self,
        *,
        provider: CertificateProvider,
        settings: Settings,
        tokens: WidgetTokens,
        buyers: BuyerResolver,
        upstream: UpstreamTokens,
        outbox: Outbox,
        traffic: BuyerTraffic,
        deliverer: Deliverer,
        on_file: CertificatesOnFile,
        checkout: Signed,
        ship_zone: ShipZoneCallable | None,
        on_certificate: CertificateHook | None,
        order_reference: OrderReferenceCallable | None = None,
    ) -> None:
        self.provider = provider
        self.settings = settings
        self.tokens = tokens
        self.buyers = buyers
        self.upstream = upstream
        self.outbox = outbox
        self.traffic = traffic
        self.deliverer = deliverer
        self.on_file = on_file
        self._checkout = checkout
        self._ship_zone = ship_zone
        self._on_certificate = on_certificate
        self._order_reference = order_reference
        # At most a few threads measure (and hash) uploaded images, so a burst of uploads cannot
        # take every thread of anyio's pool from the work other requests need. PDFs take no
        # thread: the event loop waits on their reader processes itself.
        self.upload_checks = CapacityLimiter(4)

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran since the last :meth:`shutdown` (cheap: every request
        to the endpoints asks)."""
        return self.deliverer.running

    async def start(self) -> None:
        """Open the outbox and start background delivery (idempotent)."""
        # After a shutdown the app may be served again (a test client entered twice): the
        # outbox opens again; the provider's clients reopen their pools on first use.
        await self.outbox.open()
        self.ensure_started()

    def ensure_started(self) -> None:
        """Start background delivery, on an outbox already open (idempotent, cheap)."""
        if not self.deliverer.running:
            self.deliverer.start()

    async def shutdown(self) -> None:
        await self.deliverer.stop()
        await self.provider.aclose()
        await self.outbox.close()

    def forget_on_file(self, customer: str) -> None:
        """Drop the buyer's cached certificates on file (kept up to 30 s), e.g. when the
        provider tells the shop (a webhook) that a review approved or revoked one."""
        self.on_file.forget(customer)

    # -- buyers and tokens -----------------------------------------------------------------

    async def buyer(
        self, connection: HTTPConnection, *, create_guest: bool = False
    ) -> Buyer | None:
        return await self.buyers.resolve(connection, create_guest=create_guest)

    async def ship_zone(self, connection: HTTPConnection) -> str | None:
        if self._ship_zone is None:
            return None
        value = self._ship_zone(connection)
        if value is not None and not isinstance(value, str) and inspect.isawaitable(value):
            value = await value
        if not value:
            return None
        try:
            return catalog.zone(str(value)).code
        except catalog.UnknownZone:
            logger.warning("certwidget: ship_zone(request) returned unknown zone %r", value)
            return None

    @property
    def takes_single_purchase(self) -> bool:
        """Whether the shop names its orders (``order_reference``): a single-purchase
        certificate must name the order it exempts, and only then can exempt only that one."""
        return self._order_reference is not None

    async def order_reference(self, connection: HTTPConnection) -> str | None:
        """The shop's reference for the order being checked out, or None."""
        if self._order_reference is None:
            return None
        try:
            value = self._order_reference(connection)
            if inspect.isawaitable(value):
                value = await value
        except Exception:
            # A single-purchase certificate then cannot name (or exempt) the order: the
            # buyer is told to choose blanket, and the order keeps its tax.
            logger.exception("certwidget: order_reference(request) failed")
            return None
        if value is None:
            return None
        text = " ".join(str(value).split())[:MAX_ORDER_REFERENCE]
        return text or None

    def cookie_secure(self, connection: HTTPConnection) -> bool:
        if self.settings.cookie_secure is not None:
            return self.settings.cookie_secure
        # The scope's scheme is what connection.url would say, without building the URL.
        return connection.scope.get("scheme") == "https"

    def set_guest_cookie(
        self, response: Response, connection: HTTPConnection, buyer: Buyer
    ) -> None:
        if buyer.set_guest_cookie:
            response.set_cookie(
                GUEST_COOKIE,
                buyer.set_guest_cookie,
                max_age=GUEST_COOKIE_MAX_AGE,
                httponly=True,
                samesite="lax",
                secure=self.cookie_secure(connection),
                path="/",
            )

    def verify_token(self, token: str) -> Any:
        return self.tokens.verify(token)

    # -- checkout cookie -------------------------------------------------------------------

    def checkout_entries(self, connection: HTTPConnection) -> list[dict[str, Any]]:
        raw = connection.cookies.get(CHECKOUT_COOKIE)
        if not raw:
            return []
        try:
            value = self._checkout.loads(raw)
        except TokenRejected:
            return []
        if not isinstance(value, list):
            return []
        return [entry for entry in value if isinstance(entry, dict)]

    def remember_submission(
        self, response: Response, connection: HTTPConnection, submission: Submission
    ) -> None:
        """Carry the fresh submission in a signed, HttpOnly cookie for ``exemption_for``."""
        entries = [
            entry for entry in self.checkout_entries(connection) if entry.get("s") != submission.id
        ]
        entries.append({"s": submission.id, "c": submission.customer, "z": submission.zones})
        response.set_cookie(
            CHECKOUT_COOKIE,
            self._checkout.dumps(entries[-MAX_CHECKOUT_ENTRIES:]),
            max_age=CHECKOUT_COOKIE_MAX_AGE,
            httponly=True,
            samesite="lax",
            secure=self.cookie_secure(connection),
            path="/",
        )

    # -- what the provider can hold -------------------------------------------------------

    @property
    def accepted_reasons(self) -> frozenset[str] | None:
        reasons = getattr(self.provider, "accepted_reasons", None)
        return frozenset(reasons) if reasons is not None else None

    def provider_refusal(self, reason: str, exempt_percentage: float) -> dict[str, str]:
        """Field errors for what the provider cannot hold, caught before "received"."""
        problems: dict[str, str] = {}
        accepted = self.accepted_reasons
        if accepted is not None and reason not in accepted:
            names = ", ".join(sorted(reason_name(code) for code in accepted))
            problems["reason"] = f"This shop can accept only these reasons: {names}."
        partial = getattr(self.provider, "partial_exemptions", True)
        if not partial and exempt_percentage < 100:
            problems["exemptPercentage"] = "This shop can accept only full (100%) exemptions."
        return problems

    # -- exemptions ------------------------------------------------------------------------

    def submission_exemptions(
        self, submission: Submission, stored: SubmittedCertificate | None = None
    ) -> list[Exemption]:
        """What the submission exempts, one per zone (``stored``: its record, if read already)."""
        certificate = stored or SubmittedCertificate.from_record(submission.payload)
        reason = certificate.reason
        certificates: dict[str, str] = submission.progress.get("certificates", {})
        numbers: dict[str, str] = submission.progress.get("numbers", {})
        result = []
        for zone in certificate.zones:
            certificate_id = certificates.get(zone)
            result.append(
                Exemption(
                    zone=zone,
                    reason=reason,
                    reason_name=reason_name(reason),
                    exempt_percentage=certificate.exempt_percentage,
                    status="Pending" if certificate_id else "Received",
                    reference=numbers.get(zone) or certificate_id or submission.id,
                    expiration_date=certificate.expiration_for(zone),
                    certificate_id=certificate_id,
                    submission_id=submission.id,
                    source="submission",
                    # Until exemption_for has seen the provider approve it (see _judged).
                    awaiting_review=not self.settings.exempt_on_submit,
                )
            )
        return result

    def on_file_is_usable(self, certificate: ProviderCertificate, today: dt.date) -> bool:
        allowed = ("Active", "Pending") if self.settings.accept_pending else ("Active",)
        if certificate.status not in allowed:
            return False
        return certificate.expiration_date is None or certificate.expiration_date >= today

    def on_file_exemption(self, certificate: ProviderCertificate) -> Exemption:
        return Exemption(
            zone=certificate.zone,
            reason=certificate.reason,
            reason_name=reason_name(certificate.reason),
            exempt_percentage=certificate.exempt_percentage,
            status=certificate.status,
            reference=certificate.number or certificate.id,
            expiration_date=certificate.expiration_date,
            certificate_id=certificate.id,
            source="on_file",
        )

    async def certificates_on_file(self, customer: str) -> list[ProviderCertificate]:
        """The buyer's own certificates at the provider (see :class:`CertificatesOnFile`) that
        later orders may use: never one given for a single purchase."""
        certificates = await self.on_file.of(customer)
        if not certificates:
            return certificates
        single = await self.single_purchase_ids(customer)
        return [c for c in certificates if c.id not in single] if single else certificates

    async def signed_here(self, customer: str) -> dict[str, SubmittedCertificate]:
        """The buyer's certificates signed through the widget, by the provider's certificate
        id they became (to prefill a renewal with what the buyer entered then)."""
        found: dict[str, SubmittedCertificate] = {}
        for submission in await self.outbox.for_customer(customer, limit=SINGLE_PURCHASE_LOOKBACK):
            ids = submission.progress.get("certificates", {})
            if submission.kind != "filled" or not ids:
                continue
            try:
                stored = SubmittedCertificate.from_record(submission.payload)
            except ValueError:
                continue  # unreadable: nothing to prefill from
            for certificate_id in ids.values():
                found.setdefault(str(certificate_id), stored)  # newest first
        return found

    async def single_purchase_ids(self, customer: str) -> frozenset[str]:
        """The provider's ids of the certificates this buyer gave for a single purchase.

        Neither provider API can mark a certificate single-purchase, so the outbox (which
        keeps what was signed and, once delivered, the ids it became) is the record.
        """
        ids: set[str] = set()
        for submission in await self.outbox.for_customer(customer, limit=SINGLE_PURCHASE_LOOKBACK):
            if submission.payload.get("purchase_kind") == "single":
                ids.update(str(i) for i in submission.progress.get("certificates", {}).values())
        return frozenset(ids)

    async def exemption_for(self, connection: HTTPConnection, zone: str) -> Exemption | None:
        if not isinstance(zone, str):
            raise TypeError(f"zone must be a state code such as 'WA', not {type(zone).__name__}")
        try:
            code = catalog.zone(zone).code
        except catalog.UnknownZone:
            return None
        try:
            buyer = await self.buyer(connection)
        except CustomerError:
            # The order flow must go on: without a usable buyer the order is taxed.
            logger.exception("certwidget: customer(request) answered something unusable")
            return None
        if buyer is None:
            return None
        for entry in reversed(self.checkout_entries(connection)):
            if entry.get("c") != buyer.code or code not in entry.get("z", ()):
                continue
            submission = await self.outbox.get(str(entry.get("s")))
            if submission is None or submission.state == "failed":
                continue
            stored = SubmittedCertificate.from_record(submission.payload)
            if stored.single_purchase and not await self._names_this_order(connection, stored):
                continue  # a single purchase exempts the order it names, no later one
            for exemption in self.submission_exemptions(submission, stored):
                if exemption.zone != code:
                    continue
                judged = await self._judged(exemption, buyer.code)
                if judged is not None:
                    return judged
        today = dt.date.today()
        usable = [
            certificate
            for certificate in await self.certificates_on_file(buyer.code)
            if certificate.zone == code and self.on_file_is_usable(certificate, today)
        ]
        if not usable:
            return None
        # Prefer Active over Pending, then the one valid longest.
        best = max(
            usable,
            key=lambda c: (c.status == "Active", c.expiration_date or dt.date.max),
        )
        return self.on_file_exemption(best)

    async def _names_this_order(
        self, connection: HTTPConnection, stored: SubmittedCertificate
    ) -> bool:
        current = await self.order_reference(connection)
        return current is not None and current == stored.order_reference

    async def _judged(self, exemption: Exemption, customer: str) -> Exemption | None:
        """A fresh submission's exemption as it stands now, or None once it is out.

        With ``exempt_on_submit`` (the default) it exempts at once, until it expires or the
        provider rules it out; otherwise it awaits review until the provider has it Active.
        """
        today = dt.date.today()
        if exemption.expiration_date is not None and exemption.expiration_date < today:
            return None
        if exemption.certificate_id is None:
            return exemption  # not delivered yet: nothing to ask the provider about
        # The provider's whole list: this checkout's own single-purchase certificate included.
        for certificate in await self.on_file.of(customer):
            if certificate.id == exemption.certificate_id and certificate.zone == exemption.zone:
                if certificate.status not in ("Active", "Pending"):
                    return None
                if exemption.awaiting_review and certificate.status == "Active":
                    return replace(exemption, status="Active", awaiting_review=False)
                return exemption
        return exemption  # the provider is unreachable or not caught up: the submission stands

    async def notify(self, connection: HTTPConnection, exemptions: Sequence[Exemption]) -> None:
        """Call the shop's ``on_certificate`` hook; its failure never fails the buyer."""
        if self._on_certificate is None:
            return
        for exemption in exemptions:
            try:
                result = self._on_certificate(connection, exemption)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("certwidget: on_certificate hook failed for %s", exemption)


def reason_name(code: str) -> str:
    """The catalog's name for an SST reason code (the code itself if unknown)."""
    try:
        return catalog.reason(code).name
    except KeyError:
        return code
