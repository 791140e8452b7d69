"""The Commenda certificate provider, behind the provider-neutral exemption model.

:class:`CommendaProvider` implements :class:`~certwidget.providers.base.CertificateProvider` on
:class:`~certwidget.providers.commenda.client.CommendaClient` (re-exported here with its errors
and models), mapping Commenda's certificates into
:class:`~certwidget.providers.base.ProviderCertificate`::

    provider = CommendaProvider("https://api.commenda.io/api/v1", token="sk_...")
    app.add_middleware(CertWidgetMiddleware, secret_key=..., provider=provider, ...)

The mapping (SST reason <-> Commenda ``type``, status <-> Active/Pending/Expired/Revoked, one
entry per state an SST or MTC certificate covers) is data: :data:`STATUS_MAP` here and
:data:`~certwidget.providers.commenda.models.TYPE_BY_REASON`, each with its source.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Final

import httpx

from certwidget.domain import catalog
from certwidget.providers.base import (
    AsyncClosing,
    Attachment,
    CertificateDraft,
    CertificateStatus,
    CustomerProfile,
    ProviderCertificate,
    ProviderToken,
)
from certwidget.providers.commenda.client import (
    BadRequest,
    CommendaClient,
    CommendaError,
    CommendaUnavailable,
    Conflict,
    ConnectionFailed,
    Forbidden,
    MalformedResponse,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TimedOut,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedCertificate,
    UnsupportedMediaType,
)
from certwidget.providers.commenda.models import (
    COUNTRY_US,
    REASON_BY_TYPE,
    TYPE_BY_REASON,
    CommendaCustomer,
    CommendaFile,
    ExemptionCertificate,
    ExemptionCertificateCreate,
    ModelError,
)

__all__ = [
    "STATUS_MAP",
    "BadRequest",
    "CommendaClient",
    "CommendaCustomer",
    "CommendaError",
    "CommendaFile",
    "CommendaProvider",
    "CommendaUnavailable",
    "Conflict",
    "ConnectionFailed",
    "ExemptionCertificate",
    "ExemptionCertificateCreate",
    "Forbidden",
    "MalformedResponse",
    "ModelError",
    "NotFound",
    "PayloadTooLarge",
    "ServerError",
    "TimedOut",
    "Unauthorized",
    "UnprocessableEntity",
    "UnsupportedCertificate",
    "UnsupportedMediaType",
    "commenda_customer_id",
    "to_provider_certificates",
]

logger = logging.getLogger(__name__)

# -- mapping Commenda certificates into provider-neutral ones ---------------------------------

#: (status, verification_status) -> provider-neutral status. Source: the seed page, whose own
#: example certificate is ``INVALID`` + ``PENDING_VERIFICATION``: "Every exemption certificate
#: needs to be validated by Commenda before they can be used for exempting transactions" and
#: "If the certificate is INVALID, the POST /calculate endpoint won't use it". So ``status`` is
#: the verdict only once ``verification_status`` says the review is done:
#:
#: - INVALID + PENDING_VERIFICATION: awaiting review (every new certificate) -> Pending;
#: - VALID + VERIFICATION_COMPLETED: approved -> Active;
#: - INVALID + VERIFICATION_COMPLETED: rejected or revoked -> Revoked;
#: - VALID + PENDING_VERIFICATION: not verified yet, whatever ``status`` says -> Pending.
#:
#: Pending exempts only where pending certificates may: a checkout's own fresh submission, and
#: certificates on file with the middleware's ``accept_pending=True`` (as CertCapture's Pending).
STATUS_MAP: Final[Mapping[tuple[str, str], CertificateStatus]] = {
    ("INVALID", "PENDING_VERIFICATION"): "Pending",
    ("VALID", "PENDING_VERIFICATION"): "Pending",
    ("VALID", "VERIFICATION_COMPLETED"): "Active",
    ("INVALID", "VERIFICATION_COMPLETED"): "Revoked",
}
#: A VALID certificate in a verification state we do not know waits like Pending; any other
#: combination not in the map never exempts: it reads as Revoked, as CertCapture's unknown
#: statuses do.
_VALID_UNKNOWN: Final[CertificateStatus] = "Pending"
_UNKNOWN: Final[CertificateStatus] = "Revoked"
#: The verification state a certificate is in until Commenda has reviewed it.
_AWAITING_REVIEW: Final = "PENDING_VERIFICATION"


def _neutral_status(cert: ExemptionCertificate, today: dt.date) -> CertificateStatus:
    fallback = _VALID_UNKNOWN if cert.status == "VALID" else _UNKNOWN
    status = STATUS_MAP.get((cert.status or "", cert.verification_status or ""), fallback)
    if status == "Revoked":
        return status
    if cert.expiring_at is not None and cert.expiring_at < today:
        return "Expired"
    return status


def _covered(cert: ExemptionCertificate, reason: str) -> list[str]:
    """The zones a certificate covers: its state, or each member state of SST/MTC."""
    if (cert.country or COUNTRY_US).upper() != COUNTRY_US or not cert.jurisdiction:
        return []
    jurisdiction = cert.jurisdiction.strip().upper()
    try:
        zones = catalog.covered_zones(jurisdiction)
    except catalog.UnknownZone:
        logger.warning("Commenda certificate %s: unknown jurisdiction %r", cert.id, jurisdiction)
        return []
    if jurisdiction in (catalog.SST, catalog.MTC):
        # The catalog says which multistate certificate can carry which reason (the MTC form
        # certifies resale only): a certificate claiming more covers nothing.
        try:
            allowed = catalog.reason(reason).certificates
        except catalog.UnknownReason:
            allowed = frozenset()
        if jurisdiction not in allowed:
            logger.warning(
                "Commenda certificate %s: a %s certificate cannot carry reason %s; ignored",
                cert.id,
                jurisdiction,
                reason,
            )
            return []
    return sorted(zones)


def to_provider_certificates(
    cert: ExemptionCertificate, *, customer_code: str, today: dt.date | None = None
) -> list[ProviderCertificate]:
    """One :class:`ProviderCertificate` per zone the certificate covers, all with its id.

    An SST certificate answers one entry per SST member state, so ``exemption_for`` works for
    any of them; a non-US or unknown jurisdiction answers none. A ``type`` outside
    :data:`~certwidget.providers.commenda.models.REASON_BY_TYPE` is carried through as the
    reason (Commenda adds types on request), so the certificate still exempts its zones.
    """
    today = today or dt.date.today()
    reason = REASON_BY_TYPE.get(cert.type or "", cert.type or "")
    status = _neutral_status(cert, today)
    extra = {
        key: value
        for key, value in (
            ("jurisdiction", cert.jurisdiction),
            ("type", cert.type),
            ("status", cert.status),
            ("verification_status", cert.verification_status),
            ("file_id", cert.file_id),
            ("customer_id", cert.customer_id),
        )
        if value
    }
    return [
        ProviderCertificate(
            id=cert.id,
            zone=zone,
            reason=reason,
            status=status,
            signed_date=cert.issued_at,
            expiration_date=cert.expiring_at,
            customer_code=customer_code,
            extra=dict(extra),
        )
        for zone in _covered(cert, reason)
    ]


# -- the provider -----------------------------------------------------------------------------

# A fixed namespace: the same shop customer code always names the same Commenda customer.
_CUSTOMER_NAMESPACE: Final = uuid.UUID("6f1d5c0e-3c1a-5b7e-9a51-2c0e1d6c7a41")


def commenda_customer_id(customer_code: str) -> str:
    """The Commenda customer id certwidget uses for a shop's customer code: a UUIDv5 of it.

    Commenda ids are UUIDs and the seed documents no lookup by the shop's own number, so the id
    is derived (stable, no local state) and asked for when the customer is created.

    >>> commenda_customer_id("C-1") == commenda_customer_id("C-1")
    True
    """
    if not customer_code:
        raise ValueError("customer_code must not be empty")
    return str(uuid.uuid5(_CUSTOMER_NAMESPACE, customer_code))


# How many uploaded documents the provider remembers (by content hash), so that one document
# attached to several zones' certificates is uploaded once.
_FILE_CACHE: Final = 64


class CommendaProvider(AsyncClosing):
    """:class:`~certwidget.providers.base.CertificateProvider` backed by the Commenda API.

    ::

        provider = CommendaProvider("https://api.commenda.io/api/v1", token="sk_...")
        app.add_middleware(CertWidgetMiddleware, secret_key=..., provider=provider, ...)

    Commenda has no per-buyer token endpoint, so ``can_mint_tokens`` is False: the middleware
    mints only its own signed widget token (same binding to the shop's buyer, same expiry).

    ``customer_id`` maps the shop's customer code to the Commenda customer id (default:
    :func:`commenda_customer_id`); pass your own when your buyers already exist at Commenda.
    """

    name: str = "commenda"
    can_mint_tokens: bool = False
    #: The SST reasons Commenda can hold (see TYPE_BY_REASON); others are refused on delivery.
    #: Not (yet) part of the protocol: a middleware that reads it can narrow the widget's form.
    accepted_reasons: frozenset[str] = frozenset(TYPE_BY_REASON)
    #: Commenda's certificates exempt a sale fully (the seed has no percentage field).
    partial_exemptions: bool = False

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        client: CommendaClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float | httpx.Timeout = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        customer_id: Callable[[str], str] = commenda_customer_id,
    ) -> None:
        if client is not None:
            if any(value is not None for value in (base_url, token, transport)):
                raise ValueError("pass either client=... or base_url and token, not both")
            self.client = client
            self._owns_client = False
        else:
            if base_url is None or token is None:
                raise ValueError("CommendaProvider needs base_url and token (or client=...)")
            self.client = CommendaClient(
                base_url,
                token=token,
                transport=transport,
                timeout=timeout,
                retries=retries,
                backoff=backoff,
            )
            self._owns_client = True
        self._customer_id = customer_id
        self._files: OrderedDict[str, str] = OrderedDict()

    async def mint_token(self, customer_code: str) -> ProviderToken:
        """Never called by the middleware (``can_mint_tokens`` is False); refuses clearly."""
        raise CommendaError(
            None,
            "not_supported",
            "Commenda has no per-buyer token endpoint; certwidget mints its own signed widget "
            "token for CommendaProvider (can_mint_tokens is False)",
        )

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        """Find the customer by its derived id; create it (``POST /customers``) when missing.

        A concurrent creation (409) is resolved by reading the winner. The seed documents no
        customer update, so an existing customer's name is left as it is.
        """
        wanted = self._customer_id(profile.code)
        try:
            return (await self.client.get_customer(wanted)).id
        except NotFound:
            pass
        try:
            created = await self.client.create_customer(
                id=wanted, name=profile.name or profile.code
            )
        except Conflict:
            created = await self.client.get_customer(wanted)
        if created.id != wanted:
            # The server assigned its own id: we could never find this customer again by code,
            # and every delivery would make another. Fail loudly instead.
            raise CommendaError(
                None,
                "customer_id_not_kept",
                f"Commenda assigned customer id {created.id!r} instead of {wanted!r}; pass "
                "CommendaProvider(customer_id=...) mapping your customer codes to Commenda ids",
            )
        return created.id

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        """Create one certificate (without its document, which :meth:`attach_document` links).

        Safe to repeat: before creating, the customer's certificates are read (the seed's GET)
        and an unfinished twin (same jurisdiction, type, dates; awaiting verification, as every
        new certificate is, and no file yet) is answered instead, which is exactly what a
        delivery retried after a lost answer finds. ``draft.idempotency_key`` is also sent as
        ``Idempotency-Key``, which the sandbox honours.
        """
        request = ExemptionCertificateCreate(
            issued_at=draft.signed_date or dt.datetime.now(dt.UTC).date(),
            jurisdiction=_jurisdiction(draft.zone),
            type=_certificate_type(draft.reason),
            customer_id=self._customer_id(draft.customer_code),
            expiring_at=draft.expiration_date,
        )
        if draft.exempt_percentage < 100.0:
            raise UnsupportedCertificate(
                None,
                "unsupported_percentage",
                f"Commenda certificates exempt a sale fully; a {draft.exempt_percentage:g}% "
                "exemption cannot be filed with Commenda",
            )
        existing = await self._unfinished_twin(request)
        cert = existing or await self.client.create_exemption_certificate(
            request, idempotency_key=draft.idempotency_key or None
        )
        # The zone asked for, even for a multistate certificate: delivery keys its progress by it.
        return _neutral_one(cert, zone=request.jurisdiction, customer_code=draft.customer_code)

    async def _unfinished_twin(
        self, request: ExemptionCertificateCreate
    ) -> ExemptionCertificate | None:
        try:
            customer = await self.client.get_customer(request.customer_id)
        except NotFound:
            return None  # creating will say what is wrong
        for cert in customer.exemption_certificates:
            # Not reviewed yet (INVALID or VALID, see STATUS_MAP): a reviewer's verdict means the
            # certificate is not the one a lost answer left behind.
            if (
                request.matches(cert)
                and cert.file_id is None
                and cert.verification_status == _AWAITING_REVIEW
                and cert.status in ("INVALID", "VALID")
            ):
                return cert
        return None

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        """Upload the document (``POST /files``) and link it (``PATCH``, sets ``file_id``).

        The same bytes attached to several certificates (one per zone) are uploaded once;
        linking is idempotent, so a retried attach at worst leaves an unlinked upload behind.
        """
        file_id = await self._upload(content, media_type=media_type, filename=filename)
        await self.client.update_exemption_certificate(certificate_id, file_id=file_id)

    async def _upload(self, content: bytes, *, media_type: str, filename: str) -> str:
        digest = hashlib.sha256(content).hexdigest()
        cached = self._files.get(digest)
        if cached is not None:
            self._files.move_to_end(digest)
            return cached
        uploaded = await self.client.upload_file(content, filename, media_type)
        self._files[digest] = uploaded.id
        while len(self._files) > _FILE_CACHE:
            self._files.popitem(last=False)
        return uploaded.id

    async def document(self, certificate_id: str) -> Attachment | None:
        """The certificate's linked file (``GET /files/{file_id}``); None when the certificate
        is unknown or no file is linked. Whose it is, the caller checks (``certificates_for``)."""
        try:
            cert = await self.client.get_exemption_certificate(certificate_id)
            if not cert.file_id:
                return None
            return await self.client.get_file(cert.file_id)
        except NotFound:
            return None

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        """Every certificate of the buyer, one entry per covered zone; an unknown buyer has none."""
        wanted = self._customer_id(customer_code)
        try:
            customer = await self.client.get_customer(wanted)
        except NotFound:
            return []
        today = dt.date.today()
        # Defence in depth: only certificates the answer says are this customer's.
        own = [
            cert
            for cert in customer.exemption_certificates
            if customer.id == wanted and cert.customer_id in (None, "", wanted)
        ]
        if len(own) < len(customer.exemption_certificates):
            logger.error(
                "Commenda answered %d certificate(s) of another customer for customer id %r; "
                "they were dropped",
                len(customer.exemption_certificates) - len(own),
                wanted,
            )
        return [
            entry
            for cert in own
            for entry in to_provider_certificates(cert, customer_code=customer_code, today=today)
        ]

    async def aclose(self) -> None:
        """Close the client, if this provider made it."""
        if self._owns_client:
            await self.client.aclose()


def _certificate_type(reason: str) -> str:
    code = reason.strip().upper()
    try:
        return TYPE_BY_REASON[code]
    except KeyError:
        accepted = ", ".join(f"{r} ({t})" for r, t in TYPE_BY_REASON.items())
        raise UnsupportedCertificate(
            None,
            "unsupported_reason",
            f"Commenda accepts only wholesale and nonprofit certificates, i.e. reasons "
            f"{accepted}; reason {reason!r} cannot be filed with Commenda",
        ) from None


def _jurisdiction(zone: str) -> str:
    code = zone.strip().upper()
    if code in (catalog.SST, catalog.MTC):
        return code
    try:
        return catalog.zone(code).code
    except catalog.UnknownZone as exc:
        raise UnsupportedCertificate(None, "unsupported_zone", str(exc)) from None


def _neutral_one(
    cert: ExemptionCertificate, *, zone: str, customer_code: str
) -> ProviderCertificate:
    """The certificate just created, as the provider-neutral entry for the ``zone`` asked for."""
    entries = to_provider_certificates(cert, customer_code=customer_code)
    for entry in entries:
        if entry.zone == zone:
            return entry
    # A multistate certificate (zone "SST") has no entry of that name; answer it as asked.
    return ProviderCertificate(
        id=cert.id,
        zone=zone,
        reason=REASON_BY_TYPE.get(cert.type or "", cert.type or ""),
        status=entries[0].status if entries else "Pending",
        signed_date=cert.issued_at,
        expiration_date=cert.expiring_at,
        customer_code=customer_code,
    )
