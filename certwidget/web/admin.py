"""The merchant's admin pages under ``{prefix}/admin/``: submissions listed, shown and retried.

Served only when the shop passes ``admin_authorize=callable(request) -> bool`` (sync or
async): without it every admin path is a 404, as if there were none. Each request asks it;
False is answered 403. The pages are server-rendered from ``templates/admin/`` (Jinja,
autoescaped: a buyer's name or a provider's message is text, never markup), run no script,
and forbid framing.

Retry is a POST that must pass two checks, besides ``admin_authorize``: the same-origin check
every endpoint makes (``Origin`` / ``Sec-Fetch-Site``), and a signed form token bound to this
browser (a random value in a ``SameSite=Strict``, ``HttpOnly`` cookie) and to the submission.
A page on another site can neither read the token nor send the cookie.

Everything read comes through the outbox's listing (:meth:`Outbox.list_submissions`) and the
merchant's read model (:mod:`certwidget.outbox.admin`), the same as the command line's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from certwidget.domain.submission import SubmittedCertificate
from certwidget.outbox.admin import SubmissionView, view_of
from certwidget.outbox.base import ALL_STATUSES, RetryResult, Submission, SubmissionStatus
from certwidget.resources import static_dir, templates_dir
from certwidget.web.http import HTTPProblem, check_same_origin, read_body, require_method
from certwidget.web.runtime import Runtime, reason_name
from certwidget.web.tokens import Signed, TokenRejected

__all__ = ["ADMIN_CSRF_SALT", "AdminAuthorize", "AdminPages"]

logger = logging.getLogger("certwidget")

AdminAuthorize = Callable[[HTTPConnection], Awaitable[bool] | bool]

ADMIN_CSRF_SALT = "certwidget.admin.csrf"
#: The cookie that binds form tokens to one browser.
ADMIN_COOKIE = "certwidget_admin"
#: How long a page's Retry button works before the page must be reloaded.
CSRF_MAX_AGE = 8 * 3600
PAGE_SIZE = 50
MAX_FORM_BODY = 4096
MAX_BUYER_CODE = 100
#: Documents a browser may show inline; anything else is only downloaded.
INLINE_TYPES = frozenset({"application/pdf", "image/png", "image/jpeg", "image/tiff"})
#: Of those, what an ``<img>`` on the details page shows.
IMAGE_PREVIEW_TYPES = frozenset({"image/png", "image/jpeg"})
_SUBMISSION_ID = re.compile(r"[0-9a-f]{32}")
_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")

STATUS_LABELS: Mapping[str, str] = {
    "received": "Received",
    "pending": "Retry scheduled",
    "delivered": "Delivered",
    "failed": "Failed",
}
#: What each answer of :meth:`Outbox.retry` tells the merchant after pressing Retry.
RETRY_MESSAGES: Mapping[str, str] = {
    "retried": "Sent again: delivery starts within seconds. Reload this page to follow it.",
    "not_found": "There is no such submission any more.",
    "delivered": "Nothing to retry: this submission is delivered.",
    "leased": "A delivery attempt is running right now; wait for it to end.",
    "queued": "Nothing to retry: it is waiting for its first delivery attempt.",
}
PAGE_HEADERS = {
    # No script, no frames, forms only to ourselves: an injected tag could do nothing.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class AdminPages:
    """Answers requests under ``{prefix}/admin``; built by the middleware when the shop passes
    ``admin_authorize``."""

    def __init__(self, runtime: Runtime, *, authorize: AdminAuthorize, csrf: Signed) -> None:
        self.runtime = runtime
        self.authorize = authorize
        self.csrf = csrf
        self.base = runtime.settings.prefix + "/admin"
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir()),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.stylesheet = (static_dir() / "admin.css").read_bytes()
        digest = hashlib.sha256(self.stylesheet).hexdigest()[:12]
        self.stylesheet_etag = f'"{digest}"'
        self.stylesheet_url = f"{self.base}/admin.css?v={digest}"

    async def dispatch(self, request: Request, path: str) -> Response:
        """``path`` is what follows ``{prefix}/admin``."""
        try:
            denied = await self._check_access(request)
            if denied is not None:
                return denied
            return await self._route(request, path)
        except HTTPProblem as problem:
            return self._error(problem.status, problem.message, headers=problem.headers)

    async def _check_access(self, request: Request) -> Response | None:
        try:
            allowed = self.authorize(request)
            if inspect.isawaitable(allowed):
                allowed = await allowed
        except Exception:
            logger.exception("certwidget: admin_authorize(request) failed")
            return self._error(
                500,
                "The shop's admin_authorize check failed, so access cannot be granted. The "
                "error is in the shop's log.",
            )
        if not isinstance(allowed, bool):
            logger.error(
                "certwidget: admin_authorize(request) answered %s; it must answer True or False",
                type(allowed).__name__,
            )
            return self._error(
                500, "The shop's admin_authorize check must answer True or False; see its log."
            )
        if not allowed:
            return self._error(
                403,
                "You are not allowed to see certificate submissions. Sign in to the shop with "
                "an account that may, then reload this page.",
            )
        return None

    async def _route(self, request: Request, path: str) -> Response:
        method = request.method
        if path == "":
            return RedirectResponse(self.base + "/", status_code=308)
        if path == "/":
            require_method(method, "GET", "HEAD")
            return await self.list_page(request)
        if path == "/admin.css":
            require_method(method, "GET", "HEAD")
            return self._stylesheet(request)
        parts = path.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "submissions" and _SUBMISSION_ID.fullmatch(parts[1]):
            submission_id = parts[1]
            if len(parts) == 2:
                require_method(method, "GET", "HEAD")
                return await self.detail_page(request, submission_id)
            if parts[2:] == ["document"]:
                require_method(method, "GET", "HEAD")
                return await self.document(submission_id)
            if parts[2:] == ["retry"]:
                require_method(method, "POST")
                return await self.retry(request, submission_id)
        raise HTTPProblem(404, "not_found", "There is no such admin page.")

    # -- pages ------------------------------------------------------------------------------

    async def list_page(self, request: Request) -> Response:
        filters = ListFilters.parse(request.query_params)
        total, rows = 0, list[Submission]()
        if not filters.errors:
            total, rows = await self.runtime.outbox.list_submissions(
                state=filters.state,
                customer=filters.buyer or None,
                since=filters.since,
                until=filters.until,
                limit=PAGE_SIZE,
                offset=(filters.page - 1) * PAGE_SIZE,
            )
        views = [view_of(row) for row in rows]
        pages = max(1, -(-total // PAGE_SIZE))
        first = (filters.page - 1) * PAGE_SIZE + 1 if views else 0
        return self._page(
            request,
            "admin/list.html",
            status=400 if filters.errors else 200,
            filters=filters,
            statuses=[(s, STATUS_LABELS[s]) for s in ALL_STATUSES],
            views=views,
            total=total,
            first=first,
            last=first + len(views) - 1 if views else 0,
            page=filters.page,
            pages=pages,
            previous_url=self._list_url(filters, filters.page - 1) if filters.page > 1 else None,
            next_url=self._list_url(filters, filters.page + 1) if filters.page < pages else None,
        )

    async def detail_page(self, request: Request, submission_id: str) -> Response:
        outbox = self.runtime.outbox
        row = await outbox.get(submission_id)
        if row is None:
            raise HTTPProblem(404, "not_found", "There is no submission with that id.")
        document = await outbox.document(submission_id)
        view = view_of(row, document_size=len(document))
        try:
            record: SubmittedCertificate | None = SubmittedCertificate.from_record(row.payload)
        except Exception:
            record = None  # the view says why (record_error); the page shows what the row has
        nonce = request.cookies.get(ADMIN_COOKIE) or ""
        new_nonce = "" if _good_nonce(nonce) else secrets.token_hex(16)
        token = self.csrf.dumps({"n": new_nonce or nonce, "s": submission_id})
        outcome = request.query_params.get("retry", "")
        response = self._page(
            request,
            "admin/detail.html",
            view=view,
            purchaser=record.purchaser if record else None,
            document_label=_document_label(view),
            image_preview=view.media_type in IMAGE_PREVIEW_TYPES,
            can_retry=view.status in ("failed", "pending"),
            retry_message=RETRY_MESSAGES.get(outcome, ""),
            retried=outcome == "retried",
            csrf_token=token,
            document_url=f"{self.base}/submissions/{submission_id}/document",
            retry_url=f"{self.base}/submissions/{submission_id}/retry",
        )
        if new_nonce:
            response.set_cookie(
                ADMIN_COOKIE,
                new_nonce,
                max_age=CSRF_MAX_AGE,
                path=self.base + "/",
                httponly=True,
                samesite="strict",
                secure=self.runtime.cookie_secure(request),
            )
        return response

    async def document(self, submission_id: str) -> Response:
        outbox = self.runtime.outbox
        row = await outbox.get(submission_id)
        content = await outbox.document(submission_id) if row is not None else b""
        if row is None or not content:
            raise HTTPProblem(
                404,
                "no_document",
                "The outbox no longer holds this submission's document: once delivered, the "
                "provider keeps it.",
            )
        media_type = row.media_type if row.media_type in INLINE_TYPES else ""
        filename = _UNSAFE_FILENAME.sub("_", row.filename or "")[:100] or "document"
        disposition = "inline" if media_type else "attachment"
        return Response(
            content,
            media_type=media_type or "application/octet-stream",
            headers={
                "Content-Disposition": f'{disposition}; filename="{filename}"',
                "X-Content-Type-Options": "nosniff",
                # Opened on its own, the document is an opaque origin that runs nothing.
                "Content-Security-Policy": "sandbox; default-src 'none'",
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "Cross-Origin-Resource-Policy": "same-origin",
            },
        )

    async def retry(self, request: Request, submission_id: str) -> Response:
        check_same_origin(request, self.runtime.settings.allowed_origins)
        body = await read_body(request, limit=MAX_FORM_BODY)
        form = parse_qs(body.decode("latin-1"), max_num_fields=10)
        token = (form.get("csrf_token") or [""])[0]
        if not self._token_is_good(token, request.cookies.get(ADMIN_COOKIE, ""), submission_id):
            raise HTTPProblem(
                403,
                "bad_form_token",
                "This Retry button has expired or did not come from this admin page. Reload "
                "the submission's page and press Retry again.",
            )
        result: RetryResult = await self.runtime.outbox.retry(submission_id)
        if result == "retried":
            self.runtime.deliverer.events.retried(submission_id, by="admin")
            self.runtime.deliverer.wake()
        return RedirectResponse(
            f"{self.base}/submissions/{submission_id}?{urlencode({'retry': result})}",
            status_code=303,
        )

    # -- helpers ----------------------------------------------------------------------------

    def _token_is_good(self, token: str, nonce: str, submission_id: str) -> bool:
        if not token or not _good_nonce(nonce):
            return False
        try:
            value = self.csrf.loads(token)
        except TokenRejected:
            return False
        return (
            isinstance(value, dict)
            and secrets.compare_digest(str(value.get("n", "")), nonce)
            and value.get("s") == submission_id
        )

    def _list_url(self, filters: ListFilters, page: int) -> str:
        query = {**filters.query(), "page": str(page)} if page > 1 else filters.query()
        return f"{self.base}/" + (f"?{urlencode(query)}" if query else "")

    def _stylesheet(self, request: Request) -> Response:
        headers = {
            "ETag": self.stylesheet_etag,
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        }
        if self.stylesheet_etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.stylesheet, media_type="text/css; charset=utf-8", headers=headers)

    def _page(
        self, request: Request, template: str, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.environment.get_template(template).render(
            base=self.base,
            stylesheet_url=self.stylesheet_url,
            status_labels=STATUS_LABELS,
            reason_name=reason_name,
            sandbox=getattr(self.runtime.provider, "name", "") == "sandbox",
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def _error(
        self, status: int, message: str, *, headers: Mapping[str, str] | None = None
    ) -> HTMLResponse:
        titles = {403: "Not allowed", 404: "Not found", 405: "Not allowed here"}
        html = self.environment.get_template("admin/error.html").render(
            base=self.base,
            stylesheet_url=self.stylesheet_url,
            title=titles.get(status, "Something went wrong"),
            message=message,
            # Only someone admin_authorize let in is offered the way back to the list.
            back=status not in (403, 500),
        )
        return HTMLResponse(html, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


class ListFilters:
    """The list's filters from the query string, checked; ``errors`` says what was wrong."""

    def __init__(self) -> None:
        self.state: SubmissionStatus | None = None
        self.buyer = ""
        self.date_from = ""
        self.date_to = ""
        self.since: float | None = None
        self.until: float | None = None
        self.page = 1
        self.errors: dict[str, str] = {}

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ListFilters:
        filters = cls()
        state = params.get("state", "")
        if state:
            if state in ALL_STATUSES:
                filters.state = state
            else:
                filters.errors["state"] = "Choose a status from the list."
        buyer = params.get("buyer", "").strip()
        if len(buyer) > MAX_BUYER_CODE:
            filters.errors["buyer"] = f"A customer code has at most {MAX_BUYER_CODE} characters."
        filters.buyer = buyer[:MAX_BUYER_CODE]
        filters.date_from = params.get("from", "").strip()[:10]
        filters.date_to = params.get("to", "").strip()[:10]
        start = filters._date("from", filters.date_from)
        end = filters._date("to", filters.date_to)
        if start is not None:
            filters.since = _midnight_utc(start)
        if end is not None:
            filters.until = _midnight_utc(end + dt.timedelta(days=1))  # the whole day
        if start and end and end < start:
            filters.errors["to"] = "The end date is before the start date."
        page = params.get("page", "1")
        if page.isascii() and page.isdigit() and 0 < int(page) < 1_000_000:
            filters.page = int(page)
        else:
            filters.errors["page"] = "The page must be a number from 1."
        return filters

    def _date(self, field: str, value: str) -> dt.date | None:
        if not value:
            return None
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            self.errors[field] = "Enter a date as YYYY-MM-DD, e.g. 2025-05-01."
            return None

    def query(self) -> dict[str, str]:
        """The filters as a query string's fields (the empty ones left out)."""
        fields = {
            "state": self.state or "",
            "buyer": self.buyer,
            "from": self.date_from,
            "to": self.date_to,
        }
        return {key: value for key, value in fields.items() if value}

    @property
    def active(self) -> bool:
        return bool(self.query())


def _midnight_utc(day: dt.date) -> float:
    return dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC).timestamp()


def _good_nonce(value: str) -> bool:
    return len(value) == 32 and all(ch in "0123456789abcdef" for ch in value)


def _document_label(view: SubmissionView) -> str:
    if view.kind == "upload":
        return "The document the buyer uploaded"
    if view.media_type == "application/pdf":
        return "The certificate, as rendered for delivery"
    return "The buyer's drawn signature (the certificate's PDF is drawn from it at delivery)"
