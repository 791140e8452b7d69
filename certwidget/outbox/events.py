"""Lifecycle events of a submission, for the shop: hooks, structured log records, metrics.

Each event is a log record on the logger ``certwidget.events`` whose ``extra`` carries
``event`` (one of :data:`EVENTS`), ``submission_id``, ``customer`` and ``zones``, plus what
the event knows (``certificate_ids`` and ``latency_seconds`` when delivered, ``error`` when
failed, ``attempts``), so a JSON log formatter ships them as fields. Delivered and failed also
call the shop's ``on_delivered(view)`` and ``on_failed(view, error)`` hooks (sync or async)
with the merchant's :class:`~certwidget.outbox.admin.SubmissionView` of the row; and every
event updates the metrics when the shop asked for them (:mod:`certwidget.metrics`).

A hook runs in a task of its own once the row is settled in the outbox: its failure (logged)
never undoes what delivery recorded, and its slowness holds up neither the next delivery nor a
buyer waiting for this one (``deliver_wait``). An async hook gets :data:`HOOK_TIMEOUT` seconds;
on shutdown, hooks still running get a few seconds to finish, then are cancelled.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from certwidget.outbox.admin import SubmissionView, view_of
from certwidget.outbox.base import Outbox, Submission

if TYPE_CHECKING:
    from certwidget.metrics import Metrics

__all__ = [
    "EVENTS",
    "HOOK_TIMEOUT",
    "DeliveredHook",
    "FailedHook",
    "Lifecycle",
]

logger = logging.getLogger("certwidget.events")

#: The event names, as ``extra["event"]`` of the log records.
EVENTS = (
    "certificate.received",
    "certificate.delivered",
    "certificate.failed",
    "certificate.retried",
)
#: Seconds an async hook may run before it is cancelled (and that logged).
HOOK_TIMEOUT = 30.0
#: How often the delivery loop refreshes the outbox's row counts for the metrics.
ROWS_REFRESH_SECONDS = 15.0
#: Seconds hooks still running at shutdown get to finish.
SHUTDOWN_GRACE = 5.0

DeliveredHook = Callable[[SubmissionView], Awaitable[None] | None]
FailedHook = Callable[[SubmissionView, str], Awaitable[None] | None]


class Lifecycle:
    """Announces what happens to submissions: to the log, the metrics and the shop's hooks."""

    def __init__(
        self,
        *,
        on_delivered: DeliveredHook | None = None,
        on_failed: FailedHook | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._on_delivered = on_delivered
        self._on_failed = on_failed
        self.metrics = metrics
        self._rows_refreshed = float("-inf")
        self._hooks: set[asyncio.Task[None]] = set()

    def received(self, submission: Submission) -> None:
        """A new submission is stored (intake, before the buyer hears "received")."""
        _log(logging.INFO, "certificate.received", submission)
        if self.metrics is not None:
            self.metrics.received.inc()

    def retried(self, submission_id: str, *, by: str) -> None:
        """A merchant sent a failed or stuck submission again (``by``: "admin", "cli")."""
        logger.info(
            "certificate.retried submission=%s by=%s",
            submission_id,
            by,
            extra={"event": "certificate.retried", "submission_id": submission_id, "by": by},
        )

    def delivered(self, submission: Submission, outbox: Outbox) -> None:
        """``submission`` is settled as delivered (its ``progress`` holds the provider's ids)."""
        latency = max(0.0, time.time() - submission.created_at)
        certificates = dict(submission.progress.get("certificates") or {})
        _log(
            logging.INFO,
            "certificate.delivered",
            submission,
            certificate_ids=certificates,
            provider_customer_id=str(submission.progress.get("customer_id") or ""),
            latency_seconds=round(latency, 3),
        )
        if self.metrics is not None:
            self.metrics.delivered.inc()
            self.metrics.latency.observe(latency)
        if self._on_delivered is not None:
            self._spawn(_call_hook("on_delivered", submission, outbox, self._on_delivered))

    def failed(self, submission: Submission, error: str, outbox: Outbox) -> None:
        """``submission`` is settled as failed with ``error`` (the provider's message)."""
        _log(logging.WARNING, "certificate.failed", submission, error=error)
        if self.metrics is not None:
            self.metrics.failed.inc()
        if self._on_failed is not None:
            self._spawn(_call_hook("on_failed", submission, outbox, self._on_failed, error))

    def _spawn(self, call: Awaitable[None]) -> None:
        task = asyncio.ensure_future(call)
        self._hooks.add(task)
        task.add_done_callback(self._hooks.discard)

    async def stop(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Give hooks still running ``grace`` seconds, then cancel them."""
        if not self._hooks:
            return
        running = set(self._hooks)
        _, late = await asyncio.wait(running, timeout=grace)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def rows_refresh_in(self) -> float | None:
        """Seconds until the row counts are due for a refresh (None: no metrics)."""
        if self.metrics is None:
            return None
        return max(0.0, self._rows_refreshed + ROWS_REFRESH_SECONDS - time.monotonic())

    async def refresh_rows(self, outbox: Outbox) -> None:
        """Update the row-count gauge, at most every :data:`ROWS_REFRESH_SECONDS`."""
        if self.metrics is None or self.rows_refresh_in():
            return
        self._rows_refreshed = time.monotonic()
        self.metrics.set_rows(await outbox.counts())


def _log(level: int, event: str, submission: Submission, **fields: Any) -> None:
    zones = submission.zones
    extra = {
        "event": event,
        "submission_id": submission.id,
        "customer": submission.customer,
        "zones": zones,
        "attempts": submission.attempts,
        **fields,
    }
    error = fields.get("error")
    logger.log(
        level,
        "%s submission=%s customer=%s zones=%s%s",
        event,
        submission.id,
        submission.customer,
        ",".join(zones),
        f" error={error}" if error else "",
        extra=extra,
    )


async def _view(submission: Submission, outbox: Outbox) -> SubmissionView:
    # The row as stored now (delivered_at, attempts, last error), not the attempt's copy.
    try:
        stored = await outbox.get(submission.id)
    except Exception:
        logger.exception("certwidget: could not read submission %s back", submission.id)
        stored = None
    return view_of(stored or submission)


async def _call_hook(
    name: str, submission: Submission, outbox: Outbox, hook: Callable[..., Any], *args: Any
) -> None:
    submission_id = submission.id
    timeout = asyncio.timeout(HOOK_TIMEOUT)
    try:
        view = await _view(submission, outbox)
        result = hook(view, *args)
        if inspect.isawaitable(result):
            async with timeout:
                await result
    except TimeoutError:
        if not timeout.expired():
            logger.exception("certwidget: %s hook failed for submission %s", name, submission_id)
            return
        logger.error(
            "certwidget: %s hook took over %.0f s for submission %s and was cancelled; hand "
            "slow work to a queue of your own",
            name,
            HOOK_TIMEOUT,
            submission_id,
        )
    except Exception:
        logger.exception("certwidget: %s hook failed for submission %s", name, submission_id)
