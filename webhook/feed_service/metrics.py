"""Prometheus metrics (prometheus-client), across gunicorn workers in multiprocess mode: the collectors only.

gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker imports this module; without it
(`opos serve`, tests) the process's own registry is used. The /metrics route is in webhook/feed_service/health.py.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from opos.publish.follow import OUTCOMES

REQUESTS = Counter("opos_http_requests_total", "HTTP requests answered, by route and status", ["route", "status"])
SYNCS = Counter("opos_syncs_total", "Syncs with the ledger repository, by outcome", ["outcome"])
SYNC_SECONDS = Histogram(
    "opos_sync_duration_seconds", "How long a sync took", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
)
SPLIT_VIEW_ALARMS = Counter(
    "opos_split_view_alarms_total",
    "Syncs in which an auditor answered 409: it cosigned something this feed contradicts",
)
VERIFICATION_FAILURES = Counter("opos_verification_failures_total", "Syncs whose new commits failed verification")
CLAIMS = Counter("opos_claims_total", "Claims answered, by result and the reason of a refusal", ["result", "reason"])
SERVED_SEQUENCE = Gauge("opos_served_sequence", "The sequence of the served feed", multiprocess_mode="max")
HEAD_EXPIRES = Gauge(
    "opos_head_expiry_timestamp_seconds", "When the served head expires (alert well before)", multiprocess_mode="max"
)
KEYS_EXPIRE = Gauge(
    "opos_key_document_expiry_timestamp_seconds",
    "When the published key document expires (alert 30 days before)",
    multiprocess_mode="max",
)
LAST_SUCCESS = Gauge(
    "opos_last_successful_sync_timestamp_seconds", "When a sync last ended with nothing wrong", multiprocess_mode="max"
)


def exposition() -> bytes:
    """Every worker's samples (multiprocess mode), or this process's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


# Labels that exist from the start, so dashboards and alerts see zeros rather than nothing.
CLAIMS.labels("granted", "ok")
for _reason in (
    "cap",
    "address",
    "rate",
    "network",
    "country",
    "invalid",
    "unknown",
    "uncapped",
    "window",
    "target",
    "sample",
    "unavailable",
):
    CLAIMS.labels("refused", _reason)
for _outcome in OUTCOMES:
    SYNCS.labels(_outcome)
