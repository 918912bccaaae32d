"""Prometheus metrics (prometheus-client), across gunicorn workers in multiprocess mode.

gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker imports this module; without it
(`opos serve`, tests) the process's own registry is used.
"""

from __future__ import annotations

import os

from flask import Blueprint, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("opos_http_requests_total", "HTTP requests answered, by route and status", ["route", "status"])
SYNCS = Counter("opos_syncs_total", "Syncs with the ledger repository, by outcome", ["outcome"])
SYNC_SECONDS = Histogram(
    "opos_sync_duration_seconds", "How long a sync took", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
)
VERIFICATION_FAILURES = Counter("opos_verification_failures_total", "Syncs whose new commits failed verification")
CLAIMS = Counter("opos_claims_total", "Claims answered, by result", ["result"])
SERVED_SEQUENCE = Gauge("opos_served_sequence", "The sequence of the served feed", multiprocess_mode="max")

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    from webhook.service import current

    head = current().site.payload("v1/head.json")
    if head is not None:
        SERVED_SEQUENCE.set(head["sequence"])
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    return Response(data, mimetype=CONTENT_TYPE_LATEST)


# Labels that exist from the start, so dashboards and alerts see zeros rather than nothing.
for _result in ("granted", "refused"):
    CLAIMS.labels(_result)
for _outcome in ("published", "unchanged", "renewed", "rejected", "failed"):
    SYNCS.labels(_outcome)
