"""Delivery of stored submissions to the provider, resumable and retried with backoff.

A submission becomes, at the provider: the customer (created or updated), one certificate per
zone linked to that customer, and the document attached to each. Each step's result is saved in
the outbox row before the next step runs, and certificates are created with an idempotency key
derived from the submission, so a retry (after an outage or a crash) resumes without making a
second certificate.

Provider outages (:class:`ProviderUnavailable`: a 5xx, a timeout, a connection error) are
retried with exponential backoff and jitter for as long as it takes; a refusal
(:class:`ProviderError`, a 4xx) is kept as ``failed`` with the provider's message and is never
dropped. Any other exception (a bug, an encoding error, an answer the client does not expect) is
retried with backoff too, in case it was passing, but at most ``max_unexpected_errors`` times:
then the row is kept as ``failed`` with a message saying what happened and what to do, instead
of being tried for ever. Its traceback is logged once, at the first such error.

An attempt works under the lease its claim took. If it outlives that lease (a stalled provider
call, a paused VM) and another process claims the row, the outbox refuses this attempt's
updates from then on; the attempt logs that, stops, and leaves the row to the new owner. Only
a finished delivery is still recorded (see :meth:`Outbox.mark_delivered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from certwidget.documents.rendering import (
    PDF_FILENAME,
    PDF_MEDIA_TYPE,
    CertificateRenderer,
    WorkerRenderer,
)
from certwidget.domain.models import Purchaser
from certwidget.domain.submission import SubmittedCertificate
from certwidget.outbox.base import Outbox, Submission
from certwidget.outbox.events import Lifecycle
from certwidget.outbox.traffic import BuyerTraffic
from certwidget.providers.base import (
    CertificateDraft,
    CertificateProvider,
    CustomerProfile,
    ProviderError,
    ProviderUnavailable,
)

T = TypeVar("T")

# While buyers' submissions are in flight, the background loop starts no new attempt for up to
# this long, then one: intake answers sooner in a burst, and delivery still gets a turn this
# often. Why 2 s (not 0.5): docs/benchmarks.md, "Intake"; why the gating is kept at all: the
# same file's "Mechanisms and their keep (issue 23)", (f) (`python -m bench --only intake`).
YIELD_TO_BUYERS_SECONDS = 2.0
# Attempts that end in an unexpected error before the row is given up as failed. A passing
# fault (a file briefly locked, a provider answer garbled once) gets a few retries with backoff
# (1, 2, 4, 8 s and more); one that five attempts all hit is a bug no retry will cure.
MAX_UNEXPECTED_ERRORS = 5
logger = logging.getLogger("certwidget.outbox.delivery")


def profile_for(submission: Submission, certificate: SubmittedCertificate) -> CustomerProfile:
    """The customer record to create or update at the provider for this submission.

    The purchaser the buyer entered on the certificate, where there is one (a filled-in form);
    else (an upload) the name and e-mail the shop gave for the buyer, else the customer number.
    """
    entered = certificate.purchaser or Purchaser(name="")  # an upload: nothing entered
    shop_said = certificate.customer or CustomerProfile(code=submission.customer)
    return CustomerProfile(
        code=submission.customer,
        name=entered.name or shop_said.name or submission.customer,
        line1=entered.line1,
        city=entered.city,
        region=entered.region,
        postal_code=entered.postal_code,
        country=entered.country or "US",
        email=entered.email or shop_said.email,
    )


def _printable(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, any lone surrogate escaped: an error's message may
    quote the very text that could not be encoded, and a log handler or the outbox would then
    fail on it in turn."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class LeaseLost(Exception):
    """The outbox refused an update: another claim holds the row now, or it was settled."""


@dataclass(slots=True)
class _Claimed:
    """A row this process has leased and not yet settled."""

    #: The lease's token, which releasing the row on shutdown must show.
    owner: str
    #: Set when the attempt settles, so ``deliver_now`` can wait for one the loop claimed first.
    settled: asyncio.Event = field(default_factory=asyncio.Event)


def _leases(rows: Sequence[Submission]) -> dict[str, str]:
    """What :meth:`Outbox.release` needs to hand ``rows`` back: {id: lease token}."""
    return {row.id: row.lease_owner for row in rows}


class Deliverer:
    """Runs delivery in the background; ``wake()`` after a new submission is stored."""

    def __init__(
        self,
        outbox: Outbox,
        provider: CertificateProvider,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        concurrency: int = 4,
        lease_seconds: float = 60.0,
        on_delivered: Callable[[Submission], None] | None = None,
        traffic: BuyerTraffic | None = None,
        max_unexpected_errors: int = MAX_UNEXPECTED_ERRORS,
        renderer: CertificateRenderer | None = None,
        events: Lifecycle | None = None,
    ) -> None:
        self._outbox = outbox
        self._provider = provider
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._lease = lease_seconds
        self._max_unexpected = max(1, max_unexpected_errors)
        self._slots = asyncio.Semaphore(concurrency)
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._on_delivered = on_delivered
        self._traffic = traffic
        #: Rows this process has leased and not yet settled: released on shutdown so another
        #: process (or this one, restarted) need not wait for the lease to run out.
        self._claimed: dict[str, _Claimed] = {}
        self._spawned: set[asyncio.Task[Submission | None]] = set()
        self._renderer: CertificateRenderer = renderer or WorkerRenderer()
        #: Where delivered and failed rows are announced (log records, metrics, shop hooks);
        #: intake announces received ones through it too.
        self.events = events or Lifecycle()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def renderer(self) -> CertificateRenderer:
        """What draws filled-in certificates: also the buyer's copy before delivery did."""
        return self._renderer

    def start(self) -> None:
        """Start the background loop (idempotent); needs a running event loop."""
        if not self.running:
            self._stopping = False
            # asyncio primitives belong to the loop that first waits on them, and a restarted
            # app (a test client entered again) runs on a new loop: fresh ones for each start.
            self._slots = asyncio.Semaphore(self._concurrency)
            self._wake = asyncio.Event()
            self._renderer.warm()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="certwidget-delivery"
            )

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop delivering; attempts in flight are cancelled and their rows released."""
        tasks = [task for task in (self._task, *self._spawned) if task is not None]
        self._task = None
        # Besides the cancellation: a cancel that lands while a blocking call runs in a thread
        # can be absorbed by anyio's shielding, and the loop must still end.
        self._stopping = True
        self.wake()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._claimed:
            claimed, self._claimed = self._claimed, {}
            leases = {submission_id: row.owner for submission_id, row in claimed.items()}
            await self._outbox.release(leases)
        # The shop's hooks of deliveries already recorded, before the outbox they read closes.
        await self.events.stop()

    async def _claim(self, claim: Awaitable[T], leased: Callable[[T], Sequence[Submission]]) -> T:
        """Run a claim to its end; if cancelled meanwhile, hand back what it leased, then stop.

        A claim the store has begun (a write queued, a statement sent) may still lease rows
        after its caller is cancelled: without this they would stay leased, unseen by anyone,
        until the lease ran out.
        """
        claiming = asyncio.ensure_future(claim)
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                rows = leased(await claiming)
                if rows:
                    await self._outbox.release(_leases(rows))  # one quick write, on the way out
            raise

    def spawn(self, submission_id: str) -> asyncio.Task[Submission | None]:
        """Start ``deliver_now`` as a task this deliverer tracks (and cancels on ``stop``)."""
        task = asyncio.get_running_loop().create_task(self.deliver_now(submission_id))
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    async def deliver_now(self, submission_id: str) -> Submission | None:
        """Try to deliver one submission at once; answers its row afterwards (None if unknown).

        Used right after intake (when ``deliver_wait`` is set) so most buyers get a provider
        reference in the same response. The row is leased only once a slot is free: a leased row
        waiting for a slot would burn its lease and could be claimed twice.
        """
        async with self._slots:
            try:
                submission = await self._claim(
                    self._outbox.claim(submission_id, lease_seconds=self._lease),
                    lambda row: [row] if row is not None else [],
                )
                if submission is not None:
                    self._claimed[submission.id] = _Claimed(submission.lease_owner)
                    await self._attempt(submission)
            finally:
                self.wake()  # a slot is free again
        if submission is None and (running := self._claimed.get(submission_id)) is not None:
            await running.settled.wait()  # the background loop got there first
        return await self._outbox.get(submission_id)

    async def _run(self) -> None:
        while not self._stopping:
            # How many attempts may start now: all free slots; but while buyers are still
            # waiting on intake after the (bounded) wait for a lull, one attempt at a time, so
            # a batch of deliveries (the embedded sandbox runs on this loop) never lands on them.
            # What it earns: docs/benchmarks.md, "Mechanisms and their keep (issue 23)", (f).
            wanted = self._concurrency
            if self._traffic is not None and not await self._traffic.quiet(YIELD_TO_BUYERS_SECONDS):
                wanted = 0 if self._claimed else 1
            # Cleared before looking, so a wake() while we look is not lost.
            self._wake.clear()
            due_in: float | None = None
            await self._refresh_rows()
            try:
                # Lease no more rows than there are free slots: a leased row waiting for a slot
                # would burn its lease and could be claimed twice.
                free = 0
                while free < wanted and not self._slots.locked():
                    await self._slots.acquire()
                    free += 1
                batch: list[Submission] = []
                try:
                    if free:
                        batch = await self._claim(
                            self._outbox.claim_due(limit=free, lease_seconds=self._lease),
                            lambda rows: rows,
                        )
                finally:
                    for _ in range(free - len(batch)):
                        self._slots.release()
                if batch and self._stopping:
                    # Stopped meanwhile: hand the rows back instead of starting on them.
                    for _ in batch:
                        self._slots.release()
                    await self._outbox.release(_leases(batch))
                    return
                for row in batch:
                    self._claimed[row.id] = _Claimed(row.lease_owner)
                    task = asyncio.get_running_loop().create_task(self._attempt_in_slot(row))
                    self._spawned.add(task)
                    task.add_done_callback(self._spawned.discard)
                if batch:
                    continue  # more may be due, and more slots may be free
                if free:
                    due_in = await self._outbox.next_due_in()
                # else: every slot is busy (or, while buyers wait, the one attempt allowed is
                # running), and the attempt that ends wakes us.
            except asyncio.CancelledError:
                raise
            except Exception:
                # The loop must outlive any one failure (a locked database, a bug in a hook):
                # a dead loop would silently stop all deliveries.
                logger.exception("certwidget delivery loop error; retrying in 5 s")
                due_in = 5.0
            timeout = 60.0 if due_in is None else min(max(due_in, 0.05), 60.0)
            refresh_in = self.events.rows_refresh_in()
            if refresh_in is not None:
                # The row-count gauge is refreshed here, so the loop wakes for it.
                timeout = min(timeout, max(refresh_in, 0.05))
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # lands as the event is set, and this loop would go on after its task was cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _refresh_rows(self) -> None:
        # Metrics must never hold deliveries up: a failed count is logged and tried later.
        try:
            await self.events.refresh_rows(self._outbox)
        except Exception:
            logger.warning("certwidget: could not count the outbox's rows for the metrics")

    async def _attempt_in_slot(self, submission: Submission) -> None:
        """One attempt in a slot the loop acquired for it; frees the slot after."""
        try:
            await self._attempt(submission)
        finally:
            self._slots.release()
            self.wake()

    def _backoff(self, attempts: int) -> float:
        delay = min(self._max_delay, self._base_delay * float(2 ** min(attempts, 20)))
        return delay * random.uniform(0.5, 1.0)

    async def _keep_lease(self, submission: Submission, delivery: asyncio.Future[Any]) -> None:
        # A slow provider must not let the lease lapse mid-delivery (another worker would then
        # deliver the same row again): renew it while the attempt runs. A renewal refused means
        # it lapsed anyway (this process stalled) and another claim holds the row now: the
        # delivery stops at once rather than at its next update, which would be refused too.
        while True:
            await asyncio.sleep(self._lease / 3)
            try:
                held = await self._outbox.renew(
                    submission.id, owner=submission.lease_owner, lease_seconds=self._lease
                )
            except Exception:
                # A renewal that failed (the file busy past its timeout) is tried again at the
                # next beat: a heartbeat that died here would let the lease lapse unseen.
                logger.warning("certwidget: could not renew the lease on %s", submission.id)
                continue
            if not held:
                delivery.cancel()
                return

    async def _deliver_leased(self, submission: Submission) -> dict[str, Any]:
        """:meth:`_deliver` while renewing the lease; :class:`LeaseLost` if it was lost."""
        delivery = asyncio.ensure_future(self._deliver(submission))
        heartbeat = asyncio.ensure_future(self._keep_lease(submission, delivery))
        try:
            return await delivery
        except asyncio.CancelledError:
            # Cancelled by the heartbeat, not by whoever runs this attempt (stop(), a request
            # that went away): that cancellation is theirs, and goes on.
            task = asyncio.current_task()
            stopped = task is not None and task.cancelling() > 0
            if heartbeat.done() and not heartbeat.cancelled() and not stopped:
                raise LeaseLost("renewing its lease") from None
            raise
        finally:
            heartbeat.cancel()

    async def _attempt(self, submission: Submission) -> None:
        """Deliver a row this process has leased, in a slot the caller holds."""
        claimed = self._claimed.get(submission.id)
        try:
            progress = await self._deliver_leased(submission)
        except LeaseLost as exc:
            self._lost(submission, str(exc))
        except ProviderUnavailable as exc:
            delay = self._backoff(submission.attempts)
            logger.warning(
                "certwidget: provider unavailable delivering %s (attempt %d), retry in %.1fs: %s",
                submission.id,
                submission.attempts + 1,
                delay,
                exc,
            )
            await self._retry_later(submission, str(exc), delay)
        except ProviderError as exc:
            if exc.status in (401, 403):
                # Our credentials, not the buyer's certificate, are wrong: a shop fixes (or
                # rotates) them, so keep the submission queued instead of failing it.
                logger.error(
                    "certwidget: the provider refused our credentials (%s) delivering %s: "
                    "%s; will retry",
                    exc.status,
                    submission.id,
                    exc.message,
                )
                await self._retry_later(submission, exc.message, self._backoff(submission.attempts))
            else:
                logger.error(
                    "certwidget: provider refused submission %s: %s", submission.id, exc.message
                )
                await self._give_up(submission, exc.message)
        except Exception as exc:
            await self._unexpected(submission, exc)
        else:
            await self._record_delivery(submission, progress)
        # Not reached when the attempt is cancelled: stop() then releases the row.
        self._settled(submission, claimed)

    async def _unexpected(self, submission: Submission, exc: Exception) -> None:
        """An error that is neither an outage nor a refusal: our own bug, an encoding error, an
        answer the client does not expect. Retried a few times with backoff, in case it was
        passing; then the row is failed with a message a person can act on. The traceback is
        logged once per row (at its first such error), not once per attempt."""
        errors = submission.unexpected_errors + 1
        what = _printable(f"{type(exc).__name__}: {exc}")
        if errors == 1:
            logger.error(
                "certwidget: unexpected error delivering %s: %s",
                submission.id,
                what,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        if errors < self._max_unexpected:
            delay = self._backoff(submission.attempts)
            logger.warning(
                "certwidget: delivering %s failed unexpectedly (%d of %d before it is given up); "
                "retry in %.1fs: %s",
                submission.id,
                errors,
                self._max_unexpected,
                delay,
                what,
            )
            await self._retry_later(submission, what, delay, unexpected=True)
            return
        # The error first (the outbox keeps 500 characters), then what to do about it.
        message = (
            f"{_printable(what, 200)} (failed {errors} times: an unexpected error, most likely "
            "a bug or an answer from the provider certwidget does not expect, which retrying "
            "will not cure; fix its cause, see the traceback logged at its first attempt, then "
            f"send it again: certwidget outbox retry {submission.id})"
        )
        logger.error("certwidget: gave up delivering %s: %s", submission.id, message)
        await self._give_up(submission, message, unexpected=True)

    def _settled(self, submission: Submission, claimed: _Claimed | None) -> None:
        """The attempt is over: whoever waits on it hears so, and the row is no longer ours."""
        if claimed is None:
            return
        claimed.settled.set()
        # Ours unless this process claimed the row again meanwhile (this attempt outlived its
        # lease): that attempt's entry stays until it settles.
        if self._claimed.get(submission.id) is claimed:
            del self._claimed[submission.id]

    def _lost(self, submission: Submission, doing: str) -> None:
        logger.warning(
            "certwidget: lost the lease on submission %s while %s: the attempt outlived its "
            "lease and another claim holds the row (or settled it); leaving it to that one",
            submission.id,
            doing,
        )

    async def _record_delivery(self, submission: Submission, progress: dict[str, Any]) -> None:
        recorded = await self._outbox.mark_delivered(submission.id, progress)
        if not recorded:
            # Settled by another process while this attempt outlived its lease: what that one
            # recorded (its own delivery, or the provider's refusal) stands.
            logger.warning(
                "certwidget: delivered submission %s, but another process had settled it "
                "meanwhile; left as that one recorded it",
                submission.id,
            )
            return
        submission.state = "delivered"
        submission.progress = progress
        if self._on_delivered is not None:
            self._on_delivered(submission)
        self.events.delivered(submission, self._outbox)

    async def _render(self, submission: Submission, certificate: SubmittedCertificate) -> None:
        """Make the filled certificate's PDF from the stored fields and keep it in the row."""
        signature = await self._outbox.document(submission.id)
        pdf = await self._renderer.render(certificate, signature, submission.id)
        held = await self._outbox.set_document(
            submission.id,
            pdf,
            owner=submission.lease_owner,
            media_type=PDF_MEDIA_TYPE,
            filename=PDF_FILENAME,
        )
        if not held:
            raise LeaseLost("keeping its rendered PDF")
        submission.media_type, submission.filename = PDF_MEDIA_TYPE, PDF_FILENAME

    async def _render_form(
        self, submission: Submission, certificate: SubmittedCertificate, form_id: str
    ) -> bytes:
        """The PDF of one form of a filled certificate, drawn from the stored fields."""
        signature = await self._outbox.document(submission.id)
        return await self._renderer.render(certificate, signature, submission.id, form_id)

    async def _retry_later(
        self, submission: Submission, error: str, delay: float, *, unexpected: bool = False
    ) -> None:
        retried = await self._outbox.mark_retry(
            submission.id,
            owner=submission.lease_owner,
            error=error,
            delay=delay,
            unexpected=unexpected,
        )
        if not retried:
            self._lost(submission, "scheduling its retry")

    async def _give_up(
        self, submission: Submission, error: str, *, unexpected: bool = False
    ) -> None:
        failed = await self._outbox.mark_failed(
            submission.id, owner=submission.lease_owner, error=error, unexpected=unexpected
        )
        if not failed:
            self._lost(submission, "recording that it failed")
            return
        submission.state, submission.last_error = "failed", error
        submission.attempts += 1
        self.events.failed(submission, error, self._outbox)

    async def _deliver(self, submission: Submission) -> dict[str, Any]:
        progress: dict[str, Any] = dict(submission.progress)
        certificates: dict[str, str] = dict(progress.get("certificates", {}))
        numbers: dict[str, str] = dict(progress.get("numbers", {}))
        attached: list[str] = list(progress.get("attached", []))

        async def save() -> None:
            progress["certificates"] = dict(certificates)
            progress["numbers"] = dict(numbers)
            progress["attached"] = list(attached)
            snapshot = dict(progress)
            held = await self._outbox.save_progress(
                submission.id, snapshot, owner=submission.lease_owner
            )
            if not held:
                raise LeaseLost("saving its progress")

        certificate = SubmittedCertificate.from_record(submission.payload)
        if "customer_id" not in progress:
            profile = profile_for(submission, certificate)
            progress["customer_id"] = await self._provider.ensure_customer(profile)
            await save()
        for zone in certificate.zones:
            if zone not in certificates:
                created = await self._provider.create_certificate(
                    CertificateDraft(
                        customer_code=submission.customer,
                        zone=zone,
                        reason=certificate.reason,
                        # That state's own number and form, and its own expiry.
                        exemption_number=certificate.number_for(zone),
                        signed_date=certificate.signed_date,
                        expiration_date=certificate.expiration_for(zone),
                        exempt_percentage=certificate.exempt_percentage,
                        idempotency_key=f"certwidget-{submission.id}-{zone}",
                        form=certificate.forms.get(zone, ""),
                        purchase_kind=certificate.purchase_kind,
                        order_reference=certificate.order_reference,
                    )
                )
                certificates[zone] = created.id
                numbers[zone] = created.number
                await save()
        groups = certificate.form_groups()
        if submission.kind == "filled" and groups and submission.media_type != PDF_MEDIA_TYPE:
            # One PDF per form, each attached to the certificates of the states on that form
            # (GA + TX: the SST certificate for GA, the 01-339 for TX), all from the one
            # signature. The row keeps the signature until every state has its document, so
            # a retried delivery draws the forms still missing again.
            for form_id, zones in groups.items():
                waiting = [zone for zone in zones if zone not in attached]
                if not waiting:
                    continue
                pdf = await self._render_form(submission, certificate, form_id)
                for zone in waiting:
                    await self._provider.attach_document(
                        certificates[zone],
                        pdf,
                        media_type=PDF_MEDIA_TYPE,
                        filename=f"certificate-{form_id}.pdf",
                    )
                    attached.append(zone)
                    await save()
        elif submission.kind == "filled" and submission.media_type != PDF_MEDIA_TYPE:
            # Signed before forms: the generic certificate it was signed on, for every state.
            await self._render(submission, certificate)
        document: bytes | None = None
        for zone in certificate.zones:
            if zone in attached:
                continue
            if document is None:
                document = await self._outbox.document(submission.id)
            if document:
                await self._provider.attach_document(
                    certificates[zone],
                    document,
                    media_type=submission.media_type,
                    filename=submission.filename or "certificate.pdf",
                )
            attached.append(zone)
            await save()
        progress["certificates"] = certificates
        progress["numbers"] = numbers
        progress["attached"] = attached
        return progress
