"""CertWidgetMiddleware: one ``add_middleware`` line and the checkout collects certificates.

    from certwidget import CertWidgetMiddleware

    app.add_middleware(
        CertWidgetMiddleware,
        secret_key=os.environ["CERTWIDGET_SECRET"],
        customer=lambda request: request.session.get("customer_number"),
        ship_zone=lambda request: request.session.get("ship_to_state"),
    )

Pure ASGI: a request outside the prefix and the inject paths costs two string checks (and one
dictionary write where the server keeps no lifespan state), and is handed to the app with its
own ``receive`` and ``send``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from certwidget import config
from certwidget.documents.rendering import CertificateRenderer, WorkerRenderer
from certwidget.domain.models import Seller
from certwidget.metrics import metrics_for
from certwidget.outbox import is_postgres, outbox_for, sqlite_path
from certwidget.outbox.base import Outbox
from certwidget.outbox.delivery import Deliverer
from certwidget.outbox.events import DeliveredHook, FailedHook, Lifecycle
from certwidget.outbox.traffic import BuyerTraffic
from certwidget.providers.base import CertificateProvider
from certwidget.web.admin import ADMIN_CSRF_SALT, CSRF_MAX_AGE, AdminAuthorize, AdminPages
from certwidget.web.assets import Assets
from certwidget.web.buyers import BuyerResolver, CustomerCallable
from certwidget.web.coalescing import CoalescingSend
from certwidget.web.endpoints import Endpoints
from certwidget.web.exemptions import SCOPE_KEY
from certwidget.web.injection import DEFAULT_MOUNT_HTML, HtmlInjector
from certwidget.web.minting import UpstreamTokens
from certwidget.web.on_file import ON_FILE_TTL, CertificatesOnFile
from certwidget.web.runtime import (
    CHECKOUT_COOKIE_MAX_AGE,
    CertificateHook,
    OrderReferenceCallable,
    Runtime,
    Settings,
    ShipZoneCallable,
)
from certwidget.web.snippet import SnippetRenderer
from certwidget.web.tokens import CHECKOUT_COOKIE_SALT, Signed, WidgetTokens, normalize_keys

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

logger = logging.getLogger("certwidget")

_PATHSEND = "http.response.pathsend"


class CertWidgetMiddleware:
    """Collects tax-exemption certificates at the checkout of a Starlette or FastAPI shop.

    Options (all keyword-only):

    - ``secret_key``: signs widget tokens and cookies; a list (oldest first) rotates keys.
    - ``provider``: a :class:`~certwidget.providers.CertificateProvider`; None runs the embedded
      sandbox in-process on a SQLite file next to ``database``.
    - ``inject``: path globs (``"/checkout"`` also covers ``/checkout/...``) or a predicate
      ``inject(request) -> bool`` choosing the HTML pages that get the widget.
    - ``customer``: ``customer(request)`` (sync or async) answers the signed-in buyer (a customer
      number, a CustomerProfile or a mapping) or None for a guest.
    - ``ship_zone``: ``ship_zone(request)`` answers the order's ship-to state, pre-selected.
      Called when the widget loads (``GET {prefix}/buyer``) with a request for the checkout
      page's URL (path and query) that carries the buyer's cookies, headers and session.
    - ``prefix``: where the widget's endpoints live (default ``/certwidget``).
    - ``on_certificate``: ``on_certificate(request, exemption)`` (sync or async), called for
      each zone once a submission is stored, and when a buyer uses a certificate on file.
    - ``on_delivered``: ``on_delivered(submission)`` (sync or async), called once a submission
      is delivered to the provider, with its :class:`certwidget.outbox.admin.SubmissionView`
      (the provider's references included). ``on_failed(submission, error)``: once delivery
      gives a submission up (the provider refused it, or an error kept coming back). Their
      failure is logged and never affects delivery (see :mod:`certwidget.outbox.events`).
    - ``admin_authorize``: ``admin_authorize(request) -> bool`` (sync or async) lets a merchant
      see and retry submissions at ``{prefix}/admin/``; False answers 403. Without it there is
      no admin page (404).
    - ``on_file_ttl``: seconds a buyer's certificates on file are reused before the provider
      is asked again (default 30; 0 asks every time): how soon a review at the provider
      (approved, revoked) reaches ``exemption_for``. See also ``certwidget.forget_on_file``.
    - ``metrics``: True records Prometheus metrics in prometheus_client's default registry
      (or pass a ``CollectorRegistry``); needs ``pip install 'certwidget[metrics]'``. The shop
      serves them itself (see :mod:`certwidget.metrics`).
    - ``database``: where the outbox keeps submissions: a SQLite file (a path or
      ``sqlite:///path``; default ``.certwidget/certwidget.sqlite3``), or a
      ``postgresql://user:password@host:5432/db`` URL that several hosts share (needs
      ``pip install 'certwidget[postgres]'`` and a ``provider``).
    - ``outbox``: where submissions are kept until delivered, an object implementing
      :class:`certwidget.outbox.base.Outbox` (e.g. ``MemoryOutbox()`` in tests); default: the
      SQLite outbox at ``database``.
    - ``renderer``: draws the filled-in certificate's PDF at delivery, an object implementing
      :class:`certwidget.documents.rendering.CertificateRenderer`; default: a worker process.
    - ``accept_pending``: let on-file certificates still Pending review exempt orders.
    - ``seller``: the shop as every certificate names it, a :class:`certwidget.Seller` (or a
      mapping: name, line1, city, region, postal_code, country); set it in production.
    - ``order_reference``: ``order_reference(request)`` (sync or async) answers the shop's
      reference for the order being checked out (e.g. a cart id), or None. With it the widget
      offers a single-purchase certificate, which names that order and exempts only it.
    - ``exempt_on_submit``: True (default) lets a certificate submitted in this checkout exempt
      the order at once; False exempts only once the provider has approved it (Active), and
      ``exemption_for`` answers an :class:`Exemption` with ``awaiting_review=True`` until then.
    - ``token_max_age``: widget token lifetime in seconds (default 1800).
    - ``allowed_origins``: further origins the endpoints accept in ``Origin`` besides the
      request's own, e.g. the shop's public ``https://`` origin behind a proxy that hides the
      scheme or host. No CORS headers are sent: the widget runs on the shop's own pages.
    - ``locale``: the widget's default language, ``"en"`` or ``"es"``.
    - ``cookie_secure``: force the Secure cookie flag (default: when the request is https).
    - ``deliver_wait``: seconds intake waits for delivery to the provider before answering
      (201 with the provider's reference if done, else 202). Default 0: answer as soon as the
      submission is on disk; delivery starts at once in the background.
    - ``provider_timeout``: seconds a checkout request waits for the provider (token mint,
      certificates on file) before going on without it.
    - ``retry_backoff``: first delay (seconds) before retrying a failed delivery; it doubles
      per attempt, with jitter, up to five minutes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        secret_key: str | bytes | Sequence[str | bytes],
        provider: CertificateProvider | None = None,
        inject: config.InjectRule = ("/checkout",),
        customer: CustomerCallable | None = None,
        ship_zone: ShipZoneCallable | None = None,
        prefix: str = "/certwidget",
        on_certificate: CertificateHook | None = None,
        on_delivered: DeliveredHook | None = None,
        on_failed: FailedHook | None = None,
        admin_authorize: AdminAuthorize | None = None,
        on_file_ttl: float = ON_FILE_TTL,
        metrics: bool | CollectorRegistry = False,
        database: str | os.PathLike[str] = ".certwidget/certwidget.sqlite3",
        outbox: Outbox | None = None,
        renderer: CertificateRenderer | None = None,
        accept_pending: bool = False,
        seller: Seller | Mapping[str, str] | None = None,
        order_reference: OrderReferenceCallable | None = None,
        exempt_on_submit: bool = True,
        token_max_age: int = 1800,
        allowed_origins: Sequence[str] = (),
        locale: str = "en",
        cookie_secure: bool | None = None,
        deliver_wait: float = 0.0,
        retry_backoff: float = 1.0,
        provider_timeout: float = 5.0,
    ) -> None:
        self.app = app
        keys = normalize_keys(secret_key)
        prefix = config.checked_prefix(prefix)
        config.check_callables(
            customer=customer,
            ship_zone=ship_zone,
            on_certificate=on_certificate,
            order_reference=order_reference,
        )
        checked_seller = config.checked_seller(seller)
        config.check_hooks(
            on_delivered=on_delivered, on_failed=on_failed, admin_authorize=admin_authorize
        )
        on_file_ttl = config.checked_on_file_ttl(on_file_ttl)
        events = Lifecycle(
            on_delivered=on_delivered, on_failed=on_failed, metrics=metrics_for(metrics)
        )
        if not isinstance(exempt_on_submit, bool):
            raise TypeError("exempt_on_submit must be True or False")
        config.check_numbers(
            token_max_age=token_max_age,
            deliver_wait=deliver_wait,
            retry_backoff=retry_backoff,
            provider_timeout=provider_timeout,
        )
        locale = config.checked_locale(locale)
        origins = config.allowed_origins(allowed_origins)
        inject_rules = config.inject_paths(inject)
        self._inject_paths = inject_rules.paths
        self._inject_predicate = inject_rules.predicate
        self._inject_prefixes = inject_rules.prefixes
        self._inject_exact = inject_rules.exact
        if provider is not None and not isinstance(provider, CertificateProvider):
            raise TypeError(
                "provider must implement certwidget.providers.CertificateProvider "
                "(e.g. CertCaptureProvider), or be None for the embedded sandbox"
            )
        if outbox is not None and not isinstance(outbox, Outbox):
            raise TypeError(
                "outbox must implement certwidget.outbox.base.Outbox (e.g. MemoryOutbox()), "
                "or be None for the SQLite outbox at database="
            )
        if renderer is not None and not isinstance(renderer, CertificateRenderer):
            raise TypeError(
                "renderer must implement certwidget.documents.rendering.CertificateRenderer, "
                "or be None for the default (a worker process)"
            )
        # A path or sqlite:/// URL is a SQLite file, postgresql:// the outbox many hosts share;
        # any other URL is refused (it would become a file named after the URL).
        # The embedded sandbox (provider=None, or one the shop built with embedded_sandbox or
        # embedded_commenda) acknowledges certificates that reach no real provider.
        embedded = provider is None or bool(getattr(provider, "is_sandbox", False))
        if is_postgres(database):
            if embedded:
                # Several hosts on one database is production: the embedded sandbox there
                # would acknowledge certificates that reach no provider.
                raise ValueError(
                    "database='postgresql://...' needs a real provider: pass provider="
                    "CertCaptureProvider(url, username=..., password=...) (or a "
                    "CommendaProvider); the embedded sandbox is for one development host "
                    "on SQLite"
                )
            if outbox is None:
                outbox = outbox_for(database)
            database = Path(".certwidget/certwidget.sqlite3")  # no file: only Settings keeps it
        else:
            database = sqlite_path(database)
        if outbox is None:
            outbox = outbox_for(database)
        self.sandbox = embedded
        if embedded:
            logger.warning(
                "certwidget is using the embedded sandbox: certificates go nowhere real; "
                "pass provider=CertCaptureProvider(...) (or CommendaProvider(...)) for production"
            )
        if provider is None:
            from certwidget.sandbox.embedded import embedded_sandbox

            provider = embedded_sandbox(database.with_name(database.stem + "-sandbox.sqlite3"))
        settings = Settings(
            prefix=prefix,
            accept_pending=accept_pending,
            seller=checked_seller,
            exempt_on_submit=exempt_on_submit,
            token_max_age=token_max_age,
            allowed_origins=origins,
            locale=locale,
            cookie_secure=cookie_secure,
            deliver_wait=deliver_wait,
            retry_backoff=retry_backoff,
            provider_timeout=provider_timeout,
            database=database,
        )
        self.runtime = compose(
            settings,
            keys=keys,
            provider=provider,
            outbox=outbox,
            renderer=renderer or WorkerRenderer(),
            customer=customer,
            ship_zone=ship_zone,
            on_certificate=on_certificate,
            order_reference=order_reference,
            on_file_ttl=on_file_ttl,
            events=events,
        )
        self._prefix = prefix
        self._prefix_slash = prefix + "/"
        # True while a lifespan whose server keeps lifespan state (uvicorn, hypercorn, Starlette's
        # TestClient) runs: the runtime is in that state, which the server copies into every
        # request's scope["state"], so a request needs no write of ours to carry it.
        self._runtime_in_state = False
        # Every path this middleware may act on starts with one of these (a predicate sees all).
        self._claimed_prefixes = (
            ("",) if self._inject_predicate is not None else (prefix, *self._inject_prefixes)
        )
        assets = Assets()
        admin = None
        if admin_authorize is not None:
            csrf = Signed(keys, salt=ADMIN_CSRF_SALT, max_age=CSRF_MAX_AGE)
            admin = AdminPages(self.runtime, authorize=admin_authorize, csrf=csrf)
        self._endpoints = Endpoints(self.runtime, assets, admin=admin)
        snippets = SnippetRenderer(
            js_url=f"{prefix}/static/{assets.urls['certwidget.js']}",
            css_url=f"{prefix}/static/{assets.urls['certwidget.css']}",
            endpoint=prefix,
            locale=locale,
            mount_html=DEFAULT_MOUNT_HTML,
            sandbox=self.sandbox,
        )
        self._snippet_without_nonce = snippets.html(None)
        self._snippet_with_nonce = snippets.html

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "http":
            if not self._runtime_in_state:
                scope[SCOPE_KEY] = self.runtime
            path: str = scope["path"]
            # One C call settles the usual request: neither ours nor a page that gets the widget.
            if path.startswith(self._claimed_prefixes):
                if path.startswith(self._prefix_slash) or path == self._prefix:
                    if not self.runtime.started:
                        await self._start_then_serve(scope, receive, send)
                        return
                    await self._endpoints(scope, receive, send)
                    return
                if path in self._inject_exact or self._should_inject(scope, path):
                    await self._inject(scope, receive, send)
                    return
        elif scope_type == "lifespan":
            await self.app(scope, self._lifespan_receive(scope, receive), send)
            return
        elif scope_type == "websocket":
            scope[SCOPE_KEY] = self.runtime
        await self.app(scope, receive, send)

    async def _start_then_serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Served without a lifespan (or again after one ended): the outbox opens (a coroutine:
        # a backend may connect) before the first request to the endpoints uses it.
        await self.runtime.start()
        await self._endpoints(scope, receive, send)

    def _should_inject(self, scope: Scope, path: str) -> bool:
        # (Paths in self._inject_exact were let in by the caller, without a call.)
        if self._inject_paths is not None:
            return self._inject_paths.match(path) is not None
        if self._inject_predicate is not None:
            return bool(self._inject_predicate(HTTPConnection(scope)))
        return False

    def _lifespan_receive(self, scope: Scope, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Resume deliveries a previous process acknowledged but did not finish.
                await self.runtime.start()
                state = scope.get("state")
                if isinstance(state, dict):
                    state[SCOPE_KEY] = self.runtime
                    self._runtime_in_state = True
            elif message["type"] == "lifespan.shutdown":
                # After this the app may be called without a lifespan (a test suite's next
                # client): requests carry the runtime themselves again.
                self._runtime_in_state = False
                await self.runtime.shutdown()
            return message

        return wrapped

    def _inject(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Every checkout page gets the same snippet (but for a CSP nonce): the buyer and the
        # ship-to state are the widget's to ask for (GET {prefix}/buyer), so a page calls none
        # of the shop's callbacks.
        extensions = scope.get("extensions")
        if extensions and _PATHSEND in extensions:
            # A FileResponse would have the server send the file past the injector; without
            # the extension it streams the file through it.
            scope["extensions"] = {k: v for k, v in extensions.items() if k != _PATHSEND}

        # A streamed page's chunks sent back to back leave as one write (certwidget.web.coalescing).
        # Kept: without it a page streamed in 4 KB chunks costs the server 16-19% more CPU
        # (docs/benchmarks.md, "Mechanisms and their keep").
        injector = HtmlInjector(
            send,
            snippet=self._snippet_without_nonce,
            render=self._snippet_with_nonce,
            # Where the app keeps the nonce of the CSP it sends (request.state.csp_nonce).
            state=scope.setdefault("state", {}),
            method=scope["method"],
            stream_send=CoalescingSend,
        )
        return self.app(scope, receive, injector)


def compose(
    settings: Settings,
    *,
    keys: list[bytes],
    provider: CertificateProvider,
    outbox: Outbox,
    renderer: CertificateRenderer,
    customer: CustomerCallable | None,
    ship_zone: ShipZoneCallable | None,
    on_certificate: CertificateHook | None,
    order_reference: OrderReferenceCallable | None = None,
    on_file_ttl: float = ON_FILE_TTL,
    events: Lifecycle | None = None,
) -> Runtime:
    """The composition root: every part is built here and handed to the parts that use it."""
    on_file = CertificatesOnFile(provider, timeout=settings.provider_timeout, ttl=on_file_ttl)
    # Delivery gives way to buyers' submissions in flight; intake marks them through
    # ``runtime.traffic``. Kept for intake's throughput and p99 under a burst: docs/benchmarks.md,
    # "Mechanisms and their keep (issue 23)", (f).
    traffic = BuyerTraffic()
    deliverer = Deliverer(
        outbox,
        provider,
        base_delay=settings.retry_backoff,
        on_delivered=on_file.delivered,
        traffic=traffic,
        renderer=renderer,
        events=events,
    )
    # The delivery loop wakes when any host commits a submission (PostgreSQL's NOTIFY),
    # where the outbox can tell (an optional method, beside the Outbox protocol).
    on_new_submission = getattr(outbox, "on_new_submission", None)
    if callable(on_new_submission):
        on_new_submission(deliverer.wake)
    return Runtime(
        provider=provider,
        settings=settings,
        tokens=WidgetTokens(keys, max_age=settings.token_max_age),
        buyers=BuyerResolver(customer, keys),
        upstream=UpstreamTokens(provider),
        outbox=outbox,
        traffic=traffic,
        deliverer=deliverer,
        on_file=on_file,
        checkout=Signed(keys, salt=CHECKOUT_COOKIE_SALT, max_age=CHECKOUT_COOKIE_MAX_AGE),
        ship_zone=ship_zone,
        on_certificate=on_certificate,
        order_reference=order_reference,
    )
