"""For operators: GET /healthz (what is served, and whether anything is wrong), /metrics and /openapi.json."""

from __future__ import annotations

import datetime as dt
import hmac

from flask import Blueprint, Response, abort, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST

from opos.instructions import resources
from opos.model import parse_time
from opos.publish.site import keys_expiry_warning
from webhook.feed_service import metrics
from webhook.feed_service.service import current

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    service = current()
    state = service.syncer.state()
    head = service.site.head()
    problem = (
        state.problem
        or (None if head else "no feed is published yet: the first sync has not finished")
        or service.claims_problem()
    )
    if head is not None:
        metrics.SERVED_SEQUENCE.set(head.sequence)
    expires = service.key_document_expiry()
    if expires is not None:
        metrics.KEYS_EXPIRE.set(expires.timestamp())
    warning = keys_expiry_warning(service.config.site_dir, dt.datetime.now(dt.UTC))
    warnings = [warning] if warning else []
    body = {
        "status": "degraded" if problem else "ok",
        "commit": head.commit if head else None,
        "sequence": head.sequence if head else None,
        "last_sync": state.last_success,
        "last_attempt": state.last_attempt,
        "problem": problem,
        "warnings": warnings,
    }
    return body, 503 if problem else 200


@blueprint.get("/metrics")
def metrics_page() -> Response:
    service = current()
    token = service.config.metrics_token
    if token is not None:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            abort(Response(
                '{"error": "Unauthorized", "detail": "/metrics needs Authorization: Bearer <OPOS_METRICS_TOKEN>"}',
                401, {"WWW-Authenticate": 'Bearer realm="opos metrics"'}, mimetype="application/json",
            ))  # fmt: skip
    head = service.site.head()
    if head is not None:
        metrics.SERVED_SEQUENCE.set(head.sequence)
        metrics.HEAD_EXPIRES.set(head.expires.timestamp())
    expires = service.key_document_expiry()
    if expires is not None:
        metrics.KEYS_EXPIRE.set(expires.timestamp())
    last_success = service.syncer.state().last_success
    if last_success is not None:
        metrics.LAST_SUCCESS.set(parse_time(last_success).timestamp())
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)  # it names its charset itself


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return jsonify(resources.schema_document("openapi"))
