"""POST /v1/claims: a slot in an instruction's "at most N probes", granted at most N times."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import jsonschema
from flask import Blueprint, abort, request
from flask.typing import ResponseReturnValue
from jsonschema.exceptions import best_match

from opos.feed import targeting
from opos.instructions import resources
from opos.model import format_time
from webhook import metrics
from webhook.body import json_body
from webhook.claims_store import ClaimsUnavailable
from webhook.service import current

blueprint = Blueprint("claims", __name__)


@functools.cache
def _request_validator() -> jsonschema.Draft202012Validator:
    """ClaimRequest from schemas/openapi.json, checked and compiled once per process, not per claim."""
    schema: dict[str, Any] = resources.schema_document("openapi")["components"]["schemas"]["ClaimRequest"]
    return resources.strict_validator(schema)


@blueprint.post("/v1/claims")
def claim() -> ResponseReturnValue:
    body = json_body(request.get_data(cache=False), "a claim")
    if not isinstance(body, dict):
        abort(400, "send a JSON object: {instruction, probe_id, country, network, platform}")
    error = best_match(_request_validator().iter_errors(body))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        abort(400, f"{where + ': ' if where else ''}{error.message}")
    service = current()
    feed = service.site.feed()
    if feed is None:
        abort(503, "no feed is published yet: try again after the first sync")
    entry = feed.entry(body["instruction"])
    if entry is None:
        abort(422, f"{body['instruction']!r} is not an instruction of the served feed ({feed.commit})")
    instruction = entry.instruction
    limit = instruction.target.max_probes
    if limit is None:
        abort(422, f"{instruction.id} has no max_probes: run it without a claim")
    if not targeting.in_window(instruction, dt.datetime.now(dt.UTC)):
        window = instruction.window
        start, end = format_time(window.start), format_time(window.end)
        abort(422, f"{instruction.id} is outside its window ({start} to {end})")
    mismatch = targeting.matches(instruction, body["country"], body["network"], body.get("platform"))
    if mismatch:
        abort(422, mismatch)
    if not targeting.in_sample(instruction, body["probe_id"]):
        abort(422, f"this probe is not in the {instruction.target.sample} sample of {instruction.id}")
    scope = targeting.claim_scope(instruction, body["country"], body["network"])
    try:
        result = service.claims().claim(instruction.id, scope, body["probe_id"], limit)
    except ClaimsUnavailable as err:
        abort(503, err.diagnostics())
    metrics.CLAIMS.labels("granted" if result.granted else "refused").inc()
    return {
        "granted": result.granted,
        "instruction": instruction.id,
        "revision": entry.revision,
        "limit": limit,
        "used": result.used,
    }
