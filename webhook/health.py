"""GET /healthz (what is served, and whether anything is wrong) and GET /openapi.json."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.typing import ResponseReturnValue

from opos.instructions import resources
from webhook import metrics
from webhook.service import current

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> ResponseReturnValue:
    service = current()
    state = service.syncer.state()
    head = service.site.payload("v1/head.json")
    commit, sequence = (head["commit"], head["sequence"]) if head else (None, None)
    problem = state.problem or (None if head else "no feed is published yet: the first sync has not finished")
    if sequence is not None:
        metrics.SERVED_SEQUENCE.set(sequence)
    body = {
        "status": "degraded" if problem else "ok",
        "commit": commit,
        "sequence": sequence,
        "last_sync": state.last_success,
        "last_attempt": state.last_attempt,
        "problem": problem,
    }
    return body, 503 if problem else 200


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return jsonify(resources.schema_document("openapi"))
