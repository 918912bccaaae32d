"""POST /v1/claims: a slot in an instruction's "at most N probes", granted at most N times."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, NoReturn

import jsonschema
from flask import Blueprint, abort, jsonify, request
from flask.typing import ResponseReturnValue
from jsonschema.exceptions import best_match
from werkzeug.http import HTTP_STATUS_CODES

from opos.instructions import resources, targeting
from opos.model import format_time, normalise_network
from opos.signing.documents import FeedEntry
from webhook.body import json_body, read_body
from webhook.feed_service import metrics
from webhook.feed_service.errors import ClaimsUnavailable
from webhook.feed_service.service import Service, current

blueprint = Blueprint("claims", __name__)
REFUSED_RETRY_SECONDS = 600  # a full cap or an address's share: probes ask again after ten minutes
DECIDED_RETRY_SECONDS = 3600  # a claim that names the wrong network or country, or no capped instruction


@functools.cache
def _request_validator() -> jsonschema.Draft202012Validator:
    """ClaimRequest from schemas/openapi.json, checked and compiled once per process, not per claim."""
    schema: dict[str, Any] = resources.schema_document("openapi")["components"]["schemas"]["ClaimRequest"]
    return resources.strict_validator(schema)


def _refuse(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> NoReturn:
    metrics.CLAIMS.labels("refused", reason).inc()
    response = jsonify(error=HTTP_STATUS_CODES.get(status, "Error"), detail=detail, reason=reason)
    response.status_code = status
    if status in (403, 422):  # what the probe said does not change by asking again soon
        response.headers["Retry-After"] = str(DECIDED_RETRY_SECONDS)
    response.headers.update(headers or {})
    abort(response)


def _unavailable(err: ClaimsUnavailable) -> NoReturn:
    """The database failed: refuse (never grant uncapped), say so in /healthz, and log the details."""
    current().claims_failed(err)
    _refuse(503, "unavailable", "the claims database is unavailable: ask again later", {"Retry-After": "60"})


@blueprint.post("/v1/claims")
def claim() -> ResponseReturnValue:
    service = current()
    client = service.sources.client(request.remote_addr, request.headers.get("X-Forwarded-For"))
    address = service.sources.key(client)
    _limit_rate(service, address)
    body = _claim_request()
    entry = _capped_entry(service, body)
    instruction, limit = entry.instruction, entry.instruction.target.max_probes or 0
    if service.asn_db is not None:
        source = service.asn_db.network_of(client)
        if source != normalise_network(body["network"]):
            said = f"is in {source}" if source else "is in no network the ASN database knows"
            _refuse(403, "network", f"the claim names {body['network']}, but the address it comes from {said}")
    if service.country_db is not None:
        country = service.country_db.country_of(client)  # an address the database does not know may claim
        if country is not None and country != body["country"].upper():
            _refuse(403, "country", f"the claim names {body['country']}, but the address it comes from is in {country}")
    scope = targeting.claim_scope(instruction, body["country"], body["network"])
    try:
        result = service.claims().claim(
            instruction.id, scope, body["probe_id"], limit, address, service.config.claims_per_address
        )
    except ClaimsUnavailable as err:
        _unavailable(err)
    service.claims_worked()
    metrics.CLAIMS.labels("granted" if result.granted else "refused", result.refusal or "ok").inc()
    answer: dict[str, object] = {
        "granted": result.granted,
        "instruction": instruction.id,
        "revision": entry.revision,
        "limit": limit,
        "used": result.used,
    }
    if result.refusal == "address":
        answer["reason"] = f"the address {address} holds its share of {instruction.id} already"
    elif result.refusal == "cap":
        answer["reason"] = f"all {limit} slots are taken"
    if not result.granted:  # ask again after this: a slot staff revoke or a cap they raise is found soon
        return answer, 200, {"Retry-After": str(REFUSED_RETRY_SECONDS)}
    return answer


def _limit_rate(service: Service, address: str) -> None:
    """429 past the claim requests one address (block) may make."""
    if service.claims_rate is None:
        return
    amount, seconds = service.claims_rate
    try:
        wait = service.claims().hit(f"claims:{address}", amount, seconds)
    except ClaimsUnavailable as err:
        _unavailable(err)
    if wait:
        detail = f"more than {amount} claim requests in {seconds} s from {address}: wait {wait} s"
        _refuse(429, "rate", detail, {"Retry-After": str(wait)})


def _claim_request() -> dict[str, Any]:
    """The request's body, a claim by the schema; else 400 saying where."""
    body = json_body(read_body(), "a claim")
    if not isinstance(body, dict):
        _refuse(400, "invalid", "send a JSON object: {instruction, probe_id, country, network, platform}")
    error = best_match(_request_validator().iter_errors(body))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        _refuse(400, "invalid", f"{where + ': ' if where else ''}{error.message}")
    return body


def _capped_entry(service: Service, body: dict[str, Any]) -> FeedEntry:
    """The served feed's capped instruction the claim names, if it takes this probe now; else 422 saying why."""
    feed = service.site.feed()
    if feed is None:
        _refuse(503, "unavailable", "no feed is published yet: try again after the first sync")
    entry = feed.entry(body["instruction"])
    if entry is None:
        _refuse(422, "unknown", f"{body['instruction']!r} is not an instruction of the served feed ({feed.commit})")
    instruction = entry.instruction
    if instruction.target.max_probes is None:
        _refuse(422, "uncapped", f"{instruction.id} has no max_probes: run it without a claim")
    if not targeting.in_window(instruction, dt.datetime.now(dt.UTC)):
        start, end = format_time(instruction.window.start), format_time(instruction.window.end)
        _refuse(422, "window", f"{instruction.id} is outside its window ({start} to {end})")
    mismatch = targeting.matches(instruction, body["country"], body["network"], body.get("platform"))
    if mismatch:
        _refuse(422, "target", mismatch)
    if not targeting.in_sample(instruction, body["probe_id"]):
        _refuse(422, "sample", f"this probe is not in the {instruction.target.sample} sample of {instruction.id}")
    return entry
