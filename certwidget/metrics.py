"""Prometheus metrics of the outbox: what a shop scrapes to see certificates flow (or not).

Optional: ``pip install 'certwidget[metrics]'`` and ``CertWidgetMiddleware(..., metrics=True)``.
certwidget records into prometheus_client's default registry (or the ``CollectorRegistry`` the
shop passes as ``metrics=``) and serves nothing itself: the shop exposes them the way it
exposes its own, e.g. ``app.mount("/metrics", prometheus_client.make_asgi_app())`` behind its
own network rules, or ``prometheus_client.start_http_server(9100)``.

prometheus_client is imported only when metrics are asked for, so ``import certwidget`` and a
middleware without ``metrics=`` never load it.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["METRIC_NAMES", "Metrics", "metrics_for"]

#: What certwidget records, as Prometheus names them (counters gain ``_total`` on the wire).
METRIC_NAMES = (
    "certwidget_submissions_received",
    "certwidget_submissions_delivered",
    "certwidget_submissions_failed",
    "certwidget_delivery_seconds",
    "certwidget_outbox_rows",
)
#: From "received" to "delivered": a delivery takes a second when the provider is up, and
#: hours or a day when it was down or a refusal waited for a merchant's retry.
LATENCY_BUCKETS = (0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
#: The outbox states whose row counts are reported (delivered rows only ever grow).
REPORTED_STATES = ("pending", "failed")

# One set of metrics per registry: a second middleware in the process (a test suite's next
# app, two mounted shops) shares them instead of failing on names registered twice.
_BY_REGISTRY: weakref.WeakKeyDictionary[Any, Metrics] = weakref.WeakKeyDictionary()


class Metrics:
    """The counters, histogram and gauge certwidget updates, in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.received = Counter(
            "certwidget_submissions_received",
            "Certificate submissions stored in the outbox (the buyer heard 'received').",
            registry=registry,
        )
        self.delivered = Counter(
            "certwidget_submissions_delivered",
            "Submissions delivered to the provider (customer, certificates, documents).",
            registry=registry,
        )
        self.failed = Counter(
            "certwidget_submissions_failed",
            "Submissions given up as failed (refused by the provider, or an error that kept "
            "coming back); each waits for a merchant's retry.",
            registry=registry,
        )
        self.latency = Histogram(
            "certwidget_delivery_seconds",
            "Seconds from a submission stored to delivered at the provider.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rows = Gauge(
            "certwidget_outbox_rows",
            "Rows in the outbox per state (pending: waiting for delivery; failed: waiting for "
            "a merchant). The whole outbox: every host sharing it reports the same figure.",
            ["state"],
            registry=registry,
        )
        for state in REPORTED_STATES:
            self.rows.labels(state=state).set(0)

    def set_rows(self, counts: dict[str, int]) -> None:
        for state in REPORTED_STATES:
            self.rows.labels(state=state).set(counts.get(state, 0))


def metrics_for(option: object) -> Metrics | None:
    """The middleware's ``metrics=`` option: False/None (no metrics), True (prometheus_client's
    default registry) or a ``prometheus_client.CollectorRegistry``."""
    if option is None or option is False:
        return None
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(
            "metrics= needs prometheus_client: pip install 'certwidget[metrics]'"
        ) from exc
    if option is True:
        registry: Any = prometheus_client.REGISTRY
    elif isinstance(option, prometheus_client.CollectorRegistry):
        registry = option
    else:
        raise TypeError(
            "metrics must be True (prometheus_client's default registry), a "
            f"prometheus_client.CollectorRegistry, or False; got {type(option).__name__}"
        )
    metrics = _BY_REGISTRY.get(registry)
    if metrics is None:
        metrics = _BY_REGISTRY[registry] = Metrics(registry)
    return metrics
